#include "tests/unit/dataplane_fixture.h"

#include <rte_mbuf.h>

#include <cstring>
#include <stdexcept>

namespace kdp::test {

// ---- addresses -------------------------------------------------------------

rte_ether_addr mac(std::string_view text) {
  auto parsed = parse_mac(text);
  if (!parsed) throw std::invalid_argument("bad MAC in test: " + std::string(text));
  return to_ether(*parsed);
}

be32 ip(std::string_view text) {
  auto parsed = parse_ipv4(text);
  if (!parsed) throw std::invalid_argument("bad IPv4 in test: " + std::string(text));
  return to_be32(*parsed);
}

std::string mac_str(const rte_ether_addr& a) { return from_ether(a).to_string(); }
std::string ip_str(be32 a) { return ipv4_to_string(from_be(a)); }
std::string ip_str_raw(uint32_t network_order) { return ip_str(be32{network_order}); }

const rte_ether_addr kGatewayMac = mac("02:00:0a:f4:01:01");
const rte_ether_addr kUplinkMac = mac("02:00:00:00:0a:01");
const rte_ether_addr kRouterMac = mac("02:00:00:00:0b:01");
const be32 kGatewayIp = ip("10.244.1.1");
const be32 kNodeIp = ip("192.168.50.10");
const be32 kRouterIp = ip("192.168.50.11");
const rte_ether_addr kHostStackMac = mac("02:00:00:00:0c:01");

// ---- frame builders --------------------------------------------------------

namespace {

void put16(Bytes& b, size_t at, uint16_t host) {
  b[at] = static_cast<uint8_t>(host >> 8);
  b[at + 1] = static_cast<uint8_t>(host);
}

void append(Bytes& to, const void* p, size_t len) {
  const auto* bytes = static_cast<const uint8_t*>(p);
  to.insert(to.end(), bytes, bytes + len);
}

}  // namespace

uint16_t raw_sum(const uint8_t* p, size_t len) { return rte_raw_cksum(p, len); }

Bytes ether(const rte_ether_addr& dst, const rte_ether_addr& src, uint16_t ether_type, const Bytes& payload) {
  Bytes f;
  append(f, dst.addr_bytes, 6);
  append(f, src.addr_bytes, 6);
  f.push_back(static_cast<uint8_t>(ether_type >> 8));
  f.push_back(static_cast<uint8_t>(ether_type));
  f.insert(f.end(), payload.begin(), payload.end());
  return f;
}

Bytes arp_frame(const rte_ether_addr& eth_dst, const rte_ether_addr& eth_src, uint16_t op,
                const rte_ether_addr& sha, be32 sip, const rte_ether_addr& tha, be32 tip) {
  rte_arp_hdr arp{};
  arp.arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp.arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  arp.arp_hlen = RTE_ETHER_ADDR_LEN;
  arp.arp_plen = 4;
  arp.arp_opcode = rte_cpu_to_be_16(op);
  arp.arp_data.arp_sha = sha;
  arp.arp_data.arp_sip = static_cast<uint32_t>(sip);
  arp.arp_data.arp_tha = tha;
  arp.arp_data.arp_tip = static_cast<uint32_t>(tip);
  Bytes payload;
  append(payload, &arp, sizeof arp);
  return ether(eth_dst, eth_src, RTE_ETHER_TYPE_ARP, payload);
}

Bytes ipv4(const Ipv4Spec& spec, Bytes l4) {
  const size_t ihl = sizeof(rte_ipv4_hdr) + spec.options.size();
  Bytes p(ihl);
  p[0] = static_cast<uint8_t>(0x40 | (ihl / 4));
  p[1] = spec.tos;
  put16(p, 2, static_cast<uint16_t>(ihl + l4.size()));
  put16(p, 4, spec.id);
  put16(p, 6, spec.frag);
  p[8] = spec.ttl;
  p[9] = spec.proto;
  std::memcpy(&p[12], &spec.src, 4);
  std::memcpy(&p[16], &spec.dst, 4);
  std::copy(spec.options.begin(), spec.options.end(), p.begin() + 20);
  const bool first_fragment = (spec.frag & RTE_IPV4_HDR_OFFSET_MASK) == 0;
  p.insert(p.end(), l4.begin(), l4.end());
  auto* hdr = reinterpret_cast<rte_ipv4_hdr*>(p.data());
  uint8_t* l4p = p.data() + ihl;
  if (first_fragment && (spec.frag & RTE_IPV4_HDR_MF_FLAG) == 0) {
    if (spec.proto == IPPROTO_UDP && l4.size() >= sizeof(rte_udp_hdr)) {
      reinterpret_cast<rte_udp_hdr*>(l4p)->dgram_cksum = rte_ipv4_udptcp_cksum(hdr, l4p);
    } else if (spec.proto == IPPROTO_TCP && l4.size() >= sizeof(rte_tcp_hdr)) {
      reinterpret_cast<rte_tcp_hdr*>(l4p)->cksum = rte_ipv4_udptcp_cksum(hdr, l4p);
    } else if (spec.proto == IPPROTO_ICMP && l4.size() >= sizeof(rte_icmp_hdr)) {
      reinterpret_cast<rte_icmp_hdr*>(l4p)->icmp_cksum = static_cast<uint16_t>(~rte_raw_cksum(l4p, l4.size()));
    }
  }
  hdr->hdr_checksum = 0;
  hdr->hdr_checksum = rte_ipv4_cksum(hdr);
  return p;
}

Bytes ipv4_frame(const rte_ether_addr& dst, const rte_ether_addr& src, const Ipv4Spec& spec, const Bytes& l4) {
  return ether(dst, src, RTE_ETHER_TYPE_IPV4, ipv4(spec, l4));
}

Bytes udp(uint16_t sport, uint16_t dport, const Bytes& payload) {
  Bytes u(sizeof(rte_udp_hdr));
  put16(u, 0, sport);
  put16(u, 2, dport);
  put16(u, 4, static_cast<uint16_t>(sizeof(rte_udp_hdr) + payload.size()));
  u.insert(u.end(), payload.begin(), payload.end());
  return u;
}

Bytes tcp(uint16_t sport, uint16_t dport, const Bytes& payload, uint8_t data_off_words) {
  Bytes t(sizeof(rte_tcp_hdr));
  put16(t, 0, sport);
  put16(t, 2, dport);
  t[4] = 0, t[5] = 0, t[6] = 0, t[7] = 1;  // seq
  t[12] = static_cast<uint8_t>(data_off_words << 4);
  t[13] = RTE_TCP_SYN_FLAG;
  put16(t, 14, 65535);
  t.insert(t.end(), payload.begin(), payload.end());
  return t;
}

Bytes icmp_echo(uint16_t ident, uint16_t seq, const Bytes& payload) {
  Bytes c(sizeof(rte_icmp_hdr));
  c[0] = RTE_IP_ICMP_ECHO_REQUEST;
  c[1] = 0;
  put16(c, 4, ident);
  put16(c, 6, seq);
  c.insert(c.end(), payload.begin(), payload.end());
  return c;
}

// ---- the process-wide DPDK environment ---------------------------------------

namespace {

DpdkPorts g_dpdk;

class DpdkEnvironment final : public ::testing::Environment {
 public:
  void SetUp() override {
    init_test_eal("dataplane_test");
    g_dpdk = create_ring_ports("unit", kPortCount);
  }

