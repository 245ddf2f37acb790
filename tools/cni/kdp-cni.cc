// kdp-cni: a CNI 1.0.0 plugin that attaches pods to kdp.
//
// A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, VERSION),
// CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_ARGS in the environment and
// the network config on stdin (README "CNI plugin"). ADD allocates the next
// free address of `subnet` (ipam.h), makes a veth pair whose container end
// is CNI_IFNAME in the pod's namespace (address, default route via
// `gateway`, TX checksum offload off, since kdp forwards frames as they
// are) and whose host end ("kdp" + hash) is handed to kdp with pod.add over
// its control socket; it prints the spec's result. Any failure undoes what
// the ADD did. DEL undoes an ADD and succeeds when there is nothing left to
// undo. CHECK verifies each piece. Errors are the spec's error document on
// stdout and exit status 1.
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>

#include "ctrl/control_client.h"
#include "tools/cni/cni.h"
#include "tools/cni/ipam.h"
#include "tools/cni/system.h"

extern char** environ;

namespace {

using nlohmann::json;
using namespace kdp;
using namespace kdp::cni;

constexpr int kAttachTimeoutS = 30;  // pod.add may start a port
constexpr int kQueryTimeoutS = 10;

void log(const std::string& message) { fmt::print(stderr, "kdp-cni: {}\n", message); }

std::map<std::string, std::string> environment_variables() {
  std::map<std::string, std::string> vars;
  for (char** entry = environ; entry && *entry; ++entry) {
    std::string_view text(*entry);
    size_t eq = text.find('=');
    if (eq != std::string_view::npos) vars.emplace(text.substr(0, eq), text.substr(eq + 1));
  }
  return vars;
}

std::string read_stdin() {
  std::string text;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(ErrorCode::kIoFailure, fmt::format("reading stdin: {}", std::strerror(errno)));
    if (n == 0) return text;
    text.append(buffer, static_cast<size_t>(n));
  }
}

// ---- kdp ------------------------------------------------------------------

json kdp_call(const NetworkConfig& config, std::string_view verb, const json& args, int timeout_s) {
  try {
    return control::call(config.socket, verb, args, timeout_s);
  } catch (const control::RefusedError& e) {
    throw Error(ErrorCode::kAttachRefused, fmt::format("kdp refused {}: {}", verb, e.what()));
  } catch (const control::ConnectionError& e) {
    throw Error(ErrorCode::kTryAgainLater, fmt::format("kdp's control socket: {}", e.what()));
  }
}

// A string field of kdp's reply; "" when absent or not a string (pod.list's
// iface is null for a config pod whose device names no interface).
std::string text_field(const json& object, const char* key) {
  return object.is_object() && object.contains(key) && object[key].is_string() ? object[key].get<std::string>() : "";
}

// pod.list's entry for `name`, or null.
json find_pod(const json& list, const std::string& name) {
  const json& pods = list.is_object() && list.contains("pods") ? list["pods"] : list;
  if (pods.is_array())
    for (const json& pod : pods)
      if (text_field(pod, "name") == name) return pod;
  return nullptr;
}

// An address kdp reports ("a.b.c.d" or "a.b.c.d/len").
std::optional<Ipv4> reported_ip(const json& value) {
  if (!value.is_string()) return std::nullopt;
  const std::string text = value.get<std::string>();
  return parse_ipv4(text.substr(0, text.find('/')));
}

// ---- ADD ------------------------------------------------------------------

// Makes the veth pair from inside the pod's namespace: CNI_IFNAME there, its
// peer created straight in our own namespace (never a name clash with an
// "eth0" of the host).
void create_veth(const Environment& env, const NetworkConfig& config, const std::string& host_if) {
  const std::string our_netns = fmt::format("/proc/{}/ns/net", ::getpid());
  in_netns(env.netns, [&] {
    std::vector<std::string> args = {"link", "add", env.ifname};
    if (config.mtu) args.insert(args.end(), {"mtu", std::to_string(*config.mtu)});
    args.insert(args.end(), {"type", "veth", "peer", "name", host_if});
    if (config.mtu) args.insert(args.end(), {"mtu", std::to_string(*config.mtu)});
    args.insert(args.end(), {"netns", our_netns});
    ip(args);
    return std::string();
  });
}

