#include "tools/gen/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace kdp::gen {

namespace {

using nlohmann::json;

struct Window {
  uint64_t first = std::numeric_limits<uint64_t>::max(), last = 0;
  void add(uint64_t from, uint64_t to) {
    if (from == 0) return;  // never sent or received
    first = std::min(first, from);
    last = std::max(last, to);
  }
  void merge(const Window& other) {
    first = std::min(first, other.first);
    last = std::max(last, other.last);
  }
  double seconds(uint64_t hz) const { return last > first ? static_cast<double>(last - first) / hz : 0; }
};

double per_second(double amount, double seconds) { return seconds > 0 ? amount / seconds : 0; }

json latency_json(const LatencyHistogram& h, uint64_t hz) {
  if (h.count() == 0) return nullptr;
  auto us = [&](double cycles) { return cycles * 1e6 / static_cast<double>(hz); };
  return {{"samples", h.count()},
          {"p50", us(static_cast<double>(h.percentile(0.50)))},
          {"p90", us(static_cast<double>(h.percentile(0.90)))},
          {"p99", us(static_cast<double>(h.percentile(0.99)))},
          {"max", us(static_cast<double>(h.max()))},
          {"mean", us(h.mean())}};
}

// Packets of these streams received on any RX queue.
uint64_t received_of(const std::vector<const TxStream*>& streams, const std::vector<const RxQueue*>& rx) {
  uint64_t n = 0;
  for (const RxQueue* q : rx)
    for (const TxStream* s : streams)
      if (s->stream_id < q->streams.size()) n += q->streams[s->stream_id].received;
  return n;
}

}  // namespace

json summarize(const RunSummaryInput& in) {
  json ports = json::array();
  Window all_tx, all_rx;
  uint64_t total_tx = 0, total_rx = 0, total_tx_bytes = 0, total_rx_bytes = 0, total_cycles = 0, total_stamped = 0;
  uint64_t total_foreign = 0, total_reordered = 0;
  LatencyHistogram all_latency;
  std::vector<const TxStream*> all_streams;
  const bool can_measure_loss = !in.all_rx.empty();

  for (size_t i = 0; i < in.ports.size(); ++i) {
    const PortRun& p = in.ports[i];
    Window tx_window, rx_window;
    uint64_t tx = 0, cycles = 0, alloc_failures = 0, fresh_wrapped = 0;
    for (const TxStream* s : p.streams) {
      tx += s->sent.get();
      cycles += s->tx_cycles.get();
      alloc_failures += s->alloc_failures.get();
      fresh_wrapped += s->fresh_wrapped.get();
      tx_window.add(s->first_tx_tsc, s->last_tx_tsc);
      all_streams.push_back(s);
    }
    uint64_t rx = 0, rx_bytes = 0, stamped = 0, foreign = 0, reordered = 0;
    LatencyHistogram latency;
    for (const RxQueue* q : p.queues) {
      rx += q->packets.get();
      rx_bytes += q->bytes.get();
      stamped += q->stamped.get();
      foreign += q->foreign.get();
      reordered += q->reordered.get();
      latency.merge(q->latency);
      rx_window.add(q->first_rx_tsc, q->last_rx_tsc);
    }
    const uint64_t tx_bytes = tx * in.frame_size;
    const double tx_s = tx_window.seconds(in.tsc_hz), rx_s = rx_window.seconds(in.tsc_hz);
    json port = {
        {"index", i},
        {"device", p.device},
        {"tx", p.tx},
        {"rx", p.rx},
        {"tx_packets", tx},
        {"tx_bytes", tx_bytes},
        {"tx_mpps", per_second(static_cast<double>(tx), tx_s) / 1e6},
        {"tx_gbps", per_second(static_cast<double>(tx_bytes) * 8, tx_s) / 1e9},
        {"tx_cycles_per_packet", tx ? static_cast<double>(cycles) / static_cast<double>(tx) : 0.0},
        {"tx_alloc_failures", alloc_failures},
        {"fresh_tuples_wrapped", fresh_wrapped},
        {"rx_packets", rx},
        {"rx_bytes", rx_bytes},
        {"rx_mpps", per_second(static_cast<double>(rx), rx_s) / 1e6},
        {"rx_gbps", per_second(static_cast<double>(rx_bytes) * 8, rx_s) / 1e9},
        {"rx_stamped", stamped},
        {"rx_foreign", foreign},
        {"rx_reordered", reordered},
        {"latency_us", latency_json(latency, in.tsc_hz)},
    };
    if (p.tx && can_measure_loss) {
      const uint64_t back = received_of(p.streams, in.all_rx);
      port["received_of_sent"] = back;
      port["loss"] = static_cast<int64_t>(tx) - static_cast<int64_t>(back);
    } else {
      port["received_of_sent"] = nullptr;
      port["loss"] = nullptr;
    }
    ports.push_back(port);
    all_tx.merge(tx_window);
    all_rx.merge(rx_window);
    total_tx += tx;
    total_tx_bytes += tx_bytes;
    total_cycles += cycles;
    total_rx += rx;
    total_rx_bytes += rx_bytes;
    total_stamped += stamped;
    total_foreign += foreign;
    total_reordered += reordered;
    all_latency.merge(latency);
  }

  const double tx_s = all_tx.seconds(in.tsc_hz), rx_s = all_rx.seconds(in.tsc_hz);
  json total = {
      {"tx_packets", total_tx},
      {"tx_bytes", total_tx_bytes},
      {"tx_mpps", per_second(static_cast<double>(total_tx), tx_s) / 1e6},
      {"tx_gbps", per_second(static_cast<double>(total_tx_bytes) * 8, tx_s) / 1e9},
      {"tx_cycles_per_packet", total_tx ? static_cast<double>(total_cycles) / static_cast<double>(total_tx) : 0.0},
      {"rx_packets", total_rx},
      {"rx_bytes", total_rx_bytes},
      {"rx_mpps", per_second(static_cast<double>(total_rx), rx_s) / 1e6},
      {"rx_gbps", per_second(static_cast<double>(total_rx_bytes) * 8, rx_s) / 1e9},
      {"rx_stamped", total_stamped},
      {"rx_foreign", total_foreign},
      {"rx_reordered", total_reordered},
      {"latency_us", latency_json(all_latency, in.tsc_hz)},
  };
  if (can_measure_loss) {
    const uint64_t back = received_of(all_streams, in.all_rx);
    total["received_of_sent"] = back;
    total["loss"] = static_cast<int64_t>(total_tx) - static_cast<int64_t>(back);
  } else {
    total["received_of_sent"] = nullptr;
    total["loss"] = nullptr;
  }
  json workers = json::array();
  for (const Worker* w : in.workers) {
    const bool seen = w->longest_pass_gap_end_tsc > in.start_tsc;
    workers.push_back({{"longest_pass_gap_us", static_cast<double>(w->longest_pass_gap_tsc) * 1e6 / in.tsc_hz},
                       {"longest_pass_gap_end_s",
                        seen ? static_cast<double>(w->longest_pass_gap_end_tsc - in.start_tsc) / in.tsc_hz : 0.0}});
  }
  return {{"proto", in.proto},        {"frame_size", in.frame_size}, {"flows", in.flows},
          {"new_flow_ratio", in.new_flow_ratio}, {"duration_s", tx_s},   {"elapsed_s", in.elapsed_s},
          {"tsc_hz", in.tsc_hz},      {"start_monotonic_s", in.start_monotonic_s},
          {"ports", ports},           {"total", total},              {"workers", workers},
          {"warmup", {{"tx_packets", in.warmup_sent}, {"returned", in.warmup_returned}}}};
}

