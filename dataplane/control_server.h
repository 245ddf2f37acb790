// The control socket (protocol: ctrl/control_protocol.h), served from the
// control thread: poll() accepts, reads and answers without ever blocking,
// between the control thread's other work. No thread of its own.
//
// It keeps the desired state (the running Config) and changes only what a
// running kdp can change: routes, static neighbours and Services, each
// published as a new RCU snapshot (NodeTables::publish_routes /
// publish_services). NodeTables::config, which workers read on the fast
// path, is never touched: it keeps the start-up values, and an apply that
// differs from it anywhere else (node, ports, eal, workers, nat, dataplane,
// bridge, neighbour settings, conntrack, control) is rejected.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctrl/config.h"
#include "ctrl/control_protocol.h"
#include "ctrl/k8s.h"
#include "dataplane/control.h"
#include "dataplane/pods.h"
#include "dataplane/tables.h"
#include "dataplane/worker.h"

namespace kdp {

class ControlServer {
 public:
  ControlServer(NodeTables& tables, const std::vector<std::unique_ptr<WorkerContext>>& workers,
                const Control& control, const Config& running);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket at config.control.socket (its parent directory too);
  // throws std::runtime_error when it cannot, or when another process is
  // listening there.
  void start();
  // Accepts, reads and answers what is ready; returns how many requests it answered.
  unsigned poll();

  const Config& desired() const { return desired_; }
  // collect_stats' counters plus the control plane's update latencies.
  nlohmann::json stats() const;
  // Changes applied and failed, and their latency histograms.
  nlohmann::json update_stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Client {
    int fd = -1;
    control::LineReader in;
    std::string out;
    size_t out_sent = 0;
    bool close_when_sent = false;
    std::optional<control::Request> awaiting;  // a request line read, its payload not yet
    Clock::time_point awaiting_since;
  };

  void accept_clients();
  // The reply to a request line; "" when the request waits for its payload.
  std::string receive_line(Client& client, std::string_view line);
  // The reply to the request client.awaiting, now that its payload is here.
  std::string receive_payload(Client& client, std::string&& bytes);
  std::string answer(control::Request& request, Clock::time_point received);
  // False when the client is done (closed, failed or overflowed).
  bool serve(Client& client, unsigned& answered);
  bool flush(Client& client);

  // Seconds in fixed buckets, for the update-latency histograms.
  struct LatencyHistogram {
    static constexpr double kBounds[] = {0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
    uint64_t counts[std::size(kBounds)] = {};  // non-cumulative
    uint64_t count = 0;
    double sum = 0, max = 0, last = 0;
    void record(double seconds);
    nlohmann::json to_json() const;
  };

  // May take large arguments out of `request` (apply's document).
  nlohmann::json dispatch(control::Request& request);
  // Runs a state change, then waits until every worker is past the tables it
  // replaced, and adds "timing" to its reply.
  template <typename Change>
  nlohmann::json change_live(bool dry_run, Change change);
  nlohmann::json apply(Config next, bool dry_run);
  // One config-file service replaced (endpoint.add, endpoint.del) or removed
  // (nullopt: service.del), at the cost of that service: no config copy, no
  // compile of the others, the key index kept.
  nlohmann::json edit_base_service(size_t index, std::optional<ServiceConfig> edited, bool dry_run);
  // route.add, route.del: a new route table, nothing else compiled again.
  nlohmann::json edit_routes(std::vector<RouteConfig> routes, bool dry_run);
  // An EndpointSlice watch event: applied to k8s_ in place (undone on any
  // error or dry run), and only the endpoints of the Services it feeds
  // rendered again, at the cost of those Services.
  nlohmann::json slice_event(const std::string& slice_key, const simdjson::dom::element& event, bool dry_run);
  // Publishes a Service snapshot built from `diff`, records it as installed,
  // and flushes the UDP flows it made stale; returns how many.
  unsigned install_services(std::unique_ptr<ServiceSnapshot> snapshot, const ServiceDiff& diff);
  unsigned count_stale_udp(const ServiceDiff& diff) const;
  // Null when the diff can make no flow stale.
  std::function<bool(const FlowEntry&)> stale_udp_filter(const ServiceDiff& diff) const;
  // apply {k8s} and watch.event: `next` is k8s_ with the objects applied.
  nlohmann::json apply_k8s(K8sState next, std::vector<K8sChange> changes, bool dry_run);
  nlohmann::json list_ports() const;
  nlohmann::json list_routes() const;
  nlohmann::json list_neighbors();
  nlohmann::json list_fdb();
  nlohmann::json list_services() const;
  nlohmann::json get_service(const std::string& name) const;
  nlohmann::json delete_service(const control::ServiceArgs& args);
  nlohmann::json list_conntrack(const control::ConntrackListArgs& args) const;
  nlohmann::json list_snat(size_t limit) const;
  nlohmann::json flush_conntrack(const control::ConntrackFlushArgs& args);
  // The flow filter of conntrack.list and conntrack.flush; throws for an unknown service.
  std::function<bool(const FlowEntry&)> flow_filter(const control::ConntrackFilter& filter) const;
  std::string port_name(uint16_t index) const;

  NodeTables& tables_;
  const std::vector<std::unique_ptr<WorkerContext>>& workers_;
  const Control& control_;
  Config desired_;  // the running desired state; replaced on each successful apply
  InstalledServices installed_;  // what the published Service snapshot holds, for diffs and listings
  PodPorts pods_;   // pod.add, pod.del, pod.list
  Config base_;     // desired_ without the Services k8s_ renders: the last config file applied
  K8sState k8s_;    // the Kubernetes objects applied (apply {k8s}, watch.event)
  std::string path_;
  int listen_fd_ = -1;
  bool bound_ = false;
  uid_t own_uid_;
  LatencyHistogram apply_latency_, live_latency_;
  uint64_t failed_changes_ = 0;
  std::vector<std::unique_ptr<Client>> clients_;
  K8sJsonParser k8s_json_;  // apply {k8s}, watch.event: its buffers kept for the next document
};

}  // namespace kdp
