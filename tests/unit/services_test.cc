// Unit tests of the service compiler: kube-proxy's endpoint selection, traffic
// policies, masquerading and reject/drop rules, one rule per test, plus the
// ordering and diff the dataplane relies on.
#include "ctrl/services.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <stdexcept>

#include "ctrl/config.h"

namespace kdp {

// Readable values in failure messages.
void PrintTo(const Backend& backend, std::ostream* out) {
  *out << ipv4_to_string(backend.ip) << ":" << backend.port << (backend.local ? " (local)" : "");
}
void PrintTo(const ServiceKey& key, std::ostream* out) { *out << key.to_string(); }

namespace {

Ipv4 ip(std::string_view text) { return parse_ipv4(text).value(); }
Ipv4Prefix prefix(std::string_view text) { return parse_ipv4_prefix(text).value(); }

constexpr std::string_view kNode = "node-a";

Config node_config() {
  Config config;
  config.node.name = std::string(kNode);
  config.node.node_ip = ip("192.168.50.10");
  config.node.pod_cidr = prefix("10.244.1.0/24");
  config.node.cluster_cidr = prefix("10.244.0.0/16");
  config.node.service_cidr = prefix("10.96.0.0/12");
  return config;
}

EndpointConfig endpoint(std::string_view address, std::string_view node, bool ready = true,
                        std::optional<bool> serving = std::nullopt, bool terminating = false) {
  return EndpointConfig{ip(address), std::string(node), ready, serving.value_or(ready), terminating, {}};
}

EndpointConfig terminating_endpoint(std::string_view address, std::string_view node, bool serving = true) {
  return endpoint(address, node, /*ready=*/false, serving, /*terminating=*/true);
}

// One TCP port 80 -> 8080, node port 30080 unless ClusterIP.
ServiceConfig service(ServiceType type = ServiceType::ClusterIP, std::vector<EndpointConfig> endpoints = {}) {
  ServiceConfig service;
  service.name = "default/web";
  service.type = type;
  service.cluster_ip = ip("10.96.0.10");
  service.ports.push_back({"http", L4Proto::Tcp, 80, 8080, uint16_t(type == ServiceType::ClusterIP ? 0 : 30080)});
  service.endpoints = std::move(endpoints);
  return service;
}

Backend backend(std::string_view address, bool local, uint16_t port = 8080) {
  return Backend{ip(address), port, local};
}

// The one entry of `kind` in `compiled` (a copy: callers pass temporaries).
ServiceEntry entry_of(const CompiledServices& compiled, FrontendKind kind) {
  auto found = std::find_if(compiled.entries.begin(), compiled.entries.end(),
                            [&](const ServiceEntry& entry) { return entry.kind == kind; });
  if (found == compiled.entries.end()) throw std::runtime_error("no entry of that kind");
  EXPECT_EQ(std::count_if(compiled.entries.begin(), compiled.entries.end(),
                          [&](const ServiceEntry& entry) { return entry.kind == kind; }),
            1);
  return *found;
}

CompiledServices compile_one(const ServiceConfig& one, Config config = node_config()) {
  config.services.push_back(one);
  return compile_services(config);
}

// A local and a remote ready endpoint, a remote not-ready one.
std::vector<EndpointConfig> mixed_endpoints() {
  return {endpoint("10.244.1.2", kNode), endpoint("10.244.2.3", "node-b"),
          endpoint("10.244.2.4", "node-b", /*ready=*/false)};
}

// ---- Which endpoints are usable -------------------------------------------

TEST(ServicesTest, OnlyReadyEndpointsWhenAnyIsReady) {
  const CompiledServices compiled = compile_one(
      service(ServiceType::ClusterIP, {endpoint("10.244.1.2", kNode), endpoint("10.244.2.3", "node-b", /*ready=*/false),
                                       terminating_endpoint("10.244.2.4", "node-b"),
                                       endpoint("10.244.2.5", "node-b", /*ready=*/false, /*serving=*/true)}));
  const ServiceEntry entry = entry_of(compiled, FrontendKind::ClusterIP);
  EXPECT_EQ(entry.backends, std::vector<Backend>{backend("10.244.1.2", true)});
  EXPECT_EQ(entry.backends_from_pods, entry.backends);
}

TEST(ServicesTest, ServingTerminatingEndpointsAreTheFallbackWhenNoneIsReady) {
  const CompiledServices compiled = compile_one(
      service(ServiceType::ClusterIP,
              {endpoint("10.244.2.3", "node-b", /*ready=*/false), terminating_endpoint("10.244.2.4", "node-b"),
               terminating_endpoint("10.244.2.5", "node-b", /*serving=*/false),
               // Serving but not terminating (not ready for another reason): not a fallback.
               endpoint("10.244.2.6", "node-b", /*ready=*/false, /*serving=*/true)}));
  const ServiceEntry entry = entry_of(compiled, FrontendKind::ClusterIP);
  EXPECT_EQ(entry.backends, std::vector<Backend>{backend("10.244.2.4", false)});
}

TEST(ServicesTest, NotReadyNotServingEndpointsAreNeverUsed) {
  const CompiledServices compiled =
      compile_one(service(ServiceType::NodePort, {endpoint("10.244.1.2", kNode, /*ready=*/false),
                                                  terminating_endpoint("10.244.2.3", "node-b", /*serving=*/false)}));
  for (const ServiceEntry& entry : compiled.entries) {
    EXPECT_TRUE(entry.backends.empty());
    EXPECT_TRUE(entry.backends_from_pods.empty());
    EXPECT_EQ(entry.when_empty_external, ServiceEntry::Empty::Reject);
    EXPECT_EQ(entry.when_empty_pods, ServiceEntry::Empty::Reject);
  }
}

TEST(ServicesTest, LocalityComesFromTheNodeName) {
  const CompiledServices compiled =
      compile_one(service(ServiceType::ClusterIP, {endpoint("10.244.1.2", kNode), endpoint("10.244.2.3", "node-b"),
                                                   endpoint("203.0.113.9", "")}));
  EXPECT_EQ(
      entry_of(compiled, FrontendKind::ClusterIP).backends,
      (std::vector<Backend>{backend("10.244.1.2", true), backend("10.244.2.3", false), backend("203.0.113.9", false)}));
}

// ---- Cluster IP: internal traffic policy ----------------------------------

TEST(ServicesTest, InternalPolicyClusterUsesEveryUsableEndpoint) {
  const CompiledServices compiled = compile_one(service(ServiceType::ClusterIP, mixed_endpoints()));
  const ServiceEntry entry = entry_of(compiled, FrontendKind::ClusterIP);
  const std::vector<Backend> all = {backend("10.244.1.2", true), backend("10.244.2.3", false)};
  EXPECT_EQ(entry.backends, all);
  EXPECT_EQ(entry.backends_from_pods, all);
}

TEST(ServicesTest, InternalPolicyLocalUsesThisNodesEndpointsOnly) {
  ServiceConfig web = service(ServiceType::ClusterIP, mixed_endpoints());
  web.internal_traffic_policy = TrafficPolicy::Local;
  const ServiceEntry entry = entry_of(compile_one(web), FrontendKind::ClusterIP);
  EXPECT_EQ(entry.backends, std::vector<Backend>{backend("10.244.1.2", true)});
  EXPECT_EQ(entry.backends_from_pods, std::vector<Backend>{backend("10.244.1.2", true)});
}

TEST(ServicesTest, InternalPolicyLocalWithoutLocalEndpointsDrops) {
  ServiceConfig web = service(ServiceType::ClusterIP, {endpoint("10.244.2.3", "node-b")});
  web.internal_traffic_policy = TrafficPolicy::Local;
  const ServiceEntry entry = entry_of(compile_one(web), FrontendKind::ClusterIP);
  EXPECT_TRUE(entry.backends.empty());
  EXPECT_TRUE(entry.backends_from_pods.empty());
  // Endpoints exist elsewhere: drop, not reject ("has no local endpoints").
  EXPECT_EQ(entry.when_empty_external, ServiceEntry::Empty::Drop);
  EXPECT_EQ(entry.when_empty_pods, ServiceEntry::Empty::Drop);
}

TEST(ServicesTest, LocalPolicyFallsBackToTerminatingEndpointsByItsOwnCount) {
  // A ready endpoint elsewhere, only a terminating one here: the Local list
  // still gets the terminating one (CategorizeEndpoints decides per list).
  ServiceConfig web =
      service(ServiceType::ClusterIP, {endpoint("10.244.2.3", "node-b"), terminating_endpoint("10.244.1.2", kNode)});
  web.internal_traffic_policy = TrafficPolicy::Local;
  EXPECT_EQ(entry_of(compile_one(web), FrontendKind::ClusterIP).backends,
            std::vector<Backend>{backend("10.244.1.2", true)});
  // A ready local endpoint wins over a terminating local one.
  web.endpoints.push_back(endpoint("10.244.1.3", kNode));
  EXPECT_EQ(entry_of(compile_one(web), FrontendKind::ClusterIP).backends,
            std::vector<Backend>{backend("10.244.1.3", true)});
}

TEST(ServicesTest, ClusterIpMasqueradesOffClusterSourcesOnly) {
  const ServiceEntry entry =
      entry_of(compile_one(service(ServiceType::ClusterIP, mixed_endpoints())), FrontendKind::ClusterIP);
  EXPECT_TRUE(entry.masquerade_external);
  EXPECT_FALSE(entry.masquerade_from_pods);
}

TEST(ServicesTest, MasqueradeAllMasqueradesPodsToClusterIps) {
  Config config = node_config();
  config.nat.masquerade_all = true;
  const ServiceEntry& entry =
      entry_of(compile_one(service(ServiceType::ClusterIP, mixed_endpoints()), config), FrontendKind::ClusterIP);
  EXPECT_TRUE(entry.masquerade_external);
  EXPECT_TRUE(entry.masquerade_from_pods);
}

TEST(ServicesTest, InternalPolicyNeverChangesMasquerading) {
  for (bool masquerade_all : {false, true}) {
    Config config = node_config();
    config.nat.masquerade_all = masquerade_all;
    ServiceConfig web = service(ServiceType::ClusterIP, mixed_endpoints());
    web.internal_traffic_policy = TrafficPolicy::Local;
    const ServiceEntry entry = entry_of(compile_one(web, config), FrontendKind::ClusterIP);
    EXPECT_TRUE(entry.masquerade_external);
    EXPECT_EQ(entry.masquerade_from_pods, masquerade_all);
  }
}

TEST(ServicesTest, ClusterIpWithoutEndpointsRejects) {
  const ServiceEntry entry = entry_of(compile_one(service()), FrontendKind::ClusterIP);
  EXPECT_TRUE(entry.backends.empty());
  EXPECT_EQ(entry.when_empty_external, ServiceEntry::Empty::Reject);
  EXPECT_EQ(entry.when_empty_pods, ServiceEntry::Empty::Reject);
}

// ---- Node ports, external IPs, load balancer IPs: external policy -----------

ServiceConfig load_balancer(std::vector<EndpointConfig> endpoints, TrafficPolicy external_policy) {
  ServiceConfig web = service(ServiceType::LoadBalancer, std::move(endpoints));
  web.external_ips = {ip("192.0.2.10")};
  web.load_balancer_ips = {ip("198.51.100.7")};
  web.external_traffic_policy = external_policy;
  return web;
}

constexpr FrontendKind kExternalKinds[] = {FrontendKind::NodePort, FrontendKind::ExternalIP,
                                           FrontendKind::LoadBalancerIP};

TEST(ServicesTest, ExternalPolicyClusterUsesAllEndpointsAndAlwaysMasquerades) {
  const CompiledServices compiled = compile_one(load_balancer(mixed_endpoints(), TrafficPolicy::Cluster));
  const std::vector<Backend> all = {backend("10.244.1.2", true), backend("10.244.2.3", false)};
  for (FrontendKind kind : kExternalKinds) {
    SCOPED_TRACE(to_string(kind));
    const ServiceEntry entry = entry_of(compiled, kind);
    EXPECT_EQ(entry.backends, all);
    EXPECT_EQ(entry.backends_from_pods, all);
    EXPECT_TRUE(entry.masquerade_external);
    EXPECT_TRUE(entry.masquerade_from_pods);  // even without masquerade_all
  }
}

TEST(ServicesTest, ExternalPolicyLocalKeepsClientAddressOnLocalEndpoints) {
  const CompiledServices compiled = compile_one(load_balancer(mixed_endpoints(), TrafficPolicy::Local));
  for (FrontendKind kind : kExternalKinds) {
    SCOPED_TRACE(to_string(kind));
    const ServiceEntry entry = entry_of(compiled, kind);
    EXPECT_EQ(entry.backends, std::vector<Backend>{backend("10.244.1.2", true)});
    EXPECT_FALSE(entry.masquerade_external);
  }
}

TEST(ServicesTest, ExternalPolicyLocalShortCircuitsPodsToAllEndpoints) {
  for (bool masquerade_all : {false, true}) {
    Config config = node_config();
    config.nat.masquerade_all = masquerade_all;
    const CompiledServices compiled = compile_one(load_balancer(mixed_endpoints(), TrafficPolicy::Local), config);
    for (FrontendKind kind : kExternalKinds) {
      SCOPED_TRACE(to_string(kind));
      const ServiceEntry entry = entry_of(compiled, kind);
      EXPECT_EQ(entry.backends_from_pods,
                (std::vector<Backend>{backend("10.244.1.2", true), backend("10.244.2.3", false)}));
      EXPECT_FALSE(entry.masquerade_from_pods);  // the cluster chain's masquerade matches the cluster IP only
    }
  }
}

TEST(ServicesTest, ExternalPolicyLocalWithoutLocalEndpointsDropsExternalSourcesOnly) {
  const CompiledServices compiled =
      compile_one(load_balancer({endpoint("10.244.2.3", "node-b")}, TrafficPolicy::Local));
  for (FrontendKind kind : kExternalKinds) {
    SCOPED_TRACE(to_string(kind));
    const ServiceEntry entry = entry_of(compiled, kind);
    EXPECT_TRUE(entry.backends.empty());
    EXPECT_EQ(entry.when_empty_external, ServiceEntry::Empty::Drop);
    EXPECT_EQ(entry.backends_from_pods, std::vector<Backend>{backend("10.244.2.3", false)});
  }
  // The cluster IP is not subject to the external policy.
  EXPECT_EQ(entry_of(compiled, FrontendKind::ClusterIP).backends, std::vector<Backend>{backend("10.244.2.3", false)});
}

TEST(ServicesTest, ExternalPolicyLocalWithoutAnyEndpointRejectsBoth) {
  const CompiledServices compiled =
      compile_one(load_balancer({endpoint("10.244.2.3", "node-b", /*ready=*/false)}, TrafficPolicy::Local));
  for (FrontendKind kind : kExternalKinds) {
    SCOPED_TRACE(to_string(kind));
    const ServiceEntry entry = entry_of(compiled, kind);
    EXPECT_TRUE(entry.backends.empty());
    EXPECT_TRUE(entry.backends_from_pods.empty());
    EXPECT_EQ(entry.when_empty_external, ServiceEntry::Empty::Reject);
    EXPECT_EQ(entry.when_empty_pods, ServiceEntry::Empty::Reject);
  }
}

TEST(ServicesTest, NoUsableEndpointRejectsEveryFrontend) {
  for (TrafficPolicy policy : {TrafficPolicy::Cluster, TrafficPolicy::Local}) {
    ServiceConfig web = load_balancer({}, policy);
    web.internal_traffic_policy = policy;
    const CompiledServices compiled = compile_one(web);
    ASSERT_EQ(compiled.entries.size(), 4u);
    for (const ServiceEntry& entry : compiled.entries) {
      SCOPED_TRACE(to_string(entry.kind));
      EXPECT_EQ(entry.when_empty_external, ServiceEntry::Empty::Reject);
      EXPECT_EQ(entry.when_empty_pods, ServiceEntry::Empty::Reject);
    }
  }
}

// Endpoints with their own ports (EndpointSlices): each service port uses the
// endpoint's port of its name and protocol; an endpoint without one is no
// endpoint of that service port, which may leave it with none at all.
TEST(ServicesTest, EndpointPortsOverrideTargetPortPerServicePort) {
  ServiceConfig web = service();
  web.ports.push_back({"dns", L4Proto::Udp, 53, 53, 0});
  EndpointConfig old_pod = endpoint("10.244.1.2", kNode), new_pod = endpoint("10.244.2.3", "node-b"),
                 plain = endpoint("10.244.2.4", "node-b");
  old_pod.ports = {{"http", L4Proto::Tcp, 8080}, {"dns", L4Proto::Tcp, 5353}};  // TCP: not the UDP port
  new_pod.ports = {{"http", L4Proto::Tcp, 9090}};
  web.endpoints = {old_pod, new_pod, plain};
  const CompiledServices compiled = compile_one(web);
  auto cluster = [&](uint16_t port) {
    for (const ServiceEntry& e : compiled.entries)
      if (e.kind == FrontendKind::ClusterIP && e.port == port) return e;
    throw std::runtime_error("no such entry");
  };
  EXPECT_EQ(cluster(80).backends, (std::vector<Backend>{backend("10.244.1.2", true, 8080),
                                                         backend("10.244.2.3", false, 9090),
                                                         backend("10.244.2.4", false, 8080)}));
  EXPECT_EQ(cluster(53).backends, (std::vector<Backend>{backend("10.244.2.4", false, 53)}));

  web.endpoints = {old_pod, new_pod};
  const ServiceEntry dns = [&] {
    for (const ServiceEntry& e : compile_one(web).entries)
      if (e.port == 53) return e;
    throw std::runtime_error("no dns entry");
  }();
  EXPECT_TRUE(dns.backends.empty());
  EXPECT_EQ(dns.when_empty_pods, ServiceEntry::Empty::Reject);
}

// ---- Entry contents --------------------------------------------------------

TEST(ServicesTest, FrontendKeysPerKind) {
  ServiceConfig web = load_balancer({endpoint("10.244.1.2", kNode)}, TrafficPolicy::Cluster);
  web.external_ips = {ip("192.0.2.10"), ip("192.0.2.11")};
  web.load_balancer_source_ranges = {prefix("203.0.113.0/24")};
  web.ports.push_back({"dns", L4Proto::Udp, 53, 5353, 30053});
  const CompiledServices compiled = compile_one(web);

  std::vector<std::pair<ServiceKey, FrontendKind>> keys;
  for (const ServiceEntry& entry : compiled.entries) keys.emplace_back(entry.key(), entry.kind);
  const std::vector<std::pair<ServiceKey, FrontendKind>> expected = {
      {{ip("10.96.0.10"), L4Proto::Tcp, 80}, FrontendKind::ClusterIP},
      {{ip("10.96.0.10"), L4Proto::Udp, 53}, FrontendKind::ClusterIP},
      {{ip("192.0.2.10"), L4Proto::Tcp, 80}, FrontendKind::ExternalIP},
      {{ip("192.0.2.10"), L4Proto::Udp, 53}, FrontendKind::ExternalIP},
      {{ip("192.0.2.11"), L4Proto::Tcp, 80}, FrontendKind::ExternalIP},
      {{ip("192.0.2.11"), L4Proto::Udp, 53}, FrontendKind::ExternalIP},
      {{ip("192.168.50.10"), L4Proto::Tcp, 30080}, FrontendKind::NodePort},  // vip = node_ip, port = node_port
      {{ip("192.168.50.10"), L4Proto::Udp, 30053}, FrontendKind::NodePort},
      {{ip("198.51.100.7"), L4Proto::Tcp, 80}, FrontendKind::LoadBalancerIP},
      {{ip("198.51.100.7"), L4Proto::Udp, 53}, FrontendKind::LoadBalancerIP},
  };
  EXPECT_EQ(keys, expected);

  for (const ServiceEntry& entry : compiled.entries) {
    SCOPED_TRACE(entry.key().to_string());
    EXPECT_EQ(entry.service, "default/web");
    const bool dns = entry.proto == L4Proto::Udp;
    EXPECT_EQ(entry.port_name, dns ? "dns" : "http");
    EXPECT_EQ(entry.backends, std::vector<Backend>{backend("10.244.1.2", true, dns ? 5353 : 8080)});  // target_port
    // Source ranges restrict the load balancer IPs only.
    EXPECT_EQ(entry.source_ranges,
              entry.kind == FrontendKind::LoadBalancerIP ? web.load_balancer_source_ranges : std::vector<Ipv4Prefix>{});
  }
}

TEST(ServicesTest, KeyToString) {
  EXPECT_EQ((ServiceKey{ip("10.96.0.10"), L4Proto::Tcp, 80}).to_string(), "10.96.0.10:80/TCP");
  EXPECT_EQ((ServiceKey{ip("192.168.50.10"), L4Proto::Sctp, 30080}).to_string(), "192.168.50.10:30080/SCTP");
  EXPECT_EQ(static_cast<int>(L4Proto::Tcp), 6);
  EXPECT_EQ(static_cast<int>(L4Proto::Udp), 17);
  EXPECT_EQ(static_cast<int>(L4Proto::Sctp), 132);
}

TEST(ServicesTest, LbAlgorithmIsTheServicesOrTheNodeDefault) {
  Config config = node_config();
  config.nat.lb_algorithm = LbAlgorithm::RoundRobin;
  EXPECT_EQ(entry_of(compile_one(service(), config), FrontendKind::ClusterIP).lb, LbAlgorithm::RoundRobin);
  ServiceConfig web = service();
  web.lb_algorithm = LbAlgorithm::Maglev;
  EXPECT_EQ(entry_of(compile_one(web, config), FrontendKind::ClusterIP).lb, LbAlgorithm::Maglev);
}

TEST(ServicesTest, SessionAffinity) {
  ServiceConfig web = service(ServiceType::NodePort);
  EXPECT_FALSE(entry_of(compile_one(web), FrontendKind::ClusterIP).affinity);
  EXPECT_EQ(entry_of(compile_one(web), FrontendKind::ClusterIP).affinity_timeout_s, 0u);
  web.session_affinity = SessionAffinity::ClientIP;
  web.session_affinity_timeout_s = 600;
  for (const ServiceEntry& entry : compile_one(web).entries) {
    EXPECT_TRUE(entry.affinity);
    EXPECT_EQ(entry.affinity_timeout_s, 600u);
  }
}

// ---- Order and determinism -------------------------------------------------

Config two_services(bool reversed) {
  Config config = node_config();
  ServiceConfig web = load_balancer({endpoint("10.244.2.9", "node-b"), endpoint("10.244.1.2", kNode),
                                     endpoint("10.244.1.200", kNode), endpoint("10.244.2.3", "node-b")},
                                    TrafficPolicy::Local);
  ServiceConfig dns = service();
  dns.name = "kube-system/kube-dns";
  dns.cluster_ip = ip("10.96.0.2");
  dns.ports = {{"dns", L4Proto::Udp, 53, 53, 0}, {"dns-tcp", L4Proto::Tcp, 53, 53, 0}};
  dns.endpoints = {endpoint("10.244.3.3", "node-c"), endpoint("10.244.1.7", kNode)};
  if (reversed) {
    std::reverse(web.endpoints.begin(), web.endpoints.end());
    std::reverse(dns.endpoints.begin(), dns.endpoints.end());
    std::reverse(dns.ports.begin(), dns.ports.end());
    config.services = {dns, web};
  } else {
    config.services = {web, dns};
  }
  return config;
}

TEST(ServicesTest, EntriesAreSortedByKeyAndBackendsByAddress) {
  const CompiledServices compiled = compile_services(two_services(false));
  ASSERT_EQ(compiled.entries.size(), 6u);
  EXPECT_TRUE(std::is_sorted(compiled.entries.begin(), compiled.entries.end(),
                             [](const ServiceEntry& a, const ServiceEntry& b) { return a.key() < b.key(); }));
  EXPECT_EQ(compiled.entries[0].key(), (ServiceKey{ip("10.96.0.2"), L4Proto::Tcp, 53}));
  EXPECT_EQ(compiled.entries[1].key(), (ServiceKey{ip("10.96.0.2"), L4Proto::Udp, 53}));
  EXPECT_EQ(compiled.entries[2].key(), (ServiceKey{ip("10.96.0.10"), L4Proto::Tcp, 80}));
  for (const ServiceEntry& entry : compiled.entries) {
    EXPECT_TRUE(std::is_sorted(entry.backends.begin(), entry.backends.end()));
    EXPECT_TRUE(std::is_sorted(entry.backends_from_pods.begin(), entry.backends_from_pods.end()));
  }
  EXPECT_EQ(compiled.entries[2].backends,
            (std::vector<Backend>{backend("10.244.1.2", true), backend("10.244.1.200", true),
                                  backend("10.244.2.3", false), backend("10.244.2.9", false)}));
  EXPECT_EQ(compiled.entries[0].backends,
            (std::vector<Backend>{backend("10.244.1.7", true, 53), backend("10.244.3.3", false, 53)}));
}

TEST(ServicesTest, EqualInputsCompileEqualWhateverTheirOrder) {
  const CompiledServices forward = compile_services(two_services(false));
  const CompiledServices reversed = compile_services(two_services(true));
  EXPECT_EQ(forward, reversed);
  EXPECT_EQ(compile_services(two_services(false)), forward);
  EXPECT_TRUE(diff_services(forward, reversed).empty());
}

TEST(ServicesTest, ClusterIpsAreSortedAndUnique) {
  const CompiledServices compiled = compile_services(two_services(false));
  EXPECT_EQ(compiled.cluster_ips, (std::vector<Ipv4>{ip("10.96.0.2"), ip("10.96.0.10")}));
  EXPECT_TRUE(compile_services(node_config()).cluster_ips.empty());
  EXPECT_TRUE(compile_services(node_config()).entries.empty());
}

TEST(ServicesTest, DuplicateFrontendsAreRefused) {
  // parse_config rules these out; a hand-made Config is refused too.
  Config config = node_config();
  ServiceConfig web = service();
  ServiceConfig other = service();
  other.name = "default/other";
  other.cluster_ip = ip("10.96.0.11");
  other.external_ips = {ip("10.96.0.10")};
  config.services = {web, other};
  try {
    compile_services(config);
    ADD_FAILURE() << "compiled a duplicate frontend";
  } catch (const std::invalid_argument& error) {
    EXPECT_STREQ(error.what(),
                 "compile_services: 10.96.0.10:80/TCP is a frontend of both \"default/web\" and \"default/other\"");
  }
}

TEST(ServicesTest, CompilesAParsedConfiguration) {
  const Config config = parse_config(R"([node]
name = "node-a"
node_ip = "192.168.50.10"
pod_cidr = "10.244.1.0/24"
cluster_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
[workers]
lcores = [1]
[[port]]
name = "up0"
role = "uplink"
device = "net_pcap0"
[nat]
masquerade_all = true
lb_algorithm = "maglev"
[[service]]
name = "default/web"
type = "NodePort"
cluster_ip = "10.96.0.10"
external_traffic_policy = "Local"
  [[service.port]]
  port = 80
  target_port = 8080
  node_port = 30080
  [[service.endpoint]]
  ip = "10.244.2.3"
  node = "node-b"
  [[service.endpoint]]
  ip = "10.244.1.2"
  node = "node-a"
)",
                                     "node.toml");
  const CompiledServices compiled = compile_services(config);
  ASSERT_EQ(compiled.entries.size(), 2u);
  ServiceEntry cluster_ip;
  cluster_ip.vip = ip("10.96.0.10");
  cluster_ip.proto = L4Proto::Tcp;
  cluster_ip.port = 80;
  cluster_ip.kind = FrontendKind::ClusterIP;
  cluster_ip.service = "default/web";
  cluster_ip.backends = {backend("10.244.1.2", true), backend("10.244.2.3", false)};
  cluster_ip.backends_from_pods = cluster_ip.backends;
  cluster_ip.masquerade_external = true;
  cluster_ip.masquerade_from_pods = true;
  cluster_ip.when_empty_external = cluster_ip.when_empty_pods = ServiceEntry::Empty::Drop;
  cluster_ip.lb = LbAlgorithm::Maglev;
  EXPECT_EQ(compiled.entries[0], cluster_ip);

