#include "drivers/interrupt_unmap_guard.h"

#include <dlfcn.h>
#include <rte_interrupts.h>
#include <rte_pause.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>

namespace {

using MunmapFn = int (*)(void*, size_t);

// The munmap() this one stands in front of (libc's, or a sanitizer's), found
// before main() so that no munmap() call has to look it up.
MunmapFn g_next_munmap = nullptr;
__attribute__((constructor)) void find_next_munmap() {
  g_next_munmap = reinterpret_cast<MunmapFn>(dlsym(RTLD_NEXT, "munmap"));
}

std::atomic<rte_rcu_qsbr*> g_pollers{nullptr};
// Interrupt-thread munmap() calls between loading g_pollers and leaving its
// grace period: the guard's destructor waits for them before the variable may go.
std::atomic<unsigned> g_unmaps_in_grace{0};
std::atomic<unsigned long> g_waits{0};

}  // namespace

extern "C" int munmap(void* addr, size_t length) noexcept {
  if (rte_thread_is_intr()) {
    g_unmaps_in_grace.fetch_add(1);
    if (rte_rcu_qsbr* pollers = g_pollers.load()) {
      rte_rcu_qsbr_synchronize(pollers, RTE_QSBR_THRID_INVALID);
      g_waits.fetch_add(1, std::memory_order_relaxed);
    }
    g_unmaps_in_grace.fetch_sub(1);
  }
  if (g_next_munmap != nullptr) return g_next_munmap(addr, length);
  return static_cast<int>(syscall(SYS_munmap, addr, length));
}

namespace kdp {

InterruptUnmapGuard::InterruptUnmapGuard(rte_rcu_qsbr* pollers) {
  rte_rcu_qsbr* none = nullptr;
  if (!g_pollers.compare_exchange_strong(none, pollers))
    throw std::logic_error("an interrupt-thread unmap guard is already set");
}

InterruptUnmapGuard::~InterruptUnmapGuard() {
  g_pollers.store(nullptr);
  while (g_unmaps_in_grace.load() != 0) rte_pause();
}

unsigned long InterruptUnmapGuard::waits() { return g_waits.load(std::memory_order_relaxed); }

}  // namespace kdp
