// Unit tests of the control socket protocol (ctrl/control_protocol.h) and the
// desired-state edits behind apply/endpoint.add (ctrl/config.h): no DPDK.
#include "ctrl/control_protocol.h"

#include <fmt/format.h>

#include <gtest/gtest.h>

#include <string>

namespace kdp::control {
namespace {

using nlohmann::json;

std::string error_of(std::string_view line) {
  try {
    parse_request(line);
  } catch (const ProtocolError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(ControlProtocolTest, ParsesVerbAndArgs) {
  Request r = parse_request(R"({"verb": "conntrack.list", "args": {"limit": 5}})");
  EXPECT_EQ(r.verb, "conntrack.list");
  EXPECT_EQ(conntrack_list_args(r).limit, 5u);
  // args may be left out; a trailing newline is allowed.
  r = parse_request("{\"verb\": \"stats\"}\n");
  EXPECT_EQ(r.verb, "stats");
  EXPECT_TRUE(r.args.is_object() && r.args.empty());
  EXPECT_EQ(conntrack_list_args(parse_request(R"({"verb": "conntrack.list"})")).limit, kDefaultConntrackListLimit);
}

TEST(ControlProtocolTest, RejectsMalformedRequests) {
  EXPECT_EQ(error_of("not json"), "request is not valid JSON");
  EXPECT_EQ(error_of("[1, 2]"), "request must be a JSON object {\"verb\": ..., \"args\": {...}}");
  EXPECT_EQ(error_of(R"({"args": {}})"), "request: \"verb\" must be a string");
  EXPECT_EQ(error_of(R"({"verb": 3})"), "request: \"verb\" must be a string");
  EXPECT_EQ(error_of(R"({"verb": "stats", "extra": 1})"), "request: unknown key \"extra\"");
  EXPECT_EQ(error_of(R"({"verb": "reboot"})"), "unknown verb \"reboot\"");
  EXPECT_EQ(error_of(R"({"verb": "stats", "args": []})"), "stats: args must be an object");
  EXPECT_EQ(error_of(R"({"verb": "stats", "args": {"x": 1}})"), "stats: args.x: unknown argument");
}

TEST(ControlProtocolTest, ChecksArgumentTypes) {
  EXPECT_EQ(error_of(R"({"verb": "conntrack.list", "args": {"limit": 0}})"),
            "conntrack.list: args.limit: must be an integer between 1 and 100000");
  EXPECT_EQ(error_of(R"({"verb": "conntrack.list", "args": {"limit": "5"}})"),
            "conntrack.list: args.limit: must be an integer between 1 and 100000");
  EXPECT_EQ(error_of(R"({"verb": "conntrack.flush", "args": {"dst": "10.0.0.300"}})"),
            "conntrack.flush: args.dst: must be an IPv4 address (\"a.b.c.d\")");
  EXPECT_EQ(error_of(R"({"verb": "conntrack.flush", "args": {"service": "web"}})"),
            "conntrack.flush: args.service: must be a service name (\"namespace/name\"), got \"web\"");
  EXPECT_EQ(error_of(R"({"verb": "apply", "args": {}})"), "apply: args: exactly one of toml and k8s is required");
  EXPECT_EQ(error_of(R"({"verb": "apply", "args": {"toml": "", "k8s": {}}})"),
            "apply: args: exactly one of toml and k8s is required");
  EXPECT_EQ(error_of(R"({"verb": "apply", "args": {"k8s": "Service"}})"),
            "apply: args.k8s: must be a Kubernetes object, a List or an array of objects");
  EXPECT_EQ(error_of(R"({"verb": "watch.event", "args": {"type": "ADDED"}})"),
            "watch.event: args.object: required argument is missing");
  EXPECT_EQ(error_of(R"({"verb": "watch.event", "args": {"type": "BOOKMARK", "object": {}}})"),
            "watch.event: args.type: must be \"ADDED\", \"MODIFIED\" or \"DELETED\"");
  EXPECT_EQ(error_of(R"({"verb": "watch.event", "args": {"type": "ADDED", "object": []}})"),
            "watch.event: args.object: must be a JSON object");
  EXPECT_EQ(error_of(R"({"verb": "apply", "args": {"toml": "", "dry_run": "yes"}})"),
            "apply: args.dry_run: must be true or false");
  EXPECT_EQ(error_of(R"({"verb": "endpoint.add", "args": {"service": "default/web"}})"),
            "endpoint.add: args.ip: required argument is missing");
  EXPECT_EQ(error_of(R"({"verb": "endpoint.del", "args": {"service": "default/web", "ip": "10.244.1.5", "node": "a"}})"),
            "endpoint.del: args.node: unknown argument");
}

TEST(ControlProtocolTest, TypedArgs) {
  ConntrackFlushArgs flush =
      conntrack_flush_args(parse_request(R"({"verb": "conntrack.flush", "args": {"dst": "10.96.0.10", "service": "a/b"}})"));
  EXPECT_EQ(flush.dst, parse_ipv4("10.96.0.10"));
  EXPECT_EQ(flush.service, "a/b");
  EXPECT_FALSE(conntrack_flush_args(parse_request(R"({"verb": "conntrack.flush"})")).dst.has_value());

  ApplyArgs apply = apply_args(parse_request(R"({"verb": "apply", "args": {"toml": "x = 1", "dry_run": true}})"));
  EXPECT_EQ(apply.toml, "x = 1");
  EXPECT_FALSE(apply.k8s);
  ApplyArgs k8s = apply_args(parse_request(R"({"verb": "apply", "args": {"k8s": [{"kind": "Service"}]}})"));
  ASSERT_TRUE(k8s.k8s);
  EXPECT_EQ(*k8s.k8s, R"([{"kind":"Service"}])");  // as JSON text, for the Kubernetes reader
  WatchEventArgs event = watch_event_args(
      parse_request(R"({"verb": "watch.event", "args": {"type": "DELETED", "object": {"kind": "Service"}, "dry_run": true}})"));
  EXPECT_EQ(event.event, R"({"object":{"kind":"Service"},"type":"DELETED"})");
  EXPECT_TRUE(event.dry_run);
  EXPECT_EQ(apply.source, "apply");
  EXPECT_TRUE(apply.dry_run);

  EndpointArgs ep = endpoint_args(parse_request(
      R"({"verb": "endpoint.add", "args": {"service": "default/web", "ip": "10.244.1.5", "node": "node-a", "ready": false}})"));
  EXPECT_EQ(ep.service, "default/web");
  EXPECT_EQ(ep.endpoint.ip, *parse_ipv4("10.244.1.5"));
  EXPECT_EQ(ep.endpoint.node, "node-a");
  EXPECT_FALSE(ep.endpoint.ready);
  EXPECT_FALSE(ep.endpoint.serving);  // defaults to ready, as in the config file
  EXPECT_FALSE(ep.dry_run);
}

TEST(ControlProtocolTest, RequestSizeIsBounded) {
  const std::string big = R"({"verb": "apply", "args": {"toml": ")" + std::string(kMaxRequestBytes, 'x') + "\"}}";
  EXPECT_EQ(error_of(big), fmt::format("request larger than {} bytes", kMaxRequestBytes));

  LineReader reader(16);
  reader.feed("{\"a\":1}\n{\"b\"", 12);
  EXPECT_EQ(reader.next_line(), "{\"a\":1}");
  EXPECT_EQ(reader.next_line(), std::nullopt);
  reader.feed(":2}\n", 4);
  EXPECT_EQ(reader.next_line(), "{\"b\":2}");
  const std::string long_line(16, 'y');  // 16 bytes and no newline yet: over the limit of 16 with it
  reader.feed(long_line.data(), long_line.size());
  EXPECT_EQ(reader.next_line(), std::nullopt);
  EXPECT_TRUE(reader.overflowed());
  reader.feed("\n", 1);
  EXPECT_EQ(reader.next_line(), std::nullopt);  // never resynchronises
}

// Found by fuzz_control_request: a request of nested brackets overflowed the
// stack when its args were copied (apply_args) or printed.
TEST(ControlProtocolTest, NestingIsBounded) {
  // The request object and its args, then arrays: `levels` containers in all.
  auto nested = [](size_t levels) {
    return R"({"verb": "apply", "args": {"k8s": )" + std::string(levels - 2, '[') + std::string(levels - 2, ']') + "}}";
  };
  const Request deepest = parse_request(nested(kMaxRequestDepth));
  EXPECT_EQ(parse_request(request_line(deepest.verb, deepest.args)).args, deepest.args);
  EXPECT_EQ(*apply_args(Request(deepest)).k8s, std::string(kMaxRequestDepth - 2, '[') + std::string(kMaxRequestDepth - 2, ']'));
  EXPECT_EQ(error_of(nested(kMaxRequestDepth + 1)), "request nested deeper than 512 levels");
  EXPECT_EQ(error_of(nested(100000)), "request nested deeper than 512 levels");
}

TEST(ControlProtocolTest, LineReaderSplitsFedPieces) {
  LineReader reader;
  const std::string stream = "{\"verb\":\"stats\"}\n{\"verb\":\"port.list\"}\n";
  for (char c : stream) reader.feed(&c, 1);
  EXPECT_EQ(parse_request(*reader.next_line()).verb, "stats");
  EXPECT_EQ(parse_request(*reader.next_line()).verb, "port.list");
  EXPECT_EQ(reader.next_line(), std::nullopt);
  EXPECT_FALSE(reader.overflowed());
}

// A stream of one request with a payload, then another request, fed byte by byte.
TEST(ControlProtocolTest, PayloadFollowsItsLine) {
  const std::string toml = "[node]\nname = \"a\\\"b\"\n";  // raw: quotes, backslash and newlines unescaped
  const std::string k8s = R"({"kind": "List", "items": []})";
  const std::string stream = request_line_with_payload("apply", {{"source", "n.toml"}}, "toml", toml.size()) + toml +
                             request_line_with_payload("apply", {{"dry_run", true}}, "k8s", k8s.size()) + k8s +
                             request_line("stats");
  LineReader reader;
  for (char c : stream) reader.feed(&c, 1);

  Request first = parse_request(*reader.next_line());
  ASSERT_TRUE(first.payload);
  EXPECT_EQ(first.payload->arg, "toml");
  attach_payload(first, *reader.next_bytes(first.payload->bytes));
  EXPECT_FALSE(first.payload);
  ApplyArgs args = apply_args(std::move(first));
  EXPECT_EQ(args.toml, toml);
  EXPECT_EQ(args.source, "n.toml");

  Request second = parse_request(*reader.next_line());
  attach_payload(second, *reader.next_bytes(second.payload->bytes));
  args = apply_args(std::move(second));
  EXPECT_EQ(*args.k8s, k8s);  // the text as sent, parsed once by the Kubernetes reader
  EXPECT_TRUE(args.dry_run);

  EXPECT_EQ(parse_request(*reader.next_line()).verb, "stats");
  EXPECT_EQ(reader.next_line(), std::nullopt);
  EXPECT_EQ(reader.next_bytes(1), std::nullopt);
}

TEST(ControlProtocolTest, BadPayloadsAreRefused) {
  auto line = [](const json& payload, const json& args = json::object()) {
    return json{{"verb", "apply"}, {"args", args}, {"payload", payload}}.dump();
  };
  // A refused line that announced a payload ends the connection (PayloadRequestError).
  auto payload_error_of = [](const std::string& l) -> std::string {
    try {
      parse_request(l);
    } catch (const PayloadRequestError& e) {
      return e.what();
    }
    return "(no PayloadRequestError)";
  };
  EXPECT_EQ(payload_error_of(line({{"arg", "toml"}})), "apply: payload: must be {\"arg\": NAME, \"bytes\": COUNT}");
  EXPECT_EQ(payload_error_of(line({{"arg", 1}, {"bytes", 2}})), "apply: payload: arg must be a string");
  EXPECT_EQ(payload_error_of(line({{"arg", "source"}, {"bytes", 2}})),
            "apply: payload: arg \"source\" cannot come as a payload");
  EXPECT_EQ(payload_error_of(line({{"arg", "toml"}, {"bytes", -1}})),
            "apply: payload: bytes must be a non-negative integer");
  EXPECT_EQ(payload_error_of(line({{"arg", "toml"}, {"bytes", 2}}, {{"toml", ""}})),
            "apply: payload: args.toml is given in the line too");
  EXPECT_EQ(payload_error_of(line({{"arg", "k8s"}, {"bytes", kMaxRequestBytes}})),
            fmt::format("apply: payload: request larger than {} bytes", kMaxRequestBytes));
  EXPECT_EQ(payload_error_of(json{{"verb", "stats"}, {"payload", {{"arg", "toml"}, {"bytes", 1}}}}.dump()),
            "stats: payload: arg \"toml\" cannot come as a payload");
  // Also refused as such when the rest of the line is wrong.
  EXPECT_EQ(payload_error_of(line({{"arg", "toml"}, {"bytes", 1}}, {{"dry_run", "yes"}})),
            "apply: args.dry_run: must be true or false");

  // The payload itself is judged by its reader: the TOML parser, the
  // Kubernetes reader (K8sJsonParser, K8sState); the protocol only carries it.
  auto attach_error_of = [&](const std::string& arg, const std::string& bytes) -> std::string {
    Request r = parse_request(line({{"arg", arg}, {"bytes", bytes.size()}}));
    try {
      attach_payload(r, std::string(bytes));
    } catch (const ProtocolError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_EQ(attach_error_of("k8s", "{\"kind\": "), "(accepted)");
  EXPECT_EQ(attach_error_of("toml", "anything at all"), "(accepted)");
  Request k8s = parse_request(line({{"arg", "k8s"}, {"bytes", 3}}));
  attach_payload(k8s, "[1]");
  EXPECT_EQ(k8s.json_payload, std::make_pair(std::string("k8s"), std::string("[1]")));
  EXPECT_FALSE(k8s.args.contains("k8s"));
}

TEST(ControlProtocolTest, ReplyAndRequestLines) {
  EXPECT_EQ(ok_line({{"flows", 3}}), "{\"ok\":true,\"result\":{\"flows\":3}}\n");
  EXPECT_EQ(error_line("bad \"x\""), "{\"error\":\"bad \\\"x\\\"\",\"ok\":false}\n");
  const std::string line = request_line("conntrack.list", {{"limit", 7}});
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(conntrack_list_args(parse_request(line)).limit, 7u);
}

TEST(ControlProtocolTest, PeerCredentials) {
  EXPECT_TRUE(peer_allowed(0, 1000));
  EXPECT_TRUE(peer_allowed(1000, 1000));
  EXPECT_FALSE(peer_allowed(1001, 1000));
  EXPECT_TRUE(peer_allowed(0, 0));
  EXPECT_FALSE(peer_allowed(1000, 0));
}

TEST(ControlProtocolTest, PrometheusExposition) {
  const json stats = {
      {"node", "node-a"},
      {"ports", {{{"name", "up0"}, {"role", "uplink"}, {"rx", 10}, {"tx", 7}, {"tx_dropped", 1}},
                 {{"name", "pod0"}, {"role", "pod"}, {"rx", 3}, {"tx", 2}, {"tx_dropped", 0}}}},
      {"drops", {{"no_route", 4}, {"ttl_exceeded", 0}}},
      {"stages", {{"classify", 13}}},
      {"workers", {{{"id", 0}, {"packets", 13}, {"cycles_per_packet", 250.5}}}},
      {"conntrack", {{"flows", 2}, {"capacity", 1024}, {"created", 5}}},
      {"services", 3},
      {"control", {{"fdb_entries", 1}, {"fdb_learned", 2}}}};
  const std::string text = stats_to_prometheus(stats);
  for (const char* expected : {
           "# TYPE kdp_port_rx_packets_total counter\n",
           "kdp_port_rx_packets_total{port=\"up0\",role=\"uplink\"} 10\n",
           "kdp_port_rx_packets_total{port=\"pod0\",role=\"pod\"} 3\n",
           "kdp_port_tx_dropped_total{port=\"up0\",role=\"uplink\"} 1\n",
           "kdp_drops_total{reason=\"no_route\"} 4\n",
           "kdp_drops_total{reason=\"ttl_exceeded\"} 0\n",
           "kdp_stage_packets_total{stage=\"classify\"} 13\n",
           "kdp_worker_cycles_per_packet{worker=\"0\"} 250.5\n",
           "# TYPE kdp_conntrack_flows gauge\n",
           "kdp_conntrack_flows 2\n",
           "kdp_conntrack_created_total 5\n",
           "kdp_service_frontends 3\n",
           "kdp_fdb_entries 1\n",
           "kdp_control_fdb_learned_total 2\n",
       })
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\nin:\n" << text;
  // One HELP/TYPE per family, however many samples.
  EXPECT_EQ(text.find("# TYPE kdp_port_rx_packets_total"), text.rfind("# TYPE kdp_port_rx_packets_total"));
}

// ---- desired-state edits -----------------------------------------------------

constexpr std::string_view kNode =
    "[node]\n"
    "name = \"node-a\"\n"
    "node_ip = \"192.168.50.10/24\"\n"
    "pod_cidr = \"10.244.1.0/24\"\n"
    "cluster_cidr = \"10.244.0.0/16\"\n"
    "service_cidr = \"10.96.0.0/12\"\n"
    "[workers]\n"
    "lcores = [1]\n"
    "[[port]]\n"
    "name = \"up0\"\n"
    "role = \"uplink\"\n"
    "device = \"net_null0\"\n"
    "[[service]]\n"
    "name = \"default/web\"\n"
    "cluster_ip = \"10.96.0.10\"\n"
    "  [[service.port]]\n"
    "  port = 80\n"
    "  [[service.endpoint]]\n"
    "  ip = \"10.244.1.5\"\n";

Config node(std::string_view extra = "") { return parse_config(std::string(kNode) + std::string(extra), "node.toml"); }

std::string config_error(auto&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(DesiredStateTest, ImmutableDifferenceNamesTheKey) {
  const Config running = node();
  EXPECT_EQ(immutable_difference(running, node()), std::nullopt);
  // Routes, static neighbours and services may change.
  EXPECT_EQ(immutable_difference(running, node("[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.11\"\n"
                                              "[[neighbor]]\nip = \"192.168.50.11\"\nmac = \"02:00:00:00:0b:01\"\n")),
            std::nullopt);
  std::string text(kNode);
  auto changed = [&](std::string_view from, std::string_view to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return immutable_difference(running, parse_config(t, "new.toml"));
  };
  EXPECT_EQ(changed("10.244.1.0/24", "10.244.3.0/24"), "node.pod_cidr");
  EXPECT_EQ(changed("192.168.50.10/24", "192.168.50.10/25"), "node.node_ip");
  EXPECT_EQ(changed("lcores = [1]", "lcores = [2]"), "workers.lcores");
  EXPECT_EQ(changed("lcores = [1]", "lcores = [1]\nrealtime_priority = 10"), "workers.realtime_priority");
  EXPECT_EQ(changed("net_null0", "net_null1"), "port[0].device");
  EXPECT_EQ(changed("device = \"net_null0\"", "device = \"net_null0\"\nmtu = 1400"), "port[0].mtu");
  EXPECT_EQ(immutable_difference(running, node("[nat]\nmasquerade_all = true\n")), "nat.masquerade_all");
  EXPECT_EQ(immutable_difference(running, node("[control]\nsocket = \"/tmp/x.sock\"\n")), "control.socket");
}

TEST(DesiredStateTest, WithEndpointAddsOrReplaces) {
  const Config running = node();
  EndpointConfig ep;
  ep.ip = *parse_ipv4("10.244.1.6");
  ep.node = "node-a";
  Config next = running;
  next.services[0] = with_endpoint(running, "default/web", ep);
  ASSERT_EQ(next.services[0].endpoints.size(), 2u);
  EXPECT_EQ(running.services[0].endpoints.size(), 1u);  // the running one is untouched
  ep.ready = ep.serving = false;
  next.services[0] = with_endpoint(next, "default/web", ep);
  ASSERT_EQ(next.services[0].endpoints.size(), 2u);
  EXPECT_FALSE(next.services[0].endpoints[1].ready);
  next.services[0] = without_endpoint(next, "default/web", *parse_ipv4("10.244.1.5"));
  ASSERT_EQ(next.services[0].endpoints.size(), 1u);
  EXPECT_EQ(next.services[0].endpoints[0].ip, *parse_ipv4("10.244.1.6"));
  EXPECT_EQ(next.services[0].name, "default/web");
}

TEST(DesiredStateTest, EndpointEditsAreValidated) {
  const Config running = node();
  EndpointConfig ep;
  ep.ip = *parse_ipv4("10.244.1.6");
  EXPECT_EQ(config_error([&] { with_endpoint(running, "default/nope", ep); }),
            "endpoint.service: no service is named \"default/nope\"");
  ep.ip = *parse_ipv4("127.0.0.1");
  EXPECT_EQ(config_error([&] { with_endpoint(running, "default/web", ep); }),
            "endpoint.ip: must be a unicast address, got 127.0.0.1 (loopback range 127.0.0.0/8)");
  ep.ip = *parse_ipv4("10.96.0.20");
  EXPECT_EQ(config_error([&] { with_endpoint(running, "default/web", ep); }),
            "endpoint.ip: 10.96.0.20 is inside node.service_cidr 10.96.0.0/12");
  ep.ip = *parse_ipv4("10.244.1.6");
  ep.node = "bad node";
  EXPECT_EQ(config_error([&] { with_endpoint(running, "default/web", ep); }),
            "endpoint.node: may contain only letters, digits, '.', '_' and '-', got \"bad node\"");
  ep.node = "";
  ep.serving = false;
  EXPECT_EQ(config_error([&] { with_endpoint(running, "default/web", ep); }),
            "endpoint.serving: must be true when ready is true (a ready endpoint is serving)");
  EXPECT_EQ(config_error([&] { without_endpoint(running, "default/web", *parse_ipv4("10.244.1.9")); }),
            "endpoint.ip: 10.244.1.9 is not an endpoint of \"default/web\"");
}

TEST(DesiredStateTest, RouteAndServiceEdits) {
  const Config running = node();
  RouteConfig route;
  route.prefix = *parse_ipv4_prefix("10.250.0.0/16");
  route.via = *parse_ipv4("192.168.50.11");
  Config next = running;
  next.routes = with_route(running, route);
  ASSERT_EQ(next.routes.size(), running.routes.size() + 1);
  EXPECT_EQ(next.routes.back().port, "up0");  // the first uplink, as in [[route]]
  EXPECT_EQ(config_error([&] { with_route(next, route); }),
            "route.prefix: 10.250.0.0/16 is already routed by route[" + std::to_string(running.routes.size()) + "]");
  route.prefix = *parse_ipv4_prefix("10.244.1.0/25");
  EXPECT_EQ(config_error([&] { with_route(running, route); }),
            "route.prefix: 10.244.1.0/25 lies inside node.pod_cidr 10.244.1.0/24");
  route.prefix = *parse_ipv4_prefix("10.251.0.0/16");
  route.via = *parse_ipv4("10.244.1.1");
  EXPECT_EQ(config_error([&] { with_route(running, route); }),
            "route.via: 10.244.1.1 is this node's pod gateway address (node.gateway_ip)");
  route.via = *parse_ipv4("192.168.50.11");
  route.port = "pod0";
  const Config with_pod_port = node("[[port]]\nname = \"pod0\"\nrole = \"pod\"\ndevice = \"net_null1\"\n");
  EXPECT_EQ(config_error([&] { with_route(with_pod_port, route); }),
            "route.port: \"pod0\" is a pod port; routes must leave through an uplink port");
  next.routes = without_route(next, *parse_ipv4_prefix("10.250.0.0/16"));
  EXPECT_EQ(next.routes.size(), running.routes.size());
  EXPECT_EQ(config_error([&] { without_route(running, *parse_ipv4_prefix("10.250.0.0/16")); }),
            "route.prefix: no route for 10.250.0.0/16 (connected and local routes cannot be removed)");

  EXPECT_EQ(service_index(running, "default/web"), 0u);
  EXPECT_EQ(config_error([&] { service_index(running, "default/nope"); }),
            "service: no service is named \"default/nope\"");
}

TEST(ControlProtocolTest, ServiceRouteAndSnatVerbs) {
  Request r = parse_request(R"({"verb": "route.add", "args": {"prefix": "10.250.0.0/16", "via": "192.168.50.11"}})");
  RouteArgs route = route_args(r);
  EXPECT_EQ(route.route.prefix.to_string(), "10.250.0.0/16");
  EXPECT_EQ(route.route.via, *parse_ipv4("192.168.50.11"));
  EXPECT_TRUE(route.route.port.empty());
  EXPECT_FALSE(route.dry_run);
  EXPECT_EQ(error_of(R"({"verb": "route.add", "args": {"prefix": "10.250.0.0/33", "via": "192.168.50.11"}})"),
            "route.add: args.prefix: must be an IPv4 prefix (\"a.b.c.d/len\")");
  EXPECT_EQ(error_of(R"({"verb": "route.add", "args": {"prefix": "10.250.0.0/16"}})"),
            "route.add: args.via: required argument is missing");
  EXPECT_EQ(error_of(R"({"verb": "route.del", "args": {"prefix": "10.250.0.0/16", "via": "1.2.3.4"}})"),
            "route.del: args.via: unknown argument");
  ServiceArgs service = service_args(parse_request(R"({"verb": "service.del", "args": {"service": "a/b", "dry_run": true}})"));
  EXPECT_EQ(service.service, "a/b");
  EXPECT_TRUE(service.dry_run);
  EXPECT_EQ(error_of(R"({"verb": "service.get", "args": {}})"), "service.get: args.service: required argument is missing");
  EXPECT_EQ(list_limit(parse_request(R"({"verb": "snat.list", "args": {"limit": 7}})")), 7u);
  ConntrackListArgs list = conntrack_list_args(
      parse_request(R"({"verb": "conntrack.list", "args": {"dst": "10.244.1.5", "service": "a/b"}})"));
  EXPECT_EQ(list.filter.dst, parse_ipv4("10.244.1.5"));
  EXPECT_EQ(list.filter.service, "a/b");
  EXPECT_EQ(list.limit, kDefaultConntrackListLimit);
  for (const char* verb : {"apply", "watch.event", "endpoint.add", "endpoint.del", "service.del", "route.add", "route.del",
                           "pod.add", "pod.del"})
    EXPECT_TRUE(changes_state(verb)) << verb;
  for (const char* verb : {"stats", "service.get", "snat.list", "conntrack.list", "nope"})
    EXPECT_FALSE(changes_state(verb)) << verb;
}

TEST(ControlProtocolTest, UpdateLatencyHistograms) {
  const json stats = {{"updates",
                       {{"applied", 2},
                        {"failed", 1},
                        {"apply_seconds", {{"count", 2}, {"sum", 0.5}, {"buckets", {{0.001, 1}, {1, 2}}}}},
                        {"live_seconds", {{"count", 2}, {"sum", 0.0002}, {"buckets", {{0.001, 2}, {1, 2}}}}}}}};
  const std::string text = stats_to_prometheus(stats);
  EXPECT_NE(text.find("# TYPE kdp_update_apply_seconds histogram\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kdp_update_apply_seconds_bucket{le=\"0.001\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kdp_update_apply_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kdp_update_apply_seconds_sum 0.5\nkdp_update_apply_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(text.find("kdp_update_live_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kdp_update_failures_total 1\n"), std::string::npos) << text;
}

TEST(ControlProtocolTest, PollGapHistogramPerWorker) {
  auto gaps = [](int count, int over_1ms) {
    return json{{"count", count}, {"sum", 0.25}, {"buckets", {{0.001, count - over_1ms}, {0.002, count}}}};
  };
  const json stats = {{"workers",
                       {{{"id", 0}, {"longest_poll_gap_s", 0.0015}, {"poll_gap_s", gaps(100, 1)}},
                        {{"id", 1}, {"longest_poll_gap_s", 0.0002}, {"poll_gap_s", gaps(50, 0)}}}}};
  const std::string text = stats_to_prometheus(stats);
  for (const char* expected : {
           "kdp_worker_longest_poll_gap_seconds{worker=\"0\"} 0.0015\n",
           "# TYPE kdp_worker_poll_gap_seconds histogram\n",
           "kdp_worker_poll_gap_seconds_bucket{worker=\"0\",le=\"0.001\"} 99\n",
           "kdp_worker_poll_gap_seconds_bucket{worker=\"0\",le=\"+Inf\"} 100\n",
           "kdp_worker_poll_gap_seconds_sum{worker=\"0\"} 0.25\nkdp_worker_poll_gap_seconds_count{worker=\"0\"} 100\n",
           "kdp_worker_poll_gap_seconds_bucket{worker=\"1\",le=\"0.002\"} 50\n",
       })
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\nin:\n" << text;
  // Both workers' series under one HELP/TYPE.
  EXPECT_EQ(text.find("# TYPE kdp_worker_poll_gap_seconds"), text.rfind("# TYPE kdp_worker_poll_gap_seconds"));
}

// ---- pod.add / pod.del / pod.list ---------------------------------------------

TEST(ControlProtocolTest, PodVerbsTakeTypedArgs) {
  PodAddArgs add = pod_add_args(parse_request(
      R"({"verb": "pod.add", "args": {"name": "default/web-1", "iface": "veth1a2b", "ip": "10.244.1.7/24",
          "mac": "02:00:0a:f4:01:07", "dry_run": true}})"));
  EXPECT_EQ(add.name, "default/web-1");
  EXPECT_EQ(add.iface, "veth1a2b");
  EXPECT_EQ(add.ip, *parse_ipv4("10.244.1.7"));
  EXPECT_EQ(add.prefix_len, uint8_t{24});
  EXPECT_EQ(add.mac, parse_mac("02:00:0a:f4:01:07"));
  EXPECT_TRUE(add.dry_run);
  // A plain address, no MAC: both optional.
  add = pod_add_args(parse_request(R"({"verb": "pod.add", "args": {"name": "a/b", "iface": "e", "ip": "10.244.1.8"}})"));
  EXPECT_EQ(add.ip, *parse_ipv4("10.244.1.8"));
  EXPECT_EQ(add.prefix_len, std::nullopt);
  EXPECT_EQ(add.mac, std::nullopt);
  EXPECT_FALSE(add.dry_run);

  PodDelArgs del = pod_del_args(parse_request(R"({"verb": "pod.del", "args": {"name": "default/web-1"}})"));
  EXPECT_EQ(del.name, "default/web-1");
  EXPECT_FALSE(del.dry_run);
  EXPECT_EQ(parse_request(R"({"verb": "pod.list"})").verb, "pod.list");
}

TEST(ControlProtocolTest, PodArgsAreValidatedNamingTheField) {
  auto add = [](const std::string& args) { return error_of(R"({"verb": "pod.add", "args": )" + args + "}"); };
  const std::string ok = R"("name": "ns/p", "iface": "veth0", "ip": "10.244.1.7")";
  EXPECT_EQ(add("{" + ok + "}"), "(accepted)");
  EXPECT_EQ(add(R"({"iface": "veth0", "ip": "10.244.1.7"})"), "pod.add: args.name: required argument is missing");
  EXPECT_EQ(add(R"({"name": "ns/p", "ip": "10.244.1.7"})"), "pod.add: args.iface: required argument is missing");
  EXPECT_EQ(add(R"({"name": "ns/p", "iface": "veth0"})"), "pod.add: args.ip: required argument is missing");
  EXPECT_EQ(add(R"({"name": "pod", "iface": "veth0", "ip": "10.244.1.7"})"),
            "pod.add: args.name: must be a pod name (\"namespace/pod\"), got \"pod\"");
  EXPECT_EQ(add(R"({"name": "a/b/c", "iface": "veth0", "ip": "10.244.1.7"})"),
            "pod.add: args.name: must be a pod name (\"namespace/pod\"), got \"a/b/c\"");
  EXPECT_EQ(add(R"({"name": 7, "iface": "veth0", "ip": "10.244.1.7"})"),
            "pod.add: args.name: must be a pod name (\"namespace/pod\")");
  // The interface name goes into a device string: separators would add device arguments.
  const std::string iface_problem =
      "pod.add: args.iface: must be an interface name (1 to 15 characters, none of \"/,=:\" or white space), got ";
  for (const char* bad : {"", "veth0,qpairs=8", "a=b", "a/b", "a b", "a:b", "sixteen-chars-xx", ".."})
    EXPECT_EQ(add(std::string(R"({"name": "ns/p", "ip": "10.244.1.7", "iface": ")") + bad + "\"}"),
              iface_problem + "\"" + bad + "\"")
        << bad;
  EXPECT_EQ(add(R"({"name": "ns/p", "ip": "10.244.1.7", "iface": "fifteen-chars-x"})"), "(accepted)");
  const std::string ip_problem = "pod.add: args.ip: must be an IPv4 address (\"a.b.c.d\" or \"a.b.c.d/len\")";
  for (const char* bad : {"10.244.1", "10.244.1.300", "10.244.1.7/33", "10.244.1.7/", "/24", "pod"})
    EXPECT_EQ(add(std::string(R"({"name": "ns/p", "iface": "veth0", "ip": ")") + bad + "\"}"), ip_problem) << bad;
  EXPECT_EQ(add(R"({"name": "ns/p", "iface": "veth0", "ip": 167772167})"), ip_problem);
  EXPECT_EQ(add("{" + ok + R"(, "mac": "02:00:00:00:00:0g"})"),
            "pod.add: args.mac: must be a MAC address (\"xx:xx:xx:xx:xx:xx\"), got \"02:00:00:00:00:0g\"");
  EXPECT_EQ(add("{" + ok + R"(, "mac": "02:00:00:00:00"})"),
            "pod.add: args.mac: must be a MAC address (\"xx:xx:xx:xx:xx:xx\"), got \"02:00:00:00:00\"");
  EXPECT_EQ(add("{" + ok + R"(, "mac": "01:00:5e:00:00:01"})"),
            "pod.add: args.mac: must be a unicast MAC address, got 01:00:5e:00:00:01");
  EXPECT_EQ(add("{" + ok + R"(, "mac": "00:00:00:00:00:00"})"),
            "pod.add: args.mac: must be a unicast MAC address, got 00:00:00:00:00:00");
  EXPECT_EQ(add("{" + ok + R"(, "dry_run": "yes"})"), "pod.add: args.dry_run: must be true or false");
  EXPECT_EQ(add("{" + ok + R"(, "netns": "/proc/1/ns/net"})"), "pod.add: args.netns: unknown argument");

  EXPECT_EQ(error_of(R"({"verb": "pod.del", "args": {}})"), "pod.del: args.name: required argument is missing");
  EXPECT_EQ(error_of(R"({"verb": "pod.del", "args": {"name": "p"}})"),
            "pod.del: args.name: must be a pod name (\"namespace/pod\"), got \"p\"");
  EXPECT_EQ(error_of(R"({"verb": "pod.list", "args": {"name": "a/b"}})"), "pod.list: args.name: unknown argument");
}

}  // namespace
}  // namespace kdp::control
