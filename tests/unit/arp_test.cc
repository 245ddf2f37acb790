// Arp: replies for the gateway IP (pod side) and the node IP (uplink),
// flooding of pod broadcasts, gleaning into the neighbour table and
// malformed packets.
#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

const rte_ether_addr kMacA = mac("02:00:00:00:01:02");
const be32 kIpA = ip("10.244.1.2");
const rte_ether_addr kHostMac = mac("02:00:00:00:0b:20");  // a host on the uplink
const be32 kHostIp = ip("192.168.50.20");

constexpr size_t kArpFrameLen = sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr);

// Every field of an ARP reply frame.
void expect_arp_reply(const Bytes& f, const rte_ether_addr& from_mac, be32 from_ip, const rte_ether_addr& to_mac,
                      be32 to_ip) {
  ASSERT_EQ(f.size(), kArpFrameLen);
  EXPECT_EQ(f, arp_frame(to_mac, from_mac, RTE_ARP_OP_REPLY, from_mac, from_ip, to_mac, to_ip));
  // The same, field by field, for readable failures.
  EXPECT_EQ(mac_str(eth_of(f).dst_addr), mac_str(to_mac));
  EXPECT_EQ(mac_str(eth_of(f).src_addr), mac_str(from_mac));
  EXPECT_EQ(ether_type_of(f), RTE_ETHER_TYPE_ARP);
  const rte_arp_hdr& a = arp_of(f);
  EXPECT_EQ(rte_be_to_cpu_16(a.arp_hardware), RTE_ARP_HRD_ETHER);
  EXPECT_EQ(rte_be_to_cpu_16(a.arp_protocol), RTE_ETHER_TYPE_IPV4);
  EXPECT_EQ(a.arp_hlen, 6);
  EXPECT_EQ(a.arp_plen, 4);
  EXPECT_EQ(arp_op_of(f), RTE_ARP_OP_REPLY);
  EXPECT_EQ(mac_str(a.arp_data.arp_sha), mac_str(from_mac));
  EXPECT_EQ(ip_str_raw(a.arp_data.arp_sip), ip_str(from_ip));
  EXPECT_EQ(mac_str(a.arp_data.arp_tha), mac_str(to_mac));
  EXPECT_EQ(ip_str_raw(a.arp_data.arp_tip), ip_str(to_ip));
}

using ArpTest = DataplaneTest;

TEST_F(ArpTest, GatewayRequestFromPodAnsweredAndFlooded) {
  const Bytes request = arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp);
  send_and_poll(kPod0, request);

  std::vector<Bytes> replies = sent(kPod0);
  ASSERT_EQ(replies.size(), 1u);
  expect_arp_reply(replies[0], kGatewayMac, kGatewayIp, kMacA, kIpA);
  // Other pods see the request as it was; the uplink sees nothing.
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{request});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{request});
  EXPECT_EQ(sent(kUp).size(), 0u);
  EXPECT_EQ(tx(kPod0), 1u);
  EXPECT_EQ(tx(kPod1), 1u);
  EXPECT_EQ(tx(kPod2), 1u);
  EXPECT_EQ(tx(kUp), 0u);
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(stage(StageId::Arp), 1u);
  EXPECT_EQ(stage(StageId::Output), 2u);  // the request and the reply
  EXPECT_EQ(ctx->counters.learn_events.get(), 2u);  // the MAC and the neighbour
}

TEST_F(ArpTest, FullBurstOfGatewayRequestsAllAnswered) {
  // 32 flooded requests each need a reply mbuf: the burst doubles to 64.
  std::vector<Bytes> requests;
  for (uint8_t i = 0; i < 32; ++i) {
    rte_ether_addr m = mac("02:00:00:00:03:00");
    m.addr_bytes[5] = i;
    requests.push_back(arp_frame(kBroadcast, m, RTE_ARP_OP_REQUEST, m, ip("10.244.1." + std::to_string(10 + i)),
                                 kZeroMac, kGatewayIp));
    send(kPod0, requests.back());
  }
  poll();
  EXPECT_EQ(total_drops(), 0u);
  std::vector<Bytes> replies = sent(kPod0);
  ASSERT_EQ(replies.size(), 32u);
  for (uint8_t i = 0; i < 32; ++i) {
    const rte_ether_addr& requester = eth_of(requests[i]).src_addr;
    expect_arp_reply(replies[i], kGatewayMac, kGatewayIp, requester, ip("10.244.1." + std::to_string(10 + i)));
  }
  EXPECT_EQ(sent(kPod1), requests);
  EXPECT_EQ(sent(kPod2), requests);
  expect_nothing_sent();
  control_poll();
  EXPECT_EQ(cc().neighbors_learned.get(), 32u);
  EXPECT_EQ(cc().fdb_learned.get(), 32u);
}

