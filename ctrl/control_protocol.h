// The control socket protocol between kdp and kdpctl (or any client).
//
// Transport: a Unix stream socket, by default /run/kdp/kdp.sock ([control]
// socket in the config). kdp creates its parent directory (mode 0700 when it
// makes it), creates the socket with mode 0600 and accepts only peers whose
// SO_PEERCRED uid is root or kdp's own uid; others are closed unanswered.
//
// Framing: each request is one line of JSON (UTF-8, terminated by '\n'), and
// each gets exactly one line of JSON in reply, in order; a client may send
// several requests on one connection. A request line is at most
// kMaxRequestBytes (64 MiB: a 10k-Service config with its endpoints is
// about 6 MB) including its newline: a longer one is answered
// with an error and the connection is closed. Its arrays and objects nest at
// most kMaxRequestDepth (512) deep; Kubernetes objects need a few dozen.
//
//   request:  {"verb": "service.list", "args": {...}}     ("args" optional, an object)
//
// Payload: apply's document (args.toml, args.k8s) may instead follow the
// line as raw bytes, announced in the line by
//   {"verb": "apply", "args": {...}, "payload": {"arg": "toml", "bytes": N}}
// and made of the N bytes right after its '\n': the TOML text as it is, or
// the JSON text of the Kubernetes objects (checked by the Kubernetes reader,
// which nests it at most K8sJsonParser::kMaxDepth deep). Nothing is escaped
// on the way, so a 10,000-Service document is neither serialised into a JSON
// string nor parsed twice. Line and payload together are at most kMaxRequestBytes;
// a bad announcement is answered with an error and the connection closed,
// as is a connection that ends before its payload has arrived.
//   reply:    {"ok": true, "result": <any JSON>}
//         or  {"ok": false, "error": "message"}
//
// Verbs and their args (unknown verbs, unknown args and args of the wrong
// type are errors; nothing changes on an error):
//   stats                      collect_stats' JSON (the same as --stats-json)
//   port.list                  [{name, role, mac, dpdk_id, device}]
//   route.list                 [{prefix, kind, port, via}]
//   neighbor.list              [{ip, mac, state, port}]
//   fdb.list                   [{mac, port, static, age_s}]
//   service.list               [{key, vip, protocol, port, kind, service, port_name, backends, backends_from_pods}]
//   service.get {service}      the frontends of Service "ns/name" (as service.list); unknown: error
//   service.del {service, dry_run}
//                              removes a Service (the config file's, or the
//                              Kubernetes object's with its EndpointSlices
//                              left in place), then applies. Reply as apply.
//   route.add {prefix, via, port, dry_run}
//                              adds a static route, checked as a [[route]]
//                              (port: an uplink; default the first). Reply as apply.
//   route.del {prefix, dry_run}
//                              removes a static route. Reply as apply.
//   snat.list {limit}          {ports: [{worker, low, high}], flows, in_use,
//                              shown, entries: [{protocol, orig, reply, age_s}]}
//                              for the masqueraded flows; limit as conntrack.list
//   conntrack.count            {flows, capacity}
//   conntrack.list  {limit, dst, service}
//                              {flows, matched, shown, entries: [{protocol, orig, reply, state, flags, age_s, idle_s}]};
//                              limit 1..100000, default 100; dst and service filter as conntrack.flush does
//   conntrack.flush {dst, service}
//                              removes flows whose original destination (or,
//                              after DNAT, backend) is `dst` and/or which are
//                              to a frontend of Service `service` ("ns/name");
//                              neither: every flow. {flushed}
//   apply {toml, source, dry_run}
//                              replaces the routes, static neighbours and
//                              Services with those of `toml` (a whole config
//                              file; `source` names it in errors). Any other
//                              difference from the running config is an error
//                              naming the key. Reply: the diff summary.
//   apply {k8s, dry_run}       instead of toml: Kubernetes Services and
//                              EndpointSlices (ctrl/k8s.h): an object, a List
//                              or an array of them, merged into the objects
//                              kdp holds. The node's Services are the config
//                              file's plus those the objects render; either
//                              kind of apply keeps the other's. Reply: the
//                              diff summary and "k8s": [{object, action, reason}].
//   watch.event {type, object, dry_run}
//                              one watch event: type ADDED, MODIFIED (the
//                              object replaces its namesake) or DELETED.
//                              Reply as apply {k8s}.
//   endpoint.add {service, ip, node, ready, serving, terminating, dry_run}
//   endpoint.del {service, ip, dry_run}
//                              an edit of the running desired config, then apply.
//
// Every verb that changes state (apply, watch.event, endpoint.*, service.del,
// route.*, pod.add, pod.del) answers once the change is live: the new tables are published and
// every worker has since passed a quiescent point, so none can still use the
// old ones. Its reply carries "timing": {"apply_ms" (validate, compile and
// publish), "live_ms" (publish until every worker has moved on)}.
//   pod.add {name, iface, ip, mac, dry_run}
//                              attaches a pod while kdp runs: a new bridge (role
//                              pod) port on host interface `iface`, probed as
//                              net_af_packet with one RX/TX queue pair per
//                              worker, named after the iface, and bound to the
//                              pod as a config [[pod]] is (anti-spoofing).
//                              name (required): "namespace/pod", unique among
//                              pods (config ones included).
//                              iface (required): an interface name in kdp's
//                              network namespace, 1..15 characters, none of
//                              "/,=:" or white space, not used by another port.
//                              ip (required): "a.b.c.d" or "a.b.c.d/len" (len
//                              must be node.pod_cidr's): a host address of
//                              node.pod_cidr, not the gateway, the network or
//                              the broadcast address, and no other pod's.
//                              mac (optional): the pod's unicast MAC
//                              "xx:xx:xx:xx:xx:xx"; with it the port accepts
//                              only that source MAC, without it any source
//                              MAC (the IP is checked either way).
//                              dry_run: check everything but the probe; change
//                              nothing.
//                              Reply: {name, port, index, iface, ip, mac,
//                              gateway_ip, gateway_mac, dry_run}: port is kdp's
//                              port name (= iface), index its port index, ip
//                              without length, mac null when not given.
//   pod.del {name, dry_run}    detaches a pod attached by pod.add (config
//                              [[pod]]s cannot be removed): its port leaves the
//                              workers' port set, its FDB entries and the
//                              neighbour entry of its IP are flushed, and once
//                              every worker has passed a quiescent point (RCU)
//                              the port is stopped, closed and removed; its
//                              index is reused after that.
//                              Reply: {name, port, index, fdb_flushed,
//                              neighbors_flushed, dry_run}
//   pod.list                   [{name, port, index, iface, ip, mac, source}]:
//                              source "config" ([[pod]]) or "attach" (pod.add);
//                              iface null where the port's device names none.
//
//   Errors of pod.add/pod.del name the argument: "pod.add: args.ip: 10.9.0.5 is
//   outside node.pod_cidr 10.244.1.0/24".
//
// No DPDK here: parsing and validation are unit-tested on their own.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ctrl/config.h"

