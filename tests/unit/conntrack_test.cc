// Connection tracking: every TCP transition, timeouts per state class,
// lookups from both directions, expiry, the full-table policy, reply
// tuple collisions and TCP window tracking. Runs in the dataplane test
// binary (it owns the EAL).
#include <gtest/gtest.h>

#include <rte_ip.h>

#include "flows/conntrack.h"

namespace kdp {
namespace {

constexpr FlowDir O = FlowDir::Original;
constexpr FlowDir R = FlowDir::Reply;
constexpr uint8_t SYN = kTcpSyn, ACK = kTcpAck, FIN = kTcpFin, RST = kTcpRst;

struct Step {
  TcpState from;
  FlowDir dir;
  uint8_t flags;
  FlowDir fin_dir;
  TcpState to;
  bool valid;
};

class TcpTransitionTest : public ::testing::TestWithParam<Step> {};

TEST_P(TcpTransitionTest, Transition) {
  const Step& s = GetParam();
  TcpTransition t = tcp_transition(s.from, s.dir, s.flags, s.fin_dir);
  EXPECT_EQ(tcp_state_name(t.next), std::string(tcp_state_name(s.to)));
  EXPECT_EQ(t.valid, s.valid);
}

using S = TcpState;
INSTANTIATE_TEST_SUITE_P(
    Kernel, TcpTransitionTest,
    ::testing::Values(
        // opening handshake
        Step{S::None, O, SYN, O, S::SynSent, true}, Step{S::None, O, ACK, O, S::None, false},
        Step{S::None, O, SYN | ACK, O, S::None, false}, Step{S::SynSent, O, SYN, O, S::SynSent, true},
        Step{S::SynSent, R, SYN | ACK, O, S::SynRecv, true}, Step{S::SynSent, R, ACK, O, S::SynSent, false},
        Step{S::SynSent, O, ACK, O, S::SynSent, false}, Step{S::SynRecv, O, ACK, O, S::Established, true},
        Step{S::SynRecv, R, SYN | ACK, O, S::SynRecv, true}, Step{S::SynRecv, O, SYN, O, S::SynRecv, true},
        Step{S::SynRecv, O, ACK | FIN, O, S::FinWait, true},
        // data and a SYN where none belongs
        Step{S::Established, O, ACK, O, S::Established, true}, Step{S::Established, R, ACK, O, S::Established, true},
        Step{S::Established, O, SYN, O, S::Established, false},
        Step{S::Established, O, SYN | FIN, O, S::Established, false},
        // closing from the client
        Step{S::Established, O, FIN | ACK, O, S::FinWait, true}, Step{S::FinWait, R, ACK, O, S::CloseWait, true},
        Step{S::FinWait, R, FIN | ACK, O, S::LastAck, true}, Step{S::FinWait, O, ACK, O, S::FinWait, true},
        Step{S::CloseWait, R, FIN | ACK, O, S::LastAck, true}, Step{S::CloseWait, R, ACK, O, S::CloseWait, true},
        Step{S::LastAck, O, ACK, O, S::TimeWait, true}, Step{S::LastAck, R, ACK, O, S::LastAck, true},
        // closing from the server
        Step{S::Established, R, FIN | ACK, R, S::FinWait, true}, Step{S::FinWait, O, FIN | ACK, R, S::LastAck, true},
        Step{S::LastAck, R, ACK, R, S::TimeWait, true},
        // resets, and reuse of a closed tuple
        Step{S::SynSent, R, RST, O, S::Close, true}, Step{S::Established, O, RST | ACK, O, S::Close, true},
        Step{S::TimeWait, O, SYN, O, S::SynSent, true}, Step{S::TimeWait, O, ACK, O, S::TimeWait, true},
        Step{S::Close, O, SYN, O, S::SynSent, true}, Step{S::Close, R, SYN | ACK, O, S::Close, false}));

// ---- the table ----------------------------------------------------------------

FlowKey tcp_key(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport) {
  return {to_be32(src), to_be32(dst), to_be16(sport), to_be16(dport), IPPROTO_TCP, {}};
}
FlowKey udp_key(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport) {
  FlowKey k = tcp_key(src, sport, dst, dport);
  k.proto = IPPROTO_UDP;
  return k;
}

constexpr uint32_t kClient = 0x0af40102;   // 10.244.1.2
constexpr uint32_t kVip = 0x0a60000a;      // 10.96.0.10
constexpr uint32_t kBackend = 0x0af40205;  // 10.244.2.5

FlowTimeouts test_timeouts() {
  FlowTimeouts t;
  for (auto& v : t.tcp) v = 100;
  t.tcp[static_cast<unsigned>(TcpState::SynSent)] = 120;
  t.tcp[static_cast<unsigned>(TcpState::Established)] = 86400;
  t.tcp[static_cast<unsigned>(TcpState::TimeWait)] = 120;
  t.tcp[static_cast<unsigned>(TcpState::Close)] = 10;
  t.udp = 30;
  t.udp_stream = 120;
  t.icmp = 30;
  return t;
}

class ConntrackTest : public ::testing::Test {
 protected:
  Rcu rcu{4};  // no worker registered: grace periods end at once
  std::unique_ptr<Conntrack> ct = std::make_unique<Conntrack>(64, test_timeouts(), rcu);

