// NAT rewrites and SNAT port allocation: incremental checksum updates
// checked against a from-scratch computation on random packets, the
// per-worker SNAT range running out for one destination, and a Service
// table past 16-bit frontend ids.
#include <random>

#include "nat/rewrite.h"
#include "nat/service_table.h"
#include "tests/unit/dataplane_fixture.h"

namespace kdp::test {
namespace {

// ---- checksums --------------------------------------------------------------

TEST(NatRewriteTest, IncrementalChecksumsMatchRecomputationOnRandomPackets) {
  std::mt19937 rng(20261124);
  auto u32 = [&] { return static_cast<uint32_t>(rng()); };
  auto u16 = [&] { return static_cast<uint16_t>(rng()); };
  unsigned checked[3] = {};
  for (int n = 0; n < 3000; ++n) {
    const uint8_t proto = std::array<uint8_t, 3>{IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP}[n % 3];
    Bytes payload(rng() % 120);
    for (auto& b : payload) b = static_cast<uint8_t>(rng());
    Bytes l4 = proto == IPPROTO_TCP ? tcp(u16(), u16(), payload)
               : proto == IPPROTO_UDP ? udp(u16(), u16(), payload)
                                      : icmp_echo(u16(), u16(), payload);
    Bytes options(4 * (rng() % 3), 1);  // NOPs
    Bytes packet = ipv4({.src = be32{u32()}, .dst = be32{u32()}, .proto = proto, .ttl = 64, .options = options}, l4);
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(packet.data());
    const unsigned ihl = (ip->version_ihl & 0x0f) * 4u;
    // Any subset of the four fields changes (or keeps its value).
    const be32 src = rng() % 2 ? be32{u32()} : be32{ip->src_addr};
    const be32 dst = rng() % 2 ? be32{u32()} : be32{ip->dst_addr};
    const be16 sport{u16()}, dport{u16()};
    nat_rewrite(ip, ihl, src, sport, dst, dport);

    EXPECT_EQ(rte_ipv4_cksum(ip), 0) << "IPv4 header checksum, packet " << n;
    EXPECT_EQ(ip->src_addr, static_cast<uint32_t>(src));
    EXPECT_EQ(ip->dst_addr, static_cast<uint32_t>(dst));
    uint8_t* l4p = packet.data() + ihl;
    if (proto == IPPROTO_ICMP) {
      EXPECT_EQ(raw_sum(l4p, l4.size()), 0xffff) << "ICMP checksum, packet " << n;
      uint16_t ident;
      std::memcpy(&ident, l4p + 4, 2);
      EXPECT_EQ(ident, static_cast<uint16_t>(sport)) << "an echo request's identifier is its source port";
    } else {
      // From scratch: the stored checksum against one computed over a copy with the field zeroed.
      const unsigned sum_at = proto == IPPROTO_TCP ? 16 : 6;
      uint16_t stored;
      std::memcpy(&stored, l4p + sum_at, 2);
      Bytes copy = packet;
      auto* copy_ip = reinterpret_cast<rte_ipv4_hdr*>(copy.data());
      std::memset(copy.data() + ihl + sum_at, 0, 2);
      uint16_t fresh = rte_ipv4_udptcp_cksum(copy_ip, copy.data() + ihl);
      EXPECT_EQ(stored, fresh) << "L4 checksum, packet " << n;
      uint16_t got_sport, got_dport;
      std::memcpy(&got_sport, l4p, 2);
      std::memcpy(&got_dport, l4p + 2, 2);
      EXPECT_EQ(got_sport, static_cast<uint16_t>(sport));
      EXPECT_EQ(got_dport, static_cast<uint16_t>(dport));
    }
    ++checked[n % 3];
  }
  EXPECT_EQ(checked[0] + checked[1] + checked[2], 3000u);
}

TEST(NatRewriteTest, UdpWithoutChecksumStaysWithout) {
  Bytes packet = ipv4({.src = ip("10.244.1.2"), .dst = ip("10.96.0.10"), .proto = IPPROTO_UDP}, udp(1, 53, {1, 2}));
  auto* iph = reinterpret_cast<rte_ipv4_hdr*>(packet.data());
  auto* u = reinterpret_cast<rte_udp_hdr*>(packet.data() + 20);
  u->dgram_cksum = 0;
  nat_rewrite(iph, 20, ip("10.244.1.2"), to_be16(1), ip("10.244.2.5"), to_be16(8053));
  EXPECT_EQ(u->dgram_cksum, 0);
  EXPECT_EQ(rte_ipv4_cksum(iph), 0);
}

// ---- SNAT port allocation --------------------------------------------------------

class SnatExhaustionTest : public DataplaneTest {
 protected:
  std::string extra_config() const override {
    return "[nat]\nsnat_ports = \"40000-40001\"\n"
           "[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"192.168.50.11\"\n";
  }
};

const rte_ether_addr kPodMac = mac("02:00:00:00:01:02");
const be32 kPodIp = ip("10.244.1.2");

Bytes syn_to(be32 dst, uint16_t sport) {
  Bytes segment = tcp(sport, 443, {});
  segment[13] = 0x02;  // SYN only
  return ipv4_frame(kGatewayMac, kPodMac, {.src = kPodIp, .dst = dst, .proto = IPPROTO_TCP}, segment);
}

uint16_t source_port(const Bytes& frame) {
  return rte_be_to_cpu_16(*reinterpret_cast<const uint16_t*>(l4_of(frame)));
}

TEST_F(SnatExhaustionTest, TwoPortsServeTwoFlowsPerDestination) {
  for (uint16_t sport : {1001, 1002, 1003}) send(kPod0, syn_to(ip("8.8.8.8"), sport));
  poll();
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).src_addr), "192.168.50.10");
  EXPECT_EQ(source_port(out[0]), 40000);
  EXPECT_EQ(source_port(out[1]), 40001);
  EXPECT_EQ(drops(DropReason::SnatPortsExhausted), 1u);
  // Another destination: its reply tuples differ, so the ports serve again.
  send_and_poll(kPod0, syn_to(ip("1.1.1.1"), 1004));
  out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(source_port(out[0]), 40000);
  EXPECT_EQ(tables->conntrack->size(), 3u);
  EXPECT_EQ(tables->conntrack->counters().collisions.load(), 16u) << "the third flow tried both ports 16 times";
}