  ServiceEntry node_port = cluster_ip;
  node_port.vip = ip("192.168.50.10");
  node_port.port = 30080;
  node_port.kind = FrontendKind::NodePort;
  node_port.backends = {backend("10.244.1.2", true)};
  node_port.masquerade_external = false;
  node_port.masquerade_from_pods = false;
  EXPECT_EQ(compiled.entries[1], node_port);
  EXPECT_EQ(compiled.cluster_ips, std::vector<Ipv4>{ip("10.96.0.10")});
}

// ---- Diff ------------------------------------------------------------------

TEST(ServicesTest, DiffOfEqualStatesIsEmpty) {
  const CompiledServices state = compile_services(two_services(false));
  EXPECT_TRUE(diff_services(state, state).empty());
  EXPECT_TRUE(diff_services(CompiledServices{}, CompiledServices{}).empty());
}

TEST(ServicesTest, DiffFromNothingAddsEverything) {
  const CompiledServices state = compile_services(two_services(false));
  const ServiceDiff diff = diff_services(CompiledServices{}, state);
  EXPECT_EQ(diff.added, state.entries);
  EXPECT_TRUE(diff.changed.empty());
  EXPECT_TRUE(diff.removed.empty());

  const ServiceDiff back = diff_services(state, CompiledServices{});
  EXPECT_TRUE(back.added.empty());
  EXPECT_TRUE(back.changed.empty());
  ASSERT_EQ(back.removed.size(), state.entries.size());
  for (size_t i = 0; i < state.entries.size(); ++i) EXPECT_EQ(back.removed[i], state.entries[i].key());
}

TEST(ServicesTest, DiffReportsAddedChangedAndRemovedOnly) {
  Config before = two_services(false);
  Config after = before;
  // web: one endpoint more (its 4 entries change); dns: the TCP port goes, a
  // new port comes; a third service appears. The dns UDP entry stays as it was.
  after.services[0].endpoints.push_back(endpoint("10.244.1.50", kNode));
  after.services[1].ports = {{"dns", L4Proto::Udp, 53, 53, 0}, {"metrics", L4Proto::Tcp, 9153, 9153, 0}};
  ServiceConfig extra = service();
  extra.name = "default/extra";
  extra.cluster_ip = ip("10.96.0.99");
  after.services.push_back(extra);

  const CompiledServices installed = compile_services(before);
  const CompiledServices desired = compile_services(after);
  const ServiceDiff diff = diff_services(installed, desired);

  std::vector<ServiceKey> added, changed;
  for (const ServiceEntry& entry : diff.added) added.push_back(entry.key());
  for (const ServiceEntry& entry : diff.changed) changed.push_back(entry.key());
  EXPECT_EQ(added,
            (std::vector<ServiceKey>{{ip("10.96.0.2"), L4Proto::Tcp, 9153}, {ip("10.96.0.99"), L4Proto::Tcp, 80}}));
  EXPECT_EQ(changed, (std::vector<ServiceKey>{{ip("10.96.0.10"), L4Proto::Tcp, 80},
                                              {ip("192.0.2.10"), L4Proto::Tcp, 80},
                                              {ip("192.168.50.10"), L4Proto::Tcp, 30080},
                                              {ip("198.51.100.7"), L4Proto::Tcp, 80}}));
  EXPECT_EQ(diff.removed, std::vector<ServiceKey>{(ServiceKey{ip("10.96.0.2"), L4Proto::Tcp, 53})});
  // Changed entries carry the desired state: the new local endpoint is in.
  for (const ServiceEntry& entry : diff.changed) {
    SCOPED_TRACE(entry.key().to_string());
    EXPECT_EQ(entry.backends.size(), entry.kind == FrontendKind::ClusterIP ? 5u : 3u);  // ETP Local: local ones
    EXPECT_TRUE(std::find(entry.backends.begin(), entry.backends.end(), backend("10.244.1.50", true)) !=
                entry.backends.end());
  }
}

TEST(ServicesTest, DiffSeesEveryFieldChange) {
  const CompiledServices installed = compile_one(service(ServiceType::ClusterIP, mixed_endpoints()));
  auto changed_by = [&](auto edit) {
    CompiledServices desired = installed;
    edit(desired.entries[0]);
    const ServiceDiff diff = diff_services(installed, desired);
    return diff.added.empty() && diff.removed.empty() && diff.changed.size() == 1 &&
           diff.changed[0] == desired.entries[0];
  };
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.backends[0].local = false; }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.backends_from_pods.pop_back(); }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.masquerade_external = false; }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.masquerade_from_pods = true; }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.when_empty_pods = ServiceEntry::Empty::Reject; }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.lb = LbAlgorithm::Maglev; }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.affinity_timeout_s = 5; }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.source_ranges.push_back(Ipv4Prefix{}); }));
  EXPECT_TRUE(changed_by([](ServiceEntry& e) { e.port_name = "web"; }));
}

