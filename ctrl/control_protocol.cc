#include "ctrl/control_protocol.h"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>

namespace kdp::control {

using nlohmann::json;

namespace {

enum class ArgType { String, Bool, Limit, Ipv4Address, Ipv4Prefix, ServiceName, K8sObjects, Object, WatchEventType,
                     PodName, InterfaceName, Ipv4AddressOrPrefix, UnicastMac };

struct ArgSpec {
  std::string_view name;
  ArgType type;
  bool required = false;
  bool payload = false;  // may come as raw bytes after the line (Request::payload)
};

struct VerbSpec {
  std::string_view verb;
  std::initializer_list<ArgSpec> args;
  bool changes_state = false;
};

// Linux interface names: IFNAMSIZ - 1 characters.
constexpr size_t kMaxInterfaceName = 15;

const VerbSpec kVerbs[] = {
    {"pod.add",
     {{"name", ArgType::PodName, true},
      {"iface", ArgType::InterfaceName, true},
      {"ip", ArgType::Ipv4AddressOrPrefix, true},
      {"mac", ArgType::UnicastMac},
      {"dry_run", ArgType::Bool}}, true},
    {"pod.del", {{"name", ArgType::PodName, true}, {"dry_run", ArgType::Bool}}, true},
    {"pod.list", {}},
    {"stats", {}},
    {"port.list", {}},
    {"route.list", {}},
    {"neighbor.list", {}},
    {"fdb.list", {}},
    {"service.list", {}},
    {"service.get", {{"service", ArgType::ServiceName, true}}},
    {"service.del", {{"service", ArgType::ServiceName, true}, {"dry_run", ArgType::Bool}}, true},
    {"route.add",
     {{"prefix", ArgType::Ipv4Prefix, true},
      {"via", ArgType::Ipv4Address, true},
      {"port", ArgType::String},
      {"dry_run", ArgType::Bool}}, true},
    {"route.del", {{"prefix", ArgType::Ipv4Prefix, true}, {"dry_run", ArgType::Bool}}, true},
    {"snat.list", {{"limit", ArgType::Limit}}},
    {"conntrack.count", {}},
    {"conntrack.list", {{"limit", ArgType::Limit}, {"dst", ArgType::Ipv4Address}, {"service", ArgType::ServiceName}}},
    {"conntrack.flush", {{"dst", ArgType::Ipv4Address}, {"service", ArgType::ServiceName}}},
    // apply: exactly one of toml and k8s (checked once the request is whole: check_complete).
    {"apply",
     {{"toml", ArgType::String, false, true},
      {"k8s", ArgType::K8sObjects, false, true},
      {"source", ArgType::String},
      {"dry_run", ArgType::Bool}}, true},
    {"watch.event",
     {{"type", ArgType::WatchEventType, true}, {"object", ArgType::Object, true}, {"dry_run", ArgType::Bool}}, true},
    {"endpoint.add",
     {{"service", ArgType::ServiceName, true},
      {"ip", ArgType::Ipv4Address, true},
      {"node", ArgType::String},
      {"ready", ArgType::Bool},
      {"serving", ArgType::Bool},
      {"terminating", ArgType::Bool},
      {"dry_run", ArgType::Bool}}, true},
    {"endpoint.del",
     {{"service", ArgType::ServiceName, true}, {"ip", ArgType::Ipv4Address, true}, {"dry_run", ArgType::Bool}}, true},
};

const VerbSpec* find_verb(std::string_view verb) {
  for (const VerbSpec& spec : kVerbs)
    if (spec.verb == verb) return &spec;
  return nullptr;
}

[[noreturn]] void fail(std::string message) { throw ProtocolError(std::move(message)); }

bool is_namespaced_name(const std::string& name) {
  const size_t slash = name.find('/');
  return slash != std::string::npos && slash != 0 && slash + 1 != name.size() &&
         name.find('/', slash + 1) == std::string::npos;
}

// "a.b.c.d" or "a.b.c.d/len" (host bits allowed: it is an address).
struct AddressWithLength {
  Ipv4 ip = 0;
  int len = -1;  // -1: no "/len"
};
std::optional<AddressWithLength> parse_address_with_length(const std::string& text) {
  const size_t slash = text.find('/');
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip) return std::nullopt;
  if (slash == std::string::npos) return AddressWithLength{*ip, -1};
  auto prefix = parse_ipv4_prefix(text, /*strict=*/false);
  if (!prefix) return std::nullopt;
  return AddressWithLength{*ip, prefix->len};
}

void check_arg(std::string_view verb, const ArgSpec& spec, const json& value) {
  auto wrong = [&](std::string_view what) { fail(fmt::format("{}: args.{}: must be {}", verb, spec.name, what)); };
  switch (spec.type) {
    case ArgType::String:
      if (!value.is_string()) wrong("a string");
      break;
    case ArgType::Bool:
      if (!value.is_boolean()) wrong("true or false");
      break;
    case ArgType::Limit:
      if (!value.is_number_integer() || value.get<int64_t>() < 1 ||
          value.get<int64_t>() > static_cast<int64_t>(kMaxConntrackListLimit))
        wrong(fmt::format("an integer between 1 and {}", kMaxConntrackListLimit));
      break;
    case ArgType::Ipv4Address:
      if (!value.is_string() || !parse_ipv4(value.get<std::string>())) wrong("an IPv4 address (\"a.b.c.d\")");
      break;
    case ArgType::Ipv4Prefix:
      if (!value.is_string() || !parse_ipv4_prefix(value.get<std::string>())) wrong("an IPv4 prefix (\"a.b.c.d/len\")");
      break;
    case ArgType::ServiceName: {
      if (!value.is_string()) wrong("a service name (\"namespace/name\")");
      const std::string& name = value.get_ref<const std::string&>();
      size_t slash = name.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == name.size() ||
          name.find('/', slash + 1) != std::string::npos)
        wrong(fmt::format("a service name (\"namespace/name\"), got \"{}\"", name));
      break;
    }
    case ArgType::PodName:
      if (!value.is_string()) wrong("a pod name (\"namespace/pod\")");
      if (!is_namespaced_name(value.get_ref<const std::string&>()))
        wrong(fmt::format("a pod name (\"namespace/pod\"), got \"{}\"", value.get_ref<const std::string&>()));
      break;
    case ArgType::InterfaceName: {
      if (!value.is_string()) wrong("an interface name");
      const std::string& name = value.get_ref<const std::string&>();
      // It goes into a device string ("net_af_packet...,iface=NAME"): no
      // separators, so it can never add device arguments of its own.
      const bool bad_char = std::any_of(name.begin(), name.end(), [](char c) {
        return c == '/' || c == ',' || c == '=' || c == ':' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
      });
      if (name.empty() || name.size() > kMaxInterfaceName || bad_char || name == "." || name == "..")
        wrong(fmt::format("an interface name (1 to {} characters, none of \"/,=:\" or white space), got \"{}\"",
                          kMaxInterfaceName, name));
      break;
    }
    case ArgType::Ipv4AddressOrPrefix:
      if (!value.is_string() || !parse_address_with_length(value.get<std::string>()))
        wrong("an IPv4 address (\"a.b.c.d\" or \"a.b.c.d/len\")");
      break;
    case ArgType::UnicastMac: {
      if (!value.is_string()) wrong("a MAC address (\"xx:xx:xx:xx:xx:xx\")");
      auto mac = parse_mac(value.get<std::string>());
      if (!mac) wrong(fmt::format("a MAC address (\"xx:xx:xx:xx:xx:xx\"), got \"{}\"", value.get<std::string>()));
      if (mac->is_multicast() || mac->is_zero())
        wrong(fmt::format("a unicast MAC address, got {}", value.get<std::string>()));
      break;
    }
    case ArgType::K8sObjects:
      if (!value.is_object() && !value.is_array()) wrong("a Kubernetes object, a List or an array of objects");
      break;
    case ArgType::Object:
      if (!value.is_object()) wrong("a JSON object");
      break;
    case ArgType::WatchEventType:
      if (!value.is_string() || (value != "ADDED" && value != "MODIFIED" && value != "DELETED"))
        wrong("\"ADDED\", \"MODIFIED\" or \"DELETED\"");
      break;
  }
}

