#include "tools/cni/cni.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace kdp::cni {

using nlohmann::json;

namespace {

[[noreturn]] void invalid_config(const std::string& msg) { throw Error(ErrorCode::kInvalidConfig, msg); }
[[noreturn]] void invalid_env(const std::string& msg) { throw Error(ErrorCode::kInvalidEnvironment, msg); }

bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// The spec's rule for container ids and network names: an alphanumeric
// character, then alphanumerics, '_', '.' and '-'.
bool is_identifier(std::string_view text) {
  if (text.empty() || !is_alnum(text[0])) return false;
  return std::all_of(text.begin(), text.end(), [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool is_valid_ifname(std::string_view name) {
  if (name.empty() || name.size() > kMaxIfnameLength || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    return c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || !std::isprint(static_cast<unsigned char>(c));
  });
}

std::string required_var(const std::map<std::string, std::string>& vars, const char* name) {
  auto it = vars.find(name);
  if (it == vars.end() || it->second.empty()) invalid_env(fmt::format("{} is not set", name));
  return it->second;
}

std::string get_string(const json& doc, const char* key, bool required) {
  if (!doc.contains(key)) {
    if (required) invalid_config(fmt::format("{}: required", key));
    return {};
  }
  if (!doc[key].is_string()) invalid_config(fmt::format("{}: must be a string", key));
  return doc[key].get<std::string>();
}

// Keys the spec defines for every plugin's config (the runtime may add some
// of these), and kdp-cni's own.
const std::set<std::string, std::less<>> kStandardKeys = {"cniVersion",   "name", "type", "disableCheck", "dns",
                                                          "args",         "runtimeConfig", "capabilities",
                                                          "prevResult"};
const std::set<std::string, std::less<>> kPluginKeys = {"socket", "subnet", "gateway", "dataDir", "mtu"};

}  // namespace

const std::vector<std::string>& supported_versions() {
  static const std::vector<std::string> versions = {std::string(kSpecVersion)};
  return versions;
}

json error_json(const Error& error) {
  json doc = {{"cniVersion", kSpecVersion}, {"code", static_cast<int>(error.code())}, {"msg", error.what()}};
  if (!error.details().empty()) doc["details"] = error.details();
  return doc;
}

Environment parse_environment(const std::map<std::string, std::string>& vars) {
  Environment env;
  const std::string command = required_var(vars, "CNI_COMMAND");
  if (command == "ADD") env.command = Command::kAdd;
  else if (command == "DEL") env.command = Command::kDel;
  else if (command == "CHECK") env.command = Command::kCheck;
  else if (command == "VERSION") return env;  // needs nothing else
  else invalid_env(fmt::format("CNI_COMMAND: unsupported command \"{}\" (ADD, DEL, CHECK, VERSION)", command));

  env.container_id = required_var(vars, "CNI_CONTAINERID");
  if (!is_identifier(env.container_id))
    invalid_env(fmt::format("CNI_CONTAINERID: \"{}\" must start with a letter or digit and hold only letters, "
                            "digits, '_', '.' and '-'",
                            env.container_id));
  env.ifname = required_var(vars, "CNI_IFNAME");
  if (!is_valid_ifname(env.ifname))
    invalid_env(fmt::format("CNI_IFNAME: \"{}\" is not a valid interface name (1-{} characters, no '/', ':' or "
                            "spaces)",
                            env.ifname, kMaxIfnameLength));
  if (env.command == Command::kDel) {
    if (auto it = vars.find("CNI_NETNS"); it != vars.end()) env.netns = it->second;  // optional for DEL
  } else {
    env.netns = required_var(vars, "CNI_NETNS");
  }
  if (!env.netns.empty() && env.netns[0] != '/')
    invalid_env(fmt::format("CNI_NETNS: \"{}\" must be an absolute path", env.netns));

  if (auto it = vars.find("CNI_ARGS"); it != vars.end()) {
    std::string_view rest = it->second;
    while (!rest.empty()) {
      size_t semi = rest.find(';');
      std::string_view pair = rest.substr(0, semi);
      rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
      if (pair.empty()) continue;
      size_t eq = pair.find('=');
      if (eq == std::string_view::npos || eq == 0)
        invalid_env(fmt::format("CNI_ARGS: \"{}\" is not KEY=VALUE", pair));
      env.args[std::string(pair.substr(0, eq))] = std::string(pair.substr(eq + 1));
    }
  }
  return env;
}

NetworkConfig parse_network_config(std::string_view text) {
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) throw Error(ErrorCode::kDecodeFailure, "network config on stdin is not valid JSON");
  if (!doc.is_object()) invalid_config("network config must be a JSON object");

  NetworkConfig config;
  config.cni_version = get_string(doc, "cniVersion", true);
  const auto& versions = supported_versions();
  if (std::find(versions.begin(), versions.end(), config.cni_version) == versions.end())
    throw Error(ErrorCode::kIncompatibleVersion,
                fmt::format("cniVersion: \"{}\" is not supported (kdp-cni supports {})", config.cni_version,
                            fmt::join(versions, ", ")));
  for (const auto& [key, value] : doc.items()) {
    if (kStandardKeys.contains(key) || kPluginKeys.contains(key)) continue;
    if (key == "ipam")
      throw Error(ErrorCode::kUnsupportedField,
                  "ipam: kdp-cni allocates addresses itself; set \"subnet\" (and \"gateway\") instead");
    throw Error(ErrorCode::kUnsupportedField,
                fmt::format("{}: unknown field (kdp-cni takes socket, subnet, gateway, dataDir, mtu)", key));
  }

  config.name = get_string(doc, "name", true);
  if (!is_identifier(config.name))
    invalid_config(fmt::format("name: \"{}\" must start with a letter or digit and hold only letters, digits, '_', "
                               "'.' and '-'",
                               config.name));
  if (const std::string type = get_string(doc, "type", true); type != kPluginType)
    invalid_config(fmt::format("type: \"{}\", but this plugin is \"{}\"", type, kPluginType));

  const std::string subnet = get_string(doc, "subnet", true);
  auto prefix = parse_ipv4_prefix(subnet, true);
  if (!prefix) invalid_config(fmt::format("subnet: \"{}\" is not an IPv4 prefix without host bits (a.b.c.d/len)", subnet));
  if (prefix->len > 30) invalid_config(fmt::format("subnet: \"{}\" leaves no room for pods (at most /30)", subnet));
  config.subnet = *prefix;
  const Ipv4 broadcast = prefix->addr | ~prefix->mask();

  if (doc.contains("gateway")) {
    const std::string gateway = get_string(doc, "gateway", true);
    auto ip = parse_ipv4(gateway);
    if (!ip) invalid_config(fmt::format("gateway: \"{}\" is not an IPv4 address", gateway));
    if (!prefix->contains(*ip) || *ip == prefix->addr || *ip == broadcast)
      invalid_config(fmt::format("gateway: {} is not a host address of subnet {}", gateway, subnet));
    config.gateway = *ip;
  } else {
    config.gateway = prefix->addr + 1;
  }

  if (doc.contains("socket")) {
    config.socket = get_string(doc, "socket", true);
    if (config.socket.empty()) invalid_config("socket: must not be empty");
  }
  if (doc.contains("dataDir")) {
    config.data_dir = get_string(doc, "dataDir", true);
    if (config.data_dir.empty() || config.data_dir[0] != '/')
      invalid_config(fmt::format("dataDir: \"{}\" must be an absolute path", config.data_dir));
  }
  if (doc.contains("mtu")) {
    const json& mtu = doc["mtu"];
    if (!mtu.is_number_integer() || mtu.get<int64_t>() < 68 || mtu.get<int64_t>() > 65535)
      invalid_config("mtu: must be an integer between 68 and 65535");
    config.mtu = mtu.get<uint32_t>();
  }
  if (doc.contains("dns")) {
    if (!doc["dns"].is_object()) invalid_config("dns: must be an object (nameservers, domain, search, options)");
    config.dns = doc["dns"];
  }
  if (doc.contains("prevResult")) {
    if (!doc["prevResult"].is_object()) invalid_config("prevResult: must be an object");
    config.prev_result = doc["prevResult"];
  }
  return config;
}

json version_json(std::string_view stdin_text) {
  std::string version(kSpecVersion);
  json doc = json::parse(stdin_text, nullptr, false);
  if (!doc.is_discarded() && doc.is_object() && doc.contains("cniVersion") && doc["cniVersion"].is_string())
    version = doc["cniVersion"].get<std::string>();
  return {{"cniVersion", version}, {"supportedVersions", supported_versions()}};
}

std::string pod_name(const Environment& env) {
  auto ns = env.args.find("K8S_POD_NAMESPACE");
  auto name = env.args.find("K8S_POD_NAME");
  if (ns != env.args.end() && name != env.args.end() && !ns->second.empty() && !name->second.empty())
    return ns->second + "/" + name->second;
  return "cni/" + env.container_id.substr(0, 12);
}

std::string host_ifname(std::string_view container_id, std::string_view ifname) {
  // FNV-1a (32 bits): stable across releases and machines, unlike std::hash.
  uint32_t hash = 2166136261u;
  auto mix = [&](std::string_view text) {
    for (char c : text) hash = (hash ^ static_cast<uint8_t>(c)) * 16777619u;
  };
  mix(container_id);
  mix(std::string_view("\0", 1));  // ("ab","c") and ("a","bc") differ
  mix(ifname);
  return fmt::format("kdp{:08x}", hash);
}

std::string InterfaceAddress::to_string() const { return fmt::format("{}/{}", ipv4_to_string(ip), len); }

std::optional<InterfaceAddress> parse_interface_address(std::string_view text) {
  auto prefix = parse_ipv4_prefix(text, false);
  size_t slash = text.find('/');
  if (!prefix || slash == std::string_view::npos) return std::nullopt;
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip) return std::nullopt;
  return InterfaceAddress{*ip, prefix->len};
}

