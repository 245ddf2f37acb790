#include "dataplane/packet_build.h"

#include <rte_ip_frag.h>

namespace kdp {

bool write_arp(rte_mbuf* m, uint16_t op, const rte_ether_addr& eth_dst, const rte_ether_addr& sender_mac,
               be32 sender_ip, const rte_ether_addr& target_mac, be32 target_ip) {
  constexpr uint16_t kLen = sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr);
  rte_pktmbuf_reset(m);
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, kLen));
  if (eth == nullptr) return false;
  eth->dst_addr = eth_dst;
  eth->src_addr = sender_mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = rte_cpu_to_be_16(op);
  arp->arp_data.arp_sha = sender_mac;
  arp->arp_data.arp_sip = static_cast<uint32_t>(sender_ip);
  arp->arp_data.arp_tha = target_mac;
  arp->arp_data.arp_tip = static_cast<uint32_t>(target_ip);
  m->l2_len = sizeof(rte_ether_hdr);
  return true;
}

unsigned fragment_ipv4(rte_mbuf* m, uint16_t mtu, rte_mempool* pool, rte_mbuf** out, unsigned max_out) {
  const rte_ether_hdr eth = *rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  const PacketMeta md = meta(m);
  rte_pktmbuf_adj(m, sizeof(rte_ether_hdr));  // the library wants the IPv4 header first
  // Fragment offsets count 8-byte units: every fragment but the last carries
  // a multiple of 8 bytes of payload.
  const unsigned header_len = rte_ipv4_hdr_len(rte_pktmbuf_mtod(m, const rte_ipv4_hdr*));
  const auto fragment_mtu = static_cast<uint16_t>(header_len + ((mtu - header_len) & ~7u));
  const int32_t n = rte_ipv4_fragment_packet(m, out, static_cast<uint16_t>(max_out), fragment_mtu, pool, pool);
  if (n <= 0) {
    rte_pktmbuf_prepend(m, sizeof(rte_ether_hdr));  // as it came: the caller drops it
    return 0;
  }
  unsigned done = 0;
  for (; done < static_cast<unsigned>(n); ++done) {
    rte_mbuf* f = out[done];
    // One segment, as every stage expects: the payload copied in after the header.
    if (rte_pktmbuf_linearize(f) != 0 || rte_pktmbuf_prepend(f, sizeof(rte_ether_hdr)) == nullptr) break;
    *rte_pktmbuf_mtod(f, rte_ether_hdr*) = eth;
    auto* ip = rte_pktmbuf_mtod_offset(f, rte_ipv4_hdr*, sizeof(rte_ether_hdr));
    ip->hdr_checksum = 0;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    meta(f) = md;
    f->l2_len = sizeof(rte_ether_hdr);
    f->l3_len = rte_ipv4_hdr_len(ip);
  }
  if (done == static_cast<unsigned>(n)) {
    rte_pktmbuf_free(m);  // the fragments hold copies of its data now
    return done;
  }
  for (int32_t k = 0; k < n; ++k) rte_pktmbuf_free(out[k]);
  rte_pktmbuf_prepend(m, sizeof(rte_ether_hdr));
  return 0;
}

}  // namespace kdp
