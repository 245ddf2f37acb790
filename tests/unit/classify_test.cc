// Classify: every malformed-input drop reason, what it lets through
// (IP options, Ethernet padding, fragments, stripped VLAN tags) and the
// uplink's "is this frame for the router" filter.
#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

const rte_ether_addr kMacA = mac("02:00:00:00:01:02");  // a pod on pod0
const rte_ether_addr kMacB = mac("02:00:00:00:01:03");
const be32 kIpA = ip("10.244.1.2");
const be32 kRemotePod = ip("10.244.2.5");  // behind 192.168.50.11

constexpr size_t kEth = sizeof(rte_ether_hdr);

// A UDP datagram from pod A, via the gateway, to a pod on another node.
Bytes routed_udp(const Bytes& payload = Bytes(10, 0xab)) {
  return ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP},
                    udp(1000, 2000, payload));
}

// Recomputes the IPv4 header checksum after a test edited the header.
void fix_ip_checksum(Bytes& f) {
  auto* hdr = reinterpret_cast<rte_ipv4_hdr*>(f.data() + kEth);
  hdr->hdr_checksum = 0;
  hdr->hdr_checksum = rte_ipv4_cksum(hdr);
}

void set_total_length(Bytes& f, uint16_t total) {
  reinterpret_cast<rte_ipv4_hdr*>(f.data() + kEth)->total_length = rte_cpu_to_be_16(total);
  fix_ip_checksum(f);
}

// An 802.1Q tag (VLAN 100) inserted after the MAC addresses.
Bytes tagged(const Bytes& untagged, uint16_t tpid = RTE_ETHER_TYPE_VLAN) {
  Bytes f(untagged.begin(), untagged.begin() + 12);
  f.push_back(static_cast<uint8_t>(tpid >> 8));
  f.push_back(static_cast<uint8_t>(tpid));
  f.push_back(0x00);
  f.push_back(100);
  f.insert(f.end(), untagged.begin() + 12, untagged.end());
  return f;
}

class ClassifyTest : public DataplaneTest {
 protected:
  // Sends one frame and expects Classify itself to drop it for `reason`.
  void expect_classify_drop(uint16_t port, const Bytes& frame, DropReason reason) {
    send_and_poll(port, frame);
    EXPECT_EQ(rx(port), 1u);
    EXPECT_EQ(stage(StageId::Classify), 1u);
    EXPECT_EQ(stage(StageId::Bridge), 0u);
    EXPECT_EQ(stage(StageId::Arp), 0u);
    EXPECT_EQ(stage(StageId::Router), 0u);
    EXPECT_EQ(ctx->counters.learn_events.get(), 0u) << "a dropped frame must not teach the FDB";
    expect_single_drop(reason);
  }

  // Sends one frame from pod0 and expects it routed to up0; returns it.
  Bytes expect_routed(const Bytes& frame) {
    send_and_poll(kPod0, frame);
    EXPECT_EQ(total_drops(), 0u);
    EXPECT_EQ(stage(StageId::Router), 1u);
    std::vector<Bytes> out = sent(kUp);
    EXPECT_EQ(out.size(), 1u);
    EXPECT_EQ(sent_counts(), (std::vector<size_t>{0, 0, 0, 0}));
    return out.empty() ? Bytes{} : out[0];
  }
};

// ---- drops ------------------------------------------------------------------

TEST_F(ClassifyTest, RuntFrameDropped) {
  expect_classify_drop(kPod0, Bytes(13, 0x02), DropReason::Runt);
}

TEST_F(ClassifyTest, MultiSegmentMbufDropped) {
  // A valid frame whose last 20 bytes sit in a second, chained mbuf.
  send(kPod0, routed_udp(), 20);
  poll();
  EXPECT_EQ(stage(StageId::Bridge), 0u);
  expect_single_drop(DropReason::MultiSegment);
}

TEST_F(ClassifyTest, VlanTaggedDroppedByDefaultPolicy) {
  expect_classify_drop(kPod0, tagged(routed_udp()), DropReason::VlanTagged);
}

TEST_F(ClassifyTest, QinQTaggedDropped) {
  expect_classify_drop(kPod0, tagged(routed_udp(), RTE_ETHER_TYPE_QINQ), DropReason::VlanTagged);
}

TEST_F(ClassifyTest, MulticastSourceMacDropped) {
  Bytes f = ether(kBroadcast, mac("01:00:5e:00:00:01"), RTE_ETHER_TYPE_IPV4, Bytes(46, 0));
  expect_classify_drop(kPod0, f, DropReason::SrcMacMulticast);
}

TEST_F(ClassifyTest, Ipv4ShorterThanHeaderDropped) {
  Bytes f = routed_udp();
  f.resize(kEth + 19);
  expect_classify_drop(kPod0, f, DropReason::Ipv4TooShort);
}

