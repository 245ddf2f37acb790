// Unit tests of the Maglev table: sizes, balance, determinism and how few
// slots move when a backend comes or goes. The bounds on movement are
// measured over these inputs and over random backend sets (see each test),
// then given a little room; Maglev promises near-minimal, not minimal,
// disruption.
#include "nat/maglev.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace kdp {
namespace {

// n backends 10.244.1.1:8080, 10.244.1.2:8080, ...
std::vector<uint64_t> backend_ids(size_t count, uint32_t first_ip = 0x0af40101) {
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < count; ++i) ids.push_back(maglev_backend_id(first_ip + static_cast<uint32_t>(i), 8080));
  return ids;
}

// Slots per backend index.
std::vector<size_t> shares(const std::vector<uint32_t>& table, size_t backends) {
  std::vector<size_t> counts(backends);
  for (uint32_t backend : table) counts.at(backend)++;
  return counts;
}

// The backend id in every slot: what a flow hashing to the slot reaches.
std::vector<uint64_t> ids_by_slot(const std::vector<uint32_t>& table, const std::vector<uint64_t>& ids) {
  std::vector<uint64_t> by_slot;
  for (uint32_t backend : table) by_slot.push_back(ids.at(backend));
  return by_slot;
}

bool is_prime(uint32_t n) {
  if (n < 2) return false;
  for (uint32_t d = 2; uint64_t{d} * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

TEST(MaglevTest, SizeLadderIsTheLargestPrimeBelowEachPowerOfTwo) {
  for (size_t i = 0; i < kMaglevTableSizes.size(); ++i) {
    const uint32_t power = 1u << (8 + i);  // 256 .. 1048576
    SCOPED_TRACE(power);
    EXPECT_TRUE(is_prime(kMaglevTableSizes[i]));
    EXPECT_LT(kMaglevTableSizes[i], power);
    for (uint32_t n = kMaglevTableSizes[i] + 1; n < power; ++n) EXPECT_FALSE(is_prime(n)) << n;
  }
}

TEST(MaglevTest, TableSizeIsTheSmallestRungWithAHundredSlotsPerBackend) {
  EXPECT_EQ(maglev_table_size(0), 251u);
  EXPECT_EQ(maglev_table_size(1), 251u);
  EXPECT_EQ(maglev_table_size(2), 251u);
  EXPECT_EQ(maglev_table_size(3), 509u);
  EXPECT_EQ(maglev_table_size(5), 509u);
  EXPECT_EQ(maglev_table_size(6), 1021u);
  EXPECT_EQ(maglev_table_size(10), 1021u);
  EXPECT_EQ(maglev_table_size(11), 2039u);
  EXPECT_EQ(maglev_table_size(99), 16381u);
  EXPECT_EQ(maglev_table_size(100), 16381u);
  EXPECT_EQ(maglev_table_size(101), 16381u);
  EXPECT_EQ(maglev_table_size(10485), 1048573u);
  EXPECT_EQ(maglev_table_size(10486), 1048573u);  // past the ladder: its top
  EXPECT_EQ(maglev_table_size(1000000), 1048573u);
  for (size_t backends = 1; backends <= 10485; ++backends) {
    uint32_t size = maglev_table_size(backends);
    ASSERT_GE(size, 100 * backends);
    auto rung = std::find(kMaglevTableSizes.begin(), kMaglevTableSizes.end(), size);
    ASSERT_NE(rung, kMaglevTableSizes.end());
    if (rung != kMaglevTableSizes.begin()) {
      ASSERT_LT(*(rung - 1), 100 * backends);
    }
  }
}

TEST(MaglevTest, EmptyInputGivesAnEmptyTable) {
  EXPECT_TRUE(build_maglev_table({}, 251).empty());
  EXPECT_TRUE(build_maglev_table({}, 1000).empty());  // no table to build, so no size to check
}

TEST(MaglevTest, SizeMustBePrime) {
  for (uint32_t size : {0u, 1u, 4u, 1000u, 1024u, 65535u})
    EXPECT_THROW(build_maglev_table(backend_ids(3), size), std::invalid_argument) << size;
  EXPECT_EQ(build_maglev_table(backend_ids(1), 2), (std::vector<uint32_t>{0, 0}));
  EXPECT_EQ(build_maglev_table(backend_ids(3), 3).size(), 3u);
}

TEST(MaglevTest, OneBackendTakesEverySlot) {
  const std::vector<uint32_t> table = build_maglev_table(backend_ids(1), 251);
  EXPECT_EQ(table, std::vector<uint32_t>(251, 0));
}

TEST(MaglevTest, EverySlotHoldsABackendAndSharesDifferByAtMostOne) {
  for (size_t count : {2, 3, 7, 10, 100, 1000}) {
    SCOPED_TRACE(count);
    const uint32_t size = maglev_table_size(count);
    const std::vector<uint32_t> table = build_maglev_table(backend_ids(count), size);
    ASSERT_EQ(table.size(), size);
    // shares() throws on an index out of range, i.e. an unfilled slot.
    const std::vector<size_t> counts = shares(table, count);
    const auto [min, max] = std::minmax_element(counts.begin(), counts.end());
    // Backends take one slot per turn, so the shares are floor or ceil of size / count.
    EXPECT_EQ(*min, size / count);
    EXPECT_LE(*max - *min, 1u);
    EXPECT_LE(static_cast<double>(*max) / static_cast<double>(*min), 1.01);
  }
}

TEST(MaglevTest, SameInputSameTable) {
  const std::vector<uint64_t> ids = backend_ids(10);
  EXPECT_EQ(build_maglev_table(ids, 1021), build_maglev_table(ids, 1021));
}

TEST(MaglevTest, TableDependsOnTheSetOfBackendsNotTheirOrder) {
  const std::vector<uint64_t> ids = backend_ids(10);
  std::vector<uint64_t> reversed(ids.rbegin(), ids.rend());
  std::vector<uint64_t> rotated = ids;
  std::rotate(rotated.begin(), rotated.begin() + 3, rotated.end());
  const std::vector<uint64_t> expected = ids_by_slot(build_maglev_table(ids, 1021), ids);
  EXPECT_EQ(ids_by_slot(build_maglev_table(reversed, 1021), reversed), expected);
  EXPECT_EQ(ids_by_slot(build_maglev_table(rotated, 1021), rotated), expected);
}

TEST(MaglevTest, DifferentBackendsGiveDifferentLayouts) {
  // The permutations come from the ids: another set of backends does not
  // just rename the same layout.
  const std::vector<uint32_t> first = build_maglev_table(backend_ids(10), 1021);
  const std::vector<uint32_t> second = build_maglev_table(backend_ids(10, 0x0af40201), 1021);
  size_t same = 0;
  for (size_t slot = 0; slot < first.size(); ++slot) same += first[slot] == second[slot];
  EXPECT_LT(same, first.size() / 5);  // about 1/10 by chance
}

TEST(MaglevTest, BackendIdIsAddressAndPort) {
  EXPECT_EQ(maglev_backend_id(0x0a000001, 80), 0x0a0000010050u);
  EXPECT_NE(maglev_backend_id(0x0a000001, 80), maglev_backend_id(0x0a000001, 81));
}

// Slots, outside those `removed` held, whose backend differs between the tables.
double moved_fraction(const std::vector<uint64_t>& before, const std::vector<uint64_t>& after, uint64_t removed) {
  size_t moved = 0;
  for (size_t slot = 0; slot < before.size(); ++slot)
    if (before[slot] != removed && before[slot] != after[slot]) ++moved;
  return static_cast<double>(moved) / static_cast<double>(before.size());
}

// Removing any one of `count` backends: its own slots go to the others, and
// of the other slots at most `bound` (a fraction of the table) move.
void expect_removal_disruption(size_t count, double bound, double mean_bound) {
  SCOPED_TRACE(count);
  const std::vector<uint64_t> ids = backend_ids(count);
  const uint32_t size = maglev_table_size(count);
  ASSERT_EQ(maglev_table_size(count - 1), size);  // the size stays: slots are comparable
  const std::vector<uint64_t> before = ids_by_slot(build_maglev_table(ids, size), ids);
  double total = 0;
  for (size_t victim = 0; victim < count; ++victim) {
    std::vector<uint64_t> fewer = ids;
    fewer.erase(fewer.begin() + static_cast<std::ptrdiff_t>(victim));
    const std::vector<uint64_t> after = ids_by_slot(build_maglev_table(fewer, size), fewer);
    const double moved = moved_fraction(before, after, ids[victim]);
    EXPECT_LE(moved, bound) << "removing backend " << victim;
    total += moved;
  }
  EXPECT_LE(total / static_cast<double>(count), mean_bound);
}

TEST(MaglevTest, RemovingOneOfTenMovesFewOtherSlots) {
  // Measured: at most 3.9% of the table besides the removed backend's own
  // 10% (mean 2.7%); over 50 random sets of 10, at most 3.5%.
  expect_removal_disruption(10, 0.05, 0.03);
}

TEST(MaglevTest, RemovingOneOfAHundredMovesFewOtherSlots) {
  // Measured: at most 1.53% besides the removed backend's own 1% (mean 1.34%).
  expect_removal_disruption(100, 0.02, 0.015);
}

// Adding one backend to `count`, at table size `size`: the newcomer takes its
// 1/(count+1) share, and at most `others_bound` of the table moves between
// the old backends besides.
void expect_addition_disruption(size_t count, uint32_t size, double others_bound) {
  SCOPED_TRACE(count);
  const std::vector<uint64_t> ids = backend_ids(count);
  const std::vector<uint64_t> before = ids_by_slot(build_maglev_table(ids, size), ids);
  for (uint32_t newcomer_ip : {0x0af40201u, 0x0af40301u, 0x0a000001u}) {
    std::vector<uint64_t> more = ids;
    more.push_back(maglev_backend_id(newcomer_ip, 8080));
    const std::vector<uint64_t> after = ids_by_slot(build_maglev_table(more, size), more);
    size_t to_newcomer = 0, between_others = 0;
    for (size_t slot = 0; slot < size; ++slot) {
      if (after[slot] == more.back())
        ++to_newcomer;
      else if (after[slot] != before[slot])
        ++between_others;
    }
    EXPECT_GE(to_newcomer, size / (count + 1));
    EXPECT_LE(to_newcomer, size / (count + 1) + 1);
    EXPECT_LE(static_cast<double>(between_others) / size, others_bound) << "newcomer " << newcomer_ip;
  }
}

TEST(MaglevTest, AddingToAHundredMovesAboutOneHundredAndFirst) {
  ASSERT_EQ(maglev_table_size(101), maglev_table_size(100));
  // Measured: 1.4% to 1.5% of the table moves between old backends.
  expect_addition_disruption(100, maglev_table_size(100), 0.02);
}

TEST(MaglevTest, AddingToTenAtAFixedSizeMovesAboutOneEleventh) {
  // 11 backends would climb a rung (2039 slots) and reshuffle everything; at
  // one size, measured: 2.7% to 3.7% between old backends (5.1% at worst over
  // 50 random sets).
  expect_addition_disruption(10, 1021, 0.06);
}

}  // namespace
}  // namespace kdp
