// Unit tests of the node configuration: parsing, defaults and every validation
// rule, each with its exact message, plus the address parsers it relies on.
#include "ctrl/config.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace kdp {
namespace {

// The smallest valid file. Tests edit it by line number, so the numbers are
// part of the fixture:
constexpr std::string_view kMinimal =
    "[node]\n"                            //  1
    "name = \"node-a\"\n"                 //  2
    "node_ip = \"192.168.50.10\"\n"       //  3
    "pod_cidr = \"10.244.1.0/24\"\n"      //  4
    "cluster_cidr = \"10.244.0.0/16\"\n"  //  5
    "[workers]\n"                         //  6
    "lcores = [1]\n"                      //  7
    "[[port]]\n"                          //  8
    "name = \"up0\"\n"                    //  9
    "role = \"uplink\"\n"                 // 10
    "device = \"net_pcap0\"\n";           // 11; appended text starts on line 12

// Splits into lines, applies `edit` to the list, joins again.
template <typename Edit>
std::string edit_lines(std::string_view text, Edit edit) {
  std::vector<std::string> lines;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  edit(lines);
  std::string joined;
  for (const std::string& line : lines) joined += line + "\n";
  return joined;
}

// Line numbers count from 1, as in the messages.
std::string replace_line(std::string_view text, size_t line_number, std::string_view replacement) {
  return edit_lines(text, [&](std::vector<std::string>& lines) { lines.at(line_number - 1) = replacement; });
}

std::string insert_line(std::string_view text, size_t line_number, std::string_view inserted) {
  return edit_lines(text, [&](std::vector<std::string>& lines) {
    lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(line_number - 1), std::string(inserted));
  });
}

std::string remove_line(std::string_view text, size_t line_number) {
  return edit_lines(text, [&](std::vector<std::string>& lines) {
    lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(line_number - 1));
  });
}

std::string append(std::string_view text, std::string_view more) { return std::string(text) + std::string(more); }

// The message parse_config rejects `text` with, or "(accepted)".
std::string error_of(std::string_view text) {
  try {
    parse_config(text, "node.toml");
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "(accepted)";
}

MacAddr mac(std::string_view text) { return parse_mac(text).value(); }
Ipv4 ip(std::string_view text) { return parse_ipv4(text).value(); }
Ipv4Prefix prefix(std::string_view text) { return parse_ipv4_prefix(text).value(); }

// ---- Accepted files -------------------------------------------------------

TEST(ConfigTest, FullFileSetsEveryField) {
  const Config config = parse_config(R"([node]
name = "node-a"
node_ip = "192.168.50.10/24"
pod_cidr = "10.244.1.0/24"
gateway_ip = "10.244.1.254"
gateway_mac = "02:00:00:00:01:01"
cluster_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"

[eal]
args = ["--no-huge", "-m", "512", "--no-pci"]
file_prefix = "kdp-a"

[workers]
lcores = [2, 3]
main_lcore = 1
idle_sleep_us = 50

[mbufs]
pool_size = 8192
cache_size = 128
rx_desc = 512
tx_desc = 2048

[dataplane]
vlan = "strip"
icmp_errors_per_s = 0

[bridge]
fdb_max = 1024
aging_s = 60

[neighbors]
max = 256
reachable_s = 20
stale_s = 40
hold_packets = 8
retries = 5
retry_ms = 500

[[port]]
name = "up0"
role = "uplink"
device = "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"
mac = "02:00:00:00:0a:01"

[[port]]
name = "pod0"
role = "pod"
device = "net_pcap1,rx_pcap=pod.pcap"

[[route]]
prefix = "10.244.2.0/24"
via = "192.168.50.11"
port = "up0"

[[route]]
prefix = "0.0.0.0/0"
via = "192.168.50.1"

[[neighbor]]
ip = "192.168.50.11"
mac = "02:00:00:00:0b:01"
port = "up0"

[[neighbor]]
ip = "10.244.1.7"
mac = "02:00:00:00:0c:07"
)",
                                     "full.toml");

  EXPECT_EQ(config.source, "full.toml");
  EXPECT_EQ(config.node.name, "node-a");
  EXPECT_EQ(config.node.node_ip, ip("192.168.50.10"));
  EXPECT_EQ(config.node.node_prefix_len, 24);
  EXPECT_EQ(config.node.pod_cidr, prefix("10.244.1.0/24"));
  EXPECT_EQ(config.node.gateway_ip, ip("10.244.1.254"));
  EXPECT_EQ(config.node.gateway_mac, mac("02:00:00:00:01:01"));
  EXPECT_EQ(config.node.cluster_cidr, prefix("10.244.0.0/16"));
  EXPECT_EQ(config.node.service_cidr, prefix("10.96.0.0/12"));

  EXPECT_EQ(config.eal.args, (std::vector<std::string>{"--no-huge", "-m", "512", "--no-pci"}));
  EXPECT_EQ(config.eal.file_prefix, "kdp-a");

  EXPECT_EQ(config.workers.lcores, (std::vector<unsigned>{2, 3}));
  EXPECT_EQ(config.workers.main_lcore, 1u);
  EXPECT_EQ(config.workers.idle_sleep_us, 50u);

  EXPECT_EQ(config.mbufs.pool_size, 8192u);
  EXPECT_EQ(config.mbufs.cache_size, 128u);
  EXPECT_EQ(config.mbufs.rx_desc, 512u);
  EXPECT_EQ(config.mbufs.tx_desc, 2048u);

  EXPECT_EQ(config.dataplane.vlan, VlanPolicy::Strip);
  EXPECT_EQ(config.dataplane.icmp_errors_per_s, 0u);

  EXPECT_EQ(config.bridge.fdb_max, 1024u);
  EXPECT_EQ(config.bridge.aging_s, 60u);

  EXPECT_EQ(config.neighbor.max, 256u);
  EXPECT_EQ(config.neighbor.reachable_s, 20u);
  EXPECT_EQ(config.neighbor.stale_s, 40u);
  EXPECT_EQ(config.neighbor.hold_packets, 8u);
  EXPECT_EQ(config.neighbor.retries, 5u);
  EXPECT_EQ(config.neighbor.retry_ms, 500u);

  ASSERT_EQ(config.ports.size(), 2u);
  EXPECT_EQ(config.ports[0].name, "up0");
  EXPECT_EQ(config.ports[0].role, PortRole::Uplink);
  EXPECT_EQ(config.ports[0].device, "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap");
  EXPECT_EQ(config.ports[0].mac, mac("02:00:00:00:0a:01"));
  EXPECT_EQ(config.ports[1].name, "pod0");
  EXPECT_EQ(config.ports[1].role, PortRole::Pod);
  EXPECT_EQ(config.ports[1].device, "net_pcap1,rx_pcap=pod.pcap");
  EXPECT_EQ(config.ports[1].mac, std::nullopt);

  ASSERT_EQ(config.routes.size(), 2u);
  EXPECT_EQ(config.routes[0].prefix, prefix("10.244.2.0/24"));
  EXPECT_EQ(config.routes[0].via, ip("192.168.50.11"));
  EXPECT_EQ(config.routes[0].port, "up0");
  EXPECT_EQ(config.routes[1].prefix, prefix("0.0.0.0/0"));
  EXPECT_EQ(config.routes[1].via, ip("192.168.50.1"));
  EXPECT_EQ(config.routes[1].port, "up0");

  ASSERT_EQ(config.neighbors.size(), 2u);
  EXPECT_EQ(config.neighbors[0].ip, ip("192.168.50.11"));
  EXPECT_EQ(config.neighbors[0].mac, mac("02:00:00:00:0b:01"));
  EXPECT_EQ(config.neighbors[0].port, "up0");
  EXPECT_EQ(config.neighbors[1].ip, ip("10.244.1.7"));
  EXPECT_EQ(config.neighbors[1].mac, mac("02:00:00:00:0c:07"));
  EXPECT_EQ(config.neighbors[1].port, "");
}

TEST(ConfigTest, MinimalFileGetsDefaults) {
  const Config config = parse_config(kMinimal, "node.toml");
  const Config::Node& node = config.node;
  EXPECT_EQ(config.source, "node.toml");
  EXPECT_EQ(node.node_prefix_len, 32);
  EXPECT_EQ(node.gateway_ip, ip("10.244.1.1"));           // first host of pod_cidr
  EXPECT_EQ(node.gateway_mac, mac("02:00:0a:f4:01:01"));  // 02:00 + 10.244.1.1
  EXPECT_EQ(node.service_cidr, std::nullopt);
  EXPECT_TRUE(config.eal.args.empty());
  EXPECT_EQ(config.eal.file_prefix, "");
  EXPECT_EQ(config.workers.lcores, std::vector<unsigned>{1});
  EXPECT_EQ(config.workers.main_lcore, 0u);
  EXPECT_EQ(config.workers.idle_sleep_us, 0u);
  EXPECT_EQ(config.mbufs.pool_size, 0u);
  EXPECT_EQ(config.mbufs.cache_size, 256u);
  EXPECT_EQ(config.mbufs.rx_desc, 1024u);
  EXPECT_EQ(config.mbufs.tx_desc, 1024u);
  EXPECT_EQ(config.dataplane.vlan, VlanPolicy::Drop);
  EXPECT_EQ(config.dataplane.icmp_errors_per_s, 1000u);
  EXPECT_EQ(config.bridge.fdb_max, 4096u);
  EXPECT_EQ(config.bridge.aging_s, 300u);
  EXPECT_EQ(config.neighbor.max, 4096u);
  EXPECT_EQ(config.neighbor.reachable_s, 30u);
  EXPECT_EQ(config.neighbor.stale_s, 60u);
  EXPECT_EQ(config.neighbor.hold_packets, 16u);
  EXPECT_EQ(config.neighbor.retries, 3u);
  EXPECT_EQ(config.neighbor.retry_ms, 1000u);
  EXPECT_TRUE(config.routes.empty());
  EXPECT_TRUE(config.neighbors.empty());
}

TEST(ConfigTest, DefaultGatewayMacFollowsExplicitGatewayIp) {
  const Config config = parse_config(insert_line(kMinimal, 6, "gateway_ip = \"10.244.1.200\""), "node.toml");
  EXPECT_EQ(config.node.gateway_ip, ip("10.244.1.200"));
  EXPECT_EQ(config.node.gateway_mac, mac("02:00:0a:f4:01:c8"));
}

TEST(ConfigTest, RoutePortDefaultsToFirstUplink) {
  const Config config = parse_config(append(kMinimal, R"([[port]]
name = "pod0"
role = "pod"
device = "net_pcap1"
[[port]]
name = "up1"
role = "uplink"
device = "net_pcap2"
[[route]]
prefix = "10.244.2.0/24"
via = "192.168.50.11"
)"),
                                     "node.toml");
  ASSERT_EQ(config.routes.size(), 1u);
  EXPECT_EQ(config.routes[0].port, "up0");
}

TEST(ConfigTest, RoutePortDefaultSkipsLeadingPodPorts) {
  // The first port becomes a pod port; the uplink declared after it is the default.
  std::string text = replace_line(replace_line(kMinimal, 9, "name = \"pod0\""), 10, "role = \"pod\"");
  text += "[[port]]\nname = \"up1\"\nrole = \"uplink\"\ndevice = \"net_pcap1\"\n";
  text += "[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.11\"\n";
  EXPECT_EQ(parse_config(text, "node.toml").routes[0].port, "up1");
}

TEST(ConfigTest, FindPort) {
  const Config config = parse_config(kMinimal, "node.toml");
  ASSERT_NE(config.find_port("up0"), nullptr);
  EXPECT_EQ(config.find_port("up0")->device, "net_pcap0");
  EXPECT_EQ(config.find_port("up1"), nullptr);
  EXPECT_EQ(config.find_port(""), nullptr);
}

TEST(ConfigTest, PodOnlyNodeNeedsNoUplinkWithoutRoutes) {
  const Config config = parse_config(replace_line(kMinimal, 10, "role = \"pod\""), "node.toml");
  EXPECT_EQ(config.ports[0].role, PortRole::Pod);
}