  void TearDown() override {
    destroy_ring_ports(g_dpdk);
    cleanup_test_eal();
  }
};

[[maybe_unused]] ::testing::Environment* const g_environment =
    ::testing::AddGlobalTestEnvironment(new DpdkEnvironment);

constexpr std::string_view kBaseConfig = R"([node]
name = "node-a"
node_ip = "192.168.50.10"
pod_cidr = "10.244.1.0/24"
cluster_cidr = "10.244.0.0/16"

[workers]
lcores = [1]

[conntrack]
max_flows = 4096

[[port]]
name = "up0"
role = "uplink"
device = "net_ring_up0"
mac = "02:00:00:00:0a:01"

[[port]]
name = "pod0"
role = "pod"
device = "net_ring_pod0"

[[port]]
name = "pod1"
role = "pod"
device = "net_ring_pod1"

[[port]]
name = "pod2"
role = "pod"
device = "net_ring_pod2"

[[route]]
prefix = "10.244.2.0/24"
via = "192.168.50.11"
port = "up0"

[[neighbor]]
ip = "192.168.50.11"
mac = "02:00:00:00:0b:01"
port = "up0"
)";

}  // namespace

const DpdkPorts& dpdk() { return g_dpdk; }

// ---- the fixture -------------------------------------------------------------

