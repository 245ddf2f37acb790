// Classify: validates what every later stage relies on (frame length, one
// segment, 802.1Q policy, IPv4 header and L4 header lengths) and picks the
// first stage from the ingress port's role.
#include <rte_arp.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "dataplane/stages.h"

namespace kdp {

namespace {

constexpr unsigned kEthLen = sizeof(rte_ether_hdr);

// Checks the IPv4 packet at offset kEthLen; fills l3_len and meta. Returns
// DropReason::Count when valid.
DropReason validate_ipv4(rte_mbuf* m, PacketMeta& md) {
  unsigned avail = m->data_len - kEthLen;
  if (avail < sizeof(rte_ipv4_hdr)) return DropReason::Ipv4TooShort;
  auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, kEthLen);
  if ((ip->version_ihl >> 4) != 4) return DropReason::Ipv4BadVersion;
  unsigned ihl = (ip->version_ihl & 0x0f) * 4u;
  if (ihl < sizeof(rte_ipv4_hdr) || ihl > avail) return DropReason::Ipv4BadIhl;
  unsigned total = rte_be_to_cpu_16(ip->total_length);
  if (total < ihl || total > avail) return DropReason::Ipv4BadTotalLength;
  switch (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) {
    case RTE_MBUF_F_RX_IP_CKSUM_GOOD: break;
    case RTE_MBUF_F_RX_IP_CKSUM_BAD: return DropReason::Ipv4BadChecksum;
    default:
      // A correct header, checksum field included, sums to 0xffff.
      if (rte_raw_cksum(ip, ihl) != 0xffff) return DropReason::Ipv4BadChecksum;
  }
  m->l3_len = ihl;
  md.l4_proto = ip->next_proto_id;
  md.flags |= kFlagIpv4;
  uint16_t frag = rte_be_to_cpu_16(ip->fragment_offset);
  if (frag & RTE_IPV4_HDR_OFFSET_MASK) {
    md.flags |= kFlagFragment;  // no L4 header in this one
    return DropReason::Count;
  }
  bool more_fragments = frag & RTE_IPV4_HDR_MF_FLAG;
  unsigned l4_len = total - ihl;
  const uint8_t* l4 = reinterpret_cast<const uint8_t*>(ip) + ihl;
  switch (ip->next_proto_id) {
    case IPPROTO_TCP: {
      if (l4_len < sizeof(rte_tcp_hdr)) return DropReason::L4Truncated;
      unsigned data_off = (reinterpret_cast<const rte_tcp_hdr*>(l4)->data_off >> 4) * 4u;
      if (data_off < sizeof(rte_tcp_hdr) || data_off > l4_len) return DropReason::TcpBadDataOffset;
      break;
    }
    case IPPROTO_UDP: {
      if (l4_len < sizeof(rte_udp_hdr)) return DropReason::L4Truncated;
      unsigned udp_len = rte_be_to_cpu_16(reinterpret_cast<const rte_udp_hdr*>(l4)->dgram_len);
      // The first fragment carries the length of the whole datagram.
      if (udp_len < sizeof(rte_udp_hdr) || (!more_fragments && udp_len > l4_len)) return DropReason::UdpBadLength;
      break;
    }
    case IPPROTO_ICMP:
      if (l4_len < 8) return DropReason::L4Truncated;
      break;
    default: break;
  }
  return DropReason::Count;
}

}  // namespace

void Classify::process(Burst& burst) {
  const VlanPolicy vlan_policy = ctx_.tables.config.dataplane.vlan;
  for (unsigned i = 0; i < burst.n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    PacketMeta& md = meta(m);
    md.flags = 0;
    md.out_port = kNoPort;
    md.flood_exclude = kNoPort;
    md.icmp_type = 0;
    md.icmp_from_dst = 0;
    if (m->nb_segs != 1) {
      burst.drop(i, DropReason::MultiSegment);
      continue;
    }
    if (m->data_len < kEthLen) {
      burst.drop(i, DropReason::Runt);
      continue;
    }
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    uint16_t type = rte_be_to_cpu_16(eth->ether_type);
    if (type == RTE_ETHER_TYPE_VLAN || type == RTE_ETHER_TYPE_QINQ) {
      // Only one tag can be stripped; a stacked tag stays tagged and drops.
      if (vlan_policy == VlanPolicy::Drop || type == RTE_ETHER_TYPE_QINQ || m->data_len < kEthLen + 4 ||
          rte_vlan_strip(m) != 0) {
        burst.drop(i, DropReason::VlanTagged);
        continue;
      }
      eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
      type = rte_be_to_cpu_16(eth->ether_type);
      if (type == RTE_ETHER_TYPE_VLAN || type == RTE_ETHER_TYPE_QINQ) {
        burst.drop(i, DropReason::VlanTagged);
        continue;
      }
    }
    if (rte_is_multicast_ether_addr(&eth->src_addr)) {
      burst.drop(i, DropReason::SrcMacMulticast);
      continue;
    }
    if (rte_is_broadcast_ether_addr(&eth->dst_addr)) md.flags |= kFlagBroadcast | kFlagMulticast;
    else if (rte_is_multicast_ether_addr(&eth->dst_addr)) md.flags |= kFlagMulticast;
    m->l2_len = kEthLen;

    if (type == RTE_ETHER_TYPE_IPV4) {
      DropReason bad = validate_ipv4(m, md);
      if (bad != DropReason::Count) {
        burst.drop(i, bad);
        continue;
      }
    } else if (type == RTE_ETHER_TYPE_ARP) {
      if (m->data_len < kEthLen + sizeof(rte_arp_hdr)) {
        burst.drop(i, DropReason::ArpMalformed);
        continue;
      }
      md.flags |= kFlagArp;
    }

    const PortInfo& port = ctx_.ports->ports[md.in_port];
    if (port.role == PortRole::Pod) {
      burst.send(i, StageId::Bridge);
      continue;
    }
    // Uplink: only frames for our MAC (or broadcast ARP) concern a router.
    bool for_us = rte_is_same_ether_addr(&eth->dst_addr, &port.mac) || (md.flags & kFlagBroadcast);
    if (!for_us) burst.drop(i, DropReason::NotForUs);
    else if (md.flags & kFlagArp) burst.send(i, StageId::Arp);
    else if ((md.flags & kFlagIpv4) && !(md.flags & kFlagMulticast)) burst.send(i, StageId::Nat);
    else burst.drop(i, (md.flags & kFlagIpv4) ? DropReason::NotForUs : DropReason::UnsupportedEtherType);
  }
}

}  // namespace kdp
