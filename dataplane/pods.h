// Pods at run time (the control socket's pod.add, pod.del, pod.list): a pod
// attached while kdp runs gets a bridge port of its own, hot-plugged as
// net_af_packet on its host interface and published to the workers as a new
// port set (NodeTables::publish_ports). Runs on the control thread, which is
// the single writer of the port set, the FDB and the neighbour table.
//
// Detaching publishes a port set without the port, flushes its FDB entries
// and the neighbour entry of its IP, then waits until every worker has
// passed a quiescent point (RCU; workers report one per poll, and a sleeping
// worker is offline) before it closes the port: no worker can still poll it
// or hold it in a TX buffer. Only then is its index free for another port;
// the per-port counters of a reused index are reported from a base recorded
// when the new port took it.
//
// net_af_packet holds no mbufs of its own (it copies frames between mbufs
// and the kernel's packet ring), so the pool sized at start-up serves
// attached ports too. A worker's learn event from just before a pod.del
// may reach the control thread after the index went to a new pod: at worst
// an FDB entry for the old pod's MAC on the new port, which ages out.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ctrl/control_protocol.h"
#include "dataplane/tables.h"
#include "dataplane/worker.h"

namespace kdp {

class PodPorts {
 public:
  // `workers` are read for their count, mbuf pool and port counters.
  PodPorts(NodeTables& tables, const std::vector<std::unique_ptr<WorkerContext>>& workers);

  // Throw control::ProtocolError naming the argument at fault; nothing
  // changes on an error.
  nlohmann::json add(const control::PodAddArgs& args);
  nlohmann::json del(const control::PodDelArgs& args);
  nlohmann::json list() const;

 private:
  struct Attached {
    std::string name;
    std::string iface;  // also the port's name
    uint16_t index = kNoPort;
    uint16_t dpdk_id = 0;
    Ipv4 ip = 0;
    std::optional<MacAddr> mac;
  };

  // Another pod (config or attached) with this name or IP, for messages.
  std::optional<std::string> pod_with_ip(Ipv4 ip) const;
  bool has_pod(const std::string& name) const;
  // The port (config or attached) that already uses host interface `iface`.
  std::optional<std::string> port_on_iface(const std::string& iface) const;

  NodeTables& tables_;
  const std::vector<std::unique_ptr<WorkerContext>>& workers_;
  std::vector<Attached> attached_;
  uint64_t probes_ = 0;  // numbers the devices probed, so no name is ever reused
};

// "iface=NAME" of a device string ("net_af_packet0,iface=veth0,qpairs=2"); empty when none.
std::string device_iface(const std::string& device);

}  // namespace kdp
