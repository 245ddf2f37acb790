// kdp-cni's pure parts (no system calls): the CNI 1.0.0 environment and
// network config, error and result documents, and the names kdp-cni derives.
// The binary (kdp-cni.cc) does the side effects; tests/unit/cni_test.cc
// covers this file and the address store (ipam.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ctrl/net_types.h"

namespace kdp::cni {

inline constexpr std::string_view kSpecVersion = "1.0.0";
inline constexpr std::string_view kPluginType = "kdp-cni";
inline constexpr std::string_view kDefaultSocket = "/run/kdp/kdp.sock";
inline constexpr std::string_view kDefaultDataDir = "/var/lib/cni/networks";
inline constexpr size_t kMaxIfnameLength = 15;  // IFNAMSIZ - 1

const std::vector<std::string>& supported_versions();

// The spec's well-known error codes (1-99 are the spec's) and ours (100+).
enum class ErrorCode : int {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kContainerUnknown = 3,
  kInvalidEnvironment = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kAttachRefused = 100,      // kdp answered pod.add with an error
  kAddressesExhausted = 101, // no free address in the subnet
  kInterfaceSetup = 102,     // creating or configuring the veth failed
  kAlreadyAdded = 103,       // ADD for a container and ifname that already hold an address
  kCheckFailed = 104,        // CHECK found the container's network not as ADD left it
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& msg, std::string details = "")
      : std::runtime_error(msg), code_(code), details_(std::move(details)) {}
  ErrorCode code() const { return code_; }
  const std::string& details() const { return details_; }

 private:
  ErrorCode code_;
  std::string details_;
};

// {"cniVersion", "code", "msg", "details"} (details only when there are some).
nlohmann::json error_json(const Error& error);

enum class Command { kAdd, kDel, kCheck, kVersion };

struct Environment {
  Command command = Command::kVersion;
  std::string container_id;
  std::string netns;   // a path: /var/run/netns/NAME, /proc/PID/ns/net; may be empty for DEL
  std::string ifname;  // the interface's name inside the container
  std::map<std::string, std::string> args;  // CNI_ARGS, "K=V;K=V"
};

// Reads the CNI_* variables a runtime sets; throws Error(kInvalidEnvironment)
// naming the variable that is missing or malformed.
Environment parse_environment(const std::map<std::string, std::string>& vars);

struct NetworkConfig {
  std::string cni_version;
  std::string name;            // the network's name: also the address store's directory
  std::string socket{kDefaultSocket};
  std::string data_dir{kDefaultDataDir};
  Ipv4Prefix subnet;           // the node's pod CIDR (kdp's [node] pod_cidr)
  Ipv4 gateway = 0;            // default: the first host of subnet (kdp's default gateway_ip)
  std::optional<uint32_t> mtu;
  nlohmann::json dns = nlohmann::json::object();
  std::optional<nlohmann::json> prev_result;
};

// Parses the network config a runtime writes to stdin; throws Error with the
// spec's code (6 not JSON, 1 version, 2 unsupported field, 7 invalid) naming
// the field.
NetworkConfig parse_network_config(std::string_view text);

// {"cniVersion", "supportedVersions"} for VERSION; `stdin_text` is the
// runtime's {"cniVersion": ...}, possibly empty.
nlohmann::json version_json(std::string_view stdin_text);

// The name kdp knows the pod by: "NAMESPACE/NAME" from CNI_ARGS'
// K8S_POD_NAMESPACE and K8S_POD_NAME, else "cni/" and the container id's
// first 12 characters.
std::string pod_name(const Environment& env);

// The host end of the pod's veth: "kdp" and 8 hex digits of a hash of the
// container id and ifname, so DEL finds it again from the same inputs.
std::string host_ifname(std::string_view container_id, std::string_view ifname);

// An interface address: the host's address and the subnet's length.
struct InterfaceAddress {
  Ipv4 ip = 0;
  uint8_t len = 0;
  bool operator==(const InterfaceAddress&) const = default;
  std::string to_string() const;  // "a.b.c.d/len"
};
// "a.b.c.d/len" with host bits (unlike parse_ipv4_prefix's strict form).
std::optional<InterfaceAddress> parse_interface_address(std::string_view text);

struct Attachment {
  std::string host_ifname;
  MacAddr host_mac;
  std::string container_ifname;
  MacAddr container_mac;
  std::string netns;
  InterfaceAddress address;
  Ipv4 gateway = 0;
};

// The ADD result per spec 1.0.0: interfaces [host end, container end],
// ips, the default route and dns.
nlohmann::json result_json(const NetworkConfig& config, const Attachment& attachment);

// The first IPv4 address of a result's ips (CHECK's prevResult); throws
// Error(kInvalidConfig) when it names none or a malformed one.
InterfaceAddress result_address(const nlohmann::json& result);

}  // namespace kdp::cni