MacAddr configure_container_side(const Environment& env, const NetworkConfig& config, const InterfaceAddress& address) {
  const std::string mac = in_netns(env.netns, [&] {
    // kdp is IPv4 only: no router solicitations or DAD from the pod.
    write_sysctl(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", env.ifname), "1", false);
    disable_tx_checksum(env.ifname);
    ip({"addr", "add", address.to_string(), "dev", env.ifname});
    ip({"link", "set", "lo", "up"});
    ip({"link", "set", env.ifname, "up"});
    ip({"route", "add", "default", "via", ipv4_to_string(config.gateway), "dev", env.ifname});
    return link_mac(env.ifname).to_string();
  });
  return *parse_mac(mac);
}

void configure_host_side(const std::string& host_if) {
  write_sysctl(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", host_if), "1", false);
  // The host must never route what arrives on kdp's port.
  write_sysctl(fmt::format("/proc/sys/net/ipv4/conf/{}/forwarding", host_if), "0", true);
  ip({"link", "set", host_if, "up"});
}

json cmd_add(const Environment& env, const NetworkConfig& config) {
  if (!netns_exists(env.netns))
    throw Error(ErrorCode::kContainerUnknown, fmt::format("network namespace {} does not exist", env.netns));
  AddressStore store(config.data_dir, config.name, config.subnet, config.gateway);
  const InterfaceAddress address{store.allocate(env.container_id, env.ifname), config.subnet.len};
  const std::string host_if = host_ifname(env.container_id, env.ifname);
  const std::string pod = pod_name(env);
  bool veth_created = false, attached = false;
  try {
    create_veth(env, config, host_if);
    veth_created = true;
    Attachment attachment{.host_ifname = host_if,
                          .host_mac = {},
                          .container_ifname = env.ifname,
                          .container_mac = configure_container_side(env, config, address),
                          .netns = env.netns,
                          .address = address,
                          .gateway = config.gateway};
    configure_host_side(host_if);
    attachment.host_mac = link_mac(host_if);

    json reply = kdp_call(config, "pod.add",
                          {{"name", pod},
                           {"iface", host_if},
                           {"ip", address.to_string()},
                           {"mac", attachment.container_mac.to_string()}},
                          kAttachTimeoutS);
    attached = true;
    // A pod whose default route points elsewhere than kdp's bridge address
    // would have no way out: the config and kdp's [node] must agree.
    if (reply.is_object() && reply.contains("gateway_ip")) {
      auto kdp_gateway = reported_ip(reply["gateway_ip"]);
      if (kdp_gateway && *kdp_gateway != config.gateway)
        throw Error(ErrorCode::kInvalidConfig,
                    fmt::format("gateway: {} in the network config, but kdp's gateway_ip is {}",
                                ipv4_to_string(config.gateway), ipv4_to_string(*kdp_gateway)));
    }
    log(fmt::format("ADD {}: {} on {} ({} in {})", pod, address.to_string(), host_if, env.ifname, env.netns));
    return result_json(config, attachment);
  } catch (...) {
    // Undo in reverse; the original error is the one reported.
    if (attached) {
      try {
        kdp_call(config, "pod.del", {{"name", pod}}, kQueryTimeoutS);
      } catch (const std::exception& e) {
        log(fmt::format("undoing ADD: {}", e.what()));
      }
    }
    if (veth_created) {
      try {
        ip({"link", "del", host_if});  // takes the container end with it
      } catch (const std::exception& e) {
        log(fmt::format("undoing ADD: {}", e.what()));
      }
    }
    try {
      store.release(env.container_id, env.ifname);
    } catch (const std::exception& e) {
      log(fmt::format("undoing ADD: {}", e.what()));
    }
    throw;
  }
}

// ---- DEL ------------------------------------------------------------------

void cmd_del(const Environment& env, const NetworkConfig& config) {
  const std::string host_if = host_ifname(env.container_id, env.ifname);
  const std::string pod = pod_name(env);
  // Detach only the pod this container's veth made: a newer sandbox of the
  // same pod may already be attached under the same name on another veth.
  try {
    json entry = find_pod(control::call(config.socket, "pod.list", json::object(), kQueryTimeoutS), pod);
    if (!entry.is_null() && text_field(entry, "iface") == host_if)
      kdp_call(config, "pod.del", {{"name", pod}}, kQueryTimeoutS);
  } catch (const control::ConnectionError& e) {
    // Nothing listening: no kdp holds the pod. Anything else may be transient.
    if (!e.cannot_connect()) throw Error(ErrorCode::kTryAgainLater, fmt::format("kdp's control socket: {}", e.what()));
    log(fmt::format("DEL {}: kdp is not running, nothing to detach ({})", pod, e.what()));
  } catch (const control::RefusedError& e) {
    throw Error(ErrorCode::kAttachRefused, fmt::format("kdp refused pod.list: {}", e.what()));
  }
  // Deleting the host end deletes the container end too, also when the
  // namespace is already gone (then the kernel has removed both).
  if (link_exists(host_if)) {
    try {
      ip({"link", "del", host_if});
    } catch (const Error&) {
      if (link_exists(host_if)) throw;  // not merely gone in the meantime
    }
  }
  AddressStore store(config.data_dir, config.name, config.subnet, config.gateway);
  store.release(env.container_id, env.ifname);
  log(fmt::format("DEL {}: {} removed", pod, host_if));
}

// ---- CHECK ----------------------------------------------------------------

[[noreturn]] void check_failed(const std::string& message) { throw Error(ErrorCode::kCheckFailed, message); }

void cmd_check(const Environment& env, const NetworkConfig& config) {
  if (!netns_exists(env.netns))
    throw Error(ErrorCode::kContainerUnknown, fmt::format("network namespace {} does not exist", env.netns));
  AddressStore store(config.data_dir, config.name, config.subnet, config.gateway);
  auto held = store.find(env.container_id, env.ifname);
  if (!held)
    check_failed(fmt::format("container {} interface {} holds no address in {}", env.container_id, env.ifname,
                             store.directory().string()));
  const InterfaceAddress address{*held, config.subnet.len};
  if (config.prev_result) {
    const InterfaceAddress previous = result_address(*config.prev_result);
    if (previous != address)
      check_failed(fmt::format("prevResult has {}, but the container holds {}", previous.to_string(),
                               address.to_string()));
  }

  const std::string container_mac = in_netns(env.netns, [&] {
    if (!link_exists(env.ifname)) check_failed(fmt::format("{} has no interface {}", env.netns, env.ifname));
    if (!link_is_up(env.ifname)) check_failed(fmt::format("{} in {} is down", env.ifname, env.netns));
    bool has_address = false;
    json links = json::parse(ip({"-j", "-4", "addr", "show", "dev", env.ifname}), nullptr, false);
    if (links.is_array())
      for (const json& link : links)
        for (const json& info : link.value("addr_info", json::array()))
          if (info.value("local", std::string()) == ipv4_to_string(address.ip) &&
              info.value("prefixlen", 0) == address.len)
            has_address = true;
    if (!has_address) check_failed(fmt::format("{} in {} does not have {}", env.ifname, env.netns, address.to_string()));
    bool has_default = false;
    json routes = json::parse(ip({"-j", "-4", "route", "show", "default"}), nullptr, false);
    if (routes.is_array())
      for (const json& route : routes)
        if (route.value("gateway", std::string()) == ipv4_to_string(config.gateway) &&
            route.value("dev", std::string()) == env.ifname)
          has_default = true;
    if (!has_default)
      check_failed(fmt::format("{} has no default route via {} on {}", env.netns, ipv4_to_string(config.gateway),
                               env.ifname));
    return link_mac(env.ifname).to_string();
  });

  const std::string host_if = host_ifname(env.container_id, env.ifname);
  if (!link_exists(host_if)) check_failed(fmt::format("the host end {} is missing", host_if));
  if (!link_is_up(host_if)) check_failed(fmt::format("the host end {} is down", host_if));

  const std::string pod = pod_name(env);
  json entry = find_pod(kdp_call(config, "pod.list", json::object(), kQueryTimeoutS), pod);
  if (entry.is_null()) check_failed(fmt::format("kdp has no pod {}", pod));
  if (text_field(entry, "iface") != host_if)
    check_failed(fmt::format("kdp has pod {} on {}, not {}", pod, entry.value("iface", json()).dump(), host_if));
  if (reported_ip(entry.value("ip", json())) != address.ip)
    check_failed(fmt::format("kdp has pod {} at {}, not {}", pod, entry.value("ip", json()).dump(),
                             ipv4_to_string(address.ip)));
  if (const std::string mac = text_field(entry, "mac"); !mac.empty() && parse_mac(mac) != parse_mac(container_mac))
    check_failed(fmt::format("kdp binds pod {} to MAC {}, but {} has {}", pod, mac, env.ifname, container_mac));
}

}  // namespace

int main() {
  try {
    const Environment env = parse_environment(environment_variables());
    const std::string input = read_stdin();
    if (env.command == Command::kVersion) {
      fmt::print("{}\n", version_json(input).dump());
      return 0;
    }
    const NetworkConfig config = parse_network_config(input);
    switch (env.command) {
      case Command::kAdd:
        fmt::print("{}\n", cmd_add(env, config).dump(2));
        break;
      case Command::kDel:
        cmd_del(env, config);
        break;
      case Command::kCheck:
        cmd_check(env, config);
        break;
      case Command::kVersion:
        break;
    }
    return 0;
  } catch (const Error& e) {
    fmt::print("{}\n", error_json(e).dump());
    log(fmt::format("error {}: {}", static_cast<int>(e.code()), e.what()));
  } catch (const std::exception& e) {
    const Error error(ErrorCode::kIoFailure, e.what());
    fmt::print("{}\n", error_json(error).dump());
    log(fmt::format("error: {}", e.what()));
  }
  return 1;
}
