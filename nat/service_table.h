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

struct ServiceSlot {
  uint32_t id = 0;  // index in slots(); FlowEntry::service of its flows
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
  std::string name;      // "ns/name:port" for listings
};

class ServiceSnapshot {
 public:
  ServiceSnapshot(const CompiledServices& compiled, uint64_t generation);
  ~ServiceSnapshot();
  ServiceSnapshot(const ServiceSnapshot&) = delete;
  ServiceSnapshot& operator=(const ServiceSnapshot&) = delete;

  // found[i] is null for a key no Service has.
  void lookup_bulk(const ServiceWireKey* keys, unsigned n, const ServiceSlot** found) const;
  bool is_cluster_ip(Ipv4 ip) const;
  // Round-robin position for a slot (shared by workers; relaxed).
  uint32_t next_round_robin(uint32_t id) const { return rr_[id].fetch_add(1, std::memory_order_relaxed); }
  const std::vector<ServiceSlot>& slots() const { return slots_; }
  const CompiledServices& compiled() const { return compiled_; }

 private:
  rte_hash* hash_ = nullptr;
  std::vector<ServiceSlot> slots_;
  std::unique_ptr<std::atomic<uint32_t>[]> rr_;
  CompiledServices compiled_;  // what this snapshot was built from (for diffs and listings)
};

}  // namespace kdp
