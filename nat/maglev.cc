#include "nat/maglev.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace kdp {

namespace {

// splitmix64's output function: a bijection on 64 bits with full avalanche,
// so two different seeds give two practically independent hashes of one id.
uint64_t mix64(uint64_t value, uint64_t seed) {
  uint64_t z = value ^ seed;
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint64_t kOffsetSeed = 0x6b64702d6f666673ull;  // "kdp-offs"
constexpr uint64_t kSkipSeed = 0x6b64702d736b6970ull;    // "kdp-skip"

bool is_prime(uint32_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0) return false;
  return true;
}

}  // namespace

uint32_t maglev_table_size(size_t backends) {
  for (uint32_t size : kMaglevTableSizes)
    if (size >= 100 * static_cast<uint64_t>(backends)) return size;
  return kMaglevTableSizes.back();
}

std::vector<uint32_t> build_maglev_table(const std::vector<uint64_t>& backend_ids, uint32_t size) {
  if (backend_ids.empty()) return {};
  if (!is_prime(size))
    throw std::invalid_argument("build_maglev_table: size " + std::to_string(size) + " is not prime");

  // Each backend walks its own permutation of the slots: offset, offset + skip,
  // offset + 2 skip, ... (mod size). With size prime and skip in [1, size - 1]
  // the walk visits every slot once before repeating.
  const size_t count = backend_ids.size();
  std::vector<uint32_t> next_slot(count), skip(count);
  for (size_t i = 0; i < count; ++i) {
    next_slot[i] = static_cast<uint32_t>(mix64(backend_ids[i], kOffsetSeed) % size);
    skip[i] = static_cast<uint32_t>(mix64(backend_ids[i], kSkipSeed) % (size - 1) + 1);
  }

  // Backends take turns in the order of their ids, not of the caller's list,
  // so the table depends on the set alone.
  std::vector<uint32_t> turn_order(count);
  std::iota(turn_order.begin(), turn_order.end(), 0u);
  std::stable_sort(turn_order.begin(), turn_order.end(),
                   [&](uint32_t a, uint32_t b) { return backend_ids[a] < backend_ids[b]; });

  // Round after round, each backend claims the first free slot on its walk;
  // one slot per turn is what makes the shares equal within one.
  constexpr uint32_t kFree = UINT32_MAX;
  std::vector<uint32_t> table(size, kFree);
  auto advance = [&](uint32_t backend) {
    next_slot[backend] = static_cast<uint32_t>((uint64_t{next_slot[backend]} + skip[backend]) % size);
  };
  uint32_t filled = 0;
  while (true) {
    for (uint32_t backend : turn_order) {
      while (table[next_slot[backend]] != kFree) advance(backend);  // ends: a free slot remains on the walk
      table[next_slot[backend]] = backend;
      advance(backend);
      if (++filled == size) return table;
    }
  }
}

}  // namespace kdp
