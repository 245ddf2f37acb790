// libFuzzer target: the whole single-worker pipeline, one frame at a time.
// The first input byte picks the ingress port (uplink or one of the pod
// ports); the rest is the frame. Services, routes, neighbours and conntrack
// state are present and build up across inputs, so every stage is reached.
// A worker must survive anything and never lose an mbuf: after each input
// every mbuf is back in the pool, transmitted or held by the control thread.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/control.h"
#include "dataplane/pipeline.h"
#include "tests/lib/ring_ports.h"

namespace {

using namespace kdp;

constexpr unsigned kPorts = 4;  // up0, pod0, pod1, pod2

constexpr const char* kConfig = R"([node]
name = "node-a"
node_ip = "192.168.50.10/24"
pod_cidr = "10.244.1.0/24"
cluster_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
[workers]
lcores = [1]
[conntrack]
max_flows = 1024
[neighbors]
hold_packets = 4
[nat]
snat_ports = "40000-40063"
[[port]]
name = "up0"
role = "uplink"
device = "net_ring_up0"
mac = "02:00:00:00:0a:01"
[[port]]
name = "pod0"
role = "pod"
device = "net_ring_pod0"
[[port]]
name = "pod1"
role = "pod"
device = "net_ring_pod1"
[[port]]
name = "pod2"
role = "pod"
device = "net_ring_pod2"
[[route]]
prefix = "10.244.2.0/24"
via = "192.168.50.11"
[[route]]
prefix = "0.0.0.0/0"
via = "192.168.50.1"
[[neighbor]]
ip = "192.168.50.11"
mac = "02:00:00:00:0b:01"
[[neighbor]]
ip = "10.244.1.2"
mac = "02:00:00:00:01:02"
[[service]]
name = "default/web"
type = "LoadBalancer"
cluster_ip = "10.96.0.10"
load_balancer_ips = ["203.0.113.7"]
load_balancer_source_ranges = ["198.51.100.0/24", "10.244.0.0/16"]
session_affinity = "ClientIP"
lb_algorithm = "maglev"
  [[service.port]]
  name = "http"
  protocol = "TCP"
  port = 80
  target_port = 8080
  node_port = 30080
  [[service.port]]
  name = "dns"
  protocol = "UDP"
  port = 53
  target_port = 5353
  node_port = 30053
  [[service.endpoint]]
  ip = "10.244.1.2"
  node = "node-a"
  [[service.endpoint]]
  ip = "10.244.2.5"
  node = "node-b"
[[service]]
name = "default/local"
type = "NodePort"
cluster_ip = "10.96.0.11"
external_traffic_policy = "Local"
internal_traffic_policy = "Local"
  [[service.port]]
  protocol = "TCP"
  port = 80
  target_port = 8080
  node_port = 30081
  [[service.endpoint]]
  ip = "10.244.2.5"
  node = "node-b"
[[service]]
name = "default/empty"
type = "ClusterIP"
cluster_ip = "10.96.0.12"
  [[service.port]]
  protocol = "UDP"
  port = 53
)";

struct Node {
  test::RingPorts ports;
  std::unique_ptr<Config> config;
  std::unique_ptr<NodeTables> tables;
  std::unique_ptr<WorkerChannels> channels;
  std::unique_ptr<WorkerContext> ctx;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<Control> control;
};

Node* g_node = nullptr;

void set_up() {
  test::init_test_eal("fuzz_pipeline");
  auto* node = new Node;
  node->ports = test::create_ring_ports("fuzz", kPorts);
  node->config = std::make_unique<Config>(parse_config(kConfig, "fuzz.toml"));
  node->tables = std::make_unique<NodeTables>(*node->config, test::ring_port_infos(*node->config, node->ports), 1);
  node->channels = std::make_unique<WorkerChannels>(0, 1024);
  node->ctx = std::make_unique<WorkerContext>(0, 0, *node->tables, *node->channels);
  node->ctx->pool = node->ports.pool;
  node->pipeline = std::make_unique<Pipeline>(*node->ctx);
  node->control = std::make_unique<Control>(*node->tables, std::vector<WorkerChannels*>{node->channels.get()},
                                            node->ports.pool);
  node->control->install_static_neighbors();
  node->tables->rcu.register_worker(0);
  node->tables->rcu.online(0);
  g_node = node;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  set_up();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 1 + RTE_MBUF_DEFAULT_DATAROOM) return 0;
  Node& node = *g_node;
  rte_mbuf* m = rte_pktmbuf_alloc(node.ports.pool);
  if (m == nullptr) std::abort();  // the pool ran dry: mbufs leaked
  char* frame = rte_pktmbuf_append(m, static_cast<uint16_t>(size - 1));
  if (size > 1) std::memcpy(frame, data + 1, size - 1);
  if (rte_ring_enqueue(node.ports.rx[data[0] % kPorts], m) != 0) std::abort();
  poll_once(*node.ctx, *node.pipeline);
  node.tables->rcu.quiescent(0);
  node.control->poll();
  poll_once(*node.ctx, *node.pipeline);  // what the control thread injected
  node.tables->rcu.quiescent(0);
  for (rte_ring* tx : node.ports.tx) test::drain_ring(tx);
  // Only the control thread's bounded hold queues may keep mbufs.
  const unsigned in_use = node.ports.pool_size - rte_mempool_avail_count(node.ports.pool);
  if (in_use > 4 * 1024 + 64) {
    std::fprintf(stderr, "fuzz_pipeline: %u mbufs in use after an input: leaked\n", in_use);
    std::abort();
  }
  return 0;
}