TEST(ConfigTest, NodeIpPrefixLengthBounds) {
  EXPECT_EQ(parse_config(replace_line(kMinimal, 3, "node_ip = \"192.168.50.10/32\""), "n").node.node_prefix_len, 32);
  EXPECT_EQ(parse_config(replace_line(kMinimal, 3, "node_ip = \"192.168.50.10/1\""), "n").node.node_prefix_len, 1);
  EXPECT_EQ(error_of(replace_line(kMinimal, 3, "node_ip = \"192.168.50.10/0\"")),
            "node.toml:3: node.node_ip: prefix length must be between 1 and 32, got 0");
  EXPECT_EQ(error_of(replace_line(kMinimal, 3, "node_ip = \"192.168.50.10/33\"")),
            "node.toml:3: node.node_ip: not an IPv4 address (a.b.c.d or a.b.c.d/len): \"192.168.50.10/33\"");
}

// ---- Syntax, unknown keys, types -----------------------------------------

TEST(ConfigTest, SyntaxErrorNamesLineAndColumn) {
  EXPECT_EQ(
      error_of("[node]\nname = \"a\nx = 1\n"),
      "node.toml:2:10: syntax error: Error while parsing string: unescaped control characters other than TAB (U+0009) "
      "are explicitly prohibited");
}

TEST(ConfigTest, UnknownKeyInTable) {
  EXPECT_EQ(error_of(insert_line(kMinimal, 3, "nmae = \"x\"")), "node.toml:3: node.nmae: unknown key");
}

TEST(ConfigTest, UnknownTopLevelTable) {
  EXPECT_EQ(error_of(append(kMinimal, "[nodes]\nname = \"x\"\n")), "node.toml:12: nodes: unknown key");
  EXPECT_EQ(error_of(append(kMinimal, "[[ports]]\n")), "node.toml:12: ports: unknown key");
}

TEST(ConfigTest, UnknownKeyInArrayElementIsIndexed) {
  EXPECT_EQ(
      error_of(append(kMinimal, "[[port]]\nname = \"up1\"\nrole = \"uplink\"\ndevice = \"net_pcap1\"\nspeed = 10\n")),
      "node.toml:16: port[1].speed: unknown key");
}

TEST(ConfigTest, EarliestUnknownKeyIsReported) {
  // toml++ keeps keys sorted by name; the message must follow the file instead.
  EXPECT_EQ(error_of(insert_line(insert_line(kMinimal, 2, "zzz = 1"), 3, "aaa = 2")),
            "node.toml:2: node.zzz: unknown key");
}

TEST(ConfigTest, WrongTypesNameTheExpectedType) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 2, "name = 5")), "node.toml:2: node.name: must be a string");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [1, \"2\"]")),
            "node.toml:7: workers.lcores: must be an array of integers");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = 1")),
            "node.toml:7: workers.lcores: must be an array of integers");
  EXPECT_EQ(error_of(append(kMinimal, "[eal]\nargs = \"--no-huge\"\n")),
            "node.toml:13: eal.args: must be an array of strings");
  EXPECT_EQ(error_of(append(kMinimal, "[mbufs]\nrx_desc = 512.0\n")),
            "node.toml:13: mbufs.rx_desc: must be an integer");
  // Top-level keys go before the first table header.
  EXPECT_EQ(error_of(insert_line(kMinimal, 1, "mbufs = 3")), "node.toml:1: mbufs: must be a table ([mbufs])");
}

TEST(ConfigTest, PortMustBeAnArrayOfTables) {
  // Rename the [[port]] header to a plain table.
  EXPECT_EQ(error_of(replace_line(kMinimal, 8, "[port]")), "node.toml:8: port: must be an array of tables ([[port]])");
}

TEST(ConfigTest, SingularNeighborTablePointsToNeighbors) {
  EXPECT_EQ(error_of(append(kMinimal, "[neighbor]\nmax = 100\n")),
            "node.toml:12: neighbor: must be an array of tables ([[neighbor]]); neighbour settings go in [neighbors]");
}

// ---- [node] ---------------------------------------------------------------

TEST(ConfigTest, MissingNodeTable) {
  EXPECT_EQ(error_of("[workers]\nlcores = [1]\n"), "node.toml: node: required table [node] is missing");
}

TEST(ConfigTest, MissingRequiredKeyPointsAtTableHeader) {
  EXPECT_EQ(error_of(remove_line(kMinimal, 2)), "node.toml:1: node.name: required key is missing");
  EXPECT_EQ(error_of(remove_line(kMinimal, 3)), "node.toml:1: node.node_ip: required key is missing");
  EXPECT_EQ(error_of(remove_line(kMinimal, 4)), "node.toml:1: node.pod_cidr: required key is missing");
  EXPECT_EQ(error_of(remove_line(kMinimal, 5)), "node.toml:1: node.cluster_cidr: required key is missing");
}

TEST(ConfigTest, MissingKeyInInlineTablePointsAtTheTable) {
  std::string text = replace_line(remove_line(remove_line(remove_line(remove_line(kMinimal, 5), 4), 3), 2), 1,
                                  "node = { node_ip = \"192.168.50.10\" }");
  EXPECT_EQ(error_of(text), "node.toml:1: node.name: required key is missing");
}

TEST(ConfigTest, NodeNameRules) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 2, "name = \"\"")), "node.toml:2: node.name: must not be empty");
  EXPECT_EQ(error_of(replace_line(kMinimal, 2, "name = \"node a\"")),
            "node.toml:2: node.name: may contain only letters, digits, '.', '_' and '-', got \"node a\"");
  EXPECT_EQ(error_of(replace_line(kMinimal, 2, "name = \"" + std::string(64, 'n') + "\"")),
            "node.toml:2: node.name: must be at most 63 characters, got 64");
  EXPECT_EQ(parse_config(replace_line(kMinimal, 2, "name = \"" + std::string(63, 'n') + "\""), "n").node.name,
            std::string(63, 'n'));
  EXPECT_EQ(parse_config(replace_line(kMinimal, 2, "name = \"Node_1.a-b\""), "n").node.name, "Node_1.a-b");
}

TEST(ConfigTest, NodeIpMustBeAnAddress) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 3, "node_ip = \"192.168.50\"")),
            "node.toml:3: node.node_ip: not an IPv4 address (a.b.c.d or a.b.c.d/len): \"192.168.50\"");
}

TEST(ConfigTest, PodCidrRules) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 4, "pod_cidr = \"10.244.1.5/24\"")),
            "node.toml:4: node.pod_cidr: host bits must be zero: \"10.244.1.5/24\" (the network is 10.244.1.0/24)");
  EXPECT_EQ(error_of(replace_line(kMinimal, 4, "pod_cidr = \"10.244.1.0\"")),
            "node.toml:4: node.pod_cidr: not an IPv4 prefix (a.b.c.d/len with host bits zero): \"10.244.1.0\"");
  EXPECT_EQ(error_of(replace_line(kMinimal, 4, "pod_cidr = \"10.244.1.0/31\"")),
            "node.toml:4: node.pod_cidr: prefix length must be between 8 and 30, got 31");
  EXPECT_EQ(error_of(replace_line(replace_line(kMinimal, 4, "pod_cidr = \"10.0.0.0/7\""), 5,
                                  "cluster_cidr = \"10.0.0.0/7\"")),
            "node.toml:4: node.pod_cidr: prefix length must be between 8 and 30, got 7");
  EXPECT_EQ(parse_config(replace_line(kMinimal, 4, "pod_cidr = \"10.244.1.0/30\""), "n").node.gateway_ip,
            ip("10.244.1.1"));
}

TEST(ConfigTest, GatewayIpMustBeAHostOfPodCidr) {
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_ip = \"10.244.2.1\"")),
            "node.toml:6: node.gateway_ip: 10.244.2.1 is outside node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_ip = \"10.244.1.0\"")),
            "node.toml:6: node.gateway_ip: 10.244.1.0 is the network address of node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_ip = \"10.244.1.255\"")),
            "node.toml:6: node.gateway_ip: 10.244.1.255 is the broadcast address of node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_ip = \"10.244.1.01\"")),
            "node.toml:6: node.gateway_ip: not an IPv4 address: \"10.244.1.01\"");
}

TEST(ConfigTest, GatewayMacMustBeUnicastAndNonZero) {
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_mac = \"01:00:5e:00:00:01\"")),
            "node.toml:6: node.gateway_mac: must be a unicast address, got 01:00:5e:00:00:01");
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_mac = \"00:00:00:00:00:00\"")),
            "node.toml:6: node.gateway_mac: must not be all zeros");
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "gateway_mac = \"02-00-00-00-01-01\"")),
            "node.toml:6: node.gateway_mac: not a MAC address (xx:xx:xx:xx:xx:xx): \"02-00-00-00-01-01\"");
}

TEST(ConfigTest, ClusterCidrMustContainPodCidr) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 5, "cluster_cidr = \"10.245.0.0/16\"")),
            "node.toml:5: node.cluster_cidr: 10.245.0.0/16 does not contain node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(error_of(replace_line(kMinimal, 5, "cluster_cidr = \"10.244.1.0/25\"")),
            "node.toml:5: node.cluster_cidr: 10.244.1.0/25 does not contain node.pod_cidr 10.244.1.0/24");
}

TEST(ConfigTest, ServiceCidrMustNotOverlapClusterCidr) {
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "service_cidr = \"10.0.0.0/8\"")),
            "node.toml:6: node.service_cidr: 10.0.0.0/8 overlaps node.cluster_cidr 10.244.0.0/16");
  EXPECT_EQ(error_of(insert_line(kMinimal, 6, "service_cidr = \"10.244.128.0/20\"")),
            "node.toml:6: node.service_cidr: 10.244.128.0/20 overlaps node.cluster_cidr 10.244.0.0/16");
}

TEST(ConfigTest, NodeIpMustBeOutsideClusterAndServiceRanges) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 3, "node_ip = \"10.244.7.1\"")),
            "node.toml:3: node.node_ip: 10.244.7.1 is inside node.cluster_cidr 10.244.0.0/16");
  EXPECT_EQ(error_of(insert_line(replace_line(kMinimal, 3, "node_ip = \"10.96.0.5/24\""), 6,
                                 "service_cidr = \"10.96.0.0/12\"")),
            "node.toml:3: node.node_ip: 10.96.0.5 is inside node.service_cidr 10.96.0.0/12");
}

// ---- [eal] ----------------------------------------------------------------

TEST(ConfigTest, EalArgsRejectOptionsKdpSets) {
  auto with_args = [](std::string_view args) {
    return error_of(append(kMinimal, "[eal]\nargs = [\"--no-huge\", " + std::string(args) + "]\n"));
  };
  EXPECT_EQ(with_args("\"-l\", \"1-3\""),
            "node.toml:13: eal.args[1]: \"-l\" is set by kdp from [workers] lcores; remove it");
  EXPECT_EQ(with_args("\"-l1-3\""), "node.toml:13: eal.args[1]: \"-l\" is set by kdp from [workers] lcores; remove it");
  EXPECT_EQ(with_args("\"-c\", \"0x3\""),
            "node.toml:13: eal.args[1]: \"-c\" is set by kdp from [workers] lcores; remove it");
  EXPECT_EQ(with_args("\"--lcores=1@2\""),
            "node.toml:13: eal.args[1]: \"--lcores\" is set by kdp from [workers] lcores; remove it");
  EXPECT_EQ(with_args("\"--main-lcore\", \"0\""),
            "node.toml:13: eal.args[1]: \"--main-lcore\" is set by kdp from [workers] main_lcore; remove it");
  EXPECT_EQ(with_args("\"--vdev=net_tap0\""),
            "node.toml:13: eal.args[1]: \"--vdev\" is set by kdp from [[port]] device; remove it");
  EXPECT_EQ(with_args("\"-a\", \"0000:01:00.0\""),
            "node.toml:13: eal.args[1]: \"-a\" is set by kdp from [[port]] device; remove it");
  EXPECT_EQ(with_args("\"--allow\", \"0000:01:00.0\""),
            "node.toml:13: eal.args[1]: \"--allow\" is set by kdp from [[port]] device; remove it");
  EXPECT_EQ(with_args("\"--file-prefix=x\""),
            "node.toml:13: eal.args[1]: \"--file-prefix\" is set by kdp from eal.file_prefix; remove it");
}

