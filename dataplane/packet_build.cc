#include "dataplane/packet_build.h"

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

}  // namespace kdp
