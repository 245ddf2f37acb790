#include "flows/conntrack.h"

#include <netinet/in.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

#include <new>

#include "dataplane/shared_table.h"
#include <stdexcept>
#include <vector>

namespace kdp {

namespace {

void* pack_ref(uint32_t index, FlowDir dir) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(index) << 1 | static_cast<uintptr_t>(dir));
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

FlowEntry* Conntrack::create(const FlowKey& orig, const FlowKey& reply, uint8_t nat_flags, uint16_t service,
                             uint32_t now_s, TcpState initial, CreateFailure* why) {
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

bool Conntrack::update(FlowEntry& e, FlowDir dir, uint8_t tcp_flags, uint32_t now_s) const {
  if (e.orig.proto == IPPROTO_TCP) {
    uint8_t current = e.tcp_state.load(std::memory_order_relaxed);
    TcpTransition t;
    // Workers may race on one flow (each direction on its own queue).
    do {
      const FlowDir fin_dir = e.has(kFlowFinReply) ? FlowDir::Reply : FlowDir::Original;
      t = tcp_transition(static_cast<TcpState>(current), dir, tcp_flags, fin_dir);
      if (!t.valid) return false;
      if (static_cast<uint8_t>(t.next) == current) break;
    } while (!e.tcp_state.compare_exchange_weak(current, static_cast<uint8_t>(t.next), std::memory_order_relaxed));
    if (t.next == TcpState::FinWait && current != static_cast<uint8_t>(TcpState::FinWait) && dir == FlowDir::Reply)
      e.flags.fetch_or(kFlowFinReply, std::memory_order_relaxed);
  }
  if (dir == FlowDir::Reply && !e.has(kFlowReplied)) e.flags.fetch_or(kFlowReplied, std::memory_order_relaxed);
  if (e.last_seen_s.load(std::memory_order_relaxed) != now_s) e.last_seen_s.store(now_s, std::memory_order_relaxed);
  return true;
}

uint32_t Conntrack::timeout_of(const FlowEntry& e) const {
  if (e.fixed_timeout_s != 0) return e.fixed_timeout_s;
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

void Conntrack::remember_affinity(const FlowKey& key, uint64_t backend, uint16_t service, uint32_t timeout_s,
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
