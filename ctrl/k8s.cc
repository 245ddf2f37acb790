#include "ctrl/k8s.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

// The translation follows kube-proxy (pkg/proxy/servicechangetracker.go,
// endpointslicecache.go and the proxiers): what it skips, kdp skips.

namespace kdp {

using nlohmann::json;
using simdjson::dom::element;
using simdjson::dom::element_type;

namespace {

constexpr std::string_view kServiceNameLabel = "kubernetes.io/service-name";

std::string quote(std::string_view text) { return fmt::format("\"{}\"", text); }

// Where nlohmann's parser first fails on `text` ("parse error at line 3,
// column 7: syntax error ..."): simdjson's DOM says what, not where. Only a
// refused text gets here, and nothing is built on the way.
std::optional<std::string> syntax_error_location(std::string_view text) {
  struct Locator : nlohmann::json_sax<json> {
    std::optional<std::string> message;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
      std::string_view what = e.what();
      if (auto end = what.find("] "); what.starts_with("[json.exception.") && end != what.npos)
        what.remove_prefix(end + 2);  // "[json.exception.parse_error.101] "
      message = std::string(what);
      return false;
    }
  } locator;
  json::sax_parse(text, &locator);
  return locator.message;
}

}  // namespace

static_assert(K8sJsonParser::kPadding >= simdjson::SIMDJSON_PADDING);

struct K8sJsonParser::Impl {
  simdjson::dom::parser parser{};
  element root;
};

K8sJsonParser::K8sJsonParser() : impl_(std::make_unique<Impl>()) {
  // The depth is fixed here; the capacity grows with the largest text.
  if (impl_->parser.allocate(0, kMaxDepth) != simdjson::SUCCESS) throw std::bad_alloc();
}

K8sJsonParser::~K8sJsonParser() = default;

const element& K8sJsonParser::parse(const std::string& text, std::string_view what) {
  const simdjson::error_code error = impl_->parser.parse(text).get(impl_->root);
  if (error == simdjson::SUCCESS) return impl_->root;
  if (error == simdjson::DEPTH_ERROR)
    throw K8sError(fmt::format("{}: nested deeper than {} levels", what, kMaxDepth));
  if (error == simdjson::MEMALLOC) throw std::bad_alloc();
  const std::string problem = syntax_error_location(text).value_or(simdjson::error_message(error));
  throw K8sError(fmt::format("{}: not valid JSON: {}", what, problem));
}

namespace {

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
// field ("Service default/web: spec.ports[1].port: ..."). Values are
// simdjson DOM elements: handles into the parser's tape, copied freely.
class Fields {
 public:
  explicit Fields(std::string object) : object_(std::move(object)) {}
  const std::string& object() const { return object_; }

  [[noreturn]] void fail(const FieldName& field, std::string_view problem) const {
    throw K8sError(fmt::format("{}: {}: {}", object_, field.str(), problem));
  }

  // The member `key` of `parent`; nullopt when absent or null (the API
  // server's "unset").
  static std::optional<element> find(const element& parent, std::string_view key) {
    simdjson::dom::object members;
    element value;
    if (parent.get_object().get(members) != simdjson::SUCCESS || members.at_key(key).get(value) != simdjson::SUCCESS ||
        value.is_null())
      return std::nullopt;
    return value;
  }

  std::optional<element> object(const element& parent, std::string_view key, const FieldName& field) const {
    auto value = find(parent, key);
    if (value && !value->is_object()) fail(field, "must be an object");
    return value;
  }

  std::optional<simdjson::dom::array> array(const element& parent, std::string_view key, const FieldName& field) const {
    auto value = find(parent, key);
    if (!value) return std::nullopt;
    simdjson::dom::array items;
    if (value->get_array().get(items) != simdjson::SUCCESS) fail(field, "must be an array");
    return items;
  }

  // A string value (viewing the parser's buffer: valid until its next parse).
  std::string_view text(const element& value, const FieldName& field) const {
    std::string_view out;
    if (value.get_string().get(out) != simdjson::SUCCESS) fail(field, "must be a string");
    return out;
  }

  std::optional<std::string_view> string(const element& parent, std::string_view key, const FieldName& field) const {
    auto value = find(parent, key);
    if (!value) return std::nullopt;
    return text(*value, field);
  }

  std::optional<bool> boolean(const element& parent, std::string_view key, const FieldName& field) const {
    auto value = find(parent, key);
    if (!value) return std::nullopt;
    bool out = false;
    if (value->get_bool().get(out) != simdjson::SUCCESS) fail(field, "must be true or false");
    return out;
  }

  static bool is_integer(const element& value) {
    return value.type() == element_type::INT64 || value.type() == element_type::UINT64;
  }

