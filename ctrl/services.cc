#include "ctrl/services.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <stdexcept>

#include "ctrl/config.h"

// The rules below follow kube-proxy (pkg/proxy/topology.go CategorizeEndpoints
// and the iptables/nftables proxiers); each cites the behaviour it copies.

namespace kdp {

std::string_view to_string(L4Proto proto) {
  switch (proto) {
    case L4Proto::Tcp:
      return "TCP";
    case L4Proto::Udp:
      return "UDP";
    case L4Proto::Sctp:
      return "SCTP";
  }
  return "?";
}

std::string_view to_string(ServiceType type) {
  switch (type) {
    case ServiceType::ClusterIP:
      return "ClusterIP";
    case ServiceType::NodePort:
      return "NodePort";
    case ServiceType::LoadBalancer:
      return "LoadBalancer";
  }
  return "?";
}

std::string_view to_string(TrafficPolicy policy) {
  switch (policy) {
    case TrafficPolicy::Cluster:
      return "Cluster";
    case TrafficPolicy::Local:
      return "Local";
  }
  return "?";
}

std::string_view to_string(SessionAffinity affinity) {
  switch (affinity) {
    case SessionAffinity::None:
      return "None";
    case SessionAffinity::ClientIP:
      return "ClientIP";
  }
  return "?";
}

std::string_view to_string(LbAlgorithm algorithm) {
  switch (algorithm) {
    case LbAlgorithm::Random:
      return "random";
    case LbAlgorithm::RoundRobin:
      return "round_robin";
    case LbAlgorithm::Maglev:
      return "maglev";
  }
  return "?";
}

std::string_view to_string(FrontendKind kind) {
  switch (kind) {
    case FrontendKind::ClusterIP:
      return "cluster IP";
    case FrontendKind::NodePort:
      return "node port";
    case FrontendKind::ExternalIP:
      return "external IP";
    case FrontendKind::LoadBalancerIP:
      return "load balancer IP";
  }
  return "?";
}

std::string ServiceKey::to_string() const {
  return fmt::format("{}:{}/{}", ipv4_to_string(vip), port, kdp::to_string(proto));
}

namespace {

// The endpoints one service port may use, as kube-proxy's CategorizeEndpoints
// picks them.
struct UsableEndpoints {
  std::vector<Backend> cluster;  // for traffic policy Cluster
  std::vector<Backend> local;    // for traffic policy Local
  bool any = false;              // some endpoint anywhere is usable
};

UsableEndpoints categorize(const ServiceConfig& service, const ServicePortConfig& port, std::string_view node_name) {
  // The endpoint's port for this service port: its own (EndpointSlice) port
  // of the same name and protocol, else target_port; 0: it has none.
  auto port_on = [&](const EndpointConfig& endpoint) -> uint16_t {
    if (endpoint.ports.empty()) return port.target_port;
    for (const EndpointPort& own : endpoint.ports)
      if (own.name == port.name && own.protocol == port.protocol) return own.port;
    return 0;
  };
  auto backend_of = [&](const EndpointConfig& endpoint) {
    return Backend{endpoint.ip, port_on(endpoint), !endpoint.node.empty() && endpoint.node == node_name};
  };
  auto ready = [](const EndpointConfig& endpoint) { return endpoint.ready; };
  // Terminating endpoints that still serve are a fallback only, so that
  // connections survive a rolling update that leaves no ready endpoint
  // (KEP-1669, ProxyTerminatingEndpoints). Not-ready, not-serving endpoints are never used.
  auto serving_terminating = [](const EndpointConfig& endpoint) { return endpoint.serving && endpoint.terminating; };

  // Ready endpoints first, else the serving-terminating ones.
  auto pick = [&](bool local_only) {
    std::vector<Backend> picked;
    for (auto usable : {+ready, +serving_terminating}) {
      for (const EndpointConfig& endpoint : service.endpoints) {
        Backend backend = backend_of(endpoint);
        if (backend.port != 0 && usable(endpoint) && (!local_only || backend.local)) picked.push_back(backend);
      }
      if (!picked.empty()) break;
    }
    // Sorted, so equal endpoint sets compile equal whatever their order (diff stability).
    std::sort(picked.begin(), picked.end());
    return picked;
  };

  UsableEndpoints usable;
  usable.cluster = pick(/*local_only=*/false);
  // As CategorizeEndpoints: the Local list falls back to terminating endpoints
  // by its own count, so a node whose only local endpoint is terminating
  // keeps using it while ready endpoints exist elsewhere.
  usable.local = pick(/*local_only=*/true);
  usable.any = !usable.cluster.empty();
  return usable;
}

ServiceEntry entry_base(const Config& config, const ServiceConfig& service, const ServicePortConfig& port,
                        FrontendKind kind, Ipv4 vip, uint16_t vport) {
  ServiceEntry entry;
  entry.vip = vip;
  entry.proto = port.protocol;
  entry.port = vport;
  entry.kind = kind;
  entry.service = service.name;
  entry.port_name = port.name;
  entry.lb = service.lb_algorithm.value_or(config.nat.lb_algorithm);
  entry.affinity = service.session_affinity == SessionAffinity::ClientIP;
  entry.affinity_timeout_s = entry.affinity ? service.session_affinity_timeout_s : 0;
  return entry;
}

// kube-proxy REJECTs traffic to a service with no usable endpoint at all
// ("has no endpoints"), and DROPs it when endpoints exist but the traffic
// policy allows none of them ("has no local endpoints").
ServiceEntry::Empty when_empty(const UsableEndpoints& usable) {
  return usable.any ? ServiceEntry::Empty::Drop : ServiceEntry::Empty::Reject;
}

ServiceEntry cluster_ip_entry(const Config& config, const ServiceConfig& service, const ServicePortConfig& port,
                              const UsableEndpoints& usable) {
  ServiceEntry entry = entry_base(config, service, port, FrontendKind::ClusterIP, service.cluster_ip, port.port);
  // internalTrafficPolicy Local: this node's endpoints only, for every source.
  const bool local = service.internal_traffic_policy == TrafficPolicy::Local;
  entry.backends = local ? usable.local : usable.cluster;
  entry.backends_from_pods = entry.backends;
  entry.when_empty_external = entry.when_empty_pods = when_empty(usable);
  // kube-proxy masquerades off-cluster sources to a cluster IP (a static route
  // to the service range may bounce the reply through another node), and pod
  // sources only with --masquerade-all. The ITP never changes masquerading.
  entry.masquerade_external = true;
  entry.masquerade_from_pods = config.nat.masquerade_all;
  return entry;
}

ServiceEntry external_entry(const Config& config, const ServiceConfig& service, const ServicePortConfig& port,
                            const UsableEndpoints& usable, FrontendKind kind, Ipv4 vip, uint16_t vport) {
  ServiceEntry entry = entry_base(config, service, port, kind, vip, vport);
  entry.when_empty_external = entry.when_empty_pods = when_empty(usable);
  if (service.external_traffic_policy == TrafficPolicy::Cluster) {
    // ETP Cluster: any endpoint, and always masquerade, since the endpoint may
    // be on another node and must reply through this one.
    entry.backends = usable.cluster;
    entry.backends_from_pods = usable.cluster;
    entry.masquerade_external = true;
    entry.masquerade_from_pods = true;
  } else {
    // ETP Local: this node's endpoints only, keeping the client's address.
    entry.backends = usable.local;
    entry.masquerade_external = false;
    // Pods are exempt from the external policy ("pod traffic for ... external
    // destinations" jumps to the cluster chain), as if they went out to the
    // load balancer and came back; the cluster chain's masquerade rules match
    // only the cluster IP, so they are not masqueraded.
    entry.backends_from_pods = usable.cluster;
    entry.masquerade_from_pods = false;
  }
  if (kind == FrontendKind::LoadBalancerIP) entry.source_ranges = service.load_balancer_source_ranges;
  return entry;
}

}  // namespace

namespace {

void append_entries(const Config& config, const ServiceConfig& service, std::vector<ServiceEntry>& out) {
  for (const ServicePortConfig& port : service.ports) {
    const UsableEndpoints usable = categorize(service, port, config.node.name);
    out.push_back(cluster_ip_entry(config, service, port, usable));
    if (port.node_port != 0)
      out.push_back(
          external_entry(config, service, port, usable, FrontendKind::NodePort, config.node.node_ip, port.node_port));
    for (Ipv4 ip : service.external_ips)
      out.push_back(external_entry(config, service, port, usable, FrontendKind::ExternalIP, ip, port.port));
    for (Ipv4 ip : service.load_balancer_ips)
      out.push_back(external_entry(config, service, port, usable, FrontendKind::LoadBalancerIP, ip, port.port));
  }
}

[[noreturn]] void fail_shared_frontend(const ServiceKey& key, std::string_view one, std::string_view other) {
  throw std::invalid_argument(
      fmt::format("compile_services: {} is a frontend of both \"{}\" and \"{}\"", key.to_string(), one, other));
}

void fail_above_maximum(size_t frontends) {
  if (frontends > kMaxServiceFrontends)
    throw std::invalid_argument(fmt::format("compile_services: service: {} frontends exceed the maximum of {}",
                                            frontends, kMaxServiceFrontends));
}

// Sorts by key; throws when two entries share one.
void sort_unique(std::vector<ServiceEntry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() < b.key(); });
  auto duplicate = std::adjacent_find(entries.begin(), entries.end(),
                                      [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() == b.key(); });
  if (duplicate != entries.end()) fail_shared_frontend(duplicate->key(), duplicate->service, (duplicate + 1)->service);
}

