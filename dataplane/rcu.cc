#include "dataplane/rcu.h"

#include <rte_malloc.h>

#include <stdexcept>

namespace kdp {

Rcu::Rcu(unsigned max_workers) {
  size_t size = rte_rcu_qsbr_get_memsize(max_workers);
  qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("kdp_qsbr", size, RTE_CACHE_LINE_SIZE));
  if (qsbr_ == nullptr || rte_rcu_qsbr_init(qsbr_, max_workers) != 0)
    throw std::runtime_error("cannot allocate the RCU QSBR variable");
}

Rcu::~Rcu() {
  drain();
  rte_free(qsbr_);
}

void Rcu::register_worker(unsigned worker_id) {
  if (rte_rcu_qsbr_thread_register(qsbr_, worker_id) != 0)
    throw std::runtime_error("cannot register worker with RCU");
}

void Rcu::defer(std::function<void()> free_fn) {
  pending_.push_back({rte_rcu_qsbr_start(qsbr_), std::move(free_fn)});
}

unsigned Rcu::reclaim() {
  unsigned ran = 0;
  // Tokens grow monotonically, so the queue is in grace-period order.
  while (!pending_.empty() && rte_rcu_qsbr_check(qsbr_, pending_.front().token, false) == 1) {
    auto fn = std::move(pending_.front().free_fn);
    pending_.pop_front();
    fn();
    ++ran;
  }
  return ran;
}

void Rcu::drain() {
  while (!pending_.empty()) {
    rte_rcu_qsbr_check(qsbr_, pending_.front().token, true);
    reclaim();
  }
}

}  // namespace kdp
