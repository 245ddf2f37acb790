// Router (with the Icmp stage and the control thread's neighbour
// resolution): forwarding via a static neighbour, punting and holding for
// an unresolved pod, ICMP errors and echo replies, martians, rate limits,
// and RCU-safe route snapshot replacement.
#include <rte_lpm.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

const rte_ether_addr kMacA = mac("02:00:00:00:01:02");  // pod A on pod0
const be32 kIpA = ip("10.244.1.2");
const rte_ether_addr kMacP = mac("02:00:00:00:01:07");  // pod P on pod1
const be32 kIpP = ip("10.244.1.7");
const be32 kRemotePod = ip("10.244.2.5");  // behind 192.168.50.11

Bytes echo_reply(uint16_t ident, uint16_t seq, const Bytes& payload) {
  Bytes c = icmp_echo(ident, seq, payload);
  c[0] = RTE_IP_ICMP_ECHO_REPLY;
  return c;
}

// ICMP error body: type, code, checksum (filled by ipv4()), unused, quote.
Bytes icmp_error_body(uint8_t type, uint8_t code, const Bytes& quoted) {
  Bytes c(8 + quoted.size(), 0);
  c[0] = type;
  c[1] = code;
  std::copy(quoted.begin(), quoted.end(), c.begin() + 8);
  return c;
}

// The whole frame kdp must send for an ICMP error about `original` (the
// offending IP datagram).
Bytes icmp_error_frame(const rte_ether_addr& to_mac, const rte_ether_addr& from_mac, be32 from_ip, be32 to_ip,
                       uint8_t type, uint8_t code, const Bytes& original) {
  return ipv4_frame(to_mac, from_mac,
                    {.src = from_ip, .dst = to_ip, .proto = IPPROTO_ICMP, .ttl = 64, .id = 0, .tos = 0xc0},
                    icmp_error_body(type, code, original));
}

// Checks the fields of an ICMP error one by one (readable failures), then
// the whole frame.
void expect_icmp_error(const Bytes& f, const rte_ether_addr& to_mac, const rte_ether_addr& from_mac, be32 from_ip,
                       be32 to_ip, uint8_t type, uint8_t code, const Bytes& original) {
  ASSERT_EQ(f.size(), sizeof(rte_ether_hdr) + 20 + 8 + original.size());
  EXPECT_EQ(mac_str(eth_of(f).dst_addr), mac_str(to_mac));
  EXPECT_EQ(mac_str(eth_of(f).src_addr), mac_str(from_mac));
  EXPECT_EQ(ether_type_of(f), RTE_ETHER_TYPE_IPV4);
  const rte_ipv4_hdr& h = ip_of(f);
  EXPECT_EQ(h.version_ihl, 0x45);
  EXPECT_EQ(h.next_proto_id, IPPROTO_ICMP);
  EXPECT_EQ(h.time_to_live, 64);
  EXPECT_EQ(ip_str_raw(h.src_addr), ip_str(from_ip));
  EXPECT_EQ(ip_str_raw(h.dst_addr), ip_str(to_ip));
  EXPECT_EQ(rte_be_to_cpu_16(h.total_length), 28 + original.size());
  EXPECT_EQ(rte_ipv4_cksum(&h), 0) << "header checksum";
  EXPECT_EQ(icmp_of(f).icmp_type, type);
  EXPECT_EQ(icmp_of(f).icmp_code, code);
  EXPECT_EQ(raw_sum(l4_of(f), 8 + original.size()), 0xffff) << "ICMP checksum";
  EXPECT_EQ(Bytes(l4_of(f) + 8, f.data() + f.size()), original) << "quoted datagram";
  EXPECT_EQ(f, icmp_error_frame(to_mac, from_mac, from_ip, to_ip, type, code, original));
}

// Recomputes the UDP checksum of a frame and compares it with the one sent.
bool udp_checksum_ok(Bytes f) {
  auto* hdr = reinterpret_cast<rte_ipv4_hdr*>(f.data() + sizeof(rte_ether_hdr));
  auto* u = reinterpret_cast<rte_udp_hdr*>(f.data() + sizeof(rte_ether_hdr) + (hdr->version_ihl & 0x0f) * 4u);
  const uint16_t got = u->dgram_cksum;
  u->dgram_cksum = 0;
  return rte_ipv4_udptcp_cksum(hdr, u) == got;
}

