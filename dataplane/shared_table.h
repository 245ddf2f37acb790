// A table one writer (the control thread) changes while workers read it
// without locks: rte_hash in lock-free reader/writer mode maps a key to an
// index into a fixed array of entries. A removed key's hash slot and entry
// index are reused only after an RCU grace period, so a worker that found
// the entry a moment before removal still reads valid memory.
#pragma once

#include <rte_hash.h>
#include <rte_jhash.h>
#include <rte_prefetch.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane/rcu.h"

namespace kdp {

// rte_hash_lookup_bulk_data over an array of n <= 64 keys; returns the hit
// mask (bit i: keys[i] found, its data in data[i]).
template <class Key>
uint64_t hash_lookup_bulk(const rte_hash* hash, const Key* keys, unsigned n, void** data) {
  const void* key_ptrs[RTE_HASH_LOOKUP_BULK_MAX];
  for (unsigned i = 0; i < n; ++i) key_ptrs[i] = &keys[i];
  uint64_t hits = 0;
  rte_hash_lookup_bulk_data(hash, key_ptrs, n, &hits, data);
  return hits;
}

template <class Key, class Entry>
class SharedTable {
  static_assert(std::has_unique_object_representations_v<Key>, "keys are hashed bytewise: no padding");

 public:
  SharedTable(const std::string& name, uint32_t capacity, Rcu& rcu)
      : rcu_(rcu), entries_(std::make_unique<Entry[]>(capacity)), capacity_(capacity) {
    rte_hash_parameters params{};
    params.name = name.c_str();
    params.entries = capacity;
    params.key_len = sizeof(Key);
    params.hash_func = rte_jhash;
    params.socket_id = SOCKET_ID_ANY;
    // Lock-free readers, a single writer; the extendable table keeps inserts
    // from failing below `capacity` when cuckoo buckets collide.
    params.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
    hash_ = rte_hash_create(&params);
    if (hash_ == nullptr) throw std::runtime_error("cannot create hash table " + name);
    free_.reserve(capacity);
    for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
  }
  ~SharedTable() { rte_hash_free(hash_); }
  SharedTable(const SharedTable&) = delete;
  SharedTable& operator=(const SharedTable&) = delete;

  // ---- reader side (workers) ----

  // Looks up n <= 64 keys at once; found[i] is null for a miss.
  void lookup_bulk(const Key* keys, unsigned n, Entry** found) const {
    void* data[RTE_HASH_LOOKUP_BULK_MAX];
    const uint64_t hits = hash_lookup_bulk(hash_, keys, n, data);
    for (unsigned i = 0; i < n; ++i)
      found[i] = (hits >> i & 1) ? &entries_[reinterpret_cast<uintptr_t>(data[i])] : nullptr;
  }

  Entry* lookup(const Key& key) const {
    void* data = nullptr;
    if (rte_hash_lookup_data(hash_, &key, &data) < 0) return nullptr;
    return &entries_[reinterpret_cast<uintptr_t>(data)];
  }

  // ---- writer side (control thread only) ----

  // Inserts a new key with `init`; null when the table is full or the key exists.
  Entry* insert(const Key& key, const Entry& init) {
    if (free_.empty() || lookup(key) != nullptr) return nullptr;
    uint32_t index = free_.back();
    // The entry is complete before the key is published; rte_hash's release
    // store makes it visible to readers together with the key.
    entries_[index].assign(init);
    if (rte_hash_add_key_data(hash_, &key, reinterpret_cast<void*>(static_cast<uintptr_t>(index))) != 0)
      return nullptr;
    free_.pop_back();
    keys_.resize(std::max<size_t>(keys_.size(), index + 1));
    keys_[index] = {key, true};
    return &entries_[index];
  }

  bool erase(const Key& key) {
    void* data = nullptr;
    if (rte_hash_lookup_data(hash_, &key, &data) < 0) return false;
    int32_t position = rte_hash_del_key(hash_, &key);
    if (position < 0) return false;
    auto index = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data));
    keys_[index].live = false;
    ++retiring_;
    rcu_.defer([this, position, index] {
      rte_hash_free_key_with_position(hash_, position);
      free_.push_back(index);
      --retiring_;
    });
    return true;
  }

  // Visits live entries: fn(const Key&, Entry&).
  template <class Fn>
  void for_each(Fn&& fn) {
    for (uint32_t i = 0; i < keys_.size(); ++i)
      if (keys_[i].live) fn(keys_[i].key, entries_[i]);
  }

  uint32_t size() const { return capacity_ - static_cast<uint32_t>(free_.size()) - retiring_; }
  uint32_t capacity() const { return capacity_; }

 private:
  struct KeySlot {
    Key key{};
    bool live = false;
  };
  Rcu& rcu_;
  rte_hash* hash_ = nullptr;
  std::unique_ptr<Entry[]> entries_;
  uint32_t capacity_;
  std::vector<uint32_t> free_;   // entry indexes ready for reuse
  std::vector<KeySlot> keys_;    // writer's view of which key owns each entry
  uint32_t retiring_ = 0;
};

}  // namespace kdp