// ---- InstalledServices: diffs at the cost of one service --------------------

// The rule the control socket relies on: diffing one service against what
// is installed, then recording it, leaves exactly what compiling the whole
// edited config gives (nothing more to diff).
TEST(InstalledServicesTest, OneServiceDiffsMatchAWholeRecompile) {
  Config config = two_services(false);
  InstalledServices installed(compile_services(config));
  EXPECT_TRUE(installed.diff(compile_services(config)).empty());

  ServiceConfig web = config.services[0];
  web.endpoints.push_back(endpoint("10.244.1.50", kNode));
  const ServiceDiff more = installed.diff_service(&config.services[0], &web, config);
  EXPECT_TRUE(more.added.empty());
  EXPECT_TRUE(more.removed.empty());
  EXPECT_EQ(more.changed.size(), 4u);  // cluster IP, node port, external IP, load balancer IP
  EXPECT_FALSE(more.cluster_ips) << "the cluster IP stays";
  installed.apply(more);
  config.services[0] = web;
  EXPECT_TRUE(installed.diff(compile_services(config)).empty());
  EXPECT_TRUE(installed.diff_service(&config.services[0], &web, config).empty()) << "nothing left to change";

  // A service removed, then added back under another cluster IP.
  const ServiceConfig dns = config.services[1];
  const ServiceDiff gone = installed.diff_service(&dns, nullptr, config);
  EXPECT_EQ(gone.removed, installed.keys_of("kube-system/kube-dns"));
  ASSERT_TRUE(gone.cluster_ips);
  EXPECT_EQ(*gone.cluster_ips, std::vector<Ipv4>{ip("10.96.0.10")});
  installed.apply(gone);
  config.services.pop_back();
  EXPECT_TRUE(installed.diff(compile_services(config)).empty());
  EXPECT_TRUE(installed.keys_of("kube-system/kube-dns").empty());

  ServiceConfig moved = dns;
  moved.cluster_ip = ip("10.96.0.3");
  const ServiceDiff back = installed.diff_service(nullptr, &moved, config);
  EXPECT_EQ(back.added.size(), compile_service(config, moved).size());
  installed.apply(back);
  config.services.push_back(moved);
  EXPECT_TRUE(installed.diff(compile_services(config)).empty());
  EXPECT_EQ(installed.cluster_ips(), (std::vector<Ipv4>{ip("10.96.0.3"), ip("10.96.0.10")}));
  ASSERT_NE(installed.find({ip("10.96.0.3"), L4Proto::Udp, 53}), nullptr);
  EXPECT_EQ(installed.find({ip("10.96.0.3"), L4Proto::Udp, 53})->service, "kube-system/kube-dns");
  EXPECT_EQ(installed.find({ip("10.96.0.2"), L4Proto::Udp, 53}), nullptr);
}