using RouterTest = DataplaneTest;

// ---- forwarding ---------------------------------------------------------------

TEST_F(RouterTest, PodToRemotePodCidrViaStaticNeighbor) {
  Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 64};
  const Bytes l4 = udp(40000, 53, Bytes(20, 0x42));
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, l4));

  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  const Bytes& f = out[0];
  EXPECT_EQ(mac_str(eth_of(f).dst_addr), mac_str(kRouterMac));
  EXPECT_EQ(mac_str(eth_of(f).src_addr), mac_str(kUplinkMac));
  EXPECT_EQ(ip_of(f).time_to_live, 63);
  EXPECT_EQ(rte_ipv4_cksum(&ip_of(f)), 0) << "incrementally updated header checksum";
  EXPECT_TRUE(udp_checksum_ok(f));
  spec.ttl = 63;
  EXPECT_EQ(f, ipv4_frame(kRouterMac, kUplinkMac, spec, l4));
  expect_nothing_sent();

  EXPECT_EQ(rx(kPod0), 1u);
  EXPECT_EQ(tx(kUp), 1u);
  EXPECT_EQ(stage(StageId::Router), 1u);
  EXPECT_EQ(stage(StageId::Output), 1u);
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(ctx->counters.punted.get(), 0u);
  EXPECT_EQ(neighbor(kRouterIp)->last_used_s.load(), ctx->now_s);
}

TEST_F(RouterTest, UplinkToUnresolvedPodHeldUntilArpReply) {
  const Ipv4Spec spec{.src = kRemotePod, .dst = kIpP, .proto = IPPROTO_TCP, .ttl = 30};
  const Bytes l4 = tcp(443, 50000, Bytes(16, 0x77));
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, spec, l4));
  EXPECT_EQ(ctx->counters.punted.get(), 1u);
  EXPECT_EQ(stage(StageId::Punt), 1u);
  EXPECT_EQ(total_drops(), 0u);
  expect_nothing_sent();

  // The control thread holds it and asks every pod port.
  EXPECT_EQ(control_poll(), 1u);
  EXPECT_EQ(cc().held.get(), 1u);
  EXPECT_EQ(cc().arp_requests_sent.get(), 1u);
  EXPECT_EQ(control->pending_resolutions(), 1u);
  poll();
  EXPECT_EQ(ctx->counters.injected.get(), 1u);
  const Bytes request = arp_frame(kBroadcast, kGatewayMac, RTE_ARP_OP_REQUEST, kGatewayMac, kGatewayIp, kZeroMac, kIpP);
  for (uint16_t port : {kPod0, kPod1, kPod2}) {
    std::vector<Bytes> got = sent(port);
    ASSERT_EQ(got.size(), 1u) << "port " << port;
    const Bytes& f = got[0];
    EXPECT_EQ(mac_str(eth_of(f).dst_addr), "ff:ff:ff:ff:ff:ff");
    EXPECT_EQ(mac_str(eth_of(f).src_addr), mac_str(kGatewayMac));
    EXPECT_EQ(arp_op_of(f), RTE_ARP_OP_REQUEST);
    EXPECT_EQ(mac_str(arp_of(f).arp_data.arp_sha), mac_str(kGatewayMac));
    EXPECT_EQ(ip_str_raw(arp_of(f).arp_data.arp_sip), "10.244.1.1");
    EXPECT_EQ(mac_str(arp_of(f).arp_data.arp_tha), "00:00:00:00:00:00");
    EXPECT_EQ(ip_str_raw(arp_of(f).arp_data.arp_tip), "10.244.1.7");
    EXPECT_EQ(f, request);
  }
  EXPECT_EQ(sent(kUp).size(), 0u);

  // P answers from pod1.
  send_and_poll(kPod1, arp_frame(kGatewayMac, kMacP, RTE_ARP_OP_REPLY, kMacP, kIpP, kGatewayMac, kGatewayIp));
  EXPECT_EQ(drops(DropReason::Consumed), 1u);
  expect_nothing_sent();
  control_poll();
  EXPECT_EQ(cc().neighbors_learned.get(), 1u);
  EXPECT_EQ(cc().fdb_learned.get(), 1u);
  EXPECT_EQ(cc().hold_released.get(), 1u);
  EXPECT_EQ(control->pending_resolutions(), 0u);
  poll();
  Ipv4Spec routed = spec;
  routed.ttl = 29;
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{ipv4_frame(kMacP, kGatewayMac, routed, l4)});
  expect_nothing_sent();
  EXPECT_EQ(ctx->counters.injected.get(), 2u);
  EXPECT_EQ(tx(kPod1), 2u);  // the ARP request, then the released packet
}