TEST_F(ArpTest, UnicastGatewayRequestAnsweredInPlace) {
  // A neighbour probe: unicast to the gateway MAC, nothing to flood.
  send_and_poll(kPod0, arp_frame(kGatewayMac, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kGatewayMac, kGatewayIp));
  std::vector<Bytes> replies = sent(kPod0);
  ASSERT_EQ(replies.size(), 1u);
  expect_arp_reply(replies[0], kGatewayMac, kGatewayIp, kMacA, kIpA);
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(ArpTest, NodeIpRequestOnUplinkAnsweredWithUplinkMac) {
  Bytes request = arp_frame(kBroadcast, kHostMac, RTE_ARP_OP_REQUEST, kHostMac, kHostIp, kZeroMac, kNodeIp);
  request.resize(60, 0);  // padded, as received from a wire
  send_and_poll(kUp, request);
  std::vector<Bytes> replies = sent(kUp);
  ASSERT_EQ(replies.size(), 1u);
  expect_arp_reply(replies[0], kUplinkMac, kNodeIp, kHostMac, kHostIp);
  expect_nothing_sent();  // the uplink is not bridged
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(tx(kUp), 1u);

  control_poll();
  const NeighborEntry* n = neighbor(kHostIp);
  ASSERT_NE(n, nullptr);
  rte_ether_addr learned;
  n->mac(learned);
  EXPECT_EQ(mac_str(learned), mac_str(kHostMac));
  EXPECT_EQ(n->port, kUp);
  EXPECT_EQ(n->state(), NeighborState::Reachable);
}

TEST_F(ArpTest, RequestForOtherIpOnUplinkNotAnsweredNorGleaned) {
  send_and_poll(kUp, arp_frame(kBroadcast, kHostMac, RTE_ARP_OP_REQUEST, kHostMac, kHostIp, kZeroMac,
                               ip("192.168.50.99")));
  expect_single_drop(DropReason::Consumed);
  EXPECT_EQ(ctx->counters.learn_events.get(), 0u);
  control_poll();
  EXPECT_EQ(neighbor(kHostIp), nullptr);
  EXPECT_EQ(cc().neighbors_learned.get(), 0u);
}

TEST_F(ArpTest, GatewayIpNotAnsweredOnUplink) {
  send_and_poll(kUp, arp_frame(kBroadcast, kHostMac, RTE_ARP_OP_REQUEST, kHostMac, kHostIp, kZeroMac, kGatewayIp));
  expect_single_drop(DropReason::Consumed);
}

TEST_F(ArpTest, RequestForAnotherPodFloodedWithoutReply) {
  const Bytes request = arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, ip("10.244.1.3"));
  send_and_poll(kPod0, request);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{request});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{request});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
  // Linux creates entries only from ARP aimed at it.
  control_poll();
  EXPECT_EQ(neighbor(kIpA), nullptr);
  EXPECT_EQ(cc().neighbors_learned.get(), 0u);
  EXPECT_EQ(cc().fdb_learned.get(), 1u);
}

TEST_F(ArpTest, RequesterGleanedAndChangedMacUpdated) {
  send_and_poll(kPod0, arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp));
  EXPECT_EQ(neighbor(kIpA), nullptr) << "only the control thread writes neighbours";
  control_poll();
  const NeighborEntry* n = neighbor(kIpA);
  ASSERT_NE(n, nullptr);
  rte_ether_addr learned;
  n->mac(learned);
  EXPECT_EQ(mac_str(learned), mac_str(kMacA));
  EXPECT_EQ(n->state(), NeighborState::Reachable);
  EXPECT_EQ(n->port, kPod0);
  EXPECT_EQ(cc().neighbors_learned.get(), 1u);

  // The same request again changes nothing.
  send_and_poll(kPod0, arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp));
  control_poll();
  EXPECT_EQ(cc().neighbors_updated.get(), 0u);

  // The pod came back with a new MAC (and on another port).
  const rte_ether_addr moved = mac("02:00:00:00:01:22");
  send_and_poll(kPod1, arp_frame(kBroadcast, moved, RTE_ARP_OP_REQUEST, moved, kIpA, kZeroMac, kGatewayIp));
  control_poll();
  EXPECT_EQ(cc().neighbors_updated.get(), 1u);
  EXPECT_EQ(cc().neighbors_learned.get(), 1u);
  n = neighbor(kIpA);
  ASSERT_NE(n, nullptr);
  n->mac(learned);
  EXPECT_EQ(mac_str(learned), mac_str(moved));
  EXPECT_EQ(n->port, kPod1);
  EXPECT_EQ(tables->neighbors.size(), 2u);  // with the static 192.168.50.11
}

