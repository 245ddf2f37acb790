// The pipeline: the stage order, declared once, and the dispatcher that
// hands each stage its packets in one burst.
#pragma once

#include <array>

#include "dataplane/stages.h"

namespace kdp {

// Every stage only sends packets to stages after it, so one pass in this
// order visits each packet's whole path: Nat is PREROUTING (conntrack and
// Service DNAT), Masquerade POSTROUTING (egress SNAT), as in netfilter.
inline constexpr std::array kPipelineOrder = {
    StageId::Classify, StageId::Bridge,   StageId::Arp,    StageId::Nat,  StageId::Router, StageId::Masquerade,
    StageId::Fragment, StageId::Neighbor, StageId::Icmp,   StageId::Output, StageId::Punt, StageId::Drop,
};
static_assert(kPipelineOrder.size() == kStageCount);

class Pipeline {
 public:
  explicit Pipeline(WorkerContext& ctx);

  // Runs packets entering at `entry` (Classify for received packets, Output
  // for packets the control thread made) through the rest of the pipeline.
  void run(Burst& burst, StageId entry);

 private:
  void dispatch(StageId stage, Burst& burst);
  void distribute(StageId from, Burst& burst);

  WorkerContext& ctx_;
  Classify classify_;
  Bridge bridge_;
  Arp arp_;
  ServiceNat nat_;
  Router router_;
  Masquerade masquerade_;
  Fragment fragment_;
  Neighbor neighbor_;
  Icmp icmp_;
  Output output_;
  Punt punt_;
  Drop drop_;
  std::array<Burst, kStageCount> frames_;
};

}  // namespace kdp