  std::optional<int64_t> integer(const element& parent, std::string_view key, const FieldName& field, int64_t min,
                                 int64_t max) const {
    auto value = find(parent, key);
    if (!value) return std::nullopt;
    if (!is_integer(*value)) fail(field, "must be an integer");
    int64_t number = 0;
    if (value->get_int64().get(number) != simdjson::SUCCESS || number < min || number > max) {
      // Past INT64_MAX only as an unsigned number: shown as written.
      const std::string written = value->type() == element_type::UINT64
                                      ? std::to_string(value->get_uint64().value_unsafe())
                                      : std::to_string(number);
      fail(field, fmt::format("must be between {} and {}, got {}", min, max, written));
    }
    return number;
  }

  // An IPv4 address; nullopt for an IPv6 one, which kdp ignores.
  std::optional<Ipv4> address(std::string_view text, const FieldName& field) const {
    if (text.find(':') != std::string_view::npos) return std::nullopt;
    auto ip = parse_ipv4(text);
    if (!ip) fail(field, fmt::format("not an IP address: {}", quote(text)));
    if (auto problem = unicast_address_problem(*ip)) fail(field, *problem);
    return ip;
  }

  L4Proto protocol(const element& parent, const FieldName& field) const {
    const std::string_view text = string(parent, "protocol", field).value_or("TCP");
    if (text == "TCP") return L4Proto::Tcp;
    if (text == "UDP") return L4Proto::Udp;
    if (text == "SCTP") return L4Proto::Sctp;
    fail(field, fmt::format("unsupported {}", quote(text)));
  }