TEST(ConfigTest, EalArgsAcceptOtherOptions) {
  const Config config = parse_config(
      append(kMinimal, "[eal]\nargs = [\"--log-level=lib.eal:debug\", \"--lcores-not-really\", \"-b\", \"x\"]\n"), "n");
  // "--lcores-not-really" is not "--lcores" or "--lcores=...": EAL would reject it, kdp need not.
  EXPECT_EQ(config.eal.args.size(), 4u);
}

TEST(ConfigTest, EalFilePrefixRules) {
  EXPECT_EQ(error_of(append(kMinimal, "[eal]\nfile_prefix = \"\"\n")),
            "node.toml:13: eal.file_prefix: must not be empty");
  EXPECT_EQ(error_of(append(kMinimal, "[eal]\nfile_prefix = \"a/b\"\n")),
            "node.toml:13: eal.file_prefix: may contain only letters, digits, '.', '_' and '-', got \"a/b\"");
}

// ---- [workers] ------------------------------------------------------------

TEST(ConfigTest, MissingWorkersTable) {
  EXPECT_EQ(error_of(remove_line(remove_line(kMinimal, 7), 6)),
            "node.toml: workers: required table [workers] is missing");
}

TEST(ConfigTest, WorkerLcoreRules) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "main_lcore = 0")),
            "node.toml:6: workers.lcores: required key is missing");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = []")),
            "node.toml:7: workers.lcores: must list at least one worker lcore");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [1, 2, 1]")),
            "node.toml:7: workers.lcores[2]: lcore 1 is listed twice");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [1, 0]")),
            "node.toml:7: workers.lcores[1]: lcore 0 is workers.main_lcore, which runs the control thread");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [1,\n  1024]")),
            "node.toml:8: workers.lcores[1]: must be between 0 and 1023, got 1024");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [-1]")),
            "node.toml:7: workers.lcores[0]: must be between 0 and 1023, got -1");
  EXPECT_EQ(parse_config(replace_line(kMinimal, 7, "lcores = [1023]"), "n").workers.lcores,
            std::vector<unsigned>{1023});
}

TEST(ConfigTest, WorkerScalarRanges) {
  EXPECT_EQ(error_of(insert_line(kMinimal, 8, "main_lcore = 1")),
            "node.toml:7: workers.lcores[0]: lcore 1 is workers.main_lcore, which runs the control thread");
  EXPECT_EQ(error_of(insert_line(kMinimal, 8, "main_lcore = -2")),
            "node.toml:8: workers.main_lcore: must be between 0 and 1023, got -2");
  EXPECT_EQ(error_of(insert_line(kMinimal, 8, "idle_sleep_us = 100001")),
            "node.toml:8: workers.idle_sleep_us: must be between 0 and 100000, got 100001");
  EXPECT_EQ(parse_config(insert_line(kMinimal, 8, "idle_sleep_us = 100000"), "n").workers.idle_sleep_us, 100000u);
  EXPECT_EQ(error_of(insert_line(kMinimal, 8, "realtime_priority = 100")),
            "node.toml:8: workers.realtime_priority: must be between 0 and 99, got 100");
  EXPECT_EQ(error_of(insert_line(kMinimal, 8, "realtime_priority = \"high\"")),
            "node.toml:8: workers.realtime_priority: must be an integer");
  EXPECT_EQ(parse_config(insert_line(kMinimal, 8, "realtime_priority = 99"), "n").workers.realtime_priority, 99u);
  EXPECT_EQ(parse_config(kMinimal, "n").workers.realtime_priority, 0u);  // the default policy
}

// ---- [mbufs], [dataplane], [bridge], [neighbors] --------------------------

TEST(ConfigTest, MbufRules) {
  auto mbufs = [](std::string_view line) { return error_of(append(kMinimal, "[mbufs]\n" + std::string(line) + "\n")); };
  EXPECT_EQ(mbufs("pool_size = 1023"),
            "node.toml:13: mbufs.pool_size: must be 0 (automatic) or at least 1024, got 1023");
  EXPECT_EQ(mbufs("pool_size = -1"), "node.toml:13: mbufs.pool_size: must be between 0 and 4294967295, got -1");
  EXPECT_EQ(mbufs("cache_size = 513"), "node.toml:13: mbufs.cache_size: must be between 0 and 512, got 513");
  EXPECT_EQ(mbufs("rx_desc = 1000"), "node.toml:13: mbufs.rx_desc: must be a power of two, got 1000");
  EXPECT_EQ(mbufs("rx_desc = 32"), "node.toml:13: mbufs.rx_desc: must be between 64 and 16384, got 32");
  EXPECT_EQ(mbufs("tx_desc = 32768"), "node.toml:13: mbufs.tx_desc: must be between 64 and 16384, got 32768");
  EXPECT_EQ(mbufs("pool_size = 1024"), "(accepted)");
  EXPECT_EQ(mbufs("rx_desc = 64"), "(accepted)");
  EXPECT_EQ(mbufs("tx_desc = 16384"), "(accepted)");
}

TEST(ConfigTest, DataplaneRules) {
  EXPECT_EQ(error_of(append(kMinimal, "[dataplane]\nvlan = \"pass\"\n")),
            "node.toml:13: dataplane.vlan: must be \"drop\" or \"strip\", got \"pass\"");
  EXPECT_EQ(error_of(append(kMinimal, "[dataplane]\nicmp_errors_per_s = 1000001\n")),
            "node.toml:13: dataplane.icmp_errors_per_s: must be between 0 and 1000000, got 1000001");
  EXPECT_EQ(parse_config(append(kMinimal, "[dataplane]\nvlan = \"drop\"\n"), "n").dataplane.vlan, VlanPolicy::Drop);
}

TEST(ConfigTest, BridgeRules) {
  EXPECT_EQ(error_of(append(kMinimal, "[bridge]\nfdb_max = 15\n")),
            "node.toml:13: bridge.fdb_max: must be between 16 and 16777216, got 15");
  EXPECT_EQ(error_of(append(kMinimal, "[bridge]\naging_s = 0\n")),
            "node.toml:13: bridge.aging_s: must be between 1 and 1000000, got 0");
}

TEST(ConfigTest, NeighborSettingsRules) {
  auto neighbors = [](std::string_view line) {
    return error_of(append(kMinimal, "[neighbors]\n" + std::string(line) + "\n"));
  };
  EXPECT_EQ(neighbors("max = 16777217"), "node.toml:13: neighbors.max: must be between 16 and 16777216, got 16777217");
  EXPECT_EQ(neighbors("reachable_s = 0"), "node.toml:13: neighbors.reachable_s: must be between 1 and 86400, got 0");
  EXPECT_EQ(neighbors("stale_s = 86401"), "node.toml:13: neighbors.stale_s: must be between 1 and 86400, got 86401");
  EXPECT_EQ(neighbors("hold_packets = 4097"),
            "node.toml:13: neighbors.hold_packets: must be between 1 and 4096, got 4097");
  EXPECT_EQ(neighbors("retries = 0"), "node.toml:13: neighbors.retries: must be between 1 and 100, got 0");
  EXPECT_EQ(neighbors("retry_ms = 9"), "node.toml:13: neighbors.retry_ms: must be between 10 and 60000, got 9");
  EXPECT_EQ(neighbors("mx = 9"), "node.toml:13: neighbors.mx: unknown key");
}

// ---- [[port]] -------------------------------------------------------------

TEST(ConfigTest, AtLeastOnePortIsRequired) {
  std::string no_ports = edit_lines(kMinimal, [](std::vector<std::string>& lines) { lines.resize(7); });
  EXPECT_EQ(error_of(no_ports), "node.toml: port: at least one [[port]] is required");
  EXPECT_EQ(error_of("port = []\n" + no_ports), "node.toml: port: at least one [[port]] is required");
}

TEST(ConfigTest, PortFieldRules) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 10, "role = \"bridge\"")),
            "node.toml:10: port[0].role: must be \"uplink\", \"pod\" or \"host\", got \"bridge\"");
  EXPECT_EQ(error_of(remove_line(kMinimal, 10)), "node.toml:8: port[0].role: required key is missing");
  EXPECT_EQ(error_of(remove_line(kMinimal, 9)), "node.toml:8: port[0].name: required key is missing");
  EXPECT_EQ(error_of(remove_line(kMinimal, 11)), "node.toml:8: port[0].device: required key is missing");
  EXPECT_EQ(error_of(replace_line(kMinimal, 11, "device = \"\"")), "node.toml:11: port[0].device: must not be empty");
  EXPECT_EQ(error_of(replace_line(kMinimal, 9, "name = \"" + std::string(32, 'p') + "\"")),
            "node.toml:9: port[0].name: must be at most 31 characters, got 32");
  EXPECT_EQ(error_of(replace_line(kMinimal, 9, "name = \"up:0\"")),
            "node.toml:9: port[0].name: may contain only letters, digits, '.', '_' and '-', got \"up:0\"");
  EXPECT_EQ(error_of(append(kMinimal, "mac = \"03:00:00:00:0a:01\"\n")),
            "node.toml:12: port[0].mac: must be a unicast address, got 03:00:00:00:0a:01");
  EXPECT_EQ(error_of(append(kMinimal, "mac = \"00:00:00:00:00:00\"\n")),
            "node.toml:12: port[0].mac: must not be all zeros");
  // A frame of the largest MTU still fits one 2 KB mbuf.
  EXPECT_EQ(error_of(append(kMinimal, "mtu = 67\n")), "node.toml:12: port[0].mtu: must be between 68 and 2030, got 67");
  EXPECT_EQ(error_of(append(kMinimal, "mtu = 9000\n")),
            "node.toml:12: port[0].mtu: must be between 68 and 2030, got 9000");
  EXPECT_EQ(parse_config(append(kMinimal, "mtu = 1400\n"), "node.toml").ports[0].mtu, 1400u);
  EXPECT_EQ(parse_config(kMinimal, "node.toml").ports[0].mtu, 0u) << "the device's own";
}

// The host port: the node's own stack, one per node; no route or static
// neighbour goes through it.
TEST(ConfigTest, HostPortRules) {
  const std::string host = "[[port]]\nname = \"host0\"\nrole = \"host\"\ndevice = \"net_tap0,iface=kdp-host\"\n";
  const Config config = parse_config(append(kMinimal, host), "node.toml");
  EXPECT_EQ(config.ports[1].role, PortRole::Host);
  EXPECT_EQ(port_role_name(config.ports[1].role), "host");
  EXPECT_EQ(error_of(append(kMinimal, host + "[[port]]\nname = \"host1\"\nrole = \"host\"\ndevice = \"net_tap1\"\n")),
            "node.toml:18: port[2].role: port[1] is already the host port; the node has one network stack");
  EXPECT_EQ(error_of(append(kMinimal, host + "[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.11\"\n"
                                             "port = \"host0\"\n")),
            "node.toml:19: route[0].port: \"host0\" is a host port; routes must leave through an uplink port");
  EXPECT_EQ(error_of(append(kMinimal, host + "[[neighbor]]\nip = \"192.168.50.11\"\nmac = \"02:00:00:00:0b:01\"\n"
                                             "port = \"host0\"\n")),
            "node.toml:19: neighbor[0].port: \"host0\" is the host port, whose one neighbour is the node itself");
}

// A reply to the node's own connection comes to node_ip on the kernel's
// ephemeral port: kdp's SNAT ports and node ports must keep out of that range.
TEST(ConfigTest, HostPortConflictsWithKernelEphemeralPorts) {
  Config config = parse_config(kMinimal, "node.toml");
  EXPECT_EQ(host_port_conflict(config, PortRange{32768, 60999}).value_or("none"),
            "nat.snat_ports: 32768-60999 overlaps the kernel's ephemeral ports 32768-60999 (sysctl "
            "net.ipv4.ip_local_port_range), which the node's own connections through the host port use; make the "
            "two ranges disjoint");
  EXPECT_EQ(host_port_conflict(config, PortRange{61000, 65000}).value_or("none"), "none");
  EXPECT_EQ(host_port_conflict(config, PortRange{30000, 30100}).value_or("none").substr(0, 44),
            "nat.node_port_range: 30000-32767 overlaps th");
  config.nat.snat_ports = PortRange{20000, 29999};
  EXPECT_EQ(host_port_conflict(config, PortRange{32768, 60999}).value_or("none"), "none");
}

