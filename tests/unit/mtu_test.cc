// Routed packets over the egress MTU: with DF, RFC 1191's "fragmentation
// needed" carrying the MTU, about the packet as it arrived; without DF,
// fragments that each fit (rte_ipv4_fragment_packet), in order, after NAT.
// Bridged frames are not routed and meet no MTU here.
#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

const rte_ether_addr kMacA = mac("02:00:00:00:01:02");  // pod A on pod0
const be32 kIpA = ip("10.244.1.2");
const be32 kRemotePod = ip("10.244.2.5");  // behind 192.168.50.11

// The ICMP body kdp must send: type 3 code 4, the MTU in bytes 6-7, the quote.
Bytes fragmentation_needed(uint16_t mtu, const Bytes& quoted) {
  Bytes c(8 + quoted.size(), 0);
  c[0] = 3;
  c[1] = 4;
  c[6] = static_cast<uint8_t>(mtu >> 8);
  c[7] = static_cast<uint8_t>(mtu);
  std::copy(quoted.begin(), quoted.end(), c.begin() + 8);
  return c;
}

uint16_t ip_total_length(const Bytes& f) { return rte_be_to_cpu_16(ip_of(f).total_length); }
uint16_t ip_fragment_field(const Bytes& f) { return rte_be_to_cpu_16(ip_of(f).fragment_offset); }

class MtuTest : public DataplaneTest {
 protected:
  unsigned uplink_mtu() const override { return 1400; }
  unsigned pod_mtu() const override { return 1000; }
  std::string extra_config() const override { return "[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"192.168.50.11\"\n"; }
};

TEST_F(MtuTest, DontFragmentOverTheUplinkMtuGetsFragmentationNeeded) {
  const Bytes original = ipv4({.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 64,
                               .frag = RTE_IPV4_HDR_DF_FLAG},
                              udp(40000, 53, Bytes(1401 - 28, 0x42)));
  ASSERT_EQ(original.size(), 1401u);
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV4, original));
  const Bytes quoted(original.begin(), original.begin() + (576 - 28));  // RFC 1812: the error fits 576 bytes
  EXPECT_EQ(sent(kPod0), std::vector<Bytes>{ipv4_frame(kMacA, kGatewayMac,
                                                       {.src = kGatewayIp, .dst = kIpA, .proto = IPPROTO_ICMP,
                                                        .ttl = 64, .id = 0, .tos = 0xc0},
                                                       fragmentation_needed(1400, quoted))});
  expect_nothing_sent();
  EXPECT_EQ(drops(DropReason::FragmentationNeeded), 1u);
  EXPECT_EQ(icmp_errors(IcmpErrorOutcome::Sent), 1u);
}

TEST_F(MtuTest, AtTheMtuPassesWhole) {
  const Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .frag = RTE_IPV4_HDR_DF_FLAG};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, udp(40000, 53, Bytes(1400 - 28, 1))));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ip_total_length(out[0]), 1400);
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(ctx->counters.fragments_made.get(), 0u);
}

TEST_F(MtuTest, WithoutDontFragmentFragmentsThatFitInOrder) {
  Bytes payload(2000 - 28);
  for (size_t k = 0; k < payload.size(); ++k) payload[k] = static_cast<uint8_t>(k * 7);
  const Ipv4Spec spec{.src = kIpA, .dst = kRemotePod, .proto = IPPROTO_UDP, .ttl = 64, .id = 0x7777};
  const Bytes original = ipv4(spec, udp(40000, 53, payload));
  send_and_poll(kPod0, ether(kGatewayMac, kMacA, RTE_ETHER_TYPE_IPV4, original));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 2u);
  Bytes reassembled;
  for (size_t k = 0; k < out.size(); ++k) {
    const Bytes& f = out[k];
    EXPECT_EQ(mac_str(eth_of(f).dst_addr), mac_str(kRouterMac));
    EXPECT_EQ(mac_str(eth_of(f).src_addr), mac_str(kUplinkMac));
    EXPECT_LE(ip_total_length(f), 1400);
    EXPECT_EQ(f.size(), sizeof(rte_ether_hdr) + ip_total_length(f));
    EXPECT_EQ(rte_ipv4_cksum(&ip_of(f)), 0) << "fragment " << k;
    EXPECT_EQ(ip_of(f).time_to_live, 63);
    EXPECT_EQ(rte_be_to_cpu_16(ip_of(f).packet_id), 0x7777);
    const uint16_t field = ip_fragment_field(f);
    EXPECT_EQ((field & RTE_IPV4_HDR_OFFSET_MASK) * 8u, reassembled.size()) << "fragment " << k;
    EXPECT_EQ(bool(field & RTE_IPV4_HDR_MF_FLAG), k + 1 < out.size()) << "fragment " << k;
    if (k + 1 < out.size()) {
      EXPECT_EQ((ip_total_length(f) - 20) % 8, 0) << "a multiple of 8 bytes";
    }
    reassembled.insert(reassembled.end(), f.begin() + sizeof(rte_ether_hdr) + 20, f.end());
  }
  EXPECT_EQ(reassembled, Bytes(original.begin() + 20, original.end()));
  EXPECT_EQ(ctx->counters.fragments_made.get(), 2u);
  EXPECT_EQ(stage(StageId::Fragment), 1u);
  EXPECT_EQ(total_drops(), 0u);
  expect_nothing_sent();
}

// Leaving the cluster: SNAT first (POSTROUTING), then the cut, so every
// fragment carries the node's address and the first the new source port.
TEST_F(MtuTest, MasqueradedThenFragmented) {
  const Ipv4Spec spec{.src = kIpA, .dst = ip("8.8.8.8"), .proto = IPPROTO_UDP, .ttl = 64, .id = 0x1111};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, spec, udp(40000, 53, Bytes(1600, 9))));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 2u);
  for (const Bytes& f : out) EXPECT_EQ(ip_str_raw(ip_of(f).src_addr), ip_str(kNodeIp));
  const uint16_t snat_port = rte_be_to_cpu_16(*reinterpret_cast<const uint16_t*>(l4_of(out[0])));
  EXPECT_GE(snat_port, 32768);
  EXPECT_EQ(stage(StageId::Masquerade), 1u);
  EXPECT_EQ(stage(StageId::Fragment), 1u);
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(MtuTest, IntoTheBridgeTheSmallestPodMtuCounts) {
  const Ipv4Spec spec{.src = kRouterIp, .dst = kIpA, .proto = IPPROTO_TCP, .ttl = 9, .frag = RTE_IPV4_HDR_DF_FLAG};
  const Bytes original = ipv4(spec, tcp(443, 5555, Bytes(1001 - 40, 3)));
  send_and_poll(kUp, ether(kUplinkMac, kRouterMac, RTE_ETHER_TYPE_IPV4, original));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(icmp_of(out[0]).icmp_type, 3);
  EXPECT_EQ(icmp_of(out[0]).icmp_code, 4);
  EXPECT_EQ(rte_be_to_cpu_16(icmp_of(out[0]).icmp_seq_nb), 1000);
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).dst_addr), ip_str(kRouterIp));
  EXPECT_EQ(drops(DropReason::FragmentationNeeded), 1u);
  expect_nothing_sent();
}

}  // namespace
}  // namespace kdp::test
