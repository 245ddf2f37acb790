// ServiceNat (PREROUTING): finds each packet's flow and translates it in the
// flow's direction; a new connection to a Service VIP picks a backend, is
// masqueraded when kube-proxy would, and becomes a flow. Masquerade
// (POSTROUTING): new pod traffic leaving the cluster gets the node IP.
#include <rte_hash_crc.h>
#include <rte_random.h>

#include <algorithm>

#include "dataplane/stages.h"
#include "nat/rewrite.h"

namespace kdp {

namespace {

constexpr unsigned kEthLen = sizeof(rte_ether_hdr);
constexpr unsigned kSnatTries = 16;

rte_ipv4_hdr* ipv4_of(rte_mbuf* m) { return rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, kEthLen); }

// A SYN's window scale option (RFC 7323; above 14 counts as 14), -1 when it
// has none. Classify checked that the options lie within the packet.
int8_t tcp_window_scale(const uint8_t* tcp, unsigned header_len) {
  for (unsigned i = sizeof(rte_tcp_hdr); i < header_len;) {
    const uint8_t kind = tcp[i];
    if (kind == 0) break;  // end of options
    if (kind == 1) {       // no-operation
      ++i;
      continue;
    }
    if (i + 1 >= header_len) break;
    const uint8_t len = tcp[i + 1];
    if (len < 2 || i + len > header_len) break;
    if (kind == 3 && len == 3) return static_cast<int8_t>(std::min<uint8_t>(tcp[i + 2], kTcpMaxWindowScale));
    i += len;
  }
  return -1;
}

// What conntrack's window tracking reads from a TCP header.
void tcp_segment_of(const rte_ipv4_hdr* ip, unsigned l3_len, const uint8_t* l4, TcpSegment& seg) {
  const auto* tcp = reinterpret_cast<const rte_tcp_hdr*>(l4);
  const unsigned header_len = (tcp->data_off >> 4) * 4u;
  const unsigned l4_len = rte_be_to_cpu_16(ip->total_length) - l3_len;
  seg.seq = rte_be_to_cpu_32(tcp->sent_seq);
  seg.ack = rte_be_to_cpu_32(tcp->recv_ack);
  seg.payload = l4_len > header_len ? l4_len - header_len : 0;
  seg.window = rte_be_to_cpu_16(tcp->rx_win);
  seg.flags = tcp->tcp_flags;
  seg.wscale = (seg.flags & kTcpSyn) ? tcp_window_scale(l4, header_len) : -1;
}

// The flow key of a packet; false for packets conntrack does not follow
// (later fragments, ICMP other than echo, protocols without ports). `seg`
// gets a TCP packet's segment (for other protocols only its flags, 0).
bool flow_key_of(rte_mbuf* m, FlowKey& key, TcpSegment& seg) {
  const PacketMeta& md = meta(m);
  if (!(md.flags & kFlagIpv4) || (md.flags & kFlagFragment)) return false;
  rte_ipv4_hdr* ip = ipv4_of(m);
  const uint8_t* l4 = reinterpret_cast<const uint8_t*>(ip) + m->l3_len;
  key = {be32{ip->src_addr}, be32{ip->dst_addr}, {}, {}, ip->next_proto_id, {}};
  seg.flags = 0;
  switch (ip->next_proto_id) {
    case IPPROTO_TCP:
      tcp_segment_of(ip, m->l3_len, l4, seg);
      [[fallthrough]];
    case IPPROTO_UDP:
      std::memcpy(&key.src_port, l4, 2);
      std::memcpy(&key.dst_port, l4 + 2, 2);
      return true;
    case IPPROTO_ICMP: {
      const auto* icmp = reinterpret_cast<const rte_icmp_hdr*>(l4);
      if (icmp->icmp_type == RTE_IP_ICMP_ECHO_REQUEST) key.src_port = be16{icmp->icmp_ident};
      else if (icmp->icmp_type == RTE_IP_ICMP_ECHO_REPLY) key.dst_port = be16{icmp->icmp_ident};
      else return false;
      return true;
    }
    default: return false;
  }
}

// Rewrites a packet of `flow` going in `dir` to what the other end expects.
void translate(rte_mbuf* m, const FlowEntry& flow, FlowDir dir) {
  const FlowKey& to = dir == FlowDir::Original ? flow.reply : flow.orig;
  // The reply tuple, reversed, is how an original packet must look after
  // translation, and the other way round.
  nat_rewrite(ipv4_of(m), m->l3_len, to.dst_ip, to.dst_port, to.src_ip, to.src_port);
}

// Picks a source port from this worker's share of the SNAT range for which
// the flow's reply tuple is free, and creates the flow.
FlowEntry* create_with_snat(WorkerContext& ctx, const FlowKey& orig, FlowKey reply, uint8_t nat_flags,
                            uint32_t service, const TcpSegment& opening, DropReason& why) {
  Conntrack& ct = *ctx.tables.conntrack;
  for (unsigned t = 0; t < kSnatTries; ++t) {
    reply.dst_port = to_be16(ctx.snat_port_next);
    ctx.snat_port_next = ctx.snat_port_next == ctx.snat_port_high ? ctx.snat_port_low : ctx.snat_port_next + 1;
    Conntrack::CreateFailure failure;
    if (FlowEntry* e = ct.create(orig, reply, nat_flags, service, ctx.now_s, TcpState::SynSent, &failure, &opening))
      return e;
    if (failure == Conntrack::CreateFailure::Full) {
      why = DropReason::ConntrackFull;
      return nullptr;
    }
  }
  why = DropReason::SnatPortsExhausted;
  return nullptr;
}

const BackendWire& choose_backend(const ServiceSlot& slot, const BackendSet& set, const FlowKey& key) {
  switch (slot.lb) {
    case LbAlgorithm::Maglev:
      return set.backends[set.maglev[rte_hash_crc(&key, sizeof key, 0) % set.maglev.size()]];
    case LbAlgorithm::RoundRobin:
      return set.backends[slot.next_round_robin() % set.backends.size()];
    case LbAlgorithm::Random: break;
  }
  return set.backends[rte_rand_max(set.backends.size())];
}

// Why a packet conntrack did not accept is dropped.
DropReason drop_reason_of(Conntrack::Verdict v) {
  return v == Conntrack::Verdict::OutOfWindow ? DropReason::ConntrackTcpOutOfWindow : DropReason::ConntrackInvalid;
}

bool is_icmp_error(uint8_t type) { return type == 3 || type == 4 || type == 11 || type == 12; }

}  // namespace

