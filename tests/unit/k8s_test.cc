// Unit tests of the Kubernetes object translation (ctrl/k8s.h): Services and
// EndpointSlices as `kubectl get -o json` prints them, written out by hand
// with their metadata noise, rendered into ServiceConfig and compiled.
#include "ctrl/k8s.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace kdp {
namespace {

using nlohmann::json;

Ipv4 ip(std::string_view text) { return *parse_ipv4(text); }

Config node(std::string_view extra = "") {
  return parse_config(std::string(R"(
[node]
name = "node-a"
node_ip = "192.168.50.10/24"
pod_cidr = "10.244.1.0/24"
cluster_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
[workers]
lcores = [1]
[[port]]
name = "up0"
role = "uplink"
device = "net_null0"
)") + std::string(extra),
                      "node.toml");
}

// A NodePort Service exactly as kubectl prints it (kubectl get svc web -o json).
constexpr const char* kWebService = R"({
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"annotations\":{},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080}],\"selector\":{\"app\":\"web\"},\"type\":\"NodePort\"}}\n"
        },
        "creationTimestamp": "2024-05-02T09:14:07Z",
        "labels": {"app": "web"},
        "managedFields": [
            {
                "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}}}}},
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "time": "2024-05-02T09:14:07Z"
            }
        ],
        "name": "web",
        "namespace": "default",
        "resourceVersion": "48213",
        "uid": "5c1b0a3e-8f5e-4b8e-9d7c-2f4b1f0c6e11"
    },
    "spec": {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "externalTrafficPolicy": "Cluster",
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [
            {"name": "http", "nodePort": 30080, "port": 80, "protocol": "TCP", "targetPort": 8080}
        ],
        "selector": {"app": "web"},
        "sessionAffinity": "None",
        "type": "NodePort"
    },
    "status": {"loadBalancer": {}}
})";

constexpr const char* kWebSlice = R"({
    "addressType": "IPv4",
    "apiVersion": "discovery.k8s.io/v1",
    "endpoints": [
        {
            "addresses": ["10.244.1.5"],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-a",
            "targetRef": {"kind": "Pod", "name": "web-7d9c5b8f6-x2kqp", "namespace": "default", "uid": "0e9a7c55-1f0b-4b7e-8a55-2b8f1f9f4a01"},
            "zone": "zone-a"
        },
        {
            "addresses": ["10.244.2.5"],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-b",
            "targetRef": {"kind": "Pod", "name": "web-7d9c5b8f6-lm4tz", "namespace": "default", "uid": "6a3e8f2c-3c1d-4b9e-9f0a-7e2d5c4b3a12"}
        }
    ],
    "kind": "EndpointSlice",
    "metadata": {
        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-05-02T09:14:12Z"},
        "creationTimestamp": "2024-05-02T09:14:07Z",
        "generateName": "web-",
        "generation": 3,
        "labels": {
            "app": "web",
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            "kubernetes.io/service-name": "web"
        },
        "managedFields": [{"apiVersion": "discovery.k8s.io/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:addressType": {}}, "manager": "kube-controller-manager", "operation": "Update", "time": "2024-05-02T09:14:12Z"}],
        "name": "web-8k2mq",
        "namespace": "default",
        "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": true, "controller": true, "kind": "Service", "name": "web", "uid": "5c1b0a3e-8f5e-4b8e-9d7c-2f4b1f0c6e11"}],
        "resourceVersion": "48240",
        "uid": "b7f7d3c1-0a54-4b1e-8e0f-1c2d3e4f5a6b"
    },
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
})";

