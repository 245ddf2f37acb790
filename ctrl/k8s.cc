#include "ctrl/k8s.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

// The translation follows kube-proxy (pkg/proxy/servicechangetracker.go,
// endpointslicecache.go and the proxiers): what it skips, kdp skips.

namespace kdp {

using nlohmann::json;

namespace {

constexpr std::string_view kServiceNameLabel = "kubernetes.io/service-name";

std::string quote(std::string_view text) { return fmt::format("\"{}\"", text); }

// A field's name as errors print it ("endpoints[3].nodeName"), put together
// only when an error needs it: a List of 10,000 Services has a million fields.
// It views its parts: one made from a temporary string lives for that call.
class FieldName {
 public:
  FieldName(const char* name) : base_(name) {}
  FieldName(std::string_view name) : base_(name) {}
  FieldName(const std::string& name) : base_(name) {}
  FieldName(std::string_view array, size_t index) : base_(array), index_(index) {}
  // This element's member (".nodeName"; a literal, kept by reference).
  FieldName operator+(std::string_view member) const {
    if (!member_.empty()) throw std::logic_error("FieldName: one member per element");
    FieldName out = *this;
    out.member_ = member;
    return out;
  }
  std::string str() const {
    return index_ ? fmt::format("{}[{}]{}", base_, *index_, member_) : fmt::format("{}{}", base_, member_);
  }

 private:
  std::string_view base_;
  std::optional<size_t> index_;
  std::string_view member_;
};

// Typed reads of one object's fields; every error names the object and the
// field ("Service default/web: spec.ports[1].port: ...").
class Fields {
 public:
  explicit Fields(std::string object) : object_(std::move(object)) {}
  const std::string& object() const { return object_; }

  [[noreturn]] void fail(const FieldName& field, std::string_view problem) const {
    throw K8sError(fmt::format("{}: {}: {}", object_, field.str(), problem));
  }

  // The member `key` of `parent`; nullptr when absent or null (the API
  // server's "unset").
  static const json* find(const json& parent, std::string_view key) {
    if (!parent.is_object()) return nullptr;
    auto it = parent.find(key);
    return it == parent.end() || it->is_null() ? nullptr : &*it;
  }

  const json* object(const json& parent, std::string_view key, const FieldName& field) const {
    const json* value = find(parent, key);
    if (value && !value->is_object()) fail(field, "must be an object");
    return value;
  }

  const json* array(const json& parent, std::string_view key, const FieldName& field) const {
    const json* value = find(parent, key);
    if (value && !value->is_array()) fail(field, "must be an array");
    return value;
  }

  std::optional<std::string> string(const json& parent, std::string_view key, const FieldName& field) const {
    const json* value = find(parent, key);
    if (!value) return std::nullopt;
    if (!value->is_string()) fail(field, "must be a string");
    return value->get<std::string>();
  }

  std::optional<bool> boolean(const json& parent, std::string_view key, const FieldName& field) const {
    const json* value = find(parent, key);
    if (!value) return std::nullopt;
    if (!value->is_boolean()) fail(field, "must be true or false");
    return value->get<bool>();
  }

  std::optional<int64_t> integer(const json& parent, std::string_view key, const FieldName& field, int64_t min,
                                 int64_t max) const {
    const json* value = find(parent, key);
    if (!value) return std::nullopt;
    if (!value->is_number_integer()) fail(field, "must be an integer");
    // An unsigned number past INT64_MAX wraps negative, below every min: shown as written.
    const int64_t number = value->get<int64_t>();
    if (number < min || number > max)
      fail(field, fmt::format("must be between {} and {}, got {}", min, max, value->dump()));
    return number;
  }

  // An IPv4 address; nullopt for an IPv6 one, which kdp ignores.
  std::optional<Ipv4> address(const std::string& text, const FieldName& field) const {
    if (text.find(':') != std::string::npos) return std::nullopt;
    auto ip = parse_ipv4(text);
    if (!ip) fail(field, fmt::format("not an IP address: {}", quote(text)));
    if (auto problem = unicast_address_problem(*ip)) fail(field, *problem);
    return ip;
  }

