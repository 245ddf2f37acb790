// Latency histogram in TSC cycles: exact below 32 cycles, then 32 buckets
// per power of two (under 3.2% error), so recording is a count increment and
// percentiles of any run length come from 15 KiB.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

namespace kdp::gen {

class LatencyHistogram {
 public:
  void add(uint64_t cycles) {
    ++counts_[bucket(cycles)];
    ++count_;
    sum_ += cycles;
    max_ = std::max(max_, cycles);
  }

  void merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0; }

  // The upper edge of the bucket holding the q-quantile (0 < q <= 1), at most max().
  uint64_t percentile(double q) const {
    if (count_ == 0) return 0;
    const auto rank = static_cast<uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < kBuckets; ++b) {
      seen += counts_[b];
      if (seen >= rank) return std::min(upper_edge(b), max_);
    }
    return max_;
  }

 private:
  static constexpr unsigned kSubBits = 5;
  static constexpr unsigned kBuckets = (64 - kSubBits + 1) << kSubBits;

  static unsigned bucket(uint64_t v) {
    if (v < (1u << kSubBits)) return static_cast<unsigned>(v);
    const unsigned shift = 63 - __builtin_clzll(v) - kSubBits;
    return ((shift + 1) << kSubBits) + static_cast<unsigned>((v >> shift) & ((1u << kSubBits) - 1));
  }
  static uint64_t upper_edge(unsigned b) {
    if (b < (1u << kSubBits)) return b;
    const unsigned shift = (b >> kSubBits) - 1;
    const uint64_t low = (uint64_t{(1u << kSubBits) + (b & ((1u << kSubBits) - 1))}) << shift;
    return low + (uint64_t{1} << shift) - 1;
  }

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
};

}  // namespace kdp::gen
