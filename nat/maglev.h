// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016): a lookup table of backend
// indexes in which every backend holds an equal share of the slots, and a
// change of the backend set moves few slots besides those of the backends
// that came or went. No DPDK here: the dataplane builds tables on the control
// thread and workers only read them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kdp {

// Table sizes: the largest prime below each power of two from 2^8 to 2^20,
// so each rung is about twice the one before. A table is sized from
// this fixed ladder rather than from the exact backend count, so adding or
// removing a backend keeps the size (and with it most slots) unless it
// crosses a rung.
inline constexpr std::array<uint32_t, 13> kMaglevTableSizes = {251,   509,   1021,   2039,   4093,   8191,   16381,
                                                               32749, 65521, 131071, 262139, 524287, 1048573};

// The smallest size on the ladder with at least 100 slots per backend (the
// paper's M >= 100 N, which keeps each backend's share within 1% of the
// others'); the largest rung past 10485 backends, the first for 0 or 1.
uint32_t maglev_table_size(size_t backends);

// Fills a table of `size` slots, `size` a prime, with indexes into
// backend_ids. Each id is the backend's stable identity (maglev_backend_id),
// never its position, so that a backend keeps its permutation when others
// come and go. The table depends only on the multiset of ids, not their
// order; every backend gets floor(size / n) or ceil(size / n) slots. Empty
// input gives an empty table. Throws std::invalid_argument when size is not prime.
std::vector<uint32_t> build_maglev_table(const std::vector<uint64_t>& backend_ids, uint32_t size);

// A backend's identity for build_maglev_table: its address and port.
constexpr uint64_t maglev_backend_id(uint32_t ip, uint16_t port) { return uint64_t{ip} << 16 | port; }

}  // namespace kdp
