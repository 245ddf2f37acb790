#include "drivers/ports.h"

#include <rte_dev.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "drivers/eal.h"
#include "drivers/host_interface.h"

namespace kdp {

namespace {

constexpr unsigned kCtrlRingMbufs = 2 * 1024;  // punt + inject rings per worker

uint16_t find_port_id(const std::string& device) {
  const std::string name = device_name(device);
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &id) == 0) return id;
  // PCI devices are named with their domain: "0000:01:00.0".
  if (rte_eth_dev_get_port_by_name(("0000:" + name).c_str(), &id) == 0) return id;
  throw std::runtime_error(fmt::format("no DPDK port for device \"{}\"", name));
}

}  // namespace

rte_mempool* create_mbuf_pool(const Config& config, unsigned workers) {
  unsigned n = config.mbufs.pool_size;
  if (n == 0) {
    const unsigned per_queue = config.mbufs.rx_desc + config.mbufs.tx_desc + 2 * kBurstSize;
    n = config.ports.size() * workers * per_queue + (workers + 1) * (config.mbufs.cache_size + kCtrlRingMbufs) +
        config.neighbor.held_total_max() + 1024;
  }
  rte_mempool* pool = rte_pktmbuf_pool_create("kdp_mbufs", n, config.mbufs.cache_size, kMbufPrivSize,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
  if (pool == nullptr)
    throw std::runtime_error(fmt::format("cannot create a pool of {} mbufs: {} (raise [eal] -m or lower [mbufs])", n,
                                         rte_strerror(rte_errno)));
  return pool;
}

std::vector<PortInfo> setup_ports(const Config& config, rte_mempool* pool, unsigned workers,
                                  std::vector<PortOffloads>* offloads_out) {
  std::vector<PortInfo> ports;
  for (const auto& pc : config.ports) {
    PortOffloads off;
    ports.push_back(setup_port(pc, config, pool, workers, &off));
    if (offloads_out) offloads_out->push_back(off);
  }
  return ports;
}

PortInfo setup_port(const PortConfig& pc, const Config& config, rte_mempool* pool, unsigned workers,
                    PortOffloads* offloads_out) {
  auto fail = [&](const std::string& what, int rc) {
    return std::runtime_error(fmt::format("port {} ({}): {}: {}", pc.name, device_name(pc.device), what,
                                          rte_strerror(rc < 0 ? -rc : rc)));
  };
  // A step on the kernel side of the device, its error named by the port.
  auto kernel_step = [&](auto&& step) {
    try {
      return step();
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("port {} ({}): {}", pc.name, device_name(pc.device), e.what()));
    }
  };
  PortInfo info;
  info.name = pc.name;
  info.role = pc.role;
  info.device = pc.device;
  info.dpdk_id = find_port_id(pc.device);
  const uint16_t id = info.dpdk_id;

  rte_eth_dev_info dev;
  if (int rc = rte_eth_dev_info_get(id, &dev); rc != 0) throw fail("cannot read device info", rc);
  if (dev.max_rx_queues < workers || dev.max_tx_queues < workers)
    throw std::runtime_error(fmt::format(
        "port {} ({}): the device has {} RX / {} TX queues but [workers] needs one per worker ({}); "
        "give the device more queues (e.g. qpairs= for net_af_packet, one rx_pcap/tx_pcap per queue for net_pcap)",
        pc.name, device_name(pc.device), dev.max_rx_queues, dev.max_tx_queues, workers));

  PortOffloads off;
  rte_eth_conf conf{};
  // Hardware IPv4 checksum verification saves the Classify stage the sum.
  off.rx = dev.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
  off.tx = dev.tx_offload_capa & (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM |
                                  RTE_ETH_TX_OFFLOAD_UDP_CKSUM);
  if (workers > 1 && dev.flow_type_rss_offloads != 0) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf =
        dev.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
    off.rss = true;
  }
  conf.rxmode.offloads = off.rx;
  conf.txmode.offloads = off.tx;
  if (int rc = rte_eth_dev_configure(id, workers, workers, &conf); rc != 0) throw fail("cannot configure", rc);

  uint16_t rx_desc = config.mbufs.rx_desc, tx_desc = config.mbufs.tx_desc;
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(id, &rx_desc, &tx_desc); rc != 0)
    throw fail("cannot adjust descriptor counts", rc);
  const int socket = rte_eth_dev_socket_id(id);
  for (uint16_t q = 0; q < workers; ++q) {
    rte_eth_rxconf rxq = dev.default_rxconf;
    rxq.offloads = off.rx;
    if (int rc = rte_eth_rx_queue_setup(id, q, rx_desc, socket, &rxq, pool); rc != 0)
      throw fail(fmt::format("cannot set up RX queue {}", q), rc);
    rte_eth_txconf txq = dev.default_txconf;
    txq.offloads = off.tx;
    if (int rc = rte_eth_tx_queue_setup(id, q, tx_desc, socket, &txq); rc != 0)
      throw fail(fmt::format("cannot set up TX queue {}", q), rc);
  }

  if (pc.role == PortRole::Host) {
    // The node's stack sits behind this port with node_ip; kdp is its router
    // there and answers with the gateway's MAC and address.
    info.mac = to_ether(config.node.gateway_mac);
    info.local_ip = config.node.gateway_ip;
    kernel_step([&] {
      if (auto kernel_ports = kernel_ephemeral_ports())
        if (auto conflict = host_port_conflict(config, *kernel_ports)) throw std::runtime_error(*conflict);
    });
    // net_tap gives the kernel interface the device's MAC.
    if (pc.mac) {
      rte_ether_addr configured = to_ether(*pc.mac);
      rte_eth_dev_default_mac_addr_set(id, &configured);
    }
    rte_ether_addr host_mac;
    if (int rc = rte_eth_macaddr_get(id, &host_mac); rc != 0) throw fail("cannot read MAC address", rc);
    info.host_mac = host_mac;
    if (dev.if_index != 0)
      kernel_step([&] { configure_host_interface(dev.if_index, config.node.node_ip, config.node.node_prefix_len); });
  } else if (pc.role == PortRole::Pod) {
    // Bridge members: kdp answers as the bridge, with the gateway MAC.
    info.mac = to_ether(config.node.gateway_mac);
    info.local_ip = config.node.gateway_ip;
  } else {
    info.local_ip = config.node.node_ip;
    if (pc.mac) {
      info.mac = to_ether(*pc.mac);
      // Some PMDs cannot change the address; kdp still uses the configured one.
      rte_eth_dev_default_mac_addr_set(id, &info.mac);
    } else if (int rc = rte_eth_macaddr_get(id, &info.mac); rc != 0) {
      throw fail("cannot read MAC address", rc);
    }
  }
  // The MTU kdp fragments routed packets to: the one configured, else the
  // device's (for net_af_packet and net_tap: their kernel interface's,
  // which the PMD does not report).
  if (pc.mtu != 0) {
    if (int rc = rte_eth_dev_set_mtu(id, static_cast<uint16_t>(pc.mtu)); rc != 0)
      throw fail(fmt::format("cannot set MTU {}", pc.mtu), rc);
  }
  unsigned mtu = pc.mtu;
  if (mtu == 0 && dev.if_index != 0) mtu = kernel_step([&] { return kernel_interface_mtu(dev.if_index); });
  if (mtu == 0) {
    uint16_t device_mtu = RTE_ETHER_MTU;
    if (rte_eth_dev_get_mtu(id, &device_mtu) == 0) mtu = device_mtu;
  }
  info.mtu = static_cast<uint16_t>(std::clamp(mtu, 68u, kMaxPortMtu));
  // The bridge sees every pod's frames; the uplink answers for the gateway too.
  rte_eth_promiscuous_enable(id);
  if (int rc = rte_eth_dev_start(id); rc != 0) throw fail("cannot start", rc);
  if (offloads_out) *offloads_out = off;
  return info;
}

