// kdp-cni's side effects on the host: running iproute2 without a shell,
// doing work inside a network namespace (a forked child that setns()es into
// it), and the few interface ioctls and sysctls it needs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ctrl/net_types.h"

namespace kdp::cni {

struct CommandOutput {
  int status = -1;  // exit status; -1 when it did not exit normally
  std::string out, err;
};

// Runs argv[0] (a path) with argv, no shell; collects stdout and stderr.
CommandOutput run_command(const std::vector<std::string>& argv);

// Runs iproute2's `ip` with args; throws Error(kInterfaceSetup) with its
// stderr when it fails. Returns its stdout.
std::string ip(const std::vector<std::string>& args);

// Runs `work` in a forked child inside the network namespace at netns_path
// and returns what it returns; an Error it throws is rethrown here with its
// code. Throws Error(kContainerUnknown) when netns_path cannot be opened.
std::string in_netns(const std::string& netns_path, const std::function<std::string()>& work);

bool netns_exists(const std::string& netns_path);

// In the calling process's network namespace:
bool link_exists(const std::string& ifname);
bool link_is_up(const std::string& ifname);
MacAddr link_mac(const std::string& ifname);              // throws Error(kInterfaceSetup)
void disable_tx_checksum(const std::string& ifname);      // `ethtool -K IF tx off`; throws Error(kInterfaceSetup)
// Writes /proc/sys/net/...; `required` false ignores a missing knob (IPv6 off in the kernel).
void write_sysctl(const std::string& path, const std::string& value, bool required);

}  // namespace kdp::cni
