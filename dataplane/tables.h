// Tables shared by all workers. Workers only read them (and refresh
// timestamps); the control thread is the single writer.
#pragma once

#include <rte_lpm.h>

#include <atomic>
#include <bitset>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/rcu.h"
#include "dataplane/shared_table.h"
#include "dataplane/types.h"
#include "flows/conntrack.h"
#include "nat/service_table.h"

namespace kdp {

// ---- L2 forwarding database (the node bridge) ----

struct FdbKey {
  uint8_t mac[6];
  uint16_t zero = 0;  // keeps the key 8 bytes with no padding
};
static_assert(sizeof(FdbKey) == 8);

inline FdbKey fdb_key(const rte_ether_addr& mac) {
  FdbKey k;
  std::memcpy(k.mac, mac.addr_bytes, 6);
  return k;
}

struct FdbEntry {
  std::atomic<uint16_t> port{kNoPort};   // changes in place on a MAC move
  std::atomic<uint32_t> last_seen_s{0};  // refreshed by workers, read by aging
  bool is_static = false;

  void assign(const FdbEntry& o) {
    port.store(o.port.load(std::memory_order_relaxed), std::memory_order_relaxed);
    last_seen_s.store(o.last_seen_s.load(std::memory_order_relaxed), std::memory_order_relaxed);
    is_static = o.is_static;
  }
};
using Fdb = SharedTable<FdbKey, FdbEntry>;

// ---- neighbours (ARP cache) ----

struct NeighborKey {
  be32 ip;
};
static_assert(sizeof(NeighborKey) == 4);

enum class NeighborState : uint8_t { Reachable, Stale, Probe, Static };
const char* neighbor_state_name(NeighborState s);

struct NeighborEntry {
  // MAC (low 48 bits) and state (bits 48..55) in one word, so a worker never
  // sees a half-updated MAC.
  std::atomic<uint64_t> mac_state{0};
  std::atomic<uint32_t> last_used_s{0};  // refreshed by workers when they forward to it
  uint32_t confirmed_s = 0;               // control thread only
  uint16_t port = kNoPort;                // port learned on (informational for pods)
  uint8_t probes_sent = 0;                // control thread only
  uint64_t next_probe_ms = 0;             // control thread only

  static uint64_t pack(const rte_ether_addr& mac, NeighborState s) {
    return mac_to_u64(mac) | uint64_t(static_cast<uint8_t>(s)) << 48;
  }
  NeighborState state() const { return NeighborState(mac_state.load(std::memory_order_relaxed) >> 48 & 0xff); }
  void mac(rte_ether_addr& out) const { u64_to_mac(mac_state.load(std::memory_order_relaxed), out); }
  void assign(const NeighborEntry& o) {
    mac_state.store(o.mac_state.load(std::memory_order_relaxed), std::memory_order_relaxed);
    last_used_s.store(o.last_used_s.load(std::memory_order_relaxed), std::memory_order_relaxed);
    confirmed_s = o.confirmed_s;
    port = o.port;
    probes_sent = o.probes_sent;
    next_probe_ms = o.next_probe_ms;
  }
};
using Neighbors = SharedTable<NeighborKey, NeighborEntry>;

// ---- routes: an immutable snapshot, replaced whole by pointer swap ----

enum class NextHopKind : uint8_t {
  Local,      // one of our addresses
  PodNet,     // connected: the node's pod CIDR behind the bridge
  Connected,  // connected: the uplink subnet
  Gateway,    // via a next-hop router on an uplink
  Blackhole,  // the pod CIDR's network and broadcast addresses: never forwarded
};
const char* next_hop_kind_name(NextHopKind k);

struct NextHop {
  NextHopKind kind = NextHopKind::Local;
  uint16_t port = kNoPort;  // egress port for Connected/Gateway
  Ipv4 gateway = 0;         // for Gateway
};

struct RouteEntry {
  Ipv4Prefix prefix;
  NextHop next_hop;
};

class RouteSnapshot {
 public:
  RouteSnapshot(const std::vector<RouteEntry>& routes, uint64_t generation);
  ~RouteSnapshot();
  RouteSnapshot(const RouteSnapshot&) = delete;
  RouteSnapshot& operator=(const RouteSnapshot&) = delete;

