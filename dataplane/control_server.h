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

#include <memory>
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

  // One request line → one reply line (exposed for tests).
  std::string handle(std::string_view line);
  const Config& desired() const { return desired_; }

 private:
  struct Client {
    int fd = -1;
    control::LineReader in;
    std::string out;
    size_t out_sent = 0;
    bool close_when_sent = false;
  };

  void accept_clients();
  // False when the client is done (closed, failed or overflowed).
  bool serve(Client& client, unsigned& answered);
  bool flush(Client& client);

  nlohmann::json dispatch(const control::Request& request);
  nlohmann::json apply(const Config& next, bool dry_run);
  // apply {k8s} and watch.event: `next` is k8s_ with the objects applied.
  nlohmann::json apply_k8s(K8sState next, std::vector<K8sChange> changes, bool dry_run);
  nlohmann::json list_ports() const;
  nlohmann::json list_routes() const;
  nlohmann::json list_neighbors();
  nlohmann::json list_fdb();
  nlohmann::json list_services() const;
  nlohmann::json list_conntrack(size_t limit) const;
  nlohmann::json flush_conntrack(const control::ConntrackFlushArgs& args);
  std::string port_name(uint16_t index) const;

  NodeTables& tables_;
  const std::vector<std::unique_ptr<WorkerContext>>& workers_;
  const Control& control_;
  Config desired_;  // the running desired state; replaced on each successful apply
  PodPorts pods_;   // pod.add, pod.del, pod.list
  Config base_;     // desired_ without the Services k8s_ renders: the last config file applied
  K8sState k8s_;    // the Kubernetes objects applied (apply {k8s}, watch.event)
  std::string path_;
  int listen_fd_ = -1;
  bool bound_ = false;
  uid_t own_uid_;
  std::vector<std::unique_ptr<Client>> clients_;
};

}  // namespace kdp
