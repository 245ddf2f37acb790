#include "tools/gen/packet.h"

#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <stdexcept>

namespace kdp::gen {

std::optional<Proto> parse_proto(std::string_view text) {
  if (text == "tcp-syn") return Proto::TcpSyn;
  if (text == "tcp-ack") return Proto::TcpAck;
  if (text == "udp") return Proto::Udp;
  if (text == "icmp") return Proto::Icmp;
  return std::nullopt;
}

std::string_view proto_name(Proto proto) {
  switch (proto) {
    case Proto::TcpSyn: return "tcp-syn";
    case Proto::TcpAck: return "tcp-ack";
    case Proto::Udp: return "udp";
    case Proto::Icmp: return "icmp";
  }
  return "?";
}

FrameTemplate::FrameTemplate(const FrameSpec& spec) {
  if (spec.size < kMinFrame || spec.size > kMaxFrame)
    throw std::invalid_argument("frame size must be 64..1518");
  memset(bytes_, 0, sizeof bytes_);
  size_ = static_cast<uint16_t>(spec.size);

  auto* eth = reinterpret_cast<rte_ether_hdr*>(bytes_);
  memcpy(eth->dst_addr.addr_bytes, spec.dst_mac.bytes.data(), RTE_ETHER_ADDR_LEN);
  memcpy(eth->src_addr.addr_bytes, spec.src_mac.bytes.data(), RTE_ETHER_ADDR_LEN);
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);

  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(bytes_ + kL3Offset);
  const bool tcp = spec.proto == Proto::TcpSyn || spec.proto == Proto::TcpAck;
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(size_ - kL3Offset));
  ip->packet_id = rte_cpu_to_be_16(spec.stream);
  ip->time_to_live = 64;
  ip->next_proto_id = tcp ? IPPROTO_TCP : spec.proto == Proto::Udp ? IPPROTO_UDP : IPPROTO_ICMP;
  ip->dst_addr = rte_cpu_to_be_32(spec.dst_ip);
  // src_addr and hdr_checksum stay zero: written per packet.
  ip_sum_ = rte_raw_cksum(ip, sizeof(rte_ipv4_hdr));

  const unsigned l4 = kL3Offset + sizeof(rte_ipv4_hdr);
  uint8_t* l4p = bytes_ + l4;
  icmp_seq_offset_ = 0;
  udp_ = false;
  pseudo_header_ = true;
  if (tcp) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(l4p);
    th->dst_port = rte_cpu_to_be_16(spec.dst_port);
    th->sent_seq = rte_cpu_to_be_32(1);
    th->data_off = (sizeof(rte_tcp_hdr) / 4) << 4;
    if (spec.proto == Proto::TcpSyn) {
      th->tcp_flags = RTE_TCP_SYN_FLAG;
    } else {
      th->tcp_flags = RTE_TCP_ACK_FLAG;
      th->recv_ack = rte_cpu_to_be_32(1);
    }
    th->rx_win = rte_cpu_to_be_16(65535);
    port_offset_ = l4 + offsetof(rte_tcp_hdr, src_port);
    l4_csum_offset_ = l4 + offsetof(rte_tcp_hdr, cksum);
    stamp_offset_ = l4 + sizeof(rte_tcp_hdr);
  } else if (spec.proto == Proto::Udp) {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(l4p);
    uh->dst_port = rte_cpu_to_be_16(spec.dst_port);
    uh->dgram_len = rte_cpu_to_be_16(static_cast<uint16_t>(size_ - l4));
    udp_ = true;
    port_offset_ = l4 + offsetof(rte_udp_hdr, src_port);
    l4_csum_offset_ = l4 + offsetof(rte_udp_hdr, dgram_cksum);
    stamp_offset_ = l4 + sizeof(rte_udp_hdr);
  } else {
    auto* ih = reinterpret_cast<rte_icmp_hdr*>(l4p);
    ih->icmp_type = RTE_IP_ICMP_ECHO_REQUEST;
    pseudo_header_ = false;  // ICMP's checksum covers only the ICMP message
    port_offset_ = l4 + offsetof(rte_icmp_hdr, icmp_ident);
    icmp_seq_offset_ = l4 + offsetof(rte_icmp_hdr, icmp_seq_nb);
    l4_csum_offset_ = l4 + offsetof(rte_icmp_hdr, icmp_cksum);
    stamp_offset_ = l4 + sizeof(rte_icmp_hdr);
  }
  const rte_be16_t magic = rte_cpu_to_be_16(kStampMagic);
  memcpy(bytes_ + stamp_offset_ + offsetof(Stamp, magic), &magic, 2);
  // The rest of the payload stays zero.

  l4_sum_ = rte_raw_cksum(l4p, size_ - l4);
  if (pseudo_header_) l4_sum_ += rte_ipv4_phdr_cksum(ip, 0);  // with the source address still zero
}

std::optional<ReceivedStamp> read_stamp(const rte_mbuf* m) {
  const auto* p = rte_pktmbuf_mtod(m, const uint8_t*);
  const unsigned len = m->data_len;
  constexpr unsigned l3 = sizeof(rte_ether_hdr);
  if (len < l3 + sizeof(rte_ipv4_hdr)) return std::nullopt;
  const auto* eth = reinterpret_cast<const rte_ether_hdr*>(p);
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return std::nullopt;
  const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(p + l3);
  const unsigned ihl = (ip->version_ihl & 0x0f) * 4u;
  if ((ip->version_ihl >> 4) != 4 || ihl < sizeof(rte_ipv4_hdr)) return std::nullopt;
  const unsigned l4 = l3 + ihl;
  unsigned l4_header;
  switch (ip->next_proto_id) {
    case IPPROTO_TCP:
      if (len < l4 + sizeof(rte_tcp_hdr)) return std::nullopt;
      l4_header = (reinterpret_cast<const rte_tcp_hdr*>(p + l4)->data_off >> 4) * 4u;
      break;
    case IPPROTO_UDP: l4_header = sizeof(rte_udp_hdr); break;
    case IPPROTO_ICMP: l4_header = sizeof(rte_icmp_hdr); break;
    default: return std::nullopt;
  }
  const unsigned stamp_at = l4 + l4_header;
  if (len < stamp_at + sizeof(Stamp)) return std::nullopt;
  Stamp stamp;
  memcpy(&stamp, p + stamp_at, sizeof stamp);
  if (stamp.magic != rte_cpu_to_be_16(kStampMagic)) return std::nullopt;
  return ReceivedStamp{rte_be_to_cpu_16(ip->packet_id), rte_be_to_cpu_32(stamp.seq), rte_be_to_cpu_32(stamp.tsc)};
}

}  // namespace kdp::gen
