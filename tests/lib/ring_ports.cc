#include "tests/lib/ring_ports.h"

#include "drivers/eal.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace kdp::test {

namespace {

// Enough descriptors on every ring for a test's largest burst of frames.
constexpr unsigned kRingSize = 1024;
constexpr unsigned kPoolSize = 4095;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "DPDK test set-up: %s failed: %s\n", what, rte_strerror(rte_errno));
  std::abort();
}

}  // namespace

void init_test_eal(const std::string& program) {
  const std::string prefix = program + "-" + std::to_string(getpid());
  std::vector<std::string> args = {program, "--no-huge", "-m",    "256", "--no-pci", "--no-shconf", "--file-prefix",
                                   prefix,  "--log-level=error",  "-l", "0"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) fail("rte_eal_init");
}

void cleanup_test_eal() { cleanup_eal(); }

RingPorts create_ring_ports(const std::string& tag, unsigned count) {
  RingPorts ports;
  ports.pool_size = kPoolSize;
  ports.pool = rte_pktmbuf_pool_create((tag + "_mbufs").c_str(), kPoolSize, 0, kMbufPrivSize,
                                       RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (ports.pool == nullptr) fail("rte_pktmbuf_pool_create");
  for (unsigned i = 0; i < count; ++i) {
    const std::string n = std::to_string(i);
    rte_ring* rx = rte_ring_create((tag + "_rx" + n).c_str(), kRingSize, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    rte_ring* tx = rte_ring_create((tag + "_tx" + n).c_str(), kRingSize, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (rx == nullptr || tx == nullptr) fail("rte_ring_create");
    const int id = rte_eth_from_rings((tag + "_port" + n).c_str(), &rx, 1, &tx, 1, SOCKET_ID_ANY);
    if (id < 0) fail("rte_eth_from_rings");
    const auto port = static_cast<uint16_t>(id);
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0) fail("rte_eth_dev_configure");
    if (rte_eth_rx_queue_setup(port, 0, kRingSize, SOCKET_ID_ANY, nullptr, ports.pool) != 0)
      fail("rte_eth_rx_queue_setup");
    if (rte_eth_tx_queue_setup(port, 0, kRingSize, SOCKET_ID_ANY, nullptr) != 0) fail("rte_eth_tx_queue_setup");
    if (rte_eth_dev_start(port) != 0) fail("rte_eth_dev_start");
    ports.dpdk_id.push_back(port);
    ports.rx.push_back(rx);
    ports.tx.push_back(tx);
  }
  return ports;
}

void destroy_ring_ports(RingPorts& ports) {
  for (size_t i = 0; i < ports.dpdk_id.size(); ++i) {
    rte_eth_dev_stop(ports.dpdk_id[i]);
    rte_eth_dev_close(ports.dpdk_id[i]);
    rte_ring_free(ports.rx[i]);
    rte_ring_free(ports.tx[i]);
  }
  rte_mempool_free(ports.pool);
  ports = RingPorts{};
}

std::vector<PortInfo> ring_port_infos(const Config& config, const RingPorts& ports) {
  if (config.ports.size() != ports.dpdk_id.size())
    throw std::invalid_argument("test config has " + std::to_string(config.ports.size()) + " [[port]]s for " +
                                std::to_string(ports.dpdk_id.size()) + " ring ports");
  std::vector<PortInfo> infos;
  for (size_t i = 0; i < config.ports.size(); ++i) {
    const PortConfig& pc = config.ports[i];
    PortInfo info;
    info.name = pc.name;
    info.role = pc.role;
    info.dpdk_id = ports.dpdk_id[i];
    if (pc.mtu != 0) info.mtu = static_cast<uint16_t>(pc.mtu);
    if (pc.role == PortRole::Pod || pc.role == PortRole::Host) {
      info.mac = to_ether(config.node.gateway_mac);
      info.local_ip = config.node.gateway_ip;
      if (pc.role == PortRole::Host) {
        if (!pc.mac) throw std::invalid_argument("test config: host port " + pc.name + " needs the stack's mac");
        info.host_mac = to_ether(*pc.mac);
      }
    } else {
      if (!pc.mac) throw std::invalid_argument("test config: port " + pc.name + " needs a mac");
      info.mac = to_ether(*pc.mac);
      info.local_ip = config.node.node_ip;
    }
    infos.push_back(info);
  }
  return infos;
}

unsigned drain_ring(rte_ring* ring) {
  unsigned n = 0;
  void* m;
  for (; rte_ring_dequeue(ring, &m) == 0; ++n) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  return n;
}

}  // namespace kdp::test
