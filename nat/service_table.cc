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

}  // namespace

ServiceSnapshot::ServiceSnapshot(const CompiledServices& compiled, uint64_t generation) : compiled_(compiled) {
  const std::string name = "kdp_svc" + std::to_string(generation);
  rte_hash_parameters params{};
  params.name = name.c_str();
  params.entries = std::max<uint32_t>(64, compiled.entries.size() * 2);
  params.key_len = sizeof(ServiceWireKey);
  params.hash_func = rte_hash_crc;
  params.socket_id = SOCKET_ID_ANY;
  params.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE;  // filled once, then only read
  hash_ = rte_hash_create(&params);
  if (hash_ == nullptr) throw std::runtime_error("cannot create the service table " + name);
  // compile_services and the config loader hold the count to kMaxServiceFrontends.
  if (compiled.entries.size() > kMaxServiceFrontends)
    throw std::runtime_error("service table: " + std::to_string(compiled.entries.size()) +
                             " frontends exceed the maximum of " + std::to_string(kMaxServiceFrontends));
  slots_.reserve(compiled.entries.size());
  for (const auto& e : compiled.entries) {
    ServiceSlot slot;
    slot.id = static_cast<uint32_t>(slots_.size());
    slot.kind = e.kind;
    slot.lb = e.lb;
    slot.empty_external = e.when_empty_external;
    slot.empty_pods = e.when_empty_pods;
    slot.masquerade_external = e.masquerade_external;
    slot.masquerade_from_pods = e.masquerade_from_pods;
    slot.affinity_timeout_s = e.affinity ? e.affinity_timeout_s : 0;
    slot.external = make_set(e.backends, e.lb);
    slot.from_pods = make_set(e.backends_from_pods, e.lb);
    slot.source_ranges = e.source_ranges;
    slot.name = e.service + (e.port_name.empty() ? "" : ":" + e.port_name) + " " + e.key().to_string();
    const ServiceWireKey key{to_be32(e.vip), to_be16(e.port), static_cast<uint8_t>(e.proto), 0};
    if (rte_hash_add_key_data(hash_, &key, reinterpret_cast<void*>(static_cast<uintptr_t>(slot.id))) != 0) {
      rte_hash_free(hash_);
      throw std::runtime_error("cannot add service " + slot.name);
    }
    slots_.push_back(std::move(slot));
  }
  rr_ = std::make_unique<std::atomic<uint32_t>[]>(std::max<size_t>(1, slots_.size()));
}

ServiceSnapshot::~ServiceSnapshot() { rte_hash_free(hash_); }

void ServiceSnapshot::lookup_bulk(const ServiceWireKey* keys, unsigned n, const ServiceSlot** found) const {
  void* data[RTE_HASH_LOOKUP_BULK_MAX];
  const uint64_t hits = hash_lookup_bulk(hash_, keys, n, data);
  for (unsigned i = 0; i < n; ++i)
    found[i] = (hits >> i & 1) ? &slots_[reinterpret_cast<uintptr_t>(data[i])] : nullptr;
}

bool ServiceSnapshot::is_cluster_ip(Ipv4 ip) const {
  return std::binary_search(compiled_.cluster_ips.begin(), compiled_.cluster_ips.end(), ip);
}

}  // namespace kdp
