// Kubernetes objects as the control plane hands them to kdp: Services (v1)
// and EndpointSlices (discovery.k8s.io/v1) in the JSON `kubectl get -o json`
// prints, single, in Lists or in watch events, translated into kdp's desired
// state (ServiceConfig) by kube-proxy's rules. No DPDK here.
//
// What is read, and how:
//   Service   spec.type ClusterIP | NodePort | LoadBalancer (ExternalName, and
//             headless services (clusterIP None), are kept but skipped, as
//             kube-proxy skips them); spec.clusterIP (or the IPv4 one of
//             spec.clusterIPs); spec.ports[] protocol, port, nodePort,
//             targetPort; spec.externalIPs; status.loadBalancer.ingress[].ip
//             (LoadBalancer only; ipMode "Proxy" entries skipped as kube-proxy
//             does); spec.loadBalancerSourceRanges; spec.externalTrafficPolicy,
//             spec.internalTrafficPolicy; spec.sessionAffinity and
//             spec.sessionAffinityConfig.clientIP.timeoutSeconds. IPv6
//             addresses and ranges are ignored (kdp is IPv4 only).
//   EndpointSlice  addressType IPv4 only (others are kept and ignored);
//             label kubernetes.io/service-name ties it to the Service of that
//             name in its namespace; ports[] name, protocol, port; endpoints[]
//             addresses[0], conditions.ready (unset: true), serving (unset:
//             ready), terminating (unset: false), nodeName.
// As in kube-proxy, an endpoint's port for a service port is the slice's port
// of the same name and protocol, whatever targetPort says (the EndpointSlice
// controller resolved it, named or numbered); an endpoint in a slice without
// that port is no endpoint of that service port.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ctrl/config.h"
#include "ctrl/services.h"

namespace simdjson::dom {
class element;
}

namespace kdp {

// A rejected object. what() names the object and the field:
// "Service default/web: spec.ports[1].protocol: unsupported \"SCTPX\"".
class K8sError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A Service as kdp reads it. Addresses keep the index they had in their list,
// so that a problem found later (against the node) can name the field.
struct K8sService {
  std::string ns, name;
  std::string skipped;  // why kube-proxy ignores it ("headless (clusterIP None)"); empty: used
  ServiceType type = ServiceType::ClusterIP;
  Ipv4 cluster_ip = 0;
  std::string cluster_ip_field;  // "spec.clusterIP" or "spec.clusterIPs[1]"
  struct Address {
    Ipv4 ip = 0;
    size_t index = 0;
    bool operator==(const Address&) const = default;
  };
  std::vector<Address> external_ips;       // spec.externalIPs[index]
  std::vector<Address> load_balancer_ips;  // status.loadBalancer.ingress[index].ip
  std::vector<Ipv4Prefix> load_balancer_source_ranges;
  TrafficPolicy external_traffic_policy = TrafficPolicy::Cluster;
  TrafficPolicy internal_traffic_policy = TrafficPolicy::Cluster;
  SessionAffinity session_affinity = SessionAffinity::None;
  uint32_t session_affinity_timeout_s = 10800;
  struct Port {
    std::string name;
    L4Proto protocol = L4Proto::Tcp;
    uint16_t port = 0;
    uint16_t node_port = 0;
    uint16_t target_port = 0;      // numeric targetPort (defaults to port); 0 when named
    std::string target_port_name;  // named targetPort, resolved through the slices' ports
    bool operator==(const Port&) const = default;
  };
  std::vector<Port> ports;
  bool operator==(const K8sService&) const = default;
};

struct K8sEndpointSlice {
  std::string ns, name;
  std::string service;  // label kubernetes.io/service-name; empty: none
  std::string address_type;
  struct Port {
    std::string name;
    L4Proto protocol = L4Proto::Tcp;
    uint16_t port = 0;
    bool operator==(const Port&) const = default;
  };
  std::vector<Port> ports;  // those with a port number
  struct Endpoint {
    Ipv4 ip = 0;
    std::string node;
    bool ready = true, serving = true, terminating = false;
    size_t index = 0;  // in endpoints[]
    bool operator==(const Endpoint&) const = default;
  };
  std::vector<Endpoint> endpoints;
  bool operator==(const K8sEndpointSlice&) const = default;
};

// Parses JSON texts of Kubernetes objects into simdjson's DOM, which K8sState
// reads. A parser keeps its buffers from one text to the next: the first List
// of 10,000 Services costs their allocation (about 7 bytes per byte of text),
// the next only the parse (about 1 GB/s).
class K8sJsonParser {
 public:
  K8sJsonParser();
  ~K8sJsonParser();
  K8sJsonParser(const K8sJsonParser&) = delete;
  K8sJsonParser& operator=(const K8sJsonParser&) = delete;
  // The document, valid until the next parse or the parser's end. Parsed in
  // place when `text` has SIMDJSON_PADDING bytes of capacity to spare, else
  // from a copy. Throws K8sError "{what}: not valid JSON: ..." with the line
  // and column of the first error, or "nested deeper than ..." past
  // kMaxDepth levels.
  const simdjson::dom::element& parse(const std::string& text, std::string_view what);
  static constexpr size_t kMaxDepth = 128;  // Service and EndpointSlice objects need about 10
  // Spare capacity that lets a text be parsed in place (SIMDJSON_PADDING).
  static constexpr size_t kPadding = 64;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What applying one object did.
struct K8sChange {
  std::string object;  // "Service default/web", "EndpointSlice default/web-x7k2p"
  std::string action;  // "applied", "deleted", "absent" (deleted, was not there), "skipped", "ignored"
  std::string reason;  // why skipped or ignored
};

// The Services and EndpointSlices the control plane sent, by namespace/name.
class K8sState {
 public:
  // A Service, an EndpointSlice, a List of them ("List", "ServiceList",
  // "EndpointSliceList": items) or a JSON array of any of these. Each object
  // replaces the one of its kind, namespace and name. All or nothing: throws
  // K8sError on the first malformed object, leaving the state as it was.
  std::vector<K8sChange> apply(const simdjson::dom::element& document);
  // One watch event {"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}:
  // ADDED and MODIFIED replace, DELETED removes (only the object's kind and
  // metadata are read). Throws K8sError, changing nothing.
  K8sChange apply_event(const simdjson::dom::element& event);
  // Removes the Service `key` ("namespace/name"), as a DELETED event about it does.
  K8sChange delete_service(const std::string& key);

