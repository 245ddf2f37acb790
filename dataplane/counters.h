// Per-worker counters: one writer (the worker), read by the control thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "dataplane/types.h"

namespace kdp {

// Every drop has a named reason. X(name, "text")
#define KDP_DROP_REASONS(X)                                                   \
  X(Consumed, "consumed")               /* handled by kdp, not forwarded */  \
  X(Runt, "runt_frame")                                                     \
  X(MultiSegment, "multi_segment")                                          \
  X(VlanTagged, "vlan_tagged")                                              \
  X(SrcMacMulticast, "src_mac_multicast")                                   \
  X(SpoofedSourceMac, "spoofed_source_mac")                                 \
  X(SpoofedSourceIp, "spoofed_source_ip")                                   \
  X(SpoofedArp, "spoofed_arp")                                              \
  X(NotForUs, "l2_not_for_us")                                              \
  X(UnsupportedEtherType, "unsupported_ethertype")                          \
  X(ArpMalformed, "arp_malformed")                                          \
  X(Ipv4TooShort, "ipv4_too_short")                                         \
  X(Ipv4BadVersion, "ipv4_bad_version")                                     \
  X(Ipv4BadIhl, "ipv4_bad_ihl")                                             \
  X(Ipv4BadTotalLength, "ipv4_bad_total_length")                            \
  X(Ipv4BadChecksum, "ipv4_bad_checksum")                                   \
  X(L4Truncated, "l4_truncated")                                            \
  X(TcpBadDataOffset, "tcp_bad_data_offset")                                \
  X(UdpBadLength, "udp_bad_length")                                         \
  X(MartianSource, "martian_source")                                        \
  X(MartianDestination, "martian_destination")                              \
  X(SamePort, "bridge_same_port")                                           \
  X(FloodNoPorts, "flood_no_ports")                                         \
  X(PortRemoved, "port_removed")         /* pod.del detached its port */    \
  X(TtlExceeded, "ttl_exceeded")                                            \
  X(FragmentationNeeded, "fragmentation_needed") /* over the MTU, DF set */ \
  X(FragmentationFailed, "fragmentation_failed") /* no mbufs or burst room */ \
  X(NoRoute, "no_route")                                                    \
  X(LocalUnhandled, "local_unhandled")                                      \
  X(ConntrackInvalid, "conntrack_invalid")                                  \
  X(ConntrackTcpOutOfWindow, "conntrack_tcp_out_of_window")                 \
  X(ConntrackFull, "conntrack_full")                                        \
  X(SnatPortsExhausted, "snat_ports_exhausted")                             \
  X(MasqueradeUnsupported, "masquerade_unsupported_protocol")               \
  X(ServiceNoEndpoints, "service_no_endpoints")                             \
  X(ServiceNoLocalEndpoints, "service_no_local_endpoints")                  \
  X(ServiceUnknownPort, "service_unknown_port")                             \
  X(ServiceUnallocated, "service_unallocated")                              \
  X(LbSourceRange, "lb_source_range")                                       \
  X(PuntRingFull, "punt_ring_full")                                         \
  X(BurstOverflow, "burst_overflow")                                        \
  X(MbufAllocFailed, "mbuf_alloc_failed")

enum class DropReason : uint8_t {
#define KDP_X(name, text) name,
  KDP_DROP_REASONS(KDP_X)
#undef KDP_X
      Count
};
inline constexpr unsigned kDropReasonCount = static_cast<unsigned>(DropReason::Count);
const char* drop_reason_name(DropReason r);

// A counter with a single writer: relaxed load+store compiles to a plain add,
// yet another thread may read it without a data race.
class Counter {
 public:
  void add(uint64_t n = 1) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }
  // For a maximum: keeps the larger of the value and v.
  void raise_to(uint64_t v) {
    if (v > value_.load(std::memory_order_relaxed)) value_.store(v, std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> value_{0};
};

struct PortCounters {
  Counter rx;
  Counter tx;
  Counter tx_dropped;  // TX ring full
};

// ICMP errors kdp was asked to send (the packet itself counts once, under
// its drop reason, whether or not the error went out).
enum class IcmpErrorOutcome : uint8_t { Sent, NotAllowed, RateLimited, NoHeadroom, Count };
inline constexpr const char* kIcmpErrorOutcomeNames[] = {"sent", "not_allowed", "rate_limited", "no_headroom"};

struct WorkerCounters {
  std::array<PortCounters, kMaxPorts> port;
  std::array<Counter, 16> stage_packets;  // indexed by StageId
  std::array<Counter, kDropReasonCount> drops;
  std::array<Counter, static_cast<unsigned>(IcmpErrorOutcome::Count)> icmp_errors;
  Counter punted;
  Counter fragments_made;  // IPv4 fragments of routed packets over the egress MTU
  Counter injected;
  Counter learn_events;
  Counter learn_queue_full;
  Counter busy_cycles;   // TSC cycles in polls that had packets
  Counter busy_packets;  // packets those polls carried
  Counter polls;
  Counter idle_sleeps;
  // Time between the starts of two polls, idle sleeps included: a gap far
  // over idle_sleep_us is time the worker did not run (its CPU taken),
  // during which its RX rings filled and its peers' went unread.
  Counter poll_gap_cycles;  // all gaps together
  Counter longest_poll_gap_cycles;
  std::array<Counter, 6> poll_gaps_over;  // [i]: gaps longer than kPollGapMs[i]
};
inline constexpr std::array<unsigned, 6> kPollGapMs{1, 2, 5, 10, 20, 50};

}  // namespace kdp
