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

CompiledServices compile_services(const Config& config) {
  CompiledServices compiled;
  for (const ServiceConfig& service : config.services) {
    compiled.cluster_ips.push_back(service.cluster_ip);
    for (const ServicePortConfig& port : service.ports) {
      const UsableEndpoints usable = categorize(service, port, config.node.name);
      compiled.entries.push_back(cluster_ip_entry(config, service, port, usable));
      if (port.node_port != 0)
        compiled.entries.push_back(
            external_entry(config, service, port, usable, FrontendKind::NodePort, config.node.node_ip, port.node_port));
      for (Ipv4 ip : service.external_ips)
        compiled.entries.push_back(
            external_entry(config, service, port, usable, FrontendKind::ExternalIP, ip, port.port));
      for (Ipv4 ip : service.load_balancer_ips)
        compiled.entries.push_back(
            external_entry(config, service, port, usable, FrontendKind::LoadBalancerIP, ip, port.port));
    }
  }

  if (compiled.entries.size() > kMaxServiceFrontends)
    throw std::invalid_argument(fmt::format("compile_services: service: {} frontends exceed the maximum of {}",
                                            compiled.entries.size(), kMaxServiceFrontends));
  std::sort(compiled.entries.begin(), compiled.entries.end(),
            [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() < b.key(); });
  auto duplicate = std::adjacent_find(compiled.entries.begin(), compiled.entries.end(),
                                      [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() == b.key(); });
  if (duplicate != compiled.entries.end())
    throw std::invalid_argument(fmt::format("compile_services: {} is a frontend of both \"{}\" and \"{}\"",
                                            duplicate->key().to_string(), duplicate->service,
                                            (duplicate + 1)->service));

  std::sort(compiled.cluster_ips.begin(), compiled.cluster_ips.end());
  compiled.cluster_ips.erase(std::unique(compiled.cluster_ips.begin(), compiled.cluster_ips.end()),
                             compiled.cluster_ips.end());
  return compiled;
}

ServiceDiff diff_services(const CompiledServices& installed, const CompiledServices& desired) {
  auto by_key = [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() < b.key(); };
  assert(std::is_sorted(installed.entries.begin(), installed.entries.end(), by_key));
  assert(std::is_sorted(desired.entries.begin(), desired.entries.end(), by_key));

  // One merge walk over both sorted lists.
  ServiceDiff diff;
  auto old_it = installed.entries.begin();
  auto new_it = desired.entries.begin();
  while (old_it != installed.entries.end() || new_it != desired.entries.end()) {
    if (new_it == desired.entries.end() || (old_it != installed.entries.end() && old_it->key() < new_it->key())) {
      diff.removed.push_back(old_it->key());
      ++old_it;
    } else if (old_it == installed.entries.end() || new_it->key() < old_it->key()) {
      diff.added.push_back(*new_it);
      ++new_it;
    } else {
      if (!(*old_it == *new_it)) diff.changed.push_back(*new_it);
      ++old_it;
      ++new_it;
    }
  }
  return diff;
}

}  // namespace kdp
