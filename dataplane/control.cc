#include "dataplane/control.h"

#include <rte_cycles.h>

#include <algorithm>

#include "dataplane/packet_build.h"

namespace kdp {

namespace {
constexpr unsigned kSweepPerPoll = 2048;
}  // namespace

Control::Control(NodeTables& tables, std::vector<WorkerChannels*> channels, rte_mempool* pool)
    : tables_(tables),
      channels_(std::move(channels)),
      pool_(pool),
      held_total_max_(std::min(tables.config.neighbor.held_total_max(), pool != nullptr ? pool->size / 4 : 0u)) {}

Control::~Control() {
  for (auto& [ip, pending] : pending_)
    for (rte_mbuf* m : pending.held) rte_pktmbuf_free(m);
}

void Control::install_static_neighbors() {
  for (const auto& n : tables_.config.neighbors) {
    NeighborEntry entry;
    entry.mac_state.store(NeighborEntry::pack(to_ether(n.mac), NeighborState::Static));
    entry.port = n.port.empty() ? kNoPort : tables_.port_index(n.port);
    if (tables_.neighbors.insert(NeighborKey{to_be32(n.ip)}, entry) == nullptr) counters_.neighbors_full.add();
  }
}

unsigned Control::poll() {
  const uint64_t tsc = rte_rdtsc();
  now_ms_ = tsc / (rte_get_tsc_hz() / 1000);
  now_s_ = static_cast<uint32_t>(tsc / rte_get_tsc_hz());  // the workers' clock
  unsigned handled = 0;
  for (WorkerChannels* ch : channels_) {
    LearnEvent ev;
    while (ch->learn.pop(ev)) {
      ++handled;
      if (ev.kind == LearnEvent::Kind::Mac) learn_mac(ev);
      else learn_neighbor(ev);
    }
    rte_mbuf* punted[kBurstSize];
    unsigned n;
    while ((n = rte_ring_sc_dequeue_burst(ch->punt, reinterpret_cast<void**>(punted), kBurstSize, nullptr)) != 0) {
      handled += n;
      for (unsigned i = 0; i < n; ++i) hold(punted[i]);
    }
  }
  if (now_ms_ >= next_timer_ms_) {
    run_timers();
    next_timer_ms_ = now_ms_ + 100;
  }
  // A slice of the flow table per poll: the whole table every few seconds.
  tables_.conntrack->sweep(now_s_, kSweepPerPoll);
  tables_.rcu.reclaim();
  return handled;
}

void Control::learn_mac(const LearnEvent& ev) {
  // Seen on a port pod.del has removed since: its entries are gone for good.
  if (!tables_.port_set()->has(ev.port)) return;
  const FdbKey key = fdb_key(ev.mac);
  if (FdbEntry* e = tables_.fdb.lookup(key)) {
    if (e->is_static) return;
    if (e->port.load(std::memory_order_relaxed) != ev.port) {
      e->port.store(ev.port, std::memory_order_relaxed);
      counters_.fdb_moved.add();
    }
    e->last_seen_s.store(now_s_, std::memory_order_relaxed);
    return;
  }
  FdbEntry entry;
  entry.port.store(ev.port, std::memory_order_relaxed);
  entry.last_seen_s.store(now_s_, std::memory_order_relaxed);
  if (tables_.fdb.insert(key, entry) != nullptr) counters_.fdb_learned.add();
  else counters_.fdb_full.add();
}

void Control::learn_neighbor(const LearnEvent& ev) {
  const NeighborKey key{ev.ip};
  // As Linux: ARP aimed at us confirms the neighbour (reachable); other ARP
  // only updates a changed MAC, leaving the entry stale until confirmed.
  const NeighborState state = ev.confirmed ? NeighborState::Reachable : NeighborState::Stale;
  const uint64_t word = NeighborEntry::pack(ev.mac, state);
  if (NeighborEntry* e = tables_.neighbors.lookup(key)) {
    if (e->state() == NeighborState::Static) return;
    rte_ether_addr old_mac;
    e->mac(old_mac);
    if (!rte_is_same_ether_addr(&old_mac, &ev.mac)) counters_.neighbors_updated.add();
    e->mac_state.store(word, std::memory_order_relaxed);
    if (ev.confirmed) {
      e->confirmed_s = now_s_;
      e->probes_sent = 0;
    }
    e->port = ev.port;
  } else {
    NeighborEntry entry;
    entry.mac_state.store(word, std::memory_order_relaxed);
    entry.confirmed_s = now_s_;
    entry.port = ev.port;
    if (tables_.neighbors.insert(key, entry) == nullptr) {
      counters_.neighbors_full.add();
      return;
    }
    counters_.neighbors_learned.add();
  }
  release(ev.ip, ev.mac);
}

uint16_t Control::pod_port_for(const rte_ether_addr& mac) const {
  const FdbEntry* e = tables_.fdb.lookup(fdb_key(mac));
  return e != nullptr ? e->port.load(std::memory_order_relaxed) : kFloodPort;
}

void Control::hold(rte_mbuf* m) {
  PacketMeta& md = meta(m);
  // Resolved since the worker looked: send it on.
  if (const NeighborEntry* e = tables_.neighbors.lookup(NeighborKey{md.next_hop})) {
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    e->mac(eth->dst_addr);
    md.out_port = (md.flags & kFlagToBridgeNet) ? pod_port_for(eth->dst_addr) : md.out_port;
    md.flood_exclude = kNoPort;
    inject(m);
    counters_.hold_released.add();
    return;
  }
  auto [it, is_new] = pending_.try_emplace(static_cast<uint32_t>(md.next_hop));
  Pending& p = it->second;
  // Per neighbour, as Linux's unres_qlen, and for all of them together, so
  // held packets never take more mbufs than the pool set aside for them (or
  // a quarter of a pool sized by hand).
  if (p.held.size() >= tables_.config.neighbor.hold_packets || held_total_ >= held_total_max_) {
    counters_.hold_overflow.add();
    rte_pktmbuf_free(m);
    if (p.held.empty()) pending_.erase(it);  // nothing held: no resolution started for it
    return;
  }
  p.held.push_back(m);
  ++held_total_;
  counters_.held.add();
  if (is_new) {
    p.port = (md.flags & kFlagToBridgeNet) ? kNoPort : md.out_port;
    send_arp_request(md.next_hop, p.port, nullptr);
    p.tries = 1;
    p.next_try_ms = now_ms_ + tables_.config.neighbor.retry_ms;
  }
}

void Control::release(be32 ip, const rte_ether_addr& mac) {
  auto it = pending_.find(static_cast<uint32_t>(ip));
  if (it == pending_.end()) return;
  for (rte_mbuf* m : it->second.held) {
    PacketMeta& md = meta(m);
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    eth->dst_addr = mac;
    if (md.flags & kFlagToBridgeNet) md.out_port = pod_port_for(mac);
    md.flood_exclude = kNoPort;
    inject(m);
    counters_.hold_released.add();
  }
  held_total_ -= it->second.held.size();
  pending_.erase(it);
}

void Control::send_arp_request(be32 target, uint16_t port, const rte_ether_addr* unicast_to) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (m == nullptr) {
    counters_.mbuf_alloc_failed.add();
    return;
  }
  const bool to_pods = port == kNoPort;
  const rte_ether_addr& our_mac = to_pods ? tables_.gateway_mac : tables_.port_set()->ports[port].mac;
  const be32 our_ip = to_pods ? tables_.gateway_ip : tables_.node_ip;
  rte_ether_addr broadcast;
  memset(broadcast.addr_bytes, 0xff, sizeof broadcast.addr_bytes);
  const rte_ether_addr zero{};
  write_arp(m, RTE_ARP_OP_REQUEST, unicast_to ? *unicast_to : broadcast, our_mac, our_ip, zero, target);
  PacketMeta& md = meta(m);
  md = {};
  md.in_port = kNoPort;
  md.flood_exclude = kNoPort;
  md.out_port = to_pods ? (unicast_to ? pod_port_for(*unicast_to) : kFloodPort) : port;
  counters_.arp_requests_sent.add();
  inject(m);
}

