#include "tools/gen/engine.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>

#include <algorithm>

#include "dataplane/rcu.h"

namespace kdp::gen {

namespace {

constexpr uint64_t kNewFlowOne = uint64_t{1} << 32;

void next_tuple(TxStream& s, Ipv4* src_ip, uint16_t* src_port, uint32_t* destination) {
  // A running credit decides which packets take a fresh tuple: exactly the
  // requested share, and the same packets on every run.
  if (s.new_flow_step != 0 && (s.new_flow_credit += s.new_flow_step) >= kNewFlowOne) {
    s.new_flow_credit -= kNewFlowOne;
    *src_ip = s.fresh.src_ip();
    *src_port = s.fresh.src_port();
    *destination = s.fresh.destination();
    s.fresh.advance();
    if (++s.fresh_used == s.fresh_block) {  // block used up: tuples repeat from here
      s.fresh = TupleCursor(s.space, s.fresh_first);
      s.fresh_used = 0;
      s.fresh_wrapped.add(1);
    }
    return;
  }
  *src_ip = s.cycled.src_ip();
  *src_port = s.cycled.src_port();
  *destination = s.cycled.destination();
  s.cycled.advance();
  if (++s.cycled_index == s.flows) {
    s.cycled = s.cycled_start;
    s.cycled_index = 0;
  }
}

// Returns whether it did any work (built or sent), for the cycle count.
bool tx_step(TxStream& s, uint64_t now) {
  bool built = false;
  if (s.pending_sent == s.pending_count) {
    if (s.built == s.limit) {
      s.done.store(true, std::memory_order_relaxed);
      return false;
    }
    auto want = static_cast<unsigned>(std::min<uint64_t>(s.burst, s.limit - s.built));
    if (s.packets_per_cycle > 0) {
      const auto due = static_cast<uint64_t>(static_cast<double>(now - s.start_tsc) * s.packets_per_cycle) + 1;
      if (due <= s.built) return false;
      want = static_cast<unsigned>(std::min<uint64_t>(want, due - s.built));
    }
    if (rte_pktmbuf_alloc_bulk(s.pool, s.pending.data(), want) != 0) {
      s.alloc_failures.add(1);
      return false;
    }
    built = true;
    const uint32_t tsc = s.stamp_time ? static_cast<uint32_t>(now >> kTscShift) : 0;
    for (unsigned i = 0; i < want; ++i) {
      Ipv4 src_ip;
      uint16_t src_port;
      uint32_t destination;
      next_tuple(s, &src_ip, &src_port, &destination);
      s.templates[destination].write(s.pending[i], src_ip, src_port, s.next_seq++, tsc);
    }
    s.built += want;
    s.pending_count = want;
    s.pending_sent = 0;
  }
  const uint16_t taken =
      rte_eth_tx_burst(s.port_id, s.queue, s.pending.data() + s.pending_sent,
                       static_cast<uint16_t>(s.pending_count - s.pending_sent));
  if (taken == 0) return built;
  if (s.first_tx_tsc == 0) s.first_tx_tsc = now;
  s.last_tx_tsc = now;
  s.pending_sent += taken;
  s.sent.add(taken);
  return true;
}

void release_pending(TxStream& s) {
  if (s.pending_sent < s.pending_count)
    rte_pktmbuf_free_bulk(s.pending.data() + s.pending_sent, s.pending_count - s.pending_sent);
  s.pending_count = s.pending_sent = 0;
  s.done.store(true, std::memory_order_relaxed);
}

// Returns how many packets it received.
unsigned rx_step(RxQueue& q) {
  rte_mbuf* mbufs[kMaxBurst];
  const uint16_t n = rte_eth_rx_burst(q.port_id, q.queue, mbufs, static_cast<uint16_t>(q.burst));
  if (n == 0) return 0;
  const uint64_t now = rte_rdtsc();
  const auto now_stamp = static_cast<uint32_t>(now >> kTscShift);
  uint64_t bytes = 0, stamped = 0, foreign = 0, reordered = 0;
  for (uint16_t i = 0; i < n; ++i) {
    bytes += mbufs[i]->pkt_len;
    const auto stamp = read_stamp(mbufs[i]);
    if (!stamp || stamp->stream >= q.streams.size()) {
      ++foreign;
      continue;
    }
    ++stamped;
    RxStreamState& st = q.streams[stamp->stream];
    // The 32-bit sequence taken as the 64-bit one nearest the highest seen.
    uint64_t seq = (st.highest_seq & ~uint64_t{0xffffffff}) | stamp->seq;
    if (seq + 0x80000000u < st.highest_seq) seq += uint64_t{1} << 32;
    else if (seq > st.highest_seq + 0x80000000u && seq >= (uint64_t{1} << 32)) seq -= uint64_t{1} << 32;
    if (!st.seen || seq > st.highest_seq) {
      st.highest_seq = seq;
      st.seen = true;
    } else {
      ++reordered;  // arrived after a later packet of its stream
    }
    ++st.received;
    if (stamp->tsc != 0) q.latency.add(uint64_t{static_cast<uint32_t>(now_stamp - stamp->tsc)} << kTscShift);
  }
  rte_pktmbuf_free_bulk(mbufs, n);
  if (q.first_rx_tsc == 0) q.first_rx_tsc = now;
  q.last_rx_tsc = now;
  q.packets.add(n);
  q.bytes.add(bytes);
  q.stamped.add(stamped);
  q.foreign.add(foreign);
  q.reordered.add(reordered);
  return n;
}

}  // namespace

void restart(TxStream& s, uint64_t limit, uint64_t start_tsc) {
  s.limit = limit;
  s.start_tsc = start_tsc;
  s.built = 0;
  s.pending_count = s.pending_sent = 0;
  for (Counter* c : {&s.sent, &s.alloc_failures, &s.fresh_wrapped, &s.tx_cycles}) c->reset();
  s.first_tx_tsc = s.last_tx_tsc = 0;
  s.done.store(limit == 0, std::memory_order_relaxed);
}

void restart(RxQueue& q) {
  for (RxStreamState& st : q.streams) st.received = 0;
  q.latency = LatencyHistogram();
  for (Counter* c : {&q.packets, &q.bytes, &q.stamped, &q.foreign, &q.reordered}) c->reset();
  q.first_rx_tsc = q.last_rx_tsc = 0;
}

void restart(Worker& w) { w.longest_pass_gap_tsc = w.longest_pass_gap_end_tsc = 0; }

void init_flows(TxStream& s, const FlowSpace& space, uint64_t flows, double new_flow_ratio, unsigned stream_count) {
  s.space = space;
  s.flows = flows;
  s.cycled_start = s.cycled = TupleCursor(space, 0);
  s.cycled_index = 0;
  s.new_flow_step = static_cast<uint64_t>(new_flow_ratio * static_cast<double>(kNewFlowOne));
  s.fresh_block = (space.size() - flows) / stream_count;
  s.fresh_first = flows + s.stream_id * s.fresh_block;
  if (s.fresh_block != 0) s.fresh = TupleCursor(space, s.fresh_first);
}

int run_worker(void* arg) {
  Worker& w = *static_cast<Worker*>(arg);
  bool tx_released = false;
  w.pollers->register_worker(w.id);
  w.pollers->online(w.id);
  // One receive pass before anything is sent: a memif client hands its peer
  // the free slots of a receive ring only from its first rx_burst on, and
  // until then the peer's sends toward it fail (a NIC posts its ring at
  // start). Without it, a DUT that forwards our first burst before this
  // lcore's first receive drops that burst.
  for (RxQueue* q : w.rx) rx_step(*q);
  uint64_t pass_start = rte_rdtsc();
  while (!w.stop->load(std::memory_order_relaxed)) {
    const uint64_t now = rte_rdtsc();
    if (now - pass_start > w.longest_pass_gap_tsc) {
      w.longest_pass_gap_tsc = now - pass_start;
      w.longest_pass_gap_end_tsc = now;
    }
    pass_start = now;
    bool worked = false;
    if (!w.stop_tx->load(std::memory_order_relaxed)) {
      for (TxStream* s : w.tx) {
        if (s->done.load(std::memory_order_relaxed)) continue;
        // Only steps that built or sent count: waiting for the rate or a
        // full TX ring is not the cost of a packet.
        const uint64_t begin = rte_rdtsc();
        if (tx_step(*s, begin)) {
          s->tx_cycles.add(rte_rdtsc() - begin);
          worked = true;
        }
      }
    } else if (!tx_released) {
      for (TxStream* s : w.tx) release_pending(*s);
      tx_released = true;
    }
    for (RxQueue* q : w.rx) worked = rx_step(*q) != 0 || worked;
    w.pollers->quiescent(w.id);
    if (!worked && w.idle_sleep_us != 0) {
      w.pollers->offline(w.id);
      rte_delay_us_sleep(w.idle_sleep_us);
      w.pollers->online(w.id);
    }
  }
  w.pollers->offline(w.id);
  if (!tx_released)
    for (TxStream* s : w.tx) release_pending(*s);
  return 0;
}

}  // namespace kdp::gen