  template <typename Enum, size_t N>
  Enum choice(const element& parent, std::string_view key, const FieldName& field,
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

K8sService read_service(const element& object, const Fields& f) {
  K8sService service;
  const auto spec = f.object(object, "spec", "spec");
  if (!spec) f.fail("spec", "required field is missing");

  const std::string_view type = f.string(*spec, "type", "spec.type").value_or("ClusterIP");
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
  std::vector<std::pair<std::string_view, std::string>> candidates;  // text, field
  if (cluster_ip && !cluster_ip->empty()) candidates.emplace_back(*cluster_ip, "spec.clusterIP");
  if (const auto ips = f.array(*spec, "clusterIPs", "spec.clusterIPs")) {
    size_t k = 0;
    for (const element ip : *ips) {
      std::string field = indexed("spec.clusterIPs", k++);
      candidates.emplace_back(f.text(ip, field), std::move(field));
    }
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

  if (const auto ports = f.array(*spec, "ports", "spec.ports")) {
    size_t i = 0;
    for (const element item : *ports) {
      const FieldName at("spec.ports", i++);
      if (!item.is_object()) f.fail(at, "must be an object");
      K8sService::Port port;
      port.name = f.string(item, "name", at + ".name").value_or("");
      port.protocol = f.protocol(item, at + ".protocol");
      auto number = f.integer(item, "port", at + ".port", 1, 65535);
      if (!number) f.fail(at + ".port", "required field is missing");
      port.port = static_cast<uint16_t>(*number);
      port.node_port = static_cast<uint16_t>(f.integer(item, "nodePort", at + ".nodePort", 0, 65535).value_or(0));
      if (const auto target = Fields::find(item, "targetPort")) {
        std::string_view name;
        if (Fields::is_integer(*target)) {
          port.target_port = static_cast<uint16_t>(*f.integer(item, "targetPort", at + ".targetPort", 1, 65535));
        } else if (target->get_string().get(name) == simdjson::SUCCESS && !name.empty()) {
          port.target_port_name = name;
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

  auto add_address = [&](std::vector<K8sService::Address>& list, std::string_view text, const FieldName& field,
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
  if (const auto ips = f.array(*spec, "externalIPs", "spec.externalIPs")) {
    size_t k = 0;
    for (const element ip : *ips) {
      const FieldName at("spec.externalIPs", k);
      add_address(service.external_ips, f.text(ip, at), at, k);
      ++k;
    }
  }
  if (service.type == ServiceType::LoadBalancer)
    if (const auto status = f.object(object, "status", "status"))
      if (const auto lb = f.object(*status, "loadBalancer", "status.loadBalancer"))
        if (const auto ingress = f.array(*lb, "ingress", "status.loadBalancer.ingress")) {
          size_t k = 0;
          for (const element item : *ingress) {
            const FieldName at("status.loadBalancer.ingress", k);
            if (!item.is_object()) f.fail(at, "must be an object");
            auto ip = f.string(item, "ip", at + ".ip");
            // A hostname only, or ipMode Proxy: the load balancer proxies, its
            // traffic arrives for the node (KEP-1860).
            if (ip && !ip->empty() && f.string(item, "ipMode", at + ".ipMode") != "Proxy")
              add_address(service.load_balancer_ips, *ip, at + ".ip", k);
            ++k;
          }
        }
  if (const auto ranges = f.array(*spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges")) {
    size_t k = 0;
    for (const element range : *ranges) {
      const FieldName at("spec.loadBalancerSourceRanges", k++);
      std::string_view text = f.text(range, at);
      // As kube-proxy: surrounding spaces are trimmed, host bits masked.
      text.remove_prefix(std::min(text.find_first_not_of(' '), text.size()));
      text.remove_suffix(text.size() - (text.find_last_not_of(' ') + 1));
      if (text.find(':') != std::string_view::npos) continue;
      auto prefix = parse_ipv4_prefix(text, /*strict=*/false);
      if (!prefix) f.fail(at, fmt::format("not a CIDR: {}", quote(text)));
      if (std::find(service.load_balancer_source_ranges.begin(), service.load_balancer_source_ranges.end(),
                    *prefix) == service.load_balancer_source_ranges.end())
        service.load_balancer_source_ranges.push_back(*prefix);
    }
  }

  service.external_traffic_policy =
      f.choice(*spec, "externalTrafficPolicy", "spec.externalTrafficPolicy", kPolicies, TrafficPolicy::Cluster);
  service.internal_traffic_policy =
      f.choice(*spec, "internalTrafficPolicy", "spec.internalTrafficPolicy", kPolicies, TrafficPolicy::Cluster);
  service.session_affinity =
      f.choice(*spec, "sessionAffinity", "spec.sessionAffinity",
               {{"None", SessionAffinity::None}, {"ClientIP", SessionAffinity::ClientIP}}, SessionAffinity::None);
  if (const auto config = f.object(*spec, "sessionAffinityConfig", "spec.sessionAffinityConfig"))
    if (const auto client = f.object(*config, "clientIP", "spec.sessionAffinityConfig.clientIP"))
      if (auto timeout = f.integer(*client, "timeoutSeconds", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1,
                                   86400))
        service.session_affinity_timeout_s = static_cast<uint32_t>(*timeout);
  return service;
}

K8sEndpointSlice read_endpoint_slice(const element& object, const Fields& f) {
  K8sEndpointSlice slice;
  auto type = f.string(object, "addressType", "addressType");
  if (!type) f.fail("addressType", "required field is missing");
  slice.address_type = *type;
  if (const auto metadata = f.object(object, "metadata", "metadata"))
    if (const auto labels = f.object(*metadata, "labels", "metadata.labels"))
      slice.service =
          f.string(*labels, kServiceNameLabel, fmt::format("metadata.labels[\"{}\"]", kServiceNameLabel)).value_or("");
  if (slice.address_type != "IPv4") return slice;  // kept, never used: its addresses are not read

  if (const auto ports = f.array(object, "ports", "ports")) {
    size_t i = 0;
    for (const element item : *ports) {
      const FieldName at("ports", i++);
      if (!item.is_object()) f.fail(at, "must be an object");
      K8sEndpointSlice::Port port;
      port.name = f.string(item, "name", at + ".name").value_or("");
      port.protocol = f.protocol(item, at + ".protocol");
      auto number = f.integer(item, "port", at + ".port", 1, 65535);
      if (!number) continue;  // "all ports": kube-proxy has no use for it either
      port.port = static_cast<uint16_t>(*number);
      slice.ports.push_back(std::move(port));
    }
  }
  if (const auto endpoints = f.array(object, "endpoints", "endpoints")) {
    // The API server keeps a slice to 1,000 endpoints; a larger array is read,
    // not trusted for an allocation.
    slice.endpoints.reserve(std::min<size_t>(endpoints->size(), 1000));
    size_t j = 0;
    for (const element item : *endpoints) {
      const FieldName at("endpoints", j);
      if (!item.is_object()) f.fail(at, "must be an object");
      K8sEndpointSlice::Endpoint endpoint;
      endpoint.index = j++;
      const auto addresses = f.array(item, "addresses", at + ".addresses");
      if (!addresses || addresses->begin() == addresses->end())
        f.fail(at + ".addresses", "must list at least one address");
      // kube-proxy uses the first address only.
      const std::string_view text = f.text(*addresses->begin(), at + ".addresses[0]");
      auto ip = f.address(text, at + ".addresses[0]");
      if (!ip) f.fail(at + ".addresses[0]", fmt::format("not an IPv4 address in an IPv4 slice: {}", quote(text)));
      endpoint.ip = *ip;
      endpoint.node = f.string(item, "nodeName", at + ".nodeName").value_or("");
      if (const auto conditions = f.object(item, "conditions", at + ".conditions")) {
        endpoint.ready = f.boolean(*conditions, "ready", at + ".conditions.ready").value_or(true);
        endpoint.serving = f.boolean(*conditions, "serving", at + ".conditions.serving").value_or(endpoint.ready);
        endpoint.terminating = f.boolean(*conditions, "terminating", at + ".conditions.terminating").value_or(false);
      }
      slice.endpoints.push_back(std::move(endpoint));
    }
  }
  return slice;
}

// Who an object is: its kind, apiVersion and namespace/name.
struct Identity {
  std::string_view kind, api_version;
  std::string ns, name;
  std::string key() const { return ns + "/" + name; }
  std::string label() const { return fmt::format("{} {}", kind, key()); }
};

Identity identify(const element& object, std::string_view default_kind, std::string_view where) {
  if (!object.is_object()) throw K8sError(fmt::format("{}: must be a JSON object", where));
  Fields anonymous{std::string(where)};
  Identity id;
  const std::string_view kind = anonymous.string(object, "kind", "kind").value_or(default_kind);
  if (kind.empty()) anonymous.fail("kind", "required field is missing");
  if (kind == "Service") {
    id.kind = "Service";
    id.api_version = "v1";
  } else if (kind == "EndpointSlice") {
    id.kind = "EndpointSlice";
    id.api_version = "discovery.k8s.io/v1";
  } else {
    anonymous.fail("kind", fmt::format("unsupported {} (kdp reads Service and EndpointSlice objects, and Lists of them)",
                                       quote(kind)));
  }
  Fields kinded{fmt::format("{} {}", id.kind, where)};
  const auto metadata = kinded.object(object, "metadata", "metadata");
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

// The kind of a List ("List", "ServiceList", ...); nullopt for anything else.
std::optional<std::string_view> list_kind(const element& value) {
  std::string_view kind;
  if (auto found = Fields::find(value, "kind"); found && found->get_string().get(kind) == simdjson::SUCCESS &&
                                                kind.ends_with("List"))
    return kind;
  return std::nullopt;
}

}  // namespace

K8sChange K8sState::apply_object(const element& object, std::string_view default_kind, std::string_view where) {
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

std::vector<K8sChange> K8sState::apply(const element& document) {
  // Lists and arrays hold objects, or Lists and arrays of them; a bound on
  // the nesting keeps this walk's recursion short whatever the input.
  constexpr size_t kMaxNesting = 16;
  K8sState next = *this;
  std::vector<K8sChange> changes;
  auto visit = [&](auto& self, const element& value, const std::string& where, std::string_view default_kind,
                   size_t depth) -> void {
    const std::optional<std::string_view> kind = list_kind(value);
    if ((value.is_array() || kind) && depth == kMaxNesting)
      throw K8sError(fmt::format("{}: Lists and arrays nested more than {} deep", where, kMaxNesting));
    if (simdjson::dom::array items; value.get_array().get(items) == simdjson::SUCCESS) {
      size_t i = 0;
      for (const element item : items) self(self, item, indexed(where, i++), default_kind, depth + 1);
      return;
    }
    if (kind) {
      const auto items = Fields::find(value, "items");
      if (items && !items->is_array()) throw K8sError(fmt::format("{} {}: items: must be an array", *kind, where));
      std::string_view item_kind = *kind == "ServiceList"         ? "Service"
                                   : *kind == "EndpointSliceList" ? "EndpointSlice"
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

K8sChange K8sState::apply_event(const element& event) {
  if (!event.is_object()) throw K8sError("watch event: must be a JSON object {\"type\": ..., \"object\": {...}}");
  Fields f("watch event");
  const std::string_view type = f.string(event, "type", "type").value_or("");
  const auto object = f.object(event, "object", "object");
  if (!object) f.fail("object", "required field is missing");
  if (type == "ADDED" || type == "MODIFIED") {
    if (list_kind(*object)) f.fail("object", "must be a single object, not a List");
    return apply_object(*object, "", "object");  // reads the whole object before it changes anything
  }
  if (type == "DELETED") {
    const Identity id = identify(*object, "", "object");
    return id.kind == "Service" ? delete_service(id.key()) : deletion(id.label(), slices_.erase(id.key()) != 0);
  }
  f.fail("type", fmt::format("must be \"ADDED\", \"MODIFIED\" or \"DELETED\", got {}", quote(type)));
}

K8sChange K8sState::delete_service(const std::string& key) {
  return deletion(fmt::format("Service {}", key), services_.erase(key) != 0);
}

K8sChange K8sState::deletion(std::string label, bool erased) {
  return {std::move(label), erased ? "deleted" : "absent", erased ? "" : "was not known"};
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

std::optional<std::string> K8sState::slice_event_target(const element& event) {
  const auto object = Fields::find(event, "object");
  if (!object || !object->is_object() || list_kind(*object)) return std::nullopt;
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
