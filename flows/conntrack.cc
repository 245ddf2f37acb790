#include "flows/conntrack.h"

#include <netinet/in.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

#include <algorithm>
#include <new>

#include "dataplane/shared_table.h"
#include <stdexcept>
#include <vector>

namespace kdp {

namespace {

void* pack_ref(uint32_t index, FlowDir dir) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(index) << 1 | static_cast<uintptr_t>(dir));
}

// ---- TCP window tracking -------------------------------------------------------
// Each field only moves forward (sequence order, or size for maxwin), so
// workers handling the two directions of one flow at once may race: the
// compare-exchange loops keep the furthest value.

constexpr auto kRelaxed = std::memory_order_relaxed;

void advance_seq(std::atomic<uint32_t>& field, uint32_t value) {
  uint32_t current = field.load(kRelaxed);
  while (seq_after(value, current) && !field.compare_exchange_weak(current, value, kRelaxed)) {
  }
}

void advance_max(std::atomic<uint32_t>& field, uint32_t value) {
  uint32_t current = field.load(kRelaxed);
  while (value > current && !field.compare_exchange_weak(current, value, kRelaxed)) {
  }
}

unsigned scale_of(uint8_t scales, unsigned dir) { return (scales >> (4 * dir)) & 0x0f; }

// A SYN (dir Original) or SYN+ACK (Reply) starts its direction's window.
// Its window is never scaled; its scale option counts only when both sides
// send one (RFC 7323), known once the SYN+ACK is seen.
void open_window(FlowEntry& e, FlowDir dir, const TcpSegment& seg) {
  const unsigned d = static_cast<unsigned>(dir);
  TcpWindow& w = e.window[d];
  const uint32_t end = seg.end();
  w.end.store(end, kRelaxed);
  w.maxend.store(end, kRelaxed);
  w.maxwin.store(std::max<uint32_t>(seg.window, 1), kRelaxed);
  const uint8_t offered = d == 0 ? kWindowScaleOriginal : kWindowScaleReply;
  uint8_t flags = e.window_flags.load(kRelaxed);
  flags = seg.wscale >= 0 ? flags | offered : flags & ~offered;
  e.window_flags.store(flags, kRelaxed);
  uint8_t scales = e.window_scales.load(kRelaxed);
  const uint8_t own = seg.wscale >= 0 ? std::min<uint8_t>(seg.wscale, kTcpMaxWindowScale) : 0;
  scales = static_cast<uint8_t>((scales & ~(0x0f << (4 * d))) | own << (4 * d));
  if ((seg.flags & kTcpAck) && (flags & (kWindowScaleOriginal | kWindowScaleReply)) !=
                                   (kWindowScaleOriginal | kWindowScaleReply))
    scales = 0;
  e.window_scales.store(scales, kRelaxed);
}

