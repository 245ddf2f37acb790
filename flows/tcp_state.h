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

// Timeouts per state and protocol, seconds ([conntrack] in the config).
struct FlowTimeouts {
  uint32_t tcp[static_cast<unsigned>(TcpState::Count)] = {};
  uint32_t udp = 30;         // no reply seen yet
  uint32_t udp_stream = 120; // replied
  uint32_t icmp = 30;
  uint32_t other = 600;
};

}  // namespace kdp
