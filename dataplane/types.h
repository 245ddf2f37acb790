// Types shared by every stage: endian-typed fields, packet metadata kept in
// the mbuf's private area, port descriptions.
#pragma once

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <bit>
#include <cstdint>
#include <cstring>

#include "ctrl/config.h"
#include "ctrl/net_types.h"

namespace kdp {

// Network-order values get their own types so a host-order value can't be
// stored in a header field by mistake.
enum class be16 : uint16_t {};
enum class be32 : uint32_t {};

constexpr uint16_t byteswap_if_little(uint16_t v) {
  return std::endian::native == std::endian::little ? __builtin_bswap16(v) : v;
}
constexpr uint32_t byteswap_if_little(uint32_t v) {
  return std::endian::native == std::endian::little ? __builtin_bswap32(v) : v;
}
constexpr be16 to_be16(uint16_t host) { return be16{byteswap_if_little(host)}; }
constexpr be32 to_be32(uint32_t host) { return be32{byteswap_if_little(host)}; }
constexpr uint16_t from_be(be16 net) { return byteswap_if_little(static_cast<uint16_t>(net)); }
constexpr uint32_t from_be(be32 net) { return byteswap_if_little(static_cast<uint32_t>(net)); }
inline be32 load_be32(const void* p) { uint32_t v; std::memcpy(&v, p, 4); return be32{v}; }
inline void store_be32(void* p, be32 v) { std::memcpy(p, &v, 4); }

inline constexpr unsigned kBurstSize = 32;      // RX burst and stage batch
// Port indexes: ~110 pods (Kubernetes' default per node) plus uplinks, with room.
inline constexpr unsigned kMaxPorts = 256;
inline constexpr uint16_t kNoPort = 0xffff;
inline constexpr uint16_t kFloodPort = 0xfffe;  // out_port: every pod port but the excluded one
inline constexpr unsigned kMaxWorkers = 64;

// Seconds from `then` to `now` on the workers' coarse clock. Each worker
// stamps entries with its own reading, which may be a second ahead of the
// caller's: that is 0 seconds, not 2^32 - 1.
inline uint32_t seconds_since(uint32_t now, uint32_t then) {
  return static_cast<int32_t>(now - then) < 0 ? 0 : now - then;
}

inline rte_ether_addr to_ether(const MacAddr& mac) {
  rte_ether_addr a;
  std::memcpy(a.addr_bytes, mac.bytes.data(), 6);
  return a;
}
inline MacAddr from_ether(const rte_ether_addr& a) {
  MacAddr mac;
  std::memcpy(mac.bytes.data(), a.addr_bytes, 6);
  return mac;
}
// MAC as a 64-bit integer (low 48 bits) for keys and atomic words.
inline uint64_t mac_to_u64(const rte_ether_addr& a) {
  uint64_t v = 0;
  std::memcpy(&v, a.addr_bytes, 6);
  return v;
}
inline void u64_to_mac(uint64_t v, rte_ether_addr& a) { std::memcpy(a.addr_bytes, &v, 6); }

// What the pipeline knows about a packet, kept in the mbuf private area so it
// travels with the mbuf between stages, rings and the control thread.
struct PacketMeta {
  uint16_t in_port;        // kdp port index it arrived on (kNoPort: made by kdp)
  uint16_t out_port;       // kdp port index, kFloodPort, or kNoPort
  uint16_t flood_exclude;  // port a flood must skip (the ingress pod port), or kNoPort
  uint8_t drop_reason;     // DropReason when sent to the Drop stage
  uint8_t flags;           // PacketFlag bits
  uint8_t l4_proto;        // IPPROTO_* for IPv4 packets
  uint8_t icmp_type;       // ICMP error the Icmp stage must send for this packet
  uint8_t icmp_code;
  uint8_t icmp_from_dst;   // the error's source is the packet's destination (a rejected VIP)
  union {
    be32 next_hop;          // neighbour to resolve, for punted packets
    uint32_t next_hop_mtu;  // for a "fragmentation needed" error: the MTU the packet exceeded
  };
};
static_assert(sizeof(PacketMeta) == 16);

enum PacketFlag : uint8_t {
  kFlagArp = 1 << 0,
  kFlagIpv4 = 1 << 1,
  kFlagBroadcast = 1 << 2,
  kFlagMulticast = 1 << 3,
  kFlagAlsoFlood = 1 << 4,     // a broadcast the router consumes that the bridge floods too
  kFlagToBridgeNet = 1 << 5,   // punted: next hop is a pod, its port comes from the FDB
  kFlagFragment = 1 << 6,      // non-first IPv4 fragment: no L4 header
  kFlagNatDone = 1 << 7,       // conntrack already translated it (or it needs none)
};

inline constexpr uint16_t kMbufPrivSize = RTE_ALIGN(sizeof(PacketMeta), RTE_MBUF_PRIV_ALIGN);

inline PacketMeta& meta(rte_mbuf* m) { return *static_cast<PacketMeta*>(rte_mbuf_to_priv(m)); }

// A bridged packet reaches the Nat stage with its L2 egress already chosen
// (routed ones have none yet): conntrack still sees it, as br_netfilter
// lets a Linux node's conntrack see bridged traffic, so a pod's answer to a
// Service client on the same bridge is translated back.
inline bool is_bridged(const PacketMeta& md) { return md.out_port != kNoPort; }

// Per-port counters of an index before its current port had it (a port
// index freed by pod.del is reused): stats report the difference.
struct PortCounterBase {
  uint64_t rx = 0, tx = 0, tx_dropped = 0;
};

struct PortInfo {
  std::string name;
  PortRole role = PortRole::Pod;
  uint16_t dpdk_id = 0;
  rte_ether_addr mac{};  // the address kdp uses on this port (gateway MAC on pod ports)
  Ipv4 local_ip = 0;     // our address on this side: gateway IP (pod, host) or node IP (uplink)
  rte_ether_addr host_mac{};  // host port: the MAC of the node's stack behind it
  uint16_t mtu = 1500;   // the largest IPv4 packet the port sends (routed ones are fragmented to fit)
  std::string device;    // the DPDK device string it was set up from
  bool in_use = true;    // false: a free index of the port set (its port was removed)
  bool attached = false; // hot-plugged by pod.add (not from the config)
  PortCounterBase counter_base;
};

}  // namespace kdp