TEST(ConfigTest, PortNamesAndDevicesAreUnique) {
  EXPECT_EQ(error_of(append(kMinimal, "[[port]]\nname = \"up0\"\nrole = \"pod\"\ndevice = \"net_pcap1\"\n")),
            "node.toml:13: port[1].name: \"up0\" is already the name of port[0]");
  // Same device, different arguments: still the same DPDK device.
  EXPECT_EQ(error_of(append(kMinimal, "[[port]]\nname = \"pod0\"\nrole = \"pod\"\ndevice = \"net_pcap0,rx_pcap=x\"\n")),
            "node.toml:15: port[1].device: device \"net_pcap0\" is already used by port[0]");
  // A name that merely starts like another is a different device.
  EXPECT_EQ(error_of(append(kMinimal, "[[port]]\nname = \"pod0\"\nrole = \"pod\"\ndevice = \"net_pcap01\"\n")),
            "(accepted)");
}

// ---- [[route]] ------------------------------------------------------------

std::string route_error(std::string_view prefix_value, std::string_view via_value, std::string_view port_line = "") {
  std::string route =
      "[[route]]\nprefix = \"" + std::string(prefix_value) + "\"\nvia = \"" + std::string(via_value) + "\"\n";
  if (!port_line.empty()) route += std::string(port_line) + "\n";
  return error_of(append(kMinimal, route));  // [[route]] on line 12, prefix 13, via 14, port 15
}

TEST(ConfigTest, RoutePrefixRules) {
  EXPECT_EQ(route_error("10.244.2.1/24", "192.168.50.11"),
            "node.toml:13: route[0].prefix: host bits must be zero: \"10.244.2.1/24\" (the network is 10.244.2.0/24)");
  EXPECT_EQ(route_error("10.244.2.0/33", "192.168.50.11"),
            "node.toml:13: route[0].prefix: not an IPv4 prefix (a.b.c.d/len with host bits zero): \"10.244.2.0/33\"");
  EXPECT_EQ(route_error("10.244.1.0/24", "192.168.50.11"),
            "node.toml:13: route[0].prefix: 10.244.1.0/24 is node.pod_cidr, which is reached over the bridge");
  EXPECT_EQ(route_error("10.244.1.128/25", "192.168.50.11"),
            "node.toml:13: route[0].prefix: 10.244.1.128/25 lies inside node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(error_of(append(kMinimal,
                            "[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.11\"\n"
                            "[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.12\"\n")),
            "node.toml:16: route[1].prefix: 10.244.2.0/24 is already routed by route[0]");
  EXPECT_EQ(error_of(append(kMinimal, "[[route]]\nvia = \"192.168.50.11\"\n")),
            "node.toml:12: route[0].prefix: required key is missing");
}

TEST(ConfigTest, RouteViaRules) {
  EXPECT_EQ(route_error("10.244.2.0/24", "192.168.50.10"),
            "node.toml:14: route[0].via: 192.168.50.10 is this node's own address (node.node_ip)");
  EXPECT_EQ(route_error("10.244.2.0/24", "10.244.1.1"),
            "node.toml:14: route[0].via: 10.244.1.1 is this node's pod gateway address (node.gateway_ip)");
  EXPECT_EQ(route_error("10.244.2.0/24", "10.244.1.9"),
            "node.toml:14: route[0].via: 10.244.1.9 is inside node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(route_error("10.244.2.0/24", "192.168.50.256"),
            "node.toml:14: route[0].via: not an IPv4 address: \"192.168.50.256\"");
  EXPECT_EQ(error_of(append(kMinimal, "[[route]]\nprefix = \"10.244.2.0/24\"\n")),
            "node.toml:12: route[0].via: required key is missing");
}

TEST(ConfigTest, RoutePortRules) {
  EXPECT_EQ(route_error("10.244.2.0/24", "192.168.50.11", "port = \"up9\""),
            "node.toml:15: route[0].port: no [[port]] is named \"up9\"");
  EXPECT_EQ(route_error("10.244.2.0/24", "192.168.50.11", "port = \"up0\""), "(accepted)");
  EXPECT_EQ(error_of(replace_line(
                append(kMinimal, "[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.11\"\nport = \"up0\"\n"),
                10, "role = \"pod\"")),
            "node.toml:15: route[0].port: \"up0\" is a pod port; routes must leave through an uplink port");
}

TEST(ConfigTest, RouteWithoutAnyUplinkPort) {
  EXPECT_EQ(error_of(replace_line(append(kMinimal, "[[route]]\nprefix = \"10.244.2.0/24\"\nvia = \"192.168.50.11\"\n"),
                                  10, "role = \"pod\"")),
            "node.toml:12: route[0]: no [[port]] has role \"uplink\" to send the route's traffic through");
}

// ---- [[neighbor]] ---------------------------------------------------------

TEST(ConfigTest, StaticNeighborRules) {
  const std::string first = "[[neighbor]]\nip = \"192.168.50.11\"\nmac = \"02:00:00:00:0b:01\"\n";  // lines 12-14
  EXPECT_EQ(error_of(append(kMinimal, first + "[[neighbor]]\nip = \"192.168.50.11\"\nmac = \"02:00:00:00:0b:02\"\n")),
            "node.toml:16: neighbor[1].ip: 192.168.50.11 is already listed in neighbor[0]");
  EXPECT_EQ(error_of(append(kMinimal, "[[neighbor]]\nip = \"192.168.50.11\"\nmac = \"02:00:00:00:0b\"\n")),
            "node.toml:14: neighbor[0].mac: not a MAC address (xx:xx:xx:xx:xx:xx): \"02:00:00:00:0b\"");
  EXPECT_EQ(error_of(append(kMinimal, "[[neighbor]]\nip = \"192.168.50.11\"\nmac = \"ff:ff:ff:ff:ff:ff\"\n")),
            "node.toml:14: neighbor[0].mac: must be a unicast address, got ff:ff:ff:ff:ff:ff");
  EXPECT_EQ(error_of(append(kMinimal, "[[neighbor]]\nip = \"192.168.50.11\"\n")),
            "node.toml:12: neighbor[0].mac: required key is missing");
  EXPECT_EQ(error_of(append(kMinimal, "[[neighbor]]\nmac = \"02:00:00:00:0b:01\"\n")),
            "node.toml:12: neighbor[0].ip: required key is missing");
  EXPECT_EQ(error_of(append(kMinimal, first + "port = \"pod7\"\n")),
            "node.toml:15: neighbor[0].port: no [[port]] is named \"pod7\"");
  EXPECT_EQ(error_of(append(kMinimal, first + "vlan = 5\n")), "node.toml:15: neighbor[0].vlan: unknown key");
}

// ---- [conntrack] ----------------------------------------------------------

TEST(ConfigTest, ConntrackAndNatDefaults) {
  const Config config = parse_config(kMinimal, "node.toml");
  const Config::Conntrack& conntrack = config.conntrack;
  EXPECT_EQ(conntrack.max_flows, 1048576u);
  EXPECT_EQ(conntrack.tcp_syn_sent_s, 120u);
  EXPECT_EQ(conntrack.tcp_syn_recv_s, 60u);
  EXPECT_EQ(conntrack.tcp_established_s, 86400u);
  EXPECT_EQ(conntrack.tcp_fin_wait_s, 120u);
  EXPECT_EQ(conntrack.tcp_close_wait_s, 3600u);
  EXPECT_EQ(conntrack.tcp_last_ack_s, 30u);
  EXPECT_EQ(conntrack.tcp_time_wait_s, 120u);
  EXPECT_EQ(conntrack.tcp_close_s, 10u);
  EXPECT_EQ(conntrack.udp_s, 30u);
  EXPECT_EQ(conntrack.udp_stream_s, 120u);
  EXPECT_EQ(conntrack.icmp_s, 30u);

  const Config::Nat& nat = config.nat;
  EXPECT_TRUE(nat.masquerade_egress);
  EXPECT_FALSE(nat.masquerade_all);
  EXPECT_TRUE(nat.non_masquerade_cidrs.empty());
  EXPECT_EQ(nat.snat_ports, (PortRange{32768, 60999}));
  EXPECT_EQ(nat.node_port_range, (PortRange{30000, 32767}));
  EXPECT_EQ(nat.lb_algorithm, LbAlgorithm::Random);
  EXPECT_TRUE(config.services.empty());
}

TEST(ConfigTest, ConntrackSetsEveryField) {
  const Config conntrack_config = parse_config(append(kMinimal, R"([conntrack]
max_flows = 1024
tcp_syn_sent_s = 1
tcp_syn_recv_s = 2
tcp_established_s = 2592000
tcp_fin_wait_s = 4
tcp_close_wait_s = 5
tcp_last_ack_s = 6
tcp_time_wait_s = 7
tcp_close_s = 8
udp_s = 9
udp_stream_s = 10
icmp_s = 11
)"),
                                               "node.toml");
  const Config::Conntrack& conntrack = conntrack_config.conntrack;
  EXPECT_EQ(conntrack.max_flows, 1024u);
  EXPECT_EQ(conntrack.tcp_syn_sent_s, 1u);
  EXPECT_EQ(conntrack.tcp_syn_recv_s, 2u);
  EXPECT_EQ(conntrack.tcp_established_s, 2592000u);
  EXPECT_EQ(conntrack.tcp_fin_wait_s, 4u);
  EXPECT_EQ(conntrack.tcp_close_wait_s, 5u);
  EXPECT_EQ(conntrack.tcp_last_ack_s, 6u);
  EXPECT_EQ(conntrack.tcp_time_wait_s, 7u);
  EXPECT_EQ(conntrack.tcp_close_s, 8u);
  EXPECT_EQ(conntrack.udp_s, 9u);
  EXPECT_EQ(conntrack.udp_stream_s, 10u);
  EXPECT_EQ(conntrack.icmp_s, 11u);
}

TEST(ConfigTest, ConntrackRules) {
  auto conntrack = [](std::string_view line) {
    return error_of(append(kMinimal, "[conntrack]\n" + std::string(line) + "\n"));
  };
  EXPECT_EQ(conntrack("max_flows = 1023"),
            "node.toml:13: conntrack.max_flows: must be between 1024 and 67108864, got 1023");
  EXPECT_EQ(conntrack("max_flows = 67108865"),
            "node.toml:13: conntrack.max_flows: must be between 1024 and 67108864, got 67108865");
  EXPECT_EQ(conntrack("max_flows = 67108864"), "(accepted)");
  for (std::string_view timeout :
       {"tcp_syn_sent_s", "tcp_syn_recv_s", "tcp_established_s", "tcp_fin_wait_s", "tcp_close_wait_s", "tcp_last_ack_s",
        "tcp_time_wait_s", "tcp_close_s", "udp_s", "udp_stream_s", "icmp_s"}) {
    EXPECT_EQ(conntrack(std::string(timeout) + " = 0"),
              "node.toml:13: conntrack." + std::string(timeout) + ": must be between 1 and 2592000, got 0");
    EXPECT_EQ(conntrack(std::string(timeout) + " = 2592001"),
              "node.toml:13: conntrack." + std::string(timeout) + ": must be between 1 and 2592000, got 2592001");
  }
  EXPECT_EQ(conntrack("tcp_timeout = 5"), "node.toml:13: conntrack.tcp_timeout: unknown key");
  EXPECT_EQ(conntrack("udp_s = \"30\""), "node.toml:13: conntrack.udp_s: must be an integer");
}

// ---- [nat] ----------------------------------------------------------------

std::string nat_error(std::string_view lines) {
  return error_of(append(kMinimal, "[nat]\n" + std::string(lines) + "\n"));
}