// One merge walk over two lists sorted by key; `entry_of` reads an old item.
template <typename OldIt, typename EntryOf>
ServiceDiff merge_diff(OldIt old_it, OldIt old_end, const std::vector<ServiceEntry>& desired, EntryOf entry_of) {
  ServiceDiff diff;
  auto new_it = desired.begin();
  while (old_it != old_end || new_it != desired.end()) {
    if (new_it == desired.end() || (old_it != old_end && entry_of(*old_it).key() < new_it->key())) {
      diff.removed.push_back(entry_of(*old_it).key());
      ++old_it;
    } else if (old_it == old_end || new_it->key() < entry_of(*old_it).key()) {
      diff.added.push_back(*new_it);
      ++new_it;
    } else {
      if (!(entry_of(*old_it) == *new_it)) diff.changed.push_back(*new_it);
      ++old_it;
      ++new_it;
    }
  }
  return diff;
}

}  // namespace

std::vector<ServiceEntry> compile_service(const Config& config, const ServiceConfig& service) {
  std::vector<ServiceEntry> entries;
  append_entries(config, service, entries);
  sort_unique(entries);
  return entries;
}

CompiledServices compile_services(const Config& config) {
  CompiledServices compiled;
  for (const ServiceConfig& service : config.services) {
    compiled.cluster_ips.push_back(service.cluster_ip);
    append_entries(config, service, compiled.entries);
  }
  fail_above_maximum(compiled.entries.size());
  sort_unique(compiled.entries);
  std::sort(compiled.cluster_ips.begin(), compiled.cluster_ips.end());
  compiled.cluster_ips.erase(std::unique(compiled.cluster_ips.begin(), compiled.cluster_ips.end()),
                             compiled.cluster_ips.end());
  return compiled;
}

