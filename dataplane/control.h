// The control thread's side of the dataplane: the single writer of the FDB
// and the neighbour table. It applies what workers learned, holds packets
// for unresolved neighbours while it sends ARP requests, ages entries and
// retires memory once workers have moved past it.
#pragma once

#include <deque>
#include <unordered_map>
#include <vector>

#include "dataplane/counters.h"
#include "dataplane/worker.h"

namespace kdp {

struct ControlCounters {
  Counter fdb_learned, fdb_moved, fdb_aged, fdb_full;
  Counter neighbors_learned, neighbors_updated, neighbors_expired, neighbors_full;
  Counter arp_requests_sent;
  Counter held, hold_overflow, hold_released, hold_unresolved;
  Counter inject_ring_full, mbuf_alloc_failed;
};

class Control {
 public:
  Control(NodeTables& tables, std::vector<WorkerChannels*> channels, rte_mempool* pool);
  ~Control();

  // Installs [[neighbor]] entries from the config.
  void install_static_neighbors();
  // One iteration: learn events, punted packets, timers, RCU reclaim.
  // Returns how many events and packets it handled.
  unsigned poll();

  const ControlCounters& counters() const { return counters_; }
  size_t pending_resolutions() const { return pending_.size(); }

 private:
  struct Pending {
    std::deque<rte_mbuf*> held;
    uint16_t port = kNoPort;  // uplink it sits behind; kNoPort: a pod behind the bridge
    uint8_t tries = 0;
    uint64_t next_try_ms = 0;
  };

  void learn_mac(const LearnEvent& ev);
  void learn_neighbor(const LearnEvent& ev);
  void hold(rte_mbuf* m);
  void release(be32 ip, const rte_ether_addr& mac);
  void send_arp_request(be32 target, uint16_t port, const rte_ether_addr* unicast_to);
  void inject(rte_mbuf* m);
  void run_timers();
  uint16_t pod_port_for(const rte_ether_addr& mac) const;

  NodeTables& tables_;
  std::vector<WorkerChannels*> channels_;
  rte_mempool* pool_;
  ControlCounters counters_;
  std::unordered_map<uint32_t, Pending> pending_;  // key: be32 next hop
  size_t held_total_ = 0;                           // packets in all pending_ queues
  const size_t held_total_max_;
  uint64_t now_ms_ = 0;
  uint32_t now_s_ = 0;
  uint64_t next_timer_ms_ = 0;
  unsigned inject_rr_ = 0;
};

}  // namespace kdp
