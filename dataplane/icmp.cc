// Icmp: local delivery (echo replies from the gateway and node IPs; the
// rest of node_ip's traffic to the node's own stack behind the host port,
// when there is one) and the ICMP errors a router sends (time exceeded,
// destination unreachable), written in place over the offending packet.
#include <rte_icmp.h>

#include "dataplane/packet_build.h"
#include "dataplane/stages.h"

namespace kdp {

namespace {

constexpr unsigned kEthLen = sizeof(rte_ether_hdr);
constexpr unsigned kIpLen = sizeof(rte_ipv4_hdr);
constexpr unsigned kIcmpLen = sizeof(rte_icmp_hdr);
constexpr unsigned kIcmpErrorMax = 576;  // RFC 1812 4.3.2.3: whole error datagram
constexpr uint8_t kDefaultTtl = 64;

bool is_icmp_error_type(uint8_t type) { return type == 3 || type == 4 || type == 5 || type == 11 || type == 12; }

}  // namespace

bool Icmp::reply_echo(rte_mbuf* m) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(reinterpret_cast<uint8_t*>(ip) + m->l3_len);
  // Any fragment (later ones, or the first with MF): kdp does not reassemble.
  const bool fragment =
      (meta(m).flags & kFlagFragment) || (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG));
  if (fragment || icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0) return false;
  const unsigned frame_len = kEthLen + rte_be_to_cpu_16(ip->total_length);
  if (m->data_len > frame_len) rte_pktmbuf_trim(m, m->data_len - frame_len);
  const uint32_t requester = ip->src_addr;
  ip->src_addr = ip->dst_addr;
  ip->dst_addr = requester;
  ip->time_to_live = kDefaultTtl;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
  icmp->icmp_cksum = checksum_replace16(icmp->icmp_cksum, rte_cpu_to_be_16(RTE_IP_ICMP_ECHO_REQUEST << 8),
                     rte_cpu_to_be_16(RTE_IP_ICMP_ECHO_REPLY << 8));
  eth->dst_addr = eth->src_addr;
  eth->src_addr = ctx_.ports->ports[meta(m).in_port].mac;
  return true;
}

bool Icmp::for_host_stack(rte_mbuf* m) const {
  const NodeTables& tables = ctx_.tables;
  const PacketMeta& md = meta(m);
  if (tables.host_port == kNoPort || md.in_port == tables.host_port) return false;
  auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, sizeof(rte_ether_hdr));
  if (be32{ip->dst_addr} != tables.node_ip) return false;  // the gateway address is kdp's alone
  // kdp answers pings to node_ip itself; the node's stack gets the rest,
  // fragments and ICMP errors about its own connections included.
  if (md.l4_proto != IPPROTO_ICMP || (md.flags & kFlagFragment) ||
      (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG)))
    return true;
  auto* icmp = reinterpret_cast<const rte_icmp_hdr*>(reinterpret_cast<const uint8_t*>(ip) + m->l3_len);
  return icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST;
}

void Icmp::deliver_to_host(rte_mbuf* m) {
  const PortInfo& host = ctx_.ports->ports[ctx_.tables.host_port];
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->dst_addr = host.host_mac;
  eth->src_addr = host.mac;
}