template <typename T>
T arg_or(const Request& request, const char* name, T fallback) {
  auto it = request.args.find(name);
  return it == request.args.end() ? fallback : it->get<T>();
}

}  // namespace

bool is_known_verb(std::string_view verb) { return find_verb(verb) != nullptr; }

bool changes_state(std::string_view verb) {
  const VerbSpec* spec = find_verb(verb);
  return spec != nullptr && spec->changes_state;
}

namespace {

// The DOM of a JSON text in one pass, refusing it past a nesting depth (as
// nlohmann's own SAX DOM builder does, plus the bound; a parser callback
// would make the parse of a large document 2.5x slower).
class BoundedDomBuilder {
 public:
  BoundedDomBuilder(json& root, int max_depth) : root_(root), max_depth_(max_depth) {}
  bool null() { return put(nullptr); }
  bool boolean(bool v) { return put(v); }
  bool number_integer(json::number_integer_t v) { return put(v); }
  bool number_unsigned(json::number_unsigned_t v) { return put(v); }
  bool number_float(json::number_float_t v, const std::string&) { return put(v); }
  bool string(std::string& v) { return put(std::move(v)); }
  bool binary(json::binary_t& v) { return put(json::binary(std::move(v))); }
  bool key(std::string& k) {
    member_ = &(*stack_.back())[std::move(k)];
    return true;
  }
  bool start_object(std::size_t) { return open(json::value_t::object); }
  bool start_array(std::size_t) { return open(json::value_t::array); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t, const std::string&, const json::exception&) { return false; }
  bool exceeded() const { return exceeded_; }