  // A packet with these flags and nothing else: on the flows below, made
  // without their SYN (liberal), only the flags count.
  bool update(FlowEntry& e, FlowDir dir, uint8_t flags, uint32_t now) {
    TcpSegment segment;
    segment.flags = flags;
    return ct->update(e, dir, segment, now) == Conntrack::Verdict::Accept;
  }
  FlowRef find(const FlowKey& k) {
    FlowRef r;
    ct->lookup_bulk(&k, 1, &r);
    return r;
  }
  // A DNATed flow client → VIP:80 answered by backend:8080.
  FlowEntry* dnat_flow(uint16_t client_port, uint32_t now = 1000) {
    FlowKey orig = tcp_key(kClient, client_port, kVip, 80);
    FlowKey reply = tcp_key(kBackend, 8080, kClient, client_port);
    return ct->create(orig, reply, kFlowDnat, 7, now);
  }
};

TEST_F(ConntrackTest, FoundFromBothDirections) {
  FlowEntry* e = dnat_flow(40000);
  ASSERT_NE(e, nullptr);
  FlowRef o = find(tcp_key(kClient, 40000, kVip, 80));
  FlowRef r = find(tcp_key(kBackend, 8080, kClient, 40000));
  EXPECT_EQ(o.entry, e);
  EXPECT_EQ(o.dir, FlowDir::Original);
  EXPECT_EQ(r.entry, e);
  EXPECT_EQ(r.dir, FlowDir::Reply);
  EXPECT_EQ(find(tcp_key(kClient, 40001, kVip, 80)).entry, nullptr);
  EXPECT_EQ(e->state(), TcpState::SynSent);
  EXPECT_EQ(e->service, 7);
  EXPECT_EQ(ct->size(), 1u);
}

TEST_F(ConntrackTest, HandshakeAndCloseThroughUpdate) {
  FlowEntry* e = dnat_flow(40000);
  ASSERT_TRUE(update(*e, R, SYN | ACK, 1000));
  ASSERT_TRUE(update(*e, O, ACK, 1000));
  EXPECT_EQ(e->state(), TcpState::Established);
  EXPECT_TRUE(e->has(kFlowReplied));
  EXPECT_FALSE(update(*e, O, SYN, 1001)) << "SYN on an established flow is INVALID";
  EXPECT_EQ(e->state(), TcpState::Established) << "an INVALID packet does not advance state";
  ASSERT_TRUE(update(*e, R, FIN | ACK, 1002));  // server closes first
  EXPECT_TRUE(e->has(kFlowFinReply));
  ASSERT_TRUE(update(*e, O, FIN | ACK, 1002));
  EXPECT_EQ(e->state(), TcpState::LastAck);
  ASSERT_TRUE(update(*e, R, ACK, 1003));
  EXPECT_EQ(e->state(), TcpState::TimeWait);
  EXPECT_EQ(e->last_seen_s.load(), 1003u);
}

TEST_F(ConntrackTest, TimeoutPerStateClass) {
  FlowEntry* tcp = dnat_flow(40000, 1000);
  EXPECT_EQ(ct->timeout_of(*tcp), 120u);  // SYN_SENT
  update(*tcp, R, SYN | ACK, 1000);
  update(*tcp, O, ACK, 1000);
  EXPECT_EQ(ct->timeout_of(*tcp), 86400u);
  FlowEntry* udp = ct->create(udp_key(kClient, 5000, kVip, 53), udp_key(kBackend, 53, kClient, 5000), kFlowDnat, 1, 1000);
  ASSERT_NE(udp, nullptr);
  EXPECT_EQ(ct->timeout_of(*udp), 30u) << "unreplied UDP";
  update(*udp, R, 0, 1000);
  EXPECT_EQ(ct->timeout_of(*udp), 120u) << "replied UDP";
  EXPECT_FALSE(ct->expired(*udp, 1119));
  EXPECT_TRUE(ct->expired(*udp, 1120));
}

TEST_F(ConntrackTest, EveryTcpStateUsesItsTimeout) {
  FlowTimeouts t;
  for (unsigned s = 0; s < static_cast<unsigned>(TcpState::Count); ++s) t.tcp[s] = 1000 + s;
  t.icmp = 7;
  ct.reset();
  ct = std::make_unique<Conntrack>(64, t, rcu);
  FlowEntry* e = dnat_flow(40000);
  ASSERT_NE(e, nullptr);
  for (unsigned s = 1; s < static_cast<unsigned>(TcpState::Count); ++s) {
    e->tcp_state.store(static_cast<uint8_t>(s));
    EXPECT_EQ(ct->timeout_of(*e), 1000 + s) << tcp_state_name(static_cast<TcpState>(s));
  }
  FlowKey echo{to_be32(kClient), to_be32(kVip), to_be16(9), be16{}, IPPROTO_ICMP, kConnection, {}};
  FlowKey echo_reply{to_be32(kVip), to_be32(kClient), be16{}, to_be16(9), IPPROTO_ICMP, kConnection, {}};
  FlowEntry* icmp = ct->create(echo, echo_reply, 0, 1, 1000);
  ASSERT_NE(icmp, nullptr);
  EXPECT_EQ(ct->timeout_of(*icmp), 7u);
  EXPECT_EQ(icmp->state(), TcpState::None);
}

TEST_F(ConntrackTest, SweepRemovesExpiredFlowsAndTheirKeys) {
  FlowEntry* old_flow = dnat_flow(40000, 1000);   // SYN_SENT: 120 s
  FlowEntry* fresh_flow = dnat_flow(40001, 1100);
  ASSERT_NE(old_flow, nullptr);
  ASSERT_NE(fresh_flow, nullptr);
  EXPECT_EQ(ct->sweep(1119, 64), 0u);
  EXPECT_EQ(ct->sweep(1120, 64), 1u);
  rcu.reclaim();
  EXPECT_EQ(find(tcp_key(kClient, 40000, kVip, 80)).entry, nullptr);
  EXPECT_EQ(find(tcp_key(kBackend, 8080, kClient, 40000)).entry, nullptr);
  EXPECT_EQ(find(tcp_key(kClient, 40001, kVip, 80)).entry, fresh_flow);
  EXPECT_EQ(ct->size(), 1u);
  EXPECT_EQ(ct->counters().expired.load(), 1u);
}

TEST_F(ConntrackTest, SweepIsBoundedByBudget) {
  for (uint16_t p = 0; p < 10; ++p) ASSERT_NE(dnat_flow(41000 + p, 1000), nullptr);
  unsigned removed = 0;
  for (int tick = 0; tick < 8; ++tick) {
    unsigned now = ct->sweep(5000, 8);  // 8 of 64 slots per tick
    EXPECT_LE(now, 8u);
    removed += now;
  }
  EXPECT_EQ(removed, 10u);
}

TEST_F(ConntrackTest, ReplyTupleCollisionRefused) {
  ASSERT_NE(dnat_flow(40000), nullptr);
  // Another VIP whose flow would answer with the same tuple.
  FlowKey orig = tcp_key(kClient, 40000, kVip + 1, 80);
  FlowKey reply = tcp_key(kBackend, 8080, kClient, 40000);
  EXPECT_EQ(ct->create(orig, reply, kFlowDnat, 8, 1000), nullptr);
  EXPECT_EQ(ct->counters().collisions.load(), 1u);
  EXPECT_EQ(find(orig).entry, nullptr);
  EXPECT_EQ(ct->size(), 1u);
}

TEST_F(ConntrackTest, FullTableEvictsEmbryonicNeverEstablished) {
  // 32 established flows, 32 embryonic ones fill the 64 slots.
  for (uint16_t p = 0; p < 32; ++p) {
    FlowEntry* e = dnat_flow(42000 + p);
    ASSERT_NE(e, nullptr);
    update(*e, R, SYN | ACK, 1000);
    update(*e, O, ACK, 1000);
  }
  for (uint16_t p = 0; p < 32; ++p) ASSERT_NE(dnat_flow(43000 + p), nullptr);
  EXPECT_EQ(ct->size(), 64u);
  // A new SYN finds no room: refused and counted; an embryonic flow goes.
  EXPECT_EQ(dnat_flow(44000), nullptr);
  EXPECT_EQ(ct->counters().full.load(), 1u);
  ct->sweep(1000, 0);  // the control thread acts on the eviction request
  rcu.reclaim();
  EXPECT_EQ(ct->counters().evicted.load(), 1u);
  EXPECT_EQ(ct->size(), 63u);
  unsigned established = 0;
  ct->for_each([&](const FlowEntry& e) { established += e.state() == TcpState::Established; });
  EXPECT_EQ(established, 32u) << "no established flow is evicted";
  EXPECT_NE(dnat_flow(44000), nullptr) << "the next SYN fits";
}

TEST_F(ConntrackTest, AffinityRecordRememberedRefreshedAndExpired) {
  const FlowKey key = Conntrack::affinity_key(to_be32(kClient), to_be32(kVip), to_be16(80), IPPROTO_TCP);
  uint64_t backend = 0;
  EXPECT_FALSE(ct->find_affinity(key, 1000, backend));
  ct->remember_affinity(key, 0x0af402051f90, 3, 100, 1000);
  ASSERT_TRUE(ct->find_affinity(key, 1050, backend));
  EXPECT_EQ(backend, 0x0af402051f90u);
  ct->remember_affinity(key, 0x0af402061f90, 3, 100, 1080);  // re-pointed and refreshed
  ASSERT_TRUE(ct->find_affinity(key, 1179, backend));
  EXPECT_EQ(backend, 0x0af402061f90u);
  EXPECT_EQ(ct->size(), 1u);
  EXPECT_FALSE(ct->find_affinity(key, 1180, backend)) << "timeout counts from the last use";
  EXPECT_EQ(ct->sweep(1180, 64), 1u);
  rcu.reclaim();
  EXPECT_EQ(ct->size(), 0u);
  // A record never answers a packet's lookup: packets carry kind 0.
  FlowKey packet = key;
  packet.kind = kConnection;
  EXPECT_EQ(find(packet).entry, nullptr);
}

TEST_F(ConntrackTest, EntryReusedOnlyAfterGracePeriod) {
  ct.reset();  // DPDK object names are per process
  Rcu worker_rcu(1);
  worker_rcu.register_worker(0);
  worker_rcu.online(0);
  // Offline before the table drains its retired entries, even on failure.
  struct Offline {
    Rcu& rcu;
    ~Offline() { rcu.offline(0); }
  };
  Conntrack table(4, test_timeouts(), worker_rcu);
  Offline offline_at_exit{worker_rcu};
  FlowKey orig = tcp_key(kClient, 40000, kVip, 80);
  ASSERT_NE(table.create(orig, tcp_key(kBackend, 8080, kClient, 40000), kFlowDnat, 1, 1000), nullptr);
  worker_rcu.quiescent(0);
  EXPECT_EQ(table.sweep(5000, 4), 1u);
  EXPECT_EQ(worker_rcu.reclaim(), 0u) << "the worker has not passed a quiescent point";
  for (uint16_t p = 1; p < 4; ++p)
    ASSERT_NE(table.create(tcp_key(kClient, p, kVip, 80), tcp_key(kBackend, 8080, kClient, p), 0, 1, 5000), nullptr);
  EXPECT_EQ(table.create(tcp_key(kClient, 9, kVip, 80), tcp_key(kBackend, 8080, kClient, 9), 0, 1, 5000), nullptr)
      << "the removed flow's entry is not reused yet";
  worker_rcu.quiescent(0);
  EXPECT_EQ(worker_rcu.reclaim(), 1u);
  EXPECT_NE(table.create(tcp_key(kClient, 9, kVip, 80), tcp_key(kBackend, 8080, kClient, 9), 0, 1, 5000), nullptr);
}

// ---- TCP window tracking ---------------------------------------------------------

namespace window {

constexpr uint32_t kClientIsn = 1000, kServerIsn = 5000000;
constexpr auto Accept = Conntrack::Verdict::Accept;
constexpr auto OutOfWindow = Conntrack::Verdict::OutOfWindow;

TcpSegment seg(uint8_t flags, uint32_t seq, uint32_t ack, uint16_t window, uint32_t payload = 0, int8_t wscale = -1) {
  TcpSegment s;
  s.flags = flags;
  s.seq = seq;
  s.ack = ack;
  s.window = window;
  s.payload = payload;
  s.wscale = wscale;
  return s;
}

// As Linux opens a connection: both sides offer scale 7; the windows after
// the handshake are 502 and 509 units (64,256 and 65,152 bytes).
class TcpWindowTest : public ConntrackTest {
 protected:
  FlowEntry* open(int8_t client_scale = 7, int8_t server_scale = 7) {
    const TcpSegment syn = seg(SYN, kClientIsn, 0, 64240, 0, client_scale);
    FlowEntry* e = ct->create(tcp_key(kClient, 40000, kVip, 80), tcp_key(kBackend, 8080, kClient, 40000), kFlowDnat,
                              7, 1000, TcpState::SynSent, nullptr, &syn);
    if (e == nullptr) return nullptr;
    EXPECT_EQ(ct->update(*e, R, seg(SYN | ACK, kServerIsn, kClientIsn + 1, 65160, 0, server_scale), 1000), Accept);
    EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1, kServerIsn + 1, 502), 1000), Accept);
    EXPECT_EQ(e->state(), TcpState::Established);
    return e;
  }
  // What a dropped packet must leave alone.
  struct Snapshot {
    uint8_t state;
    uint32_t last_seen, end[2], maxend[2], maxwin[2];
    bool operator==(const Snapshot&) const = default;
  };
  static Snapshot snapshot(const FlowEntry& e) {
    Snapshot s{e.tcp_state.load(), e.last_seen_s.load(), {}, {}, {}};
    for (int d = 0; d < 2; ++d) {
      s.end[d] = e.window[d].end.load();
      s.maxend[d] = e.window[d].maxend.load();
      s.maxwin[d] = e.window[d].maxwin.load();
    }
    return s;
  }
};

