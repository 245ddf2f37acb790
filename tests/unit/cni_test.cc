// kdp-cni's pure parts: environment and config parsing with the spec's error
// codes, the error, version and result documents, the derived names, and the
// address store (allocation, release, exhaustion, concurrency across processes).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "tools/cni/cni.h"
#include "tools/cni/ipam.h"

namespace {

using namespace kdp;
using namespace kdp::cni;
using nlohmann::json;
namespace fs = std::filesystem;

std::map<std::string, std::string> add_vars() {
  return {{"CNI_COMMAND", "ADD"},
          {"CNI_CONTAINERID", "3f2a9c01bbd7e1aa"},
          {"CNI_NETNS", "/var/run/netns/pod-a"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=3f2a"},
          {"CNI_PATH", "/opt/cni/bin"}};
}

// The code of the Error that f throws, and its message.
template <typename F>
std::pair<int, std::string> error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return {static_cast<int>(e.code()), e.what()};
  }
  ADD_FAILURE() << "no error";
  return {0, ""};
}

TEST(CniEnvironment, AddWithPodArgs) {
  Environment env = parse_environment(add_vars());
  EXPECT_EQ(env.command, Command::kAdd);
  EXPECT_EQ(env.container_id, "3f2a9c01bbd7e1aa");
  EXPECT_EQ(env.netns, "/var/run/netns/pod-a");
  EXPECT_EQ(env.ifname, "eth0");
  EXPECT_EQ(pod_name(env), "default/web-0");
}

TEST(CniEnvironment, PodNameFallsBackToContainerId) {
  auto vars = add_vars();
  vars.erase("CNI_ARGS");
  vars["CNI_CONTAINERID"] = "0123456789abcdef0123";
  EXPECT_EQ(pod_name(parse_environment(vars)), "cni/0123456789ab");
  vars["CNI_ARGS"] = "K8S_POD_NAMESPACE=default";  // no name: not enough
  EXPECT_EQ(pod_name(parse_environment(vars)), "cni/0123456789ab");
}

