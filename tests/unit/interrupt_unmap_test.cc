// The interrupt-thread unmap guard (drivers/interrupt_unmap_guard.h): memory
// that EAL's interrupt thread unmaps stays mapped until every online poller
// has passed a quiescent point. An EAL alarm runs its callback on the
// interrupt thread, where net_memif handles a peer's hang-up.
#include <gtest/gtest.h>
#include <rte_alarm.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "drivers/interrupt_unmap_guard.h"

namespace kdp {
namespace {

using namespace std::chrono_literals;

struct Qsbr {
  explicit Qsbr(unsigned threads)
      : v(static_cast<rte_rcu_qsbr*>(rte_zmalloc("unmap_test_qsbr", rte_rcu_qsbr_get_memsize(threads), 64)),
          &rte_free) {
    if (!v || rte_rcu_qsbr_init(v.get(), threads) != 0) throw std::runtime_error("QSBR");
  }
  std::unique_ptr<rte_rcu_qsbr, decltype(&rte_free)> v;
};

struct Unmap {
  void* page = nullptr;
  size_t size = 0;
  std::atomic<bool> done{false};
  int result = -1;
};

void unmap_on_interrupt_thread(void* arg) {
  auto* u = static_cast<Unmap*>(arg);
  u->result = munmap(u->page, u->size);
  u->done.store(true);
}

// Whether addr is mapped at all (mincore fails with ENOMEM on a hole).
bool mapped(void* addr, size_t size) {
  unsigned char vec;
  return mincore(addr, size, &vec) == 0;
}

bool wait_for(const std::atomic<bool>& flag, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

Unmap* new_page_unmap() {
  auto* u = new Unmap;
  u->size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  u->page = mmap(nullptr, u->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (u->page == MAP_FAILED) throw std::runtime_error("mmap");
  *static_cast<volatile int*>(u->page) = 42;
  return u;
}

TEST(InterruptUnmapGuard, UnmapWaitsUntilEveryOnlinePollerIsQuiescent) {
  Qsbr pollers(1);
  ASSERT_EQ(rte_rcu_qsbr_thread_register(pollers.v.get(), 0), 0);
  rte_rcu_qsbr_thread_online(pollers.v.get(), 0);  // this thread: a worker inside a burst
  InterruptUnmapGuard guard(pollers.v.get());
  const unsigned long waits_before = InterruptUnmapGuard::waits();

  std::unique_ptr<Unmap> u(new_page_unmap());
  ASSERT_EQ(rte_eal_alarm_set(1, unmap_on_interrupt_thread, u.get()), 0);
  // The interrupt thread is held while this poller has not reported.
  EXPECT_FALSE(wait_for(u->done, 200ms));
  ASSERT_TRUE(mapped(u->page, u->size));
  EXPECT_EQ(*static_cast<volatile int*>(u->page), 42);  // the read a memif worker would do

  rte_rcu_qsbr_quiescent(pollers.v.get(), 0);  // the poll loop's end
  ASSERT_TRUE(wait_for(u->done, 5000ms));
  EXPECT_EQ(u->result, 0);
  EXPECT_FALSE(mapped(u->page, u->size));
  EXPECT_EQ(InterruptUnmapGuard::waits(), waits_before + 1);

  rte_rcu_qsbr_thread_offline(pollers.v.get(), 0);
  rte_rcu_qsbr_thread_unregister(pollers.v.get(), 0);
}

TEST(InterruptUnmapGuard, OfflinePollersAndOtherThreadsDoNotWait) {
  Qsbr pollers(1);
  ASSERT_EQ(rte_rcu_qsbr_thread_register(pollers.v.get(), 0), 0);
  InterruptUnmapGuard guard(pollers.v.get());

  // A sleeping (offline) poller does not hold the interrupt thread.
  std::unique_ptr<Unmap> asleep(new_page_unmap());
  ASSERT_EQ(rte_eal_alarm_set(1, unmap_on_interrupt_thread, asleep.get()), 0);
  ASSERT_TRUE(wait_for(asleep->done, 5000ms));
  EXPECT_EQ(asleep->result, 0);

  // Any other thread's munmap passes straight through, even with a poller
  // online that never reports (the control thread must never wait on it).
  rte_rcu_qsbr_thread_online(pollers.v.get(), 0);
  const unsigned long waits_before = InterruptUnmapGuard::waits();
  std::unique_ptr<Unmap> control(new_page_unmap());
  EXPECT_EQ(munmap(control->page, control->size), 0);
  EXPECT_FALSE(mapped(control->page, control->size));
  EXPECT_EQ(InterruptUnmapGuard::waits(), waits_before);
  rte_rcu_qsbr_thread_offline(pollers.v.get(), 0);
  rte_rcu_qsbr_thread_unregister(pollers.v.get(), 0);
}

TEST(InterruptUnmapGuard, OneGuardAtATime) {
  Qsbr a(1), b(1);
  InterruptUnmapGuard guard(a.v.get());
  EXPECT_THROW(InterruptUnmapGuard second(b.v.get()), std::logic_error);
}

}  // namespace
}  // namespace kdp