// Whether a segment lies in the flow's window; if so, moves the window. A
// segment out of window changes nothing.
bool tcp_in_window(FlowEntry& e, FlowDir dir, const TcpSegment& seg, TcpState state) {
  const unsigned d = static_cast<unsigned>(dir);
  TcpWindow& sender = e.window[d];
  TcpWindow& receiver = e.window[d ^ 1];
  const bool syn = seg.flags & kTcpSyn, rst = seg.flags & kTcpRst, has_ack = seg.flags & kTcpAck;
  uint32_t seq = seg.seq, end = seg.end();
  uint32_t s_end = sender.end.load(kRelaxed), s_maxend = sender.maxend.load(kRelaxed);
  uint32_t s_maxwin = sender.maxwin.load(kRelaxed);
  uint32_t r_end = receiver.end.load(kRelaxed);
  const uint32_t r_maxwin = receiver.maxwin.load(kRelaxed);

  // How this segment starts its direction's window, if it does.
  enum class Start : uint8_t { Tracked, Syn, MidStream };
  Start start = Start::Tracked;
  if (syn && (s_maxwin == 0 || (seq_after(end, s_end) && ((state == TcpState::SynSent && dir == FlowDir::Original) ||
                                                          (state == TcpState::SynRecv && dir == FlowDir::Reply))))) {
    // The first SYN (SYN+ACK) this way, or one with a later sequence number:
    // the sender restarted (RFC 793: a reinitialised TCP need only use
    // higher sequence numbers).
    if (!has_ack) {
      open_window(e, dir, seg);
      return true;  // nothing to check a client's SYN against
    }
    start = Start::Syn;
    s_end = s_maxend = end;
    s_maxwin = std::max<uint32_t>(seg.window, 1);
  } else if (s_maxwin == 0) {
    // The first packet this way is no SYN (a RST answering the SYN, or a
    // flow made mid-stream): start from what it shows.
    start = Start::MidStream;
    s_end = end;
    s_maxwin = std::max<uint32_t>(uint32_t{seg.window} << scale_of(e.window_scales.load(kRelaxed), d), 1);
    s_maxend = end + s_maxwin;
    if (r_maxwin == 0 && has_ack) r_end = seg.ack;
  }

  // A segment without ACK acknowledges nothing to check; so does a RST
  // with ACK but ack 0 (stacks that send it so).
  const uint32_t ack = has_ack && !(rst && seg.ack == 0) ? seg.ack : r_end;
  // A RST with sequence 0 answering a SYN (some stacks) means the SYN's end.
  if (rst && seq == 0 && state == TcpState::SynSent) seq = end = s_end;
  // Acknowledgements may trail by at most the larger of the sender's window
  // and 66,000 bytes (the kernel's MAXACKWINDOW).
  const uint32_t ack_slack = std::max<uint32_t>(s_maxwin, 66000);
  // Bitwise on purpose: all four are computed without branches.
  const bool in_window = static_cast<bool>(
      unsigned{!seq_after(seq, s_maxend)} &                                // not beyond what it was allowed
      unsigned{r_maxwin == 0 || seq_after(end, s_end - r_maxwin - 1)} &    // nor before the receiver's window
      unsigned{!seq_after(ack, r_end)} &                                   // acks nothing unsent
      unsigned{seq_after(ack, r_end - ack_slack - 1)});                    // nor anything ancient
  if (!in_window) return e.window_flags.load(kRelaxed) & kWindowLiberal;

  if (start == Start::Syn) {
    open_window(e, dir, seg);
  } else if (start == Start::MidStream) {
    sender.end.store(s_end, kRelaxed);
    sender.maxend.store(s_maxend, kRelaxed);
    sender.maxwin.store(s_maxwin, kRelaxed);
    if (r_maxwin == 0 && has_ack) {
      receiver.end.store(r_end, kRelaxed);
      receiver.maxend.store(r_end, kRelaxed);
    }
  }
  const uint32_t win = syn ? seg.window : uint32_t{seg.window} << scale_of(e.window_scales.load(kRelaxed), d);
  advance_max(sender.maxwin, std::max<uint32_t>(win, 1));
  advance_seq(sender.end, end);
  // Data past the end the receiver allowed means its window grew unseen.
  if (r_maxwin != 0 && seq_after(end, s_maxend)) receiver.maxwin.fetch_add(end - s_maxend, kRelaxed);
  // A zero window still admits a one-byte probe.
  advance_seq(receiver.maxend, ack + win + (win == 0 ? 1 : 0));
  return true;
}

bool embryonic(const FlowEntry& e) {
  const TcpState s = e.state();
  if (e.orig.proto == IPPROTO_TCP) return s == TcpState::SynSent || s == TcpState::SynRecv;
  return !e.has(kFlowReplied);
}

}  // namespace

