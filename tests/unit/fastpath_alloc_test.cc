// The fast path makes no heap allocation: malloc, calloc and realloc are
// interposed for this test binary (C and C++ callers alike, DPDK included)
// and counted while the worker polls a mix of every kind of traffic.
#include <atomic>
#include <cstdlib>

#include "tests/unit/dataplane_fixture.h"

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
}

namespace {
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_allocations{0};
void note_allocation() {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* malloc(size_t n) {
  note_allocation();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  note_allocation();
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  note_allocation();
  return __libc_realloc(p, n);
}
}

namespace kdp::test {
namespace {

const rte_ether_addr kMacA = mac("02:00:00:00:01:02");  // on pod0
const rte_ether_addr kMacB = mac("02:00:00:00:01:03");  // on pod1
const be32 kIpA = ip("10.244.1.2");
const be32 kIpB = ip("10.244.1.3");

using FastPathAllocTest = DataplaneTest;

TEST_F(FastPathAllocTest, WorkerPollsAllocateNothing) {
  // The interposer must see allocations at all, or the test proves nothing.
  g_counting = true;
  void* probe = std::malloc(64);
  g_counting = false;
  std::free(probe);
  ASSERT_EQ(g_allocations.exchange(0), 1u);

  struct Input {
    Bytes frame;
    uint16_t port;
  };
  const Input inputs[] = {
      // bridged unicast, both directions (learned after the warm-up round)
      {ether(kMacB, kMacA, RTE_ETHER_TYPE_IPV4, ipv4({.src = kIpA, .dst = kIpB}, udp(1, 2, Bytes(18, 1)))), kPod0},
      {ether(kMacA, kMacB, RTE_ETHER_TYPE_IPV4, ipv4({.src = kIpB, .dst = kIpA}, udp(2, 1, Bytes(18, 1)))), kPod1},
      // broadcast ARP for the gateway: a reply in a new mbuf plus a flood
      {arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp), kPod0},
      // routed to the remote pod CIDR, echo to the gateway, TTL expiry, no route
      {ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = ip("10.244.2.5")}, udp(3, 4, Bytes(18, 2))), kPod0},
      {ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = kGatewayIp, .proto = IPPROTO_ICMP},
                  icmp_echo(7, 1, Bytes(32, 3))),
       kPod0},
      {ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = ip("10.244.2.5"), .ttl = 1}, udp(5, 6, Bytes(8, 4))),
       kPod0},
      {ipv4_frame(kUplinkMac, kRouterMac, {.src = kRouterIp, .dst = ip("8.8.8.8")}, udp(5, 6, Bytes(8, 4))), kUp},
      // uplink to a pod whose neighbour is unknown: punted to the control thread
      {ipv4_frame(kUplinkMac, kRouterMac, {.src = kRouterIp, .dst = ip("10.244.1.77")}, udp(7, 8, Bytes(8, 5))),
       kUp},
      // malformed
      {Bytes(10, 0), kPod0},
  };

  auto round = [&] {
    for (const auto& in : inputs) send(in.port, in.frame);
    poll();
  };
  round();  // warm-up: the control thread installs MACs and neighbours
  control_poll();
  round();
  control_poll();

  g_counting = true;
  for (int i = 0; i < 50; ++i) round();
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations during worker polls";
  EXPECT_GT(stage(StageId::Router), 100u);
  EXPECT_GT(stage(StageId::Bridge), 100u);
  sent_counts();
  control_poll();
}

}  // namespace
}  // namespace kdp::test
