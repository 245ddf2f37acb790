// The worker's own health counters: how long it went between two polls.
#include <rte_cycles.h>

#include <chrono>
#include <thread>

#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

uint64_t ms_cycles(unsigned ms) { return rte_get_tsc_hz() / 1000 * ms; }

TEST_F(DataplaneTest, PollGapsCountIntoTheBucketsTheyExceed) {
  const auto& c = ctx->counters;
  poll();  // the first poll has no gap before it
  EXPECT_EQ(c.poll_gap_cycles.get(), 0u);
  poll();
  EXPECT_GT(c.poll_gap_cycles.get(), 0u);
  EXPECT_EQ(c.poll_gaps_over[0].get(), 0u) << "back-to-back polls are not over 1 ms";

  std::this_thread::sleep_for(std::chrono::milliseconds(6));  // the worker's CPU taken
  poll();
  const uint64_t longest = c.longest_poll_gap_cycles.get();
  EXPECT_GE(longest, ms_cycles(6));
  EXPECT_GE(c.poll_gap_cycles.get(), longest);
  for (size_t i = 0; i < kPollGapMs.size(); ++i)
    EXPECT_EQ(c.poll_gaps_over[i].get(), longest > ms_cycles(kPollGapMs[i]) ? 1u : 0u) << kPollGapMs[i] << " ms";
  EXPECT_EQ(c.poll_gaps_over[2].get(), 1u);  // over 5 ms

  poll();
  EXPECT_EQ(c.longest_poll_gap_cycles.get(), longest) << "a shorter gap keeps the longest";
  EXPECT_EQ(c.poll_gaps_over[0].get(), 1u);
}

}  // namespace
}  // namespace kdp::test