// An ICMP error about a packet of a tracked flow (destination unreachable,
// fragmentation needed, time exceeded) is translated like the flow: the
// quoted header back to what its receiver sent, the outer addresses to the
// receiver (and to the VIP when the far end itself reports), so path MTU
// discovery and unreachable reports work through NAT. Returns false for an
// error about no tracked flow.
bool translate_icmp_error(Conntrack& ct, rte_mbuf* m) {
  rte_ipv4_hdr* ip = ipv4_of(m);
  uint8_t* icmp = reinterpret_cast<uint8_t*>(ip) + m->l3_len;
  const unsigned icmp_len = rte_be_to_cpu_16(ip->total_length) - m->l3_len;
  if (!is_icmp_error(icmp[0]) || icmp_len < 8 + sizeof(rte_ipv4_hdr) + 8) return false;
  auto* inner = reinterpret_cast<rte_ipv4_hdr*>(icmp + 8);
  const unsigned inner_ihl = (inner->version_ihl & 0x0f) * 4u;
  if (inner_ihl < sizeof(rte_ipv4_hdr) || 8 + inner_ihl + 8 > icmp_len) return false;
  uint8_t* inner_l4 = reinterpret_cast<uint8_t*>(inner) + inner_ihl;
  FlowKey quoted{be32{inner->src_addr}, be32{inner->dst_addr}, {}, {}, inner->next_proto_id, kConnection, {}};
  switch (inner->next_proto_id) {
    case IPPROTO_TCP:
    case IPPROTO_UDP:
      std::memcpy(&quoted.src_port, inner_l4, 2);
      std::memcpy(&quoted.dst_port, inner_l4 + 2, 2);
      break;
    case IPPROTO_ICMP:
      if (inner_l4[0] == RTE_IP_ICMP_ECHO_REQUEST) std::memcpy(&quoted.src_port, inner_l4 + 4, 2);
      else if (inner_l4[0] == RTE_IP_ICMP_ECHO_REPLY) std::memcpy(&quoted.dst_port, inner_l4 + 4, 2);
      else return false;
      break;
    default: return false;
  }
  // The quoted packet went the other way: its reverse is the key of the
  // direction this error travels.
  const FlowKey key = quoted.reversed();
  FlowRef ref;
  ct.lookup_bulk(&key, 1, &ref);
  if (ref.entry == nullptr || !(ref.entry->flags.load(std::memory_order_relaxed) & (kFlowDnat | kFlowSnat)))
    return ref.entry != nullptr;
  const FlowKey& seen = ref.dir == FlowDir::Original ? ref.entry->orig : ref.entry->reply;
  const FlowKey& want = ref.dir == FlowDir::Original ? ref.entry->reply : ref.entry->orig;

  // Quoted header: addresses and ports as its sender knows them, and the
  // quoted L4 checksum with them where the quote holds it: a UDP one (if
  // used) always, a TCP one when more than the 8 L4 bytes of RFC 792 are
  // quoted (RFC 1812 routers, kdp itself).
  const uint32_t new_src = static_cast<uint32_t>(want.src_ip), new_dst = static_cast<uint32_t>(want.dst_ip);
  uint8_t* l4_sum = nullptr;
  if (inner->next_proto_id == IPPROTO_UDP && load16(inner_l4 + 6) != 0) l4_sum = inner_l4 + 6;
  if (inner->next_proto_id == IPPROTO_TCP && 8 + inner_ihl + 18 <= icmp_len) l4_sum = inner_l4 + 16;
  uint16_t sum = l4_sum != nullptr ? load16(l4_sum) : 0;
  if (l4_sum != nullptr) {
    sum = checksum_replace32(sum, inner->src_addr, new_src);
    sum = checksum_replace32(sum, inner->dst_addr, new_dst);
  }
  inner->hdr_checksum = checksum_replace32(inner->hdr_checksum, inner->src_addr, new_src);
  inner->hdr_checksum = checksum_replace32(inner->hdr_checksum, inner->dst_addr, new_dst);
  inner->src_addr = new_src;
  inner->dst_addr = new_dst;
  if (inner->next_proto_id == IPPROTO_ICMP) {
    // the identifier is the one port of an echo
    store16(inner_l4 + 4, static_cast<uint16_t>(inner_l4[0] == RTE_IP_ICMP_ECHO_REQUEST ? want.src_port : want.dst_port));
  } else {
    if (l4_sum != nullptr) {
      sum = checksum_replace16(sum, load16(inner_l4), static_cast<uint16_t>(want.src_port));
      sum = checksum_replace16(sum, load16(inner_l4 + 2), static_cast<uint16_t>(want.dst_port));
      store16(l4_sum, inner->next_proto_id == IPPROTO_UDP && sum == 0 ? 0xffff : sum);
    }
    store16(inner_l4, static_cast<uint16_t>(want.src_port));
    store16(inner_l4 + 2, static_cast<uint16_t>(want.dst_port));
  }
  // Outer header: to the quoted packet's sender; from the VIP when the far
  // end of the flow reports about itself.
  const uint32_t outer_src = ip->src_addr == static_cast<uint32_t>(seen.src_ip) ? static_cast<uint32_t>(want.dst_ip)
                                                                                : ip->src_addr;
  const uint32_t outer_dst = static_cast<uint32_t>(want.src_ip);
  ip->hdr_checksum = checksum_replace32(ip->hdr_checksum, ip->src_addr, outer_src);
  ip->hdr_checksum = checksum_replace32(ip->hdr_checksum, ip->dst_addr, outer_dst);
  ip->src_addr = outer_src;
  ip->dst_addr = outer_dst;
  // The ICMP checksum covers the whole message, quote included.
  store16(icmp + 2, 0);
  store16(icmp + 2, static_cast<uint16_t>(~rte_raw_cksum(icmp, icmp_len)));
  return true;
}

