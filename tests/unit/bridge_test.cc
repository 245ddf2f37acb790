// Bridge: FDB learning through the control thread, known-unicast
// forwarding, flooding, hairpin drops, MAC moves, a full FDB and aging.
#include <chrono>
#include <thread>

#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

const rte_ether_addr kMacA = mac("02:00:00:00:01:02");
const rte_ether_addr kMacB = mac("02:00:00:00:01:03");
const rte_ether_addr kMacC = mac("02:00:00:00:01:04");
const rte_ether_addr kUnknown = mac("02:00:00:00:01:99");

// A non-IP frame: the bridge forwards it on MACs alone.
Bytes l2_frame(const rte_ether_addr& dst, const rte_ether_addr& src, uint8_t fill = 0x5a) {
  return ether(dst, src, 0x88b5 /* local experimental */, Bytes(46, fill));
}

class BridgeTest : public DataplaneTest {
 protected:
  // Makes the bridge learn `m` on `port` (a broadcast from it, then the
  // control thread), and drains what the broadcast flooded.
  void learn(const rte_ether_addr& m, uint16_t port) {
    send_and_poll(port, l2_frame(kBroadcast, m));
    control_poll();
    sent_counts();
    const FdbEntry* e = fdb_entry(m);
    ASSERT_NE(e, nullptr) << mac_str(m);
    ASSERT_EQ(e->port.load(), port);
  }
};

TEST_F(BridgeTest, SourceMacLearnedThroughControl) {
  send_and_poll(kPod1, l2_frame(kBroadcast, kMacB));
  EXPECT_EQ(ctx->counters.learn_events.get(), 1u);
  EXPECT_EQ(fdb_entry(kMacB), nullptr) << "only the control thread writes the FDB";
  EXPECT_EQ(control_poll(), 1u);
  const FdbEntry* e = fdb_entry(kMacB);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->port.load(), kPod1);
  EXPECT_FALSE(e->is_static);
  EXPECT_EQ(cc().fdb_learned.get(), 1u);
  EXPECT_EQ(tables->fdb.size(), 1u);

  // A second frame from the known source is not reported again.
  send_and_poll(kPod1, l2_frame(kBroadcast, kMacB));
  EXPECT_EQ(ctx->counters.learn_events.get(), 1u);
  EXPECT_EQ(control_poll(), 0u);
  EXPECT_EQ(cc().fdb_learned.get(), 1u);
}

TEST_F(BridgeTest, KnownSourceRefreshedByWorker) {
  learn(kMacA, kPod0);
  FdbEntry* e = tables->fdb.lookup(fdb_key(kMacA));
  ASSERT_NE(e, nullptr);
  e->last_seen_s.store(0);
  send_and_poll(kPod0, l2_frame(kMacB, kMacA));
  EXPECT_EQ(e->last_seen_s.load(), ctx->now_s);
  EXPECT_EQ(ctx->counters.learn_events.get(), 1u) << "a refresh is not a learn event";
}

TEST_F(BridgeTest, KnownUnicastGoesOnlyToItsPortUnchanged) {
  learn(kMacB, kPod1);
  const Bytes f = l2_frame(kMacB, kMacA, 0x33);
  send_and_poll(kPod0, f);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{f});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(stage(StageId::Router), 0u);
}

TEST_F(BridgeTest, UnknownUnicastFloodedToOtherPodPorts) {
  const Bytes f = l2_frame(kUnknown, kMacA);
  send_and_poll(kPod0, f);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{f});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{f});
  expect_nothing_sent();  // neither back to pod0 nor to the uplink
  EXPECT_EQ(tx(kUp), 0u);
  EXPECT_EQ(tx(kPod0), 0u);
  EXPECT_EQ(tx(kPod1), 1u);
  EXPECT_EQ(tx(kPod2), 1u);
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(BridgeTest, BroadcastFloodedToOtherPodPorts) {
  const Bytes f = l2_frame(kBroadcast, kMacC);
  send_and_poll(kPod2, f);
  EXPECT_EQ(sent(kPod0), std::vector<Bytes>{f});
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{f});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(BridgeTest, IpBroadcastBridgedNotRouted) {
  const Bytes f = ipv4_frame(kBroadcast, kMacA, {.src = ip("0.0.0.0"), .dst = ip("255.255.255.255")},
                             udp(68, 67, Bytes(20, 1)));
  send_and_poll(kPod0, f);
  EXPECT_EQ(stage(StageId::Router), 0u);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{f});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{f});
  expect_nothing_sent();
}

TEST_F(BridgeTest, MulticastFloodedToOtherPodPorts) {
  const Bytes f = ipv4_frame(mac("01:00:5e:00:00:fb"), kMacB, {.src = ip("10.244.1.3"), .dst = ip("224.0.0.251")},
                             udp(5353, 5353, Bytes(12, 0)));
  send_and_poll(kPod1, f);
  EXPECT_EQ(sent(kPod0), std::vector<Bytes>{f});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{f});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(BridgeTest, DestinationOnIngressPortDropped) {
  learn(kMacA, kPod0);
  learn(kMacB, kPod0);
  send_and_poll(kPod0, l2_frame(kMacB, kMacA));
  EXPECT_EQ(drops(DropReason::SamePort), 1u);
  EXPECT_EQ(total_drops(), 1u);
  expect_nothing_sent();
}