TEST_F(RouterTest, UplinkToKnownPodForwardedToItsPort) {
  // P announces itself by asking for its gateway: neighbour and FDB entry.
  send_and_poll(kPod2, arp_frame(kBroadcast, kMacP, RTE_ARP_OP_REQUEST, kMacP, kIpP, kZeroMac, kGatewayIp));
  control_poll();
  sent_counts();
  const Ipv4Spec spec{.src = ip("192.168.50.11"), .dst = kIpP, .proto = IPPROTO_UDP, .ttl = 2};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, spec, udp(1, 2, {})));
  Ipv4Spec routed = spec;
  routed.ttl = 1;
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{ipv4_frame(kMacP, kGatewayMac, routed, udp(1, 2, {}))});
  expect_nothing_sent();
  EXPECT_EQ(ctx->counters.punted.get(), 0u);
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(RouterTest, NeighborResolvedWhilePuntedIsSentWithoutArp) {
  const Ipv4Spec spec{.src = kRemotePod, .dst = kIpP, .proto = IPPROTO_UDP, .ttl = 9};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, spec, udp(3, 4, {})));
  EXPECT_EQ(ctx->counters.punted.get(), 1u);
  // Before the control thread looks, P shows up and is gleaned.
  send_and_poll(kPod1, arp_frame(kBroadcast, kMacP, RTE_ARP_OP_REQUEST, kMacP, kIpP, kZeroMac, kGatewayIp));
  sent_counts();
  control_poll();  // learn events first, then the punted packet
  EXPECT_EQ(cc().held.get(), 0u);
  EXPECT_EQ(cc().hold_released.get(), 1u);
  EXPECT_EQ(cc().arp_requests_sent.get(), 0u);
  EXPECT_EQ(control->pending_resolutions(), 0u);
  poll();
  Ipv4Spec routed = spec;
  routed.ttl = 8;
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{ipv4_frame(kMacP, kGatewayMac, routed, udp(3, 4, {}))});
  expect_nothing_sent();
}

TEST_F(RouterTest, KnownNeighborWithoutFdbEntryFloodedToEveryPodPort) {
  // A neighbour the bridge has not seen (its FDB entry aged out, say).
  const rte_ether_addr q = mac("02:00:00:00:01:09");
  NeighborEntry entry;
  entry.mac_state.store(NeighborEntry::pack(q, NeighborState::Reachable));
  ASSERT_NE(tables->neighbors.insert(NeighborKey{ip("10.244.1.9")}, entry), nullptr);
  const Ipv4Spec spec{.src = kRemotePod, .dst = ip("10.244.1.9"), .proto = IPPROTO_UDP};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, spec, udp(3, 4, {})));
  Ipv4Spec routed = spec;
  routed.ttl = 63;
  const Bytes expected = ipv4_frame(q, kGatewayMac, routed, udp(3, 4, {}));
  EXPECT_EQ(sent(kPod0), std::vector<Bytes>{expected});
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{expected});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{expected});
  expect_nothing_sent();
  EXPECT_EQ(ctx->counters.punted.get(), 0u);
}

class RouterHoldBudgetTest : public RouterTest {
 protected:
  // 64 packets held at most over all neighbours (hold_packets x 64).
  std::string extra_config() const override { return "[neighbors]\nhold_packets = 1\n"; }
};