 private:
  template <typename V>
  json* place(V&& value) {
    if (stack_.empty()) {
      root_ = json(std::forward<V>(value));
      return &root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.emplace_back(std::forward<V>(value));
      return &top.back();
    }
    *member_ = json(std::forward<V>(value));
    return member_;
  }
  template <typename V>
  bool put(V&& value) {
    place(std::forward<V>(value));
    return true;
  }
  bool open(json::value_t type) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      exceeded_ = true;
      return false;
    }
    stack_.push_back(place(type));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  json& root_;
  int max_depth_;
  std::vector<json*> stack_;
  json* member_ = nullptr;
  bool exceeded_ = false;
};

// A JSON text's DOM, refused past `max_depth` levels: `what` names it in errors.
json parse_bounded(std::string_view text, int max_depth, std::string_view what) {
  json doc;
  BoundedDomBuilder builder(doc, max_depth);
  const bool parsed = json::sax_parse(text.begin(), text.end(), &builder);
  if (builder.exceeded()) fail(fmt::format("{} nested deeper than {} levels", what, max_depth));
  if (!parsed) fail(fmt::format("{} is not valid JSON", what));
  return doc;
}

const ArgSpec* find_arg(const VerbSpec& spec, std::string_view name) {
  auto arg = std::find_if(spec.args.begin(), spec.args.end(), [&](const ArgSpec& a) { return a.name == name; });
  return arg == spec.args.end() ? nullptr : &*arg;
}

// An argument given in the line, or as a payload left as JSON text.
bool has_arg(const Request& request, std::string_view name) {
  return request.args.contains(name) || (request.json_payload && request.json_payload->first == name);
}

// What only a whole request can be checked for (after its payload, if any).
void check_complete(const Request& request, const VerbSpec& spec) {
  for (const ArgSpec& arg : spec.args)
    if (arg.required && !has_arg(request, arg.name))
      fail(fmt::format("{}: args.{}: required argument is missing", request.verb, arg.name));
  if (request.verb == "apply" && has_arg(request, "toml") == has_arg(request, "k8s"))
    fail("apply: args: exactly one of toml and k8s is required");
}

