#include "ctrl/net_types.h"

#include <charconv>
#include <cstdio>

namespace kdp {

namespace {

// Parses a decimal number in [0, max] that spans the whole of `text`.
std::optional<unsigned> parse_number(std::string_view text, unsigned max) {
  if (text.empty() || text.size() > 3) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;  // no octal look-alikes
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

}  // namespace

std::optional<Ipv4> parse_ipv4(std::string_view text) {
  Ipv4 ip = 0;
  for (int i = 0; i < 4; ++i) {
    size_t dot = i < 3 ? text.find('.') : text.size();
    if (dot == std::string_view::npos) return std::nullopt;
    auto octet = parse_number(text.substr(0, dot), 255);
    if (!octet) return std::nullopt;
    ip = ip << 8 | *octet;
    text.remove_prefix(i < 3 ? dot + 1 : dot);
  }
  return ip;
}

std::optional<Ipv4Prefix> parse_ipv4_prefix(std::string_view text, bool strict) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto ip = parse_ipv4(text.substr(0, slash));
  auto len = parse_number(text.substr(slash + 1), 32);
  if (!ip || !len) return std::nullopt;
  Ipv4Prefix p{*ip, static_cast<uint8_t>(*len)};
  if ((p.addr & p.mask()) != p.addr) {
    if (strict) return std::nullopt;
    p.addr &= p.mask();
  }
  return p;
}

std::optional<MacAddr> parse_mac(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  MacAddr mac;
  for (int i = 0; i < 6; ++i) {
    if (i < 5 && text[i * 3 + 2] != ':') return std::nullopt;
    unsigned byte = 0;
    auto digits = text.substr(i * 3, 2);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + 2, byte, 16);
    if (ec != std::errc{} || end != digits.data() + 2) return std::nullopt;
    mac.bytes[i] = static_cast<uint8_t>(byte);
  }
  return mac;
}

std::string ipv4_to_string(Ipv4 ip) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
  return buf;
}

std::string Ipv4Prefix::to_string() const { return ipv4_to_string(addr) + "/" + std::to_string(len); }

std::string MacAddr::to_string() const {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", bytes[0], bytes[1], bytes[2], bytes[3],
                bytes[4], bytes[5]);
  return buf;
}

}  // namespace kdp
