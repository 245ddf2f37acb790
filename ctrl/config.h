// kdp node configuration: the TOML schema of DEVELOPERS.md/README, loaded and
// validated whole. No DPDK here, so ctrl/ is unit-testable on its own.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ctrl/net_types.h"
#include "ctrl/services.h"

namespace kdp {

// A rejected configuration. what() reads "SOURCE:LINE: KEY: problem", e.g.
// "node.toml:7: port[1].role: must be \"uplink\" or \"pod\", got \"bridge\"".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Uplink: the node's network. Pod: a bridge member. Host: the node's own
// network stack (a net_tap interface), which kdp routes node_ip's traffic to
// as a router would, so the node keeps its ssh, kubelet and API connections.
enum class PortRole : uint8_t { Uplink, Pod, Host };
std::string_view port_role_name(PortRole role);  // "uplink", "pod", "host"
enum class VlanPolicy : uint8_t { Drop, Strip };

// The largest MTU a port may have: kdp receives a frame into one 2 KB mbuf
// (RTE_MBUF_DEFAULT_DATAROOM), Ethernet header and a strippable 802.1Q tag
// included.
inline constexpr unsigned kMaxPortMtu = 2048 - 14 - 4;

struct PortConfig {
  std::string name;
  PortRole role = PortRole::Pod;
  std::string device;          // DPDK device string: "net_pcap0,rx_pcap=..." or a PCI address
  std::optional<MacAddr> mac;  // override of the device's MAC
  unsigned mtu = 0;            // set on the device; 0: the device's own (its kernel interface's)
};

struct RouteConfig {
  Ipv4Prefix prefix;
  Ipv4 via = 0;      // next hop, on-link on the egress uplink
  std::string port;  // egress uplink port name; filled with the first uplink when omitted
};

struct NeighborConfig {
  Ipv4 ip = 0;
  MacAddr mac;
  std::string port;  // port the neighbour sits behind; when omitted: the uplink for
                     // addresses outside pod_cidr, the bridge for pod addresses
};

// An inclusive range of L4 ports, "low-high" in the file.
struct PortRange {
  uint16_t low = 0;
  uint16_t high = 0;

  bool operator==(const PortRange&) const = default;
  bool contains(unsigned port) const { return port >= low && port <= high; }
  bool overlaps(const PortRange& other) const { return low <= other.high && other.low <= high; }
  std::string to_string() const;  // "32768-60999"
};

// A pod attached to a bridge port: the port accepts only frames from this
// MAC and, for IPv4 and ARP, this address (anti-spoofing).
struct PodConfig {
  std::string name;  // "namespace/pod"
  std::string port;  // a port with role pod
  Ipv4 ip = 0;       // inside node.pod_cidr
  MacAddr mac;
};

struct Config {
  std::string source;  // file name used in messages

  struct Node {
    std::string name;
    Ipv4 node_ip = 0;
    uint8_t node_prefix_len = 32;  // node_ip = "a.b.c.d/len" adds a connected uplink subnet
    Ipv4Prefix pod_cidr;
    Ipv4 gateway_ip = 0;           // default: first host of pod_cidr
    MacAddr gateway_mac;           // default: 02:00 followed by gateway_ip's four bytes
    Ipv4Prefix cluster_cidr;
    std::optional<Ipv4Prefix> service_cidr;
  } node;

  struct Eal {
    std::vector<std::string> args;  // passed to rte_eal_init before kdp's own (-l, --file-prefix, --vdev)
    std::string file_prefix;        // default: "kdp-<node.name>-<pid>" chosen at start-up
  } eal;

  struct Workers {
    std::vector<unsigned> lcores;   // worker lcores, at least one
    unsigned main_lcore = 0;        // runs the control thread; not in lcores
    unsigned idle_sleep_us = 0;     // 0: busy poll; else sleep this long after idle polls
    unsigned realtime_priority = 0; // 1-99: worker lcores run SCHED_FIFO at this priority; 0: the default policy
    std::vector<unsigned> cpus;     // CPU each worker lcore runs on (lcores may share one, e.g. for
                                    // tests on a small machine); empty: the CPU numbered as the lcore
  } workers;

  struct Mbufs {
    unsigned pool_size = 0;  // 0: sized from ports, queues and descriptors
    unsigned cache_size = 256;
    unsigned rx_desc = 1024;
    unsigned tx_desc = 1024;
  } mbufs;

  struct Dataplane {
    VlanPolicy vlan = VlanPolicy::Drop;  // 802.1Q-tagged frames: "drop" or "strip"
    unsigned icmp_errors_per_s = 1000;   // per worker token bucket for generated ICMP errors; 0 = unlimited
  } dataplane;

  struct Bridge {
    unsigned fdb_max = 4096;
    unsigned aging_s = 300;
  } bridge;

