// Connection state tracking as the kernel's conntrack does it, as pure
// functions: no DPDK, no tables, so every transition is unit-testable.
#pragma once

#include <cstdint>

namespace kdp {

enum class FlowDir : uint8_t { Original, Reply };

enum class TcpState : uint8_t {
  None,         // not a TCP flow
  SynSent,      // SYN seen from the client
  SynRecv,      // SYN+ACK seen from the server
  Established,  // the client's ACK of the SYN+ACK
  FinWait,      // one side sent FIN
  CloseWait,    // the other side acknowledged it
  LastAck,      // both sides sent FIN
  TimeWait,     // the last FIN acknowledged
  Close,        // reset
  Count
};
const char* tcp_state_name(TcpState s);

// TCP header flag bits, as on the wire.
enum TcpFlag : uint8_t { kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10 };

struct TcpTransition {
  TcpState next;
  bool valid;  // false: the packet does not fit the flow's state (INVALID)
};

// Whether a packet with these flags may create a flow (a SYN without ACK).
inline bool tcp_opens_flow(uint8_t flags) { return (flags & (kTcpSyn | kTcpAck | kTcpRst | kTcpFin)) == kTcpSyn; }

// The state after a packet with `flags` in direction `dir`; `fin_dir` is the
// direction of the first FIN (meaningful from FinWait on).
TcpTransition tcp_transition(TcpState state, FlowDir dir, uint8_t flags, FlowDir fin_dir);

// What window tracking reads from a TCP segment, host order.
struct TcpSegment {
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint32_t payload = 0;  // bytes after the TCP header
  uint16_t window = 0;   // the raw field (scaled by the sender's shift, except on a SYN)
  uint8_t flags = 0;
  int8_t wscale = -1;    // a SYN's window scale option (0-14), -1 when it has none

  // The sequence number after this segment: SYN and FIN count one each.
  uint32_t end() const { return seq + payload + (flags & kTcpSyn ? 1 : 0) + (flags & kTcpFin ? 1 : 0); }
};

// Sequence number order modulo 2^32 (RFC 793's "<" on the circle).
inline bool seq_before(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }
inline bool seq_after(uint32_t a, uint32_t b) { return seq_before(b, a); }

// RFC 7323: shifts above 14 are treated as 14.
inline constexpr uint8_t kTcpMaxWindowScale = 14;

// Timeouts per state and protocol, seconds ([conntrack] in the config).
struct FlowTimeouts {
  uint32_t tcp[static_cast<unsigned>(TcpState::Count)] = {};
  uint32_t udp = 30;         // no reply seen yet
  uint32_t udp_stream = 120; // replied
  uint32_t icmp = 30;
  uint32_t other = 600;
};

}  // namespace kdp