Payload parse_payload(const Request& request, const VerbSpec& spec, const json& value, size_t line_bytes) {
  auto wrong = [&](std::string_view what) { fail(fmt::format("{}: payload: {}", request.verb, what)); };
  if (!value.is_object() || value.size() != 2 || !value.contains("arg") || !value.contains("bytes"))
    wrong("must be {\"arg\": NAME, \"bytes\": COUNT}");
  const json& arg = value["arg"];
  const json& bytes = value["bytes"];
  if (!arg.is_string()) wrong("arg must be a string");
  const ArgSpec* spec_arg = find_arg(spec, arg.get<std::string>());
  if (spec_arg == nullptr || !spec_arg->payload)
    wrong(fmt::format("arg \"{}\" cannot come as a payload", arg.get<std::string>()));
  if (request.args.contains(std::string(spec_arg->name)))
    wrong(fmt::format("args.{} is given in the line too", spec_arg->name));
  if (!bytes.is_number_unsigned()) wrong("bytes must be a non-negative integer");
  // The line, its newline and the payload: at most one request's worth.
  if (bytes.get<uint64_t>() > kMaxRequestBytes - line_bytes - 1)
    wrong(fmt::format("request larger than {} bytes", kMaxRequestBytes));
  return {std::string(spec_arg->name), static_cast<size_t>(bytes.get<uint64_t>())};
}

Request parse_checked(json&& doc, size_t line_bytes) {
  for (const auto& [key, value] : doc.items())
    if (key != "verb" && key != "args" && key != "payload") fail(fmt::format("request: unknown key \"{}\"", key));
  auto verb_it = doc.find("verb");
  if (verb_it == doc.end() || !verb_it->is_string()) fail("request: \"verb\" must be a string");
  Request request;
  request.verb = verb_it->get<std::string>();
  const VerbSpec* spec = find_verb(request.verb);
  if (spec == nullptr) fail(fmt::format("unknown verb \"{}\"", request.verb));
  if (auto args_it = doc.find("args"); args_it != doc.end()) {
    if (!args_it->is_object()) fail(fmt::format("{}: args must be an object", request.verb));
    request.args = std::move(*args_it);
  }
  for (const auto& item : request.args.items()) {
    const ArgSpec* arg = find_arg(*spec, item.key());
    if (arg == nullptr) fail(fmt::format("{}: args.{}: unknown argument", request.verb, item.key()));
    check_arg(request.verb, *arg, item.value());
  }
  if (auto payload = doc.find("payload"); payload != doc.end())
    request.payload = parse_payload(request, *spec, *payload, line_bytes);
  else
    check_complete(request, *spec);
  return request;
}

}  // namespace

Request parse_request(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (line.size() >= kMaxRequestBytes) fail(fmt::format("request larger than {} bytes", kMaxRequestBytes));
  // Copying, printing and walking a JSON value recurse once per level: a line
  // of brackets alone would run the stack out. Refused while parsing, which
  // does not recurse; a refused request keeps nothing.
  json doc = parse_bounded(line, kMaxRequestDepth, "request");
  if (!doc.is_object()) fail("request must be a JSON object {\"verb\": ..., \"args\": {...}}");
  if (doc.contains("payload")) {
    try {
      return parse_checked(std::move(doc), line.size());
    } catch (const ProtocolError& e) {
      throw PayloadRequestError(e.what());
    }
  }
  return parse_checked(std::move(doc), line.size());
}

void attach_payload(Request& request, std::string&& bytes) {
  if (!request.payload || bytes.size() != request.payload->bytes)
    throw std::logic_error("attach_payload: not the request's payload");
  const VerbSpec& spec = *find_verb(request.verb);
  const ArgSpec& arg = *find_arg(spec, request.payload->arg);
  Request whole{request.verb, request.args, std::nullopt, std::nullopt};
  if (arg.type == ArgType::String) {
    json& value = whole.args[std::string(arg.name)] = std::move(bytes);
    check_arg(request.verb, arg, value);
  } else {
    // Parsed once, by its reader: a DOM built here would be a second one.
    whole.json_payload.emplace(arg.name, std::move(bytes));
  }
  check_complete(whole, spec);
  request = std::move(whole);
}

std::string ok_line(const json& result) {
  // {"ok":true,"result":...} as nlohmann prints it, without first copying a
  // result of megabytes into the reply object.
  return R"({"ok":true,"result":)" + result.dump(-1, ' ', false, json::error_handler_t::replace) + "}\n";
}