// A LoadBalancer with an ingress IP, source ranges, ETP Local and ClientIP affinity.
constexpr const char* kLbService = R"({
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "shop", "namespace": "prod", "resourceVersion": "9911", "uid": "1f2e3d4c-0000-4000-8000-00000000abcd"},
    "spec": {
        "allocateLoadBalancerNodePorts": true,
        "clusterIP": "10.100.7.7",
        "clusterIPs": ["10.100.7.7"],
        "externalIPs": ["198.51.100.9"],
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 31999,
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "loadBalancerSourceRanges": ["203.0.113.0/24", " 192.0.2.7/32 ", "2001:db8::/32"],
        "ports": [
            {"name": "https", "nodePort": 30443, "port": 443, "protocol": "TCP", "targetPort": 8443},
            {"name": "quic", "nodePort": 30443, "port": 443, "protocol": "UDP", "targetPort": 8443}
        ],
        "selector": {"app": "shop"},
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        "type": "LoadBalancer"
    },
    "status": {
        "loadBalancer": {
            "ingress": [
                {"ip": "203.0.113.50", "ipMode": "VIP"},
                {"hostname": "shop.elb.example.com"},
                {"ip": "203.0.113.51", "ipMode": "Proxy"},
                {"ip": "2001:db8::50"}
            ]
        }
    }
})";

constexpr const char* kLbSlice = R"({
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "shop-abcde", "namespace": "prod", "labels": {"kubernetes.io/service-name": "shop"}},
    "addressType": "IPv4",
    "endpoints": [
        {"addresses": ["10.244.1.20"], "conditions": {"ready": true}, "nodeName": "node-a"},
        {"addresses": ["10.244.3.20"], "conditions": {"ready": true}, "nodeName": "node-c"}
    ],
    "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}, {"name": "quic", "port": 8443, "protocol": "UDP"}]
})";

json parse(const char* text) { return json::parse(text); }

json list(std::initializer_list<const char*> items) {
  json out = {{"apiVersion", "v1"}, {"kind", "List"}, {"metadata", {{"resourceVersion", ""}}}, {"items", json::array()}};
  for (const char* item : items) out["items"].push_back(parse(item));
  return out;
}

json event(const char* type, const json& object) { return {{"type", type}, {"object", object}}; }

// Documents reach K8sState as kdp gets them: JSON text, parsed by one parser
// reused from document to document.
K8sJsonParser& parser() {
  static K8sJsonParser shared;
  return shared;
}
std::vector<K8sChange> apply_json(K8sState& state, const json& document) {
  return state.apply(parser().parse(document.dump(), "test"));
}
K8sChange apply_event_json(K8sState& state, const json& event) {
  return state.apply_event(parser().parse(event.dump(), "test"));
}
std::optional<std::string> slice_event_target(const json& event) {
  return K8sState::slice_event_target(parser().parse(event.dump(), "test"));
}

const ServiceEntry& entry(const CompiledServices& compiled, std::string_view key) {
  for (const ServiceEntry& e : compiled.entries)
    if (e.key().to_string() == key) return e;
  throw std::runtime_error("no entry " + std::string(key));
}

std::vector<std::string> backends(const std::vector<Backend>& list) {
  std::vector<std::string> out;
  for (const Backend& b : list) out.push_back(fmt::format("{}:{}{}", ipv4_to_string(b.ip), b.port, b.local ? "*" : ""));
  return out;
}

