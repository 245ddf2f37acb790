// kdp: the node dataplane daemon.
//   kdp --config FILE [--exit-when-idle MS] [--stats-json PATH]
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_pdump.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <malloc.h>

#include "ctrl/config.h"
#include "dataplane/control.h"
#include "dataplane/control_server.h"
#include "dataplane/metrics_server.h"
#include "dataplane/stats.h"
#include "dataplane/worker.h"
#include "drivers/eal.h"
#include "drivers/interrupt_unmap_guard.h"
#include "drivers/ports.h"

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

struct WorkerLaunch {
  kdp::WorkerContext* ctx;
  unsigned idle_sleep_us;
};

int launch_worker(void* arg) {
  auto* launch = static_cast<WorkerLaunch*>(arg);
  return kdp::worker_main(*launch->ctx, g_stop, launch->idle_sleep_us);
}

// Every port index's counter, so a removed port's packets still count.
uint64_t total_packets(const std::vector<std::unique_ptr<kdp::WorkerContext>>& workers) {
  uint64_t n = 0;
  for (const auto& w : workers) {
    for (size_t p = 0; p < kdp::kMaxPorts; ++p) n += w->counters.port[p].rx.get();
    n += w->counters.injected.get();
  }
  return n;
}

int run(const std::string& config_path, int exit_when_idle_ms, const std::string& stats_json_path) {
  using namespace kdp;
  Config config = load_config_file(config_path);
  EalSession eal(build_eal_args(config, "kdp", getpid()));
  set_lcores_realtime(config.workers.lcores, config.workers.realtime_priority, "workers.realtime_priority");
  // Lets dpdk-dumpcap / dpdk-pdump capture kdp's ports (--file-prefix of this instance).
  if (rte_pdump_init() != 0) fmt::print(stderr, "kdp: packet capture unavailable (rte_pdump_init failed)\n");

  const unsigned n_workers = config.workers.lcores.size();
  rte_mempool* pool = create_mbuf_pool(config, n_workers);
  std::vector<PortInfo> ports = setup_ports(config, pool, n_workers);
  auto tables = std::make_unique<NodeTables>(config, ports, n_workers);
  // A memif peer that hangs up has its rings unmapped only once no worker can be reading them.
  auto unmap_guard = std::make_unique<InterruptUnmapGuard>(tables->rcu.qsbr());

  std::vector<std::unique_ptr<WorkerChannels>> channels;
  std::vector<WorkerChannels*> channel_ptrs;
  std::vector<std::unique_ptr<WorkerContext>> workers;
  for (unsigned w = 0; w < n_workers; ++w) {
    channels.push_back(std::make_unique<WorkerChannels>(w, 1024));
    channel_ptrs.push_back(channels.back().get());
    workers.push_back(
        std::make_unique<WorkerContext>(w, config.workers.lcores[w], *tables, *channels.back(), n_workers));
    workers.back()->pool = pool;
  }
  auto control = std::make_unique<Control>(*tables, channel_ptrs, pool);
  control->install_static_neighbors();
  auto server = std::make_unique<ControlServer>(*tables, workers, *control, config);
  server->start();
  std::unique_ptr<MetricsServer> metrics;
  if (config.control.metrics_ip) {
    metrics = std::make_unique<MetricsServer>(ipv4_to_string(*config.control.metrics_ip), config.control.metrics_port);
    fmt::print(stderr, "kdp: metrics at http://{}:{}/metrics\n", ipv4_to_string(*config.control.metrics_ip),
               config.control.metrics_port);
  }

  fmt::print(stderr, "kdp: node {} pod_cidr {} gateway {} ({}) node_ip {}\n", config.node.name,
             config.node.pod_cidr.to_string(), ipv4_to_string(config.node.gateway_ip),
             config.node.gateway_mac.to_string(), ipv4_to_string(config.node.node_ip));
  for (const auto& p : tables->port_set()->ports) fmt::print(stderr, "kdp: port {}\n", describe_port(p));
  fmt::print(stderr, "kdp: control socket {}\n", config.control.socket);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::vector<WorkerLaunch> launches;
  launches.reserve(n_workers);
  // However this function is left from here on (a launch that fails, an
  // exception), the workers stop before the tables and ports they use go.
  struct StopWorkers {
    ~StopWorkers() {
      g_stop.store(true);
      rte_eal_mp_wait_lcore();
    }
  } stop_workers;
  for (unsigned w = 0; w < n_workers; ++w) {
    launches.push_back({workers[w].get(), config.workers.idle_sleep_us});
    if (rte_eal_remote_launch(launch_worker, &launches.back(), config.workers.lcores[w]) != 0)
      throw std::runtime_error(fmt::format("cannot launch worker on lcore {}", config.workers.lcores[w]));
  }
  fmt::print(stderr, "kdp: {} worker(s) running\n", n_workers);

  const uint64_t hz_ms = rte_get_tsc_hz() / 1000;
  uint64_t last_packets = 0, last_activity_ms = rte_rdtsc() / hz_ms, next_metrics_ms = 0;
  while (!g_stop.load()) {
    const unsigned handled = control->poll() + server->poll();
    if (handled == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (metrics && rte_rdtsc() / hz_ms >= next_metrics_ms) {
      // Scrapes see counters at most a second old.
      metrics->publish(control::stats_to_prometheus(server->stats()));
      next_metrics_ms = rte_rdtsc() / hz_ms + 1000;
    }
    if (exit_when_idle_ms > 0) {
      const uint64_t now_ms = rte_rdtsc() / hz_ms;
      const uint64_t packets = total_packets(workers);
      if (packets != last_packets) {
        last_packets = packets;
        last_activity_ms = now_ms;
      } else if (now_ms - last_activity_ms >= static_cast<uint64_t>(exit_when_idle_ms)) {
        g_stop.store(true);
      }
    }
  }
  rte_eal_mp_wait_lcore();
  metrics.reset();
  nlohmann::json update_stats = server->update_stats();
  server.reset();  // closes and removes the control socket
  control->poll();

  nlohmann::json stats = collect_stats(*tables, workers, *control);
  stats["updates"] = std::move(update_stats);
  rte_pdump_uninit();
  stop_ports(tables->port_set()->ports);
  fmt::print("{}", format_summary(stats));
  if (!stats_json_path.empty()) {
    std::ofstream out(stats_json_path);
    out << stats.dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + stats_json_path);
  }
  control.reset();  // frees the packets it still holds while their mempool exists
  workers.clear();
  channels.clear();
  unmap_guard.reset();
  tables.reset();
  return 0;
}