void DataplaneTest::SetUp() {
  pool = g_dpdk.pool;
  ASSERT_NE(pool, nullptr);
  for (unsigned i = 0; i < kPortCount; ++i) {
    drain_ring(g_dpdk.rx[i]);
    drain_ring(g_dpdk.tx[i]);
  }
  pool_avail_at_start = rte_mempool_avail_count(pool);

  std::string text(kBaseConfig);
  const std::string default_node_ip = "node_ip = \"192.168.50.10\"";
  text.replace(text.find(default_node_ip), default_node_ip.size(), "node_ip = \"" + node_ip_text() + "\"");
  if (pod2_is_host()) {
    const std::string pod2 = "role = \"pod\"\ndevice = \"net_ring_pod2\"";
    text.replace(text.find(pod2), pod2.size(),
                 "role = \"host\"\ndevice = \"net_ring_pod2\"\nmac = \"" + mac_str(kHostStackMac) + "\"");
  }
  auto set_mtu = [&](const std::string& device, unsigned mtu) {
    const std::string line = "device = \"" + device + "\"";
    if (mtu != 0) text.replace(text.find(line), line.size(), line + "\nmtu = " + std::to_string(mtu));
  };
  set_mtu("net_ring_up0", uplink_mtu());
  for (const char* pod : {"net_ring_pod0", "net_ring_pod1", "net_ring_pod2"}) set_mtu(pod, pod_mtu());
  config = std::make_unique<Config>(parse_config(text + extra_config(), "test.toml"));
  tables = std::make_unique<NodeTables>(*config, ring_port_infos(*config, g_dpdk), 1);
  channels = std::make_unique<WorkerChannels>(0, 1024);
  ctx = std::make_unique<WorkerContext>(0, 0, *tables, *channels);
  ctx->pool = pool;
  pipeline = std::make_unique<Pipeline>(*ctx);
  control = std::make_unique<Control>(*tables, std::vector<WorkerChannels*>{channels.get()}, pool);
  control->install_static_neighbors();
  tables->rcu.register_worker(0);
  tables->rcu.online(0);
}

void DataplaneTest::TearDown() {
  if (tables) {
    tables->rcu.quiescent(0);
    tables->rcu.offline(0);
  }
  control.reset();   // frees held packets
  pipeline.reset();
  ctx.reset();
  channels.reset();  // frees punted and injected packets
  tables.reset();
  config.reset();
  for (unsigned i = 0; i < kPortCount; ++i) {
    drain_ring(g_dpdk.rx[i]);
    drain_ring(g_dpdk.tx[i]);
  }
  EXPECT_EQ(rte_mempool_avail_count(pool), pool_avail_at_start) << "mbufs leaked";
}

void DataplaneTest::send(uint16_t port, const Bytes& frame, unsigned chain_tail) {
  ASSERT_LT(port, kPortCount);
  ASSERT_LE(chain_tail, frame.size());
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  ASSERT_NE(m, nullptr);
  const size_t head_len = frame.size() - chain_tail;
  auto* head = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(head_len)));
  ASSERT_NE(head, nullptr);
  std::memcpy(head, frame.data(), head_len);
  if (chain_tail != 0) {
    rte_mbuf* tail = rte_pktmbuf_alloc(pool);
    ASSERT_NE(tail, nullptr);
    std::memcpy(rte_pktmbuf_append(tail, static_cast<uint16_t>(chain_tail)), frame.data() + head_len, chain_tail);
    ASSERT_EQ(rte_pktmbuf_chain(m, tail), 0);
  }
  ASSERT_EQ(rte_ring_sp_enqueue(g_dpdk.rx[port], m), 0);
}

unsigned DataplaneTest::poll() {
  unsigned n = poll_once(*ctx, *pipeline);
  tables->rcu.quiescent(0);
  return n;
}

std::vector<Bytes> DataplaneTest::sent(uint16_t port) {
  std::vector<Bytes> frames;
  void* obj;
  while (rte_ring_sc_dequeue(g_dpdk.tx[port], &obj) == 0) {
    auto* m = static_cast<rte_mbuf*>(obj);
    EXPECT_EQ(m->nb_segs, 1);
    Bytes f(rte_pktmbuf_pkt_len(m));
    const void* data = rte_pktmbuf_read(m, 0, static_cast<uint32_t>(f.size()), f.data());
    if (data != nullptr && data != f.data()) std::memcpy(f.data(), data, f.size());
    frames.push_back(std::move(f));
    rte_pktmbuf_free(m);
  }
  return frames;
}

std::vector<size_t> DataplaneTest::sent_counts() {
  std::vector<size_t> counts;
  for (uint16_t p = 0; p < kPortCount; ++p) counts.push_back(sent(p).size());
  return counts;
}

void DataplaneTest::expect_nothing_sent() { EXPECT_EQ(sent_counts(), (std::vector<size_t>{0, 0, 0, 0})); }

uint64_t DataplaneTest::total_drops() const {
  uint64_t sum = 0;
  for (const auto& c : ctx->counters.drops) sum += c.get();
  return sum;
}

void DataplaneTest::expect_single_drop(DropReason reason) {
  EXPECT_EQ(drops(reason), 1u) << drop_reason_name(reason);
  EXPECT_EQ(total_drops(), 1u);
  EXPECT_EQ(stage(StageId::Drop), 1u);
  EXPECT_EQ(stage(StageId::Output), 0u);
  for (uint16_t p = 0; p < kPortCount; ++p) EXPECT_EQ(tx(p), 0u) << "port " << p;
  expect_nothing_sent();
}

}  // namespace kdp::test
