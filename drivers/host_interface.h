// The kernel side of the host port (role "host"): the node's own network
// stack gets node_ip on the port's interface, as it had on the NIC kdp took.
#pragma once

#include <optional>
#include <string>

#include "ctrl/config.h"

namespace kdp {

// Gives the interface `if_index` the address ip/prefix_len, turns IPv6 off on
// it (kdp routes IPv4 only) and brings it up. Throws std::runtime_error
// naming the interface and the step that failed.
void configure_host_interface(unsigned if_index, Ipv4 ip, uint8_t prefix_len);

// The MTU of the kernel interface `if_index`; throws std::runtime_error.
unsigned kernel_interface_mtu(unsigned if_index);

// The kernel's ephemeral source ports (net.ipv4.ip_local_port_range of this
// network namespace); nullopt when unreadable.
std::optional<PortRange> kernel_ephemeral_ports();

}  // namespace kdp
