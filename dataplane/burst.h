// A burst: up to kBurstCapacity mbufs one stage handles at once, with the
// stage each packet goes to next.
#pragma once

#include <cstdint>

#include "dataplane/counters.h"
#include "dataplane/types.h"

namespace kdp {

// Stages, in pipeline order. The order itself is declared in pipeline.h.
enum class StageId : uint8_t {
  Classify,  // L2/L3/L4 parsing and validation, ingress role
  Bridge,    // FDB learning and L2 forwarding between pod ports
  Arp,       // ARP replies for local addresses, gleaning
  Nat,       // conntrack lookup and translation, Service DNAT (PREROUTING)
  Router,    // LPM, TTL, egress decision
  Masquerade,  // SNAT of new egress flows to the node IP (POSTROUTING)
  Fragment,  // routed packets over the egress MTU without DF, cut to fit
  Neighbor,  // next hop MAC from the neighbour table, pod port from the FDB
  Icmp,      // local delivery (echo) and ICMP errors
  Output,    // per-port TX buffers, flooding
  Punt,      // to the control thread (unresolved neighbour)
  Drop,      // freed and counted by reason
  Count
};
inline constexpr unsigned kStageCount = static_cast<unsigned>(StageId::Count);
const char* stage_name(StageId s);

// A stage may add packets it makes (an ARP reply to a flooded request), so a
// burst holds up to two per RX packet.
inline constexpr unsigned kBurstCapacity = 2 * kBurstSize;

struct Burst {
  uint16_t n = 0;
  rte_mbuf* pkts[kBurstCapacity];
  StageId next[kBurstCapacity];

  bool push(rte_mbuf* m, StageId to) {
    if (n == kBurstCapacity) return false;
    pkts[n] = m;
    next[n++] = to;
    return true;
  }
  void send(unsigned i, StageId to) { next[i] = to; }
  void drop(unsigned i, DropReason reason) {
    meta(pkts[i]).drop_reason = static_cast<uint8_t>(reason);
    next[i] = StageId::Drop;
  }
  // To one port, or kFloodPort with the port the flood must skip.
  void output(unsigned i, uint16_t port, uint16_t flood_exclude = kNoPort) {
    PacketMeta& md = meta(pkts[i]);
    md.out_port = port;
    md.flood_exclude = flood_exclude;
    next[i] = StageId::Output;
  }
};

}  // namespace kdp
