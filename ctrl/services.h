// Kubernetes Services as kdp sees them: the desired state read from the
// configuration ([[service]]), and its compilation into flat frontend entries
// with kube-proxy's semantics, which the dataplane installs and diffs. No DPDK
// here: everything is unit-testable on its own.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ctrl/net_types.h"

namespace kdp {

struct Config;

// IP protocol numbers, so a value can be compared with the IPv4 header as is.
enum class L4Proto : uint8_t { Tcp = 6, Udp = 17, Sctp = 132 };
enum class ServiceType : uint8_t { ClusterIP, NodePort, LoadBalancer };
enum class TrafficPolicy : uint8_t { Cluster, Local };
enum class SessionAffinity : uint8_t { None, ClientIP };
enum class LbAlgorithm : uint8_t { Random, RoundRobin, Maglev };

// The spellings of the configuration file: "TCP", "NodePort", "Local", "ClientIP", "round_robin".
std::string_view to_string(L4Proto proto);
std::string_view to_string(ServiceType type);
std::string_view to_string(TrafficPolicy policy);
std::string_view to_string(SessionAffinity affinity);
std::string_view to_string(LbAlgorithm algorithm);

// ---- Desired state ([[service]] in the configuration) ----------------------

struct ServicePortConfig {
  std::string name;  // optional when the service has one port
  L4Proto protocol = L4Proto::Tcp;
  uint16_t port = 0;         // on the cluster IP, external IPs and load balancer IPs
  uint16_t target_port = 0;  // on the endpoints; the configuration defaults it to port (endpoints
                             // with their own EndpointConfig::ports use those instead)
  uint16_t node_port = 0;    // on node_ip; 0 = none (ClusterIP services)
};

// The port an endpoint serves one service port on (an EndpointSlice's port of
// that name and protocol).
struct EndpointPort {
  std::string name;  // the service port's name
  L4Proto protocol = L4Proto::Tcp;
  uint16_t port = 0;
  bool operator==(const EndpointPort&) const = default;
};

struct EndpointConfig {
  Ipv4 ip = 0;
  std::string node;     // the node it runs on; empty: none (an endpoint outside the cluster)
  bool ready = true;    // EndpointSlice conditions; an unset "ready" means ready there too
  bool serving = true;  // defaults to ready
  bool terminating = false;
  // Empty: an endpoint of every service port, on its target_port (the
  // configuration file). Else an endpoint of the listed service ports only,
  // each on its own port, as EndpointSlices say (ctrl/k8s.h): a named
  // targetPort may be a different number on different endpoints.
  std::vector<EndpointPort> ports;
};

struct ServiceConfig {
  std::string name;  // "namespace/name"
  ServiceType type = ServiceType::ClusterIP;
  Ipv4 cluster_ip = 0;
  std::vector<Ipv4> external_ips;
  std::vector<Ipv4> load_balancer_ips;                  // LoadBalancer services only
  std::vector<Ipv4Prefix> load_balancer_source_ranges;  // empty: any source
  TrafficPolicy external_traffic_policy = TrafficPolicy::Cluster;
  TrafficPolicy internal_traffic_policy = TrafficPolicy::Cluster;
  SessionAffinity session_affinity = SessionAffinity::None;
  uint32_t session_affinity_timeout_s = 10800;  // Kubernetes' default
  std::optional<LbAlgorithm> lb_algorithm;      // unset: nat.lb_algorithm
  std::vector<ServicePortConfig> ports;
  std::vector<EndpointConfig> endpoints;
};

// ---- Compiled state: one entry per frontend ---------------------------------

enum class FrontendKind : uint8_t { ClusterIP, NodePort, ExternalIP, LoadBalancerIP };
std::string_view to_string(FrontendKind kind);  // "cluster IP", "node port", "external IP", "load balancer IP"

// What a packet's destination is matched on.
struct ServiceKey {
  Ipv4 vip = 0;
  L4Proto proto = L4Proto::Tcp;
  uint16_t port = 0;

  auto operator<=>(const ServiceKey&) const = default;
  std::string to_string() const;  // "10.96.0.10:80/TCP"
};

struct Backend {
  Ipv4 ip = 0;
  uint16_t port = 0;   // the service port's target_port
  bool local = false;  // the endpoint runs on this node