TEST(ConfigTest, NatSetsEveryField) {
  const Config config = parse_config(append(kMinimal, R"([nat]
masquerade_egress = true
masquerade_all = true
non_masquerade_cidrs = ["10.0.0.0/8", "192.168.0.0/16"]
snat_ports = "1024-29999"
node_port_range = "30000-32000"
lb_algorithm = "maglev"
)"),
                                     "node.toml");
  EXPECT_TRUE(config.nat.masquerade_egress);
  EXPECT_TRUE(config.nat.masquerade_all);
  EXPECT_EQ(config.nat.non_masquerade_cidrs, (std::vector<Ipv4Prefix>{prefix("10.0.0.0/8"), prefix("192.168.0.0/16")}));
  EXPECT_EQ(config.nat.snat_ports, (PortRange{1024, 29999}));
  EXPECT_EQ(config.nat.node_port_range, (PortRange{30000, 32000}));
  EXPECT_EQ(config.nat.lb_algorithm, LbAlgorithm::Maglev);
  EXPECT_EQ(parse_config(append(kMinimal, "[nat]\nlb_algorithm = \"round_robin\"\nmasquerade_egress = false\n"), "n")
                .nat.lb_algorithm,
            LbAlgorithm::RoundRobin);
}

TEST(ConfigTest, NatRules) {
  EXPECT_EQ(nat_error("masquerade_all = 1"), "node.toml:13: nat.masquerade_all: must be true or false");
  EXPECT_EQ(nat_error("masquerade_egress = \"yes\""), "node.toml:13: nat.masquerade_egress: must be true or false");
  EXPECT_EQ(nat_error("non_masquerade_cidrs = [\"10.0.0.0/8\", \"10.1.2.3/16\"]"),
            "node.toml:13: nat.non_masquerade_cidrs[1]: host bits must be zero: \"10.1.2.3/16\" (the network is "
            "10.1.0.0/16)");
  EXPECT_EQ(nat_error("non_masquerade_cidrs = [\"10.0.0.0\"]"),
            "node.toml:13: nat.non_masquerade_cidrs[0]: not an IPv4 prefix (a.b.c.d/len with host bits zero): "
            "\"10.0.0.0\"");
  EXPECT_EQ(nat_error("non_masquerade_cidrs = \"10.0.0.0/8\""),
            "node.toml:13: nat.non_masquerade_cidrs: must be an array of strings");
  EXPECT_EQ(nat_error("masquerade_egress = false\nnon_masquerade_cidrs = [\"10.0.0.0/8\"]"),
            "node.toml:14: nat.non_masquerade_cidrs: has no effect when nat.masquerade_egress is false");
  EXPECT_EQ(nat_error("masquerade_egress = false\nnon_masquerade_cidrs = []"), "(accepted)");
  EXPECT_EQ(nat_error("lb_algorithm = \"wrr\""),
            "node.toml:13: nat.lb_algorithm: must be \"random\", \"round_robin\" or \"maglev\", got \"wrr\"");
  EXPECT_EQ(nat_error("masquerade = true"), "node.toml:13: nat.masquerade: unknown key");
}

TEST(ConfigTest, NatPortRanges) {
  const std::string snat_problem =
      "node.toml:13: nat.snat_ports: must be \"low-high\" with 1024 <= low <= high <= 65535, got ";
  EXPECT_EQ(nat_error("snat_ports = \"1023-2000\""), snat_problem + "\"1023-2000\"");
  EXPECT_EQ(nat_error("snat_ports = \"40000-39999\""), snat_problem + "\"40000-39999\"");
  EXPECT_EQ(nat_error("snat_ports = \"40000-65536\""), snat_problem + "\"40000-65536\"");
  EXPECT_EQ(nat_error("snat_ports = \"40000\""), snat_problem + "\"40000\"");
  EXPECT_EQ(nat_error("snat_ports = \"40000-\""), snat_problem + "\"40000-\"");
  EXPECT_EQ(nat_error("snat_ports = \"+40000-50000\""), snat_problem + "\"+40000-50000\"");
  EXPECT_EQ(nat_error("snat_ports = \"040000-50000\""), snat_problem + "\"040000-50000\"");
  EXPECT_EQ(nat_error("snat_ports = \"40000 - 50000\""), snat_problem + "\"40000 - 50000\"");
  EXPECT_EQ(nat_error("snat_ports = 40000"), "node.toml:13: nat.snat_ports: must be a string");
  EXPECT_EQ(parse_config(append(kMinimal, "[nat]\nsnat_ports = \"65535-65535\"\n"), "n").nat.snat_ports,
            (PortRange{65535, 65535}));
  EXPECT_EQ(parse_config(append(kMinimal, "[nat]\nsnat_ports = \"1024-1024\"\n"), "n").nat.snat_ports,
            (PortRange{1024, 1024}));
  EXPECT_EQ(nat_error("node_port_range = \"0-100\""),
            "node.toml:13: nat.node_port_range: must be \"low-high\" with 1 <= low <= high <= 65535, got \"0-100\"");
  EXPECT_EQ(parse_config(append(kMinimal, "[nat]\nnode_port_range = \"80-1000\"\n"), "n").nat.node_port_range,
            (PortRange{80, 1000}));
  // Replies to SNAT'd connections come back to node_ip on the SNAT port.
  EXPECT_EQ(nat_error("snat_ports = \"32000-60999\""),
            "node.toml:13: nat.snat_ports: 32000-60999 overlaps nat.node_port_range 30000-32767");
  EXPECT_EQ(nat_error("node_port_range = \"30000-32768\""),
            "node.toml:13: nat.node_port_range: 30000-32768 overlaps nat.snat_ports 32768-60999");
}

// ---- [[service]] ----------------------------------------------------------

TEST(ConfigTest, ServiceExampleSetsEveryField) {
  const Config config = parse_config(insert_line(append(kMinimal, R"([nat]
lb_algorithm = "round_robin"
[[service]]
name = "default/web"
type = "LoadBalancer"
cluster_ip = "10.96.0.10"
external_ips = ["192.0.2.10", "192.0.2.11"]
load_balancer_ips = ["198.51.100.7"]
load_balancer_source_ranges = ["203.0.113.0/24", "0.0.0.0/0"]
external_traffic_policy = "Local"
internal_traffic_policy = "Local"
session_affinity = "ClientIP"
session_affinity_timeout_s = 600
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
  node_port = 30053
  [[service.port]]
  name = "sig"
  protocol = "SCTP"
  port = 80
  target_port = 9999
  node_port = 30080
  [[service.endpoint]]
  ip = "10.244.1.2"
  node = "node-a"
  ready = true
  serving = true
  terminating = false
  [[service.endpoint]]
  ip = "10.244.2.3"
  node = "node-b"
  ready = false
  [[service.endpoint]]
  ip = "10.244.2.4"
  node = "node-b"
  ready = false
  serving = true
  terminating = true
  [[service.endpoint]]
  ip = "203.0.113.9"
[[service]]
name = "kube-system/kube-dns"
cluster_ip = "10.96.0.53"
  [[service.port]]
  port = 53
  protocol = "UDP"
)"),
                                                 6, "service_cidr = \"10.96.0.0/12\""),
                                     "node.toml");
  ASSERT_EQ(config.services.size(), 2u);
  const ServiceConfig& web = config.services[0];
  EXPECT_EQ(web.name, "default/web");
  EXPECT_EQ(web.type, ServiceType::LoadBalancer);
  EXPECT_EQ(web.cluster_ip, ip("10.96.0.10"));
  EXPECT_EQ(web.external_ips, (std::vector<Ipv4>{ip("192.0.2.10"), ip("192.0.2.11")}));
  EXPECT_EQ(web.load_balancer_ips, std::vector<Ipv4>{ip("198.51.100.7")});
  EXPECT_EQ(web.load_balancer_source_ranges, (std::vector<Ipv4Prefix>{prefix("203.0.113.0/24"), prefix("0.0.0.0/0")}));
  EXPECT_EQ(web.external_traffic_policy, TrafficPolicy::Local);
  EXPECT_EQ(web.internal_traffic_policy, TrafficPolicy::Local);
  EXPECT_EQ(web.session_affinity, SessionAffinity::ClientIP);
  EXPECT_EQ(web.session_affinity_timeout_s, 600u);
  EXPECT_EQ(web.lb_algorithm, LbAlgorithm::Maglev);

  ASSERT_EQ(web.ports.size(), 3u);
  EXPECT_EQ(web.ports[0].name, "http");
  EXPECT_EQ(web.ports[0].protocol, L4Proto::Tcp);
  EXPECT_EQ(web.ports[0].port, 80);
  EXPECT_EQ(web.ports[0].target_port, 8080);
  EXPECT_EQ(web.ports[0].node_port, 30080);
  EXPECT_EQ(web.ports[1].name, "dns");
  EXPECT_EQ(web.ports[1].protocol, L4Proto::Udp);
  EXPECT_EQ(web.ports[1].port, 53);
  EXPECT_EQ(web.ports[1].target_port, 53);  // defaults to port
  EXPECT_EQ(web.ports[1].node_port, 30053);
  // Port and node port numbers are per protocol.
  EXPECT_EQ(web.ports[2].protocol, L4Proto::Sctp);
  EXPECT_EQ(web.ports[2].port, 80);
  EXPECT_EQ(web.ports[2].target_port, 9999);
  EXPECT_EQ(web.ports[2].node_port, 30080);

  ASSERT_EQ(web.endpoints.size(), 4u);
  EXPECT_EQ(web.endpoints[0].ip, ip("10.244.1.2"));
  EXPECT_EQ(web.endpoints[0].node, "node-a");
  EXPECT_TRUE(web.endpoints[0].ready);
  EXPECT_TRUE(web.endpoints[0].serving);
  EXPECT_FALSE(web.endpoints[0].terminating);
  EXPECT_EQ(web.endpoints[1].node, "node-b");
  EXPECT_FALSE(web.endpoints[1].ready);
  EXPECT_FALSE(web.endpoints[1].serving);  // defaults to ready
  EXPECT_FALSE(web.endpoints[1].terminating);
  EXPECT_FALSE(web.endpoints[2].ready);
  EXPECT_TRUE(web.endpoints[2].serving);
  EXPECT_TRUE(web.endpoints[2].terminating);
  EXPECT_EQ(web.endpoints[3].ip, ip("203.0.113.9"));  // outside the cluster
  EXPECT_EQ(web.endpoints[3].node, "");
  EXPECT_TRUE(web.endpoints[3].ready);  // ready and serving default to true
  EXPECT_TRUE(web.endpoints[3].serving);
  EXPECT_FALSE(web.endpoints[3].terminating);

  const ServiceConfig& dns = config.services[1];
  EXPECT_EQ(dns.name, "kube-system/kube-dns");
  EXPECT_EQ(dns.type, ServiceType::ClusterIP);
  EXPECT_EQ(dns.cluster_ip, ip("10.96.0.53"));
  EXPECT_TRUE(dns.external_ips.empty());
  EXPECT_TRUE(dns.load_balancer_ips.empty());
  EXPECT_TRUE(dns.load_balancer_source_ranges.empty());
  EXPECT_EQ(dns.external_traffic_policy, TrafficPolicy::Cluster);
  EXPECT_EQ(dns.internal_traffic_policy, TrafficPolicy::Cluster);
  EXPECT_EQ(dns.session_affinity, SessionAffinity::None);
  EXPECT_EQ(dns.session_affinity_timeout_s, 10800u);
  EXPECT_EQ(dns.lb_algorithm, std::nullopt);  // nat.lb_algorithm applies
  ASSERT_EQ(dns.ports.size(), 1u);
  EXPECT_EQ(dns.ports[0].name, "");  // a lone port may go unnamed
  EXPECT_EQ(dns.ports[0].protocol, L4Proto::Udp);
  EXPECT_EQ(dns.ports[0].node_port, 0);
  EXPECT_TRUE(dns.endpoints.empty());
  EXPECT_EQ(config.nat.lb_algorithm, LbAlgorithm::RoundRobin);
}

// kMinimal with a service range (line 6): appended text starts on line 13.
const std::string kServiceBase = insert_line(kMinimal, 6, "service_cidr = \"10.96.0.0/12\"");

// A NodePort service whose lines the tests below edit by number.
constexpr std::string_view kWebService =
    "[[service]]\n"                  // 13
    "name = \"default/web\"\n"       // 14
    "type = \"NodePort\"\n"          // 15
    "cluster_ip = \"10.96.0.10\"\n"  // 16
    "[[service.port]]\n"             // 17
    "port = 80\n"                    // 18
    "node_port = 30080\n"            // 19
    "[[service.endpoint]]\n"         // 20
    "ip = \"10.244.1.2\"\n";         // 21; appended text starts on line 22

const std::string kWeb = append(kServiceBase, kWebService);

