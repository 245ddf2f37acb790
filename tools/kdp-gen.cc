// kdp-gen: a testpmd-style traffic generator (txonly/flowgen/rxonly in one).
//   kdp-gen --port DEVICE [--port DEVICE...] [options] [-- EAL ARGS]
// Sends stamped frames on the TX ports, counts what comes back on the RX
// ports, and prints per-port rates, loss, reordering and latency
// (--json: one JSON object on stdout). See tools/gen/ for the parts.

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_log.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/rcu.h"
#include "drivers/eal.h"
#include "drivers/interrupt_unmap_guard.h"
#include "drivers/ports.h"
#include "tools/gen/engine.h"
#include "tools/gen/report.h"

namespace {

using namespace kdp;
using namespace kdp::gen;

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted.store(true); }

struct Destination {
  Ipv4 ip;
  uint16_t port;
};

struct Options {
  std::vector<std::string> eal_args;
  std::vector<std::string> devices;
  std::vector<unsigned> tx_ports, rx_ports;  // empty: all
  unsigned size = 64;
  Proto proto = Proto::Udp;
  FlowSpace space;
  std::vector<Destination> destinations;
  uint64_t flows = 1;
  double new_flow_ratio = 0;
  std::optional<MacAddr> src_mac;
  std::optional<MacAddr> dst_mac;
  double rate_pps = 0;  // per TX port; 0: max
  double duration_s = 0;
  uint64_t count = 0;   // per TX port
  uint64_t warmup_count = 0;  // per TX port, before the measured run
  unsigned burst = 32;
  std::vector<unsigned> worker_cpus;
  unsigned main_cpu = 0;
  unsigned drain_ms = 500;
  unsigned idle_sleep_us = 0;
  unsigned realtime_priority = 0;
  double link_wait_s = 10;
  bool json = false;
};

[[noreturn]] void usage_error(const std::string& what) { throw CLI::ValidationError(what); }

std::vector<unsigned> parse_cpu_list(const std::string& text) {
  std::vector<unsigned> cpus;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto dash = item.find('-');
    try {
      const unsigned first = std::stoul(item.substr(0, dash));
      const unsigned last = dash == std::string::npos ? first : std::stoul(item.substr(dash + 1));
      if (last < first) usage_error("--lcores: bad range " + item);
      for (unsigned c = first; c <= last; ++c) cpus.push_back(c);
    } catch (const std::logic_error&) {
      usage_error("--lcores: not a CPU list: " + text);
    }
  }
  if (cpus.empty()) usage_error("--lcores: no CPU given");
  return cpus;
}

Ipv4 ip_or_fail(const std::string& option, std::string_view text) {
  auto ip = parse_ipv4(text);
  if (!ip) usage_error(fmt::format("{}: not an IPv4 address: {}", option, text));
  return *ip;
}

uint16_t port_or_fail(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const unsigned long port = std::stoul(text, &used);
    if (used == text.size() && port <= 65535) return static_cast<uint16_t>(port);
  } catch (const std::logic_error&) {
  }
  usage_error(fmt::format("{}: not a port number: {}", option, text));
}

MacAddr mac_or_fail(const std::string& option, const std::string& text) {
  auto mac = parse_mac(text);
  if (!mac) usage_error(fmt::format("{}: not a MAC address: {}", option, text));
  return *mac;
}

