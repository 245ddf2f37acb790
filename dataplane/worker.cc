#include "dataplane/worker.h"

#include <rte_cycles.h>
#include <rte_malloc.h>

#include <stdexcept>
#include <string>

#include "dataplane/pipeline.h"

namespace kdp {

WorkerChannels::WorkerChannels(unsigned worker_id, unsigned ring_size) {
  std::string punt_name = "kdp_punt" + std::to_string(worker_id);
  std::string inject_name = "kdp_inj" + std::to_string(worker_id);
  punt = rte_ring_create(punt_name.c_str(), ring_size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  inject = rte_ring_create(inject_name.c_str(), ring_size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (punt == nullptr || inject == nullptr) throw std::runtime_error("cannot create worker rings");
}

WorkerChannels::~WorkerChannels() {
  for (rte_ring* r : {punt, inject}) {
    void* m;
    while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    rte_ring_free(r);
  }
}

namespace {


// Packets a full TX ring would not take: counted per port, then freed.
void count_tx_drops(rte_mbuf** unsent, uint16_t count, void* userdata) {
  static_cast<PortCounters*>(userdata)->tx_dropped.add(count);
  rte_pktmbuf_free_bulk(unsent, count);
}

}  // namespace

WorkerContext::WorkerContext(unsigned worker_id, unsigned lcore_id, NodeTables& node_tables, WorkerChannels& ch,
                             unsigned workers)
    : id(worker_id),
      lcore(lcore_id),
      queue(static_cast<uint16_t>(worker_id)),
      tables(node_tables),
      channels(ch) {
  for (size_t i = 0; i < kPollGapMs.size(); ++i) poll_gap_bounds[i] = rte_get_tsc_hz() / 1000 * kPollGapMs[i];
  icmp_errors.tokens_per_s = tables.config.dataplane.icmp_errors_per_s;
  const PortRange& snat = tables.config.nat.snat_ports;
  const unsigned share = (snat.high - snat.low + 1u) / workers;
  snat_port_low = static_cast<uint16_t>(snat.low + worker_id * share);
  snat_port_high = static_cast<uint16_t>(snat_port_low + share - 1);
  snat_port_next = snat_port_low;
  ports = tables.port_set();
  for (uint16_t p = 0; p < kMaxPorts; ++p) {
    tx[p] = static_cast<rte_eth_dev_tx_buffer*>(
        rte_zmalloc_socket("kdp_txbuf", RTE_ETH_TX_BUFFER_SIZE(kBurstSize), 0, rte_lcore_to_socket_id(lcore)));
    if (tx[p] == nullptr) throw std::runtime_error("cannot allocate TX buffer");
    rte_eth_tx_buffer_init(tx[p], kBurstSize);
    rte_eth_tx_buffer_set_err_callback(tx[p], count_tx_drops, &counters.port[p]);
  }
}

WorkerContext::~WorkerContext() {
  for (uint16_t p = 0; p < kMaxPorts; ++p) rte_free(tx[p]);
}

unsigned poll_once(WorkerContext& ctx, Pipeline& pipeline) {
  const uint64_t start = rte_rdtsc();
  if (ctx.now_tsc != 0) {
    const uint64_t gap = start - ctx.now_tsc;
    ctx.counters.poll_gap_cycles.add(gap);
    ctx.counters.longest_poll_gap_cycles.raise_to(gap);
    if (gap > ctx.poll_gap_bounds[0]) {  // rare
      for (size_t i = 0; i < kPollGapMs.size() && gap > ctx.poll_gap_bounds[i]; ++i)
        ctx.counters.poll_gaps_over[i].add();
    }
  }
  ctx.now_tsc = start;
  ctx.now_s = static_cast<uint32_t>(start / rte_get_tsc_hz());
  unsigned received = 0;
  Burst burst;
  // Held until the quiescent report after this poll: the control thread
  // frees a replaced port set, and closes a removed port, only after that.
  const PortSet& set = *(ctx.ports = ctx.tables.port_set());
  const PortInfo* ports = set.ports.data();
  for (uint16_t p : set.active) {
    uint16_t n = rte_eth_rx_burst(ports[p].dpdk_id, ctx.queue, burst.pkts, kBurstSize);
    if (n == 0) continue;
    for (uint16_t i = 0; i < n; ++i) meta(burst.pkts[i]).in_port = p;
    burst.n = n;
    ctx.counters.port[p].rx.add(n);
    received += n;
    pipeline.run(burst, StageId::Classify);
  }
  // Packets the control thread made or released enter at Output.
  unsigned injected = rte_ring_sc_dequeue_burst(ctx.channels.inject, reinterpret_cast<void**>(burst.pkts), kBurstSize,
                                                nullptr);
  if (injected != 0) {
    burst.n = static_cast<uint16_t>(injected);
    for (unsigned i = 0; i < injected; ++i) burst.next[i] = StageId::Output;
    ctx.counters.injected.add(injected);
    pipeline.run(burst, StageId::Output);
  }
  for (uint16_t p : set.active) rte_eth_tx_buffer_flush(ports[p].dpdk_id, ctx.queue, ctx.tx[p]);
  ctx.counters.polls.add();
  if (received + injected != 0) {
    ctx.counters.busy_cycles.add(rte_rdtsc() - start);
    ctx.counters.busy_packets.add(received);
  }
  return received + injected;
}

int worker_main(WorkerContext& ctx, const std::atomic<bool>& stop, unsigned idle_sleep_us) {
  Pipeline pipeline(ctx);
  Rcu& rcu = ctx.tables.rcu;
  rcu.register_worker(ctx.id);
  rcu.online(ctx.id);
  constexpr unsigned kIdlePollsBeforeSleep = 64;
  unsigned idle_polls = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    unsigned got = poll_once(ctx, pipeline);
    // The worker holds no table pointer between polls.
    rcu.quiescent(ctx.id);
    if (got != 0 || idle_sleep_us == 0) {
      idle_polls = 0;
      continue;
    }
    if (++idle_polls < kIdlePollsBeforeSleep) continue;
    // Offline while asleep, so the control thread never waits on a sleeper.
    rcu.offline(ctx.id);
    rte_delay_us_sleep(idle_sleep_us);
    ctx.counters.idle_sleeps.add();
    rcu.online(ctx.id);
  }
  rcu.offline(ctx.id);
  return 0;
}

}  // namespace kdp