TEST_F(TcpWindowTest, HandshakeSetsBothWindows) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->window_flags.load() & kWindowLiberal, 0) << "a flow opened by its SYN is tracked strictly";
  EXPECT_EQ(e->window[0].end.load(), kClientIsn + 1);
  EXPECT_EQ(e->window[1].end.load(), kServerIsn + 1);
  EXPECT_EQ(e->window[0].maxwin.load(), 64256u) << "502 << 7 (the SYN's own 64,240 is smaller)";
  EXPECT_EQ(e->window[1].maxwin.load(), 65160u) << "a SYN's window is never scaled";
  EXPECT_EQ(e->window[1].maxend.load(), kServerIsn + 1 + 64256) << "the client's ACK allows the server 64,256 bytes";
  EXPECT_EQ(e->window[0].maxend.load(), kClientIsn + 1 + 65160);
}

TEST_F(TcpWindowTest, InWindowDataBothWaysPasses) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1, kServerIsn + 1, 502, 1448), 1001), Accept);
  EXPECT_EQ(ct->update(*e, R, seg(ACK, kServerIsn + 1, kClientIsn + 1449, 509, 1448), 1001), Accept);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1449, kServerIsn + 1449, 502), 1002), Accept);
  // A retransmission of the first segment is still in window.
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1, kServerIsn + 1449, 502, 1448), 1002), Accept);
  EXPECT_EQ(e->window[0].end.load(), kClientIsn + 1449);
  EXPECT_EQ(e->last_seen_s.load(), 1002u);
}