// Everything after "--" goes to the EAL unchanged.
Options parse_options(int argc, char** argv) {
  int own_argc = argc;
  Options o;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      own_argc = i;
      o.eal_args.assign(argv + i + 1, argv + argc);
      break;
    }
  }

  CLI::App app{"kdp-gen: traffic generator on DPDK (stamped frames out, loss and latency back)\n"
               "  kdp-gen --port DEVICE [--port DEVICE...] [options] [-- EAL ARGS]"};
  std::string proto = "udp", src_ip = "10.0.0.1", src_port = "1024-65535", rate = "max", src_mac, dst_mac;
  std::vector<std::string> dsts{"10.0.0.2:80"};
  std::string lcores = std::thread::hardware_concurrency() > 1 ? "1" : "0";
  app.add_option("--port", o.devices, "DPDK device (any vdev string, or a PCI address); repeatable, in port order")
      ->required();
  app.add_option("--tx-port", o.tx_ports, "send on this port index (repeatable; default: every port)");
  app.add_option("--rx-port", o.rx_ports, "receive on this port index (repeatable; default: every port)");
  app.add_option("--size", o.size, "frame size in bytes without FCS")->check(CLI::Range(kMinFrame, kMaxFrame));
  app.add_option("--proto", proto, "tcp-syn | tcp-ack | udp | icmp")->capture_default_str();
  app.add_option("--src-ip", src_ip, "source address or range A.B.C.D[-E.F.G.H]")->capture_default_str();
  app.add_option("--src-port", src_port, "source port or range LO-HI (ICMP: the echo identifier)")
      ->capture_default_str();
  app.add_option("--dst", dsts, "destination IP[:PORT] (repeatable: VIPs, NodePorts, pod IPs)")
      ->capture_default_str();
  app.add_option("--flows", o.flows, "distinct tuples cycled (destinations vary fastest, then source IPs, ports)")
      ->check(CLI::PositiveNumber);
  app.add_option("--new-flow-ratio", o.new_flow_ratio, "share of packets sent on a tuple never used before")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--src-mac", src_mac, "source MAC (default: the port's own)");
  app.add_option("--dst-mac", dst_mac, "destination MAC (default: 02:00:00:00:00:<tx port index>)");
  app.add_option("--rate", rate, "packets per second per TX port, or max")->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds to send (default: until --count or Ctrl-C)")
      ->check(CLI::PositiveNumber);
  app.add_option("--count", o.count, "packets to send per TX port")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup_count,
                 "first send this many packets per TX port at --rate and wait for them to come back, on the "
                 "same connections, then measure from zero (a memif ring's first lap touches fresh shared "
                 "memory on both sides)")
      ->capture_default_str();
  app.add_option("--burst", o.burst, "packets per TX/RX burst")->check(CLI::Range(1u, kMaxBurst));
  app.add_option("--lcores", lcores, "CPUs for worker lcores, e.g. 1 or 2-5: one TX and RX queue per worker "
                                     "on every port")
      ->capture_default_str();
  app.add_option("--main-cpu", o.main_cpu, "CPU of the main lcore (it mostly sleeps)")->capture_default_str();
  app.add_option("--idle-sleep-us", o.idle_sleep_us,
                 "sleep this long when a pass neither sent nor received (paced runs: give the CPU back; "
                 "latencies then include up to this wait)")
      ->capture_default_str();
  app.add_option("--realtime-priority", o.realtime_priority,
                 "run the worker lcores SCHED_FIFO at this priority (1-99), so that other tasks on their CPUs "
                 "do not hold them off; 0: the default policy")
      ->check(CLI::Range(0u, 99u))
      ->capture_default_str();
  app.add_option("--drain-ms", o.drain_ms, "after sending, keep receiving this long (or until all came back)")
      ->capture_default_str();
  app.add_option("--link-wait", o.link_wait_s, "seconds to wait for every port's link before sending")
      ->capture_default_str();
  app.add_flag("--json", o.json, "print the summary as one JSON object on stdout");
  try {
    app.parse(own_argc, argv);
    auto parsed_proto = parse_proto(proto);
    if (!parsed_proto) usage_error("--proto: must be tcp-syn, tcp-ack, udp or icmp, got " + proto);
    o.proto = *parsed_proto;

    const auto ip_dash = src_ip.find('-');
    o.space.src_ip_first = ip_or_fail("--src-ip", src_ip.substr(0, ip_dash));
    o.space.src_ip_last = ip_dash == std::string::npos ? o.space.src_ip_first
                                                        : ip_or_fail("--src-ip", src_ip.substr(ip_dash + 1));
    const auto port_dash = src_port.find('-');
    o.space.src_port_first = port_or_fail("--src-port", src_port.substr(0, port_dash));
    o.space.src_port_last = port_dash == std::string::npos ? o.space.src_port_first
                                                            : port_or_fail("--src-port", src_port.substr(port_dash + 1));
    if (o.space.src_ip_last < o.space.src_ip_first) usage_error("--src-ip: range ends before it starts");
    if (o.space.src_port_last < o.space.src_port_first) usage_error("--src-port: range ends before it starts");

    for (const auto& d : dsts) {
      const auto colon = d.find(':');
      o.destinations.push_back({ip_or_fail("--dst", d.substr(0, colon)),
                                colon == std::string::npos ? uint16_t{80} : port_or_fail("--dst", d.substr(colon + 1))});
    }
    o.space.destinations = static_cast<uint32_t>(o.destinations.size());
    if (!src_mac.empty()) o.src_mac = mac_or_fail("--src-mac", src_mac);
    if (!dst_mac.empty()) o.dst_mac = mac_or_fail("--dst-mac", dst_mac);
    if (rate != "max") {
      try {
        o.rate_pps = std::stod(rate);
      } catch (const std::logic_error&) {
        usage_error("--rate: a number of packets per second, or max: " + rate);
      }
      if (!(o.rate_pps > 0)) usage_error("--rate: must be positive");
    }
    o.worker_cpus = parse_cpu_list(lcores);
    for (unsigned idx : o.tx_ports)
      if (idx >= o.devices.size()) usage_error(fmt::format("--tx-port {}: there are {} ports", idx, o.devices.size()));
    for (unsigned idx : o.rx_ports)
      if (idx >= o.devices.size()) usage_error(fmt::format("--rx-port {}: there are {} ports", idx, o.devices.size()));
    if (o.flows > o.space.size())
      usage_error(fmt::format("--flows {}: the destinations and source ranges give only {} distinct tuples",
                              o.flows, o.space.size()));
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e) == 0 ? 0 : 2);
  }
  return o;
}

