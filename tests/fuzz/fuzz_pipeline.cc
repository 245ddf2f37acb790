// libFuzzer target: the whole single-worker pipeline, one frame at a time.
// The first input byte picks the ingress port (uplink or one of the pod
// ports); the rest is the frame. Services, routes, neighbours and conntrack
// state are present and build up across inputs, so every stage is reached.
// A worker must survive anything and never lose an mbuf: after each input
// every mbuf is back in the pool, transmitted or held by the control thread.
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "dataplane/control.h"
#include "dataplane/pipeline.h"

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

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_pipeline: %s failed: %s\n", what, rte_strerror(rte_errno));
  std::abort();
}

struct Node {
  rte_mempool* pool = nullptr;
  rte_ring* rx[kPorts] = {};
  rte_ring* tx[kPorts] = {};
  std::unique_ptr<Config> config;
  std::unique_ptr<NodeTables> tables;
  std::unique_ptr<WorkerChannels> channels;
  std::unique_ptr<WorkerContext> ctx;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<Control> control;
  unsigned pool_size = 0;
};

Node* g_node = nullptr;

void set_up() {
  const std::string prefix = "kdp-fuzz-" + std::to_string(getpid());
  std::vector<std::string> args = {"fuzz_pipeline", "--no-huge", "-m", "256",       "--no-pci",
                                   "--no-shconf",   "--file-prefix", prefix, "--log-level=error", "-l", "0"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) fail("rte_eal_init");
  auto* node = new Node;
  node->pool_size = 4095;
  // No per-lcore cache, so the pool's count is exact.
  node->pool = rte_pktmbuf_pool_create("fuzz_mbufs", node->pool_size, 0, kMbufPrivSize, RTE_MBUF_DEFAULT_BUF_SIZE,
                                       SOCKET_ID_ANY);
  if (node->pool == nullptr) fail("rte_pktmbuf_pool_create");
  node->config = std::make_unique<Config>(parse_config(kConfig, "fuzz.toml"));
  std::vector<PortInfo> ports;
  for (unsigned i = 0; i < kPorts; ++i) {
    const std::string n = std::to_string(i);
    node->rx[i] = rte_ring_create(("fz_rx" + n).c_str(), 64, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    node->tx[i] = rte_ring_create(("fz_tx" + n).c_str(), 1024, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (node->rx[i] == nullptr || node->tx[i] == nullptr) fail("rte_ring_create");
    const int id = rte_eth_from_rings(("fz_port" + n).c_str(), &node->rx[i], 1, &node->tx[i], 1, SOCKET_ID_ANY);
    if (id < 0) fail("rte_eth_from_rings");
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(id, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(id, 0, 64, SOCKET_ID_ANY, nullptr, node->pool) != 0 ||
        rte_eth_tx_queue_setup(id, 0, 1024, SOCKET_ID_ANY, nullptr) != 0 || rte_eth_dev_start(id) != 0)
      fail("port set-up");
    const PortConfig& pc = node->config->ports[i];
    PortInfo info;
    info.name = pc.name;
    info.role = pc.role;
    info.dpdk_id = static_cast<uint16_t>(id);
    info.mac = pc.role == PortRole::Pod ? to_ether(node->config->node.gateway_mac) : to_ether(*pc.mac);
    info.local_ip = pc.role == PortRole::Pod ? node->config->node.gateway_ip : node->config->node.node_ip;
    ports.push_back(info);
  }
  node->tables = std::make_unique<NodeTables>(*node->config, ports, 1);
  node->channels = std::make_unique<WorkerChannels>(0, 1024);
  node->ctx = std::make_unique<WorkerContext>(0, 0, *node->tables, *node->channels);
  node->ctx->pool = node->pool;
  node->pipeline = std::make_unique<Pipeline>(*node->ctx);
  node->control = std::make_unique<Control>(*node->tables, std::vector<WorkerChannels*>{node->channels.get()},
                                            node->pool);
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
  rte_mbuf* m = rte_pktmbuf_alloc(node.pool);
  if (m == nullptr) std::abort();  // the pool ran dry: mbufs leaked
  char* frame = rte_pktmbuf_append(m, static_cast<uint16_t>(size - 1));
  if (size > 1) std::memcpy(frame, data + 1, size - 1);
  if (rte_ring_enqueue(node.rx[data[0] % kPorts], m) != 0) std::abort();
  poll_once(*node.ctx, *node.pipeline);
  node.tables->rcu.quiescent(0);
  node.control->poll();
  poll_once(*node.ctx, *node.pipeline);  // what the control thread injected
  node.tables->rcu.quiescent(0);
  for (rte_ring* tx : node.tx) {
    void* out;
    while (rte_ring_dequeue(tx, &out) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(out));
  }
  // Only the control thread's bounded hold queues may keep mbufs.
  const unsigned in_use = node.pool_size - rte_mempool_avail_count(node.pool);
  if (in_use > 4 * 1024 + 64) {
    std::fprintf(stderr, "fuzz_pipeline: %u mbufs in use after an input: leaked\n", in_use);
    std::abort();
  }
  return 0;
}