namespace kdp::control {

inline constexpr size_t kMaxRequestBytes = size_t{64} << 20;
inline constexpr int kMaxRequestDepth = 512;
inline constexpr size_t kDefaultConntrackListLimit = 100;
inline constexpr size_t kMaxConntrackListLimit = 100000;

// A request that cannot be served; what() is the reply's "error".
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// A refused request line that announced a payload: its bytes cannot be told
// from the next request's, so the connection ends after the error.
class PayloadRequestError : public ProtocolError {
 public:
  using ProtocolError::ProtocolError;
};

// An argument sent as raw bytes after the request line (see Framing).
struct Payload {
  std::string arg;   // the argument it is: "toml" or "k8s" (apply)
  size_t bytes = 0;  // how many bytes follow the line
};

struct Request {
  std::string verb;
  nlohmann::json args = nlohmann::json::object();  // checked against the verb's arguments
  std::optional<Payload> payload;                  // set: the request is complete once it is attached
  // A JSON argument that came as a payload (apply's k8s), left as its text
  // for the reader of that argument to parse: {name, text}.
  std::optional<std::pair<std::string, std::string>> json_payload;
};

// Parses one request line (its newline may be left on) and checks the args
// against the verb: throws ProtocolError naming what is wrong. A request
// with a payload is checked but for what needs the payload (attach_payload).
Request parse_request(std::string_view line);
// Makes the payload's bytes request.args[payload.arg] (a JSON argument's,
// request.json_payload) and checks the whole request as parse_request checks
// one without a payload. Throws ProtocolError.
void attach_payload(Request& request, std::string&& bytes);
bool is_known_verb(std::string_view verb);
// Verbs that change kdp's state (answered once the change is live).
bool changes_state(std::string_view verb);

// Reply and request lines, each ending in '\n'.
std::string ok_line(const nlohmann::json& result);
std::string error_line(std::string_view message);
std::string request_line(std::string_view verb, const nlohmann::json& args = nlohmann::json::object());
// A request line announcing a payload of `bytes` bytes for args[arg]; the
// caller sends those bytes right after it.
std::string request_line_with_payload(std::string_view verb, const nlohmann::json& args, std::string_view arg,
                                      size_t bytes);

// Typed views of checked args.
// Flows whose original destination (or, after DNAT, backend) is `dst` and/or
// which are to a frontend of Service `service`; neither: every flow.
struct ConntrackFilter {
  std::optional<Ipv4> dst;
  std::optional<std::string> service;
};
using ConntrackFlushArgs = ConntrackFilter;
struct ConntrackListArgs {
  size_t limit = kDefaultConntrackListLimit;
  ConntrackFilter filter;
};
struct ServiceArgs {
  std::string service;
  bool dry_run = false;
};
struct RouteArgs {
  RouteConfig route;  // route.del uses the prefix only
  bool dry_run = false;
};
struct ApplyArgs {
  std::string toml;
  std::optional<std::string> k8s;  // set: Kubernetes objects (JSON text) instead of toml
  std::string source = "apply";
  bool dry_run = false;
};
struct WatchEventArgs {
  std::string event;  // {"type", "object"} as JSON text
  bool dry_run = false;
};
struct EndpointArgs {
  std::string service;
  EndpointConfig endpoint;  // endpoint.del uses the ip only
  bool dry_run = false;
};
struct PodAddArgs {
  std::string name;   // "namespace/pod"
  std::string iface;  // host interface
  Ipv4 ip = 0;
  std::optional<uint8_t> prefix_len;  // given as "a.b.c.d/len"
  std::optional<MacAddr> mac;
  bool dry_run = false;
};
struct PodDelArgs {
  std::string name;
  bool dry_run = false;
};
ConntrackListArgs conntrack_list_args(const Request& request);
ConntrackFlushArgs conntrack_flush_args(const Request& request);
// Takes the document (args.k8s, args.toml) out of request.args: a List of
// 10,000 Services is not copied.
ApplyArgs apply_args(Request&& request);
WatchEventArgs watch_event_args(const Request& request);
EndpointArgs endpoint_args(const Request& request);
ServiceArgs service_args(const Request& request);
RouteArgs route_args(const Request& request);
size_t list_limit(const Request& request);  // conntrack.list, snat.list
PodAddArgs pod_add_args(const Request& request);
PodDelArgs pod_del_args(const Request& request);

// Splits a byte stream into lines of at most `max` bytes (newline included).
class LineReader {
 public:
  explicit LineReader(size_t max = kMaxRequestBytes) : max_(max) {}
  void feed(const char* data, size_t n) { buffer_.append(data, n); }
  // The next complete line without its '\n'; nullopt when none is complete
  // yet, or once overflowed().
  std::optional<std::string> next_line();
  // The next `n` bytes as they are (a request's payload); nullopt until all
  // of them have arrived.
  std::optional<std::string> next_bytes(size_t n);
  // Room for `n` more bytes than are buffered, in one allocation (a payload
  // of megabytes, announced by its line, grows no buffer by doubling).
  void reserve(size_t n) { buffer_.reserve(buffer_.size() + n); }
  // A line longer than the maximum: the stream cannot be resynchronised.
  bool overflowed() const { return overflowed_; }
  // Bytes received and not yet taken.
  size_t buffered() const { return buffer_.size(); }

 private:
  size_t max_;
  std::string buffer_;
  size_t scanned_ = 0;  // bytes of buffer_ known to hold no '\n'
  bool overflowed_ = false;
};

// SO_PEERCRED policy: root, or the uid kdp runs as.
inline bool peer_allowed(uint32_t peer_uid, uint32_t own_uid) { return peer_uid == 0 || peer_uid == own_uid; }

// The stats JSON (collect_stats) in the Prometheus text exposition format.
std::string stats_to_prometheus(const nlohmann::json& stats);

}  // namespace kdp::control