TEST(InstalledServicesTest, OneServiceDiffRefusesAnotherServicesFrontend) {
  const Config config = two_services(false);
  const InstalledServices installed(compile_services(config));
  ServiceConfig thief = config.services[1];
  thief.external_ips = {ip("192.0.2.10")};  // web's external IP, and port 80/TCP is web's too
  thief.ports.push_back({"http", L4Proto::Tcp, 80, 80, 0});
  try {
    installed.diff_service(&config.services[1], &thief, config);
    ADD_FAILURE() << "a frontend of two services was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "compile_services: 192.0.2.10:80/TCP is a frontend of both \"default/web\" and \"kube-system/kube-dns\"");
  }
}

TEST(InstalledServicesTest, WholeDiffMovesAFrontendBetweenServices) {
  Config config = two_services(false);
  InstalledServices installed(compile_services(config));
  const ServiceKey external{ip("192.0.2.10"), L4Proto::Tcp, 80};
  ASSERT_NE(installed.find(external), nullptr);
  // web gives its external IP up and dns takes it, in one apply.
  config.services[0].external_ips.clear();
  config.services[1].external_ips = {ip("192.0.2.10")};
  config.services[1].ports.push_back({"http", L4Proto::Tcp, 80, 80, 0});
  const CompiledServices desired = compile_services(config);
  installed.apply(installed.diff(desired));
  EXPECT_TRUE(installed.diff(desired).empty());
  EXPECT_EQ(installed.find(external)->service, "kube-system/kube-dns");
  const auto& web_keys = installed.keys_of("default/web");
  EXPECT_EQ(std::count(web_keys.begin(), web_keys.end(), external), 0);
  const auto& dns_keys = installed.keys_of("kube-system/kube-dns");
  EXPECT_EQ(std::count(dns_keys.begin(), dns_keys.end(), external), 1);
}

}  // namespace
}  // namespace kdp
