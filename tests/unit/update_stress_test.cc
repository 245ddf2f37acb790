// Control-plane updates racing traffic: a worker thread forwards Service
// traffic without pause while this thread, as the control thread does,
// replaces the Service table (with Maglev tables; a snapshot built from the
// last, as the control socket builds them) and the route table
// hundreds of times, installs and removes neighbour and FDB entries,
// flushes conntrack and reclaims the old tables after their RCU grace
// period.
//
// Under the ASan build (tools/test runs the unit suite there) a worker that
// read a table after it was freed would abort the run with a
// heap-use-after-free report; in every build the test checks that each
// packet left translated to a backend that was an endpoint at some point,
// or was dropped with a counted reason, and that the worker saw many
// generations of the table while it ran.
#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <rte_lcore.h>

#include "ctrl/services.h"
#include "nat/service_table.h"
#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

const rte_ether_addr kClientMac = {{0x02, 0x00, 0x0a, 0xf4, 0x01, 0x02}};
const be32 kClientIp = ip("10.244.1.2");
const be32 kVip = ip("10.96.0.10");
constexpr unsigned kBackendPool = 64;  // endpoints 10.244.2.2 .. 10.244.2.65, a window of them at a time

// The Service with endpoints [first, first + count) of the pool.
std::string service_toml(unsigned first, unsigned count) {
  std::string out =
      "[[service]]\nname = \"default/web\"\ncluster_ip = \"10.96.0.10\"\n"
      "  [[service.port]]\n  protocol = \"UDP\"\n  port = 80\n  target_port = 8080\n";
  for (unsigned i = 0; i < count; ++i)
    out += fmt::format("  [[service.endpoint]]\n  ip = \"10.244.2.{}\"\n", 2 + (first + i) % kBackendPool);
  return out;
}

class UpdateStressTest : public DataplaneTest {
 protected:
  std::string extra_config() const override { return "[nat]\nlb_algorithm = \"maglev\"\n" + service_toml(0, 4); }
};

