#include "dataplane/pipeline.h"

namespace kdp {

namespace {

constexpr std::array<uint8_t, kStageCount> stage_ranks() {
  std::array<uint8_t, kStageCount> rank{};
  for (uint8_t i = 0; i < kPipelineOrder.size(); ++i) rank[static_cast<unsigned>(kPipelineOrder[i])] = i;
  return rank;
}
constexpr auto kRank = stage_ranks();

constexpr bool is_terminal(StageId s) { return s == StageId::Output || s == StageId::Punt || s == StageId::Drop; }

}  // namespace

const char* stage_name(StageId s) {
  switch (s) {
    case StageId::Classify: return "classify";
    case StageId::Bridge: return "bridge";
    case StageId::Arp: return "arp";
    case StageId::Nat: return "nat";
    case StageId::Router: return "router";
    case StageId::Masquerade: return "masquerade";
    case StageId::Fragment: return "fragment";
    case StageId::Neighbor: return "neighbor";
    case StageId::Icmp: return "icmp";
    case StageId::Output: return "output";
    case StageId::Punt: return "punt";
    case StageId::Drop: return "drop";
    case StageId::Count: break;
  }
  return "?";
}

Pipeline::Pipeline(WorkerContext& ctx)
    : ctx_(ctx), classify_(ctx), bridge_(ctx), arp_(ctx), nat_(ctx), router_(ctx), masquerade_(ctx), fragment_(ctx), neighbor_(ctx), icmp_(ctx), output_(ctx), punt_(ctx), drop_(ctx) {}

void Pipeline::dispatch(StageId stage, Burst& burst) {
  ctx_.counters.stage_packets[static_cast<unsigned>(stage)].add(burst.n);
  switch (stage) {
    case StageId::Classify: classify_.process(burst); break;
    case StageId::Bridge: bridge_.process(burst); break;
    case StageId::Arp: arp_.process(burst); break;
    case StageId::Nat: nat_.process(burst); break;
    case StageId::Router: router_.process(burst); break;
    case StageId::Masquerade: masquerade_.process(burst); break;
    case StageId::Fragment: fragment_.process(burst); break;
    case StageId::Neighbor: neighbor_.process(burst); break;
    case StageId::Icmp: icmp_.process(burst); break;
    case StageId::Output: output_.process(burst); break;
    case StageId::Punt: punt_.process(burst); break;
    case StageId::Drop: drop_.process(burst); break;
    case StageId::Count: break;
  }
}

void Pipeline::distribute(StageId from, Burst& burst) {
  for (unsigned i = 0; i < burst.n; ++i) {
    StageId to = burst.next[i];
    // A stage may only hand packets forward; anything else is a bug that
    // would strand the packet, so it is dropped and counted.
    if (kRank[static_cast<unsigned>(to)] <= kRank[static_cast<unsigned>(from)] ||
        !frames_[static_cast<unsigned>(to)].push(burst.pkts[i], to)) {
      meta(burst.pkts[i]).drop_reason = static_cast<uint8_t>(DropReason::BurstOverflow);
      ctx_.counters.drops[static_cast<unsigned>(DropReason::BurstOverflow)].add();
      rte_pktmbuf_free(burst.pkts[i]);
    }
  }
  burst.n = 0;
}

void Pipeline::run(Burst& burst, StageId entry) {
  dispatch(entry, burst);
  if (!is_terminal(entry)) distribute(entry, burst);
  for (unsigned r = kRank[static_cast<unsigned>(entry)] + 1; r < kPipelineOrder.size(); ++r) {
    StageId stage = kPipelineOrder[r];
    Burst& frame = frames_[static_cast<unsigned>(stage)];
    if (frame.n == 0) continue;
    dispatch(stage, frame);
    if (is_terminal(stage)) frame.n = 0;
    else distribute(stage, frame);
  }
}

}  // namespace kdp