// kWeb and a second service: [[service]] on line 22, name 23, type 24,
// cluster_ip 25, then `lines` from line 26.
std::string second_service(std::string_view lines, std::string_view type = "ClusterIP",
                           std::string_view name = "default/api", std::string_view cluster_ip = "10.96.0.11") {
  return append(kWeb, fmt::format("[[service]]\nname = \"{}\"\ntype = \"{}\"\ncluster_ip = \"{}\"\n{}\n", name, type,
                                  cluster_ip, lines));
}

TEST(ConfigTest, ServiceNameRules) {
  EXPECT_EQ(error_of(kWeb), "(accepted)");
  const std::string format_problem =
      "node.toml:14: service[0].name: must be \"namespace/name\", each a DNS label (lowercase letters, digits and "
      "'-', at most 63 characters), got ";
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"web\"")), format_problem + "\"web\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"Default/web\"")), format_problem + "\"Default/web\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"default/\"")), format_problem + "\"default/\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"/web\"")), format_problem + "\"/web\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"a/b/c\"")), format_problem + "\"a/b/c\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"default/-web\"")), format_problem + "\"default/-web\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"default/web_1\"")), format_problem + "\"default/web_1\"");
  const std::string long_label(64, 'a');
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"default/" + long_label + "\"")),
            format_problem + "\"default/" + long_label + "\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"default/" + std::string(63, 'a') + "\"")), "(accepted)");
  EXPECT_EQ(error_of(replace_line(kWeb, 14, "name = \"kube-system/web-2\"")), "(accepted)");
  EXPECT_EQ(error_of(remove_line(kWeb, 14)), "node.toml:13: service[0].name: required key is missing");
  EXPECT_EQ(error_of(second_service("[[service.port]]\nport = 80", "ClusterIP", "default/web")),
            "node.toml:23: service[1].name: \"default/web\" is already the name of service[0]");
}

TEST(ConfigTest, ServiceStructureRules) {
  EXPECT_EQ(error_of(append(kServiceBase, "[service]\nname = \"default/web\"\n")),
            "node.toml:13: service: must be an array of tables ([[service]])");
  EXPECT_EQ(error_of(insert_line(kWeb, 15, "ports = 1")), "node.toml:15: service[0].ports: unknown key");
  EXPECT_EQ(error_of(replace_line(kWeb, 15, "type = \"External\"")),
            "node.toml:15: service[0].type: must be \"ClusterIP\", \"NodePort\" or \"LoadBalancer\", got \"External\"");
  EXPECT_EQ(error_of(edit_lines(kWeb,
                                [](std::vector<std::string>& lines) {
                                  lines.resize(16);
                                  lines.push_back("port = 80");
                                })),
            "node.toml:17: service[0].port: must be an array of tables ([[service.port]])");
  EXPECT_EQ(error_of(edit_lines(kWeb, [](std::vector<std::string>& lines) { lines.resize(16); })),
            "node.toml:13: service[0].port: at least one [[service.port]] is required");
  EXPECT_EQ(error_of(edit_lines(kWeb,
                                [](std::vector<std::string>& lines) {
                                  lines.resize(16);
                                  lines.push_back("port = []");
                                })),
            "node.toml:17: service[0].port: at least one [[service.port]] is required");
  EXPECT_EQ(error_of(insert_line(edit_lines(kWeb, [](std::vector<std::string>& lines) { lines.resize(19); }), 17,
                                 "endpoint = 1")),
            "node.toml:17: service[0].endpoint: must be an array of tables ([[service.endpoint]])");
  // A service without endpoints is valid: its traffic is rejected.
  EXPECT_EQ(error_of(edit_lines(kWeb, [](std::vector<std::string>& lines) { lines.resize(19); })), "(accepted)");
}

TEST(ConfigTest, ServiceClusterIpRules) {
  EXPECT_EQ(error_of(remove_line(kWeb, 16)), "node.toml:13: service[0].cluster_ip: required key is missing");
  EXPECT_EQ(error_of(replace_line(kWeb, 16, "cluster_ip = \"None\"")),
            "node.toml:16: service[0].cluster_ip: headless services (\"None\") have no cluster IP to serve; leave them "
            "out");
  EXPECT_EQ(error_of(replace_line(kWeb, 16, "cluster_ip = \"10.96.0\"")),
            "node.toml:16: service[0].cluster_ip: not an IPv4 address: \"10.96.0\"");
  EXPECT_EQ(error_of(replace_line(kWeb, 16, "cluster_ip = \"10.112.0.1\"")),
            "node.toml:16: service[0].cluster_ip: 10.112.0.1 is outside node.service_cidr 10.96.0.0/12");
  EXPECT_EQ(
      error_of(second_service("[[service.port]]\nport = 80", "ClusterIP", "default/api", "10.96.0.10")),
      "node.toml:25: service[1].cluster_ip: 10.96.0.10 is already the cluster IP of service[0] (\"default/web\")");

  // Without node.service_cidr: anything unicast outside the pods and the node.
  const std::string no_range = remove_line(kWeb, 6);  // the service is now on lines 12-20
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"172.20.0.1\"")), "(accepted)");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"10.244.9.9\"")),
            "node.toml:15: service[0].cluster_ip: 10.244.9.9 is inside node.cluster_cidr 10.244.0.0/16");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"192.168.50.10\"")),
            "node.toml:15: service[0].cluster_ip: 192.168.50.10 is this node's own address (node.node_ip)");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"127.0.0.1\"")),
            "node.toml:15: service[0].cluster_ip: must be a unicast address, got 127.0.0.1 (loopback range "
            "127.0.0.0/8)");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"0.0.0.0\"")),
            "node.toml:15: service[0].cluster_ip: must be a unicast address, got 0.0.0.0 (\"this network\" range "
            "0.0.0.0/8)");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"169.254.1.1\"")),
            "node.toml:15: service[0].cluster_ip: must be a unicast address, got 169.254.1.1 (link-local range "
            "169.254.0.0/16)");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"239.1.1.1\"")),
            "node.toml:15: service[0].cluster_ip: must be a unicast address, got 239.1.1.1 (multicast range "
            "224.0.0.0/4)");
  EXPECT_EQ(error_of(replace_line(no_range, 15, "cluster_ip = \"255.255.255.255\"")),
            "node.toml:15: service[0].cluster_ip: must be a unicast address, got 255.255.255.255 (reserved range "
            "240.0.0.0/4)");
}

TEST(ConfigTest, ServiceExternalAndLoadBalancerIpRules) {
  auto with_line = [](std::string_view line) { return error_of(insert_line(kWeb, 17, line)); };
  EXPECT_EQ(with_line("external_ips = [\"192.0.2.1\", \"192.0.2.256\"]"),
            "node.toml:17: service[0].external_ips[1]: not an IPv4 address: \"192.0.2.256\"");
  EXPECT_EQ(with_line("external_ips = \"192.0.2.1\""),
            "node.toml:17: service[0].external_ips: must be an array of strings");
  EXPECT_EQ(with_line("external_ips = [\"192.0.2.1\",\n \"192.0.2.1\"]"),
            "node.toml:18: service[0].external_ips[1]: 192.0.2.1 is already listed in service[0].external_ips[0]");
  EXPECT_EQ(with_line("external_ips = [\"10.244.3.3\"]"),
            "node.toml:17: service[0].external_ips[0]: 10.244.3.3 is inside node.cluster_cidr 10.244.0.0/16");
  EXPECT_EQ(with_line("external_ips = [\"224.0.0.1\"]"),
            "node.toml:17: service[0].external_ips[0]: must be a unicast address, got 224.0.0.1 (multicast range "
            "224.0.0.0/4)");
  EXPECT_EQ(with_line("external_ips = [\"192.168.50.10\"]"), "(accepted)");  // the node's own address is fine

  EXPECT_EQ(with_line("load_balancer_ips = [\"198.51.100.7\"]"),
            "node.toml:17: service[0].load_balancer_ips: only type \"LoadBalancer\" services have load balancer IPs");
  EXPECT_EQ(with_line("load_balancer_ips = []"), "(accepted)");
  const std::string load_balancer = replace_line(kWeb, 15, "type = \"LoadBalancer\"");
  EXPECT_EQ(error_of(insert_line(load_balancer, 17, "load_balancer_ips = [\"198.51.100.7\", \"198.51.100.7\"]")),
            "node.toml:17: service[0].load_balancer_ips[1]: 198.51.100.7 is already listed in "
            "service[0].load_balancer_ips[0]");
  EXPECT_EQ(error_of(insert_line(load_balancer, 17, "load_balancer_ips = [\"127.0.0.1\"]")),
            "node.toml:17: service[0].load_balancer_ips[0]: must be a unicast address, got 127.0.0.1 (loopback range "
            "127.0.0.0/8)");
  // A LoadBalancer service without load balancer IPs (still pending) is fine.
  EXPECT_EQ(error_of(load_balancer), "(accepted)");

  EXPECT_EQ(error_of(insert_line(load_balancer, 17, "load_balancer_source_ranges = [\"203.0.113.0/24\"]")),
            "node.toml:17: service[0].load_balancer_source_ranges: has no effect without load_balancer_ips");
  EXPECT_EQ(error_of(insert_line(insert_line(load_balancer, 17, "load_balancer_ips = [\"198.51.100.7\"]"), 18,
                                 "load_balancer_source_ranges = [\"203.0.113.1/24\"]")),
            "node.toml:18: service[0].load_balancer_source_ranges[0]: host bits must be zero: \"203.0.113.1/24\" (the "
            "network is 203.0.113.0/24)");
}

TEST(ConfigTest, ServicePolicyRules) {
  auto with_line = [](std::string_view line) { return error_of(insert_line(kWeb, 17, line)); };
  EXPECT_EQ(with_line("external_traffic_policy = \"local\""),
            "node.toml:17: service[0].external_traffic_policy: must be \"Cluster\" or \"Local\", got \"local\"");
  EXPECT_EQ(with_line("internal_traffic_policy = \"Node\""),
            "node.toml:17: service[0].internal_traffic_policy: must be \"Cluster\" or \"Local\", got \"Node\"");
  EXPECT_EQ(with_line("external_traffic_policy = \"Local\""), "(accepted)");
  EXPECT_EQ(with_line("internal_traffic_policy = \"Local\""), "(accepted)");

  // ETP Local on a ClusterIP service: only with external IPs.
  const std::string cluster_ip = remove_line(remove_line(kWeb, 19), 15);  // lines 13-19 now, port table on 16
  EXPECT_EQ(error_of(insert_line(cluster_ip, 16, "external_traffic_policy = \"Local\"")),
            "node.toml:16: service[0].external_traffic_policy: \"Local\" applies to node ports, load balancer IPs and "
            "external IPs; this \"ClusterIP\" service has no external_ips");
  EXPECT_EQ(error_of(insert_line(insert_line(cluster_ip, 16, "external_traffic_policy = \"Local\""), 16,
                                 "external_ips = [\"192.0.2.1\"]")),
            "(accepted)");
  EXPECT_EQ(error_of(insert_line(cluster_ip, 16, "internal_traffic_policy = \"Local\"")), "(accepted)");

  EXPECT_EQ(with_line("session_affinity = \"Client\""),
            "node.toml:17: service[0].session_affinity: must be \"None\" or \"ClientIP\", got \"Client\"");
  EXPECT_EQ(with_line("session_affinity_timeout_s = 60"),
            "node.toml:17: service[0].session_affinity_timeout_s: only applies with session_affinity = \"ClientIP\"");
  EXPECT_EQ(with_line("session_affinity = \"None\"\nsession_affinity_timeout_s = 60"),
            "node.toml:18: service[0].session_affinity_timeout_s: only applies with session_affinity = \"ClientIP\"");
  EXPECT_EQ(with_line("session_affinity = \"ClientIP\"\nsession_affinity_timeout_s = 0"),
            "node.toml:18: service[0].session_affinity_timeout_s: must be between 1 and 86400, got 0");
  EXPECT_EQ(with_line("session_affinity = \"ClientIP\"\nsession_affinity_timeout_s = 86401"),
            "node.toml:18: service[0].session_affinity_timeout_s: must be between 1 and 86400, got 86401");
  EXPECT_EQ(
      parse_config(insert_line(kWeb, 17, "session_affinity = \"ClientIP\"\nsession_affinity_timeout_s = 86400"), "n")
          .services[0]
          .session_affinity_timeout_s,
      86400u);
  EXPECT_EQ(parse_config(insert_line(kWeb, 17, "session_affinity = \"ClientIP\""), "n")
                .services[0]
                .session_affinity_timeout_s,
            10800u);
  EXPECT_EQ(with_line("lb_algorithm = \"least_conn\""),
            "node.toml:17: service[0].lb_algorithm: must be \"random\", \"round_robin\" or \"maglev\", got "
            "\"least_conn\"");
  EXPECT_EQ(parse_config(insert_line(kWeb, 17, "lb_algorithm = \"random\""), "n").services[0].lb_algorithm,
            LbAlgorithm::Random);
}