TEST_F(UpdateStressTest, TableSwapsRaceTrafficWithoutLossOrStaleReads) {
  std::atomic<bool> stop{false};
  uint64_t frames_sent = 0, frames_translated = 0, frames_wrong = 0;
  std::set<uint32_t> backends_seen;

  // The worker: UDP to the VIP from the pod over 2048 source ports (half the
  // conntrack table), forwarded to the remote pod CIDR through up0. Flows
  // are new after each flush, established in between.
  std::thread worker([&] {
    // An lcore id, as kdp's worker lcores have: conntrack's multi-writer
    // rte_hash keeps per-lcore free-slot caches.
    ASSERT_EQ(rte_thread_register(), 0);
    uint16_t sport = 1024;
    while (!stop.load(std::memory_order_relaxed)) {
      for (unsigned i = 0; i < 16; ++i) {
        send(kPod0, ipv4_frame(kGatewayMac, kClientMac, {.src = kClientIp, .dst = kVip}, udp(sport, 80, Bytes(18))));
        sport = sport == 1024 + 2047 ? 1024 : sport + 1;
      }
      frames_sent += 16;
      poll();
      for (const Bytes& f : sent(kUp)) {
        const auto& ip4 = ip_of(f);
        uint16_t dport;
        std::memcpy(&dport, l4_of(f) + 2, 2);
        const uint32_t dst = rte_be_to_cpu_32(ip4.dst_addr);
        const bool to_backend = (dst >> 8) == ((10u << 16 | 244u << 8 | 2u)) && (dst & 0xff) >= 2 &&
                                (dst & 0xff) < 2 + kBackendPool && rte_be_to_cpu_16(dport) == 8080;
        if (to_backend) {
          ++frames_translated;
          backends_seen.insert(dst);
        } else {
          ++frames_wrong;
        }
      }
    }
    poll();  // what is still in flight
    rte_thread_unregister();
  });
  // A failed check below must not leave the worker running.
  struct StopOnExit {
    std::atomic<bool>& stop;
    std::thread& worker;
    ~StopOnExit() {
      stop.store(true);
      if (worker.joinable()) worker.join();
    }
  } stop_on_exit{stop, worker};

  // The control thread: per iteration one endpoint in, one out (new Maglev
  // tables) and a route in or out (a new LPM), each published as a new
  // snapshot; conntrack flushed now and then; old tables reclaimed as their
  // grace periods end.
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  Config current = *config;
  unsigned generations = 0;
  auto endpoint = [](unsigned n) {
    EndpointConfig ep;
    ep.ip = *parse_ipv4(fmt::format("10.244.2.{}", 2 + n % kBackendPool));
    return ep;
  };
  RouteConfig extra_route;
  extra_route.via = *parse_ipv4("192.168.50.11");
  // As the control socket changes Services: a diff against what is
  // installed, a snapshot built from the last one (unchanged slots and, for
  // endpoint changes, the key index shared with it).
  InstalledServices installed(compile_services(current));
  auto publish = [&](const ServiceDiff& diff) {
    tables->publish_services(
        std::make_unique<ServiceSnapshot>(*tables->services(), diff, tables->next_service_generation()));
    installed.apply(diff);
  };
  ServiceConfig other;  // a second Service, added and removed in turn (new key indexes, freed slots)
  other.name = "default/other";
  other.cluster_ip = *parse_ipv4("10.96.0.11");
  other.ports.push_back({.name = "", .protocol = L4Proto::Udp, .port = 53, .target_port = 5353});
  other.endpoints.push_back(endpoint(1));
  while (Clock::now() < deadline || generations < 200) {
    ServiceConfig web = with_endpoint(current, "default/web", endpoint(generations + 4));
    current.services[0] = web;
    web = without_endpoint(current, "default/web", endpoint(generations).ip);
    publish(installed.diff_service(&current.services[0], &web, current));
    current.services[0] = std::move(web);
    if (generations % 4 == 0) publish(installed.diff_service(nullptr, &other, current));
    if (generations % 4 == 2) publish(installed.diff_service(&other, nullptr, current));
    extra_route.prefix = *parse_ipv4_prefix(fmt::format("10.250.{}.0/24", generations % 256));
    Config routed = current;
    if (generations % 2) routed.routes = with_route(current, extra_route);
    tables->publish_routes(
        std::make_unique<RouteSnapshot>(tables->routes_from_config(routed.routes), tables->next_route_generation()));
    if (generations % 16 == 0) tables->conntrack->remove_if([](const FlowEntry&) { return true; });
    // Neighbour and FDB entries the control thread installs and removes in
    // the tables the worker looks up on every packet (its next hop and the
    // pod's MAC live there too).
    const be32 neighbor_ip = to_be32(0xc0a83c00u + generations % 200);  // 192.168.60.x
    if (generations >= 100) tables->neighbors.erase(NeighborKey{to_be32(0xc0a83c00u + (generations - 100) % 200)});
    NeighborEntry neighbor;
    neighbor.mac_state.store(NeighborEntry::pack(kRouterMac, NeighborState::Static));
    neighbor.port = kUp;
    tables->neighbors.insert(NeighborKey{neighbor_ip}, neighbor);
    rte_ether_addr fake_mac = {{0x02, 0xfd, 0, 0, static_cast<uint8_t>(generations >> 8), static_cast<uint8_t>(generations)}};
    FdbEntry fdb;
    fdb.port.store(kPod1);
    tables->fdb.insert(fdb_key(fake_mac), fdb);
    if (generations >= 100) {
      fake_mac.addr_bytes[4] = static_cast<uint8_t>((generations - 100) >> 8);
      fake_mac.addr_bytes[5] = static_cast<uint8_t>(generations - 100);
      tables->fdb.erase(fdb_key(fake_mac));
    }
    // As the control socket answers a change: once every worker has moved
    // past the old tables (an LPM is 64 MB: they must not pile up).
    const uint64_t token = tables->rcu.start_grace();
    while (!tables->rcu.grace_ended(token)) std::this_thread::yield();
    control_poll();  // reclaims what every worker has moved past
    ++generations;
  }
  stop.store(true);
  worker.join();
  tables->rcu.drain();

  EXPECT_GE(generations, 200u);
  EXPECT_EQ(frames_wrong, 0u) << "a frame left untranslated or to an address that was never an endpoint";
  // Every frame is accounted for: forwarded, or dropped with a reason (a
  // full conntrack table between flushes, for instance).
  EXPECT_EQ(frames_sent, frames_translated + total_drops()) << "packets lost without a counted reason";
  EXPECT_GT(frames_translated, frames_sent / 2) << "drops: " << [&] {
    std::string out;
    for (unsigned r = 0; r < kDropReasonCount; ++r)
      if (uint64_t n = drops(static_cast<DropReason>(r))) out += fmt::format("{}={} ", drop_reason_name(static_cast<DropReason>(r)), n);
    return out;
  }();
  // The worker really raced the swaps: it used endpoints of many generations.
  EXPECT_GE(backends_seen.size(), 16u) << "the worker saw too few table generations to race them";
}

}  // namespace
}  // namespace kdp::test