std::string error_of(K8sState& state, const json& document) {
  try {
    apply_json(state, document);
  } catch (const K8sError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string parse_error_of(const std::string& text) {
  try {
    parser().parse(text, "test");
  } catch (const K8sError& e) {
    return e.what();
  }
  return "(parsed)";
}

std::string render_error(const K8sState& state, const Config& base) {
  try {
    state.render(base);
  } catch (const K8sError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(K8sTest, NodePortServiceAndSliceAsKubectlPrintsThem) {
  K8sState state;
  auto changes = apply_json(state, list({kWebService, kWebSlice}));
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].object, "Service default/web");
  EXPECT_EQ(changes[0].action, "applied");
  EXPECT_EQ(changes[1].object, "EndpointSlice default/web-8k2mq");

  auto services = state.render(node());
  ASSERT_EQ(services.size(), 1u);
  const ServiceConfig& web = services[0];
  EXPECT_EQ(web.name, "default/web");
  EXPECT_EQ(web.type, ServiceType::NodePort);
  EXPECT_EQ(web.cluster_ip, ip("10.96.0.10"));
  ASSERT_EQ(web.ports.size(), 1u);
  EXPECT_EQ(web.ports[0].name, "http");
  EXPECT_EQ(web.ports[0].port, 80);
  EXPECT_EQ(web.ports[0].target_port, 8080);
  EXPECT_EQ(web.ports[0].node_port, 30080);
  ASSERT_EQ(web.endpoints.size(), 2u);
  EXPECT_EQ(web.endpoints[0].ip, ip("10.244.1.5"));
  EXPECT_EQ(web.endpoints[0].node, "node-a");
  EXPECT_EQ(web.endpoints[0].ports, (std::vector<EndpointPort>{{"http", L4Proto::Tcp, 8080}}));

  const CompiledServices compiled = compile_services(with_k8s_services(node(), state));
  ASSERT_EQ(compiled.entries.size(), 2u);
  EXPECT_EQ(backends(entry(compiled, "10.96.0.10:80/TCP").backends),
            (std::vector<std::string>{"10.244.1.5:8080*", "10.244.2.5:8080"}));
  EXPECT_EQ(entry(compiled, "192.168.50.10:30080/TCP").kind, FrontendKind::NodePort);
}

TEST(K8sTest, LoadBalancerWithIngressSourceRangesPoliciesAndAffinity) {
  K8sState state;
  apply_json(state, json::array({parse(kLbService), parse(kLbSlice)}));
  auto services = state.render(node());
  ASSERT_EQ(services.size(), 1u);
  const ServiceConfig& shop = services[0];
  EXPECT_EQ(shop.name, "prod/shop");
  EXPECT_EQ(shop.type, ServiceType::LoadBalancer);
  // The hostname, the ipMode Proxy and the IPv6 ingress are skipped.
  EXPECT_EQ(shop.load_balancer_ips, std::vector<Ipv4>{ip("203.0.113.50")});
  EXPECT_EQ(shop.external_ips, std::vector<Ipv4>{ip("198.51.100.9")});
  EXPECT_EQ(shop.load_balancer_source_ranges,
            (std::vector<Ipv4Prefix>{*parse_ipv4_prefix("203.0.113.0/24"), *parse_ipv4_prefix("192.0.2.7/32")}));
  EXPECT_EQ(shop.external_traffic_policy, TrafficPolicy::Local);
  EXPECT_EQ(shop.session_affinity, SessionAffinity::ClientIP);
  EXPECT_EQ(shop.session_affinity_timeout_s, 600u);

  const CompiledServices compiled = compile_services(with_k8s_services(node(), state));
  // 2 ports x (cluster IP, node port, external IP, load balancer IP).
  EXPECT_EQ(compiled.entries.size(), 8u);
  const ServiceEntry& lb = entry(compiled, "203.0.113.50:443/TCP");
  EXPECT_EQ(lb.kind, FrontendKind::LoadBalancerIP);
  EXPECT_EQ(lb.source_ranges.size(), 2u);
  EXPECT_EQ(backends(lb.backends), std::vector<std::string>{"10.244.1.20:8443*"});  // ETP Local
  EXPECT_EQ(backends(lb.backends_from_pods), (std::vector<std::string>{"10.244.1.20:8443*", "10.244.3.20:8443"}));
  EXPECT_TRUE(lb.affinity);
  EXPECT_EQ(lb.affinity_timeout_s, 600u);
  EXPECT_EQ(entry(compiled, "192.168.50.10:30443/UDP").kind, FrontendKind::NodePort);
  EXPECT_TRUE(entry(compiled, "198.51.100.9:443/TCP").source_ranges.empty());
}

TEST(K8sTest, NamedTargetPortResolvesPerSlice) {
  // A rolling update moved the container port "web" from 8080 to 9090: the
  // old pods' slice says 8080, the new one's 9090.
  json service = parse(kWebService);
  service["spec"]["ports"][0]["targetPort"] = "web";
  json old_slice = parse(kWebSlice);
  json new_slice = parse(kWebSlice);
  new_slice["metadata"]["name"] = "web-zz9pl";
  new_slice["ports"][0]["port"] = 9090;
  new_slice["endpoints"] = json::parse(R"([{"addresses": ["10.244.1.6"], "conditions": {}, "nodeName": "node-a"}])");
  // A slice without the port's name contributes no endpoint to it.
  json other = parse(kWebSlice);
  other["metadata"]["name"] = "web-other";
  other["ports"][0]["name"] = "metrics";
  other["endpoints"] = json::parse(R"([{"addresses": ["10.244.1.99"]}])");
  K8sState state;
  apply_json(state, json::array({service, old_slice, new_slice, other}));
  auto services = state.render(node());
  ASSERT_EQ(services.size(), 1u);
  EXPECT_EQ(services[0].ports[0].target_port, 0);  // named: the slices say
  const CompiledServices compiled = compile_services(with_k8s_services(node(), state));
  EXPECT_EQ(backends(entry(compiled, "10.96.0.10:80/TCP").backends),
            (std::vector<std::string>{"10.244.1.5:8080*", "10.244.1.6:9090*", "10.244.2.5:8080"}));
}

// The one-Service rendering EndpointSlice watch events take: the same
// endpoints as render() from the same slices, with the same checks.
TEST(K8sTest, RenderEndpointsOfOneServiceMatchesRender) {
  json service = parse(kWebService);
  service["spec"]["ports"][0]["targetPort"] = "web";
  json old_slice = parse(kWebSlice);
  json new_slice = parse(kWebSlice);
  new_slice["metadata"]["name"] = "web-zz9pl";
  new_slice["ports"][0]["port"] = 9090;
  new_slice["endpoints"] = json::parse(
      R"([{"addresses": ["10.244.1.6"], "conditions": {}, "nodeName": "node-a"},
          {"addresses": ["10.244.2.5"], "conditions": {"ready": false}, "nodeName": "node-b"}])");
  K8sState state;
  apply_json(state, json::array({service, old_slice, new_slice}));
  const Config base = node();
  const auto nobody = [](Ipv4) { return std::string(); };
  const std::vector<EndpointConfig> one = state.render_endpoints("default/web", base.node, nobody);
  const auto all = state.render(base);
  ASSERT_EQ(all.size(), 1u);
  ASSERT_EQ(one.size(), all[0].endpoints.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i].ip, all[0].endpoints[i].ip);
    EXPECT_EQ(one[i].ready, all[0].endpoints[i].ready);
    EXPECT_EQ(one[i].ports, all[0].endpoints[i].ports);
  }
  EXPECT_TRUE(state.render_endpoints("default/nope", base.node, nobody).empty());

  // Checked as render() checks: the owner of a cluster IP is named.
  try {
    state.render_endpoints("default/web", base.node, [](Ipv4 ip) {
      return ip == *parse_ipv4("10.244.1.6") ? std::string("Service default/other") : std::string();
    });
    ADD_FAILURE() << "an endpoint that is a cluster IP was accepted";
  } catch (const K8sError& e) {
    EXPECT_STREQ(e.what(),
                 "EndpointSlice default/web-zz9pl: endpoints[0].addresses[0]: 10.244.1.6 is the cluster IP of "
                 "Service default/other");
  }

  // What watch events are about, and undoing one.
  EXPECT_EQ(slice_event_target({{"type", "MODIFIED"}, {"object", new_slice}}), "default/web-zz9pl");
  EXPECT_EQ(slice_event_target({{"type", "MODIFIED"}, {"object", service}}), std::nullopt);
  EXPECT_EQ(slice_event_target({{"type", "MODIFIED"}}), std::nullopt);
  const K8sEndpointSlice kept = *state.slice("default/web-zz9pl");
  apply_event_json(state, {{"type", "DELETED"}, {"object", new_slice}});
  EXPECT_EQ(state.slice("default/web-zz9pl"), nullptr);
  state.restore_slice("default/web-zz9pl", kept);
  ASSERT_NE(state.slice("default/web-zz9pl"), nullptr);
  EXPECT_EQ(*state.slice("default/web-zz9pl"), kept);
  state.restore_slice("default/web-zz9pl", std::nullopt);
  EXPECT_EQ(state.slice("default/web-zz9pl"), nullptr);
}

