#include "dataplane/tables.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace kdp {

const char* neighbor_state_name(NeighborState s) {
  switch (s) {
    case NeighborState::Reachable: return "reachable";
    case NeighborState::Stale: return "stale";
    case NeighborState::Probe: return "probe";
    case NeighborState::Static: return "static";
  }
  return "?";
}

const char* next_hop_kind_name(NextHopKind k) {
  switch (k) {
    case NextHopKind::Local: return "local";
    case NextHopKind::PodNet: return "pod-network";
    case NextHopKind::Connected: return "connected";
    case NextHopKind::Gateway: return "gateway";
    case NextHopKind::Blackhole: return "blackhole";
  }
  return "?";
}

RouteSnapshot::RouteSnapshot(const std::vector<RouteEntry>& routes, uint64_t generation) : routes_(routes) {
  rte_lpm_config cfg{};
  cfg.max_rules = std::max<uint32_t>(1024, routes.size() * 2);
  cfg.number_tbl8s = std::max<uint32_t>(256, routes.size());
  std::string name = fmt::format("kdp_rt{}", generation);
  lpm_ = rte_lpm_create(name.c_str(), SOCKET_ID_ANY, &cfg);
  if (lpm_ == nullptr) throw std::runtime_error("cannot create LPM table " + name);
  next_hops_.reserve(routes.size());
  for (const auto& r : routes) {
    // rte_lpm next hops are 24 bits: an index into next_hops_.
    const uint32_t hop = static_cast<uint32_t>(next_hops_.size());
    bool added = true;
    if (r.prefix.len == 0) {
      // rte_lpm has no depth 0: a default route is its two /1 halves, except
      // where a /1 route is already (a later one replaces the half).
      for (uint32_t half : {0x00000000u, 0x80000000u}) {
        uint32_t existing;
        if (rte_lpm_is_rule_present(lpm_, half, 1, &existing) == 0)
          added = added && rte_lpm_add(lpm_, half, 1, hop) == 0;
      }
    } else {
      added = rte_lpm_add(lpm_, r.prefix.addr, r.prefix.len, hop) == 0;
    }
    if (!added) {
      rte_lpm_free(lpm_);
      throw std::runtime_error("cannot add route " + r.prefix.to_string());
    }
    next_hops_.push_back(r.next_hop);
  }
}

RouteSnapshot::~RouteSnapshot() { rte_lpm_free(lpm_); }

uint16_t PortSet::index_of(std::string_view name) const {
  for (uint16_t i = 0; i < ports.size(); ++i)
    if (ports[i].in_use && ports[i].name == name) return i;
  return kNoPort;
}

void PortSet::rebuild_lists() {
  active.clear();
  pod_ports.clear();
  bridge_mtu = UINT16_MAX;
  port_pods.resize(ports.size());
  for (uint16_t i = 0; i < ports.size(); ++i) {
    if (!ports[i].in_use) {
      port_pods[i].clear();
      continue;
    }
    active.push_back(i);
    if (ports[i].role == PortRole::Pod) {
      pod_ports.push_back(i);
      bridge_mtu = std::min(bridge_mtu, ports[i].mtu);
    }
  }
}