// A large apply allocates about 100 MB of small objects at once (toml++'s
// tree of a 10,000-Service file), and each new 4 KB page of heap costs a
// fault (about 10 µs in a VM). glibc's malloc.hugetlb tunable puts the heap
// on transparent huge pages, one fault per 2 MB: the first such apply of a
// fresh kdp takes 0.8 s instead of 1.4 s on the bench guest, at the same
// RSS. glibc reads tunables only when a process starts, so kdp starts itself
// once more with it set, unless the environment already chooses a value.
void restart_with_heap_on_huge_pages(char** argv) {
  constexpr std::string_view kTunable = "glibc.malloc.hugetlb";
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  const std::string current = tunables ? tunables : "";
  if (current.find(kTunable) != std::string::npos) return;
  const std::string wanted = (current.empty() ? "" : current + ":") + std::string(kTunable) + "=1";
  if (setenv("GLIBC_TUNABLES", wanted.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: exec failed (no /proc); run on 4 KB pages.
  fmt::print(stderr, "kdp: cannot restart with {}=1 ({}); the heap stays on 4 KB pages\n", kTunable,
             std::strerror(errno));
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_heap_on_huge_pages(argv);
  CLI::App app{"kdp: userspace Kubernetes node dataplane on DPDK"};
  std::string config_path, stats_json_path;
  int exit_when_idle_ms = 0;
  app.add_option("--config", config_path, "node configuration (TOML)")->required();
  app.add_option("--exit-when-idle", exit_when_idle_ms, "stop once no packet has arrived for this many ms")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--stats-json", stats_json_path, "write the final counters to this file as JSON");
  CLI11_PARSE(app, argc, argv);
  // The control thread keeps the heap it has grown: returning memory to the
  // kernel after each large apply (trimming the heap, unmapping large
  // blocks) means a TLB shootdown IPI to every polling worker and page
  // faults for the next apply. Large blocks come from the heap too, up to
  // glibc's limit of 32 MB; at most 256 MB of free heap is kept.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  try {
    return run(config_path, exit_when_idle_ms, stats_json_path);
  } catch (const kdp::ConfigError& e) {
    fmt::print(stderr, "kdp: invalid configuration: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "kdp: {}\n", e.what());
    return 1;
  }
}
