#include "flows/tcp_state.h"

namespace kdp {

const char* tcp_state_name(TcpState s) {
  switch (s) {
    case TcpState::None: return "none";
    case TcpState::SynSent: return "SYN_SENT";
    case TcpState::SynRecv: return "SYN_RECV";
    case TcpState::Established: return "ESTABLISHED";
    case TcpState::FinWait: return "FIN_WAIT";
    case TcpState::CloseWait: return "CLOSE_WAIT";
    case TcpState::LastAck: return "LAST_ACK";
    case TcpState::TimeWait: return "TIME_WAIT";
    case TcpState::Close: return "CLOSE";
    case TcpState::Count: break;
  }
  return "?";
}

TcpTransition tcp_transition(TcpState state, FlowDir dir, uint8_t flags, FlowDir fin_dir) {
  const bool syn = flags & kTcpSyn, ack = flags & kTcpAck, fin = flags & kTcpFin, rst = flags & kTcpRst;
  const bool original = dir == FlowDir::Original;
  // A reset ends the flow from any state (window checks come with the
  // validity work; a reset is honoured as the kernel does in-window).
  if (rst) return {TcpState::Close, true};
  if (syn && fin) return {state, false};  // never a valid combination
  switch (state) {
    case TcpState::None:
      return tcp_opens_flow(flags) ? TcpTransition{TcpState::SynSent, true} : TcpTransition{state, false};
    case TcpState::SynSent:
      if (original) return {state, syn && !ack};                 // retransmitted SYN
      if (syn && ack) return {TcpState::SynRecv, true};          // the server's answer
      return {state, false};
    case TcpState::SynRecv:
      if (original && ack && !syn) return {fin ? TcpState::FinWait : TcpState::Established, true};
      if (!original && syn && ack) return {state, true};        // retransmitted SYN+ACK
      if (original && syn && !ack) return {state, true};        // retransmitted SYN
      return {state, false};
    case TcpState::Established:
      if (syn) return {state, false};
      if (fin) return {TcpState::FinWait, true};
      return {state, true};
    case TcpState::FinWait:
      if (syn) return {state, false};
      if (dir != fin_dir && fin) return {TcpState::LastAck, true};
      if (dir != fin_dir && ack) return {TcpState::CloseWait, true};
      return {state, true};
    case TcpState::CloseWait:
      if (syn) return {state, false};
      if (dir != fin_dir && fin) return {TcpState::LastAck, true};
      return {state, true};
    case TcpState::LastAck:
      if (syn) return {state, false};
      if (dir == fin_dir && ack && !fin) return {TcpState::TimeWait, true};
      return {state, true};
    case TcpState::TimeWait:
    case TcpState::Close:
      // A new connection on the same ports reopens the flow.
      if (original && tcp_opens_flow(flags)) return {TcpState::SynSent, true};
      return {state, !syn};
    case TcpState::Count: break;
  }
  return {state, false};
}

}  // namespace kdp
