// Router: the node's per-CIDR router. LPM over the route snapshot, martian
// checks, TTL, the next hop and egress port; new pod traffic leaving the
// cluster goes by Masquerade. Neighbor then writes the next hop's MAC (pods:
// the port from the FDB); unresolved next hops are punted to the control
// thread, which holds them while it resolves.
#include "dataplane/packet_build.h"
#include "dataplane/stages.h"

#include <algorithm>

namespace kdp {

namespace {

bool martian_source(Ipv4 src) {
  return src == 0 || (src >> 24) == 127 || (src >> 28) == 0xe || src == 0xffffffff;
}
bool martian_destination(Ipv4 dst) { return (dst >> 24) == 0 || (dst >> 24) == 127; }
bool multicast_or_broadcast(Ipv4 dst) { return (dst >> 28) == 0xe || dst == 0xffffffff; }

}  // namespace

void Router::process(Burst& burst) {
  const unsigned n = burst.n;
  NodeTables& tables = ctx_.tables;
  uint32_t dst_ips[kBurstCapacity];
  const NextHop* hops[kBurstCapacity];
  for (unsigned i = 0; i < n; ++i) {
    auto* ip = rte_pktmbuf_mtod_offset(burst.pkts[i], rte_ipv4_hdr*, sizeof(rte_ether_hdr));
    dst_ips[i] = rte_be_to_cpu_32(ip->dst_addr);
  }
  tables.routes()->lookup_bulk(dst_ips, n, hops);

  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    PacketMeta& md = meta(m);
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, sizeof(rte_ether_hdr));
    const Ipv4 src = rte_be_to_cpu_32(ip->src_addr);
    if (martian_source(src)) {
      burst.drop(i, DropReason::MartianSource);
      continue;
    }
    if (martian_destination(dst_ips[i])) {
      burst.drop(i, DropReason::MartianDestination);
      continue;
    }
    if (multicast_or_broadcast(dst_ips[i])) {
      burst.drop(i, DropReason::Consumed);  // kdp does not route multicast
      continue;
    }
    const NextHop* hop = hops[i];
    if (hop == nullptr) {
      md.drop_reason = static_cast<uint8_t>(DropReason::NoRoute);
      md.icmp_type = 3;  // destination unreachable: network unreachable
      md.icmp_code = 0;
      burst.send(i, StageId::Icmp);
      continue;
    }
    if (hop->kind == NextHopKind::Blackhole) {
      burst.drop(i, DropReason::MartianDestination);
      continue;
    }
    if (hop->kind == NextHopKind::Local) {
      md.icmp_type = kIcmpLocalDelivery;
      burst.send(i, StageId::Icmp);
      continue;
    }
    // The node's own packets (from the host port) start their first hop here.
    const bool from_host = md.in_port == tables.host_port;
    if (ip->time_to_live <= 1 && !from_host) {
      md.drop_reason = static_cast<uint8_t>(DropReason::TtlExceeded);
      md.icmp_type = 11;  // time exceeded in transit
      md.icmp_code = 0;
      burst.send(i, StageId::Icmp);
      continue;
    }
    const bool to_pod = hop->kind == NextHopKind::PodNet;
    md.out_port = to_pod ? kNoPort : hop->port;
    if (to_pod) md.flags |= kFlagToBridgeNet;
    else md.flags &= ~kFlagToBridgeNet;
    // Too large for the egress link with DF set: RFC 1191's error, about the
    // packet as it arrived (Fragment cuts those without DF).
    const unsigned ip_len = rte_be_to_cpu_16(ip->total_length);
    const uint16_t mtu = egress_mtu(*ctx_.ports, md);
    const bool oversize = ip_len > mtu;
    if (oversize && (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG))) {
      md.drop_reason = static_cast<uint8_t>(DropReason::FragmentationNeeded);
      md.icmp_type = 3;  // destination unreachable: fragmentation needed and DF set
      md.icmp_code = 4;
      md.next_hop_mtu = mtu;
      burst.send(i, StageId::Icmp);
      continue;
    }
    // Ethernet padding is not part of the datagram.
    const unsigned frame_len = sizeof(rte_ether_hdr) + ip_len;
    if (m->data_len > frame_len) rte_pktmbuf_trim(m, m->data_len - frame_len);
    if (!from_host) ipv4_decrement_ttl(ip);

    const Ipv4 next_hop_ip = hop->kind == NextHopKind::Gateway ? hop->gateway : dst_ips[i];
    md.next_hop = to_be32(next_hop_ip);
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    eth->src_addr = to_pod ? tables.gateway_mac : ctx_.ports->ports[hop->port].mac;
    // New pod traffic leaving the cluster is masqueraded (POSTROUTING).
    const Ipv4 src_ip = rte_be_to_cpu_32(ip->src_addr);
    const auto& nat = tables.config.nat;
    const auto& node = tables.config.node;
    const bool masquerade = !to_pod && nat.masquerade_egress && !(md.flags & kFlagNatDone) &&
                            node.cluster_cidr.contains(src_ip) && !node.cluster_cidr.contains(dst_ips[i]) &&
                            !(node.service_cidr && node.service_cidr->contains(dst_ips[i])) &&
                            !std::any_of(nat.non_masquerade_cidrs.begin(), nat.non_masquerade_cidrs.end(),
                                         [&](const Ipv4Prefix& p) { return p.contains(dst_ips[i]); });
    burst.send(i, masquerade ? StageId::Masquerade : oversize ? StageId::Fragment : StageId::Neighbor);
  }
}

