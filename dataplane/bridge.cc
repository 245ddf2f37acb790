// Bridge: the node's cbr0. Learns source MACs per pod port (through the
// control thread, which owns the FDB), forwards known unicast, floods
// broadcast, multicast and unknown unicast, and hands frames addressed to
// the gateway MAC to the router.
#include <rte_arp.h>
#include <rte_ip.h>

#include "dataplane/stages.h"

namespace kdp {

namespace {

// Anti-spoofing: a port with registered pods accepts only their MACs and,
// for IPv4 and ARP, their addresses; DropReason::Count when the frame may pass.
DropReason spoofing_check(const std::vector<PodIdentity>& pods, rte_mbuf* m) {
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  const uint64_t src_mac = mac_to_u64(eth->src_addr);
  const PodIdentity* pod = nullptr;
  for (const auto& p : pods)
    if (p.mac == src_mac || p.any_mac) pod = &p;
  if (pod == nullptr) return DropReason::SpoofedSourceMac;
  const PacketMeta& md = meta(m);
  if (md.flags & kFlagIpv4) {
    const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
    if (ip->src_addr != static_cast<uint32_t>(pod->ip)) return DropReason::SpoofedSourceIp;
  } else if (md.flags & kFlagArp) {
    const auto* arp = reinterpret_cast<const rte_arp_hdr*>(eth + 1);
    // ARP probes (RFC 5227) carry sender address 0.
    if (mac_to_u64(arp->arp_data.arp_sha) != src_mac ||
        (arp->arp_data.arp_sip != static_cast<uint32_t>(pod->ip) && arp->arp_data.arp_sip != 0))
      return DropReason::SpoofedArp;
  }
  return DropReason::Count;
}

}  // namespace

void Bridge::process(Burst& burst) {
  const unsigned n = burst.n;
  FdbKey src_keys[kBurstCapacity], dst_keys[kBurstCapacity];
  FdbEntry* src_entries[kBurstCapacity];
  FdbEntry* dst_entries[kBurstCapacity];
  for (unsigned i = 0; i < n; ++i) {
    auto* eth = rte_pktmbuf_mtod(burst.pkts[i], rte_ether_hdr*);
    src_keys[i] = fdb_key(eth->src_addr);
    dst_keys[i] = fdb_key(eth->dst_addr);
  }
  const Fdb& fdb = ctx_.tables.fdb;
  fdb.lookup_bulk(src_keys, n, src_entries);
  fdb.lookup_bulk(dst_keys, n, dst_entries);

  const rte_ether_addr& gateway_mac = ctx_.tables.gateway_mac;
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    PacketMeta& md = meta(m);
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    const uint16_t in = md.in_port;
    if (const auto& pods = ctx_.ports->port_pods[in]; !pods.empty()) {
      if (DropReason spoofed = spoofing_check(pods, m); spoofed != DropReason::Count) {
        burst.drop(i, spoofed);
        continue;
      }
    }

    // Learning: a new source or a MAC move is reported; a known one refreshed.
    if (FdbEntry* e = src_entries[i]; e == nullptr || e->port.load(std::memory_order_relaxed) != in) {
      if (!ctx_.learn_filter.seen(mac_to_u64(eth->src_addr) | uint64_t(in) << 48, ctx_.now_s))
        ctx_.report({LearnEvent::Kind::Mac, false, in, eth->src_addr, be32{}});
    } else if (e->last_seen_s.load(std::memory_order_relaxed) != ctx_.now_s) {
      e->last_seen_s.store(ctx_.now_s, std::memory_order_relaxed);
    }

    if (rte_is_same_ether_addr(&eth->dst_addr, &gateway_mac)) {
      if (md.flags & kFlagArp) burst.send(i, StageId::Arp);
      else if (md.flags & kFlagIpv4) burst.send(i, StageId::Nat);
      else burst.drop(i, DropReason::UnsupportedEtherType);
    } else if (md.flags & kFlagMulticast) {
      // A broadcast ARP may ask for the gateway: the ARP stage answers and
      // still floods it to the other pods.
      if ((md.flags & kFlagBroadcast) && (md.flags & kFlagArp)) {
        md.flags |= kFlagAlsoFlood;
        md.flood_exclude = in;
        burst.send(i, StageId::Arp);
      } else {
        burst.output(i, kFloodPort, in);
      }
    } else if (FdbEntry* d = dst_entries[i]) {
      uint16_t out = d->port.load(std::memory_order_relaxed);
      if (out == in) burst.drop(i, DropReason::SamePort);  // no hairpin, as a Linux bridge
      else burst.output(i, out);
    } else {
      burst.output(i, kFloodPort, in);
    }
    // Bridged frames go by conntrack (is_bridged) before they leave; all of
    // them, so frames between two pods keep their order.
    if (burst.next[i] == StageId::Output) burst.send(i, StageId::Nat);
  }
}

}  // namespace kdp
