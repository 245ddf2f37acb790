// Keeps a PMD from unmapping memory that a polling lcore may still read.
//
// DPDK 22.11's net_memif handles a peer's hang-up on EAL's interrupt thread:
// it clears the port's "connected" flag and then at once munmap()s the
// peer's shared rings. An lcore that tested the flag just before may still be
// about to read a ring, and dies of SIGSEGV. The PMD calls nothing in
// between (no LSC event), so the process interposes munmap(): called on the
// interrupt thread while a guard is set, it first waits for a grace period of
// the pollers' QSBR variable. Every lcore that could have seen the flag set
// has then finished that burst. Other threads' munmap() calls pass straight
// through. Only processes that link this object (kdp, kdp-gen) are affected.
#pragma once

#include <rte_rcu_qsbr.h>

namespace kdp {

class InterruptUnmapGuard {
 public:
  // pollers: the QSBR variable every lcore that polls ports reports to once
  // per loop (offline while asleep or stopped). One guard at a time.
  explicit InterruptUnmapGuard(rte_rcu_qsbr* pollers);
  // Returns once no munmap() on the interrupt thread uses the variable.
  ~InterruptUnmapGuard();
  InterruptUnmapGuard(const InterruptUnmapGuard&) = delete;
  InterruptUnmapGuard& operator=(const InterruptUnmapGuard&) = delete;

  // Grace periods waited for so far (tests, stats).
  static unsigned long waits();
};

}  // namespace kdp