TEST(ConfigTest, ServicePortRules) {
  EXPECT_EQ(error_of(replace_line(kWeb, 18, "port = 0")),
            "node.toml:18: service[0].port[0].port: must be between 1 and 65535, got 0");
  EXPECT_EQ(error_of(replace_line(kWeb, 18, "port = 65536")),
            "node.toml:18: service[0].port[0].port: must be between 1 and 65535, got 65536");
  EXPECT_EQ(error_of(remove_line(kWeb, 18)), "node.toml:17: service[0].port[0].port: required key is missing");
  EXPECT_EQ(error_of(insert_line(kWeb, 18, "protocol = \"tcp\"")),
            "node.toml:18: service[0].port[0].protocol: must be \"TCP\", \"UDP\" or \"SCTP\", got \"tcp\"");
  EXPECT_EQ(error_of(insert_line(kWeb, 18, "target_port = 0")),
            "node.toml:18: service[0].port[0].target_port: must be between 1 and 65535, got 0");
  EXPECT_EQ(error_of(insert_line(kWeb, 18, "target_port = \"http\"")),
            "node.toml:18: service[0].port[0].target_port: must be an integer");
  EXPECT_EQ(error_of(insert_line(kWeb, 18, "nodePort = 1")), "node.toml:18: service[0].port[0].nodePort: unknown key");
  EXPECT_EQ(error_of(insert_line(kWeb, 18, "name = \"HTTP\"")),
            "node.toml:18: service[0].port[0].name: must be a DNS label (lowercase letters, digits and '-', at most 63 "
            "characters, starting and ending with a letter or digit), got \"HTTP\"");
  EXPECT_EQ(error_of(insert_line(kWeb, 18, "name = \"http-\"")),
            "node.toml:18: service[0].port[0].name: must be a DNS label (lowercase letters, digits and '-', at most 63 "
            "characters, starting and ending with a letter or digit), got \"http-\"");

  // Several ports: each named, names and (protocol, port) unique.
  const std::string second_port = "[[service.port]]\nname = \"b\"\nport = 81\nnode_port = 30081";     // lines 20-23
  const std::string two_ports = insert_line(insert_line(kWeb, 20, second_port), 18, "name = \"a\"");  // port[1] on 21
  EXPECT_EQ(error_of(two_ports), "(accepted)");
  EXPECT_EQ(error_of(insert_line(kWeb, 20, second_port)),
            "node.toml:17: service[0].port[0].name: required when a service has several ports");
  EXPECT_EQ(error_of(replace_line(two_ports, 22, "name = \"a\"")),
            "node.toml:22: service[0].port[1].name: \"a\" is already the name of service[0].port[0]");
  EXPECT_EQ(error_of(replace_line(two_ports, 23, "port = 80")),
            "node.toml:23: service[0].port[1].port: 80/TCP is already used by service[0].port[0]");
  EXPECT_EQ(error_of(insert_line(replace_line(two_ports, 23, "port = 80"), 24, "protocol = \"UDP\"")), "(accepted)");
}

TEST(ConfigTest, ServiceNodePortRules) {
  EXPECT_EQ(error_of(replace_line(kWeb, 19, "node_port = 29999")),
            "node.toml:19: service[0].port[0].node_port: 29999 is outside nat.node_port_range 30000-32767");
  EXPECT_EQ(error_of(replace_line(kWeb, 19, "node_port = 32768")),
            "node.toml:19: service[0].port[0].node_port: 32768 is outside nat.node_port_range 30000-32767");
  EXPECT_EQ(error_of(replace_line(kWeb, 19, "node_port = 65536")),
            "node.toml:19: service[0].port[0].node_port: must be between 1 and 65535, got 65536");
  EXPECT_EQ(error_of(replace_line(kWeb, 19, "node_port = 30000")), "(accepted)");
  EXPECT_EQ(error_of(replace_line(kWeb, 19, "node_port = 32767")), "(accepted)");
  EXPECT_EQ(error_of(append(replace_line(kWeb, 19, "node_port = 8080"), "[nat]\nnode_port_range = \"8000-9000\"\n")),
            "(accepted)");

  EXPECT_EQ(error_of(remove_line(kWeb, 19)),
            "node.toml:17: service[0].port[0].node_port: required for type \"NodePort\" services (kdp does not "
            "allocate node ports)");
  EXPECT_EQ(error_of(remove_line(replace_line(kWeb, 15, "type = \"LoadBalancer\""), 19)),
            "node.toml:17: service[0].port[0].node_port: required for type \"LoadBalancer\" services (kdp does not "
            "allocate node ports)");
  EXPECT_EQ(error_of(replace_line(kWeb, 15, "type = \"ClusterIP\"")),
            "node.toml:19: service[0].port[0].node_port: type \"ClusterIP\" services have no node ports");
  EXPECT_EQ(error_of(remove_line(kWeb, 15)),  // ClusterIP is the default type
            "node.toml:18: service[0].port[0].node_port: type \"ClusterIP\" services have no node ports");

  // (protocol, node_port) is unique across all services, within one too.
  EXPECT_EQ(error_of(insert_line(insert_line(kWeb, 20, "[[service.port]]\nname = \"b\"\nport = 81\nnode_port = 30080"),
                                 18, "name = \"a\"")),
            "node.toml:24: service[0].port[1].node_port: 30080/TCP is already used by service[0] (\"default/web\")");
  EXPECT_EQ(error_of(second_service("[[service.port]]\nport = 81\nnode_port = 30080", "NodePort")),
            "node.toml:28: service[1].port[0].node_port: 30080/TCP is already used by service[0] (\"default/web\")");
  EXPECT_EQ(error_of(second_service("[[service.port]]\nport = 81\nnode_port = 30080\nprotocol = \"UDP\"", "NodePort")),
            "(accepted)");
}

TEST(ConfigTest, ServiceFrontendsAreUnique) {
  // An external IP equal to another service's cluster IP, on the same port and protocol.
  EXPECT_EQ(error_of(second_service("external_ips = [\"10.96.0.10\"]\n[[service.port]]\nport = 80")),
            "node.toml:26: service[1].external_ips[0]: 10.96.0.10:80/TCP is already served by service[0] "
            "(\"default/web\") as its cluster IP");
  EXPECT_EQ(error_of(second_service("external_ips = [\"10.96.0.10\"]\n[[service.port]]\nport = 81")), "(accepted)");
  // An external IP on node_ip with a port some service uses as a node port.
  EXPECT_EQ(error_of(second_service("external_ips = [\"192.168.50.10\"]\n[[service.port]]\nport = 30080")),
            "node.toml:26: service[1].external_ips[0]: 192.168.50.10:30080/TCP is already served by service[0] "
            "(\"default/web\") as its node port");
  // And the other way round: a node port where an earlier service has that external IP and port.
  EXPECT_EQ(error_of(append(kServiceBase, R"([[service]]
name = "default/web"
cluster_ip = "10.96.0.10"
external_ips = ["192.168.50.10"]
[[service.port]]
port = 30081
[[service]]
name = "default/api"
type = "NodePort"
cluster_ip = "10.96.0.11"
[[service.port]]
port = 80
node_port = 30081
)")),
            "node.toml:25: service[1].port[0].node_port: 192.168.50.10:30081/TCP is already served by service[0] "
            "(\"default/web\") as its external IP");
  // Within one service: an external IP equal to a load balancer IP.
  EXPECT_EQ(error_of(insert_line(replace_line(kWeb, 15, "type = \"LoadBalancer\""), 17,
                                 "external_ips = [\"192.0.2.1\"]\nload_balancer_ips = [\"192.0.2.1\"]")),
            "node.toml:18: service[0].load_balancer_ips[0]: 192.0.2.1:80/TCP is already served by service[0] "
            "(\"default/web\") as its external IP");
  // Two services sharing an external IP on different ports is fine.
  EXPECT_EQ(error_of(append(insert_line(kWeb, 17, "external_ips = [\"192.0.2.1\"]"),
                            "[[service]]\nname = \"default/api\"\ncluster_ip = \"10.96.0.11\"\n"
                            "external_ips = [\"192.0.2.1\"]\n[[service.port]]\nport = 443\n")),
            "(accepted)");
}

TEST(ConfigTest, ServiceEndpointRules) {
  auto endpoint = [](std::string_view lines) { return error_of(replace_line(kWeb, 21, lines)); };
  EXPECT_EQ(endpoint("ip = \"10.244.1\""),
            "node.toml:21: service[0].endpoint[0].ip: not an IPv4 address: \"10.244.1\"");
  EXPECT_EQ(endpoint("node = \"node-a\""), "node.toml:20: service[0].endpoint[0].ip: required key is missing");
  EXPECT_EQ(endpoint("ip = \"10.96.0.5\""),
            "node.toml:21: service[0].endpoint[0].ip: 10.96.0.5 is inside node.service_cidr 10.96.0.0/12");
  EXPECT_EQ(endpoint("ip = \"127.0.0.1\""),
            "node.toml:21: service[0].endpoint[0].ip: must be a unicast address, got 127.0.0.1 (loopback range "
            "127.0.0.0/8)");
  EXPECT_EQ(endpoint("ip = \"192.168.50.10\""), "(accepted)");  // a host-network pod
  EXPECT_EQ(endpoint("ip = \"198.51.100.1\""), "(accepted)");   // outside the cluster
  EXPECT_EQ(endpoint("ip = \"10.244.1.2\"\nnode = \"node a\""),
            "node.toml:22: service[0].endpoint[0].node: may contain only letters, digits, '.', '_' and '-', got \"node "
            "a\"");
  EXPECT_EQ(endpoint("ip = \"10.244.1.2\"\nready = 1"),
            "node.toml:22: service[0].endpoint[0].ready: must be true or false");
  EXPECT_EQ(endpoint("ip = \"10.244.1.2\"\nserving = false"),
            "node.toml:22: service[0].endpoint[0].serving: must be true when ready is true (a ready endpoint is "
            "serving)");
  EXPECT_EQ(endpoint("ip = \"10.244.1.2\"\nready = false\nserving = false\nterminating = true"), "(accepted)");
  EXPECT_EQ(endpoint("ip = \"10.244.1.2\"\nhostname = \"x\""),
            "node.toml:22: service[0].endpoint[0].hostname: unknown key");
  EXPECT_EQ(error_of(append(kWeb, "[[service.endpoint]]\nip = \"10.244.1.2\"\n")),
            "node.toml:23: service[0].endpoint[1].ip: 10.244.1.2 is already listed in service[0].endpoint[0]");

  // Without node.service_cidr, an endpoint may still not be any service's cluster IP.
  const std::string no_range = remove_line(kWeb, 6);  // the service is now on lines 12-20
  EXPECT_EQ(
      error_of(replace_line(replace_line(no_range, 15, "cluster_ip = \"172.20.0.1\""), 20, "ip = \"172.20.0.1\"")),
      "node.toml:20: service[0].endpoint[0].ip: 172.20.0.1 is the cluster IP of service[0] (\"default/web\")");
  EXPECT_EQ(error_of(append(
                replace_line(replace_line(no_range, 15, "cluster_ip = \"172.20.0.1\""), 20, "ip = \"172.20.0.2\""),
                "[[service]]\nname = \"default/api\"\ncluster_ip = \"172.20.0.2\"\n[[service.port]]\nport = "
                "80\n")),
            "node.toml:20: service[0].endpoint[0].ip: 172.20.0.2 is the cluster IP of service[1] (\"default/api\")");
  // ... named by the service and endpoint it is written in.
  EXPECT_EQ(error_of(append(replace_line(no_range, 15, "cluster_ip = \"172.20.0.1\""),
                            "[[service]]\nname = \"default/api\"\ncluster_ip = \"172.20.0.3\"\n[[service.port]]\n"
                            "port = 80\n[[service.endpoint]]\nip = \"10.244.1.5\"\n[[service.endpoint]]\n"
                            "ip = \"172.20.0.1\"\n")),
            "node.toml:29: service[1].endpoint[1].ip: 172.20.0.1 is the cluster IP of service[0] (\"default/web\")");
}

// ---- load_config_file -----------------------------------------------------

TEST(ConfigTest, LoadConfigFileUsesPathAsSource) {
  std::string path = testing::TempDir() + "kdp_config_test_" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream out(path);
    out << replace_line(kMinimal, 10, "role = \"router\"");
  }
  try {
    load_config_file(path);
    ADD_FAILURE() << "accepted an invalid file";
  } catch (const ConfigError& error) {
    EXPECT_EQ(std::string(error.what()), path + ":10: port[0].role: must be \"uplink\", \"pod\" or \"host\", got \"router\"");
  }
  {
    std::ofstream out(path);
    out << kMinimal;
  }
  EXPECT_EQ(load_config_file(path).source, path);
  std::remove(path.c_str());
}