TEST(CniEnvironment, MissingOrMalformedVariablesAreCode4) {
  for (const char* name : {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}) {
    auto vars = add_vars();
    vars.erase(name);
    auto [code, msg] = error_of([&] { parse_environment(vars); });
    EXPECT_EQ(code, 4) << name;
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
  auto bad = [](const char* key, const char* value) {
    auto vars = add_vars();
    vars[key] = value;
    return error_of([&] { parse_environment(vars); });
  };
  EXPECT_EQ(bad("CNI_COMMAND", "GC").first, 4);
  EXPECT_EQ(bad("CNI_CONTAINERID", "-leading-dash").first, 4);
  EXPECT_EQ(bad("CNI_CONTAINERID", "has/slash").first, 4);
  EXPECT_EQ(bad("CNI_IFNAME", "sixteen-chars-xx").first, 4);
  EXPECT_EQ(bad("CNI_IFNAME", "eth 0").first, 4);
  EXPECT_EQ(bad("CNI_IFNAME", "..").first, 4);
  EXPECT_EQ(bad("CNI_NETNS", "relative/path").first, 4);
  EXPECT_EQ(bad("CNI_ARGS", "K8S_POD_NAME").first, 4);
}

TEST(CniEnvironment, DelNeedsNoNetnsAndVersionNeedsNothingElse) {
  auto vars = add_vars();
  vars["CNI_COMMAND"] = "DEL";
  vars.erase("CNI_NETNS");
  Environment env = parse_environment(vars);
  EXPECT_EQ(env.command, Command::kDel);
  EXPECT_TRUE(env.netns.empty());
  vars["CNI_COMMAND"] = "CHECK";
  EXPECT_EQ(error_of([&] { parse_environment(vars); }).first, 4);
  EXPECT_EQ(parse_environment({{"CNI_COMMAND", "VERSION"}}).command, Command::kVersion);
}

const char* kConfig = R"({"cniVersion": "1.0.0", "name": "kdp", "type": "kdp-cni", "subnet": "10.244.1.0/24"})";

json config_doc() { return json::parse(kConfig); }

TEST(CniConfig, DefaultsAndOverrides) {
  NetworkConfig c = parse_network_config(kConfig);
  EXPECT_EQ(c.cni_version, "1.0.0");
  EXPECT_EQ(c.name, "kdp");
  EXPECT_EQ(c.subnet.to_string(), "10.244.1.0/24");
  EXPECT_EQ(ipv4_to_string(c.gateway), "10.244.1.1");  // kdp's default gateway_ip
  EXPECT_EQ(c.socket, "/run/kdp/kdp.sock");
  EXPECT_EQ(c.data_dir, "/var/lib/cni/networks");
  EXPECT_FALSE(c.mtu);

  json doc = config_doc();
  doc["gateway"] = "10.244.1.254";
  doc["socket"] = "/tmp/k.sock";
  doc["dataDir"] = "/tmp/cni";
  doc["mtu"] = 1400;
  doc["dns"] = {{"nameservers", {"10.96.0.10"}}};
  doc["runtimeConfig"] = json::object();  // runtimes add the spec's keys
  doc["args"] = json::object();
  c = parse_network_config(doc.dump());
  EXPECT_EQ(ipv4_to_string(c.gateway), "10.244.1.254");
  EXPECT_EQ(c.socket, "/tmp/k.sock");
  EXPECT_EQ(c.data_dir, "/tmp/cni");
  EXPECT_EQ(c.mtu, 1400u);
  EXPECT_EQ(c.dns["nameservers"][0], "10.96.0.10");
}

TEST(CniConfig, ErrorsCarryTheSpecCodesAndNameTheField) {
  auto code_of = [](const json& doc) { return error_of([&] { parse_network_config(doc.dump()); }); };
  EXPECT_EQ(error_of([] { parse_network_config("{not json"); }).first, 6);
  EXPECT_EQ(error_of([] { parse_network_config("[1]"); }).first, 7);

  auto with = [](const char* key, const json& value) {
    json doc = config_doc();
    if (value.is_null()) doc.erase(key);
    else doc[key] = value;
    return doc;
  };
  auto expect = [&](const json& doc, int code, const char* field) {
    auto [got, msg] = code_of(doc);
    EXPECT_EQ(got, code) << doc.dump() << ": " << msg;
    EXPECT_NE(msg.find(field), std::string::npos) << msg;
  };
  expect(with("cniVersion", "0.3.1"), 1, "cniVersion");
  expect(with("cniVersion", "2.0.0"), 1, "cniVersion");
  expect(with("cniVersion", nullptr), 7, "cniVersion");
  expect(with("ipam", {{"type", "host-local"}}), 2, "ipam");
  expect(with("bridge", "cbr0"), 2, "bridge");
  expect(with("subnet", nullptr), 7, "subnet");
  expect(with("subnet", "10.244.1.5/24"), 7, "subnet");  // host bits
  expect(with("subnet", "10.244.1.0/31"), 7, "subnet");
  expect(with("subnet", 24), 7, "subnet");
  expect(with("gateway", "10.244.2.1"), 7, "gateway");
  expect(with("gateway", "10.244.1.0"), 7, "gateway");
  expect(with("gateway", "10.244.1.255"), 7, "gateway");
  expect(with("name", nullptr), 7, "name");
  expect(with("name", "../etc"), 7, "name");
  expect(with("type", "bridge"), 7, "type");
  expect(with("dataDir", "relative"), 7, "dataDir");
  expect(with("mtu", 40), 7, "mtu");
  expect(with("mtu", "1500"), 7, "mtu");
  expect(with("dns", "8.8.8.8"), 7, "dns");
  expect(with("prevResult", "x"), 7, "prevResult");
}

TEST(CniDocuments, ErrorJson) {
  json doc = error_json(Error(ErrorCode::kInvalidConfig, "subnet: required", "more"));
  EXPECT_EQ(doc, json::parse(R"({"cniVersion":"1.0.0","code":7,"msg":"subnet: required","details":"more"})"));
  doc = error_json(Error(ErrorCode::kTryAgainLater, "busy"));
  EXPECT_FALSE(doc.contains("details"));
  EXPECT_EQ(doc["code"], 11);
}

TEST(CniDocuments, VersionJson) {
  EXPECT_EQ(version_json(R"({"cniVersion":"1.0.0"})"),
            json::parse(R"({"cniVersion":"1.0.0","supportedVersions":["1.0.0"]})"));
  EXPECT_EQ(version_json("")["cniVersion"], "1.0.0");
}

TEST(CniDocuments, ResultJsonFollowsSpec100) {
  NetworkConfig c = parse_network_config(kConfig);
  c.dns = {{"nameservers", {"10.96.0.10"}}};
  Attachment a{.host_ifname = "kdp0011aabb",
               .host_mac = *parse_mac("aa:00:00:00:00:01"),
               .container_ifname = "eth0",
               .container_mac = *parse_mac("aa:00:00:00:00:02"),
               .netns = "/var/run/netns/pod-a",
               .address = {*parse_ipv4("10.244.1.7"), 24},
               .gateway = c.gateway};
  json expected = json::parse(R"({
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "kdp0011aabb", "mac": "aa:00:00:00:00:01"},
                   {"name": "eth0", "mac": "aa:00:00:00:00:02", "sandbox": "/var/run/netns/pod-a"}],
    "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
    "dns": {"nameservers": ["10.96.0.10"]}})");
  json result = result_json(c, a);
  EXPECT_EQ(result, expected);
  // CHECK reads the address back out of such a result (its prevResult).
  EXPECT_EQ(result_address(result), a.address);
  EXPECT_EQ(error_of([] { result_address(json::object()); }).first, 7);
  EXPECT_EQ(error_of([] { result_address(json::parse(R"({"ips":[{"address":"10.1.1.1"}]})")); }).first, 7);
}