TEST(K8sTest, EndpointConditions) {
  json slice = parse(kWebSlice);
  slice["endpoints"] = json::parse(R"([
    {"addresses": ["10.244.1.5"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "node-a"},
    {"addresses": ["10.244.2.5"], "conditions": {"ready": false, "serving": false, "terminating": true}, "nodeName": "node-b"},
    {"addresses": ["10.244.2.6"], "conditions": {"ready": null, "serving": null, "terminating": null}, "nodeName": "node-b"},
    {"addresses": ["10.244.2.7"], "conditions": {"ready": false}, "nodeName": "node-b"}
  ])");
  K8sState state;
  apply_json(state, json::array({parse(kWebService), slice}));
  auto services = state.render(node());
  const auto& eps = services[0].endpoints;
  ASSERT_EQ(eps.size(), 4u);
  EXPECT_TRUE(!eps[0].ready && eps[0].serving && eps[0].terminating);
  EXPECT_TRUE(!eps[1].ready && !eps[1].serving && eps[1].terminating);
  EXPECT_TRUE(eps[2].ready && eps[2].serving && !eps[2].terminating);   // nil: ready, serving = ready
  EXPECT_TRUE(!eps[3].ready && !eps[3].serving && !eps[3].terminating);  // serving defaults to ready
  CompiledServices compiled = compile_services(with_k8s_services(node(), state));
  EXPECT_EQ(backends(entry(compiled, "10.96.0.10:80/TCP").backends), std::vector<std::string>{"10.244.2.6:8080"});

  // With no ready endpoint left, serving terminating ones are the fallback.
  slice["endpoints"].erase(2);
  apply_json(state, slice);
  compiled = compile_services(with_k8s_services(node(), state));
  EXPECT_EQ(backends(entry(compiled, "10.96.0.10:80/TCP").backends), std::vector<std::string>{"10.244.1.5:8080*"});
}