Conntrack::Conntrack(uint32_t max_flows, const FlowTimeouts& timeouts, Rcu& rcu)
    : rcu_(rcu), timeouts_(timeouts), capacity_(max_flows) {
  rte_hash_parameters params{};
  params.name = "kdp_ct";
  params.entries = 2 * max_flows;  // original and reply tuple of every flow
  params.key_len = sizeof(FlowKey);
  params.hash_func = rte_hash_crc;
  params.socket_id = SOCKET_ID_ANY;
  params.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_MULTI_WRITER_ADD |
                      RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
  hash_ = rte_hash_create(&params);
  free_ = rte_ring_create("kdp_ct_free", max_flows, SOCKET_ID_ANY, RING_F_EXACT_SZ);
  evict_ = rte_ring_create("kdp_ct_evict", 1024, SOCKET_ID_ANY, RING_F_SC_DEQ);
  entries_ = static_cast<FlowEntry*>(rte_zmalloc("kdp_ct_entries", sizeof(FlowEntry) * max_flows, alignof(FlowEntry)));
  if (hash_ == nullptr || free_ == nullptr || evict_ == nullptr || entries_ == nullptr) {
    this->~Conntrack();
    throw std::runtime_error("cannot allocate the conntrack table for " + std::to_string(max_flows) +
                             " flows (raise [eal] -m or lower [conntrack] max_flows)");
  }
  for (uint32_t i = 0; i < max_flows; ++i) {
    new (&entries_[i]) FlowEntry();
    void* index = reinterpret_cast<void*>(static_cast<uintptr_t>(i));
    rte_ring_enqueue(free_, index);
  }
}

Conntrack::~Conntrack() {
  rcu_.drain();
  rte_hash_free(hash_);
  rte_ring_free(free_);
  rte_ring_free(evict_);
  rte_free(entries_);
}

void Conntrack::lookup_bulk(const FlowKey* keys, unsigned n, FlowRef* found) const {
  void* data[RTE_HASH_LOOKUP_BULK_MAX];
  const uint64_t hits = hash_lookup_bulk(hash_, keys, n, data);
  for (unsigned i = 0; i < n; ++i) {
    if (!(hits >> i & 1)) {
      found[i] = {};
      continue;
    }
    const auto ref = reinterpret_cast<uintptr_t>(data[i]);
    found[i] = {&entries_[ref >> 1], static_cast<FlowDir>(ref & 1)};
  }
}

FlowEntry* Conntrack::create(const FlowKey& orig, const FlowKey& reply, uint8_t nat_flags, uint32_t service,
                             uint32_t now_s, TcpState initial, CreateFailure* why, const TcpSegment* opening) {
  CreateFailure ignored;
  if (why == nullptr) why = &ignored;
  *why = CreateFailure::Full;
  void* slot;
  if (rte_ring_mc_dequeue(free_, &slot) != 0) {
    counters_.full.fetch_add(1, std::memory_order_relaxed);
    // Full: ask the control thread to drop an embryonic flow near this one's
    // hash, so later flows fit; established flows are never evicted.
    uint32_t start = rte_hash_crc(&orig, sizeof orig, 0) % capacity_;
    rte_ring_mp_enqueue(evict_, reinterpret_cast<void*>(static_cast<uintptr_t>(start)));
    return nullptr;
  }
  const auto index = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(slot));
  FlowEntry& e = entries_[index];
  e.orig = orig;
  e.reply = reply;
  e.last_seen_s.store(now_s, std::memory_order_relaxed);
  e.created_s = now_s;
  e.tcp_state.store(static_cast<uint8_t>(orig.proto == IPPROTO_TCP ? initial : TcpState::None),
                    std::memory_order_relaxed);
  e.flags.store(nat_flags, std::memory_order_relaxed);
  e.service = service;
  e.fixed_timeout_s = 0;
  e.affinity_backend.store(0, std::memory_order_relaxed);
  for (TcpWindow& w : e.window) {
    w.end.store(0, kRelaxed);
    w.maxend.store(0, kRelaxed);
    w.maxwin.store(0, kRelaxed);
  }
  e.window_scales.store(0, kRelaxed);
  const bool opened = opening != nullptr && (opening->flags & kTcpSyn) && initial == TcpState::SynSent;
  e.window_flags.store(orig.proto == IPPROTO_TCP && !opened ? kWindowLiberal : 0, kRelaxed);
  if (orig.proto == IPPROTO_TCP && opened) open_window(e, FlowDir::Original, *opening);
  // The reply tuple must be free: a port collision is the caller's to retry.
  if (rte_hash_lookup(hash_, &reply) >= 0) {
    *why = CreateFailure::ReplyTupleTaken;
    counters_.collisions.fetch_add(1, std::memory_order_relaxed);
    rte_ring_mp_enqueue(free_, slot);
    return nullptr;
  }
  e.in_use.store(1, std::memory_order_release);
  live_.fetch_add(1, std::memory_order_relaxed);
  // rte_hash publishes each key with release semantics after the entry is
  // complete.
  if (rte_hash_add_key_data(hash_, &orig, pack_ref(index, FlowDir::Original)) != 0 ||
      rte_hash_add_key_data(hash_, &reply, pack_ref(index, FlowDir::Reply)) != 0) {
    // Out of hash space: leave the half-made flow to the sweep.
    e.flags.fetch_or(kFlowDying, std::memory_order_relaxed);
    rte_ring_mp_enqueue(evict_, reinterpret_cast<void*>(static_cast<uintptr_t>(index) | kEvictExact));
    counters_.full.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  counters_.created.fetch_add(1, std::memory_order_relaxed);
  *why = CreateFailure::None;
  return &e;
}