  struct Neighbor {
    unsigned max = 4096;
    unsigned reachable_s = 30;    // a learned entry is confirmed this long, then refreshed if used
    unsigned stale_s = 60;        // an unused entry past reachable_s is removed after this
    unsigned hold_packets = 16;   // packets held per unresolved neighbour
    unsigned retries = 3;         // ARP requests before giving up
    unsigned retry_ms = 1000;
    // Packets held for all unresolved neighbours together: the mbuf pool
    // reserves this many, so a flood of unresolvable destinations cannot
    // take the mbufs that resolved traffic needs.
    unsigned held_total_max() const { return hold_packets * 64; }
  } neighbor;

  // Connection tracking. Timeouts in seconds, defaulting to what kube-proxy
  // sets the kernel's nf_conntrack to (and the kernel's own defaults).
  struct Conntrack {
    unsigned max_flows = 1048576;
    unsigned tcp_syn_sent_s = 120;
    unsigned tcp_syn_recv_s = 60;
    unsigned tcp_established_s = 86400;
    unsigned tcp_fin_wait_s = 120;
    unsigned tcp_close_wait_s = 3600;
    unsigned tcp_last_ack_s = 30;
    unsigned tcp_time_wait_s = 120;
    unsigned tcp_close_s = 10;
    unsigned udp_s = 30;          // unreplied
    unsigned udp_stream_s = 120;  // replied (assured)
    unsigned icmp_s = 30;
  } conntrack;

  struct Nat {
    bool masquerade_egress = true;                   // SNAT pod traffic leaving the cluster CIDR to node_ip
    bool masquerade_all = false;                     // kube-proxy --masquerade-all: SNAT pod traffic to cluster IPs too
    std::vector<Ipv4Prefix> non_masquerade_cidrs;    // egress destinations kept unmasqueraded
    PortRange snat_ports{32768, 60999};              // source ports for SNAT to node_ip (Linux's ephemeral range)
    PortRange node_port_range{30000, 32767};         // kube-apiserver --service-node-port-range
    LbAlgorithm lb_algorithm = LbAlgorithm::Random;  // per service unless set there
  } nat;

  // The control socket kdpctl talks to (ctrl/control_protocol.h).
  struct ControlApi {
    std::string socket = "/run/kdp/kdp.sock";  // absolute path of a Unix stream socket, mode 0600
    std::optional<Ipv4> metrics_ip;             // metrics_listen = "IP:PORT" (a loopback address, normally)
    uint16_t metrics_port = 0;                  // kdp serves Prometheus text at /metrics there
  } control;

  std::vector<PortConfig> ports;
  std::vector<RouteConfig> routes;
  std::vector<NeighborConfig> neighbors;
  std::vector<PodConfig> pods;
  std::vector<ServiceConfig> services;

  const PortConfig* find_port(std::string_view name) const;
};

// Parse and validate; throws ConfigError naming the key (and line) at fault.
Config parse_config(std::string_view toml_text, std::string_view source_name);
Config load_config_file(const std::string& path);

// Why `ip` can be no service address or endpoint ("must be a unicast address,
// got 127.0.0.1 (loopback range 127.0.0.0/8)"); nullopt when it can be one.
std::optional<std::string> unicast_address_problem(Ipv4 ip);

// Why the node's own connections (through a host port) and kdp's SNAT or
// node ports could claim the same port of node_ip, given the kernel's
// ephemeral range ("nat.snat_ports: 32768-60999 overlaps ..."); nullopt when
// they cannot.
std::optional<std::string> host_port_conflict(const Config& config, const PortRange& kernel_ports);

// ---- Changing the desired state of a running kdp ---------------------------

// The first setting in which `desired` differs from `running` outside what a
// running kdp can change (routes, static neighbours and services), as its
// key ("node.pod_cidr", "port[0].device", "nat.masquerade_all"); nullopt when
// it differs in those only.
std::optional<std::string> immutable_difference(const Config& running, const Config& desired);

// The index of the service named `service` ("namespace/name") in
// config.services; throws ConfigError ("{key}: no service is named ...").
size_t service_index(const Config& config, std::string_view service, std::string_view key = "service");
// The service named `service` of `config` with `endpoint` added, or
// replacing its endpoint of the same IP: a copy of that one service, so that
// an endpoint change costs one service, not the whole config. Validated as
// parse_config validates a [[service.endpoint]]; throws ConfigError
// ("endpoint.ip: ...", "endpoint.service: ...").
ServiceConfig with_endpoint(const Config& config, std::string_view service, const EndpointConfig& endpoint);
// The service named `service` of `config` without its endpoint `ip`; throws
// ConfigError when either is unknown.
ServiceConfig without_endpoint(const Config& config, std::string_view service, Ipv4 ip);
// `config`'s routes with one more static route, checked as a [[route]] is
// (an empty port means the first uplink); throws ConfigError ("route.prefix: ...").
std::vector<RouteConfig> with_route(const Config& config, RouteConfig route);
// `config`'s routes without the static route for `prefix`; throws
// ConfigError when none.
std::vector<RouteConfig> without_route(const Config& config, const Ipv4Prefix& prefix);

}  // namespace kdp