ServiceDiff diff_services(const CompiledServices& installed, const CompiledServices& desired) {
  auto by_key = [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() < b.key(); };
  assert(std::is_sorted(installed.entries.begin(), installed.entries.end(), by_key));
  assert(std::is_sorted(desired.entries.begin(), desired.entries.end(), by_key));
  ServiceDiff diff = merge_diff(installed.entries.begin(), installed.entries.end(), desired.entries,
                                [](const ServiceEntry& e) -> const ServiceEntry& { return e; });
  if (installed.cluster_ips != desired.cluster_ips) diff.cluster_ips = desired.cluster_ips;
  return diff;
}

// ---- InstalledServices ------------------------------------------------------

InstalledServices::InstalledServices(const CompiledServices& compiled) { apply(diff_services({}, compiled)); }

ServiceDiff InstalledServices::diff(const CompiledServices& desired) const {
  ServiceDiff diff = merge_diff(entries_.begin(), entries_.end(), desired.entries,
                                [](const auto& item) -> const ServiceEntry& { return item.second; });
  if (cluster_ips_ != desired.cluster_ips) diff.cluster_ips = desired.cluster_ips;
  return diff;
}

ServiceDiff InstalledServices::diff_service(const ServiceConfig* before, const ServiceConfig* after,
                                            const Config& config) const {
  assert(before != nullptr || after != nullptr);
  const std::string& name = after != nullptr ? after->name : before->name;
  const std::vector<ServiceEntry> desired = after != nullptr ? compile_service(config, *after) : std::vector<ServiceEntry>{};
  ServiceDiff diff;
  for (const ServiceEntry& e : desired) {
    auto it = entries_.find(e.key());
    if (it == entries_.end()) diff.added.push_back(e);
    else if (it->second.service != name) fail_shared_frontend(e.key(), it->second.service, name);
    else if (!(it->second == e)) diff.changed.push_back(e);
  }
  std::vector<ServiceKey> desired_keys;  // sorted, as desired is
  for (const ServiceEntry& e : desired) desired_keys.push_back(e.key());
  for (const ServiceKey& key : keys_of(name))
    if (!std::binary_search(desired_keys.begin(), desired_keys.end(), key))
      diff.removed.push_back(key);
  fail_above_maximum(entries_.size() + diff.added.size() - diff.removed.size());

  std::vector<Ipv4> cluster_ips = cluster_ips_;
  if (before != nullptr) {
    auto it = std::lower_bound(cluster_ips.begin(), cluster_ips.end(), before->cluster_ip);
    if (it != cluster_ips.end() && *it == before->cluster_ip) cluster_ips.erase(it);
  }
  if (after != nullptr) {
    auto it = std::lower_bound(cluster_ips.begin(), cluster_ips.end(), after->cluster_ip);
    if (it == cluster_ips.end() || *it != after->cluster_ip) cluster_ips.insert(it, after->cluster_ip);
  }
  if (cluster_ips != cluster_ips_) diff.cluster_ips = std::move(cluster_ips);
  return diff;
}

