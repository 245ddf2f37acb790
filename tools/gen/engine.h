// kdp-gen's lcore work: TX streams (one per TX port and worker queue) that
// build stamped frames from templates, and RX queues that read the stamps
// back into loss, reordering and latency counts. Everything is allocated
// before the workers start; the loops allocate nothing but mbufs.
#pragma once

#include <rte_mempool.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "tools/gen/flows.h"
#include "tools/gen/latency.h"
#include "tools/gen/packet.h"

namespace kdp {
class Rcu;
}

namespace kdp::gen {

constexpr unsigned kMaxBurst = 256;

// A counter with one writer (its lcore) that the main lcore may read while
// the run goes on.
class Counter {
 public:
  void add(uint64_t n) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }
  void reset() { value_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

struct alignas(64) TxStream {
  uint16_t port_id = 0;
  uint16_t queue = 0;
  uint16_t stream_id = 0;   // the IPv4 identification of its frames
  rte_mempool* pool = nullptr;
  unsigned burst = 32;
  std::vector<FrameTemplate> templates;  // one per --dst
  bool stamp_time = true;                // false: tsc written as 0 (pcap files: deterministic bytes)

  // Cycled flows: tuple indices 0..flows-1, the same for every stream.
  FlowSpace space;
  TupleCursor cycled, cycled_start;
  uint64_t flows = 1, cycled_index = 0;
  // Fresh tuples: this stream's own block of indices after the cycled ones.
  TupleCursor fresh;
  uint64_t fresh_first = 0, fresh_block = 0, fresh_used = 0;
  uint64_t new_flow_step = 0, new_flow_credit = 0;  // 2^32 = every packet

  uint64_t limit = UINT64_MAX;   // packets to send
  double packets_per_cycle = 0;  // 0: as fast as the port takes them
  uint64_t start_tsc = 0;
  uint64_t built = 0;
  uint32_t next_seq = 0;

  // A burst the port has not taken in full yet: sent before a new one is
  // built, so a slow peer slows the generator instead of losing packets.
  std::array<rte_mbuf*, kMaxBurst> pending{};
  unsigned pending_count = 0, pending_sent = 0;

  Counter sent, alloc_failures, fresh_wrapped, tx_cycles;
  uint64_t first_tx_tsc = 0, last_tx_tsc = 0;
  std::atomic<bool> done{false};
};

struct RxStreamState {
  uint64_t highest_seq = 0;  // extended to 64 bits
  uint64_t received = 0;
  bool seen = false;
};

struct alignas(64) RxQueue {
  uint16_t port_id = 0;
  uint16_t queue = 0;
  unsigned burst = 32;
  std::vector<RxStreamState> streams;  // indexed by stream id
  LatencyHistogram latency;
  Counter packets, bytes, stamped, foreign, reordered;
  uint64_t first_rx_tsc = 0, last_rx_tsc = 0;
};

struct Worker {
  std::vector<TxStream*> tx;
  std::vector<RxQueue*> rx;
  const std::atomic<bool>* stop_tx = nullptr;  // no new bursts; pending ones are freed
  const std::atomic<bool>* stop = nullptr;     // leave the loop
  // Sleep this long when a pass neither sent nor received (0: busy-poll).
  // Paced runs give the CPU they share back (on a small machine, to the
  // DUT's control thread); received packets then wait up to this long
  // before their latency is taken.
  unsigned idle_sleep_us = 0;
  // Reported to once per pass (offline while asleep): a peer's memory is
  // unmapped only after every poller has left the burst it was in.
  Rcu* pollers = nullptr;
  unsigned id = 0;
  // The longest time between the starts of two passes, and when it ended:
  // a gap far over idle_sleep_us is time the lcore did not run (its CPU
  // taken by another task), which a peer sees as a receive ring not read.
  uint64_t longest_pass_gap_tsc = 0, longest_pass_gap_end_tsc = 0;
};

// After a warm-up, before the measured run (no lcore running): counts,
// time stamps and latencies back to zero, `limit` packets to send from
// `start_tsc`. Sequence numbers and flow cursors go on where they were, so
// receivers see one stream.
void restart(TxStream& stream, uint64_t limit, uint64_t start_tsc);
void restart(RxQueue& queue);
void restart(Worker& worker);

// Sets up the stream's cursors for its share of the tuple space.
void init_flows(TxStream& stream, const FlowSpace& space, uint64_t flows, double new_flow_ratio,
                unsigned stream_count);

// The lcore function: arg is a Worker*.
int run_worker(void* arg);

}  // namespace kdp::gen
