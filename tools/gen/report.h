// kdp-gen's final summary: one JSON object (--json) and the same numbers as
// a human-readable table.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tools/gen/engine.h"

namespace kdp::gen {

struct PortRun {
  std::string device;
  bool tx = false, rx = false;
  std::vector<const TxStream*> streams;
  std::vector<const RxQueue*> queues;
};

struct RunSummaryInput {
  std::vector<PortRun> ports;
  std::vector<const RxQueue*> all_rx;  // every RX queue: a port's packets may come back on another
  uint64_t tsc_hz = 0;
  unsigned frame_size = 0;
  std::string proto;
  uint64_t flows = 0;
  double new_flow_ratio = 0;
  double elapsed_s = 0;  // the whole run, drain included
  uint64_t start_tsc = 0;
  double start_monotonic_s = 0;  // the same instant on CLOCK_MONOTONIC, to line the run up with other logs
  std::vector<const Worker*> workers;
  uint64_t warmup_sent = 0, warmup_returned = 0;  // --warmup, not in the counts above
};

// Per port: tx/rx packets, bytes, Mpps, Gbps (frame bytes without FCS, over
// the port's own first-to-last send or receive), TX cycles per packet,
// loss (sent minus received anywhere, null without RX ports), reordering,
// foreign packets and latency percentiles in µs; then totals; then per
// worker lcore its longest gap between passes and when it ended (seconds
// after the start).
nlohmann::json summarize(const RunSummaryInput& in);
std::string format_summary(const nlohmann::json& summary);

}  // namespace kdp::gen