TEST(CniNames, HostIfnameIsStableShortAndDistinct) {
  const std::string name = host_ifname("3f2a9c01bbd7e1aa", "eth0");
  EXPECT_EQ(name, host_ifname("3f2a9c01bbd7e1aa", "eth0"));
  EXPECT_EQ(name.size(), 11u);
  EXPECT_LE(name.size(), kMaxIfnameLength);
  EXPECT_EQ(name.rfind("kdp", 0), 0u);
  EXPECT_NE(name, host_ifname("3f2a9c01bbd7e1aa", "eth1"));
  EXPECT_NE(host_ifname("ab", "c"), host_ifname("a", "bc"));
  std::set<std::string> names;
  for (int i = 0; i < 1000; ++i) names.insert(host_ifname("container" + std::to_string(i), "eth0"));
  EXPECT_EQ(names.size(), 1000u);
}

TEST(CniNames, InterfaceAddress) {
  auto a = parse_interface_address("10.244.1.5/24");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->to_string(), "10.244.1.5/24");
  EXPECT_FALSE(parse_interface_address("10.244.1.5"));
  EXPECT_FALSE(parse_interface_address("10.244.1.5/33"));
}

// ---- address store ----------------------------------------------------------

class AddressStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kdp-cni-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  AddressStore store(const char* subnet, const char* gateway) {
    return AddressStore(dir_, "net", *parse_ipv4_prefix(subnet), *parse_ipv4(gateway));
  }
  fs::path dir_;
};

TEST_F(AddressStoreTest, AllocatesInOrderSkippingGatewayAndRecordsOwner) {
  AddressStore s = store("10.244.1.0/24", "10.244.1.1");
  EXPECT_EQ(ipv4_to_string(s.allocate("c1", "eth0")), "10.244.1.2");
  EXPECT_EQ(ipv4_to_string(s.allocate("c2", "eth0")), "10.244.1.3");
  EXPECT_EQ(ipv4_to_string(s.allocate("c2", "eth1")), "10.244.1.4");
  std::ifstream in(dir_ / "net" / "10.244.1.3");
  std::string id, ifname;
  in >> id >> ifname;
  EXPECT_EQ(id, "c2");
  EXPECT_EQ(ifname, "eth0");
  EXPECT_EQ(s.find("c2", "eth1"), parse_ipv4("10.244.1.4"));
  EXPECT_FALSE(s.find("c3", "eth0"));
}

TEST_F(AddressStoreTest, SecondAddForTheSamePairIsRefusedAndKeepsTheFirst) {
  AddressStore s = store("10.244.1.0/24", "10.244.1.1");
  s.allocate("c1", "eth0");
  auto [code, msg] = error_of([&] { s.allocate("c1", "eth0"); });
  EXPECT_EQ(code, 103);
  EXPECT_NE(msg.find("10.244.1.2"), std::string::npos) << msg;
  EXPECT_EQ(s.find("c1", "eth0"), parse_ipv4("10.244.1.2"));
}