// Two ClusterIP Services with the one remote endpoint 10.244.2.5:8443.
class SharedBackendTest : public DataplaneTest {
 protected:
  std::string extra_config() const override {
    return "[nat]\nsnat_ports = \"40000-40001\"\n"
           "[[service]]\nname = \"default/a\"\ncluster_ip = \"10.96.0.20\"\n"
           "port = [{ protocol = \"TCP\", port = 443, target_port = 8443 }]\n"
           "endpoint = [{ ip = \"10.244.2.5\", node = \"node-b\" }]\n"
           "[[service]]\nname = \"default/b\"\ncluster_ip = \"10.96.0.21\"\n"
           "port = [{ protocol = \"TCP\", port = 443, target_port = 8443 }]\n"
           "endpoint = [{ ip = \"10.244.2.5\", node = \"node-b\" }]\n";
  }
};

// A client port already reaching the backend through one Service opens a
// connection through the other: the second flow's reply tuple is taken, so
// it leaves with another source port, and the backend's answer to that port
// comes back from the second Service to the client's own port.
TEST_F(SharedBackendTest, ClashingReplyTupleTakesAnotherSourcePort) {
  send_and_poll(kPod0, syn_to(ip("10.96.0.20"), 1001));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).dst_addr), "10.244.2.5");
  EXPECT_EQ(source_port(out[0]), 1001);

  send_and_poll(kPod0, syn_to(ip("10.96.0.21"), 1001));
  out = sent(kUp);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).src_addr), "10.244.1.2") << "the client's address is kept";
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).dst_addr), "10.244.2.5");
  EXPECT_EQ(source_port(out[0]), 40000);
  EXPECT_EQ(total_drops(), 0u);
  EXPECT_EQ(tables->conntrack->size(), 2u);

  // The pod asks for its gateway, so kdp knows where the pod is.
  send_and_poll(kPod0, arp_frame(kBroadcast, kPodMac, RTE_ARP_OP_REQUEST, kPodMac, kPodIp, kZeroMac, kGatewayIp));
  control_poll();
  sent_counts();
  // The backend's SYN-ACK to the new port.
  Bytes syn_ack = tcp(8443, 40000, {});
  syn_ack[13] = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
  syn_ack[11] = 2;  // acknowledges the SYN (sequence number 1)
  send_and_poll(kUp, ipv4_frame(mac("02:00:00:00:0a:01"), mac("02:00:00:00:0b:01"),
                                {.src = ip("10.244.2.5"), .dst = kPodIp, .proto = IPPROTO_TCP}, syn_ack));
  out = sent(kPod0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).src_addr), "10.96.0.21");
  EXPECT_EQ(source_port(out[0]), 443);
  EXPECT_EQ(rte_be_to_cpu_16(*reinterpret_cast<const uint16_t*>(l4_of(out[0]) + 2)), 1001);
}