std::string format_summary(const json& s) {
  std::string out = fmt::format("kdp-gen: {} {} B frames, {} flow(s), new-flow ratio {}, sent for {:.3f} s\n",
                                s["proto"].get<std::string>(), s["frame_size"].get<unsigned>(),
                                s["flows"].get<uint64_t>(), s["new_flow_ratio"].get<double>(),
                                s["duration_s"].get<double>());
  auto loss_text = [](const json& j) {
    if (j["loss"].is_null()) return std::string("n/a (no RX port)");
    const auto tx = j["tx_packets"].get<uint64_t>();
    const auto loss = j["loss"].get<int64_t>();
    return fmt::format("{} ({:.4f}%)", loss, tx ? 100.0 * static_cast<double>(loss) / static_cast<double>(tx) : 0.0);
  };
  auto latency_text = [](const json& l) {
    if (l.is_null()) return std::string("no samples");
    return fmt::format("p50 {:.2f} p90 {:.2f} p99 {:.2f} max {:.2f} µs ({} samples)", l["p50"].get<double>(),
                       l["p90"].get<double>(), l["p99"].get<double>(), l["max"].get<double>(),
                       l["samples"].get<uint64_t>());
  };
  auto block = [&](const std::string& title, const json& j, bool tx, bool rx) {
    out += fmt::format("  {}\n", title);
    if (tx) {
      out += fmt::format("    tx  {:>14} pkts  {:9.3f} Mpps  {:8.3f} Gbps  {:7.1f} cycles/pkt\n",
                         j["tx_packets"].get<uint64_t>(), j["tx_mpps"].get<double>(), j["tx_gbps"].get<double>(),
                         j["tx_cycles_per_packet"].get<double>());
      out += fmt::format("    loss {}\n", loss_text(j));
    }
    if (rx) {
      out += fmt::format("    rx  {:>14} pkts  {:9.3f} Mpps  {:8.3f} Gbps  foreign {}  reordered {}\n",
                         j["rx_packets"].get<uint64_t>(), j["rx_mpps"].get<double>(), j["rx_gbps"].get<double>(),
                         j["rx_foreign"].get<uint64_t>(), j["rx_reordered"].get<uint64_t>());
      out += fmt::format("    latency {}\n", latency_text(j["latency_us"]));
    }
  };
  for (const json& p : s["ports"]) {
    const char* role = p["tx"].get<bool>() ? (p["rx"].get<bool>() ? "tx+rx" : "tx") : "rx";
    block(fmt::format("port {} {} ({})", p["index"].get<unsigned>(), p["device"].get<std::string>(), role), p,
          p["tx"].get<bool>(), p["rx"].get<bool>());
  }
  if (s["ports"].size() > 1) block("total", s["total"], true, true);
  for (size_t w = 0; w < s["workers"].size(); ++w) {
    const json& j = s["workers"][w];
    out += fmt::format("  worker {}: longest gap between passes {:.1f} µs, ending {:.3f} s after the start\n", w,
                       j["longest_pass_gap_us"].get<double>(), j["longest_pass_gap_end_s"].get<double>());
  }
  return out;
}

}  // namespace kdp::gen