namespace {

uint64_t pack_backend(const BackendWire& b) {
  return uint64_t{static_cast<uint32_t>(b.ip)} << 16 | static_cast<uint16_t>(b.port);
}

// kube-proxy's ClientIP affinity: a client goes back to the backend it was
// last sent to on this frontend, while that backend is still usable and the
// record has not timed out; each new connection refreshes the record.
const BackendWire& pick_backend(WorkerContext& ctx, const ServiceSlot& slot, const BackendSet& set,
                                const FlowKey& key) {
  if (slot.affinity_timeout_s == 0) return choose_backend(slot, set, key);
  Conntrack& ct = *ctx.tables.conntrack;
  const FlowKey affinity = Conntrack::affinity_key(key.src_ip, key.dst_ip, key.dst_port, key.proto);
  uint64_t remembered;
  const BackendWire* backend = nullptr;
  if (ct.find_affinity(affinity, ctx.now_s, remembered))
    for (const auto& b : set.backends)
      if (pack_backend(b) == remembered) backend = &b;
  if (backend == nullptr) backend = &choose_backend(slot, set, key);
  ct.remember_affinity(affinity, pack_backend(*backend), slot.id, slot.affinity_timeout_s, ctx.now_s);
  return *backend;
}

}  // namespace

void ServiceNat::process(Burst& burst) {
  NodeTables& tables = ctx_.tables;
  Conntrack& ct = *tables.conntrack;
  const unsigned n = burst.n;
  FlowKey keys[kBurstCapacity];
  TcpSegment segments[kBurstCapacity];
  unsigned keyed[kBurstCapacity];
  unsigned n_keyed = 0;
  unsigned icmp_errors[kBurstCapacity];  // handled last: their flow may open in this burst
  unsigned n_icmp_errors = 0;
  for (unsigned i = 0; i < n; ++i) {
    FlowKey k;
    TcpSegment seg;
    if (!flow_key_of(burst.pkts[i], k, seg)) {
      rte_mbuf* m = burst.pkts[i];
      if (is_bridged(meta(m))) {
        burst.send(i, StageId::Output);
        continue;
      }
      if (meta(m).l4_proto == IPPROTO_ICMP && !(meta(m).flags & kFlagFragment)) icmp_errors[n_icmp_errors++] = i;
      burst.send(i, StageId::Router);
      continue;
    }
    keys[n_keyed] = k;
    segments[n_keyed] = seg;
    keyed[n_keyed++] = i;
  }
  if (n_keyed != 0) translate_flows(burst, keys, segments, keyed, n_keyed);
  // ICMP errors about tracked flows are translated with them.
  for (unsigned e = 0; e < n_icmp_errors; ++e)
    if (translate_icmp_error(ct, burst.pkts[icmp_errors[e]])) meta(burst.pkts[icmp_errors[e]]).flags |= kFlagNatDone;
}