uint16_t find_port(const std::string& device) {
  const std::string name = device_name(device);
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &id) == 0) return id;
  if (rte_eth_dev_get_port_by_name(("0000:" + name).c_str(), &id) == 0) return id;  // PCI names carry a domain
  throw std::runtime_error(fmt::format("no DPDK port for device \"{}\"", name));
}

void setup_port(uint16_t id, const std::string& device, unsigned queues, rte_mempool* pool) {
  auto fail = [&](const std::string& what, int rc) {
    return std::runtime_error(fmt::format("port {}: {}: {}", device_name(device), what, rte_strerror(rc < 0 ? -rc : rc)));
  };
  rte_eth_dev_info dev;
  if (int rc = rte_eth_dev_info_get(id, &dev); rc != 0) throw fail("cannot read device info", rc);
  if (dev.max_rx_queues < queues || dev.max_tx_queues < queues)
    throw std::runtime_error(fmt::format("port {}: {} RX / {} TX queues, but {} workers need one each",
                                         device_name(device), dev.max_rx_queues, dev.max_tx_queues, queues));
  rte_eth_conf conf{};
  if (queues > 1 && dev.flow_type_rss_offloads != 0) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = dev.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
  }
  if (int rc = rte_eth_dev_configure(id, queues, queues, &conf); rc != 0) throw fail("cannot configure", rc);
  uint16_t rx_desc = 1024, tx_desc = 1024;
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(id, &rx_desc, &tx_desc); rc != 0)
    throw fail("cannot adjust descriptor counts", rc);
  for (uint16_t q = 0; q < queues; ++q) {
    if (int rc = rte_eth_rx_queue_setup(id, q, rx_desc, rte_eth_dev_socket_id(id), nullptr, pool); rc != 0)
      throw fail(fmt::format("cannot set up RX queue {}", q), rc);
    if (int rc = rte_eth_tx_queue_setup(id, q, tx_desc, rte_eth_dev_socket_id(id), nullptr); rc != 0)
      throw fail(fmt::format("cannot set up TX queue {}", q), rc);
  }
  rte_eth_promiscuous_enable(id);  // replies come back addressed to whatever the peer chose
  if (int rc = rte_eth_dev_start(id); rc != 0) throw fail("cannot start", rc);
}