void close_port(uint16_t dpdk_id) {
  rte_eth_dev_stop(dpdk_id);
  rte_eth_dev_close(dpdk_id);  // flushes net_pcap's tx_pcap file
  wait_for_interrupt_thread();
}

void stop_ports(const std::vector<PortInfo>& ports) {
  for (const auto& p : ports)
    if (p.in_use) close_port(p.dpdk_id);
}

uint16_t probe_device(const std::string& device) {
  if (int rc = rte_dev_probe(device.c_str()); rc != 0) throw std::runtime_error(rte_strerror(rc < 0 ? -rc : rc));
  return find_port_id(device);
}

void remove_port(uint16_t dpdk_id) {
  rte_eth_dev_info info{};
  const bool known = rte_eth_dev_info_get(dpdk_id, &info) == 0;
  // Closing releases the port; removing the device detaches it from its bus,
  // so its name (and the interface's packet socket) is free again.
  close_port(dpdk_id);
  if (known && info.device != nullptr) rte_dev_remove(info.device);
}

std::string describe_port(const PortInfo& port) {
  rte_eth_link link{};
  rte_eth_link_get_nowait(port.dpdk_id, &link);
  std::string link_text = link.link_status ? fmt::format("link up {} Mbps {}", link.link_speed,
                                                        link.link_duplex ? "full-duplex" : "half-duplex")
                                          : std::string("link down");
  char dev_name[RTE_ETH_NAME_MAX_LEN] = "?";
  rte_eth_dev_get_name_by_port(port.dpdk_id, dev_name);
  return fmt::format("{} ({}, {}) {} {}", port.name, dev_name, port_role_name(port.role),
                     from_ether(port.mac).to_string(), link_text);
}

}  // namespace kdp