TEST_F(AddressStoreTest, ReleaseIsIdempotentAndFreedAddressesComeBackLast) {
  AddressStore s = store("10.244.1.0/29", "10.244.1.1");  // hosts .1-.6, gateway .1
  EXPECT_EQ(ipv4_to_string(s.allocate("c1", "eth0")), "10.244.1.2");
  EXPECT_EQ(ipv4_to_string(s.allocate("c2", "eth0")), "10.244.1.3");
  EXPECT_TRUE(s.release("c1", "eth0"));
  EXPECT_FALSE(s.release("c1", "eth0"));
  EXPECT_FALSE(fs::exists(dir_ / "net" / "10.244.1.2"));
  // Round robin: .2 is free again but comes after .4, .5, .6.
  EXPECT_EQ(ipv4_to_string(s.allocate("c3", "eth0")), "10.244.1.4");
  EXPECT_EQ(ipv4_to_string(s.allocate("c4", "eth0")), "10.244.1.5");
  EXPECT_EQ(ipv4_to_string(s.allocate("c5", "eth0")), "10.244.1.6");
  EXPECT_EQ(ipv4_to_string(s.allocate("c6", "eth0")), "10.244.1.2");
}

TEST_F(AddressStoreTest, ExhaustionIsCode101AndChangesNothing) {
  AddressStore s = store("10.244.1.0/30", "10.244.1.1");  // one pod address: .2
  EXPECT_EQ(ipv4_to_string(s.allocate("c1", "eth0")), "10.244.1.2");
  EXPECT_EQ(error_of([&] { s.allocate("c2", "eth0"); }).first, 101);
  EXPECT_FALSE(s.find("c2", "eth0"));
  EXPECT_TRUE(s.release("c1", "eth0"));
  EXPECT_EQ(ipv4_to_string(s.allocate("c2", "eth0")), "10.244.1.2");
}

TEST_F(AddressStoreTest, GatewayElsewhereInTheSubnet) {
  AddressStore s = store("10.244.1.0/30", "10.244.1.2");
  EXPECT_EQ(ipv4_to_string(s.allocate("c1", "eth0")), "10.244.1.1");
  EXPECT_EQ(error_of([&] { s.allocate("c2", "eth0"); }).first, 101);
}

TEST_F(AddressStoreTest, ConcurrentProcessesNeverShareAnAddress) {
  // Each ADD is a process of its own: the flock must serialise them.
  constexpr int kProcesses = 8, kEach = 12;
  store("10.244.0.0/24", "10.244.0.1");  // creates the directory
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int status = 0;
      try {
        AddressStore s = store("10.244.0.0/24", "10.244.0.1");
        for (int i = 0; i < kEach; ++i) s.allocate("p" + std::to_string(p) + "c" + std::to_string(i), "eth0");
      } catch (...) {
        status = 1;
      }
      ::_exit(status);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::set<std::string> owners;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir_ / "net")) {
    if (!parse_ipv4(entry.path().filename().string())) continue;
    ++files;
    std::ifstream in(entry.path());
    std::string id;
    in >> id;
    owners.insert(id);
  }
  EXPECT_EQ(files, kProcesses * kEach);
  EXPECT_EQ(owners.size(), static_cast<size_t>(kProcesses * kEach));  // one address each, none shared
}

TEST_F(AddressStoreTest, ConcurrentAddsOfOneContainerGiveItOneAddress) {
  // A runtime retrying an ADD while the first still runs: the lock makes
  // "does it hold one?" and "take the next" one step, so exactly one wins.
  constexpr int kProcesses = 8, kRounds = 20;
  store("10.244.0.0/24", "10.244.0.1");
  for (int round = 0; round < kRounds; ++round) {
    const std::string id = "same" + std::to_string(round);
    std::vector<pid_t> children;
    for (int p = 0; p < kProcesses; ++p) {
      pid_t pid = ::fork();
      if (pid == 0) {
        int status = 2;
        try {
          store("10.244.0.0/24", "10.244.0.1").allocate(id, "eth0");
          status = 0;
        } catch (const Error& e) {
          status = e.code() == ErrorCode::kAlreadyAdded ? 1 : 2;
        } catch (...) {
        }
        ::_exit(status);
      }
      children.push_back(pid);
    }
    int won = 0, refused = 0;
    for (pid_t pid : children) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      ASSERT_TRUE(WIFEXITED(status));
      won += WEXITSTATUS(status) == 0;
      refused += WEXITSTATUS(status) == 1;
    }
    EXPECT_EQ(won, 1) << id;
    EXPECT_EQ(refused, kProcesses - 1) << id;
  }
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir_ / "net")) files += parse_ipv4(entry.path().filename().string()).has_value();
  EXPECT_EQ(files, kRounds);
}

}  // namespace