TEST_F(TcpWindowTest, SequenceOutOfWindowIsDroppedAndChangesNothing) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  const Snapshot before = snapshot(*e);
  // Beyond what the server allowed (65,160 bytes past the client's end).
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1 + 70000, kServerIsn + 1, 502, 100), 1005), OutOfWindow);
  // Far behind the server's window: data long since acknowledged.
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn - 200000, kServerIsn + 1, 502, 100), 1005), OutOfWindow);
  // A FIN out of window does not close.
  EXPECT_EQ(ct->update(*e, O, seg(FIN | ACK, kClientIsn + 1 + 1000000, kServerIsn + 1, 502), 1005), OutOfWindow);
  EXPECT_EQ(snapshot(*e), before) << "no state, window or timeout change";
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1, kServerIsn + 1, 502, 100), 1006), Accept);
}

TEST_F(TcpWindowTest, AckOfUnsentOrAncientDataIsDropped) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  const Snapshot before = snapshot(*e);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1, kServerIsn + 1 + 10, 502), 1005), OutOfWindow)
      << "acknowledges 10 bytes the server never sent";
  EXPECT_EQ(ct->update(*e, R, seg(ACK, kServerIsn + 1, kClientIsn + 1 - 100000, 509), 1005), OutOfWindow)
      << "acknowledges nothing later than 100,000 bytes before the client's start";
  EXPECT_EQ(snapshot(*e), before);
}