json result_json(const NetworkConfig& config, const Attachment& a) {
  return {
      {"cniVersion", config.cni_version},
      {"interfaces",
       json::array({{{"name", a.host_ifname}, {"mac", a.host_mac.to_string()}},
                    {{"name", a.container_ifname}, {"mac", a.container_mac.to_string()}, {"sandbox", a.netns}}})},
      {"ips", json::array({{{"address", a.address.to_string()},
                            {"gateway", ipv4_to_string(a.gateway)},
                            {"interface", 1}}})},  // index into interfaces: the container end
      {"routes", json::array({{{"dst", "0.0.0.0/0"}, {"gw", ipv4_to_string(a.gateway)}}})},
      {"dns", config.dns},
  };
}

InterfaceAddress result_address(const json& result) {
  if (!result.contains("ips") || !result["ips"].is_array())
    invalid_config("prevResult.ips: missing (CHECK needs the ADD result)");
  for (const json& ip : result["ips"]) {
    if (!ip.is_object() || !ip.contains("address") || !ip["address"].is_string()) continue;
    const std::string text = ip["address"].get<std::string>();
    if (text.find(':') != std::string::npos) continue;  // IPv6: not ours
    auto address = parse_interface_address(text);
    if (!address) invalid_config(fmt::format("prevResult.ips: \"{}\" is not an address with a prefix length", text));
    return *address;
  }
  invalid_config("prevResult.ips: holds no IPv4 address");
}

}  // namespace kdp::cni