TEST(ConfigTest, LoadConfigFileReportsUnreadableFile) {
  try {
    load_config_file("/nonexistent/kdp.toml");
    ADD_FAILURE() << "read a file that does not exist";
  } catch (const ConfigError& error) {
    EXPECT_STREQ(error.what(), "/nonexistent/kdp.toml: cannot read: No such file or directory");
  }
  try {
    load_config_file("/");
    ADD_FAILURE() << "read a directory";
  } catch (const ConfigError& error) {
    EXPECT_STREQ(error.what(), "/: cannot read: Is a directory");
  }
}

// ---- net_types ------------------------------------------------------------

TEST(NetTypesTest, ParseIpv4) {
  EXPECT_EQ(parse_ipv4("192.168.50.10"), Ipv4{0xc0a8320a});
  EXPECT_EQ(parse_ipv4("0.0.0.0"), Ipv4{0});
  EXPECT_EQ(parse_ipv4("255.255.255.255"), Ipv4{0xffffffff});
  EXPECT_EQ(parse_ipv4("10.0.0.01"), std::nullopt);  // leading zero: octal look-alike
  EXPECT_EQ(parse_ipv4("010.0.0.1"), std::nullopt);
  EXPECT_EQ(parse_ipv4("10.0.0.256"), std::nullopt);
  EXPECT_EQ(parse_ipv4("10.0.0"), std::nullopt);  // missing octet
  EXPECT_EQ(parse_ipv4("10.0.0."), std::nullopt);
  EXPECT_EQ(parse_ipv4("10..0.1"), std::nullopt);
  EXPECT_EQ(parse_ipv4("10.0.0.1.2"), std::nullopt);
  EXPECT_EQ(parse_ipv4("10.0.0.1 "), std::nullopt);
  EXPECT_EQ(parse_ipv4("-1.0.0.1"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1000.0.0.1"), std::nullopt);
  EXPECT_EQ(parse_ipv4(""), std::nullopt);
}

TEST(NetTypesTest, ParseIpv4Prefix) {
  EXPECT_EQ(parse_ipv4_prefix("10.244.0.0/16"), (Ipv4Prefix{0x0af40000, 16}));
  EXPECT_EQ(parse_ipv4_prefix("0.0.0.0/0"), (Ipv4Prefix{0, 0}));
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.1/32"), (Ipv4Prefix{0x0a000001, 32}));
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/33"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/08"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.244.1.5/24"), std::nullopt);  // host bits set
  EXPECT_EQ(parse_ipv4_prefix("10.244.1.5/24", /*strict=*/false), (Ipv4Prefix{0x0af40100, 24}));
}

TEST(NetTypesTest, PrefixContains) {
  const Ipv4Prefix cluster = prefix("10.244.0.0/16");
  EXPECT_TRUE(cluster.contains(ip("10.244.255.255")));
  EXPECT_FALSE(cluster.contains(ip("10.245.0.0")));
  EXPECT_TRUE(cluster.contains(prefix("10.244.1.0/24")));
  EXPECT_TRUE(cluster.contains(cluster));
  EXPECT_FALSE(cluster.contains(prefix("10.0.0.0/8")));
  EXPECT_TRUE(prefix("0.0.0.0/0").contains(ip("1.2.3.4")));
}

TEST(NetTypesTest, ParseMac) {
  EXPECT_EQ(parse_mac("02:00:00:00:0a:01"), (MacAddr{{0x02, 0, 0, 0, 0x0a, 0x01}}));
  EXPECT_EQ(parse_mac("02:AB:cd:EF:0A:ff"), (MacAddr{{0x02, 0xab, 0xcd, 0xef, 0x0a, 0xff}}));
  EXPECT_EQ(parse_mac("02:00:00:00:0a"), std::nullopt);  // five bytes
  EXPECT_EQ(parse_mac("02:00:00:00:0a:01:02"), std::nullopt);
  EXPECT_EQ(parse_mac("02-00-00-00-0a-01"), std::nullopt);
  EXPECT_EQ(parse_mac("2:00:00:00:0a:01:"), std::nullopt);
  EXPECT_EQ(parse_mac("02:00:00:00:0a:0g"), std::nullopt);
  EXPECT_EQ(parse_mac("02:00:00:00:0a:+1"), std::nullopt);
  EXPECT_EQ(parse_mac(""), std::nullopt);
  EXPECT_TRUE(parse_mac("01:00:5e:00:00:01")->is_multicast());
  EXPECT_TRUE(parse_mac("00:00:00:00:00:00")->is_zero());
}

TEST(NetTypesTest, ToString) {
  EXPECT_EQ(ipv4_to_string(0xc0a8320a), "192.168.50.10");
  EXPECT_EQ(prefix("10.96.0.0/12").to_string(), "10.96.0.0/12");
  EXPECT_EQ(mac("02:AB:00:00:0a:01").to_string(), "02:ab:00:00:0a:01");
}

}  // namespace
}  // namespace kdp

namespace kdp {
namespace {

TEST(ConfigTest, WorkerCpusMapLcoresOntoCpus) {
  const Config config = parse_config(replace_line(kMinimal, 7, "lcores = [1, 2]\ncpus = [1, 1]"), "node.toml");
  EXPECT_EQ(config.workers.lcores, (std::vector<unsigned>{1, 2}));
  EXPECT_EQ(config.workers.cpus, (std::vector<unsigned>{1, 1}));
  EXPECT_TRUE(parse_config(kMinimal, "node.toml").workers.cpus.empty());
}

TEST(ConfigTest, WorkerCpusNeedOnePerLcore) {
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [1, 2]\ncpus = [1]")),
            "node.toml:8: workers.cpus: must list one CPU per worker lcore (2), got 1");
  EXPECT_EQ(error_of(replace_line(kMinimal, 7, "lcores = [1]\ncpus = [-1]")),
            "node.toml:8: workers.cpus[0]: must be between 0 and 1023, got -1");
}

}  // namespace
}  // namespace kdp

namespace kdp {
namespace {

TEST(ConfigTest, ControlDefaults) {
  const Config config = parse_config(kMinimal, "node.toml");
  EXPECT_EQ(config.control.socket, "/run/kdp/kdp.sock");
  EXPECT_FALSE(config.control.metrics_ip.has_value());
  EXPECT_EQ(config.control.metrics_port, 0);
}

TEST(ConfigTest, ControlSocketAndMetricsListen) {
  const Config config = parse_config(
      std::string(kMinimal) + "[control]\nsocket = \"/tmp/kdp-a/ctl.sock\"\nmetrics_listen = \"127.0.0.1:9842\"\n",
      "node.toml");
  EXPECT_EQ(config.control.socket, "/tmp/kdp-a/ctl.sock");
  EXPECT_EQ(config.control.metrics_ip, ip("127.0.0.1"));
  EXPECT_EQ(config.control.metrics_port, 9842);
}

TEST(ConfigTest, ControlSocketMustBeAnAbsoluteShortPath) {
  const std::string control = std::string(kMinimal) + "[control]\n";  // the key is on line 13
  EXPECT_EQ(error_of(control + "socket = \"kdp.sock\"\n"),
            "node.toml:13: control.socket: must be an absolute path, got \"kdp.sock\"");
  EXPECT_EQ(error_of(control + "socket = \"\"\n"), "node.toml:13: control.socket: must be an absolute path, got \"\"");
  EXPECT_EQ(error_of(control + "socket = \"/run/kdp/\"\n"),
            "node.toml:13: control.socket: must name a file, got \"/run/kdp/\"");
  EXPECT_EQ(error_of(control + "socket = 5\n"), "node.toml:13: control.socket: must be a string");
  EXPECT_EQ(error_of(control + "socket = \"/" + std::string(107, 'a') + "\"\n"),
            "node.toml:13: control.socket: must be at most 107 bytes (a Unix socket address), got 108");
  EXPECT_EQ(error_of(control + "sockt = \"/run/kdp.sock\"\n"), "node.toml:13: control.sockt: unknown key");
}

TEST(ConfigTest, ControlMetricsListenIsIpColonPort) {
  const std::string control = std::string(kMinimal) + "[control]\n";
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "localhost:9100",
                          "127.0.0.1:09100", ":9100", "127.0.0.1:91x"})
    EXPECT_EQ(error_of(control + fmt::format("metrics_listen = \"{}\"\n", bad)),
              fmt::format("node.toml:13: control.metrics_listen: must be \"IP:PORT\" (an IPv4 address and a port "
                          "1-65535), got \"{}\"",
                          bad));
  EXPECT_EQ(parse_config(control + "metrics_listen = \"0.0.0.0:65535\"\n", "node.toml").control.metrics_port, 65535);
}

TEST(ConfigTest, ControlMustBeATable) {
  EXPECT_EQ(error_of(insert_line(kMinimal, 1, "control = 1")), "node.toml:1: control: must be a table ([control])");
}

}  // namespace
}  // namespace kdp

namespace kdp {
namespace {

TEST(ConfigTest, PodsForAntiSpoofing) {
  const std::string pods = "[[port]]\nname = \"pod0\"\nrole = \"pod\"\ndevice = \"net_pcap1\"\n"
                           "[[pod]]\nname = \"default/a\"\nport = \"pod0\"\nip = \"10.244.1.5\"\n"
                           "mac = \"0a:58:0a:f4:01:05\"\n";
  const Config config = parse_config(std::string(kMinimal) + pods, "node.toml");
  ASSERT_EQ(config.pods.size(), 1u);
  EXPECT_EQ(config.pods[0].name, "default/a");
  EXPECT_EQ(config.pods[0].port, "pod0");
  EXPECT_EQ(ipv4_to_string(config.pods[0].ip), "10.244.1.5");
  EXPECT_EQ(config.pods[0].mac.to_string(), "0a:58:0a:f4:01:05");
  EXPECT_EQ(error_of(std::string(kMinimal) + pods + "[[pod]]\nname = \"default/b\"\nport = \"up0\"\n"
                                                    "ip = \"10.244.1.6\"\nmac = \"0a:58:0a:f4:01:06\"\n"),
            "node.toml:23: pod[1].port: \"up0\" is not a pod port");
  EXPECT_EQ(error_of(std::string(kMinimal) + pods + "[[pod]]\nname = \"default/b\"\nport = \"pod0\"\n"
                                                    "ip = \"10.244.9.6\"\nmac = \"0a:58:0a:f4:01:06\"\n"),
            "node.toml:24: pod[1].ip: 10.244.9.6 is not a pod address of node.pod_cidr 10.244.1.0/24");
  EXPECT_EQ(error_of(std::string(kMinimal) + pods + "[[pod]]\nname = \"default/b\"\nport = \"pod0\"\n"
                                                    "ip = \"10.244.1.5\"\nmac = \"0a:58:0a:f4:01:06\"\n"),
            "node.toml:24: pod[1].ip: 10.244.1.5 is already pod[0] (\"default/a\")");
}

}  // namespace
}  // namespace kdp