TEST_F(RouterHoldBudgetTest, UnresolvedDestinationsCannotHoldMoreThanTheBudget) {
  // 100 pod addresses nobody answers for: the first 64 are held (one ARP
  // request each), the rest dropped as hold_overflow with no resolution
  // started, so they take no mbuf beyond the pool's reserve.
  for (unsigned i = 0; i < 100; ++i)
    send(kUp, ipv4_frame(kUplinkMac, kRouterMac,
                         {.src = kRemotePod, .dst = ip(fmt::format("10.244.1.{}", 100 + i)), .proto = IPPROTO_UDP},
                         udp(7, 7, {})));
  for (int i = 0; i < 4; ++i) poll();
  EXPECT_EQ(ctx->counters.punted.get(), 100u);
  control_poll();
  EXPECT_EQ(cc().held.get(), 64u);
  EXPECT_EQ(cc().hold_overflow.get(), 36u);
  EXPECT_EQ(cc().arp_requests_sent.get(), 64u);
  // One answer frees its held packet, and the budget takes a new one again.
  const rte_ether_addr answering = mac("02:00:0a:f4:01:64");
  send_and_poll(kPod1, arp_frame(kGatewayMac, answering, RTE_ARP_OP_REPLY, answering, ip("10.244.1.100"), kGatewayMac,
                                 kGatewayIp));
  control_poll();
  EXPECT_EQ(cc().hold_released.get(), 1u);
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac,
                                {.src = kRemotePod, .dst = ip("10.244.1.250"), .proto = IPPROTO_UDP}, udp(7, 7, {})));
  control_poll();
  EXPECT_EQ(cc().held.get(), 65u);
  EXPECT_EQ(cc().hold_overflow.get(), 36u);
  sent_counts();
}

class RouterHoldTest : public RouterTest {
 protected:
  std::string extra_config() const override { return "[neighbors]\nhold_packets = 2\n"; }
};

TEST_F(RouterHoldTest, HoldQueueOverflowDropsThirdPacket) {
  auto packet = [](uint16_t id) {
    return ipv4_frame(kUplinkMac, kRouterMac, {.src = kRemotePod, .dst = kIpP, .proto = IPPROTO_UDP, .id = id},
                      udp(7, 7, {}));
  };
  send(kUp, packet(1));
  send(kUp, packet(2));
  send(kUp, packet(3));
  poll();
  EXPECT_EQ(ctx->counters.punted.get(), 3u);
  control_poll();
  EXPECT_EQ(cc().held.get(), 2u);
  EXPECT_EQ(cc().hold_overflow.get(), 1u);
  EXPECT_EQ(cc().arp_requests_sent.get(), 1u);
  poll();
  EXPECT_EQ(sent_counts(), (std::vector<size_t>{0, 1, 1, 1}));  // one ARP request

  send_and_poll(kPod1, arp_frame(kGatewayMac, kMacP, RTE_ARP_OP_REPLY, kMacP, kIpP, kGatewayMac, kGatewayIp));
  control_poll();
  EXPECT_EQ(cc().hold_released.get(), 2u);
  poll();
  std::vector<Bytes> out = sent(kPod1);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(rte_be_to_cpu_16(ip_of(out[0]).packet_id), 1);
  EXPECT_EQ(rte_be_to_cpu_16(ip_of(out[1]).packet_id), 2);
  EXPECT_EQ(mac_str(eth_of(out[1]).dst_addr), mac_str(kMacP));
  expect_nothing_sent();
}

class RouterRetryTest : public RouterTest {
 protected:
  std::string extra_config() const override { return "[neighbors]\nretries = 2\nretry_ms = 10\n"; }
};

TEST_F(RouterRetryTest, UnresolvedPodRetriedThenGivenUp) {
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, {.src = kRemotePod, .dst = kIpP}, udp(7, 7, {})));
  control_poll();
  EXPECT_EQ(cc().arp_requests_sent.get(), 1u);
  // Timers run every 100 ms: the second try, then giving up.
  std::this_thread::sleep_for(std::chrono::milliseconds(110));
  control_poll();
  EXPECT_EQ(cc().arp_requests_sent.get(), 2u);
  EXPECT_EQ(cc().hold_unresolved.get(), 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(110));
  control_poll();
  EXPECT_EQ(cc().arp_requests_sent.get(), 2u);
  EXPECT_EQ(cc().hold_unresolved.get(), 1u);
  EXPECT_EQ(control->pending_resolutions(), 0u);
  poll();
  EXPECT_EQ(sent_counts(), (std::vector<size_t>{0, 2, 2, 2}));  // two ARP requests, nothing else
}

class RouterConnectedUplinkTest : public RouterTest {
 protected:
  std::string node_ip_text() const override { return "192.168.50.10/24"; }
  // The node subnet stays unmasqueraded here: this is about ARP, not SNAT.
  std::string extra_config() const override { return "[nat]\nnon_masquerade_cidrs = [\"192.168.50.0/24\"]\n"; }
};