void ServiceNat::translate_flows(Burst& burst, const FlowKey* keys, const TcpSegment* segments,
                                 const unsigned* keyed, unsigned n_keyed) {
  NodeTables& tables = ctx_.tables;
  Conntrack& ct = *tables.conntrack;
  if (n_keyed == 0) return;
  FlowRef flows[kBurstCapacity];
  ct.lookup_bulk(keys, n_keyed, flows);

  // Packets of known flows are translated; the others may open a Service flow.
  const ServiceSnapshot& services = *tables.services();
  ServiceWireKey svc_keys[kBurstCapacity];
  unsigned misses[kBurstCapacity];
  unsigned n_miss = 0;
  for (unsigned k = 0; k < n_keyed; ++k) {
    const unsigned i = keyed[k];
    rte_mbuf* m = burst.pkts[i];
    FlowRef ref = flows[k];
    const bool reopened = ref.entry != nullptr && ref.dir == FlowDir::Original && keys[k].proto == IPPROTO_TCP &&
                          tcp_opens_flow(segments[k].flags) &&
                          (ref.entry->state() == TcpState::TimeWait || ref.entry->state() == TcpState::Close);
    if (ref.entry != nullptr && !ref.entry->has(kFlowDying) && !reopened && !ct.expired(*ref.entry, ctx_.now_s)) {
      if (const auto verdict = ct.update(*ref.entry, ref.dir, segments[k], ctx_.now_s);
          verdict != Conntrack::Verdict::Accept) {
        burst.drop(i, drop_reason_of(verdict));
        continue;
      }
      if (ref.entry->flags.load(std::memory_order_relaxed) & (kFlowDnat | kFlowSnat)) translate(m, *ref.entry, ref.dir);
      meta(m).flags |= kFlagNatDone;
      burst.send(i, is_bridged(meta(m)) ? StageId::Output : StageId::Router);
      continue;
    }
    if (is_bridged(meta(m))) {
      burst.send(i, StageId::Output);  // no Service is reached by bridging
      continue;
    }
    svc_keys[n_miss] = {keys[k].dst_ip, keys[k].dst_port, keys[k].proto, 0};
    misses[n_miss++] = k;
  }
  if (n_miss == 0) return;
  const ServiceSlot* slots[kBurstCapacity];
  services.lookup_bulk(svc_keys, n_miss, slots);

  const auto& node = tables.config.node;
  for (unsigned s = 0; s < n_miss; ++s) {
    const unsigned k = misses[s];
    const unsigned i = keyed[k];
    rte_mbuf* m = burst.pkts[i];
    PacketMeta& md = meta(m);
    const FlowKey& key = keys[k];
    // An earlier packet of this burst may have opened the flow.
    FlowRef again;
    ct.lookup_bulk(&key, 1, &again);
    if (again.entry != nullptr && !again.entry->has(kFlowDying) &&
        seconds_since(ctx_.now_s, again.entry->created_s) == 0 && !ct.expired(*again.entry, ctx_.now_s)) {
      if (const auto verdict = ct.update(*again.entry, again.dir, segments[k], ctx_.now_s);
          verdict != Conntrack::Verdict::Accept) {
        burst.drop(i, drop_reason_of(verdict));
        continue;
      }
      if (again.entry->flags.load(std::memory_order_relaxed) & (kFlowDnat | kFlowSnat))
        translate(m, *again.entry, again.dir);
      md.flags |= kFlagNatDone;
      burst.send(i, StageId::Router);
      continue;
    }
    const Ipv4 dst = from_be(key.dst_ip), src = from_be(key.src_ip);
    const ServiceSlot* slot = slots[s];
    if (slot == nullptr || key.proto == IPPROTO_ICMP) {
      // Nothing answers on a service address but its Services: a known
      // cluster IP on a port or protocol no Service has (a ping included)
      // is rejected, an unallocated one dropped.
      if (node.service_cidr && node.service_cidr->contains(dst)) {
        if (services.is_cluster_ip(dst)) {
          md.drop_reason = static_cast<uint8_t>(DropReason::ServiceUnknownPort);
          md.icmp_type = 3, md.icmp_code = 3, md.icmp_from_dst = 1;
          burst.send(i, StageId::Icmp);
        } else {
          burst.drop(i, DropReason::ServiceUnallocated);
        }
        continue;
      }
      // Connections from outside the cluster to this node's pods are tracked
      // (without NAT), so the pods' answers are known as replies and never
      // taken for new egress to masquerade.
      if (tables.config.nat.masquerade_egress && node.pod_cidr.contains(dst) && !node.cluster_cidr.contains(src) &&
          (key.proto != IPPROTO_TCP || tcp_opens_flow(segments[k].flags)) &&
          ct.create(key, key.reversed(), 0, kNoService, ctx_.now_s, TcpState::SynSent, nullptr, &segments[k]) !=
              nullptr)
        md.flags |= kFlagNatDone;
      burst.send(i, StageId::Router);  // plain forwarding; egress masquerade after routing
      continue;
    }
    if (!slot->source_ranges.empty() &&
        std::none_of(slot->source_ranges.begin(), slot->source_ranges.end(),
                     [&](const Ipv4Prefix& p) { return p.contains(src); })) {
      burst.drop(i, DropReason::LbSourceRange);
      continue;
    }
    const bool from_pod = node.cluster_cidr.contains(src);
    const BackendSet& set = from_pod ? slot->from_pods : slot->external;
    if (set.backends.empty()) {
      const auto empty = from_pod ? slot->empty_pods : slot->empty_external;
      if (empty == ServiceEntry::Empty::Drop) {
        burst.drop(i, DropReason::ServiceNoLocalEndpoints);
      } else {
        // Rejected at once so clients fail fast, as kube-proxy does.
        md.drop_reason = static_cast<uint8_t>(DropReason::ServiceNoEndpoints);
        md.icmp_type = 3, md.icmp_code = 3, md.icmp_from_dst = 1;
        burst.send(i, StageId::Icmp);
      }
      continue;
    }
    if (key.proto == IPPROTO_TCP && !tcp_opens_flow(segments[k].flags)) {
      burst.drop(i, DropReason::ConntrackInvalid);  // no mid-stream pickup onto a backend
      continue;
    }
    const BackendWire& backend = pick_backend(ctx_, *slot, set, key);
    // Hairpin: a pod reaching itself through its Service must see the
    // connection come from elsewhere, or it would answer itself directly.
    const bool masquerade =
        (from_pod ? slot->masquerade_from_pods : slot->masquerade_external) || backend.ip == key.src_ip;
    FlowKey reply{backend.ip, key.src_ip, backend.port, key.src_port, key.proto, {}};
    FlowEntry* flow;
    DropReason why = DropReason::ConntrackFull;
    if (masquerade) {
      // MASQUERADE picks the address of the interface the packet leaves by.
      reply.dst_ip = node.pod_cidr.contains(from_be(backend.ip)) ? tables.gateway_ip : tables.node_ip;
      flow = create_with_snat(ctx_, key, reply, kFlowDnat | kFlowSnat, slot->id, segments[k], why);
    } else {
      Conntrack::CreateFailure failure;
      flow = ct.create(key, reply, kFlowDnat, slot->id, ctx_.now_s, TcpState::SynSent, &failure, &segments[k]);
      // The same client port already reaches this backend through another
      // frontend. As the kernel's NAT does, the flow takes another source
      // port (the client's address stays): a port of this worker's SNAT range.
      if (failure == Conntrack::CreateFailure::ReplyTupleTaken)
        flow = create_with_snat(ctx_, key, reply, kFlowDnat | kFlowSnat, slot->id, segments[k], why);
    }
    if (flow == nullptr) {
      burst.drop(i, why);
      continue;
    }
    translate(m, *flow, FlowDir::Original);
    md.flags |= kFlagNatDone;
    burst.send(i, StageId::Router);
  }
}