TEST_F(BridgeTest, MacMoveUpdatesPort) {
  learn(kMacA, kPod0);
  send_and_poll(kPod1, l2_frame(kBroadcast, kMacA));  // A now behind pod1
  EXPECT_EQ(ctx->counters.learn_events.get(), 2u);
  control_poll();
  EXPECT_EQ(cc().fdb_moved.get(), 1u);
  EXPECT_EQ(cc().fdb_learned.get(), 1u);
  ASSERT_NE(fdb_entry(kMacA), nullptr);
  EXPECT_EQ(fdb_entry(kMacA)->port.load(), kPod1);
  EXPECT_EQ(tables->fdb.size(), 1u);
  sent_counts();

  const Bytes f = l2_frame(kMacA, kMacC);
  send_and_poll(kPod2, f);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{f});
  expect_nothing_sent();
}

TEST_F(BridgeTest, OnePollReadsAtMostOneBurstPerPort) {
  for (uint8_t i = 0; i < 40; ++i) send(kPod0, l2_frame(kUnknown, kMacA, i));
  EXPECT_EQ(poll(), 32u);
  EXPECT_EQ(rx(kPod0), 32u);
  EXPECT_EQ(poll(), 8u);
  EXPECT_EQ(rx(kPod0), 40u);
  std::vector<Bytes> out = sent(kPod1);
  ASSERT_EQ(out.size(), 40u);
  for (uint8_t i = 0; i < 40; ++i) EXPECT_EQ(out[i], l2_frame(kUnknown, kMacA, i)) << "in order";
  EXPECT_EQ(sent(kPod2).size(), 40u);
  EXPECT_EQ(total_drops(), 0u);
}

class BridgeFdbFullTest : public BridgeTest {
 protected:
  std::string extra_config() const override { return "[bridge]\nfdb_max = 16\n"; }
};

TEST_F(BridgeFdbFullTest, SeventeenthMacNotLearnedButStillFlooded) {
  auto nth = [](unsigned i) {
    rte_ether_addr m = mac("02:00:00:00:02:00");
    m.addr_bytes[5] = static_cast<uint8_t>(i);
    return m;
  };
  for (unsigned i = 1; i <= 17; ++i) send(kPod0, l2_frame(kBroadcast, nth(i)));
  poll();
  EXPECT_EQ(ctx->counters.learn_events.get(), 17u);
  EXPECT_EQ(control_poll(), 17u);
  EXPECT_EQ(cc().fdb_learned.get(), 16u);
  EXPECT_EQ(cc().fdb_full.get(), 1u);
  EXPECT_EQ(tables->fdb.size(), 16u);
  EXPECT_EQ(fdb_entry(nth(17)), nullptr);
  for (unsigned i = 1; i <= 16; ++i) EXPECT_NE(fdb_entry(nth(i)), nullptr) << i;
  EXPECT_EQ(sent_counts(), (std::vector<size_t>{0, 0, 17, 17}));

  // Unknown to the FDB: flooded. Known: unicast.
  const Bytes to_17 = l2_frame(nth(17), kMacB);
  const Bytes to_1 = l2_frame(nth(1), kMacB);
  send(kPod1, to_17);
  send(kPod1, to_1);
  poll();
  EXPECT_EQ(sent(kPod0), (std::vector<Bytes>{to_17, to_1}));
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{to_17});
  expect_nothing_sent();
  // The table is still full: B is not learned either.
  control_poll();
  EXPECT_EQ(cc().fdb_full.get(), 2u);
  EXPECT_EQ(fdb_entry(kMacB), nullptr);
}

class BridgeAgingTest : public BridgeTest {
 protected:
  std::string extra_config() const override { return "[bridge]\naging_s = 1\n"; }
};

TEST_F(BridgeAgingTest, IdleEntryAgedOutAndReclaimedAfterGracePeriod) {
  learn(kMacA, kPod0);
  const auto start = std::chrono::steady_clock::now();
  while (fdb_entry(kMacA) != nullptr && std::chrono::steady_clock::now() - start < std::chrono::seconds(4)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    control_poll();
  }
  ASSERT_EQ(fdb_entry(kMacA), nullptr) << "not aged within 4 s";
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
  EXPECT_EQ(cc().fdb_aged.get(), 1u);
  EXPECT_EQ(tables->fdb.size(), 0u);
  // The hash slot is reused only after the worker has passed a quiescent point.
  EXPECT_EQ(tables->rcu.pending(), 1u);
  control_poll();
  EXPECT_EQ(tables->rcu.pending(), 1u);
  poll();  // reports quiescent
  control_poll();
  EXPECT_EQ(tables->rcu.pending(), 0u);

  // Traffic to A floods again; A's next frame teaches it anew.
  const Bytes f = l2_frame(kMacA, kMacB);
  send_and_poll(kPod1, f);
  EXPECT_EQ(sent(kPod0), std::vector<Bytes>{f});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{f});
  learn(kMacA, kPod0);
  EXPECT_EQ(cc().fdb_learned.get(), 3u);  // A, B, A again
}

}  // namespace
}  // namespace kdp::test