// ---- many Services ------------------------------------------------------------

// 70,001 ClusterIP Services, one port and one remote endpoint each: more
// frontends than a 16-bit id could name.
class ManyServicesTest : public DataplaneTest {
 protected:
  static constexpr uint32_t kServices = 70001;
  static Ipv4 vip(uint32_t i) { return (Ipv4{10} << 24 | Ipv4{96} << 16) + 1 + i; }
  static Ipv4 endpoint(uint32_t i) { return (Ipv4{10} << 24 | Ipv4{244} << 16 | Ipv4{2} << 8) + 2 + i % 250; }

  // Compiled once for the suite: the node part of the config is the fixture's.
  const CompiledServices& compile_many() const {
    static const CompiledServices compiled = [this] {
      Config many = *config;
      many.services.reserve(kServices);
      for (uint32_t i = 0; i < kServices; ++i) {
        ServiceConfig service;
        service.name = "default/s" + std::to_string(i);
        service.cluster_ip = vip(i);
        service.ports.push_back({.name = "", .protocol = L4Proto::Tcp, .port = 80, .target_port = 8080});
        EndpointConfig ep;
        ep.ip = endpoint(i);
        ep.node = "node-b";
        service.endpoints.push_back(std::move(ep));
        many.services.push_back(std::move(service));
      }
      return compile_services(many);
    }();
    return compiled;
  }
};

TEST_F(ManyServicesTest, SnapshotPastSixteenBitIdsFindsTheLastFrontend) {
  const CompiledServices& compiled = compile_many();
  ASSERT_EQ(compiled.entries.size(), kServices);
  ServiceSnapshot snapshot(compiled, 1000);
  ASSERT_EQ(snapshot.size(), kServices);
  // Entries are sorted by key, so the highest VIP is the last slot.
  const ServiceWireKey keys[] = {{to_be32(vip(kServices - 1)), to_be16(80), IPPROTO_TCP, 0},
                                 {to_be32(vip(70000 - 1)), to_be16(80), IPPROTO_TCP, 0},
                                 {to_be32(vip(kServices)), to_be16(80), IPPROTO_TCP, 0}};
  const ServiceSlot* found[3];
  snapshot.lookup_bulk(keys, 3, found);
  ASSERT_NE(found[0], nullptr);
  EXPECT_EQ(found[0]->id, kServices - 1);
  EXPECT_EQ(found[0]->name, "default/s70000 10.97.17.113:80/TCP");
  ASSERT_NE(found[1], nullptr);
  EXPECT_EQ(found[1]->id, 69999u);
  EXPECT_EQ(found[2], nullptr) << "one past the last VIP";
  EXPECT_EQ(found[0]->next_round_robin(), 0u);
  EXPECT_EQ(found[0]->next_round_robin(), 1u);
}

