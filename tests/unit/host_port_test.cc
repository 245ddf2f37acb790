// The host port (role "host"): the node's own stack behind kdp. kdp answers
// its ARP for every address but node_ip, routes what it sends without
// counting a hop, and hands it node_ip's traffic that kdp itself does not
// take (pings stay kdp's).
#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

constexpr uint16_t kHost = kPod2;
const rte_ether_addr kMacA = mac("02:00:00:00:01:02");  // pod A on pod0
const be32 kIpA = ip("10.244.1.2");
const be32 kClusterIp = ip("10.96.0.20");
const be32 kBackend = ip("10.244.2.5");  // behind 192.168.50.11

class HostPortTest : public DataplaneTest {
 protected:
  bool pod2_is_host() const override { return true; }
  std::string extra_config() const override {
    return "[nat]\nsnat_ports = \"40000-40099\"\n"
           "[[service]]\nname = \"default/a\"\ncluster_ip = \"10.96.0.20\"\n"
           "port = [{ protocol = \"TCP\", port = 443, target_port = 8443 }]\n"
           "endpoint = [{ ip = \"10.244.2.5\", node = \"node-b\" }]\n";
  }
};

uint16_t source_port(const Bytes& frame) { return rte_be_to_cpu_16(*reinterpret_cast<const uint16_t*>(l4_of(frame))); }

TEST_F(HostPortTest, ArpFromTheStackAnsweredForEveryAddressButItsOwn) {
  for (be32 target : {kRouterIp, kIpA, ip("8.8.8.8")}) {
    send_and_poll(kHost, arp_frame(kBroadcast, kHostStackMac, RTE_ARP_OP_REQUEST, kHostStackMac, kNodeIp, kZeroMac,
                                   target));
    EXPECT_EQ(sent(kHost), std::vector<Bytes>{arp_frame(kHostStackMac, kGatewayMac, RTE_ARP_OP_REPLY, kGatewayMac,
                                                         target, kHostStackMac, kNodeIp)})
        << ip_str(target);
  }
  // Its own address (a duplicate address probe) is nobody's to answer.
  send_and_poll(kHost, arp_frame(kBroadcast, kHostStackMac, RTE_ARP_OP_REQUEST, kHostStackMac, be32{0}, kZeroMac,
                                 kNodeIp));
  expect_nothing_sent();
  EXPECT_EQ(neighbor(kNodeIp), nullptr) << "the stack is no neighbour entry";
}

TEST_F(HostPortTest, TcpAndUdpToNodeIpReachTheStackUnchanged) {
  const Ipv4Spec tcp_spec{.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_TCP, .ttl = 7};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, tcp_spec, tcp(5555, 22, {})));
  EXPECT_EQ(sent(kHost), std::vector<Bytes>{ipv4_frame(kHostStackMac, kGatewayMac, tcp_spec, tcp(5555, 22, {}))});
  const Ipv4Spec udp_spec{.src = kIpA, .dst = kNodeIp, .proto = IPPROTO_UDP};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, udp_spec, udp(4000, 10250, Bytes(6, 1))));
  EXPECT_EQ(sent(kHost), std::vector<Bytes>{ipv4_frame(kHostStackMac, kGatewayMac, udp_spec,
                                                       udp(4000, 10250, Bytes(6, 1)))});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
}

TEST_F(HostPortTest, FragmentsAndIcmpErrorsToNodeIpReachTheStack) {
  const Ipv4Spec later{.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_UDP, .frag = 100};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, later, Bytes(16, 0)));
  EXPECT_EQ(sent(kHost).size(), 1u);
  const Ipv4Spec ping_first{.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_ICMP, .frag = RTE_IPV4_HDR_MF_FLAG};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, ping_first, icmp_echo(1, 1, Bytes(16, 0))));
  EXPECT_EQ(sent(kHost).size(), 1u) << "kdp does not reassemble: the stack does";
  // An error about the stack's own connection (no flow of kdp's).
  Bytes unreachable(8 + 28, 0);
  unreachable[0] = 3;
  unreachable[1] = 3;
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, {.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_ICMP},
                                unreachable));
  EXPECT_EQ(sent(kHost).size(), 1u);
  expect_nothing_sent();
}

