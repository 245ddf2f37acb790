// Unit tests of the node configuration: parsing, defaults and every validation
// rule, each with its exact message, plus the address parsers it relies on.
#include "ctrl/config.h"

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
            "node.toml:10: port[0].role: must be \"uplink\" or \"pod\", got \"bridge\"");
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
    EXPECT_EQ(std::string(error.what()), path + ":10: port[0].role: must be \"uplink\" or \"pod\", got \"router\"");
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
