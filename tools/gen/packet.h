// kdp-gen's frames: one template per (stream, destination), built once with
// valid checksums; per packet only the source address, source port and the
// stamp change, and their checksums are patched incrementally.
#pragma once

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_memcpy.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "ctrl/net_types.h"

namespace kdp::gen {

enum class Proto : uint8_t { TcpSyn, TcpAck, Udp, Icmp };
std::optional<Proto> parse_proto(std::string_view text);
std::string_view proto_name(Proto proto);

constexpr unsigned kMinFrame = 64;    // Ethernet frame without FCS, as DPDK's pkt_len counts it
constexpr unsigned kMaxFrame = 1518;

// The start of every generated frame's L4 payload. 10 bytes: all a 64-byte
// TCP frame has room for, so the layout is the same for every protocol and
// size. The sending stream is the IPv4 identification (constant per
// template, so it costs no checksum work per packet).
struct __attribute__((packed)) Stamp {
  rte_be16_t magic;
  rte_be32_t seq;  // per stream; the receiver extends it to 64 bits
  rte_be32_t tsc;  // rte_rdtsc() >> kTscShift, truncated: latency up to 2^36 cycles (~20 s at 3 GHz)
};
static_assert(sizeof(Stamp) == 10);
constexpr uint16_t kStampMagic = 0x6b67;  // "kg"
constexpr unsigned kTscShift = 4;

struct FrameSpec {
  Proto proto = Proto::Udp;
  unsigned size = kMinFrame;
  MacAddr src_mac, dst_mac;
  Ipv4 dst_ip = 0;      // host order
  uint16_t dst_port = 0;
  uint16_t stream = 0;  // IPv4 identification
};

class FrameTemplate {
 public:
  explicit FrameTemplate(const FrameSpec& spec);

  // Copies the template into `m` (which must have room for the frame) and
  // writes the varying fields with their checksum updates. No allocation.
  void write(rte_mbuf* m, Ipv4 src_ip, uint16_t src_port, uint32_t seq, uint32_t tsc) const {
    uint8_t* p = rte_pktmbuf_mtod(m, uint8_t*);
    rte_memcpy(p, bytes_, size_);
    m->data_len = size_;
    m->pkt_len = size_;

    const uint32_t ip_be = rte_cpu_to_be_32(src_ip);
    const uint16_t port_be = rte_cpu_to_be_16(src_port);
    const uint32_t seq_be = rte_cpu_to_be_32(seq);
    const uint32_t tsc_be = rte_cpu_to_be_32(tsc);
    // Words as they lie in memory, which is what the one's complement sum adds.
    const uint32_t ip_words = (ip_be & 0xffff) + (ip_be >> 16);

    memcpy(p + kIpSrcOffset, &ip_be, 4);
    const uint16_t ip_csum = static_cast<uint16_t>(~fold(ip_sum_ + ip_words));
    memcpy(p + kIpCsumOffset, &ip_csum, 2);

    uint32_t l4 = l4_sum_ + port_be + (seq_be & 0xffff) + (seq_be >> 16) + (tsc_be & 0xffff) + (tsc_be >> 16);
    if (pseudo_header_) l4 += ip_words;
    memcpy(p + port_offset_, &port_be, 2);
    if (icmp_seq_offset_) {  // echo sequence = low bits of ours: readable in tcpdump
      const uint16_t icmp_seq = rte_cpu_to_be_16(static_cast<uint16_t>(seq));
      memcpy(p + icmp_seq_offset_, &icmp_seq, 2);
      l4 += icmp_seq;
    }
    memcpy(p + stamp_offset_ + offsetof(Stamp, seq), &seq_be, 4);
    memcpy(p + stamp_offset_ + offsetof(Stamp, tsc), &tsc_be, 4);
    uint16_t l4_csum = static_cast<uint16_t>(~fold(l4));
    if (udp_ && l4_csum == 0) l4_csum = 0xffff;  // 0 means "no checksum" in UDP
    memcpy(p + l4_csum_offset_, &l4_csum, 2);
  }

  unsigned size() const { return size_; }

  static uint16_t fold(uint32_t sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(sum);
  }

 private:
  static constexpr unsigned kL3Offset = sizeof(rte_ether_hdr);
  static constexpr unsigned kIpSrcOffset = kL3Offset + 12;
  static constexpr unsigned kIpCsumOffset = kL3Offset + 10;

  alignas(64) uint8_t bytes_[kMaxFrame];
  uint16_t size_;
  uint16_t port_offset_;      // TCP/UDP source port, ICMP echo identifier
  uint16_t icmp_seq_offset_;  // 0: not ICMP
  uint16_t stamp_offset_;
  uint16_t l4_csum_offset_;
  bool pseudo_header_;        // TCP/UDP: the source address is in the L4 checksum
  bool udp_;
  // One's complement sums of the template with every varying field zero
  // (and the checksum fields zero): the per-packet sums start from these.
  uint32_t ip_sum_;
  uint32_t l4_sum_;
};

// What the receiver reads back from a frame; nullopt for anything that is
// not an IPv4 TCP/UDP/ICMP frame carrying our magic ("foreign").
struct ReceivedStamp {
  uint16_t stream;
  uint32_t seq;
  uint32_t tsc;
};
std::optional<ReceivedStamp> read_stamp(const rte_mbuf* m);

}  // namespace kdp::gen