// Fragment: routed packets over their egress MTU without DF, cut after NAT
// into one-segment fragments that go on to Neighbor.
void Fragment::process(Burst& burst) {
  const PortSet& ports = *ctx_.ports;
  const unsigned n = burst.n;  // fragments appended below are not revisited
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    rte_mbuf* fragments[kBurstCapacity];
    const unsigned count =
        fragment_ipv4(m, egress_mtu(ports, meta(m)), ctx_.pool, fragments, kBurstCapacity - burst.n + 1);
    if (count == 0) {
      // More fragments than this burst has room for, or no mbufs for them.
      burst.drop(i, DropReason::FragmentationFailed);
      continue;
    }
    ctx_.counters.fragments_made.add(count);
    burst.pkts[i] = fragments[0];
    burst.send(i, StageId::Neighbor);
    for (unsigned k = 1; k < count; ++k) burst.push(fragments[k], StageId::Neighbor);  // room checked above
  }
}

// Neighbor: writes the next hop's MAC (the neighbour table) and, for pods,
// picks the bridge port from the FDB; unresolved next hops go to the
// control thread.
void Neighbor::process(Burst& burst) {
  NodeTables& tables = ctx_.tables;
  const unsigned n_fwd = burst.n;
  NeighborKey nbr_keys[kBurstCapacity];
  for (unsigned i = 0; i < n_fwd; ++i) nbr_keys[i] = NeighborKey{meta(burst.pkts[i]).next_hop};
  if (n_fwd == 0) return;

  NeighborEntry* nbrs[kBurstCapacity];
  tables.neighbors.lookup_bulk(nbr_keys, n_fwd, nbrs);
  unsigned pods[kBurstCapacity];
  FdbKey pod_macs[kBurstCapacity];
  unsigned n_pods = 0;
  for (unsigned i = 0; i < n_fwd; ++i) {
    rte_mbuf* m = burst.pkts[i];
    NeighborEntry* nbr = nbrs[i];
    if (nbr == nullptr) {
      burst.send(i, StageId::Punt);
      continue;
    }
    if (nbr->last_used_s.load(std::memory_order_relaxed) != ctx_.now_s)
      nbr->last_used_s.store(ctx_.now_s, std::memory_order_relaxed);
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    nbr->mac(eth->dst_addr);
    if (meta(m).flags & kFlagToBridgeNet) {
      pod_macs[n_pods] = fdb_key(eth->dst_addr);
      pods[n_pods++] = i;
    } else {
      burst.output(i, meta(m).out_port);
    }
  }
  if (n_pods == 0) return;

  FdbEntry* ports[kBurstCapacity];
  tables.fdb.lookup_bulk(pod_macs, n_pods, ports);
  for (unsigned k = 0; k < n_pods; ++k)
    burst.output(pods[k], ports[k] ? ports[k]->port.load(std::memory_order_relaxed) : kFloodPort);
}

}  // namespace kdp