IcmpErrorOutcome Icmp::make_error(rte_mbuf* m, be32 source) {
  PacketMeta& md = meta(m);
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  const Ipv4 src = rte_be_to_cpu_32(ip->src_addr);
  // RFC 1122 3.2.2: never about an ICMP error, a non-first fragment, or a
  // packet whose source does not name a single host.
  bool allowed = !(md.flags & (kFlagFragment | kFlagMulticast)) && src != 0 && (src >> 28) != 0xe &&
                 src != 0xffffffff;
  if (allowed && md.l4_proto == IPPROTO_ICMP) {
    auto* inner = reinterpret_cast<const rte_icmp_hdr*>(reinterpret_cast<uint8_t*>(ip) + m->l3_len);
    allowed = !is_icmp_error_type(inner->icmp_type);
  }
  if (!allowed) return IcmpErrorOutcome::NotAllowed;
  if (!ctx_.icmp_errors.take(ctx_.now_s)) return IcmpErrorOutcome::RateLimited;
  const rte_ether_addr requester_mac = eth->src_addr;
  const uint32_t requester_ip = ip->src_addr;
  // Quote as much of the original datagram as fits in 576 bytes.
  unsigned quoted = std::min<unsigned>(rte_be_to_cpu_16(ip->total_length), kIcmpErrorMax - kIpLen - kIcmpLen);
  rte_pktmbuf_trim(m, m->data_len - (kEthLen + quoted));
  if (rte_pktmbuf_prepend(m, kIpLen + kIcmpLen) == nullptr) return IcmpErrorOutcome::NoHeadroom;
  const PortInfo& port = ctx_.ports->ports[md.in_port];
  eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->dst_addr = requester_mac;
  eth->src_addr = port.mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->type_of_service = 0xc0;  // internetwork control, as Linux marks ICMP errors
  ip->total_length = rte_cpu_to_be_16(kIpLen + kIcmpLen + quoted);
  ip->packet_id = 0;
  ip->fragment_offset = 0;
  ip->time_to_live = kDefaultTtl;
  ip->next_proto_id = IPPROTO_ICMP;
  ip->src_addr = static_cast<uint32_t>(source);
  ip->dst_addr = requester_ip;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(ip + 1);
  icmp->icmp_type = md.icmp_type;
  icmp->icmp_code = md.icmp_code;
  icmp->icmp_cksum = 0;
  icmp->icmp_ident = 0;
  // RFC 1191: "fragmentation needed" carries the next hop's MTU.
  icmp->icmp_seq_nb = md.icmp_type == 3 && md.icmp_code == 4 ? rte_cpu_to_be_16(static_cast<uint16_t>(md.next_hop_mtu)) : 0;
  icmp->icmp_cksum = static_cast<uint16_t>(~rte_raw_cksum(icmp, kIcmpLen + quoted));
  m->l3_len = kIpLen;
  md.l4_proto = IPPROTO_ICMP;
  md.flags = kFlagIpv4;
  return IcmpErrorOutcome::Sent;
}

void Icmp::process(Burst& burst) {
  for (unsigned i = 0; i < burst.n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    PacketMeta& md = meta(m);
    // Errors about forwarded packets come from the ingress side's address;
    // errors about packets for us, from the address they were sent to.
    be32 source = to_be32(ctx_.ports->ports[md.in_port].local_ip);
    if (md.icmp_from_dst)
      source = load_be32(rte_pktmbuf_mtod_offset(m, uint8_t*, sizeof(rte_ether_hdr) + offsetof(rte_ipv4_hdr, dst_addr)));
    if (md.icmp_type == kIcmpLocalDelivery) {
      if (for_host_stack(m)) {
        deliver_to_host(m);
        burst.output(i, ctx_.tables.host_port);
        continue;
      }
      if (md.l4_proto == IPPROTO_ICMP) {
        if (reply_echo(m)) burst.output(i, md.in_port);
        else burst.drop(i, DropReason::Consumed);
        continue;
      }
      if (md.l4_proto != IPPROTO_UDP) {
        // Nothing listens on the node's addresses inside kdp yet.
        burst.drop(i, DropReason::LocalUnhandled);
        continue;
      }
      source = load_be32(rte_pktmbuf_mtod_offset(m, uint8_t*, sizeof(rte_ether_hdr) + offsetof(rte_ipv4_hdr, dst_addr)));
      md.drop_reason = static_cast<uint8_t>(DropReason::LocalUnhandled);
      md.icmp_type = 3;  // destination unreachable: port unreachable
      md.icmp_code = 3;
    }
    // The packet counts once, under the reason that stopped it; the error
    // sent in its place (or why none was) is counted apart.
    const auto reason = static_cast<DropReason>(md.drop_reason);
    const bool translated = md.flags & kFlagNatDone;  // make_error starts the flags afresh
    const IcmpErrorOutcome outcome = make_error(m, source);
    ctx_.counters.icmp_errors[static_cast<unsigned>(outcome)].add();
    if (outcome == IcmpErrorOutcome::Sent) {
      // About a packet ServiceNat rewrote (TTL exceeded or no route after
      // DNAT): its sender must recognise the packet it sent, as Linux's NAT
      // makes the errors it sends itself.
      if (translated) translate_icmp_error(*ctx_.tables.conntrack, m);
      ctx_.counters.drops[static_cast<unsigned>(reason)].add();
      burst.output(i, md.in_port);
    } else {
      burst.drop(i, reason);
    }
  }
}

}  // namespace kdp