  // The Services kube-proxy would program, sorted by name, checked against
  // `base` as parse_config checks [[service]]: cluster IPs inside
  // node.service_cidr, node ports inside nat.node_port_range, no frontend,
  // name or cluster IP shared with another Service (base's [[service]]s
  // included), endpoints never service addresses. Throws K8sError naming the
  // object and field at fault.
  std::vector<ServiceConfig> render(const Config& base) const;

  // The endpoints Service `key` renders to, as render() renders them (none
  // when it is unknown), from its slices alone: an EndpointSlice change
  // costs its Service, not all of them. `cluster_ip_owner` names who has a
  // cluster IP ("" for nobody), for the check that no endpoint is one.
  // Throws K8sError naming the slice and field at fault.
  std::vector<EndpointConfig> render_endpoints(const std::string& key, const Config::Node& node,
                                               const std::function<std::string(Ipv4)>& cluster_ip_owner) const;
  // The "namespace/name" of the EndpointSlice a watch event is about;
  // nullopt for other events (and malformed ones, which apply_event refuses).
  static std::optional<std::string> slice_event_target(const simdjson::dom::element& event);
  const K8sEndpointSlice* slice(const std::string& key) const;
  // Puts a slice back as it was (nullopt: absent), to undo an event.
  void restore_slice(const std::string& key, std::optional<K8sEndpointSlice> slice);

  const std::map<std::string, K8sService>& services() const { return services_; }
  const std::map<std::string, K8sEndpointSlice>& endpoint_slices() const { return slices_; }

 private:
  K8sChange apply_object(const simdjson::dom::element& object, std::string_view default_kind, std::string_view where);
  static K8sChange deletion(std::string label, bool erased);
  static std::vector<EndpointConfig> endpoints_from(const K8sService& service,
                                                    const std::vector<const K8sEndpointSlice*>& slices,
                                                    const Config::Node& node,
                                                    const std::function<std::string(Ipv4)>& cluster_ip_owner);

  std::map<std::string, K8sService> services_;       // "namespace/name"
  std::map<std::string, K8sEndpointSlice> slices_;  // "namespace/name"
};

// `base` with the Services `state` renders appended (render's checks and errors).
Config with_k8s_services(const Config& base, const K8sState& state);

// How errors name a [[service]] of the configuration: "service[3] (\"ns/web\") of the configuration".
std::string config_service_ref(size_t index, std::string_view name);

// The change list as JSON: [{"object", "action", "reason"?}].
nlohmann::json to_json(const std::vector<K8sChange>& changes);

}  // namespace kdp