TEST_F(TcpWindowTest, WindowScaleCountsOnlyWhenBothSidesOfferIt) {
  // Scaled: the server's 1,000 units are 128,000 bytes, so the client may
  // send 100,000 bytes ahead.
  FlowEntry* e = open(7, 7);
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(ct->update(*e, R, seg(ACK, kServerIsn + 1, kClientIsn + 1, 1000), 1001), Accept);
  EXPECT_EQ(e->window[0].maxend.load(), kClientIsn + 1 + 128000);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1 + 100000, kServerIsn + 1, 502, 1000), 1001), Accept);
  ct->remove_if([](const FlowEntry&) { return true; });
  rcu.reclaim();

  // The server offered none: no scaling either way (RFC 7323), so 1,000 is
  // 1,000 bytes and the same segment lies beyond the window.
  e = open(7, -1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->window_scales.load(), 0);
  ASSERT_EQ(ct->update(*e, R, seg(ACK, kServerIsn + 1, kClientIsn + 1, 1000), 1001), Accept);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1 + 100000, kServerIsn + 1, 502, 1000), 1001), OutOfWindow);
}

TEST_F(TcpWindowTest, ResetClosesOnlyInWindow) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  const Snapshot before = snapshot(*e);
  EXPECT_EQ(ct->update(*e, R, seg(RST, kServerIsn + 1 + 3000000, 0, 0), 1005), OutOfWindow)
      << "a blind reset with a guessed sequence number";
  EXPECT_EQ(ct->update(*e, O, seg(RST | ACK, kClientIsn - 3000000, kServerIsn + 1, 0), 1005), OutOfWindow);
  EXPECT_EQ(snapshot(*e), before) << "the flow stays established";
  EXPECT_EQ(ct->update(*e, R, seg(RST, kServerIsn + 1, 0, 0), 1006), Accept);
  EXPECT_EQ(e->state(), TcpState::Close);
}

