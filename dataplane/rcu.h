// Safe memory reclamation for tables that workers read without locks.
//
// Workers report a quiescent state once per poll loop (rte_rcu_qsbr). The
// control thread retires memory with defer(): the callback runs only after
// every online worker has passed a quiescent point since the retirement, so
// no worker can still hold a pointer into it. Never a sleep as grace period.
#pragma once

#include <rte_rcu_qsbr.h>

#include <deque>
#include <functional>

namespace kdp {

class Rcu {
 public:
  explicit Rcu(unsigned max_workers);
  ~Rcu();
  Rcu(const Rcu&) = delete;
  Rcu& operator=(const Rcu&) = delete;

  rte_rcu_qsbr* qsbr() const { return qsbr_; }

  // Worker side.
  void register_worker(unsigned worker_id);
  void online(unsigned worker_id) { rte_rcu_qsbr_thread_online(qsbr_, worker_id); }
  void offline(unsigned worker_id) { rte_rcu_qsbr_thread_offline(qsbr_, worker_id); }
  void quiescent(unsigned worker_id) { rte_rcu_qsbr_quiescent(qsbr_, worker_id); }

  // Control side (single thread).
  void defer(std::function<void()> free_fn);
  // Runs the callbacks whose grace period has ended; returns how many ran.
  unsigned reclaim();
  // Blocks until every pending callback has run (shutdown, tests).
  void drain();
  size_t pending() const { return pending_.size(); }
  // A grace period that starts now, and whether it has ended: every worker
  // online now has since passed a quiescent point (so none still holds a
  // table pointer read before the call).
  uint64_t start_grace() { return rte_rcu_qsbr_start(qsbr_); }
  bool grace_ended(uint64_t token) const { return rte_rcu_qsbr_check(qsbr_, token, false) == 1; }
  // Blocks until every worker online now has passed a quiescent point
  // (offline ones are not waited for).
  void synchronize() { rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID); }

 private:
  struct Retired {
    uint64_t token;
    std::function<void()> free_fn;
  };
  rte_rcu_qsbr* qsbr_ = nullptr;
  std::deque<Retired> pending_;
};

}  // namespace kdp
