// Plain value types for addresses, shared by ctrl/ (no DPDK) and dataplane/.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kdp {

// IPv4 address in host byte order. Wire (network order) values are be32.
using Ipv4 = uint32_t;

struct MacAddr {
  std::array<uint8_t, 6> bytes{};

  bool operator==(const MacAddr&) const = default;
  bool is_multicast() const { return bytes[0] & 0x01; }
  bool is_zero() const { return bytes == std::array<uint8_t, 6>{}; }
  std::string to_string() const;
};

struct Ipv4Prefix {
  Ipv4 addr = 0;  // host order, host bits zero
  uint8_t len = 0;

  bool operator==(const Ipv4Prefix&) const = default;
  Ipv4 mask() const { return len == 0 ? 0 : ~Ipv4{0} << (32 - len); }
  bool contains(Ipv4 ip) const { return (ip & mask()) == addr; }
  bool contains(const Ipv4Prefix& p) const { return p.len >= len && contains(p.addr); }
  std::string to_string() const;
};

std::optional<Ipv4> parse_ipv4(std::string_view text);
// "a.b.c.d/len"; rejects host bits set when strict.
std::optional<Ipv4Prefix> parse_ipv4_prefix(std::string_view text, bool strict = true);
std::optional<MacAddr> parse_mac(std::string_view text);
std::string ipv4_to_string(Ipv4 ip);

}  // namespace kdp