void Masquerade::process(Burst& burst) {
  NodeTables& tables = ctx_.tables;
  for (unsigned i = 0; i < burst.n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    FlowKey key;
    TcpSegment seg;
    if (!flow_key_of(m, key, seg)) {
      // Without ports there is nothing to tell the replies apart by.
      burst.drop(i, DropReason::MasqueradeUnsupported);
      continue;
    }
    // An earlier packet of this burst may have opened the flow.
    FlowRef again;
    tables.conntrack->lookup_bulk(&key, 1, &again);
    if (again.entry != nullptr && !again.entry->has(kFlowDying) && again.dir == FlowDir::Original) {
      if (const auto verdict = tables.conntrack->update(*again.entry, again.dir, seg, ctx_.now_s);
          verdict != Conntrack::Verdict::Accept) {
        burst.drop(i, drop_reason_of(verdict));
        continue;
      }
      translate(m, *again.entry, FlowDir::Original);
      burst.send(i, after_postrouting(*ctx_.ports, m));
      continue;
    }
    // Only a packet that opens a connection starts masquerading: a TCP
    // segment of a connection kdp never saw open (an answer of a pod to a
    // client it did not track) is forwarded as it is.
    if (key.proto == IPPROTO_TCP && !tcp_opens_flow(seg.flags)) {
      burst.send(i, after_postrouting(*ctx_.ports, m));
      continue;
    }
    FlowKey reply = key.reversed();
    reply.dst_ip = tables.node_ip;
    DropReason why;
    FlowEntry* flow = create_with_snat(ctx_, key, reply, kFlowSnat, kNoService, seg, why);
    if (flow == nullptr) {
      burst.drop(i, why);
      continue;
    }
    translate(m, *flow, FlowDir::Original);
    burst.send(i, after_postrouting(*ctx_.ports, m));
  }
}

}  // namespace kdp