TEST(K8sTest, HeadlessExternalNameAndOtherSlicesAreSkipped) {
  json headless = parse(kWebService);
  headless["metadata"]["name"] = "db";
  headless["spec"]["clusterIP"] = "None";
  headless["spec"]["clusterIPs"] = {"None"};
  headless["spec"]["type"] = "ClusterIP";
  headless["spec"]["ports"][0].erase("nodePort");
  json external = json::parse(R"({"apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "ext", "namespace": "default"},
    "spec": {"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"}})");
  json v6 = parse(kWebSlice);
  v6["metadata"]["name"] = "web-v6";
  v6["addressType"] = "IPv6";
  v6["endpoints"] = json::parse(R"([{"addresses": ["fd00::5"]}])");
  json unlabelled = parse(kWebSlice);
  unlabelled["metadata"]["name"] = "manual";
  unlabelled["metadata"]["labels"].erase("kubernetes.io/service-name");
  K8sState state;
  auto changes = apply_json(state, json::array({headless, external, v6, unlabelled}));
  ASSERT_EQ(changes.size(), 4u);
  EXPECT_EQ(changes[0].action, "skipped");
  EXPECT_EQ(changes[0].reason, "headless (clusterIP None)");
  EXPECT_EQ(changes[1].action, "skipped");
  EXPECT_EQ(changes[1].reason, "type ExternalName");
  EXPECT_EQ(changes[2].action, "ignored");
  EXPECT_EQ(changes[2].reason, "addressType IPv6");
  EXPECT_EQ(changes[3].action, "ignored");
  EXPECT_EQ(changes[3].reason, "no kubernetes.io/service-name label");
  EXPECT_TRUE(state.render(node()).empty());
  EXPECT_EQ(state.services().size(), 2u);
}