Conntrack::Verdict Conntrack::update(FlowEntry& e, FlowDir dir, const TcpSegment& segment, uint32_t now_s) const {
  if (e.orig.proto == IPPROTO_TCP) {
    uint8_t current = e.tcp_state.load(kRelaxed);
    const FlowDir fin_dir = e.has(kFlowFinReply) ? FlowDir::Reply : FlowDir::Original;
    TcpTransition t = tcp_transition(static_cast<TcpState>(current), dir, segment.flags, fin_dir);
    if (!t.valid) return Verdict::Invalid;
    // A closed flow reopened by a new SYN starts its windows afresh.
    const bool reopened = t.next == TcpState::SynSent && current != static_cast<uint8_t>(TcpState::SynSent);
    if (reopened) {
      for (TcpWindow& w : e.window) w.maxwin.store(0, kRelaxed);
      e.window_flags.fetch_and(static_cast<uint8_t>(~kWindowLiberal), kRelaxed);
    }
    if (!tcp_in_window(e, dir, segment, static_cast<TcpState>(current))) return Verdict::OutOfWindow;
    // Workers may race on one flow (each direction on its own queue): the
    // state moves only from the one it was judged in.
    while (static_cast<uint8_t>(t.next) != current &&
           !e.tcp_state.compare_exchange_weak(current, static_cast<uint8_t>(t.next), kRelaxed)) {
      t = tcp_transition(static_cast<TcpState>(current), dir, segment.flags, fin_dir);
      if (!t.valid) return Verdict::Invalid;
    }
    if (t.next == TcpState::FinWait && current != static_cast<uint8_t>(TcpState::FinWait) && dir == FlowDir::Reply)
      e.flags.fetch_or(kFlowFinReply, kRelaxed);
  }
  if (dir == FlowDir::Reply && !e.has(kFlowReplied)) e.flags.fetch_or(kFlowReplied, kRelaxed);
  if (e.last_seen_s.load(kRelaxed) != now_s) e.last_seen_s.store(now_s, kRelaxed);
  return Verdict::Accept;
}

uint32_t Conntrack::timeout_of(const FlowEntry& e) const {
  // Connections never have a fixed timeout: reading it only for affinity
  // records keeps the per-packet expiry check in the first cache line.
  if (e.orig.kind != kConnection && e.fixed_timeout_s != 0) return e.fixed_timeout_s;
  switch (e.orig.proto) {
    case IPPROTO_TCP: return timeouts_.tcp[static_cast<unsigned>(e.state())];
    case IPPROTO_UDP: return e.has(kFlowReplied) ? timeouts_.udp_stream : timeouts_.udp;
    case IPPROTO_ICMP: return timeouts_.icmp;
    default: return timeouts_.other;
  }
}

bool Conntrack::find_affinity(const FlowKey& key, uint32_t now_s, uint64_t& backend) const {
  FlowRef ref;
  lookup_bulk(&key, 1, &ref);
  if (ref.entry == nullptr || ref.entry->has(kFlowDying) || expired(*ref.entry, now_s)) return false;
  backend = ref.entry->affinity_backend.load(std::memory_order_relaxed);
  return backend != 0;
}

