// DPDK for tests that run kdp's dataplane inside their own process (the gtest
// dataplane fixture, the pipeline fuzz target): an EAL without hugepages,
// an mbuf pool with kdp's private area, and ring-backed ethdev ports
// (net_ring) whose rings the test reads and writes directly.
#pragma once

#include <rte_mempool.h>
#include <rte_ring.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ctrl/config.h"
#include "dataplane/types.h"

namespace kdp::test {

// rte_eal_init for a test process: no hugepages (256 MB), no PCI, lcore 0
// only, errors only, and a file prefix of its own ("<program>-<pid>") so
// parallel test processes never share one. Aborts on failure.
void init_test_eal(const std::string& program);
// rte_eal_cleanup and removal of the runtime directory init_test_eal made.
void cleanup_test_eal();

struct RingPorts {
  // No per-lcore cache, so rte_mempool_avail_count is exact and a test can
  // check that every mbuf came back.
  rte_mempool* pool = nullptr;
  unsigned pool_size = 0;
  std::vector<uint16_t> dpdk_id;
  std::vector<rte_ring*> rx;  // what the test enqueues, the port receives
  std::vector<rte_ring*> tx;  // what the port sends, the test dequeues
};

// `count` started ports with one RX and one TX queue each. DPDK object names
// start with `tag` ("<tag>_mbufs", "<tag>_rx0", "<tag>_port0"): unique per
// process. Aborts on failure.
RingPorts create_ring_ports(const std::string& tag, unsigned count);
// Stops and closes the ports, frees their rings and the pool.
void destroy_ring_ports(RingPorts& ports);

// kdp's view of the ring ports, one per [[port]] of `config` in order, as
// setup_ports makes it: pod ports answer as the gateway, the uplink with its
// configured MAC and the node IP.
std::vector<PortInfo> ring_port_infos(const Config& config, const RingPorts& ports);

// Frees every mbuf queued on `ring`; returns how many there were.
unsigned drain_ring(rte_ring* ring);

}  // namespace kdp::test