TEST_F(ClassifyTest, Ipv4BadVersionDropped) {
  Bytes f = routed_udp();
  f[kEth] = 0x65;  // version 6, IHL 5, under EtherType IPv4
  fix_ip_checksum(f);
  expect_classify_drop(kPod0, f, DropReason::Ipv4BadVersion);
}

TEST_F(ClassifyTest, Ipv4IhlBelowFiveDropped) {
  Bytes f = routed_udp();
  f[kEth] = 0x44;  // 16-byte header
  expect_classify_drop(kPod0, f, DropReason::Ipv4BadIhl);
}

TEST_F(ClassifyTest, Ipv4IhlBeyondFrameDropped) {
  Bytes f = ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = kRemotePod, .proto = 253}, Bytes(20, 0));
  f[kEth] = 0x4f;  // 60-byte header in a 40-byte datagram
  expect_classify_drop(kPod0, f, DropReason::Ipv4BadIhl);
}

TEST_F(ClassifyTest, Ipv4TotalLengthBeyondFrameDropped) {
  Bytes f = routed_udp();
  set_total_length(f, static_cast<uint16_t>(f.size() - kEth + 1));
  expect_classify_drop(kPod0, f, DropReason::Ipv4BadTotalLength);
}

TEST_F(ClassifyTest, Ipv4TotalLengthBelowHeaderDropped) {
  Bytes f = routed_udp();
  set_total_length(f, 19);
  expect_classify_drop(kPod0, f, DropReason::Ipv4BadTotalLength);
}

TEST_F(ClassifyTest, Ipv4BadChecksumDropped) {
  Bytes f = routed_udp();
  f[kEth + 10] ^= 0x01;
  expect_classify_drop(kPod0, f, DropReason::Ipv4BadChecksum);
}

TEST_F(ClassifyTest, TcpDataOffsetBelowFiveDropped) {
  Bytes f = ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_TCP},
                       tcp(1000, 80, Bytes(8, 0), 4));
  expect_classify_drop(kPod0, f, DropReason::TcpBadDataOffset);
}

TEST_F(ClassifyTest, TcpDataOffsetBeyondSegmentDropped) {
  // Data offset 15 (60 bytes) in a 28-byte segment.
  Bytes f = ipv4_frame(kGatewayMac, kMacA, {.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_TCP},
                       tcp(1000, 80, Bytes(8, 0), 15));
  expect_classify_drop(kPod0, f, DropReason::TcpBadDataOffset);
}

TEST_F(ClassifyTest, UdpLengthBeyondDatagramDropped) {
  Bytes f = routed_udp();  // UDP length 18 in an 18-byte payload
  f[kEth + 20 + 5] = 19;
  expect_classify_drop(kPod0, f, DropReason::UdpBadLength);
}

TEST_F(ClassifyTest, UdpLengthBelowHeaderDropped) {
  Bytes f = routed_udp();
  f[kEth + 20 + 4] = 0;
  f[kEth + 20 + 5] = 7;
  expect_classify_drop(kPod0, f, DropReason::UdpBadLength);
}

TEST_F(ClassifyTest, TruncatedL4HeadersDropped) {
  const Ipv4Spec tcp_spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_TCP};
  const Ipv4Spec udp_spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP};
  const Ipv4Spec icmp_spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_ICMP};
  send(kPod0, ipv4_frame(kGatewayMac, kMacA, tcp_spec, Bytes(19, 0)));
  send(kPod0, ipv4_frame(kGatewayMac, kMacA, udp_spec, Bytes(7, 0)));
  send(kPod0, ipv4_frame(kGatewayMac, kMacA, icmp_spec, Bytes(7, 0)));
  poll();
  EXPECT_EQ(rx(kPod0), 3u);
  EXPECT_EQ(drops(DropReason::L4Truncated), 3u);
  EXPECT_EQ(total_drops(), 3u);
  EXPECT_EQ(stage(StageId::Bridge), 0u);
  expect_nothing_sent();
}

TEST_F(ClassifyTest, ArpShorterThanHeaderDropped) {
  Bytes f = arp_frame(kBroadcast, kMacA, RTE_ARP_OP_REQUEST, kMacA, kIpA, kZeroMac, kGatewayIp);
  f.resize(f.size() - 1);
  expect_classify_drop(kPod0, f, DropReason::ArpMalformed);
}

TEST_F(ClassifyTest, UplinkFrameForAnotherMacDropped) {
  Bytes f = ipv4_frame(mac("02:00:00:00:0a:99"), kRouterMac, {.src = kRemotePod, .dst = ip("10.244.1.7")},
                       udp(1, 2, {}));
  expect_classify_drop(kUp, f, DropReason::NotForUs);
}

TEST_F(ClassifyTest, UplinkIpv4MulticastFrameDropped) {
  Bytes f = ipv4_frame(mac("01:00:5e:00:00:05"), kRouterMac, {.src = kRouterIp, .dst = ip("224.0.0.5")},
                       udp(1, 2, {}));
  expect_classify_drop(kUp, f, DropReason::NotForUs);
}