NodeTables::NodeTables(const Config& cfg, std::vector<PortInfo> port_infos, unsigned workers)
    : config(cfg),
      rcu(workers),
      fdb("kdp_fdb", cfg.bridge.fdb_max, rcu),
      neighbors("kdp_nbr", cfg.neighbor.max, rcu),
      gateway_ip(to_be32(cfg.node.gateway_ip)),
      node_ip(to_be32(cfg.node.node_ip)),
      gateway_mac(to_ether(cfg.node.gateway_mac)) {
  if (port_infos.size() > kMaxPorts)
    throw std::runtime_error(fmt::format("{} ports: kdp handles at most {}", port_infos.size(), kMaxPorts));
  auto port_set = std::make_unique<PortSet>();
  port_set->ports = std::move(port_infos);
  port_set->rebuild_lists();
  for (uint16_t i = 0; i < port_set->ports.size(); ++i) {
    port_indexes_taken_.set(i);
    if (port_set->ports[i].role == PortRole::Uplink && first_uplink == kNoPort) first_uplink = i;
    if (port_set->ports[i].role == PortRole::Host) host_port = i;
  }
  for (const auto& pod : cfg.pods)
    port_set->port_pods[port_set->index_of(pod.port)].push_back(
        {mac_to_u64(to_ether(pod.mac)), to_be32(pod.ip), false});
  publish_ports(std::move(port_set));
  publish_routes(std::make_unique<RouteSnapshot>(routes_from_config(), route_generation_++));
  const auto& ct = cfg.conntrack;
  FlowTimeouts timeouts;
  auto set = [&](TcpState s, unsigned v) { timeouts.tcp[static_cast<unsigned>(s)] = v; };
  set(TcpState::SynSent, ct.tcp_syn_sent_s);
  set(TcpState::SynRecv, ct.tcp_syn_recv_s);
  set(TcpState::Established, ct.tcp_established_s);
  set(TcpState::FinWait, ct.tcp_fin_wait_s);
  set(TcpState::CloseWait, ct.tcp_close_wait_s);
  set(TcpState::LastAck, ct.tcp_last_ack_s);
  set(TcpState::TimeWait, ct.tcp_time_wait_s);
  set(TcpState::Close, ct.tcp_close_s);
  timeouts.udp = ct.udp_s;
  timeouts.udp_stream = ct.udp_stream_s;
  timeouts.icmp = ct.icmp_s;
  conntrack = std::make_unique<Conntrack>(ct.max_flows, timeouts, rcu);
  publish_services(std::make_unique<ServiceSnapshot>(compile_services(cfg), next_service_generation()));
}

void NodeTables::publish_services(std::unique_ptr<ServiceSnapshot> snapshot) {
  const ServiceSnapshot* old = services_.exchange(snapshot.release(), std::memory_order_acq_rel);
  if (old != nullptr) rcu.defer([old] { delete old; });
}

NodeTables::~NodeTables() {
  rcu.drain();
  conntrack.reset();
  delete routes_.load();
  delete services_.load();
  delete ports_.load();
}

void NodeTables::publish_ports(std::unique_ptr<PortSet> set) {
  const PortSet* old = ports_.exchange(set.release(), std::memory_order_acq_rel);
  if (old != nullptr) rcu.defer([old] { delete old; });
}

uint16_t NodeTables::take_port_index() {
  for (uint16_t i = 0; i < kMaxPorts; ++i)
    if (!port_indexes_taken_.test(i)) {
      port_indexes_taken_.set(i);
      return i;
    }
  return kNoPort;
}

std::vector<RouteEntry> NodeTables::routes_from_config(const std::vector<RouteConfig>& static_routes) const {
  std::vector<RouteEntry> out;
  const auto& node = this->config.node;
  out.push_back({node.pod_cidr, {NextHopKind::PodNet, kNoPort, 0}});
  // Directed broadcast into the pod network is dropped, as Linux does by default.
  out.push_back({{node.pod_cidr.addr, 32}, {NextHopKind::Blackhole, kNoPort, 0}});
  out.push_back({{node.pod_cidr.addr | ~node.pod_cidr.mask(), 32}, {NextHopKind::Blackhole, kNoPort, 0}});
  out.push_back({{node.gateway_ip, 32}, {NextHopKind::Local, kNoPort, 0}});
  out.push_back({{node.node_ip, 32}, {NextHopKind::Local, kNoPort, 0}});
  if (node.node_prefix_len < 32 && first_uplink != kNoPort) {
    Ipv4Prefix subnet{node.node_ip, node.node_prefix_len};
    subnet.addr &= subnet.mask();
    out.push_back({subnet, {NextHopKind::Connected, first_uplink, 0}});
  }
  for (const auto& r : static_routes) out.push_back({r.prefix, {NextHopKind::Gateway, port_index(r.port), r.via}});
  return out;
}

void NodeTables::publish_routes(std::unique_ptr<RouteSnapshot> snapshot) {
  const RouteSnapshot* old = routes_.exchange(snapshot.release(), std::memory_order_acq_rel);
  if (old != nullptr) rcu.defer([old] { delete old; });
}

}  // namespace kdp