TEST_F(RouterConnectedUplinkTest, UplinkNeighborResolvedOnTheUplinkOnly) {
  const rte_ether_addr host_mac = mac("02:00:00:00:0b:20");
  const be32 host_ip = ip("192.168.50.20");
  const Ipv4Spec spec{.src = kIpA, .dst = host_ip, .proto = IPPROTO_UDP};
  const Bytes l4 = udp(1111, 2222, Bytes(5, 5));
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, l4));
  EXPECT_EQ(ctx->counters.punted.get(), 1u);
  control_poll();
  EXPECT_EQ(cc().held.get(), 1u);
  poll();
  EXPECT_EQ(sent(kUp), std::vector<Bytes>{arp_frame(kBroadcast, kUplinkMac, RTE_ARP_OP_REQUEST, kUplinkMac, kNodeIp,
                                                    kZeroMac, host_ip)});
  expect_nothing_sent();  // not on the pod ports

  send_and_poll(kUp, arp_frame(kUplinkMac, host_mac, RTE_ARP_OP_REPLY, host_mac, host_ip, kUplinkMac, kNodeIp));
  control_poll();
  EXPECT_EQ(cc().hold_released.get(), 1u);
  ASSERT_NE(neighbor(host_ip), nullptr);
  EXPECT_EQ(neighbor(host_ip)->port, kUp);
  poll();
  Ipv4Spec routed = spec;
  routed.ttl = 63;
  EXPECT_EQ(sent(kUp), std::vector<Bytes>{ipv4_frame(host_mac, kUplinkMac, routed, l4)});
  expect_nothing_sent();
}

TEST_F(RouterTest, DirectedBroadcastIntoPodNetworkDropped) {
  for (const char* dst : {"10.244.1.255", "10.244.1.0"})
    send(kUp, ipv4_frame(kUplinkMac, kRouterMac, {.src = kRemotePod, .dst = ip(dst)}, udp(1, 2, {})));
  poll();
  EXPECT_EQ(drops(DropReason::MartianDestination), 2u);
  EXPECT_EQ(total_drops(), 2u);
  EXPECT_EQ(ctx->counters.punted.get(), 0u);
  expect_nothing_sent();
}

// ---- ICMP errors ------------------------------------------------------------

TEST_F(RouterTest, TtlExpiredFromPodGetsTimeExceeded) {
  const Bytes original =
      ipv4({.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 1}, udp(9, 9, Bytes(30, 3)));
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV4, original));
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  // From the gateway IP, the ingress side's address, quoting the datagram as received.
  expect_icmp_error(out[0], kMacA, kGatewayMac, kGatewayIp, kIpA, 11, 0, original);
  expect_nothing_sent();
  EXPECT_EQ(drops(DropReason::TtlExceeded), 1u);
  EXPECT_EQ(total_drops(), 1u);
  EXPECT_EQ(tx(kPod0), 1u);
  EXPECT_EQ(stage(StageId::Icmp), 1u);
}

TEST_F(RouterTest, TtlExpiredFromUplinkGetsTimeExceededFromNodeIp) {
  Bytes original = ipv4({.src = kRemotePod, .dst = kIpP, .proto = IPPROTO_TCP, .ttl = 1}, tcp(1, 2, {}));
  Bytes frame = ether(kUplinkMac, kRouterMac, RTE_ETHER_TYPE_IPV4, original);
  frame.resize(60, 0);  // padding is not quoted
  send_and_poll(kUp, frame);
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  expect_icmp_error(out[0], kRouterMac, kUplinkMac, kNodeIp, kRemotePod, 11, 0, original);
  expect_nothing_sent();
  EXPECT_EQ(ctx->counters.punted.get(), 0u);
}

TEST_F(RouterTest, NoRouteGetsNetUnreachable) {
  const Bytes original = ipv4({.src = kIpA, .dst = ip("8.8.8.8"), .proto = IPPROTO_UDP}, udp(5000, 53, Bytes(8, 1)));
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV4, original));
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  expect_icmp_error(out[0], kMacA, kGatewayMac, kGatewayIp, kIpA, 3, 0, original);
  expect_nothing_sent();
  EXPECT_EQ(drops(DropReason::NoRoute), 1u);
  EXPECT_EQ(total_drops(), 1u);
}