  auto operator<=>(const Backend&) const = default;
};

struct ServiceEntry {
  Ipv4 vip = 0;  // NodePort entries: node_ip
  L4Proto proto = L4Proto::Tcp;
  uint16_t port = 0;  // NodePort entries: node_port
  FrontendKind kind = FrontendKind::ClusterIP;
  std::string service, port_name;           // for listings and counters
  std::vector<Backend> backends;            // for sources outside node.cluster_cidr (policy applied)
  std::vector<Backend> backends_from_pods;  // for sources inside node.cluster_cidr
  bool masquerade_external = false;         // SNAT to the node for sources outside the cluster CIDR
  bool masquerade_from_pods = false;
  // What to do with a packet whose chosen list is empty: Reject (ICMP/TCP RST)
  // when the service has no usable endpoint anywhere, Drop when it has some,
  // only none this traffic policy may use.
  enum class Empty : uint8_t { Reject, Drop } when_empty_external = Empty::Reject, when_empty_pods = Empty::Reject;
  LbAlgorithm lb = LbAlgorithm::Random;
  bool affinity = false;                  // ClientIP session affinity
  uint32_t affinity_timeout_s = 0;        // 0 without affinity
  std::vector<Ipv4Prefix> source_ranges;  // LoadBalancerIP entries only; empty = any source

  ServiceKey key() const { return {vip, proto, port}; }
  bool operator==(const ServiceEntry&) const = default;
};

// The most frontends (entries) one node's Services may compile to: 2^24,
// far beyond Kubernetes' scalability limits (10,000 Services per cluster
// tested), so a runaway config fails with a clear error instead of an
// allocation failure. Nothing narrower holds a frontend id: flows and the
// Service snapshot use 32-bit ids.
inline constexpr size_t kMaxServiceFrontends = size_t{1} << 24;

struct CompiledServices {
  std::vector<ServiceEntry> entries;  // sorted by key(), keys unique
  std::vector<Ipv4> cluster_ips;      // sorted, unique: a known cluster IP on an unknown port is
                                      // rejected, an address in the service range never allocated dropped
  bool operator==(const CompiledServices&) const = default;
};

// The entries of every service in `config` (its node, nat.masquerade_all and
// nat.lb_algorithm included). Equal inputs compile to equal outputs, whatever
// the order of endpoints. Throws std::invalid_argument on duplicate keys, which
// parse_config rules out, and above kMaxServiceFrontends entries.
CompiledServices compile_services(const Config& config);
// The entries of one service (sorted by key), compiled against `config`'s
// node and nat settings as compile_services compiles each.
std::vector<ServiceEntry> compile_service(const Config& config, const ServiceConfig& service);

struct ServiceDiff {
  std::vector<ServiceEntry> added, changed;  // changed: the desired entry
  std::vector<ServiceKey> removed;
  std::optional<std::vector<Ipv4>> cluster_ips;  // the new sorted list, when it changes

  bool empty() const { return added.empty() && changed.empty() && removed.empty() && !cluster_ips; }
};

// What turns `installed` into `desired`; both as compile_services returns them
// (sorted by key). Entries equal in both are not reported.
ServiceDiff diff_services(const CompiledServices& installed, const CompiledServices& desired);

// The Services installed in the dataplane, as the control thread keeps them:
// entries by key, and the keys of each service, so that a change to one
// service is diffed at the cost of that service, not of all of them.
class InstalledServices {
 public:
  InstalledServices() = default;
  explicit InstalledServices(const CompiledServices& compiled);

  // What turns this into `desired` (a whole desired state).
  ServiceDiff diff(const CompiledServices& desired) const;
  // What replaces one service: `before` (null: it is new) by `after` (null:
  // it goes), compiled against `config`'s node and nat settings; the other
  // services stay. Throws std::invalid_argument when a frontend of `after`
  // is another service's, as compile_services does.
  ServiceDiff diff_service(const ServiceConfig* before, const ServiceConfig* after, const Config& config) const;
  // Records a diff as installed (after its snapshot is published).
  void apply(const ServiceDiff& diff);

  const ServiceEntry* find(const ServiceKey& key) const;
  const std::map<ServiceKey, ServiceEntry>& entries() const { return entries_; }  // in key order
  const std::vector<Ipv4>& cluster_ips() const { return cluster_ips_; }           // sorted, unique
  // The keys of a service's frontends, sorted; empty when it has none.
  const std::vector<ServiceKey>& keys_of(const std::string& service) const;

 private:
  std::map<ServiceKey, ServiceEntry> entries_;
  std::unordered_map<std::string, std::vector<ServiceKey>> keys_by_service_;
  std::vector<Ipv4> cluster_ips_;
};

}  // namespace kdp
