#include "nat/service_table.h"

#include <rte_hash_crc.h>

#include <algorithm>
#include <stdexcept>

#include "dataplane/shared_table.h"
#include "nat/maglev.h"

namespace kdp {

namespace {

// The Maglev table (251+ slots) only for frontends that use it: at 100k
// Services it would otherwise be most of their memory and start-up time.
BackendSet make_set(const std::vector<Backend>& backends, LbAlgorithm lb) {
  BackendSet set;
  std::vector<uint64_t> ids;
  set.backends.reserve(backends.size());
  for (const auto& b : backends) {
    set.backends.push_back({to_be32(b.ip), to_be16(b.port), b.local});
    ids.push_back(maglev_backend_id(b.ip, b.port));
  }
  if (lb == LbAlgorithm::Maglev && !ids.empty()) set.maglev = build_maglev_table(ids, maglev_table_size(ids.size()));
  return set;
}

std::shared_ptr<ServiceSlot> make_slot(const ServiceEntry& e, uint32_t id) {
  auto slot = std::make_shared<ServiceSlot>();
  slot->id = id;
  slot->kind = e.kind;
  slot->lb = e.lb;
  slot->empty_external = e.when_empty_external;
  slot->empty_pods = e.when_empty_pods;
  slot->masquerade_external = e.masquerade_external;
  slot->masquerade_from_pods = e.masquerade_from_pods;
  slot->affinity_timeout_s = e.affinity ? e.affinity_timeout_s : 0;
  slot->external = make_set(e.backends, e.lb);
  slot->from_pods = make_set(e.backends_from_pods, e.lb);
  slot->source_ranges = e.source_ranges;
  slot->key = ServiceWireKey{to_be32(e.vip), to_be16(e.port), static_cast<uint8_t>(e.proto), 0};
  slot->name = e.service + (e.port_name.empty() ? "" : ":" + e.port_name) + " " + e.key().to_string();
  return slot;
}

ServiceWireKey wire_key(const ServiceKey& k) {
  return ServiceWireKey{to_be32(k.vip), to_be16(k.port), static_cast<uint8_t>(k.proto), 0};
}

}  // namespace

ServiceSnapshot::KeyIndex::KeyIndex(const std::vector<std::shared_ptr<const ServiceSlot>>& slots,
                                    uint64_t generation) {
  const std::string name = "kdp_svc" + std::to_string(generation);
  rte_hash_parameters params{};
  params.name = name.c_str();
  params.entries = std::max<uint32_t>(64, slots.size() * 2);
  params.key_len = sizeof(ServiceWireKey);
  params.hash_func = rte_hash_crc;
  params.socket_id = SOCKET_ID_ANY;
  params.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE;  // filled once, then only read
  hash = rte_hash_create(&params);
  if (hash == nullptr) throw std::runtime_error("cannot create the service table " + name);
  for (const auto& slot : slots) {
    if (slot == nullptr) continue;
    if (rte_hash_add_key_data(hash, &slot->key, reinterpret_cast<void*>(static_cast<uintptr_t>(slot->id))) != 0) {
      rte_hash_free(hash);
      throw std::runtime_error("cannot add service " + slot->name);
    }
  }
}

ServiceSnapshot::KeyIndex::~KeyIndex() { rte_hash_free(hash); }

ServiceSnapshot::ServiceSnapshot(const CompiledServices& compiled, uint64_t generation)
    : cluster_ips_(std::make_shared<const std::vector<Ipv4>>(compiled.cluster_ips)) {
  // compile_services and the config loader hold the count to kMaxServiceFrontends.
  if (compiled.entries.size() > kMaxServiceFrontends)
    throw std::runtime_error("service table: " + std::to_string(compiled.entries.size()) +
                             " frontends exceed the maximum of " + std::to_string(kMaxServiceFrontends));
  slots_.reserve(compiled.entries.size());
  for (const auto& e : compiled.entries) slots_.push_back(make_slot(e, static_cast<uint32_t>(slots_.size())));
  index_ = std::make_shared<const KeyIndex>(slots_, generation);
  publish_ids();
}

ServiceSnapshot::ServiceSnapshot(const ServiceSnapshot& previous, const ServiceDiff& diff, uint64_t generation)
    : index_(previous.index_),
      slots_(previous.slots_),
      free_ids_(previous.free_ids_),
      cluster_ips_(diff.cluster_ips ? std::make_shared<const std::vector<Ipv4>>(*diff.cluster_ips)
                                    : previous.cluster_ips_) {
  auto id_of = [&](const ServiceKey& key) {
    const ServiceSlot* slot = previous.find(key);
    if (slot == nullptr) throw std::logic_error("service table: no frontend " + key.to_string() + " to change");
    return slot->id;
  };
  for (const ServiceKey& key : diff.removed) {
    const uint32_t id = id_of(key);
    slots_[id] = nullptr;
    free_ids_.push_back(id);
  }
  for (const ServiceEntry& e : diff.changed) {
    const uint32_t id = id_of(e.key());
    auto slot = make_slot(e, id);
    // Round robin goes on where it was, as an in-place rule change would.
    slot->round_robin.store(slots_[id]->round_robin.load(std::memory_order_relaxed), std::memory_order_relaxed);
    slots_[id] = std::move(slot);
  }
  for (const ServiceEntry& e : diff.added) {
    uint32_t id;
    if (!free_ids_.empty()) {
      id = free_ids_.back();
      free_ids_.pop_back();
    } else {
      id = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    slots_[id] = make_slot(e, id);
  }
  if (slots_.size() - free_ids_.size() > kMaxServiceFrontends)
    throw std::runtime_error("service table: frontends exceed the maximum of " + std::to_string(kMaxServiceFrontends));
  // A frontend added or removed: a new key index; otherwise the old one serves.
  if (!diff.added.empty() || !diff.removed.empty()) index_ = std::make_shared<const KeyIndex>(slots_, generation);
  publish_ids();
}

void ServiceSnapshot::publish_ids() {
  by_id_.resize(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) by_id_[i] = slots_[i].get();
}

void ServiceSnapshot::lookup_bulk(const ServiceWireKey* keys, unsigned n, const ServiceSlot** found) const {
  void* data[RTE_HASH_LOOKUP_BULK_MAX];
  const uint64_t hits = hash_lookup_bulk(index_->hash, keys, n, data);
  for (unsigned i = 0; i < n; ++i)
    found[i] = (hits >> i & 1) ? by_id_[reinterpret_cast<uintptr_t>(data[i])] : nullptr;
}

const ServiceSlot* ServiceSnapshot::find(const ServiceKey& key) const {
  const ServiceWireKey wire = wire_key(key);
  void* data = nullptr;
  if (rte_hash_lookup_data(index_->hash, &wire, &data) < 0) return nullptr;
  return by_id_[reinterpret_cast<uintptr_t>(data)];
}

bool ServiceSnapshot::is_cluster_ip(Ipv4 ip) const {
  return std::binary_search(cluster_ips_->begin(), cluster_ips_->end(), ip);
}

}  // namespace kdp