bool listed(const std::vector<unsigned>& list, unsigned idx) {
  return list.empty() || std::find(list.begin(), list.end(), idx) != list.end();
}

int run(const Options& o) {
  // EAL and PMD messages go to stderr: stdout is the summary's (--json).
  rte_openlog_stream(stderr);
  const unsigned workers = o.worker_cpus.size();
  // The EAL arguments as kdp builds them: the main lcore, one worker lcore
  // per --lcores CPU (numbered after the main one), a unique file prefix and
  // one --vdev (or -a) per port.
  Config eal_config;
  eal_config.node.name = "gen";
  eal_config.eal.args = o.eal_args;
  eal_config.workers.main_lcore = o.main_cpu;
  for (unsigned w = 0; w < workers; ++w) eal_config.workers.lcores.push_back(o.main_cpu + 1 + w);
  eal_config.workers.cpus = o.worker_cpus;
  for (const auto& device : o.devices) {
    PortConfig port;
    port.device = device;
    eal_config.ports.push_back(port);
  }
  const std::vector<std::string> eal_args = build_eal_args(eal_config, "kdp-gen", getpid());
  EalSession eal(eal_args);
  set_lcores_realtime(eal_config.workers.lcores, o.realtime_priority, "--realtime-priority");

  const unsigned n_ports = o.devices.size();
  const unsigned cache = 256;
  const unsigned n_mbufs = n_ports * workers * (1024 + 1024 + 2 * kMaxBurst) + (workers + 1) * cache + 4096;
  rte_mempool* pool =
      rte_pktmbuf_pool_create("kdp_gen_mbufs", n_mbufs, cache, 0, RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
  if (pool == nullptr)
    throw std::runtime_error(fmt::format("cannot create a pool of {} mbufs: {} (raise the EAL's -m)", n_mbufs,
                                         rte_strerror(rte_errno)));

  std::vector<uint16_t> port_ids;
  for (const auto& device : o.devices) {
    port_ids.push_back(find_port(device));
    setup_port(port_ids.back(), device, workers, pool);
  }

  // Streams: one per (TX port, worker); ids number them for the receivers.
  std::vector<unsigned> tx_indices;
  for (unsigned i = 0; i < n_ports; ++i)
    if (listed(o.tx_ports, i)) tx_indices.push_back(i);
  const unsigned n_streams = tx_indices.size() * workers;
  if (n_streams > 65536) throw std::runtime_error("more than 65536 TX streams");
  if (o.new_flow_ratio > 0 && (o.space.size() - o.flows) / std::max(n_streams, 1u) == 0)
    throw std::runtime_error("--new-flow-ratio: no tuples left beyond --flows; widen --src-ip or --src-port");

  const uint64_t hz = rte_get_tsc_hz();
  std::vector<std::unique_ptr<TxStream>> streams;
  std::vector<std::unique_ptr<RxQueue>> rx_queues;
  std::vector<Worker> worker_state(workers);
  std::atomic<bool> stop_tx{false}, stop{false};
  std::vector<PortRun> port_runs(n_ports);
  for (unsigned i = 0; i < n_ports; ++i) {
    port_runs[i].device = o.devices[i];
    port_runs[i].rx = listed(o.rx_ports, i);
  }
  for (unsigned t = 0; t < tx_indices.size(); ++t) {
    const unsigned idx = tx_indices[t];
    port_runs[idx].tx = true;
    MacAddr port_mac;
    rte_ether_addr addr;
    if (rte_eth_macaddr_get(port_ids[idx], &addr) == 0) std::copy_n(addr.addr_bytes, 6, port_mac.bytes.begin());
    MacAddr default_dst;
    default_dst.bytes = {0x02, 0, 0, 0, 0, static_cast<uint8_t>(idx)};
    // A pcap file has no use for time: zero stamps keep its frames identical run to run.
    const bool writes_pcap_file =
        device_name(o.devices[idx]).rfind("net_pcap", 0) == 0 && o.devices[idx].find("tx_pcap=") != std::string::npos;
    for (unsigned w = 0; w < workers; ++w) {
      auto s = std::make_unique<TxStream>();
      s->port_id = port_ids[idx];
      s->queue = static_cast<uint16_t>(w);
      s->stream_id = static_cast<uint16_t>(t * workers + w);
      s->pool = pool;
      s->burst = o.burst;
      s->stamp_time = !writes_pcap_file;
      FrameSpec spec;
      spec.proto = o.proto;
      spec.size = o.size;
      spec.src_mac = o.src_mac.value_or(port_mac);
      spec.dst_mac = o.dst_mac.value_or(default_dst);
      spec.stream = s->stream_id;
      s->templates.reserve(o.destinations.size());
      for (const auto& d : o.destinations) {
        spec.dst_ip = d.ip;
        spec.dst_port = d.port;
        s->templates.emplace_back(spec);
      }
      init_flows(*s, o.space, o.flows, o.new_flow_ratio, n_streams);
      if (o.count) s->limit = o.count / workers + (w < o.count % workers ? 1 : 0);
      if (o.rate_pps > 0) s->packets_per_cycle = o.rate_pps / workers / static_cast<double>(hz);
      if (s->limit == 0) s->done = true;
      worker_state[w].tx.push_back(s.get());
      port_runs[idx].streams.push_back(s.get());
      streams.push_back(std::move(s));
    }
  }
  std::vector<const RxQueue*> all_rx;
  for (unsigned i = 0; i < n_ports; ++i) {
    if (!port_runs[i].rx) continue;
    for (unsigned w = 0; w < workers; ++w) {
      auto q = std::make_unique<RxQueue>();
      q->port_id = port_ids[i];
      q->queue = static_cast<uint16_t>(w);
      q->burst = o.burst;
      q->streams.resize(n_streams);
      worker_state[w].rx.push_back(q.get());
      port_runs[i].queues.push_back(q.get());
      all_rx.push_back(q.get());
      rx_queues.push_back(std::move(q));
    }
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  // Peers such as memif connect after the port starts: send once links are up,
  // so no stamp ages in a burst the port cannot take yet.
  const uint64_t link_deadline = rte_rdtsc() + static_cast<uint64_t>(o.link_wait_s * static_cast<double>(hz));
  for (unsigned i = 0; i < n_ports; ++i) {
    rte_eth_link link{};
    while (rte_eth_link_get_nowait(port_ids[i], &link) == 0 && !link.link_status && rte_rdtsc() < link_deadline &&
           !g_interrupted.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!link.link_status) fmt::print(stderr, "kdp-gen: port {} link is down; sending anyway\n", o.devices[i]);
  }
  // The workers' QSBR variable, so a peer that hangs up (memif) has its
  // rings unmapped only once no worker can be reading them.
  auto pollers = std::make_unique<Rcu>(workers);
  auto unmap_guard = std::make_unique<InterruptUnmapGuard>(pollers->qsbr());
  for (unsigned w = 0; w < workers; ++w) {
    worker_state[w].stop_tx = &stop_tx;
    worker_state[w].stop = &stop;
    worker_state[w].idle_sleep_us = o.idle_sleep_us;
    worker_state[w].pollers = pollers.get();
    worker_state[w].id = w;
  }
  auto launch_workers = [&] {
    for (unsigned w = 0; w < workers; ++w) {
      const unsigned lcore = eal_config.workers.lcores[w];
      if (rte_eal_remote_launch(run_worker, &worker_state[w], lcore) != 0) {
        // Those launched already stop before their streams and queues go.
        stop_tx.store(true);
        stop.store(true);
        rte_eal_mp_wait_lcore();
        throw std::runtime_error(fmt::format("cannot launch a worker on lcore {}", lcore));
      }
    }
  };

  auto total_sent = [&] {
    uint64_t n = 0;
    for (const auto& s : streams) n += s->sent.get();
    return n;
  };
  auto total_stamped = [&] {
    uint64_t n = 0;
    for (const auto& q : rx_queues) n += q->stamped.get();
    return n;
  };
  auto seconds_since = [&](uint64_t from) { return static_cast<double>(rte_rdtsc() - from) / static_cast<double>(hz); };
  auto all_done = [&] {
    bool done = true;
    for (const auto& s : streams) done &= s->done.load(std::memory_order_relaxed);
    return done;
  };
  // No new bursts; what is still on its way back counts, up to --drain-ms;
  // then the workers leave.
  auto drain_and_stop = [&] {
    stop_tx.store(true);
    const uint64_t drain_start = rte_rdtsc();
    while (!all_rx.empty() && !g_interrupted.load() && seconds_since(drain_start) * 1000 < o.drain_ms) {
      if (all_done() && total_stamped() >= total_sent()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    stop.store(true);
    rte_eal_mp_wait_lcore();
  };

  // Warm-up on the connections the measured run will use, then every count
  // from zero. Streams are made TX port by TX port, worker by worker.
  uint64_t warmup_sent = 0, warmup_returned = 0;
  if (o.warmup_count > 0) {
    std::vector<uint64_t> limits;
    const uint64_t warmup_start = rte_rdtsc();
    for (size_t i = 0; i < streams.size(); ++i) {
      const unsigned w = i % workers;
      limits.push_back(streams[i]->limit);
      restart(*streams[i], o.warmup_count / workers + (w < o.warmup_count % workers ? 1 : 0), warmup_start);
    }
    launch_workers();
    while (!g_interrupted.load() && !all_done()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    drain_and_stop();
    warmup_sent = total_sent();
    warmup_returned = total_stamped();
    for (size_t i = 0; i < streams.size(); ++i) restart(*streams[i], limits[i], 0);
    for (auto& q : rx_queues) restart(*q);
    for (Worker& w : worker_state) restart(w);
    stop_tx.store(false);
    stop.store(false);
  }

  const uint64_t start = rte_rdtsc();
  const auto start_monotonic = std::chrono::steady_clock::now();
  for (auto& s : streams) s->start_tsc = start;
  launch_workers();

  // Sending: until every stream has its count, the duration is over or Ctrl-C.
  uint64_t last_report = start, last_sent = 0, last_stamped = 0;
  while (!g_interrupted.load()) {
    if (all_done() || (o.duration_s > 0 && seconds_since(start) >= o.duration_s)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!o.json && seconds_since(last_report) >= 1.0) {
      const double dt = seconds_since(last_report);
      last_report = rte_rdtsc();
      const uint64_t sent = total_sent(), stamped = total_stamped();
      fmt::print(stderr, "kdp-gen: {:7.1f} s  tx {:8.3f} Mpps  rx {:8.3f} Mpps\n", seconds_since(start),
                 static_cast<double>(sent - last_sent) / dt / 1e6, static_cast<double>(stamped - last_stamped) / dt / 1e6);
      last_sent = sent;
      last_stamped = stamped;
    }
  }
  drain_and_stop();
  const double elapsed = seconds_since(start);

  RunSummaryInput in;
  in.ports = port_runs;
  in.all_rx = all_rx;
  in.tsc_hz = hz;
  in.frame_size = o.size;
  in.proto = std::string(proto_name(o.proto));
  in.flows = o.flows;
  in.new_flow_ratio = o.new_flow_ratio;
  in.elapsed_s = elapsed;
  in.start_tsc = start;
  in.start_monotonic_s = std::chrono::duration<double>(start_monotonic.time_since_epoch()).count();
  for (const Worker& w : worker_state) in.workers.push_back(&w);
  in.warmup_sent = warmup_sent;
  in.warmup_returned = warmup_returned;
  const nlohmann::json summary = summarize(in);

  for (uint16_t id : port_ids) close_port(id);
  if (o.json) fmt::print("{}\n", summary.dump());
  else fmt::print("{}", format_summary(summary));
  streams.clear();
  rx_queues.clear();
  unmap_guard.reset();
  pollers.reset();
  rte_mempool_free(pool);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::exception& e) {
    fmt::print(stderr, "kdp-gen: {}\n", e.what());
    return 1;
  }
}
