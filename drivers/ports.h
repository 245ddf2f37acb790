// DPDK ports from [[port]]: one RX and one TX queue per worker, offloads
// where the PMD offers them, link and MAC reporting.
#pragma once

#include <rte_mempool.h>

#include <string>
#include <vector>

#include "ctrl/config.h"
#include "dataplane/types.h"

namespace kdp {

// Sized for every RX/TX descriptor, per-lcore caches, bursts in flight and
// the control thread's hold queues, unless [mbufs] pool_size says otherwise.
rte_mempool* create_mbuf_pool(const Config& config, unsigned workers);

struct PortOffloads {
  uint64_t rx = 0;
  uint64_t tx = 0;
  bool rss = false;
};

// Configures and starts every port; throws with the port name on failure.
std::vector<PortInfo> setup_ports(const Config& config, rte_mempool* pool, unsigned workers,
                                  std::vector<PortOffloads>* offloads = nullptr);
// Configures and starts one port whose device is already probed: one RX and
// one TX queue per worker; throws with the port name on failure.
PortInfo setup_port(const PortConfig& port, const Config& config, rte_mempool* pool, unsigned workers,
                    PortOffloads* offloads = nullptr);
// Stops and closes a port, then waits for the interrupt thread to finish
// what the close set off (a memif peer in this process hangs up), so that
// neither races the next close nor the EAL's teardown.
void close_port(uint16_t dpdk_id);
// close_port for each port in use (a removed one is already closed).
void stop_ports(const std::vector<PortInfo>& ports);

// Hot-plug (pod.add / pod.del): probes a device string ("net_af_packet_x,
// iface=...") and returns its port id; throws std::runtime_error with DPDK's
// reason. remove_port stops and closes the port and removes its device.
uint16_t probe_device(const std::string& device);
void remove_port(uint16_t dpdk_id);

// "up0 (net_pcap0) 02:00:00:00:0a:01 link up 10 Gbps full-duplex"
std::string describe_port(const PortInfo& port);

}  // namespace kdp
