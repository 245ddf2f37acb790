// A worker: one poll-mode lcore running the pipeline over its RX queue of
// every port. All of its mutable state lives in its WorkerContext.
#pragma once

#include <rte_ethdev.h>
#include <rte_ring.h>

#include <boost/lockfree/spsc_queue.hpp>

#include <atomic>
#include <memory>

#include "dataplane/counters.h"
#include "dataplane/tables.h"

namespace kdp {

// Worker → control: something the worker saw that changes a shared table.
struct LearnEvent {
  enum class Kind : uint8_t { Mac, Neighbor };
  Kind kind;
  bool confirmed;  // Neighbor: ARP aimed at our address (the host is there now)
  uint16_t port;
  rte_ether_addr mac;
  be32 ip;  // Neighbor only
};

// The channels between one worker and the control thread. Each is
// single-producer/single-consumer, so neither side ever takes a lock.
struct WorkerChannels {
  explicit WorkerChannels(unsigned worker_id, unsigned ring_size);
  ~WorkerChannels();
  rte_ring* punt = nullptr;    // worker → control: packets waiting for a neighbour
  rte_ring* inject = nullptr;  // control → worker: ready packets (ARP requests, released holds)
  boost::lockfree::spsc_queue<LearnEvent, boost::lockfree::capacity<4096>> learn;
};

// Token bucket for generated ICMP errors (like the kernel's icmp_ratelimit).
struct TokenBucket {
  uint64_t tokens_per_s = 0;  // 0 = unlimited
  uint64_t tokens = 0;
  uint64_t last_s = 0;
  bool take(uint64_t now_s) {
    if (tokens_per_s == 0) return true;
    if (now_s != last_s) {
      tokens = tokens_per_s;
      last_s = now_s;
    }
    if (tokens == 0) return false;
    --tokens;
    return true;
  }
};

// Recently reported MACs, so one new source does not fill the learn queue
// before the control thread has installed it.
struct LearnFilter {
  static constexpr unsigned kSlots = 256;
  struct Slot {
    uint64_t key = 0;
    uint32_t when_s = 0;
  } slots[kSlots];
  // True when (key) was already reported during this second.
  bool seen(uint64_t key, uint32_t now_s) {
    Slot& s = slots[(key * 0x9E3779B97F4A7C15ull) >> 56];
    if (s.key == key && s.when_s == now_s) return true;
    s = {key, now_s};
    return false;
  }
};

struct alignas(64) WorkerContext {
  WorkerContext(unsigned id, unsigned lcore, NodeTables& tables, WorkerChannels& channels, unsigned workers = 1);
  ~WorkerContext();

  const unsigned id;
  const unsigned lcore;
  const uint16_t queue;  // RX/TX queue index on every port
  NodeTables& tables;
  WorkerChannels& channels;
  rte_mempool* pool = nullptr;  // for packets kdp makes
  // The port set of the current poll: loaded once per poll (poll_once), so a
  // poll sees one port set throughout, and read by every stage.
  const PortSet* ports = nullptr;
  // One per port index, all made up front: a port attached later never
  // meets an unallocated buffer.
  rte_eth_dev_tx_buffer* tx[kMaxPorts] = {};
  WorkerCounters counters;
  uint64_t now_tsc = 0;  // the current poll's start (0 before the first)
  uint32_t now_s = 0;
  std::array<uint64_t, kPollGapMs.size()> poll_gap_bounds;  // kPollGapMs in TSC cycles
  TokenBucket icmp_errors;
  // This worker's share of [nat] snat_ports, so allocation takes no lock.
  uint16_t snat_port_low = 0, snat_port_high = 0, snat_port_next = 0;
  LearnFilter learn_filter;

  void report(const LearnEvent& ev) {
    if (channels.learn.push(ev)) counters.learn_events.add();
    else counters.learn_queue_full.add();
  }
};

class Pipeline;

// Runs one poll iteration: RX on every port, pipeline, injected packets,
// TX flush, quiescent report. Returns packets received.
unsigned poll_once(WorkerContext& ctx, Pipeline& pipeline);

// The lcore entry point; returns when `stop` is set.
int worker_main(WorkerContext& ctx, const std::atomic<bool>& stop, unsigned idle_sleep_us);

}  // namespace kdp