// An endpoint change among 70,001 frontends: one slot is rebuilt (same id,
// round robin going on), the others are the very same objects, and the
// snapshot it replaced still answers as it did.
TEST_F(ManyServicesTest, SnapshotFromADiffRebuildsOnlyWhatChanged) {
  const CompiledServices& compiled = compile_many();
  ServiceSnapshot first(compiled, 1001);
  const ServiceKey changed_key{vip(42), L4Proto::Tcp, 80};
  const ServiceSlot* before = first.find(changed_key);
  ASSERT_NE(before, nullptr);
  before->next_round_robin();
  ServiceDiff diff;
  ServiceEntry changed = compiled.entries[before->id];
  ASSERT_EQ(changed.key(), changed_key);
  changed.backends = changed.backends_from_pods = {{endpoint(7), 9090, false}};
  diff.changed.push_back(changed);
  ServiceSnapshot second(first, diff, 1002);
  EXPECT_EQ(second.size(), kServices);
  const ServiceSlot* after = second.find(changed_key);
  ASSERT_NE(after, nullptr);
  EXPECT_NE(after, before);
  EXPECT_EQ(after->id, before->id);
  ASSERT_EQ(after->external.backends.size(), 1u);
  EXPECT_EQ(after->external.backends[0].port, to_be16(9090));
  EXPECT_EQ(after->next_round_robin(), 1u) << "round robin goes on where it was";
  EXPECT_EQ(second.find({vip(43), L4Proto::Tcp, 80}), first.find({vip(43), L4Proto::Tcp, 80})) << "shared";
  EXPECT_EQ(first.find(changed_key), before) << "the old snapshot is untouched";
  EXPECT_EQ(before->external.backends[0].port, to_be16(8080));

  // A frontend removed and another added: the added one takes the freed id.
  ServiceDiff swap;
  swap.removed.push_back({vip(5), L4Proto::Tcp, 80});
  ServiceEntry added = compiled.entries[0];
  added.vip = vip(kServices + 10);
  added.service = "default/new";
  swap.added.push_back(added);
  swap.cluster_ips = compiled.cluster_ips;
  swap.cluster_ips->push_back(vip(kServices + 10));
  ServiceSnapshot third(second, swap, 1003);
  EXPECT_EQ(third.size(), kServices);
  EXPECT_EQ(third.find({vip(5), L4Proto::Tcp, 80}), nullptr);
  const ServiceSlot* fresh = third.find(added.key());
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(fresh->id, second.find({vip(5), L4Proto::Tcp, 80})->id);
  EXPECT_EQ(third.slot(fresh->id), fresh);
  EXPECT_TRUE(third.is_cluster_ip(vip(kServices + 10)));
  EXPECT_FALSE(second.is_cluster_ip(vip(kServices + 10)));
  EXPECT_EQ(third.find(changed_key), after);
  // A diff naming a frontend the snapshot lacks is a bug in the caller, refused.
  ServiceDiff bogus;
  bogus.removed.push_back({vip(5), L4Proto::Tcp, 80});
  EXPECT_THROW(ServiceSnapshot(third, bogus, 1004), std::logic_error);
}

TEST_F(ManyServicesTest, FlowToFrontend70000IsTranslatedAndRemembersItsService) {
  tables->publish_services(std::make_unique<ServiceSnapshot>(compile_many(), tables->next_service_generation()));
  // Frontend #70,000 (1-based): slot id 69,999.
  const uint32_t index = 69999;
  Bytes segment = tcp(40000, 80, {});
  segment[13] = 0x02;  // SYN
  send_and_poll(kPod0, ipv4_frame(kGatewayMac, kPodMac,
                                  {.src = kPodIp, .dst = to_be32(vip(index)), .proto = IPPROTO_TCP}, segment));
  std::vector<Bytes> out = sent(kUp);
  ASSERT_EQ(out.size(), 1u) << "drops: " << total_drops();
  EXPECT_EQ(ip_str_raw(ip_of(out[0]).dst_addr), ip_str(to_be32(endpoint(index))));
  EXPECT_EQ(rte_be_to_cpu_16(*reinterpret_cast<const uint16_t*>(l4_of(out[0]) + 2)), 8080);
  // The checksum against one computed from scratch over a copy with the field zeroed.
  Bytes copy = out[0];
  std::memset(copy.data() + (l4_of(out[0]) - out[0].data()) + 16, 0, 2);
  uint16_t stored;
  std::memcpy(&stored, l4_of(out[0]) + 16, 2);
  EXPECT_EQ(stored, rte_ipv4_udptcp_cksum(&ip_of(copy), l4_of(copy))) << "TCP checksum";
  uint32_t service = 0;
  unsigned flows = 0;
  tables->conntrack->for_each([&](const FlowEntry& e) {
    service = e.service;
    ++flows;
  });
  ASSERT_EQ(flows, 1u);
  EXPECT_EQ(service, index);
  ASSERT_NE(tables->services()->slot(service), nullptr);
  EXPECT_EQ(tables->services()->slot(service)->name, "default/s69999 10.97.17.112:80/TCP");
}

}  // namespace
}  // namespace kdp::test
