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
void stop_ports(const std::vector<PortInfo>& ports);

// "up0 (net_pcap0) 02:00:00:00:0a:01 link up 10 Gbps full-duplex"
std::string describe_port(const PortInfo& port);

}  // namespace kdp