TEST_F(HostPortTest, PingsToNodeIpStayKdps) {
  const Ipv4Spec spec{.src = kRouterIp, .dst = kNodeIp, .proto = IPPROTO_ICMP};
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, spec, icmp_echo(1, 9, {})));
  EXPECT_EQ(sent(kUp).size(), 1u);
  expect_nothing_sent();
}

TEST_F(HostPortTest, StackTrafficIsRoutedWithoutAHop) {
  // TTL 1 leaves as it came: the node's own packet is on its first hop.
  const Ipv4Spec spec{.src = kNodeIp, .dst = ip("10.244.2.9"), .proto = IPPROTO_UDP, .ttl = 1};
  send_and_poll(kHost, ipv4_frame(kGatewayMac, kHostStackMac, spec, udp(40, 50, {})));
  EXPECT_EQ(sent(kUp), std::vector<Bytes>{ipv4_frame(kRouterMac, kUplinkMac, spec, udp(40, 50, {}))});
  expect_nothing_sent();
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(icmp_errors(IcmpErrorOutcome::Sent), 0u);
}

TEST_F(HostPortTest, StackToClusterIpAndTheAnswerBack) {
  Bytes syn = tcp(50123, 443, {});
  send_and_poll(kHost, ipv4_frame(kGatewayMac, kHostStackMac, {.src = kNodeIp, .dst = kClusterIp,
                                                               .proto = IPPROTO_TCP}, syn));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).dst_addr), ip_str(kBackend));
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).src_addr), ip_str(kNodeIp));
  const uint16_t client_port = source_port(out[0]);
  Bytes syn_ack = tcp(8443, client_port, {});
  syn_ack[13] = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
  send_and_poll(kUp, ipv4_frame(kUplinkMac, kRouterMac, {.src = kBackend, .dst = kNodeIp, .proto = IPPROTO_TCP},
                                syn_ack));
  out = sent(kHost);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(mac_str(eth_of(out[0]).dst_addr), mac_str(kHostStackMac));
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).src_addr), ip_str(kClusterIp));
  EXPECT_EQ(source_port(out[0]), 443);
  EXPECT_EQ(rte_be_to_cpu_16(*reinterpret_cast<const uint16_t*>(l4_of(out[0]) + 2)), 50123);
  expect_nothing_sent();
}

TEST_F(HostPortTest, PodToStackAndBack) {
  const Ipv4Spec to_stack{.src = kIpA, .dst = kNodeIp, .proto = IPPROTO_TCP};
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kMacA, to_stack, tcp(3333, 10250, {})));
  EXPECT_EQ(sent(kHost).size(), 1u);
  // The answer goes to the pod A the bridge learned, TTL untouched.
  Bytes answer = tcp(10250, 3333, {});
  answer[13] = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
  const Ipv4Spec back{.src = kNodeIp, .dst = kIpA, .proto = IPPROTO_TCP, .ttl = 64};
  send_and_poll(kHost, ipv4_frame(kGatewayMac, kHostStackMac, back, answer));
  control_poll();  // resolves pod A (ARP on the bridge) if it had to
  poll();
  std::vector<Bytes> out = sent(kPod0);
  std::erase_if(out, [](const Bytes& f) { return ether_type_of(f) == RTE_ETHER_TYPE_ARP; });
  if (out.empty()) {
    // Unresolved: answer the gateway's ARP request, then the held packet goes.
    send_and_poll(kPod0, arp_frame(kGatewayMac, kMacA, RTE_ARP_OP_REPLY, kMacA, kIpA, kGatewayMac, kGatewayIp));
    control_poll();
    poll();
    out = sent(kPod0);
  }
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], ipv4_frame(kMacA, kGatewayMac, back, answer));
  sent_counts();
}

}  // namespace
}  // namespace kdp::test
