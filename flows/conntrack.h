// Connection tracking: one entry per connection, found from either
// direction, shared by every worker.
//
// Design: one rte_hash holds two keys per flow (the original tuple and the
// reply tuple), each mapping to the entry and the direction. Lookups are
// lock-free (RW_CONCURRENCY_LF), so a reply that arrives on another worker,
// queue or port than the first packet finds the flow with the same single
// bulk lookup; no packet is handed between workers. Workers insert new flows
// themselves (MULTI_WRITER_ADD: rte_hash serialises only the insertion of a
// new flow's keys; lookups and updates of established flows never wait).
// State changes are atomic per entry. Entries live in a fixed array whose
// free indexes sit in a lock-free ring; the control thread sweeps the array
// a slice at a time for expired flows, removes their keys and returns the
// entry only after an RCU grace period, so no worker reads a reused entry.
#pragma once

#include <rte_hash.h>
#include <rte_ring.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/rcu.h"
#include "dataplane/types.h"
#include "flows/tcp_state.h"

namespace kdp {

// The tuple a packet is matched on. ICMP echo: requests carry the
// identifier as src_port, replies as dst_port.
struct FlowKey {
  be32 src_ip{};
  be32 dst_ip{};
  be16 src_port{};
  be16 dst_port{};
  uint8_t proto = 0;
  uint8_t kind = 0;  // FlowKind
  uint8_t zero[2] = {};

  bool operator==(const FlowKey&) const = default;
  // The same connection seen from the other end.
  FlowKey reversed() const { return {dst_ip, src_ip, dst_port, src_port, proto, kind, {}}; }
};
static_assert(sizeof(FlowKey) == 16 && std::has_unique_object_representations_v<FlowKey>);

// What a key names: a connection, or a session-affinity record (the backend
// a client was last sent to for a frontend), which lives in the same table
// so it shares its memory, expiry and grace periods.
enum FlowKind : uint8_t { kConnection = 0, kAffinity = 1, kAffinityReply = 2 };

enum FlowFlag : uint8_t {
  kFlowReplied = 1 << 0,  // a packet went the reply way (UDP: "assured")
  kFlowDnat = 1 << 1,     // reply.src differs from orig.dst
  kFlowSnat = 1 << 2,     // reply.dst differs from orig.src
  kFlowFinReply = 1 << 3, // the first FIN came from the reply side
  kFlowDying = 1 << 4,    // being removed: not used for new packets
};

// FlowEntry::service of flows that belong to no Service (egress, inbound to pods).
constexpr uint32_t kNoService = UINT32_MAX;

// TCP window tracking (Rooij, "Real Stateful TCP Packet Filtering in IP
// Filter", as the kernel's nf_conntrack_proto_tcp does it): what one
// direction's sender has shown. A segment is in window when it lies within
// what the other side has allowed and acknowledges only what was sent.
struct TcpWindow {
  std::atomic<uint32_t> end{0};     // highest seq + len it sent
  std::atomic<uint32_t> maxend{0};  // highest ack + window the other side gave it: the most it may send
  std::atomic<uint32_t> maxwin{0};  // largest window it advertised (scaled); 0 until a packet of it is seen
};
static_assert(sizeof(TcpWindow) == 12);

enum TcpWindowFlag : uint8_t {
  kWindowScaleOriginal = 1 << 0,  // the client's SYN offered window scaling
  kWindowScaleReply = 1 << 1,     // the server's SYN+ACK did
  // Tracking began without the opening SYN (a flow made from a later
  // segment): the window scale is unknown, so, as the kernel does for flows
  // it picks up mid-stream, segments out of window are accepted (and do not
  // move the window).
  kWindowLiberal = 1 << 2,
};

struct alignas(64) FlowEntry {
  // First cache line: what a worker reads and writes for each packet.
  // The tuples: how the client sent it, and how the server answers. The
  // translation for each direction is the difference between the two.
  FlowKey orig;
  FlowKey reply;
  std::atomic<uint32_t> last_seen_s{0};
  std::atomic<uint8_t> tcp_state{0};
  std::atomic<uint8_t> flags{0};
  std::atomic<uint8_t> window_flags{0};   // TcpWindowFlag
  std::atomic<uint8_t> window_scales{0};  // window shift of the original direction (low nibble) and the reply's
  TcpWindow window[2];                    // by FlowDir

  // Second cache line: what new flows, listings and the control thread use.
  std::atomic<uint8_t> in_use{0};
  uint32_t service = kNoService;  // Service frontend (snapshot slot id), for listings and flushes
  uint32_t created_s = 0;
  uint32_t fixed_timeout_s = 0;              // affinity records: expires this long after last use
  std::atomic<uint64_t> affinity_backend{0};  // affinity records: backend IP << 16 | port (network order)

