#include "dataplane/stats.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mempool.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "dataplane/burst.h"
#include "drivers/interrupt_unmap_guard.h"

namespace kdp {

using nlohmann::json;

json collect_stats(const NodeTables& tables, const std::vector<std::unique_ptr<WorkerContext>>& workers,
                   const Control& control) {
  json out;
  out["node"] = tables.config.node.name;
  out["ports"] = json::array();
  const PortSet& set = *tables.port_set();
  for (uint16_t p : set.active) {
    const PortInfo& port = set.ports[p];
    // Counters of a reused index start from what it had when this port got it.
    uint64_t rx = 0, tx = 0, tx_dropped = 0;
    for (const auto& w : workers) {
      rx += w->counters.port[p].rx.get();
      tx += w->counters.port[p].tx.get();
      tx_dropped += w->counters.port[p].tx_dropped.get();
    }
    rx -= port.counter_base.rx;
    tx -= port.counter_base.tx;
    tx_dropped -= port.counter_base.tx_dropped;
    rte_eth_stats hw{};
    rte_eth_stats_get(port.dpdk_id, &hw);
    out["ports"].push_back({{"name", port.name},
                            {"role", port_role_name(port.role)},
                            {"mac", from_ether(port.mac).to_string()},
                            {"rx", rx},
                            {"tx", tx - tx_dropped},
                            {"tx_dropped", tx_dropped},
                            {"rx_missed", hw.imissed},
                            {"rx_errors", hw.ierrors},
                            {"rx_nombuf", hw.rx_nombuf}});
  }
  json stages = json::object(), drops = json::object();
  for (unsigned s = 0; s < kStageCount; ++s) {
    uint64_t n = 0;
    for (const auto& w : workers) n += w->counters.stage_packets[s].get();
    stages[stage_name(static_cast<StageId>(s))] = n;
  }
  for (unsigned r = 0; r < kDropReasonCount; ++r) {
    uint64_t n = 0;
    for (const auto& w : workers) n += w->counters.drops[r].get();
    drops[drop_reason_name(static_cast<DropReason>(r))] = n;
  }
  json icmp = json::object();
  for (unsigned o = 0; o < static_cast<unsigned>(IcmpErrorOutcome::Count); ++o) {
    uint64_t n = 0;
    for (const auto& w : workers) n += w->counters.icmp_errors[o].get();
    icmp[kIcmpErrorOutcomeNames[o]] = n;
  }
  out["icmp_errors"] = icmp;
  out["stages"] = stages;
  out["drops"] = drops;
  out["workers"] = json::array();
  const double hz = static_cast<double>(rte_get_tsc_hz());
  // Cumulative buckets as the exposition format has them. Read from the
  // longest bound down, and the poll count last: the worker counts a gap
  // into the shorter bounds first, so what is read stays cumulative.
  auto poll_gap_histogram = [hz](const WorkerCounters& c) {
    std::array<uint64_t, kPollGapMs.size()> over;
    for (size_t i = kPollGapMs.size(); i-- > 0;) over[i] = c.poll_gaps_over[i].get();
    const uint64_t sum = c.poll_gap_cycles.get();
    const uint64_t polls = c.polls.get();
    const uint64_t count = std::max<uint64_t>(polls, 1) - 1;  // the first poll has no gap before it
    json buckets = json::array();
    for (size_t i = 0; i < kPollGapMs.size(); ++i)
      buckets.push_back({kPollGapMs[i] / 1e3, count - std::min(count, over[i])});
    return json{{"count", count}, {"sum", double(sum) / hz}, {"buckets", buckets}};
  };
  for (const auto& w : workers) {
    const auto& c = w->counters;
    const uint64_t pkts = c.busy_packets.get();
    out["workers"].push_back({{"id", w->id},
                              {"lcore", w->lcore},
                              {"polls", c.polls.get()},
                              {"packets", pkts},
                              {"cycles_per_packet", pkts ? double(c.busy_cycles.get()) / double(pkts) : 0.0},
                              {"punted", c.punted.get()},
                              {"fragments_made", c.fragments_made.get()},
                              {"injected", c.injected.get()},
                              {"learn_events", c.learn_events.get()},
                              {"learn_queue_full", c.learn_queue_full.get()},
                              {"idle_sleeps", c.idle_sleeps.get()},
                              {"longest_poll_gap_s", double(c.longest_poll_gap_cycles.get()) / hz},
                              {"poll_gap_s", poll_gap_histogram(c)}});
  }
  const Conntrack& ct = *tables.conntrack;
  out["conntrack"] = {{"flows", ct.size()},
                      {"capacity", ct.capacity()},
                      {"created", ct.counters().created.load()},
                      {"expired", ct.counters().expired.load()},
                      {"evicted", ct.counters().evicted.load()},
                      {"full", ct.counters().full.load()},
                      {"collisions", ct.counters().collisions.load()}};
  out["services"] = tables.services()->size();
  const auto& cc = control.counters();
  out["control"] = {{"fdb_entries", tables.fdb.size()},
                    {"fdb_learned", cc.fdb_learned.get()},
                    {"fdb_moved", cc.fdb_moved.get()},
                    {"fdb_aged", cc.fdb_aged.get()},
                    {"fdb_full", cc.fdb_full.get()},
                    {"neighbor_entries", tables.neighbors.size()},
                    {"neighbors_learned", cc.neighbors_learned.get()},
                    {"neighbors_updated", cc.neighbors_updated.get()},
                    {"neighbors_expired", cc.neighbors_expired.get()},
                    {"neighbors_full", cc.neighbors_full.get()},
                    {"arp_requests_sent", cc.arp_requests_sent.get()},
                    {"held", cc.held.get()},
                    {"hold_overflow", cc.hold_overflow.get()},
                    {"hold_released", cc.hold_released.get()},
                    {"hold_unresolved", cc.hold_unresolved.get()},
                    {"pending_resolutions", control.pending_resolutions()},
                    {"inject_ring_full", cc.inject_ring_full.get()},
                    {"mbuf_alloc_failed", cc.mbuf_alloc_failed.get()},
                    // memif peers that hung up: unmaps held until no worker could read their rings.
                    {"unmap_grace_waits", InterruptUnmapGuard::waits()}};
  // The one mbuf pool every worker and the control thread draw from. Mbufs in
  // per-lcore caches count as available, those posted to RX rings as in use;
  // once traffic stops and held packets are gone, in_use returns to its idle
  // figure, and staying above it means mbufs leaked.
  if (!workers.empty() && workers.front()->pool != nullptr) {
    const rte_mempool* pool = workers.front()->pool;
    const unsigned available = rte_mempool_avail_count(pool);
    out["mbuf_pool"] = {{"size", pool->size}, {"available", available}, {"in_use", pool->size - available}};
  }
  return out;
}

std::string format_summary(const json& s) {
  std::string out = fmt::format("kdp node {}: summary\n", s["node"].get<std::string>());
  out += fmt::format("  {:<10} {:<7} {:<18} {:>12} {:>12} {:>10} {:>10}\n", "port", "role", "mac", "rx", "tx",
                     "tx_drop", "rx_missed");
  for (const auto& p : s["ports"])
    out += fmt::format("  {:<10} {:<7} {:<18} {:>12} {:>12} {:>10} {:>10}\n", p["name"].get<std::string>(),
                       p["role"].get<std::string>(), p["mac"].get<std::string>(), p["rx"].get<uint64_t>(),
                       p["tx"].get<uint64_t>(), p["tx_dropped"].get<uint64_t>(), p["rx_missed"].get<uint64_t>());
  out += "  stages:";
  for (const auto& [name, n] : s["stages"].items()) out += fmt::format(" {}={}", name, n.get<uint64_t>());
  out += "\n  drops:";
  bool any = false;
  for (const auto& [name, n] : s["drops"].items())
    if (n.get<uint64_t>() != 0) {
      out += fmt::format(" {}={}", name, n.get<uint64_t>());
      any = true;
    }
  out += any ? "\n" : " none\n";
  out += "  icmp errors:";
  for (const auto& [name, n] : s["icmp_errors"].items()) out += fmt::format(" {}={}", name, n.get<uint64_t>());
  out += "\n";
  for (const auto& w : s["workers"])
    out += fmt::format("  worker {} (lcore {}): {} packets, {:.0f} cycles/packet, {} punted, {} injected\n",
                       w["id"].get<unsigned>(), w["lcore"].get<unsigned>(), w["packets"].get<uint64_t>(),
                       w["cycles_per_packet"].get<double>(), w["punted"].get<uint64_t>(),
                       w["injected"].get<uint64_t>());
  out += fmt::format("  conntrack: {} flows of {}, {} created, {} expired, {} evicted, {} refused (full); {} service frontends\n",
                     s["conntrack"]["flows"].get<uint64_t>(), s["conntrack"]["capacity"].get<uint64_t>(),
                     s["conntrack"]["created"].get<uint64_t>(), s["conntrack"]["expired"].get<uint64_t>(),
                     s["conntrack"]["evicted"].get<uint64_t>(), s["conntrack"]["full"].get<uint64_t>(),
                     s["services"].get<uint64_t>());
  if (s.contains("mbuf_pool"))
    out += fmt::format("  mbuf pool: {} of {} in use\n", s["mbuf_pool"]["in_use"].get<uint64_t>(),
                       s["mbuf_pool"]["size"].get<uint64_t>());
  out += "  control:";
  for (const auto& [name, n] : s["control"].items()) out += fmt::format(" {}={}", name, n.get<uint64_t>());
  out += "\n";
  return out;
}

}  // namespace kdp
