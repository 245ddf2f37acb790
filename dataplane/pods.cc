#include "dataplane/pods.h"

#include <net/if.h>
#include <rte_rcu_qsbr.h>

#include <fmt/format.h>

#include <algorithm>

#include "drivers/ports.h"

namespace kdp {

using control::ProtocolError;
using nlohmann::json;

namespace {

[[noreturn]] void fail(std::string_view verb, std::string_view arg, const std::string& what) {
  throw ProtocolError(fmt::format("{}: args.{}: {}", verb, arg, what));
}

json mac_json(const std::optional<MacAddr>& mac) { return mac ? json(mac->to_string()) : json(); }

}  // namespace

std::string device_iface(const std::string& device) {
  for (size_t start = device.find(',');  start != std::string::npos;) {
    const size_t end = device.find(',', start + 1);
    const std::string arg = device.substr(start + 1, end == std::string::npos ? std::string::npos : end - start - 1);
    if (arg.rfind("iface=", 0) == 0) return arg.substr(6);
    start = end;
  }
  return "";
}

PodPorts::PodPorts(NodeTables& tables, const std::vector<std::unique_ptr<WorkerContext>>& workers)
    : tables_(tables), workers_(workers) {}

bool PodPorts::has_pod(const std::string& name) const {
  const auto& pods = tables_.config.pods;
  return std::any_of(pods.begin(), pods.end(), [&](const PodConfig& p) { return p.name == name; }) ||
         std::any_of(attached_.begin(), attached_.end(), [&](const Attached& p) { return p.name == name; });
}

std::optional<std::string> PodPorts::pod_with_ip(Ipv4 ip) const {
  for (const PodConfig& p : tables_.config.pods)
    if (p.ip == ip) return p.name;
  for (const Attached& p : attached_)
    if (p.ip == ip) return p.name;
  return std::nullopt;
}

std::optional<std::string> PodPorts::port_on_iface(const std::string& iface) const {
  for (const PortInfo& port : tables_.port_set()->ports)
    if (port.in_use && (port.name == iface || device_iface(port.device) == iface)) return port.name;
  return std::nullopt;
}

json PodPorts::add(const control::PodAddArgs& args) {
  constexpr std::string_view verb = "pod.add";
  const auto& node = tables_.config.node;
  const std::string cidr = node.pod_cidr.to_string();
  const std::string ip = ipv4_to_string(args.ip);
  if (has_pod(args.name)) fail(verb, "name", fmt::format("\"{}\" is already a pod", args.name));
  if (args.prefix_len && *args.prefix_len != node.pod_cidr.len)
    fail(verb, "ip", fmt::format("{}/{}: the length must be node.pod_cidr's ({})", ip, *args.prefix_len, cidr));
  if (!node.pod_cidr.contains(args.ip)) fail(verb, "ip", fmt::format("{} is outside node.pod_cidr {}", ip, cidr));
  if (args.ip == node.pod_cidr.addr)
    fail(verb, "ip", fmt::format("{} is the network address of node.pod_cidr {}", ip, cidr));
  if (args.ip == (node.pod_cidr.addr | ~node.pod_cidr.mask()))
    fail(verb, "ip", fmt::format("{} is the broadcast address of node.pod_cidr {}", ip, cidr));
  if (args.ip == node.gateway_ip) fail(verb, "ip", fmt::format("{} is the pod gateway address (node.gateway_ip)", ip));
  if (auto other = pod_with_ip(args.ip)) fail(verb, "ip", fmt::format("{} is already pod \"{}\"'s address", ip, *other));
  if (auto port = port_on_iface(args.iface))
    fail(verb, "iface", fmt::format("\"{}\" is already used by port {}", args.iface, *port));
  if (::if_nametoindex(args.iface.c_str()) == 0)
    fail(verb, "iface", fmt::format("no network interface \"{}\" in kdp's network namespace", args.iface));
  if (workers_.empty() || workers_.front()->pool == nullptr)
    throw ProtocolError("pod.add: kdp has no workers to poll a new port");

  const uint16_t index = tables_.take_port_index();
  if (index == kNoPort)
    throw ProtocolError(fmt::format("pod.add: no free port index (kdp holds at most {} ports)", kMaxPorts));
  json reply = {{"name", args.name},
                {"port", args.iface},
                {"index", index},
                {"iface", args.iface},
                {"ip", ip},
                {"mac", mac_json(args.mac)},
                {"gateway_ip", ipv4_to_string(node.gateway_ip)},
                {"gateway_mac", node.gateway_mac.to_string()},
                {"dry_run", args.dry_run}};
  if (args.dry_run) {
    tables_.release_port_index(index);
    return reply;
  }

  // One queue pair per worker; a device name never used before, as a
  // removed device's name may linger in the bus until it is gone.
  const unsigned workers = static_cast<unsigned>(workers_.size());
  const std::string device = fmt::format("net_af_packet_kdp{},iface={},qpairs={}", probes_++, args.iface, workers);
  uint16_t dpdk_id = 0;
  try {
    dpdk_id = probe_device(device);
  } catch (const std::exception& e) {
    tables_.release_port_index(index);
    fail(verb, "iface", fmt::format("cannot attach \"{}\": {}", args.iface, e.what()));
  }
  PortInfo info;
  try {
    info = setup_port(PortConfig{args.iface, PortRole::Pod, device, std::nullopt}, tables_.config,
                      workers_.front()->pool, workers);
  } catch (const std::exception& e) {
    remove_port(dpdk_id);
    tables_.release_port_index(index);
    fail(verb, "iface", fmt::format("cannot set up a port on \"{}\": {}", args.iface, e.what()));
  }
  info.attached = true;
  // No worker has counted on this index since its last port left (pod.del
  // waited for every worker), so these totals stay put.
  for (const auto& w : workers_) {
    info.counter_base.rx += w->counters.port[index].rx.get();
    info.counter_base.tx += w->counters.port[index].tx.get();
    info.counter_base.tx_dropped += w->counters.port[index].tx_dropped.get();
  }

  auto set = std::make_unique<PortSet>(*tables_.port_set());
  if (set->ports.size() <= index) {
    PortInfo free_index;
    free_index.in_use = false;
    set->ports.resize(index + 1u, free_index);
  }
  set->ports[index] = std::move(info);
  set->rebuild_lists();
  set->port_pods[index] = {
      {args.mac ? mac_to_u64(to_ether(*args.mac)) : 0, to_be32(args.ip), /*any_mac=*/!args.mac.has_value()}};
  tables_.publish_ports(std::move(set));
  attached_.push_back({args.name, args.iface, index, dpdk_id, args.ip, args.mac});
  return reply;
}

json PodPorts::del(const control::PodDelArgs& args) {
  auto it = std::find_if(attached_.begin(), attached_.end(), [&](const Attached& p) { return p.name == args.name; });
  if (it == attached_.end()) {
    if (has_pod(args.name))
      fail("pod.del", "name",
           fmt::format("\"{}\" is a [[pod]] of the config file; only pods attached by pod.add can be removed",
                       args.name));
    fail("pod.del", "name", fmt::format("no pod is named \"{}\"", args.name));
  }
  const Attached pod = *it;
  std::vector<FdbKey> fdb_keys;
  tables_.fdb.for_each([&](const FdbKey& key, FdbEntry& e) {
    if (e.port.load(std::memory_order_relaxed) == pod.index) fdb_keys.push_back(key);
  });
  const NeighborKey neighbor_key{to_be32(pod.ip)};
  const NeighborEntry* neighbor = tables_.neighbors.lookup(neighbor_key);
  const bool flush_neighbor = neighbor != nullptr && neighbor->state() != NeighborState::Static;
  json reply = {{"name", pod.name},
                {"port", pod.iface},
                {"index", pod.index},
                {"fdb_flushed", fdb_keys.size()},
                {"neighbors_flushed", flush_neighbor ? 1 : 0},
                {"dry_run", args.dry_run}};
  if (args.dry_run) return reply;

  // Workers stop polling and sending to the port with their next poll; the
  // control thread (this one) stops learning on it at once.
  auto set = std::make_unique<PortSet>(*tables_.port_set());
  set->ports[pod.index].in_use = false;
  set->rebuild_lists();
  tables_.publish_ports(std::move(set));
  for (const FdbKey& key : fdb_keys) tables_.fdb.erase(key);
  if (flush_neighbor) tables_.neighbors.erase(neighbor_key);
  attached_.erase(it);

  // Nothing polls the port or holds it in a TX buffer once every worker is
  // past the old port set: then it can close, and its index serve again.
  // A sleeping worker is offline and reads the new port set on waking;
  // workers never wait for the control thread, so this ends within a poll.
  tables_.rcu.synchronize();
  remove_port(pod.dpdk_id);
  tables_.release_port_index(pod.index);
  return reply;
}

json PodPorts::list() const {
  json out = json::array();
  const PortSet& set = *tables_.port_set();
  for (const PodConfig& pod : tables_.config.pods) {
    const PortConfig* port = tables_.config.find_port(pod.port);
    const std::string iface = port != nullptr ? device_iface(port->device) : "";
    out.push_back({{"name", pod.name},
                   {"port", pod.port},
                   {"index", set.index_of(pod.port)},
                   {"iface", iface.empty() ? json() : json(iface)},
                   {"ip", ipv4_to_string(pod.ip)},
                   {"mac", pod.mac.to_string()},
                   {"source", "config"}});
  }
  for (const Attached& pod : attached_)
    out.push_back({{"name", pod.name},
                   {"port", pod.iface},
                   {"index", pod.index},
                   {"iface", pod.iface},
                   {"ip", ipv4_to_string(pod.ip)},
                   {"mac", mac_json(pod.mac)},
                   {"source", "attach"}});
  return out;
}

}  // namespace kdp