// kdpctl service del of a Kubernetes Service: as its DELETED event.
TEST(K8sTest, DeleteServiceAsItsDeletedEvent) {
  K8sState state;
  apply_event_json(state, event("ADDED", parse(kWebService)));
  apply_event_json(state, event("ADDED", parse(kWebSlice)));
  K8sChange deleted = state.delete_service("default/web");
  EXPECT_EQ(deleted.object, "Service default/web");
  EXPECT_EQ(deleted.action, "deleted");
  EXPECT_TRUE(state.render(node()).empty());
  EXPECT_EQ(state.endpoint_slices().size(), 1u);
  K8sChange again = state.delete_service("default/web");
  EXPECT_EQ(again.action, "absent");
  EXPECT_EQ(again.reason, "was not known");
}

TEST(K8sTest, WatchEventsReplaceAndDelete) {
  K8sState state;
  EXPECT_EQ(apply_event_json(state, event("ADDED", parse(kWebService))).action, "applied");
  EXPECT_EQ(apply_event_json(state, event("ADDED", parse(kWebSlice))).action, "applied");
  EXPECT_EQ(state.render(node())[0].endpoints.size(), 2u);

  json slice = parse(kWebSlice);
  slice["endpoints"].erase(1);
  EXPECT_EQ(apply_event_json(state, event("MODIFIED", slice)).action, "applied");
  EXPECT_EQ(state.render(node())[0].endpoints.size(), 1u);

  // DELETED reads the kind and metadata only.
  K8sChange deleted = apply_event_json(state, event(
      "DELETED", json::parse(R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}})")));
  EXPECT_EQ(deleted.object, "Service default/web");
  EXPECT_EQ(deleted.action, "deleted");
  EXPECT_TRUE(state.render(node()).empty());
  EXPECT_EQ(state.endpoint_slices().size(), 1u);  // the slice goes by its own event
  EXPECT_EQ(apply_event_json(state, event("DELETED", parse(kWebService))).action, "absent");

  try {
    apply_event_json(state, event("BOOKMARK", parse(kWebService)));
    FAIL();
  } catch (const K8sError& e) {
    EXPECT_STREQ(e.what(), "watch event: type: must be \"ADDED\", \"MODIFIED\" or \"DELETED\", got \"BOOKMARK\"");
  }
}

TEST(K8sTest, ListKinds) {
  // As the API server lists them: items without kind and apiVersion.
  json services = {{"apiVersion", "v1"}, {"kind", "ServiceList"}, {"items", json::array()}};
  json web = parse(kWebService);
  web.erase("kind");
  web.erase("apiVersion");
  services["items"].push_back(web);
  json slices = {{"apiVersion", "discovery.k8s.io/v1"}, {"kind", "EndpointSliceList"}, {"items", json::array({parse(kWebSlice)})}};
  K8sState state;
  auto changes = apply_json(state, json::array({services, slices}));
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].object, "Service default/web");
  EXPECT_EQ(state.render(node())[0].endpoints.size(), 2u);
}

// Text that is not JSON is refused whole, the error saying where; the
// parser then reads the next document as if nothing had happened.
TEST(K8sTest, MalformedJsonSaysWhere) {
  EXPECT_EQ(parse_error_of("{\"kind\": \"Service\",\n \"spec\": {\"ports\": [}}"),
            "test: not valid JSON: parse error at line 2, column 21: syntax error while parsing value - unexpected "
            "'}'; expected '[', '{', or a literal");
  EXPECT_EQ(parse_error_of(""), "test: not valid JSON: parse error at line 1, column 1: syntax error while parsing "
                                "value - unexpected end of input; expected '[', '{', or a literal");
  EXPECT_EQ(parse_error_of("{} {}"), "test: not valid JSON: parse error at line 1, column 4: syntax error while "
                                     "parsing value - unexpected '{'; expected end of input");
  EXPECT_EQ(parse_error_of("[\"\xff\"]").substr(0, 48), "test: not valid JSON: parse error at line 1, col");
  K8sState state;
  EXPECT_EQ(apply_json(state, parse(kWebService)).size(), 1u);
  EXPECT_EQ(state.services().size(), 1u);
}