  L4Proto protocol(const json& parent, const FieldName& field) const {
    const std::string text = string(parent, "protocol", field).value_or("TCP");
    if (text == "TCP") return L4Proto::Tcp;
    if (text == "UDP") return L4Proto::Udp;
    if (text == "SCTP") return L4Proto::Sctp;
    fail(field, fmt::format("unsupported {}", quote(text)));
  }

  template <typename Enum, size_t N>
  Enum choice(const json& parent, std::string_view key, const FieldName& field,
              const std::pair<std::string_view, Enum> (&choices)[N], Enum fallback) const {
    auto text = string(parent, key, field);
    if (!text || text->empty()) return fallback;
    for (const auto& [spelling, value] : choices)
      if (*text == spelling) return value;
    fail(field, fmt::format("unsupported {}", quote(*text)));
  }

 private:
  std::string object_;
};

std::string indexed(std::string_view field, size_t index) { return fmt::format("{}[{}]", field, index); }

constexpr std::pair<std::string_view, TrafficPolicy> kPolicies[] = {{"Cluster", TrafficPolicy::Cluster},
                                                                   {"Local", TrafficPolicy::Local}};

K8sService read_service(const json& object, const Fields& f) {
  K8sService service;
  const json* spec = f.object(object, "spec", "spec");
  if (!spec) f.fail("spec", "required field is missing");

  const std::string type = f.string(*spec, "type", "spec.type").value_or("ClusterIP");
  if (type == "ExternalName") {
    service.skipped = "type ExternalName";
    return service;
  }
  if (type == "ClusterIP") service.type = ServiceType::ClusterIP;
  else if (type == "NodePort") service.type = ServiceType::NodePort;
  else if (type == "LoadBalancer") service.type = ServiceType::LoadBalancer;
  else f.fail("spec.type", fmt::format("unsupported {}", quote(type)));

  // The IPv4 one of clusterIP and clusterIPs (dual-stack); "None": headless.
  auto cluster_ip = f.string(*spec, "clusterIP", "spec.clusterIP");
  if (cluster_ip == "None") {
    service.skipped = "headless (clusterIP None)";
    return service;
  }
  std::vector<std::pair<std::string, std::string>> candidates;  // text, field
  if (cluster_ip && !cluster_ip->empty()) candidates.emplace_back(*cluster_ip, "spec.clusterIP");
  if (const json* ips = f.array(*spec, "clusterIPs", "spec.clusterIPs"))
    for (size_t k = 0; k < ips->size(); ++k) {
      const json& ip = (*ips)[k];
      if (!ip.is_string()) f.fail(indexed("spec.clusterIPs", k), "must be a string");
      candidates.emplace_back(ip.get<std::string>(), indexed("spec.clusterIPs", k));
    }
  for (const auto& [text, field] : candidates) {
    if (text == "None") {
      service.skipped = "headless (clusterIP None)";
      return service;
    }
    if (auto ip = f.address(text, field)) {
      service.cluster_ip = *ip;
      service.cluster_ip_field = field;
      break;
    }
  }
  if (service.cluster_ip == 0) {
    service.skipped = candidates.empty() ? "no cluster IP allocated" : "no IPv4 cluster IP";
    return service;
  }

  if (const json* ports = f.array(*spec, "ports", "spec.ports")) {
    for (size_t i = 0; i < ports->size(); ++i) {
      const FieldName at("spec.ports", i);
      const json& item = (*ports)[i];
      if (!item.is_object()) f.fail(at, "must be an object");
      K8sService::Port port;
      port.name = f.string(item, "name", at + ".name").value_or("");
      port.protocol = f.protocol(item, at + ".protocol");
      auto number = f.integer(item, "port", at + ".port", 1, 65535);
      if (!number) f.fail(at + ".port", "required field is missing");
      port.port = static_cast<uint16_t>(*number);
      port.node_port = static_cast<uint16_t>(f.integer(item, "nodePort", at + ".nodePort", 0, 65535).value_or(0));
      if (const json* target = Fields::find(item, "targetPort")) {
        if (target->is_number_integer()) {
          port.target_port = static_cast<uint16_t>(*f.integer(item, "targetPort", at + ".targetPort", 1, 65535));
        } else if (target->is_string() && !target->get<std::string>().empty()) {
          port.target_port_name = target->get<std::string>();
        } else {
          f.fail(at + ".targetPort", "must be a port number or a port name");
        }
      } else {
        port.target_port = port.port;
      }
      for (size_t j = 0; j < service.ports.size(); ++j) {
        if (service.ports[j].name == port.name)
          f.fail(at + ".name", fmt::format("{} is already the name of {}", quote(port.name), indexed("spec.ports", j)));
        if (service.ports[j].port == port.port && service.ports[j].protocol == port.protocol)
          f.fail(at + ".port", fmt::format("{}/{} is already used by {}", port.port, to_string(port.protocol),
                                           indexed("spec.ports", j)));
      }
      service.ports.push_back(std::move(port));
    }
  }

  auto add_address = [&](std::vector<K8sService::Address>& list, const std::string& text, const std::string& field,
                         size_t index) {
    auto ip = f.address(text, field);
    if (!ip) return;
    auto same = [&](const K8sService::Address& a) { return a.ip == *ip; };
    // Listed twice, or both an external and a load balancer IP: one frontend.
    if (std::any_of(service.external_ips.begin(), service.external_ips.end(), same) ||
        std::any_of(service.load_balancer_ips.begin(), service.load_balancer_ips.end(), same))
      return;
    list.push_back({*ip, index});
  };
  if (const json* ips = f.array(*spec, "externalIPs", "spec.externalIPs"))
    for (size_t k = 0; k < ips->size(); ++k) {
      const std::string at = indexed("spec.externalIPs", k);
      if (!(*ips)[k].is_string()) f.fail(at, "must be a string");
      add_address(service.external_ips, (*ips)[k].get<std::string>(), at, k);
    }
  if (service.type == ServiceType::LoadBalancer)
    if (const json* status = f.object(object, "status", "status"))
      if (const json* lb = f.object(*status, "loadBalancer", "status.loadBalancer"))
        if (const json* ingress = f.array(*lb, "ingress", "status.loadBalancer.ingress"))
          for (size_t k = 0; k < ingress->size(); ++k) {
            const std::string at = indexed("status.loadBalancer.ingress", k);
            const json& item = (*ingress)[k];
            if (!item.is_object()) f.fail(at, "must be an object");
            auto ip = f.string(item, "ip", at + ".ip");
            if (!ip || ip->empty()) continue;  // a hostname only
            // ipMode Proxy: the load balancer proxies, its traffic arrives for the node (KEP-1860).
            if (f.string(item, "ipMode", at + ".ipMode") == "Proxy") continue;
            add_address(service.load_balancer_ips, *ip, at + ".ip", k);
          }
  if (const json* ranges = f.array(*spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges"))
    for (size_t k = 0; k < ranges->size(); ++k) {
      const std::string at = indexed("spec.loadBalancerSourceRanges", k);
      if (!(*ranges)[k].is_string()) f.fail(at, "must be a string");
      std::string text = (*ranges)[k].get<std::string>();
      // As kube-proxy: surrounding spaces are trimmed, host bits masked.
      text.erase(0, text.find_first_not_of(' '));
      text.erase(text.find_last_not_of(' ') + 1);
      if (text.find(':') != std::string::npos) continue;
      auto prefix = parse_ipv4_prefix(text, /*strict=*/false);
      if (!prefix) f.fail(at, fmt::format("not a CIDR: {}", quote(text)));
      if (std::find(service.load_balancer_source_ranges.begin(), service.load_balancer_source_ranges.end(),
                    *prefix) == service.load_balancer_source_ranges.end())
        service.load_balancer_source_ranges.push_back(*prefix);
    }

  service.external_traffic_policy =
      f.choice(*spec, "externalTrafficPolicy", "spec.externalTrafficPolicy", kPolicies, TrafficPolicy::Cluster);
  service.internal_traffic_policy =
      f.choice(*spec, "internalTrafficPolicy", "spec.internalTrafficPolicy", kPolicies, TrafficPolicy::Cluster);
  service.session_affinity =
      f.choice(*spec, "sessionAffinity", "spec.sessionAffinity",
               {{"None", SessionAffinity::None}, {"ClientIP", SessionAffinity::ClientIP}}, SessionAffinity::None);
  if (const json* config = f.object(*spec, "sessionAffinityConfig", "spec.sessionAffinityConfig"))
    if (const json* client = f.object(*config, "clientIP", "spec.sessionAffinityConfig.clientIP"))
      if (auto timeout = f.integer(*client, "timeoutSeconds", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1,
                                   86400))
        service.session_affinity_timeout_s = static_cast<uint32_t>(*timeout);
  return service;
}

K8sEndpointSlice read_endpoint_slice(const json& object, const Fields& f) {
  K8sEndpointSlice slice;
  auto type = f.string(object, "addressType", "addressType");
  if (!type) f.fail("addressType", "required field is missing");
  slice.address_type = *type;
  if (const json* metadata = f.object(object, "metadata", "metadata"))
    if (const json* labels = f.object(*metadata, "labels", "metadata.labels"))
      slice.service =
          f.string(*labels, kServiceNameLabel, fmt::format("metadata.labels[\"{}\"]", kServiceNameLabel)).value_or("");
  if (slice.address_type != "IPv4") return slice;  // kept, never used: its addresses are not read

  if (const json* ports = f.array(object, "ports", "ports"))
    for (size_t i = 0; i < ports->size(); ++i) {
      const FieldName at("ports", i);
      const json& item = (*ports)[i];
      if (!item.is_object()) f.fail(at, "must be an object");
      K8sEndpointSlice::Port port;
      port.name = f.string(item, "name", at + ".name").value_or("");
      port.protocol = f.protocol(item, at + ".protocol");
      auto number = f.integer(item, "port", at + ".port", 1, 65535);
      if (!number) continue;  // "all ports": kube-proxy has no use for it either
      port.port = static_cast<uint16_t>(*number);
      slice.ports.push_back(std::move(port));
    }
  if (const json* endpoints = f.array(object, "endpoints", "endpoints"))
    for (size_t j = 0; j < endpoints->size(); ++j) {
      const FieldName at("endpoints", j);
      const json& item = (*endpoints)[j];
      if (!item.is_object()) f.fail(at, "must be an object");
      K8sEndpointSlice::Endpoint endpoint;
      endpoint.index = j;
      const json* addresses = f.array(item, "addresses", at + ".addresses");
      if (!addresses || addresses->empty()) f.fail(at + ".addresses", "must list at least one address");
      // kube-proxy uses the first address only.
      if (!(*addresses)[0].is_string()) f.fail(at + ".addresses[0]", "must be a string");
      const std::string text = (*addresses)[0].get<std::string>();
      auto ip = f.address(text, at + ".addresses[0]");
      if (!ip) f.fail(at + ".addresses[0]", fmt::format("not an IPv4 address in an IPv4 slice: {}", quote(text)));
      endpoint.ip = *ip;
      endpoint.node = f.string(item, "nodeName", at + ".nodeName").value_or("");
      if (const json* conditions = f.object(item, "conditions", at + ".conditions")) {
        endpoint.ready = f.boolean(*conditions, "ready", at + ".conditions.ready").value_or(true);
        endpoint.serving = f.boolean(*conditions, "serving", at + ".conditions.serving").value_or(endpoint.ready);
        endpoint.terminating = f.boolean(*conditions, "terminating", at + ".conditions.terminating").value_or(false);
      }
      slice.endpoints.push_back(std::move(endpoint));
    }
  return slice;
}

// Who an object is: its kind, apiVersion and namespace/name.
struct Identity {
  std::string kind, api_version, ns, name;
  std::string key() const { return ns + "/" + name; }
  std::string label() const { return fmt::format("{} {}", kind, key()); }
};

Identity identify(const json& object, std::string_view default_kind, std::string_view where) {
  if (!object.is_object()) throw K8sError(fmt::format("{}: must be a JSON object", where));
  Fields anonymous{std::string(where)};
  Identity id;
  id.kind = anonymous.string(object, "kind", "kind").value_or(std::string(default_kind));
  if (id.kind.empty()) anonymous.fail("kind", "required field is missing");
  if (id.kind == "Service") id.api_version = "v1";
  else if (id.kind == "EndpointSlice") id.api_version = "discovery.k8s.io/v1";
  else
    anonymous.fail("kind", fmt::format("unsupported {} (kdp reads Service and EndpointSlice objects, and Lists of them)",
                                       quote(id.kind)));
  Fields kinded{fmt::format("{} {}", id.kind, where)};
  const json* metadata = kinded.object(object, "metadata", "metadata");
  if (!metadata) kinded.fail("metadata", "required field is missing");
  id.name = kinded.string(*metadata, "name", "metadata.name").value_or("");
  if (id.name.empty()) kinded.fail("metadata.name", "required field is missing");
  id.ns = kinded.string(*metadata, "namespace", "metadata.namespace").value_or("");
  if (id.ns.empty()) id.ns = "default";
  // Lists from the API server leave their items' kind and apiVersion out.
  auto api_version = Fields(id.label()).string(object, "apiVersion", "apiVersion");
  if (api_version && *api_version != id.api_version)
    Fields(id.label()).fail("apiVersion", fmt::format("must be {}, got {}", quote(id.api_version), quote(*api_version)));
  if (!api_version && default_kind.empty()) Fields(id.label()).fail("apiVersion", "required field is missing");
  return id;
}

bool is_list_kind(const json& object) {
  if (!object.is_object()) return false;
  auto kind = object.find("kind");
  return kind != object.end() && kind->is_string() && kind->get<std::string>().ends_with("List");
}

}  // namespace

K8sChange K8sState::apply_object(const json& object, std::string_view default_kind, std::string_view where) {
  const Identity id = identify(object, default_kind, where);
  const Fields f(id.label());
  if (id.kind == "Service") {
    K8sService service = read_service(object, f);
    service.ns = id.ns;
    service.name = id.name;
    K8sChange change{id.label(), service.skipped.empty() ? "applied" : "skipped", service.skipped};
    services_[id.key()] = std::move(service);
    return change;
  }
  K8sEndpointSlice slice = read_endpoint_slice(object, f);
  slice.ns = id.ns;
  slice.name = id.name;
  K8sChange change{id.label(), "applied", ""};
  if (slice.address_type != "IPv4") {
    change.action = "ignored";
    change.reason = fmt::format("addressType {}", slice.address_type);
  } else if (slice.service.empty()) {
    change.action = "ignored";
    change.reason = fmt::format("no {} label", kServiceNameLabel);
  }
  slices_[id.key()] = std::move(slice);
  return change;
}

std::vector<K8sChange> K8sState::apply(const json& document) {
  // Lists and arrays hold objects, or Lists and arrays of them; a bound on
  // the nesting keeps this walk's recursion short whatever the input.
  constexpr size_t kMaxNesting = 16;
  K8sState next = *this;
  std::vector<K8sChange> changes;
  auto visit = [&](auto& self, const json& value, const std::string& where, std::string_view default_kind,
                   size_t depth) -> void {
    if ((value.is_array() || is_list_kind(value)) && depth == kMaxNesting)
      throw K8sError(fmt::format("{}: Lists and arrays nested more than {} deep", where, kMaxNesting));
    if (value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) self(self, value[i], indexed(where, i), default_kind, depth + 1);
      return;
    }
    if (is_list_kind(value)) {
      const std::string kind = value["kind"].get<std::string>();
      const json* items = Fields::find(value, "items");
      if (items && !items->is_array()) throw K8sError(fmt::format("{} {}: items: must be an array", kind, where));
      std::string_view item_kind = kind == "ServiceList"         ? "Service"
                                   : kind == "EndpointSliceList" ? "EndpointSlice"
                                                                 : "";
      if (items) self(self, *items, fmt::format("{}.items", where), item_kind, depth + 1);
      return;
    }
    changes.push_back(next.apply_object(value, default_kind, where));
  };
  visit(visit, document, "object", "", 0);
  *this = std::move(next);
  return changes;
}

K8sChange K8sState::apply_event(const json& event) {
  if (!event.is_object()) throw K8sError("watch event: must be a JSON object {\"type\": ..., \"object\": {...}}");
  Fields f("watch event");
  const std::string type = f.string(event, "type", "type").value_or("");
  const json* object = f.object(event, "object", "object");
  if (!object) f.fail("object", "required field is missing");
  if (type == "ADDED" || type == "MODIFIED") {
    if (is_list_kind(*object)) f.fail("object", "must be a single object, not a List");
    return apply_object(*object, "", "object");  // reads the whole object before it changes anything
  }
  if (type == "DELETED") {
    const Identity id = identify(*object, "", "object");
    const size_t erased = id.kind == "Service" ? services_.erase(id.key()) : slices_.erase(id.key());
    return {id.label(), erased ? "deleted" : "absent", erased ? "" : "was not known"};
  }
  f.fail("type", fmt::format("must be \"ADDED\", \"MODIFIED\" or \"DELETED\", got {}", quote(type)));
}

std::string config_service_ref(size_t index, std::string_view name) {
  return fmt::format("service[{}] ({}) of the configuration", index, quote(name));
}

std::vector<EndpointConfig> K8sState::endpoints_from(const K8sService& service,
                                                    const std::vector<const K8sEndpointSlice*>& slices,
                                                    const Config::Node& node,
                                                    const std::function<std::string(Ipv4)>& cluster_ip_owner) {
  // An address in several slices (moving between them) counts once, ready if
  // any copy is (as kube-proxy).
  std::vector<EndpointConfig> endpoints;
  size_t listed = 0;
  for (const K8sEndpointSlice* slice : slices) listed += slice->endpoints.size();
  endpoints.reserve(listed);
  for (const K8sEndpointSlice* slice : slices) {
    auto refuse = [&](const K8sEndpointSlice::Endpoint& e, std::string_view problem) {
      throw K8sError(fmt::format("EndpointSlice {}/{}: endpoints[{}].addresses[0]: {} {}", slice->ns, slice->name,
                                 e.index, ipv4_to_string(e.ip), problem));
    };
    std::vector<EndpointPort> ports;
    for (const K8sService::Port& sp : service.ports)
      for (const K8sEndpointSlice::Port& p : slice->ports)
        if (p.name == sp.name && p.protocol == sp.protocol) {
          ports.push_back({sp.name, sp.protocol, p.port});
          break;
        }
    if (ports.empty()) continue;  // none of the Service's ports: no endpoint of it
    for (const K8sEndpointSlice::Endpoint& e : slice->endpoints) {
      if (node.service_cidr && node.service_cidr->contains(e.ip))
        refuse(e, fmt::format("is inside node.service_cidr {}", node.service_cidr->to_string()));
      if (const std::string owner = cluster_ip_owner(e.ip); !owner.empty())
        refuse(e, fmt::format("is the cluster IP of {}", owner));
      auto same = std::find_if(endpoints.begin(), endpoints.end(),
                               [&](const EndpointConfig& known) { return known.ip == e.ip; });
      if (same == endpoints.end()) {
        EndpointConfig endpoint{e.ip, e.node, e.ready, e.serving, e.terminating, ports};
        endpoints.push_back(std::move(endpoint));
        continue;
      }
      if (!same->ready && e.ready) {
        same->node = e.node;
        same->ready = e.ready;
        same->serving = e.serving;
        same->terminating = e.terminating;
      }
      for (const EndpointPort& p : ports)
        if (std::none_of(same->ports.begin(), same->ports.end(), [&](const EndpointPort& q) {
              return q.name == p.name && q.protocol == p.protocol;
            }))
          same->ports.push_back(p);
    }
  }
  return endpoints;
}

std::vector<EndpointConfig> K8sState::render_endpoints(const std::string& key, const Config::Node& node,
                                                       const std::function<std::string(Ipv4)>& cluster_ip_owner) const {
  auto service = services_.find(key);
  if (service == services_.end()) return {};
  // Slices in name order, as render() takes them.
  const size_t slash = key.find('/');
  const std::string_view ns = std::string_view(key).substr(0, slash), name = std::string_view(key).substr(slash + 1);
  std::vector<const K8sEndpointSlice*> slices;
  for (const auto& [slice_key, slice] : slices_)
    if (slice.address_type == "IPv4" && slice.ns == ns && slice.service == name) slices.push_back(&slice);
  return endpoints_from(service->second, slices, node, cluster_ip_owner);
}

std::optional<std::string> K8sState::slice_event_target(const json& event) {
  if (!event.is_object()) return std::nullopt;
  auto object = event.find("object");
  if (object == event.end() || !object->is_object() || is_list_kind(*object)) return std::nullopt;
  try {
    const Identity id = identify(*object, "", "object");
    if (id.kind == "EndpointSlice") return id.key();
  } catch (const K8sError&) {
  }
  return std::nullopt;
}

const K8sEndpointSlice* K8sState::slice(const std::string& key) const {
  auto it = slices_.find(key);
  return it != slices_.end() ? &it->second : nullptr;
}

void K8sState::restore_slice(const std::string& key, std::optional<K8sEndpointSlice> slice) {
  if (slice) slices_[key] = std::move(*slice);
  else slices_.erase(key);
}

std::vector<ServiceConfig> K8sState::render(const Config& base) const {
  const Config::Node& node = base.node;
  auto fail = [](std::string_view object, std::string_view field, std::string_view problem) {
    throw K8sError(fmt::format("{}: {}: {}", object, field, problem));
  };
  auto config_ref = config_service_ref;

  // No Service objects: nothing to render or to check (the configuration's
  // own Services were checked when it was loaded). Endpoint edits of a
  // 10k-Service config file take this path on every change.
  if (services_.empty()) return {};

  // What the configuration's own [[service]]s hold.
  std::map<Ipv4, std::string> cluster_ips;  // -> who has it
  std::map<Ipv4, std::string> endpoint_ips;
  std::map<ServiceKey, std::string> frontends;  // -> "who as its what"
  std::map<std::string_view, size_t> index_of;   // service name -> its index in base
  for (size_t j = 0; j < base.services.size(); ++j) {
    const ServiceConfig& s = base.services[j];
    cluster_ips[s.cluster_ip] = config_ref(j, s.name);
    for (const EndpointConfig& e : s.endpoints) endpoint_ips.emplace(e.ip, config_ref(j, s.name));
    index_of.emplace(s.name, j);
  }
  for (const ServiceEntry& e : compile_services(base).entries) {
    auto it = index_of.find(e.service);
    const size_t j = it == index_of.end() ? base.services.size() : it->second;
    frontends[e.key()] = fmt::format("{} as its {}", config_ref(j, e.service), to_string(e.kind));
  }

  // Slices by the Service they belong to, in name order.
  std::map<std::string, std::vector<const K8sEndpointSlice*>> slices_of;
  for (const auto& [key, slice] : slices_)
    if (slice.address_type == "IPv4" && !slice.service.empty())
      slices_of[slice.ns + "/" + slice.service].push_back(&slice);

  // First the Services' own addresses, so that endpoints are checked against all of them.
  for (const auto& [key, service] : services_) {
    if (!service.skipped.empty()) continue;
    const std::string label = "Service " + key;
    if (auto same = index_of.find(key); same != index_of.end())
      fail(label, "metadata.name", fmt::format("{} is also the name of {}", quote(key), config_ref(same->second, key)));
    const std::string ip_text = ipv4_to_string(service.cluster_ip);
    if (node.service_cidr) {
      if (!node.service_cidr->contains(service.cluster_ip))
        fail(label, service.cluster_ip_field,
             fmt::format("{} is outside node.service_cidr {}", ip_text, node.service_cidr->to_string()));
    } else {
      if (node.cluster_cidr.contains(service.cluster_ip))
        fail(label, service.cluster_ip_field,
             fmt::format("{} is inside node.cluster_cidr {}", ip_text, node.cluster_cidr.to_string()));
      if (service.cluster_ip == node.node_ip)
        fail(label, service.cluster_ip_field, fmt::format("{} is this node's own address (node.node_ip)", ip_text));
    }
    if (auto it = cluster_ips.find(service.cluster_ip); it != cluster_ips.end())
      fail(label, service.cluster_ip_field, fmt::format("{} is already the cluster IP of {}", ip_text, it->second));
    if (auto it = endpoint_ips.find(service.cluster_ip); it != endpoint_ips.end())
      fail(label, service.cluster_ip_field, fmt::format("{} is an endpoint of {}", ip_text, it->second));
    cluster_ips[service.cluster_ip] = label;
  }

  std::vector<ServiceConfig> rendered;
  for (const auto& [key, service] : services_) {
    if (!service.skipped.empty()) continue;
    const std::string label = "Service " + key;
    ServiceConfig out;
    out.name = key;
    out.type = service.type;
    out.cluster_ip = service.cluster_ip;
    out.external_traffic_policy = service.external_traffic_policy;
    out.internal_traffic_policy = service.internal_traffic_policy;
    out.session_affinity = service.session_affinity;
    out.session_affinity_timeout_s = service.session_affinity_timeout_s;
    out.load_balancer_source_ranges = service.load_balancer_source_ranges;

    auto claim = [&](const ServiceKey& frontend, FrontendKind kind, const std::string& field) {
      if (auto it = frontends.find(frontend); it != frontends.end())
        fail(label, field, fmt::format("{} is already served by {}", frontend.to_string(), it->second));
      frontends[frontend] = fmt::format("{} as its {}", label, to_string(kind));
    };
    for (const K8sService::Address& a : service.external_ips)
      if (node.cluster_cidr.contains(a.ip))
        fail(label, indexed("spec.externalIPs", a.index),
             fmt::format("{} is inside node.cluster_cidr {}", ipv4_to_string(a.ip), node.cluster_cidr.to_string()));
    for (const K8sService::Address& a : service.load_balancer_ips)
      if (node.cluster_cidr.contains(a.ip))
        fail(label, fmt::format("status.loadBalancer.ingress[{}].ip", a.index),
             fmt::format("{} is inside node.cluster_cidr {}", ipv4_to_string(a.ip), node.cluster_cidr.to_string()));

    for (size_t i = 0; i < service.ports.size(); ++i) {
      const K8sService::Port& port = service.ports[i];
      claim({service.cluster_ip, port.protocol, port.port}, FrontendKind::ClusterIP, service.cluster_ip_field);
      if (port.node_port != 0) {
        const std::string field = indexed("spec.ports", i) + ".nodePort";
        if (!base.nat.node_port_range.contains(port.node_port))
          fail(label, field,
               fmt::format("{} is outside nat.node_port_range {}", port.node_port, base.nat.node_port_range.to_string()));
        claim({node.node_ip, port.protocol, port.node_port}, FrontendKind::NodePort, field);
      }
      for (const K8sService::Address& a : service.external_ips)
        claim({a.ip, port.protocol, port.port}, FrontendKind::ExternalIP, indexed("spec.externalIPs", a.index));
      for (const K8sService::Address& a : service.load_balancer_ips)
        claim({a.ip, port.protocol, port.port}, FrontendKind::LoadBalancerIP,
              fmt::format("status.loadBalancer.ingress[{}].ip", a.index));
      out.ports.push_back({port.name, port.protocol, port.port, port.target_port, port.node_port});
    }
    for (const K8sService::Address& a : service.external_ips) out.external_ips.push_back(a.ip);
    for (const K8sService::Address& a : service.load_balancer_ips) out.load_balancer_ips.push_back(a.ip);

    // Endpoints: every slice's, each on the slice's port for each service
    // port (by name and protocol).
    if (auto it = slices_of.find(key); it != slices_of.end())
      out.endpoints = endpoints_from(service, it->second, node, [&](Ipv4 ip) {
        auto owner = cluster_ips.find(ip);
        return owner != cluster_ips.end() ? owner->second : std::string();
      });
    rendered.push_back(std::move(out));
  }
  return rendered;
}

Config with_k8s_services(const Config& base, const K8sState& state) {
  Config out = base;
  for (ServiceConfig& service : state.render(base)) out.services.push_back(std::move(service));
  return out;
}

json to_json(const std::vector<K8sChange>& changes) {
  json out = json::array();
  for (const K8sChange& c : changes) {
    json item = {{"object", c.object}, {"action", c.action}};
    if (!c.reason.empty()) item["reason"] = c.reason;
    out.push_back(std::move(item));
  }
  return out;
}

}  // namespace kdp