void Conntrack::remember_affinity(const FlowKey& key, uint64_t backend, uint32_t service, uint32_t timeout_s,
                                  uint32_t now_s) {
  FlowRef ref;
  lookup_bulk(&key, 1, &ref);
  if (ref.entry != nullptr && !ref.entry->has(kFlowDying)) {
    ref.entry->affinity_backend.store(backend, std::memory_order_relaxed);
    ref.entry->last_seen_s.store(now_s, std::memory_order_relaxed);
    return;
  }
  FlowKey reply = key;
  reply.kind = kAffinityReply;  // unique with the record; never matches a packet
  FlowEntry* e = create(key, reply, 0, service, now_s);
  if (e == nullptr) return;  // full: the client just loses its stickiness
  e->fixed_timeout_s = timeout_s;
  e->affinity_backend.store(backend, std::memory_order_relaxed);
}

bool Conntrack::expired(const FlowEntry& e, uint32_t now_s) const {
  return seconds_since(now_s, e.last_seen_s.load(std::memory_order_relaxed)) >= timeout_of(e);
}

void Conntrack::remove_key_if_ours(const FlowKey& key, uint32_t index, FlowDir dir,
                                   std::vector<int32_t>& positions) {
  void* data = nullptr;
  // A key another flow took over (a reopened connection) stays.
  if (rte_hash_lookup_data(hash_, &key, &data) < 0 || data != pack_ref(index, dir)) return;
  int32_t position = rte_hash_del_key(hash_, &key);
  if (position >= 0) positions.push_back(position);
}

bool Conntrack::remove(uint32_t index) {
  FlowEntry& e = entries_[index];
  const uint8_t before = e.flags.fetch_or(kFlowDying, std::memory_order_relaxed);
  if (before & kFlowDying && e.in_use.load(std::memory_order_relaxed) == 0) return false;
  std::vector<int32_t> positions;
  remove_key_if_ours(e.orig, index, FlowDir::Original, positions);
  remove_key_if_ours(e.reply, index, FlowDir::Reply, positions);
  e.in_use.store(0, std::memory_order_release);
  live_.fetch_sub(1, std::memory_order_relaxed);
  // Workers may still hold the entry or its key slots until they pass a
  // quiescent point.
  rcu_.defer([this, index, positions = std::move(positions)] {
    for (int32_t p : positions) rte_hash_free_key_with_position(hash_, p);
    entries_[index].flags.store(0, std::memory_order_relaxed);
    rte_ring_mp_enqueue(free_, reinterpret_cast<void*>(static_cast<uintptr_t>(index)));
  });
  return true;
}

bool Conntrack::evict_embryonic(uint32_t start) {
  constexpr unsigned kScan = 64;
  for (unsigned k = 0; k < kScan; ++k) {
    uint32_t i = (start + k) % capacity_;
    FlowEntry& e = entries_[i];
    if (e.in_use.load(std::memory_order_acquire) && !e.has(kFlowDying) && embryonic(e)) {
      if (remove(i)) {
        counters_.evicted.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
    }
  }
  return false;
}

unsigned Conntrack::sweep(uint32_t now_s, unsigned budget) {
  unsigned removed = 0;
  void* request;
  while (rte_ring_sc_dequeue(evict_, &request) == 0) {
    const auto value = reinterpret_cast<uintptr_t>(request);
    if (value & kEvictExact) {
      if (remove(static_cast<uint32_t>(value & ~kEvictExact))) ++removed;
    } else if (evict_embryonic(static_cast<uint32_t>(value))) {
      ++removed;
    }
  }
  for (unsigned k = 0; k < budget && k < capacity_; ++k) {
    const uint32_t i = sweep_cursor_;
    sweep_cursor_ = sweep_cursor_ + 1 == capacity_ ? 0 : sweep_cursor_ + 1;
    FlowEntry& e = entries_[i];
    if (!e.in_use.load(std::memory_order_acquire) || !expired(e, now_s)) continue;
    if (remove(i)) {
      counters_.expired.fetch_add(1, std::memory_order_relaxed);
      ++removed;
    }
  }
  return removed;
}

}  // namespace kdp