TEST_F(RouterTest, LongDatagramQuotedUpTo576Bytes) {
  const Bytes original =
      ipv4({.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 1}, udp(9, 9, Bytes(1000, 7)));
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV4, original));
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].size(), sizeof(rte_ether_hdr) + 576);
  const Bytes first_548(original.begin(), original.begin() + 548);  // 576 - 20 - 8
  expect_icmp_error(out[0], kMacA, kGatewayMac, kGatewayIp, kIpA, 11, 0, first_548);
}

TEST_F(RouterTest, NoIcmpErrorAboutIcmpErrorsOrFragments) {
  const Ipv4Spec icmp_spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_ICMP, .ttl = 1};
  const Bytes unreachable = icmp_error_body(3, 1, Bytes(28, 0));
  const Ipv4Spec fragment{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 1, .frag = 100};
  send(kPod0, ipv4_frame(kGatewayMac, kMacA, icmp_spec, unreachable));
  send(kPod0, ipv4_frame(kGatewayMac, kMacA, fragment, Bytes(16, 0)));
  send(kPod0, ipv4_frame(kGatewayMac, kMacA, icmp_spec, icmp_echo(1, 1, {})));  // an echo is not an error
  poll();
  EXPECT_EQ(drops(DropReason::TtlExceeded), 3u);
  EXPECT_EQ(icmp_errors(IcmpErrorOutcome::NotAllowed), 2u);
  EXPECT_EQ(icmp_errors(IcmpErrorOutcome::Sent), 1u);
  EXPECT_EQ(total_drops(), 3u);
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(icmp_of(out[0]).icmp_type, 11);
  expect_nothing_sent();
}

class RouterRateLimitTest : public RouterTest {
 protected:
  std::string extra_config() const override { return "[dataplane]\nicmp_errors_per_s = 2\n"; }
};

TEST_F(RouterRateLimitTest, ThirdErrorInOneSecondDropped) {
  for (uint16_t id = 1; id <= 3; ++id)
    send(kPod0, ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = kRemotePod, .ttl = 1, .id = id}, udp(1, 2, {})));
  poll();  // one poll: one clock second
  EXPECT_EQ(drops(DropReason::TtlExceeded), 3u);
  EXPECT_EQ(icmp_errors(IcmpErrorOutcome::RateLimited), 1u);
  EXPECT_EQ(icmp_errors(IcmpErrorOutcome::Sent), 2u);
  EXPECT_EQ(total_drops(), 3u);
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 2u);
  // The first two packets got the errors (quoted IP ids 1 and 2).
  EXPECT_EQ(l4_of(out[0])[8 + 5], 1);
  EXPECT_EQ(l4_of(out[1])[8 + 5], 2);
  expect_nothing_sent();
}

// ---- local delivery ---------------------------------------------------------

TEST_F(RouterTest, EchoToGatewayIpAnswered) {
  const Bytes payload(32, 0x61);
  Ipv4Spec spec{.src = kIpA, .dst = kGatewayIp, .proto = IPPROTO_ICMP, .ttl = 64, .id = 0x4242,
                .frag = RTE_IPV4_HDR_DF_FLAG};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, icmp_echo(0x77, 3, payload)));
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  spec.src = kGatewayIp;
  spec.dst = kIpA;
  EXPECT_EQ(out[0], ipv4_frame(kMacA, kGatewayMac, spec, echo_reply(0x77, 3, payload)));
  EXPECT_EQ(rte_ipv4_cksum(&ip_of(out[0])), 0);
  EXPECT_EQ(raw_sum(l4_of(out[0]), 8 + payload.size()), 0xffff);
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(RouterTest, EchoToNodeIpOnUplinkAnswered) {
  Ipv4Spec spec{.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_ICMP, .ttl = 5};
  Bytes request = ipv4_frame(kUplinkMac, kRouterMac, spec, icmp_echo(1, 9, {}));
  request.resize(60, 0);
  send_and_poll(kUp, request);
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  spec.src = kNodeIp;
  spec.dst = kRouterIp;
  spec.ttl = 64;
  EXPECT_EQ(out[0], ipv4_frame(kRouterMac, kUplinkMac, spec, echo_reply(1, 9, {})));
  expect_nothing_sent();
}

TEST_F(RouterTest, EchoToNodeIpFromPodAnsweredThroughGateway) {
  Ipv4Spec spec{.src = kIpA, .dst = kNodeIp, .proto = IPPROTO_ICMP};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, icmp_echo(2, 2, Bytes(8, 8))));
  spec.src = kNodeIp;
  spec.dst = kIpA;
  EXPECT_EQ(sent(kPod0), std::vector<Bytes>{ipv4_frame(kMacA, kGatewayMac, spec, echo_reply(2, 2, Bytes(8, 8)))});
  expect_nothing_sent();
}

