// Terminal stages: Output (TX buffers, flooding), Punt, Drop.
#include "dataplane/stages.h"

namespace kdp {

void Output::send(uint16_t port, rte_mbuf* m) {
  const PortSet& set = *ctx_.ports;
  // A port pod.del removed while an FDB entry or a queued packet still named
  // it: this poll's set no longer has it (and will not flush its buffer).
  if (unlikely(!set.has(port))) {
    ctx_.counters.drops[static_cast<unsigned>(DropReason::PortRemoved)].add();
    rte_pktmbuf_free(m);
    return;
  }
  ctx_.counters.port[port].tx.add();
  // Full TX rings are counted by the buffer's error callback (worker.cc).
  rte_eth_tx_buffer(set.ports[port].dpdk_id, ctx_.queue, ctx_.tx[port], m);
}

void Output::process(Burst& burst) {
  const auto& pod_ports = ctx_.ports->pod_ports;
  for (unsigned i = 0; i < burst.n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    const PacketMeta& md = meta(m);
    if (md.out_port != kFloodPort) {
      send(md.out_port, m);
      continue;
    }
    // Flooding shares one mbuf between ports: a reference per extra copy.
    unsigned targets = pod_ports.size() - (md.flood_exclude != kNoPort);
    if (targets == 0) {
      ctx_.counters.drops[static_cast<unsigned>(DropReason::FloodNoPorts)].add();
      rte_pktmbuf_free(m);
      continue;
    }
    if (targets > 1) rte_mbuf_refcnt_update(m, static_cast<int16_t>(targets - 1));
    for (uint16_t port : pod_ports)
      if (port != md.flood_exclude) send(port, m);
  }
}

void Punt::process(Burst& burst) {
  unsigned sent = rte_ring_sp_enqueue_burst(ctx_.channels.punt, reinterpret_cast<void* const*>(burst.pkts), burst.n, nullptr);
  ctx_.counters.punted.add(sent);
  for (unsigned i = sent; i < burst.n; ++i) {
    ctx_.counters.drops[static_cast<unsigned>(DropReason::PuntRingFull)].add();
    rte_pktmbuf_free(burst.pkts[i]);
  }
}

void Drop::process(Burst& burst) {
  for (unsigned i = 0; i < burst.n; ++i) {
    ctx_.counters.drops[meta(burst.pkts[i]).drop_reason].add();
    rte_pktmbuf_free(burst.pkts[i]);
  }
}

}  // namespace kdp