TEST_F(ArpTest, GratuitousArpUpdatesKnownNeighborOnly) {
  send_and_poll(kPod0, arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp));
  control_poll();
  sent_counts();
  // A announces a new MAC; B, unknown, announces itself.
  const rte_ether_addr new_a = mac("02:00:00:00:01:32");
  const rte_ether_addr b = mac("02:00:00:00:01:03");
  const Bytes garp_a = arp_frame(kBroadcast, new_a, RTE_ARP_OP_REQUEST, new_a, kIpA, kZeroMac, kIpA);
  const Bytes garp_b = arp_frame(kBroadcast, b, RTE_ARP_OP_REQUEST, b, ip("10.244.1.3"), kZeroMac, ip("10.244.1.3"));
  send(kPod0, garp_a);
  send(kPod0, garp_b);
  poll();
  EXPECT_EQ(sent(kPod1), (std::vector<Bytes>{garp_a, garp_b}));
  EXPECT_EQ(sent(kPod2), (std::vector<Bytes>{garp_a, garp_b}));
  expect_nothing_sent();  // no reply: not for the gateway
  control_poll();
  rte_ether_addr m;
  neighbor(kIpA)->mac(m);
  EXPECT_EQ(mac_str(m), mac_str(new_a));
  EXPECT_EQ(cc().neighbors_updated.get(), 1u);
  EXPECT_EQ(neighbor(ip("10.244.1.3")), nullptr);
}

TEST_F(ArpTest, StaticNeighborNotOverwritten) {
  const rte_ether_addr impostor = mac("02:00:00:00:0b:99");
  send_and_poll(kUp, arp_frame(kBroadcast, impostor, RTE_ARP_OP_REQUEST, impostor, kRouterIp, kZeroMac, kNodeIp));
  EXPECT_EQ(sent(kUp).size(), 1u);  // still answered
  control_poll();
  const NeighborEntry* n = neighbor(kRouterIp);
  ASSERT_NE(n, nullptr);
  rte_ether_addr m;
  n->mac(m);
  EXPECT_EQ(mac_str(m), mac_str(kRouterMac));
  EXPECT_EQ(n->state(), NeighborState::Static);
  EXPECT_EQ(cc().neighbors_updated.get(), 0u);
}

TEST_F(ArpTest, PodAddressNotGleanedFromUplink) {
  send_and_poll(kUp, arp_frame(kBroadcast, kHostMac, RTE_ARP_OP_REQUEST, kHostMac, ip("10.244.1.9"), kZeroMac,
                               kNodeIp));
  EXPECT_EQ(sent(kUp).size(), 1u);
  control_poll();
  EXPECT_EQ(neighbor(ip("10.244.1.9")), nullptr);
  EXPECT_EQ(cc().neighbors_learned.get(), 0u);
}

TEST_F(ArpTest, MalformedArpCounted) {
  Bytes bad_hlen = arp_frame(kBroadcast, kHostMac, RTE_ARP_OP_REQUEST, kHostMac, kHostIp, kZeroMac, kNodeIp);
  bad_hlen[sizeof(rte_ether_hdr) + 4] = 8;
  Bytes bad_op = arp_frame(kGatewayMac, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp);
  bad_op[sizeof(rte_ether_hdr) + 7] = 3;  // RARP request
  Bytes multicast_sha = arp_frame(kUplinkMac, kHostMac, RTE_ARP_OP_REQUEST, mac("01:00:5e:00:00:01"), kHostIp,
                                  kZeroMac, kNodeIp);
  send(kUp, bad_hlen);
  send(kPod0, bad_op);
  send(kUp, multicast_sha);
  poll();
  EXPECT_EQ(stage(StageId::Arp), 3u);
  EXPECT_EQ(drops(DropReason::ArpMalformed), 3u);
  EXPECT_EQ(total_drops(), 3u);
  expect_nothing_sent();
  control_poll();
  EXPECT_EQ(tables->neighbors.size(), 1u);  // the static one
}

TEST_F(ArpTest, MalformedBroadcastFromPodStillBridged) {
  Bytes bad = arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp);
  bad[sizeof(rte_ether_hdr) + 5] = 16;  // plen
  send_and_poll(kPod0, bad);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{bad});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{bad});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
}

}  // namespace
}  // namespace kdp::test