TEST_F(RouterTest, UdpToGatewayGetsPortUnreachable) {
  const Bytes original = ipv4({.src = kIpA, .dst = kGatewayIp, .proto = IPPROTO_UDP}, udp(3000, 9999, Bytes(4, 0)));
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV4, original));
  std::vector<Bytes> out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  expect_icmp_error(out[0], kMacA, kGatewayMac, kGatewayIp, kIpA, 3, 3, original);
  EXPECT_EQ(drops(DropReason::LocalUnhandled), 1u);
}

TEST_F(RouterTest, TcpToNodeIpDropped) {
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, {.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_TCP},
                                tcp(5555, 22, {})));
  expect_single_drop(DropReason::LocalUnhandled);
}

// ---- martians -----------------------------------------------------------------

TEST_F(RouterTest, MartianSourcesDropped) {
  for (const char* src : {"127.0.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255"})
    send(kUp, ipv4_frame(kUplinkMac, kRouterMac, {.src = ip(src), .dst = kIpP}, udp(1, 2, {})));
  poll();
  EXPECT_EQ(drops(DropReason::MartianSource), 4u);
  EXPECT_EQ(total_drops(), 4u);
  EXPECT_EQ(ctx->counters.punted.get(), 0u);
  expect_nothing_sent();
}

TEST_F(RouterTest, MartianDestinationsDropped) {
  for (const char* dst : {"127.0.0.1", "0.1.2.3"})
    send(kPod0, ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = ip(dst)}, udp(1, 2, {})));
  poll();
  EXPECT_EQ(drops(DropReason::MartianDestination), 2u);
  EXPECT_EQ(total_drops(), 2u);
  expect_nothing_sent();
}

TEST_F(RouterTest, MulticastDestinationNotRouted) {
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = ip("239.1.1.1")}, udp(1, 2, {})));
  expect_single_drop(DropReason::Consumed);
}

// ---- route snapshots and RCU ------------------------------------------------

TEST_F(RouterTest, OldRouteSnapshotFreedOnlyAfterWorkerQuiescent) {
  const RouteSnapshot* old = tables->routes();
  ASSERT_NE(rte_lpm_find_existing("kdp_rt0"), nullptr);
  std::vector<RouteEntry> routes = tables->routes_from_config();
  routes.push_back({*parse_ipv4_prefix("10.99.0.0/16"), {NextHopKind::Gateway, kUp, from_be(kRouterIp)}});
  tables->publish_routes(std::make_unique<RouteSnapshot>(routes, 100));
  EXPECT_NE(tables->routes(), old);
  EXPECT_EQ(tables->rcu.pending(), 1u);

  // The worker is online and has not passed a quiescent point since.
  EXPECT_EQ(tables->rcu.reclaim(), 0u);
  EXPECT_EQ(tables->rcu.pending(), 1u);
  EXPECT_NE(rte_lpm_find_existing("kdp_rt0"), nullptr) << "freed under a reader";

  tables->rcu.quiescent(0);
  EXPECT_EQ(tables->rcu.reclaim(), 1u);
  EXPECT_EQ(tables->rcu.pending(), 0u);
  EXPECT_EQ(rte_lpm_find_existing("kdp_rt0"), nullptr);

  // The new table routes.
  const Ipv4Spec spec{.src = kIpA, .dst = ip("10.99.3.4"), .proto = IPPROTO_UDP};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, udp(1, 2, {})));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(mac_str(eth_of(out[0]).dst_addr), mac_str(kRouterMac));
  EXPECT_EQ(drops(DropReason::NoRoute), 0u);
}

TEST_F(RouterTest, OfflineWorkerDoesNotDelayReclaim) {
  tables->rcu.offline(0);
  tables->publish_routes(std::make_unique<RouteSnapshot>(tables->routes_from_config(), 100));
  EXPECT_EQ(tables->rcu.pending(), 1u);
  EXPECT_EQ(tables->rcu.reclaim(), 1u);
  EXPECT_EQ(rte_lpm_find_existing("kdp_rt0"), nullptr);
  tables->rcu.online(0);
}

}  // namespace
}  // namespace kdp::test