void Control::inject(rte_mbuf* m) {
  // Spread over workers; each ring has one producer: this thread.
  WorkerChannels* ch = channels_[inject_rr_++ % channels_.size()];
  if (rte_ring_sp_enqueue(ch->inject, m) != 0) {
    counters_.inject_ring_full.add();
    rte_pktmbuf_free(m);
  }
}

void Control::run_timers() {
  const auto& ncfg = tables_.config.neighbor;
  const PortSet& ports = *tables_.port_set();
  // Unresolved neighbours: retry, then give up on the held packets.
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& p = it->second;
    if (now_ms_ < p.next_try_ms) {
      ++it;
      continue;
    }
    if (p.tries >= ncfg.retries) {
      counters_.hold_unresolved.add(p.held.size());
      held_total_ -= p.held.size();
      for (rte_mbuf* m : p.held) rte_pktmbuf_free(m);
      it = pending_.erase(it);
      continue;
    }
    send_arp_request(be32{it->first}, p.port, nullptr);
    ++p.tries;
    p.next_try_ms = now_ms_ + ncfg.retry_ms;
    ++it;
  }

  // FDB aging.
  std::vector<FdbKey> aged;
  tables_.fdb.for_each([&](const FdbKey& key, FdbEntry& e) {
    if (!e.is_static &&
        seconds_since(now_s_, e.last_seen_s.load(std::memory_order_relaxed)) >= tables_.config.bridge.aging_s)
      aged.push_back(key);
  });
  for (const auto& key : aged)
    if (tables_.fdb.erase(key)) counters_.fdb_aged.add();

  // Neighbours: reachable → stale after reachable_s; a stale entry still in
  // use is probed (unicast, as Linux does), an unused one expires.
  std::vector<NeighborKey> expired;
  tables_.neighbors.for_each([&](const NeighborKey& key, NeighborEntry& e) {
    NeighborState state = e.state();
    if (state == NeighborState::Static) return;
    rte_ether_addr mac;
    e.mac(mac);
    const uint32_t last_used = e.last_used_s.load(std::memory_order_relaxed);
    // Pods are reached through the bridge; others through their uplink.
    const uint16_t arp_port =
        ports.has(e.port) && ports.ports[e.port].role == PortRole::Uplink ? e.port : kNoPort;
    switch (state) {
      case NeighborState::Reachable:
        if (now_s_ - e.confirmed_s >= ncfg.reachable_s) e.mac_state.store(NeighborEntry::pack(mac, NeighborState::Stale));
        break;
      case NeighborState::Stale:
        if (seconds_since(now_s_, last_used) < ncfg.reachable_s) {
          e.mac_state.store(NeighborEntry::pack(mac, NeighborState::Probe));
          e.probes_sent = 1;
          e.next_probe_ms = now_ms_ + ncfg.retry_ms;
          send_arp_request(key.ip, arp_port, &mac);
        } else if (seconds_since(now_s_, std::max(e.confirmed_s, last_used)) >= ncfg.reachable_s + ncfg.stale_s) {
          expired.push_back(key);
        }
        break;
      case NeighborState::Probe:
        if (now_ms_ < e.next_probe_ms) break;
        if (e.probes_sent >= ncfg.retries) {
          expired.push_back(key);
        } else {
          ++e.probes_sent;
          e.next_probe_ms = now_ms_ + ncfg.retry_ms;
          send_arp_request(key.ip, arp_port, &mac);
        }
        break;
      case NeighborState::Static: break;
    }
  });
  for (const auto& key : expired)
    if (tables_.neighbors.erase(key)) counters_.neighbors_expired.add();
}

}  // namespace kdp
