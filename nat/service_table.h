// The Service table workers read: an immutable snapshot of the compiled
// Services (ctrl/services.h), keyed by (VIP, protocol, port) in an rte_hash,
// replaced whole by pointer swap and freed after an RCU grace period.
#pragma once

#include <rte_hash.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "ctrl/services.h"
#include "dataplane/types.h"

namespace kdp {

struct ServiceWireKey {
  be32 vip{};
  be16 port{};
  uint8_t proto = 0;
  uint8_t zero = 0;
};
static_assert(sizeof(ServiceWireKey) == 8 && std::has_unique_object_representations_v<ServiceWireKey>);

struct BackendWire {
  be32 ip{};
  be16 port{};
  bool local = false;
};

// The endpoints one kind of client may use, with their Maglev table.
struct BackendSet {
  std::vector<BackendWire> backends;
  std::vector<uint32_t> maglev;  // indexes into backends
};

// One frontend as workers use it. Immutable once published, but for its
// round-robin position; shared by every snapshot it is unchanged in.
struct ServiceSlot {
  uint32_t id = 0;  // stable while the frontend exists; FlowEntry::service of its flows
  FrontendKind kind = FrontendKind::ClusterIP;
  LbAlgorithm lb = LbAlgorithm::Random;
  ServiceEntry::Empty empty_external = ServiceEntry::Empty::Reject;
  ServiceEntry::Empty empty_pods = ServiceEntry::Empty::Reject;
  bool masquerade_external = false;
  bool masquerade_from_pods = false;
  uint32_t affinity_timeout_s = 0;
  BackendSet external;   // sources outside the cluster CIDR
  BackendSet from_pods;  // sources inside it
  std::vector<Ipv4Prefix> source_ranges;
  ServiceWireKey key;
  std::string name;  // "ns/name:port 10.96.0.10:80/TCP" for listings
  mutable std::atomic<uint32_t> round_robin{0};  // shared by workers (relaxed)

  uint32_t next_round_robin() const { return round_robin.fetch_add(1, std::memory_order_relaxed); }
};

// The Service table: (VIP, protocol, port) → slot. A change builds a new
// snapshot from the last one, at the cost of what changed: unchanged slots
// are shared, and so is the key index while no frontend is added or removed
// (endpoint changes), so an endpoint change never rebuilds the hash.
class ServiceSnapshot {
 public:
  ServiceSnapshot(const CompiledServices& compiled, uint64_t generation);
  // `previous` with `diff` applied (diff_services / InstalledServices).
  ServiceSnapshot(const ServiceSnapshot& previous, const ServiceDiff& diff, uint64_t generation);
  ServiceSnapshot(const ServiceSnapshot&) = delete;
  ServiceSnapshot& operator=(const ServiceSnapshot&) = delete;

  // found[i] is null for a key no Service has.
  void lookup_bulk(const ServiceWireKey* keys, unsigned n, const ServiceSlot** found) const;
  bool is_cluster_ip(Ipv4 ip) const;
  // Control thread: the slot of one key, null when none.
  const ServiceSlot* find(const ServiceKey& key) const;
  // A slot by id; null for an id no frontend holds.
  const ServiceSlot* slot(uint32_t id) const { return id < by_id_.size() ? by_id_[id] : nullptr; }
  size_t size() const { return by_id_.size() - free_ids_.size(); }  // frontends

 private:
  // rte_hash of key → slot id, filled once, then only read.
  class KeyIndex {
   public:
    KeyIndex(const std::vector<std::shared_ptr<const ServiceSlot>>& slots, uint64_t generation);
    ~KeyIndex();
    KeyIndex(const KeyIndex&) = delete;
    KeyIndex& operator=(const KeyIndex&) = delete;
    rte_hash* hash = nullptr;
  };

  void publish_ids();

  std::shared_ptr<const KeyIndex> index_;
  std::vector<std::shared_ptr<const ServiceSlot>> slots_;  // by id; null: a free id
  std::vector<const ServiceSlot*> by_id_;                  // the same, for the fast path
  std::vector<uint32_t> free_ids_;
  std::shared_ptr<const std::vector<Ipv4>> cluster_ips_;  // sorted: a known cluster IP on an unknown port is
                                                          // rejected, one never allocated dropped
};

}  // namespace kdp