  TcpState state() const { return static_cast<TcpState>(tcp_state.load(std::memory_order_relaxed)); }
  bool has(FlowFlag f) const { return flags.load(std::memory_order_relaxed) & f; }
};

// Window tracking needs 26 bytes per flow; the 64-byte entry had 4 to
// spare. The per-packet fields stay together in the first line.
static_assert(sizeof(FlowEntry) == 128, "two cache lines per flow");
static_assert(offsetof(FlowEntry, in_use) == 64, "the per-packet fields fill the first cache line");

struct FlowRef {
  FlowEntry* entry = nullptr;
  FlowDir dir = FlowDir::Original;
};

struct ConntrackCounters {
  std::atomic<uint64_t> created{0}, expired{0}, evicted{0}, full{0}, collisions{0};
};

class Conntrack {
 public:
  Conntrack(uint32_t max_flows, const FlowTimeouts& timeouts, Rcu& rcu);
  ~Conntrack();
  Conntrack(const Conntrack&) = delete;
  Conntrack& operator=(const Conntrack&) = delete;

  // ---- workers ----
  void lookup_bulk(const FlowKey* keys, unsigned n, FlowRef* found) const;
  // Creates a flow from the two tuples; null when the table is full (an
  // embryonic flow is evicted to make room for later ones) or the reply
  // tuple belongs to another flow.
  enum class CreateFailure : uint8_t { None, Full, ReplyTupleTaken };
  // A TCP flow created with its opening SYN (`opening`) has its window
  // tracked from the start; without it, the flow is liberal (kWindowLiberal).
  FlowEntry* create(const FlowKey& orig, const FlowKey& reply, uint8_t nat_flags, uint32_t service, uint32_t now_s,
                    TcpState initial = TcpState::SynSent, CreateFailure* why = nullptr,
                    const TcpSegment* opening = nullptr);
  // What update makes of a packet. A packet that is not Accepted changes
  // nothing: no state, no window, no timeout.
  enum class Verdict : uint8_t {
    Accept,
    Invalid,      // TCP flags that do not fit the state
    OutOfWindow,  // TCP sequence or acknowledgement outside the tracked window
  };
  // Applies one packet to the flow's state (`segment` is read for TCP flows only).
  Verdict update(FlowEntry& e, FlowDir dir, const TcpSegment& segment, uint32_t now_s) const;
  bool expired(const FlowEntry& e, uint32_t now_s) const;

  // ---- control thread ----
  // Examines up to `budget` entries from where the last sweep stopped and
  // removes the expired ones; returns how many it removed.
  unsigned sweep(uint32_t now_s, unsigned budget);
  // Removes every flow for which pred(entry) is true.
  template <class Pred>
  unsigned remove_if(Pred&& pred) {
    unsigned removed = 0;
    for (uint32_t i = 0; i < capacity_; ++i)
      if (entries_[i].in_use.load(std::memory_order_acquire) && pred(entries_[i]) && remove(i)) ++removed;
    return removed;
  }
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (uint32_t i = 0; i < capacity_; ++i)
      if (entries_[i].in_use.load(std::memory_order_acquire)) fn(entries_[i]);
  }

  uint32_t size() const { return live_.load(std::memory_order_relaxed); }
  uint32_t capacity() const { return capacity_; }
  const ConntrackCounters& counters() const { return counters_; }
  uint32_t timeout_of(const FlowEntry& e) const;

  // Session affinity (kube-proxy's ClientIP): the backend remembered for
  // `client` on the frontend (vip, port, proto), if its record is live.
  static FlowKey affinity_key(be32 client, be32 vip, be16 port, uint8_t proto) {
    return {client, vip, be16{}, port, proto, kAffinity, {}};
  }
  bool find_affinity(const FlowKey& key, uint32_t now_s, uint64_t& backend) const;
  // Records (or re-points) the client's backend; refreshes its timeout.
  void remember_affinity(const FlowKey& key, uint64_t backend, uint32_t service, uint32_t timeout_s, uint32_t now_s);

 private:
  // Evict-ring values: an entry index to remove (half-made flows), or a
  // place to look for an embryonic flow to evict.
  static constexpr uintptr_t kEvictExact = uintptr_t{1} << 62;

  bool remove(uint32_t index);
  bool evict_embryonic(uint32_t start);
  void remove_key_if_ours(const FlowKey& key, uint32_t index, FlowDir dir, std::vector<int32_t>& positions);

  Rcu& rcu_;
  FlowTimeouts timeouts_;
  uint32_t capacity_;
  rte_hash* hash_ = nullptr;
  rte_ring* free_ = nullptr;   // free entry indexes (multi-producer/consumer, lock-free)
  rte_ring* evict_ = nullptr;  // workers → control: room needed, or a half-made flow
  FlowEntry* entries_ = nullptr;
  uint32_t sweep_cursor_ = 0;
  std::atomic<uint32_t> live_{0};
  mutable ConntrackCounters counters_;
};

}  // namespace kdp