  // dst_ips in host order; next_hops[i] is null for no route.
  void lookup_bulk(const uint32_t* dst_ips, unsigned n, const NextHop** next_hops) const {
    uint32_t hops[kBurstSize * 2];
    rte_lpm_lookup_bulk(lpm_, dst_ips, hops, n);
    for (unsigned i = 0; i < n; ++i)
      next_hops[i] = (hops[i] & RTE_LPM_LOOKUP_SUCCESS) ? &next_hops_[hops[i] & 0x00ffffff] : nullptr;
  }
  const std::vector<RouteEntry>& routes() const { return routes_; }

 private:
  rte_lpm* lpm_ = nullptr;
  std::vector<NextHop> next_hops_;
  std::vector<RouteEntry> routes_;
};

// The pods a bridge port may speak for ([[pod]], pod.add): anti-spoofing.
// A port with none listed is not checked.
struct PodIdentity {
  uint64_t mac = 0;  // mac_to_u64
  be32 ip{};
  bool any_mac = false;  // pod.add without a MAC: only the IP is checked
};

// The ports workers poll and send to, by kdp port index: an immutable
// snapshot, replaced whole by pointer swap when a pod is attached or
// detached (NodeTables::publish_ports), freed after an RCU grace period.
// A worker loads it once per poll (WorkerContext::ports).
struct PortSet {
  std::vector<PortInfo> ports;                      // by index; !in_use: a free index
  std::vector<uint16_t> active;                     // indexes in use: RX and TX flush
  std::vector<uint16_t> pod_ports;                  // in-use pod ports: the flood list
  uint16_t bridge_mtu = UINT16_MAX;                 // the smallest pod port MTU: routing into the bridge
  std::vector<std::vector<PodIdentity>> port_pods;  // by index: anti-spoofing identities

  bool has(uint16_t index) const { return index < ports.size() && ports[index].in_use; }
  uint16_t index_of(std::string_view name) const;  // kNoPort when none
  // Recomputes active and pod_ports from ports (after an edit of a copy).
  void rebuild_lists();
};

// Everything the workers share, built from the config at start-up.
struct NodeTables {
  NodeTables(const Config& config, std::vector<PortInfo> ports, unsigned workers);
  ~NodeTables();

  const Config& config;
  uint16_t first_uplink = kNoPort;  // uplinks are never removed
  uint16_t host_port = kNoPort;     // the node's own stack (role host), if any; never removed
  Rcu rcu;
  Fdb fdb;
  Neighbors neighbors;
  be32 gateway_ip;
  be32 node_ip;
  rte_ether_addr gateway_mac;
  std::unique_ptr<Conntrack> conntrack;

  const PortSet* port_set() const { return ports_.load(std::memory_order_acquire); }
  // Control thread: replaces the port set; the old one is freed after every
  // worker has moved past it.
  void publish_ports(std::unique_ptr<PortSet> set);
  // Control thread: port indexes held by a port set or a port being removed.
  // The lowest free one is taken (kNoPort: none); release only once no worker
  // can still use the index (after an RCU grace period).
  uint16_t take_port_index();
  void release_port_index(uint16_t index) { port_indexes_taken_.reset(index); }

  const RouteSnapshot* routes() const { return routes_.load(std::memory_order_acquire); }
  const ServiceSnapshot* services() const { return services_.load(std::memory_order_acquire); }
  // Control thread: replaces the Service table as one change.
  void publish_services(std::unique_ptr<ServiceSnapshot> snapshot);
  uint64_t next_service_generation() { return service_generation_++; }
  // Control thread: publishes a new route table; the old one is freed after
  // every worker has moved past it.
  void publish_routes(std::unique_ptr<RouteSnapshot> snapshot);
  uint64_t next_route_generation() { return route_generation_++; }
  // The routes of this node (connected, local) and `static_routes`.
  std::vector<RouteEntry> routes_from_config(const std::vector<RouteConfig>& static_routes) const;
  std::vector<RouteEntry> routes_from_config() const { return routes_from_config(config.routes); }
  // The index of a port of the current set by name (control thread).
  uint16_t port_index(const std::string& name) const { return port_set()->index_of(name); }

 private:
  std::atomic<const PortSet*> ports_{nullptr};
  std::bitset<kMaxPorts> port_indexes_taken_;
  std::atomic<const RouteSnapshot*> routes_{nullptr};
  uint64_t route_generation_ = 0;
  std::atomic<const ServiceSnapshot*> services_{nullptr};
  uint64_t service_generation_ = 0;
};

}  // namespace kdp
