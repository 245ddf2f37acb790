// Test harness for the dataplane stages: a real EAL (no hugepages, one
// lcore), an mbuf pool with kdp's private area, and four ring-backed ethdev
// ports (net_ring) standing in for up0, pod0, pod1 and pod2. The test thread
// plays the worker (poll_once) and the control thread (Control::poll).
//
// NodeTables and WorkerChannels use fixed DPDK object names, so each test
// builds its own set in SetUp and destroys it in TearDown, which also checks
// that every mbuf went back to the pool.
#pragma once

#include <gtest/gtest.h>
#include <rte_arp.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ctrl/config.h"
#include "dataplane/control.h"
#include "dataplane/pipeline.h"
#include "dataplane/tables.h"
#include "dataplane/worker.h"
#include "tests/lib/ring_ports.h"

namespace kdp::test {

using Bytes = std::vector<uint8_t>;

// kdp port indexes, in the order of the test config's [[port]] tables.
inline constexpr uint16_t kUp = 0;
inline constexpr uint16_t kPod0 = 1;
inline constexpr uint16_t kPod1 = 2;
inline constexpr uint16_t kPod2 = 3;
inline constexpr unsigned kPortCount = 4;

// ---- addresses -------------------------------------------------------------

rte_ether_addr mac(std::string_view text);
be32 ip(std::string_view text);
std::string mac_str(const rte_ether_addr& a);
std::string ip_str(be32 a);
std::string ip_str_raw(uint32_t network_order);

inline const rte_ether_addr kBroadcast = {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
inline const rte_ether_addr kZeroMac = {{0, 0, 0, 0, 0, 0}};

// The node of the test config.
extern const rte_ether_addr kGatewayMac;  // 02:00:0a:f4:01:01
extern const rte_ether_addr kUplinkMac;   // 02:00:00:00:0a:01
extern const rte_ether_addr kRouterMac;   // 02:00:00:00:0b:01, static neighbour 192.168.50.11
extern const be32 kGatewayIp;             // 10.244.1.1
extern const be32 kNodeIp;                // 192.168.50.10
extern const be32 kRouterIp;              // 192.168.50.11
extern const rte_ether_addr kHostStackMac;  // 02:00:00:00:0c:01, the node's stack behind a host port

// ---- frame builders --------------------------------------------------------

Bytes ether(const rte_ether_addr& dst, const rte_ether_addr& src, uint16_t ether_type, const Bytes& payload);

// Ethernet + ARP (28 bytes, no padding).
Bytes arp_frame(const rte_ether_addr& eth_dst, const rte_ether_addr& eth_src, uint16_t op,
                const rte_ether_addr& sha, be32 sip, const rte_ether_addr& tha, be32 tip);

struct Ipv4Spec {
  be32 src{};
  be32 dst{};
  uint8_t proto = IPPROTO_UDP;
  uint8_t ttl = 64;
  uint16_t id = 0x1234;
  uint16_t frag = 0;  // host-order fragment_offset field (flags | offset)
  uint8_t tos = 0;
  Bytes options{};    // a multiple of 4 bytes
};

// IPv4 header + `l4` with a valid header checksum and, for an unfragmented
// TCP/UDP/ICMP payload, a valid L4 checksum.
Bytes ipv4(const Ipv4Spec& spec, Bytes l4);
Bytes ipv4_frame(const rte_ether_addr& dst, const rte_ether_addr& src, const Ipv4Spec& spec, const Bytes& l4);

Bytes udp(uint16_t sport, uint16_t dport, const Bytes& payload);
Bytes tcp(uint16_t sport, uint16_t dport, const Bytes& payload, uint8_t data_off_words = 5);
Bytes icmp_echo(uint16_t ident, uint16_t seq, const Bytes& payload);

// Ones'-complement sum over bytes, as rte_raw_cksum (0xffff for a correct header).
uint16_t raw_sum(const uint8_t* p, size_t len);

// ---- views over received frames ---------------------------------------------

inline const rte_ether_hdr& eth_of(const Bytes& f) { return *reinterpret_cast<const rte_ether_hdr*>(f.data()); }
inline const rte_arp_hdr& arp_of(const Bytes& f) {
  return *reinterpret_cast<const rte_arp_hdr*>(f.data() + sizeof(rte_ether_hdr));
}
inline const rte_ipv4_hdr& ip_of(const Bytes& f) {
  return *reinterpret_cast<const rte_ipv4_hdr*>(f.data() + sizeof(rte_ether_hdr));
}
inline const uint8_t* l4_of(const Bytes& f) {
  return f.data() + sizeof(rte_ether_hdr) + (ip_of(f).version_ihl & 0x0f) * 4u;
}
inline const rte_icmp_hdr& icmp_of(const Bytes& f) { return *reinterpret_cast<const rte_icmp_hdr*>(l4_of(f)); }
inline uint16_t ether_type_of(const Bytes& f) { return rte_be_to_cpu_16(eth_of(f).ether_type); }
inline uint16_t arp_op_of(const Bytes& f) { return rte_be_to_cpu_16(arp_of(f).arp_opcode); }

// ---- the process-wide DPDK environment ---------------------------------------

using DpdkPorts = RingPorts;
const DpdkPorts& dpdk();

// ---- the fixture -------------------------------------------------------------

class DataplaneTest : public ::testing::Test {
 protected:
  // TOML appended to the base config ([dataplane], [bridge], [neighbors]).
  virtual std::string extra_config() const { return ""; }
  // [node] node_ip: "a.b.c.d/len" adds a connected uplink subnet.
  virtual std::string node_ip_text() const { return "192.168.50.10"; }
  // pod2's ring becomes the host port (role "host"), the node's own stack
  // with MAC kHostStackMac behind it.
  virtual bool pod2_is_host() const { return false; }
  // [[port]] mtu of up0 and of every pod port (0: the ring's 1500).
  virtual unsigned uplink_mtu() const { return 0; }
  virtual unsigned pod_mtu() const { return 0; }

  void SetUp() override;
  void TearDown() override;

  // Queues a frame on a port's RX ring; `chain_tail` > 0 splits the last
  // bytes into a second segment.
  void send(uint16_t port, const Bytes& frame, unsigned chain_tail = 0);
  // One worker poll (RX on every port, pipeline, injected packets, TX
  // flush), then a quiescent report, as worker_main does.
  unsigned poll();
  // Sends one frame and polls.
  void send_and_poll(uint16_t port, const Bytes& frame) {
    send(port, frame);
    poll();
  }
  // One control thread iteration.
  unsigned control_poll() { return control->poll(); }
  // Frames the port transmitted since the last call (mbufs freed).
  std::vector<Bytes> sent(uint16_t port);
  // Drains every port; returns the count per port.
  std::vector<size_t> sent_counts();
  // Drains every port and expects nothing was sent.
  void expect_nothing_sent();

  uint64_t drops(DropReason r) const { return ctx->counters.drops[static_cast<unsigned>(r)].get(); }
  uint64_t total_drops() const;
  uint64_t icmp_errors(IcmpErrorOutcome o) const { return ctx->counters.icmp_errors[static_cast<unsigned>(o)].get(); }
  uint64_t stage(StageId s) const { return ctx->counters.stage_packets[static_cast<unsigned>(s)].get(); }
  uint64_t rx(uint16_t port) const { return ctx->counters.port[port].rx.get(); }
  uint64_t tx(uint16_t port) const { return ctx->counters.port[port].tx.get(); }
  const ControlCounters& cc() const { return control->counters(); }

  const FdbEntry* fdb_entry(const rte_ether_addr& m) const { return tables->fdb.lookup(fdb_key(m)); }
  const NeighborEntry* neighbor(be32 addr) const { return tables->neighbors.lookup(NeighborKey{addr}); }

  // Expects exactly one drop, of `reason`, and that nothing left any port.
  void expect_single_drop(DropReason reason);

  std::unique_ptr<Config> config;
  std::unique_ptr<NodeTables> tables;
  std::unique_ptr<WorkerChannels> channels;
  std::unique_ptr<WorkerContext> ctx;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<Control> control;
  rte_mempool* pool = nullptr;
  unsigned pool_avail_at_start = 0;
};

}  // namespace kdp::test
