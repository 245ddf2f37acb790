// libFuzzer target: the Kubernetes JSON loader (ctrl/k8s.h), from JSON text
// to the flat Service entries the dataplane installs. The input is a stream of
// JSON documents, one after another as `kubectl get -w -o json` prints them:
// an object with a "type" member is a watch event (K8sState::apply_event),
// anything else an object, List or array for K8sState::apply. Each document's
// text goes through K8sJsonParser (one parser, reused as kdp reuses it), and
// the first text that is not JSON must be refused by it with a K8sError.
// One K8sState takes the documents in order. After each step the state is rendered against two
// nodes (with and without node.service_cidr, the first with a [[service]] of
// its own to collide with) and compiled, and the compiled entries diffed
// against the previous step's, as the control server does on apply.
// K8sError is the only allowed rejection, and a rejected step must leave the
// state as it was; anything else escaping is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "ctrl/k8s.h"
#include "ctrl/services.h"

namespace {

using namespace kdp;
using nlohmann::json;

// The node of the first render; the second is the same without
// service_cidr and [[service]].
constexpr const char* kNode = R"([node]
name = "node-a"
node_ip = "192.168.50.10/24"
pod_cidr = "10.244.1.0/24"
cluster_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
[workers]
lcores = [1]
[nat]
node_port_range = "30000-32767"
[[port]]
name = "up0"
role = "uplink"
device = "net_null0"
[[service]]
name = "kube-system/dns"
cluster_ip = "10.96.0.10"
  [[service.port]]
  name = "dns"
  protocol = "UDP"
  port = 53
  [[service.endpoint]]
  ip = "10.244.1.3"
  node = "node-a"
)";

struct Node {
  Config base;
  CompiledServices installed;
};

std::vector<Node>* g_nodes = nullptr;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_k8s: %s\n", what);
  std::abort();
}

bool same_state(const K8sState& a, const K8sState& b) {
  return a.services() == b.services() && a.endpoint_slices() == b.endpoint_slices();
}

K8sJsonParser* g_parser = nullptr;

// One document (`text`, which `document` is) into the state; false when it was rejected.
bool apply_document(K8sState& state, const json& document, const std::string& text) {
  const K8sState before = state;
  try {
    const auto& parsed = g_parser->parse(text, "fuzz");
    std::vector<K8sChange> changes;
    if (document.is_object() && document.contains("type")) changes.push_back(state.apply_event(parsed));
    else changes = state.apply(parsed);
    // As the control server's reply carries them.
    (void)to_json(changes).dump(-1, ' ', false, json::error_handler_t::replace);
    return true;
  } catch (const K8sError& e) {
    if (!same_state(state, before)) fail("a rejected document changed the state");
    return false;
  }
}

// The state on `node` as the control server installs it. compile_services
// throws std::invalid_argument on duplicate frontends, which render must
// have ruled out: that escapes as a finding.
void install(const K8sState& state, Node& node) {
  Config config;
  try {
    config = with_k8s_services(node.base, state);
  } catch (const K8sError&) {
    return;  // the node keeps what it had
  }
  CompiledServices compiled = compile_services(config);
  for (size_t i = 1; i < compiled.entries.size(); ++i)
    if (!(compiled.entries[i - 1].key() < compiled.entries[i].key())) fail("compiled entries not sorted and unique");
  (void)diff_services(node.installed, compiled);
  node.installed = std::move(compiled);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Config with_services = parse_config(kNode, "fuzz.toml");
  Config bare = with_services;
  bare.node.service_cidr.reset();
  bare.services.clear();
  g_nodes = new std::vector<Node>;
  g_parser = new K8sJsonParser;
  for (Config* base : {&with_services, &bare}) g_nodes->push_back({*base, compile_services(*base)});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<Node> nodes = *g_nodes;
  K8sState state;
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::istringstream in(input);
  // Documents until the end of the stream or the first that is not JSON
  // (nlohmann's stream reading finds where each ends).
  while (!(in >> std::ws).eof()) {
    const auto start = static_cast<size_t>(in.tellg());
    json document;
    try {
      in >> document;
    } catch (const json::exception&) {  // not JSON, or a number out of range: the rest goes to K8sJsonParser
      try {
        g_parser->parse(input.substr(start), "fuzz");
      } catch (const K8sError&) {
      }
      break;
    }
    const std::string text = in.eof() ? input.substr(start) : input.substr(start, static_cast<size_t>(in.tellg()) - start);
    if (!apply_document(state, document, text)) continue;
    for (Node& node : nodes) install(state, node);
  }
  return 0;
}