void InstalledServices::apply(const ServiceDiff& diff) {
  auto forget_key = [&](const std::string& service, const ServiceKey& key) {
    auto it = keys_by_service_.find(service);
    if (it == keys_by_service_.end()) return;
    auto& keys = it->second;
    auto at = std::lower_bound(keys.begin(), keys.end(), key);
    if (at != keys.end() && *at == key) keys.erase(at);
    if (keys.empty()) keys_by_service_.erase(it);
  };
  auto remember_key = [&](const std::string& service, const ServiceKey& key) {
    auto& keys = keys_by_service_[service];
    keys.insert(std::lower_bound(keys.begin(), keys.end(), key), key);
  };
  for (const ServiceKey& key : diff.removed) {
    auto it = entries_.find(key);
    if (it == entries_.end()) continue;
    forget_key(it->second.service, key);
    entries_.erase(it);
  }
  for (const ServiceEntry& e : diff.changed) {
    ServiceEntry& installed = entries_[e.key()];
    if (installed.service != e.service) {  // the frontend moved to another service
      forget_key(installed.service, e.key());
      remember_key(e.service, e.key());
    }
    installed = e;
  }
  for (const ServiceEntry& e : diff.added) {
    entries_.insert_or_assign(e.key(), e);
    remember_key(e.service, e.key());
  }
  if (diff.cluster_ips) cluster_ips_ = *diff.cluster_ips;
}

const ServiceEntry* InstalledServices::find(const ServiceKey& key) const {
  auto it = entries_.find(key);
  return it != entries_.end() ? &it->second : nullptr;
}

const std::vector<ServiceKey>& InstalledServices::keys_of(const std::string& service) const {
  static const std::vector<ServiceKey> kNone;
  auto it = keys_by_service_.find(service);
  return it != keys_by_service_.end() ? it->second : kNone;
}

}  // namespace kdp
