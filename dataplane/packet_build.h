// Helpers that write whole frames or header fields kdp generates.
#pragma once

#include <rte_arp.h>
#include <rte_ip.h>

#include "dataplane/types.h"

namespace kdp {

// Writes an Ethernet+ARP frame into `m` (resetting its data); false when
// the mbuf has no room.
bool write_arp(rte_mbuf* m, uint16_t op, const rte_ether_addr& eth_dst, const rte_ether_addr& sender_mac,
               be32 sender_ip, const rte_ether_addr& target_mac, be32 target_ip);

// Splits `m` (Ethernet + an IPv4 packet without DF) into IPv4 fragments of
// at most `mtu` bytes with rte_ipv4_fragment_packet, each one segment from
// `pool` with m's Ethernet header and PacketMeta, and frees `m`. Returns how
// many it wrote to `out`; 0, with `m` as it was, when they would not fit in
// `max_out` or mbufs ran out.
unsigned fragment_ipv4(rte_mbuf* m, uint16_t mtu, rte_mempool* pool, rte_mbuf** out, unsigned max_out);

// RFC 1624 incremental update of a ones'-complement checksum when one 16-bit
// word changes (all values in network order).
inline uint16_t checksum_replace16(uint16_t checksum, uint16_t old_word, uint16_t new_word) {
  uint32_t sum = static_cast<uint16_t>(~checksum) + static_cast<uint16_t>(~old_word) + new_word;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Decrements TTL and patches the header checksum.
inline void ipv4_decrement_ttl(rte_ipv4_hdr* ip) {
  uint16_t old_word, new_word;
  std::memcpy(&old_word, &ip->time_to_live, 2);  // TTL and protocol share a word
  --ip->time_to_live;
  std::memcpy(&new_word, &ip->time_to_live, 2);
  ip->hdr_checksum = checksum_replace16(ip->hdr_checksum, old_word, new_word);
}

}  // namespace kdp