TEST_F(ClassifyTest, UplinkIpv6Dropped) {
  Bytes f = ether(kUplinkMac, kRouterMac, RTE_ETHER_TYPE_IPV6, Bytes(40, 0));
  expect_classify_drop(kUp, f, DropReason::UnsupportedEtherType);
}

TEST_F(ClassifyTest, PodIpv6ToGatewayMacDroppedByBridge) {
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV6, Bytes(40, 0)));
  EXPECT_EQ(stage(StageId::Bridge), 1u);
  expect_single_drop(DropReason::UnsupportedEtherType);
}

// ---- accepted ---------------------------------------------------------------

TEST_F(ClassifyTest, Ipv4OptionsAccepted) {
  // IHL 6: NOP, NOP, NOP, end of list; the TCP header starts after them.
  Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_TCP, .options = {1, 1, 1, 0}};
  Bytes out = expect_routed(ipv4_frame(kGatewayMac, kMacA, spec, tcp(1000, 80, Bytes(4, 0x55))));
  spec.ttl = 63;
  EXPECT_EQ(out, ipv4_frame(kRouterMac, kUplinkMac, spec, tcp(1000, 80, Bytes(4, 0x55))));
}

TEST_F(ClassifyTest, EthernetPaddingAcceptedAndTrimmedWhenRouted) {
  Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_ICMP};
  Bytes f = ipv4_frame(kGatewayMac, kMacA, spec, icmp_echo(7, 1, {}));
  ASSERT_EQ(f.size(), 42u);
  f.resize(60, 0);  // minimum frame: 18 bytes past total length
  Bytes out = expect_routed(f);
  spec.ttl = 63;
  EXPECT_EQ(out, ipv4_frame(kRouterMac, kUplinkMac, spec, icmp_echo(7, 1, {})));
}

TEST_F(ClassifyTest, EthernetPaddingKeptWhenBridged) {
  Bytes f = ipv4_frame(kBroadcast, kMacA, {.src = kIpA, .dst = ip("10.244.1.255")}, udp(68, 67, {}));
  f.resize(60, 0);
  send_and_poll(kPod0, f);
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{f});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{f});
  expect_nothing_sent();
}

TEST_F(ClassifyTest, NonFirstFragmentSkipsL4Checks) {
  // Offset 1480: three bytes of UDP payload would be a truncated header in
  // a first fragment.
  Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .frag = 185};
  Bytes out = expect_routed(ipv4_frame(kGatewayMac, kMacA, spec, Bytes{1, 2, 3}));
  spec.ttl = 63;
  EXPECT_EQ(out, ipv4_frame(kRouterMac, kUplinkMac, spec, Bytes{1, 2, 3}));
}

TEST_F(ClassifyTest, FirstFragmentUdpLengthCoversWholeDatagram) {
  // More fragments: the UDP length (1008) counts bytes still to come.
  Bytes l4 = udp(1000, 2000, Bytes(16, 0x11));
  l4[4] = 0x03, l4[5] = 0xf0;
  Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .frag = RTE_IPV4_HDR_MF_FLAG};
  Bytes out = expect_routed(ipv4_frame(kGatewayMac, kMacA, spec, l4));
  spec.ttl = 63;
  EXPECT_EQ(out, ipv4_frame(kRouterMac, kUplinkMac, spec, l4));
}

class ClassifyVlanStripTest : public ClassifyTest {
 protected:
  std::string extra_config() const override { return "[dataplane]\nvlan = \"strip\"\n"; }
};

TEST_F(ClassifyVlanStripTest, TaggedFrameForwardedUntagged) {
  const Bytes untagged =
      ipv4_frame(kBroadcast, kMacA, {.src = kIpA, .dst = ip("10.244.1.255")}, udp(5, 6, Bytes(30, 9)));
  send_and_poll(kPod0, tagged(untagged));
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(sent(kPod1), std::vector<Bytes>{untagged});
  EXPECT_EQ(sent(kPod2), std::vector<Bytes>{untagged});
  expect_nothing_sent();
}

TEST_F(ClassifyVlanStripTest, TaggedFrameRoutedUntagged) {
  Bytes out = expect_routed(tagged(routed_udp()));
  Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 63};
  EXPECT_EQ(out, ipv4_frame(kRouterMac, kUplinkMac, spec, udp(1000, 2000, Bytes(10, 0xab))));
}

TEST_F(ClassifyVlanStripTest, StackedTagsStillDropped) {
  expect_classify_drop(kPod0, tagged(tagged(routed_udp())), DropReason::VlanTagged);
}

TEST_F(ClassifyVlanStripTest, QinQStillDropped) {
  expect_classify_drop(kPod0, tagged(routed_udp(), RTE_ETHER_TYPE_QINQ), DropReason::VlanTagged);
}

}  // namespace
}  // namespace kdp::test
