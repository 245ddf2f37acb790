// The tuple space kdp-gen draws flows from: every (destination, source IP,
// source port) combination, numbered so that destinations vary fastest,
// then source IPs, then source ports. Flow i of the cycled set and the i-th
// fresh tuple are just indices into this space, walked with an odometer so
// the fast path never divides.
#pragma once

#include <cstdint>

#include "ctrl/net_types.h"

namespace kdp::gen {

struct FlowSpace {
  Ipv4 src_ip_first = 0, src_ip_last = 0;  // host order, inclusive
  uint16_t src_port_first = 0, src_port_last = 0;
  uint32_t destinations = 1;

  uint64_t src_ips() const { return uint64_t{src_ip_last} - src_ip_first + 1; }
  uint64_t src_ports() const { return uint64_t{src_port_last} - src_port_first + 1; }
  uint64_t size() const { return destinations * src_ips() * src_ports(); }
};

class TupleCursor {
 public:
  TupleCursor() = default;
  TupleCursor(const FlowSpace& space, uint64_t index) : space_(space) {
    index %= space.size();
    dst_ = static_cast<uint32_t>(index % space.destinations);
    index /= space.destinations;
    ip_offset_ = index % space.src_ips();
    port_offset_ = index / space.src_ips();
  }

  uint32_t destination() const { return dst_; }
  Ipv4 src_ip() const { return static_cast<Ipv4>(space_.src_ip_first + ip_offset_); }
  uint16_t src_port() const { return static_cast<uint16_t>(space_.src_port_first + port_offset_); }

  void advance() {
    if (++dst_ < space_.destinations) return;
    dst_ = 0;
    if (++ip_offset_ < space_.src_ips()) return;
    ip_offset_ = 0;
    if (++port_offset_ < space_.src_ports()) return;
    port_offset_ = 0;
  }

 private:
  FlowSpace space_;
  uint32_t dst_ = 0;
  uint64_t ip_offset_ = 0;
  uint64_t port_offset_ = 0;
};

}  // namespace kdp::gen
