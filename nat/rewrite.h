// Address and port rewrites with incremental checksum updates (RFC 1624):
// the IPv4 header checksum, and the TCP/UDP checksum whose pseudo-header
// covers the addresses. ICMP echo identifiers stand in for ports.
#pragma once

#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "dataplane/packet_build.h"
#include "dataplane/types.h"

namespace kdp {

// Where a packet's L4 "port" words sit, if it has any.
struct L4Ports {
  uint8_t* src = nullptr;       // 16-bit network-order fields, read and written through memcpy
  uint8_t* dst = nullptr;
  uint8_t* checksum = nullptr;  // null: no checksum to fix (UDP with 0)
  bool pseudo_header = false;    // the checksum covers the IP addresses
};

inline uint16_t load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline void store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Replaces a 32-bit value covered by a checksum (as two 16-bit words).
inline uint16_t checksum_replace32(uint16_t checksum, uint32_t old_value, uint32_t new_value) {
  checksum = checksum_replace16(checksum, static_cast<uint16_t>(old_value), static_cast<uint16_t>(new_value));
  return checksum_replace16(checksum, static_cast<uint16_t>(old_value >> 16), static_cast<uint16_t>(new_value >> 16));
}

// Locates ports and checksum of the first fragment's L4 header.
inline L4Ports l4_ports(rte_ipv4_hdr* ip, unsigned l3_len) {
  uint8_t* l4 = reinterpret_cast<uint8_t*>(ip) + l3_len;
  L4Ports p;
  switch (ip->next_proto_id) {
    case IPPROTO_TCP:
      p = {l4 + offsetof(rte_tcp_hdr, src_port), l4 + offsetof(rte_tcp_hdr, dst_port), l4 + offsetof(rte_tcp_hdr, cksum),
           true};
      break;
    case IPPROTO_UDP:
      p = {l4 + offsetof(rte_udp_hdr, src_port), l4 + offsetof(rte_udp_hdr, dst_port),
           load16(l4 + offsetof(rte_udp_hdr, dgram_cksum)) != 0 ? l4 + offsetof(rte_udp_hdr, dgram_cksum) : nullptr,
           true};
      break;
    case IPPROTO_ICMP:
      // Echo: the identifier is the "port" of both ends; the checksum does
      // not cover the IP header.
      p = {l4 + offsetof(rte_icmp_hdr, icmp_ident), l4 + offsetof(rte_icmp_hdr, icmp_ident),
           l4 + offsetof(rte_icmp_hdr, icmp_cksum), false};
      break;
    default: break;
  }
  return p;
}

// Rewrites source and destination address and port of an IPv4 packet, each
// only if it changes. Values in network order.
inline void nat_rewrite(rte_ipv4_hdr* ip, unsigned l3_len, be32 src_ip, be16 src_port, be32 dst_ip, be16 dst_port) {
  L4Ports l4 = l4_ports(ip, l3_len);
  uint16_t l4_sum = l4.checksum ? load16(l4.checksum) : 0;
  const auto new_src = static_cast<uint32_t>(src_ip), new_dst = static_cast<uint32_t>(dst_ip);
  if (ip->src_addr != new_src) {
    ip->hdr_checksum = checksum_replace32(ip->hdr_checksum, ip->src_addr, new_src);
    if (l4.pseudo_header) l4_sum = checksum_replace32(l4_sum, ip->src_addr, new_src);
    ip->src_addr = new_src;
  }
  if (ip->dst_addr != new_dst) {
    ip->hdr_checksum = checksum_replace32(ip->hdr_checksum, ip->dst_addr, new_dst);
    if (l4.pseudo_header) l4_sum = checksum_replace32(l4_sum, ip->dst_addr, new_dst);
    ip->dst_addr = new_dst;
  }
  if (l4.src != nullptr) {
    const auto sp = static_cast<uint16_t>(src_port), dp = static_cast<uint16_t>(dst_port);
    if (l4.src == l4.dst) {
      // ICMP echo: a request's identifier is the flow key's source port,
      // a reply's its destination port.
      const uint8_t type = *(reinterpret_cast<const uint8_t*>(ip) + l3_len);
      const uint16_t id = type == RTE_IP_ICMP_ECHO_REQUEST ? sp : dp;
      if (load16(l4.src) != id) {
        l4_sum = checksum_replace16(l4_sum, load16(l4.src), id);
        store16(l4.src, id);
      }
    } else {
      if (load16(l4.src) != sp) {
        l4_sum = checksum_replace16(l4_sum, load16(l4.src), sp);
        store16(l4.src, sp);
      }
      if (load16(l4.dst) != dp) {
        l4_sum = checksum_replace16(l4_sum, load16(l4.dst), dp);
        store16(l4.dst, dp);
      }
    }
  }
  // A UDP checksum that computes to 0 is sent as 0xffff (0 means "none").
  if (l4.checksum != nullptr) store16(l4.checksum, (ip->next_proto_id == IPPROTO_UDP && l4_sum == 0) ? 0xffff : l4_sum);
}

}  // namespace kdp