TEST_F(TcpWindowTest, ResetAnsweringTheSynIsAccepted) {
  // A closed port: Linux answers the SYN with RST+ACK, sequence 0.
  const TcpSegment syn = seg(SYN, kClientIsn, 0, 64240, 0, 7);
  FlowEntry* e = ct->create(tcp_key(kClient, 40000, kVip, 80), tcp_key(kBackend, 8080, kClient, 40000), kFlowDnat, 7,
                            1000, TcpState::SynSent, nullptr, &syn);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(ct->update(*e, R, seg(RST | ACK, 0, kClientIsn + 10, 0), 1000), OutOfWindow)
      << "acknowledges more than the SYN";
  EXPECT_EQ(ct->update(*e, R, seg(RST | ACK, 0, kClientIsn + 1, 0), 1000), Accept);
  EXPECT_EQ(e->state(), TcpState::Close);
}

TEST_F(TcpWindowTest, SynRetransmitsAndRestarts) {
  const TcpSegment syn = seg(SYN, kClientIsn, 0, 64240, 0, 7);
  FlowEntry* e = ct->create(tcp_key(kClient, 40000, kVip, 80), tcp_key(kBackend, 8080, kClient, 40000), kFlowDnat, 7,
                            1000, TcpState::SynSent, nullptr, &syn);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(ct->update(*e, O, syn, 1001), Accept) << "the same SYN again";
  EXPECT_EQ(e->state(), TcpState::SynSent);
  // The client gave up and started over with a new ISN on the same ports.
  constexpr uint32_t kNewIsn = kClientIsn + 2000000;
  EXPECT_EQ(ct->update(*e, O, seg(SYN, kNewIsn, 0, 64240, 0, 7), 1003), Accept);
  EXPECT_EQ(e->window[0].end.load(), kNewIsn + 1);
  EXPECT_EQ(ct->update(*e, R, seg(SYN | ACK, kServerIsn, kClientIsn + 1, 65160, 0, 7), 1003), OutOfWindow)
      << "a late SYN+ACK for the first attempt";
  EXPECT_EQ(ct->update(*e, R, seg(SYN | ACK, kServerIsn, kNewIsn + 1, 65160, 0, 7), 1003), Accept);
  EXPECT_EQ(ct->update(*e, R, seg(SYN | ACK, kServerIsn, kNewIsn + 1, 65160, 0, 7), 1004), Accept)
      << "a retransmitted SYN+ACK";
  EXPECT_EQ(e->state(), TcpState::SynRecv);
}