TEST(K8sTest, MalformedObjectsNameObjectAndField) {
  K8sState state;
  apply_json(state, parse(kWebService));
  auto with = [](const char* base, auto edit) {
    json object = parse(base);
    edit(object);
    return object;
  };
  json two_ports = with(kWebService, [](json& o) {
    o["spec"]["ports"].push_back({{"name", "sctp"}, {"port", 90}, {"protocol", "SCTPX"}});
  });
  EXPECT_EQ(error_of(state, two_ports), "Service default/web: spec.ports[1].protocol: unsupported \"SCTPX\"");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["spec"]["ports"][0]["port"] = 70000; })),
            "Service default/web: spec.ports[0].port: must be between 1 and 65535, got 70000");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["spec"]["ports"][0]["port"] = UINT64_MAX; })),
            "Service default/web: spec.ports[0].port: must be between 1 and 65535, got 18446744073709551615");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["spec"]["clusterIP"] = "10.96.0.300"; })),
            "Service default/web: spec.clusterIP: not an IP address: \"10.96.0.300\"");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["spec"]["type"] = "Magic"; })),
            "Service default/web: spec.type: unsupported \"Magic\"");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["spec"]["externalTrafficPolicy"] = "Global"; })),
            "Service default/web: spec.externalTrafficPolicy: unsupported \"Global\"");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["spec"]["ports"][0]["targetPort"] = true; })),
            "Service default/web: spec.ports[0].targetPort: must be a port number or a port name");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["apiVersion"] = "v2"; })),
            "Service default/web: apiVersion: must be \"v1\", got \"v2\"");
  EXPECT_EQ(error_of(state, with(kWebService, [](json& o) { o["kind"] = "Pod"; })),
            "object: kind: unsupported \"Pod\" (kdp reads Service and EndpointSlice objects, and Lists of them)");
  EXPECT_EQ(error_of(state, with(kWebSlice, [](json& o) { o["endpoints"][1]["addresses"][0] = "127.0.0.1"; })),
            "EndpointSlice default/web-8k2mq: endpoints[1].addresses[0]: must be a unicast address, got 127.0.0.1 "
            "(loopback range 127.0.0.0/8)");
  EXPECT_EQ(error_of(state, with(kWebSlice, [](json& o) { o["endpoints"][0]["conditions"]["ready"] = "yes"; })),
            "EndpointSlice default/web-8k2mq: endpoints[0].conditions.ready: must be true or false");
  // In a List, the item without a name is named by its place.
  json nameless = list({kWebSlice, kWebService});
  nameless["items"][1]["metadata"].erase("name");
  EXPECT_EQ(error_of(state, nameless), "Service object.items[1]: metadata.name: required field is missing");

  // All or nothing: the good first item of a List with a bad second one is not applied.
  json bad_list = list({kLbService, kWebService});
  bad_list["items"][1]["spec"]["ports"][0]["protocol"] = "ICMP";
  EXPECT_EQ(error_of(state, bad_list), "Service default/web: spec.ports[0].protocol: unsupported \"ICMP\"");
  EXPECT_EQ(state.services().size(), 1u);
  EXPECT_EQ(state.services().begin()->second.ports[0].protocol, L4Proto::Tcp);
}

