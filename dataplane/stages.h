// Pipeline stages. Each is a small final class over one worker's context:
// process() handles a burst and sets each packet's next stage.
#pragma once

#include "dataplane/burst.h"
#include "dataplane/worker.h"

namespace kdp {

// What every stage holds: the context of the worker it runs on.
class StageBase {
 public:
  explicit StageBase(WorkerContext& ctx) : ctx_(ctx) {}

 protected:
  WorkerContext& ctx_;
};

// ICMP "type" meaning: deliver locally instead of sending an error.
inline constexpr uint8_t kIcmpLocalDelivery = 0xff;

class Classify final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

class Bridge final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

class Arp final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

struct FlowKey;
struct TcpSegment;

class ServiceNat final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);

 private:
  // Packets with a flow key: those of known flows translated, new Service
  // connections given a backend and a flow.
  void translate_flows(Burst& burst, const FlowKey* keys, const TcpSegment* segments, const unsigned* keyed,
                       unsigned n_keyed);
};

// An ICMP error about a packet of a tracked, NATed flow, translated like the
// flow: the quoted header back to what its sender sent, the outer addresses
// to that sender (and to the VIP when the far end itself reports). For
// errors that arrive (ServiceNat) and those kdp makes about a packet it had
// translated (Icmp). Returns false for an error about no tracked flow.
bool translate_icmp_error(Conntrack& ct, rte_mbuf* m);

class Router final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

class Masquerade final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

// The MTU a routed packet leaves by: its uplink's, or into the bridge the
// smallest pod port's (set by Router).
inline uint16_t egress_mtu(const PortSet& ports, const PacketMeta& md) {
  return (md.flags & kFlagToBridgeNet) ? ports.bridge_mtu : ports.ports[md.out_port].mtu;
}
// Where a routed packet goes once its addresses are final: Fragment when it
// is over its egress MTU (DF clear: Router answered the others), else Neighbor.
inline StageId after_postrouting(const PortSet& ports, rte_mbuf* m) {
  return m->pkt_len > sizeof(rte_ether_hdr) + egress_mtu(ports, meta(m)) ? StageId::Fragment : StageId::Neighbor;
}

// Cuts routed packets over the egress MTU without DF into fragments that
// fit, after NAT, as Linux fragments after POSTROUTING.
class Fragment final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

class Neighbor final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

class Icmp final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);

 private:
  bool reply_echo(rte_mbuf* m);
  // A packet for node_ip that the node's stack behind the host port takes.
  bool for_host_stack(rte_mbuf* m) const;
  void deliver_to_host(rte_mbuf* m);
  IcmpErrorOutcome make_error(rte_mbuf* m, be32 source);
};

// Terminal stages: they take the packets out of the pipeline.
class Output final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);

 private:
  void send(uint16_t port, rte_mbuf* m);
};

class Punt final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

class Drop final : StageBase {
 public:
  using StageBase::StageBase;
  void process(Burst& burst);
};

}  // namespace kdp