std::string error_line(std::string_view message) {
  json reply = {{"ok", false}, {"error", message}};
  return reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string request_line(std::string_view verb, const json& args) {
  json request = {{"verb", verb}, {"args", args}};
  return request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string request_line_with_payload(std::string_view verb, const json& args, std::string_view arg, size_t bytes) {
  json request = {{"verb", verb}, {"args", args}, {"payload", {{"arg", arg}, {"bytes", bytes}}}};
  return request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

size_t list_limit(const Request& request) {
  return static_cast<size_t>(arg_or<int64_t>(request, "limit", kDefaultConntrackListLimit));
}

ConntrackFilter conntrack_filter(const Request& request) {
  ConntrackFilter out;
  if (auto it = request.args.find("dst"); it != request.args.end()) out.dst = parse_ipv4(it->get<std::string>());
  if (auto it = request.args.find("service"); it != request.args.end()) out.service = it->get<std::string>();
  return out;
}

ConntrackListArgs conntrack_list_args(const Request& request) { return {list_limit(request), conntrack_filter(request)}; }

ConntrackFlushArgs conntrack_flush_args(const Request& request) { return conntrack_filter(request); }

ServiceArgs service_args(const Request& request) {
  return {request.args.at("service").get<std::string>(), arg_or<bool>(request, "dry_run", false)};
}

RouteArgs route_args(const Request& request) {
  RouteArgs out;
  out.route.prefix = *parse_ipv4_prefix(request.args.at("prefix").get<std::string>());
  if (auto it = request.args.find("via"); it != request.args.end()) out.route.via = *parse_ipv4(it->get<std::string>());
  out.route.port = arg_or<std::string>(request, "port", "");
  out.dry_run = arg_or<bool>(request, "dry_run", false);
  return out;
}

ApplyArgs apply_args(Request&& request) {
  ApplyArgs out;
  if (request.json_payload && request.json_payload->first == "k8s")
    out.k8s = std::move(request.json_payload->second);
  else if (auto it = request.args.find("k8s"); it != request.args.end())
    out.k8s = it->dump(-1, ' ', false, json::error_handler_t::replace);
  else
    out.toml = std::move(request.args.at("toml").get_ref<std::string&>());
  out.source = arg_or<std::string>(request, "source", out.source);
  if (out.source.empty()) out.source = "apply";
  out.dry_run = arg_or<bool>(request, "dry_run", false);
  return out;
}

WatchEventArgs watch_event_args(const Request& request) {
  const json event = {{"type", request.args.at("type")}, {"object", request.args.at("object")}};
  return {event.dump(-1, ' ', false, json::error_handler_t::replace), arg_or<bool>(request, "dry_run", false)};
}

EndpointArgs endpoint_args(const Request& request) {
  EndpointArgs out;
  out.service = request.args.at("service").get<std::string>();
  out.endpoint.ip = *parse_ipv4(request.args.at("ip").get<std::string>());
  out.endpoint.node = arg_or<std::string>(request, "node", "");
  out.endpoint.ready = arg_or<bool>(request, "ready", true);
  // As in the config file: serving defaults to ready.
  out.endpoint.serving = arg_or<bool>(request, "serving", out.endpoint.ready);
  out.endpoint.terminating = arg_or<bool>(request, "terminating", false);
  out.dry_run = arg_or<bool>(request, "dry_run", false);
  return out;
}

PodAddArgs pod_add_args(const Request& request) {
  PodAddArgs out;
  out.name = request.args.at("name").get<std::string>();
  out.iface = request.args.at("iface").get<std::string>();
  const auto address = parse_address_with_length(request.args.at("ip").get<std::string>());
  out.ip = address->ip;
  if (address->len >= 0) out.prefix_len = static_cast<uint8_t>(address->len);
  if (auto it = request.args.find("mac"); it != request.args.end()) out.mac = parse_mac(it->get<std::string>());
  out.dry_run = arg_or<bool>(request, "dry_run", false);
  return out;
}

PodDelArgs pod_del_args(const Request& request) {
  return {request.args.at("name").get<std::string>(), arg_or<bool>(request, "dry_run", false)};
}

std::optional<std::string> LineReader::next_line() {
  if (overflowed_) return std::nullopt;
  size_t newline = buffer_.find('\n', scanned_);
  if (newline == std::string::npos) {
    scanned_ = buffer_.size();
    if (buffer_.size() >= max_) overflowed_ = true;
    return std::nullopt;
  }
  if (newline + 1 > max_) {
    overflowed_ = true;
    return std::nullopt;
  }
  std::string line = buffer_.substr(0, newline);
  buffer_.erase(0, newline + 1);
  scanned_ = 0;
  return line;
}

std::optional<std::string> LineReader::next_bytes(size_t n) {
  if (overflowed_ || buffer_.size() < n) return std::nullopt;
  std::string bytes;
  if (buffer_.size() == n) {
    bytes.swap(buffer_);  // the usual case: a payload is the last thing sent
  } else {
    bytes = buffer_.substr(0, n);
    buffer_.erase(0, n);
  }
  scanned_ = 0;
  return bytes;
}

// ---- Prometheus ---------------------------------------------------------------

namespace {

std::string label_value(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

class Exposition {
 public:
  // Starts a metric family (once) and adds one sample.
  void sample(const std::string& name, std::string_view type, std::string_view help, const std::string& labels,
              const json& value) {
    if (!value.is_number()) return;
    declare(name, type, help);
    std::string number = value.is_number_float() ? fmt::format("{}", value.get<double>()) : value.dump();
    out_ += labels.empty() ? fmt::format("{} {}\n", name, number) : fmt::format("{}{{{}}} {}\n", name, labels, number);
  }
  // A histogram family from {"count", "sum", "buckets": [[le, cumulative count], ...]}.
  // labels: "" or `name="value",...` for one series of the family.
  void histogram(const std::string& name, std::string_view help, const json& h, const std::string& labels = "") {
    if (!h.is_object() || !h.contains("count") || !h.contains("sum") || !h.contains("buckets")) return;
    declare(name, "histogram", help);
    const std::string prefix = labels.empty() ? "" : labels + ",";
    const std::string braces = labels.empty() ? "" : "{" + labels + "}";
    for (const json& bucket : h["buckets"])
      if (bucket.is_array() && bucket.size() == 2)
        out_ += fmt::format("{}_bucket{{{}le=\"{}\"}} {}\n", name, prefix, bucket[0].get<double>(), bucket[1].dump());
    out_ += fmt::format("{}_bucket{{{}le=\"+Inf\"}} {}\n", name, prefix, h["count"].dump());
    out_ += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces, h["sum"].get<double>(), name, braces,
                        h["count"].dump());
  }
  std::string take() { return std::move(out_); }

 private:
  // A family's HELP and TYPE lines, before its first sample only.
  void declare(const std::string& name, std::string_view type, std::string_view help) {
    if (std::find(declared_.begin(), declared_.end(), name) != declared_.end()) return;
    declared_.push_back(name);
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }

  std::string out_;
  std::vector<std::string> declared_;
};

std::string label(std::string_view name, const json& value) {
  std::string text = value.is_string() ? value.get<std::string>() : value.dump();
  return fmt::format("{}=\"{}\"", name, label_value(text));
}

}  // namespace

std::string stats_to_prometheus(const json& stats) {
  Exposition x;
  // A family per field of one kind of object, in the order the families first appear.
  struct Field {
    const char* key;
    const char* metric;
    const char* type;
    const char* help;
  };
  static const Field kPortFields[] = {
      {"rx", "kdp_port_rx_packets_total", "counter", "Packets received on the port."},
      {"tx", "kdp_port_tx_packets_total", "counter", "Packets transmitted on the port."},
      {"tx_dropped", "kdp_port_tx_dropped_total", "counter", "Packets dropped on a full TX ring."},
      {"rx_missed", "kdp_port_rx_missed_total", "counter", "Packets the NIC dropped (imissed)."},
      {"rx_errors", "kdp_port_rx_errors_total", "counter", "Erroneous received packets (ierrors)."},
      {"rx_nombuf", "kdp_port_rx_nombuf_total", "counter", "RX mbuf allocation failures."},
  };
  if (auto ports = stats.find("ports"); ports != stats.end() && ports->is_array())
    for (const Field& f : kPortFields)
      for (const json& port : *ports)
        if (port.is_object() && port.contains(f.key))
          x.sample(f.metric, f.type, f.help,
                   label("port", port.value("name", "")) + "," + label("role", port.value("role", "")), port[f.key]);

  auto per_name = [&](const char* key, const char* metric, const char* label_name, const char* help) {
    if (auto obj = stats.find(key); obj != stats.end() && obj->is_object())
      for (const auto& [name, value] : obj->items()) x.sample(metric, "counter", help, label(label_name, name), value);
  };
  per_name("stages", "kdp_stage_packets_total", "stage", "Packets each pipeline stage handled.");
  per_name("drops", "kdp_drops_total", "reason", "Packets dropped, by reason.");
  per_name("icmp_errors", "kdp_icmp_errors_total", "outcome", "ICMP errors kdp sent or withheld, by outcome.");

  static const Field kWorkerFields[] = {
      {"polls", "kdp_worker_polls_total", "counter", "Poll loop iterations."},
      {"packets", "kdp_worker_packets_total", "counter", "Packets the worker processed."},
      {"cycles_per_packet", "kdp_worker_cycles_per_packet", "gauge", "TSC cycles per packet over busy polls."},
      {"punted", "kdp_worker_punted_total", "counter", "Packets punted to the control thread."},
      {"fragments_made", "kdp_worker_fragments_made_total", "counter",
       "IPv4 fragments made of routed packets over the egress MTU."},
      {"injected", "kdp_worker_injected_total", "counter", "Packets injected by the control thread."},
      {"learn_events", "kdp_worker_learn_events_total", "counter", "Learn events sent to the control thread."},
      {"learn_queue_full", "kdp_worker_learn_queue_full_total", "counter", "Learn events lost on a full queue."},
      {"idle_sleeps", "kdp_worker_idle_sleeps_total", "counter", "Idle sleeps."},
      {"longest_poll_gap_s", "kdp_worker_longest_poll_gap_seconds", "gauge",
       "Longest time between the starts of two polls, idle sleeps included."},
  };
  if (auto workers = stats.find("workers"); workers != stats.end() && workers->is_array()) {
    for (const Field& f : kWorkerFields)
      for (const json& w : *workers)
        if (w.is_object() && w.contains(f.key))
          x.sample(f.metric, f.type, f.help, label("worker", w.value("id", json(0))), w[f.key]);
    for (const json& w : *workers)
      if (w.is_object() && w.contains("poll_gap_s"))
        x.histogram("kdp_worker_poll_gap_seconds",
                    "Time between the starts of two polls: far over idle_sleep_us, the worker did not run (its CPU "
                    "taken) while its RX rings filled.",
                    w["poll_gap_s"], label("worker", w.value("id", json(0))));
  }

  if (auto ct = stats.find("conntrack"); ct != stats.end() && ct->is_object())
    for (const auto& [name, value] : ct->items()) {
      const bool gauge = name == "flows" || name == "capacity";
      x.sample(gauge ? "kdp_conntrack_" + name : "kdp_conntrack_" + name + "_total", gauge ? "gauge" : "counter",
               gauge ? "Connection tracking table size." : "Connection tracking events.", "", value);
    }
  if (auto services = stats.find("services"); services != stats.end())
    x.sample("kdp_service_frontends", "gauge", "Service frontends installed.", "", *services);
  if (auto pool = stats.find("mbuf_pool"); pool != stats.end() && pool->is_object())
    for (const auto& [name, value] : pool->items())
      x.sample("kdp_mbuf_pool_" + name, "gauge", "Packet buffers of the mbuf pool (size, available, in_use).", "", value);
  if (auto control = stats.find("control"); control != stats.end() && control->is_object())
    for (const auto& [name, value] : control->items()) {
      const bool gauge = name.ends_with("_entries") || name == "pending_resolutions";
      x.sample(gauge ? "kdp_" + name : "kdp_control_" + name + "_total", gauge ? "gauge" : "counter",
               gauge ? "Control thread table size." : "Control thread events.", "", value);
    }
  if (auto updates = stats.find("updates"); updates != stats.end() && updates->is_object()) {
    if (auto failed = updates->find("failed"); failed != updates->end())
      x.sample("kdp_update_failures_total", "counter", "Control requests rejected with nothing changed.", "", *failed);
    if (auto h = updates->find("apply_seconds"); h != updates->end())
      x.histogram("kdp_update_apply_seconds", "Time to validate, compile and publish a change.", *h);
    if (auto h = updates->find("live_seconds"); h != updates->end())
      x.histogram("kdp_update_live_seconds", "Time from publishing a change until every worker has moved past the old tables.", *h);
  }
  return x.take();
}

}  // namespace kdp::control