TEST(K8sTest, RenderChecksAgainstTheNode) {
  K8sState state;
  apply_json(state, json::array({parse(kWebService), parse(kWebSlice)}));
  // A [[service]] of the config file with the same node port.
  const Config clash = node(R"(
[[service]]
name = "default/api"
type = "NodePort"
cluster_ip = "10.96.0.20"
  [[service.port]]
  port = 80
  node_port = 30080
)");
  EXPECT_EQ(render_error(state, clash),
            "Service default/web: spec.ports[0].nodePort: 192.168.50.10:30080/TCP is already served by service[0] "
            "(\"default/api\") of the configuration as its node port");
  const Config same_name = node(R"(
[[service]]
name = "default/web"
cluster_ip = "10.96.0.20"
  [[service.port]]
  port = 80
)");
  EXPECT_EQ(render_error(state, same_name),
            "Service default/web: metadata.name: \"default/web\" is also the name of service[0] (\"default/web\") of "
            "the configuration");

  json outside = parse(kWebService);
  outside["spec"]["clusterIP"] = "10.200.0.1";
  outside["spec"]["clusterIPs"] = {"10.200.0.1"};
  K8sState other;
  apply_json(other, outside);
  EXPECT_EQ(render_error(other, node()),
            "Service default/web: spec.clusterIP: 10.200.0.1 is outside node.service_cidr 10.96.0.0/12");
  json high = parse(kWebService);
  high["spec"]["ports"][0]["nodePort"] = 40000;
  apply_json(other, high);
  EXPECT_EQ(render_error(other, node()),
            "Service default/web: spec.ports[0].nodePort: 40000 is outside nat.node_port_range 30000-32767");

  // Two Services on one external IP and port.
  json a = parse(kLbService), b = parse(kLbService);
  b["metadata"]["name"] = "shop2";
  b["spec"]["clusterIP"] = "10.100.7.8";
  b["spec"]["clusterIPs"] = {"10.100.7.8"};
  b["spec"]["ports"][0]["nodePort"] = 30444;
  b["spec"]["ports"][1]["nodePort"] = 30444;
  b["status"] = json::object();
  K8sState both;
  apply_json(both, json::array({a, b}));
  EXPECT_EQ(render_error(both, node()),
            "Service prod/shop2: spec.externalIPs[0]: 198.51.100.9:443/TCP is already served by Service prod/shop as "
            "its external IP");

  json slice = parse(kWebSlice);
  slice["endpoints"][0]["addresses"][0] = "10.96.0.10";
  K8sState self;
  apply_json(self, json::array({parse(kWebService), slice}));
  EXPECT_EQ(render_error(self, node()),
            "EndpointSlice default/web-8k2mq: endpoints[0].addresses[0]: 10.96.0.10 is inside node.service_cidr "
            "10.96.0.0/12");
}

TEST(K8sTest, DualStackUsesTheIpv4ClusterIp) {
  json service = parse(kWebService);
  service["spec"]["clusterIP"] = "fd00:10:96::a";
  service["spec"]["clusterIPs"] = {"fd00:10:96::a", "10.96.0.10"};
  service["spec"]["externalIPs"] = {"2001:db8::1"};
  K8sState state;
  apply_json(state, service);
  auto services = state.render(node());
  ASSERT_EQ(services.size(), 1u);
  EXPECT_EQ(services[0].cluster_ip, ip("10.96.0.10"));
  EXPECT_TRUE(services[0].external_ips.empty());

  service["spec"]["clusterIPs"] = {"fd00:10:96::a"};
  EXPECT_EQ(apply_json(state, service)[0].reason, "no IPv4 cluster IP");
  EXPECT_TRUE(state.render(node()).empty());
}

// Found by fuzz_k8s: arrays nested a few thousand deep ran K8sState::apply's
// walk out of stack. The parser refuses a document past kMaxDepth levels, the
// walk Lists and arrays past 16; real nesting stays well inside both.
TEST(K8sTest, NestingIsBounded) {
  K8sState state;
  EXPECT_EQ(parse_error_of(std::string(100000, '[') + std::string(100000, ']')),
            "test: nested deeper than 128 levels");
  EXPECT_EQ(parse_error_of(std::string(128, '[') + std::string(128, ']')), "(parsed)");
  std::string where = "object";
  for (int i = 0; i < 16; ++i) where += "[0]";
  EXPECT_EQ(error_of(state, json::parse(std::string(20, '[') + std::string(20, ']'))),
            where + ": Lists and arrays nested more than 16 deep");
  EXPECT_TRUE(state.services().empty());

  json nested = list({kWebService});
  for (int i = 0; i < 10; ++i) nested = json::array({nested});
  apply_json(state, nested);
  EXPECT_EQ(state.services().size(), 1u);
}

}  // namespace
}  // namespace kdp