TEST_F(TcpWindowTest, ClosedFlowReopenedBySynStartsAfresh) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(ct->update(*e, O, seg(RST, kClientIsn + 1, 0, 0), 1001), Accept);
  ASSERT_EQ(e->state(), TcpState::Close);
  constexpr uint32_t kOtherIsn = 3000000000u;  // unrelated to the old sequence space
  EXPECT_EQ(ct->update(*e, O, seg(SYN, kOtherIsn, 0, 64240, 0, 7), 1002), Accept);
  EXPECT_EQ(ct->update(*e, R, seg(SYN | ACK, 77, kOtherIsn + 1, 65160, 0, 7), 1002), Accept);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kOtherIsn + 1, 78, 502), 1002), Accept);
  EXPECT_EQ(e->state(), TcpState::Established);
}

TEST_F(TcpWindowTest, FlowPickedUpWithoutItsSynIsLiberal) {
  // Made from a mid-stream segment (no SYN to learn the window scale from).
  FlowEntry* e = ct->create(tcp_key(kClient, 40000, kVip, 80), tcp_key(kBackend, 8080, kClient, 40000), kFlowDnat, 7,
                            1000, TcpState::Established);
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->window_flags.load() & kWindowLiberal, 0);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, 123456, 987654, 502, 100), 1000), Accept);
  EXPECT_EQ(ct->update(*e, R, seg(ACK, 987654, 123556, 509, 1448), 1000), Accept);
  // Both directions seen, yet a scaled window (unknown here) may carry the
  // sender far past what 502 bytes would allow: still accepted.
  EXPECT_EQ(ct->update(*e, O, seg(ACK, 123556 + 60000, 987654 + 1448, 502, 1448), 1001), Accept);
  EXPECT_EQ(ct->update(*e, O, seg(ACK, 7, 7, 502, 1448), 1001), Accept) << "liberal: even far out of window";
  EXPECT_EQ(e->state(), TcpState::Established);
  EXPECT_EQ(ct->update(*e, O, seg(SYN, 5, 0, 502), 1001), Conntrack::Verdict::Invalid) << "flags are still checked";
}

TEST_F(TcpWindowTest, ZeroWindowStillAdmitsAProbe) {
  FlowEntry* e = open();
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(ct->update(*e, R, seg(ACK, kServerIsn + 1, kClientIsn + 1, 0), 1001), Accept);  // window closed
  EXPECT_EQ(ct->update(*e, O, seg(ACK, kClientIsn + 1, kServerIsn + 1, 502, 1), 1002), Accept) << "one-byte probe";
}

}  // namespace window

}  // namespace
}  // namespace kdp
