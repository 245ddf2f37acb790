#include "ctrl/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <unordered_map>
#include <memory>

namespace kdp {

std::string PortRange::to_string() const { return fmt::format("{}-{}", low, high); }

std::string_view port_role_name(PortRole role) {
  switch (role) {
    case PortRole::Uplink: return "uplink";
    case PortRole::Pod: return "pod";
    case PortRole::Host: return "host";
  }
  return "?";
}

const PortConfig* Config::find_port(std::string_view name) const {
  for (const PortConfig& port : ports)
    if (port.name == name) return &port;
  return nullptr;
}

namespace {

// Limits of the schema. lcore ids stay below DPDK's usual RTE_MAX_LCORE.
constexpr int64_t kMaxLcore = 1023;
constexpr size_t kMaxNodeNameLen = 63;  // a DNS label, like a Kubernetes node name
constexpr size_t kMaxPortNameLen = 31;  // fits an interface-style name
constexpr size_t kMaxFilePrefixLen = 63;
constexpr size_t kMaxDnsLabelLen = 63;      // Kubernetes namespaces, service and port names
constexpr unsigned kMaxTimeoutS = 2592000;  // 30 days: longer than any conntrack timeout needs

// EAL options kdp passes itself; a second copy in eal.args would conflict with them.
struct ReservedEalOption {
  std::string_view option;
  std::string_view set_from;
};
constexpr ReservedEalOption kReservedEalOptions[] = {
    {"-l", "[workers] lcores"},       {"-c", "[workers] lcores"},
    {"--lcores", "[workers] lcores"}, {"--main-lcore", "[workers] main_lcore"},
    {"--vdev", "[[port]] device"},    {"-a", "[[port]] device"},
    {"--allow", "[[port]] device"},   {"--file-prefix", "eal.file_prefix"},
};

std::string quoted(std::string_view text) { return fmt::format("\"{}\"", text); }

std::string index_key(std::string_view key, size_t index) { return fmt::format("{}[{}]", key, index); }

// Throws ConfigError as "SOURCE:LINE: KEY: problem", or "SOURCE: KEY: problem"
// when the line is unknown (0).
[[noreturn]] void fail(std::string_view source, toml::source_index line, std::string_view key,
                       std::string_view problem) {
  if (line == 0) throw ConfigError(fmt::format("{}: {}: {}", source, key, problem));
  throw ConfigError(fmt::format("{}:{}: {}: {}", source, line, key, problem));
}

toml::source_index line_of(const toml::node& node) { return node.source().begin.line; }

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

bool is_power_of_two(int64_t value) { return value > 0 && (value & (value - 1)) == 0; }

bool overlaps(const Ipv4Prefix& a, const Ipv4Prefix& b) { return a.contains(b) || b.contains(a); }

Ipv4 broadcast_of(const Ipv4Prefix& prefix) { return prefix.addr | ~prefix.mask(); }

// A lowercase RFC 1123 label, as Kubernetes requires of namespaces and port names.
bool is_dns_label(std::string_view text) {
  auto is_lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (text.empty() || text.size() > kMaxDnsLabelLen) return false;
  if (!is_lower_alnum(text.front()) || !is_lower_alnum(text.back())) return false;
  return std::all_of(text.begin(), text.end(), [&](char c) { return is_lower_alnum(c) || c == '-'; });
}

// Ranges no service address or endpoint may be in: none of them is a unicast
// peer (Kubernetes' ValidateNonSpecialIP rejects most of them too).
struct SpecialRange {
  Ipv4Prefix prefix;
  std::string_view what;
};
constexpr SpecialRange kSpecialRanges[] = {
    {{0x00000000, 8}, "\"this network\""},  // 0.0.0.0/8
    {{0x7f000000, 8}, "loopback"},          // 127.0.0.0/8
    {{0xa9fe0000, 16}, "link-local"},       // 169.254.0.0/16
    {{0xe0000000, 4}, "multicast"},         // 224.0.0.0/4
    {{0xf0000000, 4}, "reserved"},          // 240.0.0.0/4, the limited broadcast included
};

std::optional<std::string> special_address_problem(Ipv4 ip) {
  for (const SpecialRange& range : kSpecialRanges)
    if (range.prefix.contains(ip))
      return fmt::format("must be a unicast address, got {} ({} range {})", ipv4_to_string(ip), range.what,
                         range.prefix.to_string());
  return std::nullopt;
}

// Why `text` is not a strict prefix: host bits set (an easy slip the generic
// message would hide) or not a prefix at all.
std::string prefix_problem(const std::string& text) {
  if (auto network = parse_ipv4_prefix(text, /*strict=*/false))
    return fmt::format("host bits must be zero: {} (the network is {})", quoted(text), network->to_string());
  return fmt::format("not an IPv4 prefix (a.b.c.d/len with host bits zero): {}", quoted(text));
}

// "low-high", decimal, low <= high <= 65535.
std::optional<PortRange> parse_port_range(std::string_view text) {
  auto number = [](std::string_view digits) -> std::optional<unsigned> {
    if (digits.empty() || digits.size() > 5 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
    unsigned value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc{} || end != digits.data() + digits.size() || value > 65535) return std::nullopt;
    return value;
  };
  size_t dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto low = number(text.substr(0, dash));
  auto high = number(text.substr(dash + 1));
  if (!low || !high || *low > *high) return std::nullopt;
  return PortRange{static_cast<uint16_t>(*low), static_cast<uint16_t>(*high)};
}

// Reads one table of the file: typed accessors that name the key and its line
// in every error. `path` is the table's dotted key ("" for the root).
class TableReader {
 public:
  TableReader(std::string_view source, const toml::table& table, std::string path, bool is_root = false)
      : source_(source), table_(table), path_(std::move(path)), header_line_(is_root ? 0 : line_of(table)) {}

  std::string_view source() const { return source_; }

  std::string key(std::string_view name) const {
    return path_.empty() ? std::string(name) : fmt::format("{}.{}", path_, name);
  }

  const toml::node* find(std::string_view name) const { return table_.get(name); }

  // Error at the value of `name`, or at the table header when it is absent.
  [[noreturn]] void fail_at(std::string_view name, std::string_view problem) const {
    const toml::node* value = find(name);
    fail(source_, value ? line_of(*value) : header_line_, key(name), problem);
  }

  [[noreturn]] void fail_table(std::string_view problem) const { fail(source_, header_line_, path_, problem); }

  // Rejects any key not in `known`, the earliest in the file first.
  void reject_unknown_keys(std::initializer_list<std::string_view> known) const {
    const toml::node* first_unknown = nullptr;
    std::string_view first_name;
    for (const auto& [name, value] : table_) {
      if (std::find(known.begin(), known.end(), name.str()) != known.end()) continue;
      if (!first_unknown || line_of(value) < line_of(*first_unknown)) {
        first_unknown = &value;
        first_name = name.str();
      }
    }
    if (first_unknown) fail(source_, line_of(*first_unknown), key(first_name), "unknown key");
  }

  std::optional<std::string> optional_string(std::string_view name) const {
    const toml::node* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_string()) fail_at(name, "must be a string");
    return value->as_string()->get();
  }

  std::string required_string(std::string_view name) const {
    auto value = optional_string(name);
    if (!value) fail_at(name, "required key is missing");
    return *value;
  }

  // An integer in [min, max]; `fallback` when absent.
  int64_t integer(std::string_view name, int64_t min, int64_t max, int64_t fallback) const {
    const toml::node* value = find(name);
    if (!value) return fallback;
    if (!value->is_integer()) fail_at(name, "must be an integer");
    int64_t number = value->as_integer()->get();
    if (number < min || number > max) fail_at(name, fmt::format("must be between {} and {}, got {}", min, max, number));
    return number;
  }

  unsigned uint(std::string_view name, unsigned min, unsigned max, unsigned fallback) const {
    return static_cast<unsigned>(integer(name, min, max, fallback));
  }

  // A descriptor ring size: a power of two in [min, max].
  unsigned ring_size(std::string_view name, unsigned min, unsigned max, unsigned fallback) const {
    unsigned size = uint(name, min, max, fallback);
    if (!is_power_of_two(size)) fail_at(name, fmt::format("must be a power of two, got {}", size));
    return size;
  }

  // A name made of [A-Za-z0-9._-], 1 to max_len characters.
  std::string name_string(std::string_view name, size_t max_len, bool required) const {
    auto value = required ? std::optional(required_string(name)) : optional_string(name);
    if (!value) return {};
    if (value->empty()) fail_at(name, "must not be empty");
    if (value->size() > max_len)
      fail_at(name, fmt::format("must be at most {} characters, got {}", max_len, value->size()));
    if (!std::all_of(value->begin(), value->end(), is_name_char))
      fail_at(name, fmt::format("may contain only letters, digits, '.', '_' and '-', got {}", quoted(*value)));
    return *value;
  }

  std::optional<Ipv4> optional_ipv4(std::string_view name) const {
    auto text = optional_string(name);
    if (!text) return std::nullopt;
    auto ip = parse_ipv4(*text);
    if (!ip) fail_at(name, fmt::format("not an IPv4 address: {}", quoted(*text)));
    return ip;
  }

  Ipv4 required_ipv4(std::string_view name) const {
    if (!find(name)) fail_at(name, "required key is missing");
    return *optional_ipv4(name);
  }

  std::optional<Ipv4Prefix> optional_prefix(std::string_view name) const {
    auto text = optional_string(name);
    if (!text) return std::nullopt;
    auto prefix = parse_ipv4_prefix(*text);
    if (prefix) return prefix;
    fail_at(name, prefix_problem(*text));
  }

  Ipv4Prefix required_prefix(std::string_view name) const {
    if (!find(name)) fail_at(name, "required key is missing");
    return *optional_prefix(name);
  }

  // A MAC address an interface may own: unicast and non-zero.
  std::optional<MacAddr> optional_unicast_mac(std::string_view name) const {
    auto text = optional_string(name);
    if (!text) return std::nullopt;
    auto mac = parse_mac(*text);
    if (!mac) fail_at(name, fmt::format("not a MAC address (xx:xx:xx:xx:xx:xx): {}", quoted(*text)));
    if (mac->is_zero()) fail_at(name, "must not be all zeros");
    if (mac->is_multicast()) fail_at(name, fmt::format("must be a unicast address, got {}", *text));
    return mac;
  }

  MacAddr required_unicast_mac(std::string_view name) const {
    if (!find(name)) fail_at(name, "required key is missing");
    return *optional_unicast_mac(name);
  }

  const toml::table* optional_table(std::string_view name) const {
    const toml::node* value = find(name);
    if (!value) return nullptr;
    if (!value->is_table()) fail_at(name, fmt::format("must be a table ([{}])", key(name)));
    return value->as_table();
  }

  std::optional<bool> optional_bool(std::string_view name) const {
    const toml::node* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_boolean()) fail_at(name, "must be true or false");
    return value->as_boolean()->get();
  }

  // One of `choices`, spelled as in the file; `fallback` when absent.
  template <typename Enum, size_t N>
  Enum choice(std::string_view name, const std::pair<std::string_view, Enum> (&choices)[N], Enum fallback) const {
    auto text = optional_string(name);
    if (!text) return fallback;
    for (const auto& [spelling, value] : choices)
      if (*text == spelling) return value;
    std::string listed;  // "\"a\", \"b\" or \"c\""
    size_t index = 0;
    for (const auto& choice : choices) {
      if (index > 0) listed += index + 1 == N ? " or " : ", ";
      listed += quoted(choice.first);
      ++index;
    }
    fail_at(name, fmt::format("must be {}, got {}", listed, quoted(*text)));
  }

  // "low-high" with min_low <= low <= high <= 65535; `fallback` when absent.
  PortRange port_range(std::string_view name, unsigned min_low, PortRange fallback) const {
    auto text = optional_string(name);
    if (!text) return fallback;
    auto range = parse_port_range(*text);
    if (!range || range->low < min_low)
      fail_at(name,
              fmt::format("must be \"low-high\" with {} <= low <= high <= 65535, got {}", min_low, quoted(*text)));
    return *range;
  }

  // The elements of an array of tables ([[name]]); empty when absent. `header`
  // names the table header in messages when it differs from the key
  // ("service.port" for service[2].port).
  std::vector<const toml::table*> table_array(std::string_view name, std::string_view hint = {},
                                              std::string_view header = {}) const {
    std::vector<const toml::table*> tables;
    const toml::node* value = find(name);
    if (!value) return tables;
    // The message is made only on failure: 10,000 services read this twice each.
    auto fail_shape = [&] {
      fail_at(name, fmt::format("must be an array of tables ([[{}]]){}",
                                header.empty() ? key(name) : std::string(header), hint));
    };
    if (!value->is_array()) fail_shape();
    tables.reserve(value->as_array()->size());
    for (const toml::node& element : *value->as_array()) {
      if (!element.is_table()) fail_shape();
      tables.push_back(element.as_table());
    }
    return tables;
  }

  // Elements of an array whose values must all be of TOML type T.
  template <typename T>
  std::vector<const toml::value<T>*> typed_array(std::string_view name, std::string_view type_name) const {
    std::vector<const toml::value<T>*> elements;
    const toml::node* value = find(name);
    if (!value) return elements;
    auto fail_shape = [&] { fail_at(name, fmt::format("must be an array of {}", type_name)); };
    if (!value->is_array()) fail_shape();
    for (const toml::node& element : *value->as_array()) {
      if (!element.is<T>()) fail_shape();
      elements.push_back(element.as<T>());
    }
    return elements;
  }

  // An element of an array value, with the line it is on.
  template <typename T>
  struct Element {
    T value;
    toml::source_index line;
  };

  [[noreturn]] void fail_element(std::string_view name, size_t index, toml::source_index line,
                                 std::string_view problem) const {
    fail(source_, line, index_key(key(name), index), problem);
  }

  std::vector<Element<Ipv4>> ipv4_array(std::string_view name) const {
    std::vector<Element<Ipv4>> ips;
    auto strings = typed_array<std::string>(name, "strings");
    for (size_t i = 0; i < strings.size(); ++i) {
      auto ip = parse_ipv4(strings[i]->get());
      if (!ip)
        fail_element(name, i, line_of(*strings[i]), fmt::format("not an IPv4 address: {}", quoted(strings[i]->get())));
      ips.push_back({*ip, line_of(*strings[i])});
    }
    return ips;
  }

  std::vector<Element<Ipv4Prefix>> prefix_array(std::string_view name) const {
    std::vector<Element<Ipv4Prefix>> prefixes;
    auto strings = typed_array<std::string>(name, "strings");
    for (size_t i = 0; i < strings.size(); ++i) {
      auto prefix = parse_ipv4_prefix(strings[i]->get());
      if (!prefix) fail_element(name, i, line_of(*strings[i]), prefix_problem(strings[i]->get()));
      prefixes.push_back({*prefix, line_of(*strings[i])});
    }
    return prefixes;
  }

 private:
  std::string_view source_;
  const toml::table& table_;
  std::string path_;
  toml::source_index header_line_;
};

// Reads the optional table `name` of the root; an empty table stands in when absent.
TableReader section(const TableReader& root, std::string_view name) {
  static const toml::table kEmpty;
  const toml::table* table = root.optional_table(name);
  return TableReader(root.source(), table ? *table : kEmpty, std::string(name));
}

void read_node(const TableReader& root, Config::Node& node) {
  if (!root.find("node")) fail(root.source(), 0, "node", "required table [node] is missing");
  TableReader table = section(root, "node");
  table.reject_unknown_keys(
      {"name", "node_ip", "pod_cidr", "gateway_ip", "gateway_mac", "cluster_cidr", "service_cidr"});

  node.name = table.name_string("name", kMaxNodeNameLen, /*required=*/true);

  // node_ip is an address, optionally with the length of its connected uplink subnet.
  std::string node_ip = table.required_string("node_ip");
  std::string_view address = node_ip;
  node.node_prefix_len = 32;
  if (size_t slash = address.find('/'); slash != std::string_view::npos) {
    auto subnet = parse_ipv4_prefix(node_ip, /*strict=*/false);
    if (!subnet)
      table.fail_at("node_ip", fmt::format("not an IPv4 address (a.b.c.d or a.b.c.d/len): {}", quoted(node_ip)));
    if (subnet->len == 0) table.fail_at("node_ip", "prefix length must be between 1 and 32, got 0");
    node.node_prefix_len = subnet->len;
    address = address.substr(0, slash);
  }
  auto ip = parse_ipv4(address);
  if (!ip) table.fail_at("node_ip", fmt::format("not an IPv4 address (a.b.c.d or a.b.c.d/len): {}", quoted(node_ip)));
  node.node_ip = *ip;

  node.pod_cidr = table.required_prefix("pod_cidr");
  if (node.pod_cidr.len < 8 || node.pod_cidr.len > 30)
    table.fail_at("pod_cidr", fmt::format("prefix length must be between 8 and 30, got {}", node.pod_cidr.len));

  const std::string pod_cidr_text = node.pod_cidr.to_string();
  node.gateway_ip = table.optional_ipv4("gateway_ip").value_or(node.pod_cidr.addr + 1);
  std::string gateway_text = ipv4_to_string(node.gateway_ip);
  if (!node.pod_cidr.contains(node.gateway_ip))
    table.fail_at("gateway_ip", fmt::format("{} is outside node.pod_cidr {}", gateway_text, pod_cidr_text));
  if (node.gateway_ip == node.pod_cidr.addr)
    table.fail_at("gateway_ip",
                  fmt::format("{} is the network address of node.pod_cidr {}", gateway_text, pod_cidr_text));
  if (node.gateway_ip == broadcast_of(node.pod_cidr))
    table.fail_at("gateway_ip",
                  fmt::format("{} is the broadcast address of node.pod_cidr {}", gateway_text, pod_cidr_text));

  if (auto mac = table.optional_unicast_mac("gateway_mac")) {
    node.gateway_mac = *mac;
  } else {
    // Locally administered, and distinct per node because the gateway address is.
    node.gateway_mac.bytes = {0x02,
                              0x00,
                              static_cast<uint8_t>(node.gateway_ip >> 24),
                              static_cast<uint8_t>(node.gateway_ip >> 16),
                              static_cast<uint8_t>(node.gateway_ip >> 8),
                              static_cast<uint8_t>(node.gateway_ip)};
  }

  node.cluster_cidr = table.required_prefix("cluster_cidr");
  if (!node.cluster_cidr.contains(node.pod_cidr))
    table.fail_at("cluster_cidr",
                  fmt::format("{} does not contain node.pod_cidr {}", node.cluster_cidr.to_string(), pod_cidr_text));

  node.service_cidr = table.optional_prefix("service_cidr");
  if (node.service_cidr && overlaps(*node.service_cidr, node.cluster_cidr))
    table.fail_at("service_cidr", fmt::format("{} overlaps node.cluster_cidr {}", node.service_cidr->to_string(),
                                              node.cluster_cidr.to_string()));

  // The node address lives on the uplink; inside a pod or service range it would be ambiguous.
  std::string node_ip_text = ipv4_to_string(node.node_ip);
  if (node.cluster_cidr.contains(node.node_ip))
    table.fail_at("node_ip",
                  fmt::format("{} is inside node.cluster_cidr {}", node_ip_text, node.cluster_cidr.to_string()));
  if (node.service_cidr && node.service_cidr->contains(node.node_ip))
    table.fail_at("node_ip",
                  fmt::format("{} is inside node.service_cidr {}", node_ip_text, node.service_cidr->to_string()));
}

void read_eal(const TableReader& root, Config::Eal& eal) {
  TableReader table = section(root, "eal");
  table.reject_unknown_keys({"args", "file_prefix"});

  auto args = table.typed_array<std::string>("args", "strings");
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i]->get();
    for (const ReservedEalOption& reserved : kReservedEalOptions) {
      // Long options may carry their value after '=', short ones glued on ("-l1-3").
      bool is_long = reserved.option.starts_with("--");
      bool matches = arg == reserved.option || (is_long ? arg.starts_with(fmt::format("{}=", reserved.option))
                                                        : arg.starts_with(reserved.option) && !arg.starts_with("--"));
      if (matches)
        fail(table.source(), line_of(*args[i]), index_key(table.key("args"), i),
             fmt::format("{} is set by kdp from {}; remove it", quoted(reserved.option), reserved.set_from));
    }
    eal.args.push_back(arg);
  }
  // It names files under /var/run/dpdk, so it obeys the same rules as other names.
  eal.file_prefix = table.name_string("file_prefix", kMaxFilePrefixLen, /*required=*/false);
}

void read_workers(const TableReader& root, Config::Workers& workers) {
  if (!root.find("workers")) fail(root.source(), 0, "workers", "required table [workers] is missing");
  TableReader table = section(root, "workers");
  table.reject_unknown_keys({"lcores", "main_lcore", "idle_sleep_us", "realtime_priority", "cpus"});

  workers.main_lcore = table.uint("main_lcore", 0, kMaxLcore, 0);
  workers.idle_sleep_us = table.uint("idle_sleep_us", 0, 100000, 0);
  workers.realtime_priority = table.uint("realtime_priority", 0, 99, 0);

  if (!table.find("lcores")) table.fail_at("lcores", "required key is missing");
  auto lcores = table.typed_array<int64_t>("lcores", "integers");
  if (lcores.empty()) table.fail_at("lcores", "must list at least one worker lcore");
  for (size_t i = 0; i < lcores.size(); ++i) {
    int64_t lcore = lcores[i]->get();
    auto fail_element = [&](std::string_view problem) {
      fail(table.source(), line_of(*lcores[i]), index_key(table.key("lcores"), i), problem);
    };
    if (lcore < 0 || lcore > kMaxLcore) fail_element(fmt::format("must be between 0 and {}, got {}", kMaxLcore, lcore));
    if (lcore == workers.main_lcore)
      fail_element(fmt::format("lcore {} is workers.main_lcore, which runs the control thread", lcore));
    if (std::find(workers.lcores.begin(), workers.lcores.end(), lcore) != workers.lcores.end())
      fail_element(fmt::format("lcore {} is listed twice", lcore));
    workers.lcores.push_back(static_cast<unsigned>(lcore));
  }
  if (!table.find("cpus")) return;
  auto cpus = table.typed_array<int64_t>("cpus", "integers");
  if (cpus.size() != workers.lcores.size())
    table.fail_at("cpus", fmt::format("must list one CPU per worker lcore ({}), got {}", workers.lcores.size(),
                                      cpus.size()));
  for (size_t i = 0; i < cpus.size(); ++i) {
    int64_t cpu = cpus[i]->get();
    if (cpu < 0 || cpu > kMaxLcore)
      fail(table.source(), line_of(*cpus[i]), index_key(table.key("cpus"), i),
           fmt::format("must be between 0 and {}, got {}", kMaxLcore, cpu));
    workers.cpus.push_back(static_cast<unsigned>(cpu));
  }
}

void read_mbufs(const TableReader& root, Config::Mbufs& mbufs) {
  TableReader table = section(root, "mbufs");
  table.reject_unknown_keys({"pool_size", "cache_size", "rx_desc", "tx_desc"});
  mbufs.pool_size = table.uint("pool_size", 0, std::numeric_limits<uint32_t>::max(), mbufs.pool_size);
  if (mbufs.pool_size != 0 && mbufs.pool_size < 1024)
    table.fail_at("pool_size", fmt::format("must be 0 (automatic) or at least 1024, got {}", mbufs.pool_size));
  mbufs.cache_size = table.uint("cache_size", 0, 512, mbufs.cache_size);
  mbufs.rx_desc = table.ring_size("rx_desc", 64, 16384, mbufs.rx_desc);
  mbufs.tx_desc = table.ring_size("tx_desc", 64, 16384, mbufs.tx_desc);
}

void read_dataplane(const TableReader& root, Config::Dataplane& dataplane) {
  TableReader table = section(root, "dataplane");
  table.reject_unknown_keys({"vlan", "icmp_errors_per_s"});
  if (auto vlan = table.optional_string("vlan")) {
    if (*vlan == "drop")
      dataplane.vlan = VlanPolicy::Drop;
    else if (*vlan == "strip")
      dataplane.vlan = VlanPolicy::Strip;
    else
      table.fail_at("vlan", fmt::format("must be \"drop\" or \"strip\", got {}", quoted(*vlan)));
  }
  dataplane.icmp_errors_per_s = table.uint("icmp_errors_per_s", 0, 1000000, dataplane.icmp_errors_per_s);
}

void read_bridge(const TableReader& root, Config::Bridge& bridge) {
  TableReader table = section(root, "bridge");
  table.reject_unknown_keys({"fdb_max", "aging_s"});
  bridge.fdb_max = table.uint("fdb_max", 16, 16777216, bridge.fdb_max);
  bridge.aging_s = table.uint("aging_s", 1, 1000000, bridge.aging_s);
}

void read_neighbor_settings(const TableReader& root, Config::Neighbor& neighbor) {
  TableReader table = section(root, "neighbors");
  table.reject_unknown_keys({"max", "reachable_s", "stale_s", "hold_packets", "retries", "retry_ms"});
  neighbor.max = table.uint("max", 16, 16777216, neighbor.max);
  neighbor.reachable_s = table.uint("reachable_s", 1, 86400, neighbor.reachable_s);
  neighbor.stale_s = table.uint("stale_s", 1, 86400, neighbor.stale_s);
  neighbor.hold_packets = table.uint("hold_packets", 1, 4096, neighbor.hold_packets);
  neighbor.retries = table.uint("retries", 1, 100, neighbor.retries);
  neighbor.retry_ms = table.uint("retry_ms", 10, 60000, neighbor.retry_ms);
}

void read_ports(const TableReader& root, std::vector<PortConfig>& ports) {
  auto tables = root.table_array("port");
  if (tables.empty()) fail(root.source(), 0, "port", "at least one [[port]] is required");
  for (size_t i = 0; i < tables.size(); ++i) {
    TableReader table(root.source(), *tables[i], index_key("port", i));
    table.reject_unknown_keys({"name", "role", "device", "mac", "mtu"});
    PortConfig port;

    port.name = table.name_string("name", kMaxPortNameLen, /*required=*/true);
    for (size_t j = 0; j < ports.size(); ++j)
      if (ports[j].name == port.name)
        table.fail_at("name", fmt::format("{} is already the name of port[{}]", quoted(port.name), j));

    std::string role = table.required_string("role");
    if (role == "uplink")
      port.role = PortRole::Uplink;
    else if (role == "pod")
      port.role = PortRole::Pod;
    else if (role == "host")
      port.role = PortRole::Host;
    else
      table.fail_at("role", fmt::format("must be \"uplink\", \"pod\" or \"host\", got {}", quoted(role)));
    if (port.role == PortRole::Host)
      for (size_t j = 0; j < ports.size(); ++j)
        if (ports[j].role == PortRole::Host)
          table.fail_at("role", fmt::format("port[{}] is already the host port; the node has one network stack", j));

    port.device = table.required_string("device");
    if (port.device.empty()) table.fail_at("device", "must not be empty");
    // DPDK identifies a device by the name before its arguments.
    std::string_view device_name = std::string_view(port.device).substr(0, port.device.find(','));
    for (size_t j = 0; j < ports.size(); ++j)
      if (std::string_view(ports[j].device).substr(0, ports[j].device.find(',')) == device_name)
        table.fail_at("device", fmt::format("device {} is already used by port[{}]", quoted(device_name), j));

    port.mac = table.optional_unicast_mac("mac");
    port.mtu = table.uint("mtu", 68, kMaxPortMtu, 0);
    ports.push_back(std::move(port));
  }
}

// The checks a route gets, in the config file and from route.add alike.
// `fail(key, problem)` must not return; route.port, when empty, becomes the
// first uplink.
template <typename Fail>
void check_route(const Config& config, const std::vector<RouteConfig>& earlier, RouteConfig& route, Fail fail) {
  const Config::Node& node = config.node;
  std::string prefix_text = route.prefix.to_string();
  if (route.prefix == node.pod_cidr)
    fail("prefix", fmt::format("{} is node.pod_cidr, which is reached over the bridge", prefix_text));
  if (node.pod_cidr.contains(route.prefix))
    fail("prefix", fmt::format("{} lies inside node.pod_cidr {}", prefix_text, node.pod_cidr.to_string()));
  for (size_t j = 0; j < earlier.size(); ++j)
    if (earlier[j].prefix == route.prefix)
      fail("prefix", fmt::format("{} is already routed by route[{}]", prefix_text, j));

  std::string via_text = ipv4_to_string(route.via);
  if (route.via == node.node_ip) fail("via", fmt::format("{} is this node's own address (node.node_ip)", via_text));
  if (route.via == node.gateway_ip)
    fail("via", fmt::format("{} is this node's pod gateway address (node.gateway_ip)", via_text));
  if (node.pod_cidr.contains(route.via))
    fail("via", fmt::format("{} is inside node.pod_cidr {}", via_text, node.pod_cidr.to_string()));

  if (!route.port.empty()) {
    const PortConfig* port = config.find_port(route.port);
    if (!port) fail("port", fmt::format("no [[port]] is named {}", quoted(route.port)));
    if (port->role != PortRole::Uplink)
      fail("port", fmt::format("{} is a {} port; routes must leave through an uplink port", quoted(route.port),
                               port_role_name(port->role)));
    return;
  }
  for (const PortConfig& port : config.ports)
    if (port.role == PortRole::Uplink) {
      route.port = port.name;
      return;
    }
  fail("", "no [[port]] has role \"uplink\" to send the route's traffic through");
}

void read_routes(const TableReader& root, const Config& config, std::vector<RouteConfig>& routes) {
  auto tables = root.table_array("route");
  for (size_t i = 0; i < tables.size(); ++i) {
    TableReader table(root.source(), *tables[i], index_key("route", i));
    table.reject_unknown_keys({"prefix", "via", "port"});
    RouteConfig route;
    route.prefix = table.required_prefix("prefix");
    route.via = table.required_ipv4("via");
    route.port = table.optional_string("port").value_or("");
    check_route(config, routes, route, [&](std::string_view key, std::string_view problem) {
      if (key.empty()) table.fail_table(problem);
      table.fail_at(key, problem);
    });
    routes.push_back(std::move(route));
  }
}

void read_static_neighbors(const TableReader& root, const Config& config, std::vector<NeighborConfig>& neighbors) {
  auto tables = root.table_array("neighbor", "; neighbour settings go in [neighbors]");
  for (size_t i = 0; i < tables.size(); ++i) {
    TableReader table(root.source(), *tables[i], index_key("neighbor", i));
    table.reject_unknown_keys({"ip", "mac", "port"});
    NeighborConfig neighbor;

    neighbor.ip = table.required_ipv4("ip");
    for (size_t j = 0; j < neighbors.size(); ++j)
      if (neighbors[j].ip == neighbor.ip)
        table.fail_at("ip", fmt::format("{} is already listed in neighbor[{}]", ipv4_to_string(neighbor.ip), j));

    neighbor.mac = table.required_unicast_mac("mac");

    if (auto port_name = table.optional_string("port")) {
      const PortConfig* port = config.find_port(*port_name);
      if (!port) table.fail_at("port", fmt::format("no [[port]] is named {}", quoted(*port_name)));
      if (port->role == PortRole::Host)
        table.fail_at("port", fmt::format("{} is the host port, whose one neighbour is the node itself",
                                          quoted(*port_name)));
      neighbor.port = *port_name;
    }
    neighbors.push_back(std::move(neighbor));
  }
}

void read_pods(const TableReader& root, const Config& config, std::vector<PodConfig>& pods) {
  auto tables = root.table_array("pod", "");
  for (size_t i = 0; i < tables.size(); ++i) {
    TableReader table(root.source(), *tables[i], index_key("pod", i));
    table.reject_unknown_keys({"name", "port", "ip", "mac"});
    PodConfig pod;
    pod.name = table.required_string("name");
    const std::string port = table.required_string("port");
    const PortConfig* pc = config.find_port(port);
    if (pc == nullptr) table.fail_at("port", fmt::format("no [[port]] is named {}", quoted(port)));
    if (pc->role != PortRole::Pod) table.fail_at("port", fmt::format("{} is not a pod port", quoted(port)));
    pod.port = port;
    pod.ip = table.required_ipv4("ip");
    if (!config.node.pod_cidr.contains(pod.ip) || pod.ip == config.node.gateway_ip)
      table.fail_at("ip", fmt::format("{} is not a pod address of node.pod_cidr {}", ipv4_to_string(pod.ip),
                                      config.node.pod_cidr.to_string()));
    pod.mac = table.required_unicast_mac("mac");
    for (size_t j = 0; j < pods.size(); ++j) {
      if (pods[j].ip == pod.ip)
        table.fail_at("ip", fmt::format("{} is already pod[{}] ({})", ipv4_to_string(pod.ip), j, quoted(pods[j].name)));
      if (pods[j].mac == pod.mac)
        table.fail_at("mac", fmt::format("{} is already pod[{}] ({})", pod.mac.to_string(), j, quoted(pods[j].name)));
    }
    pods.push_back(std::move(pod));
  }
}

void read_conntrack(const TableReader& root, Config::Conntrack& conntrack) {
  TableReader table = section(root, "conntrack");
  table.reject_unknown_keys({"max_flows", "tcp_syn_sent_s", "tcp_syn_recv_s", "tcp_established_s", "tcp_fin_wait_s",
                             "tcp_close_wait_s", "tcp_last_ack_s", "tcp_time_wait_s", "tcp_close_s", "udp_s",
                             "udp_stream_s", "icmp_s"});
  conntrack.max_flows = table.uint("max_flows", 1024, 67108864, conntrack.max_flows);
  auto timeout = [&](std::string_view name, unsigned& value) { value = table.uint(name, 1, kMaxTimeoutS, value); };
  timeout("tcp_syn_sent_s", conntrack.tcp_syn_sent_s);
  timeout("tcp_syn_recv_s", conntrack.tcp_syn_recv_s);
  timeout("tcp_established_s", conntrack.tcp_established_s);
  timeout("tcp_fin_wait_s", conntrack.tcp_fin_wait_s);
  timeout("tcp_close_wait_s", conntrack.tcp_close_wait_s);
  timeout("tcp_last_ack_s", conntrack.tcp_last_ack_s);
  timeout("tcp_time_wait_s", conntrack.tcp_time_wait_s);
  timeout("tcp_close_s", conntrack.tcp_close_s);
  timeout("udp_s", conntrack.udp_s);
  timeout("udp_stream_s", conntrack.udp_stream_s);
  timeout("icmp_s", conntrack.icmp_s);
}

constexpr std::pair<std::string_view, LbAlgorithm> kLbAlgorithms[] = {
    {"random", LbAlgorithm::Random}, {"round_robin", LbAlgorithm::RoundRobin}, {"maglev", LbAlgorithm::Maglev}};

void read_nat(const TableReader& root, Config::Nat& nat) {
  TableReader table = section(root, "nat");
  table.reject_unknown_keys(
      {"masquerade_egress", "masquerade_all", "non_masquerade_cidrs", "snat_ports", "node_port_range", "lb_algorithm"});
  nat.masquerade_egress = table.optional_bool("masquerade_egress").value_or(nat.masquerade_egress);
  nat.masquerade_all = table.optional_bool("masquerade_all").value_or(nat.masquerade_all);
  for (const auto& cidr : table.prefix_array("non_masquerade_cidrs")) nat.non_masquerade_cidrs.push_back(cidr.value);
  // A typo'd switch must not look like a working exception list.
  if (!nat.masquerade_egress && !nat.non_masquerade_cidrs.empty())
    table.fail_at("non_masquerade_cidrs", "has no effect when nat.masquerade_egress is false");

  // Below 1024 a SNAT'd source port would pass for a privileged one.
  nat.snat_ports = table.port_range("snat_ports", 1024, nat.snat_ports);
  nat.node_port_range = table.port_range("node_port_range", 1, nat.node_port_range);
  // A reply to a SNAT'd connection arrives at node_ip on its SNAT port, where
  // a node port would claim it as a new connection.
  if (nat.snat_ports.overlaps(nat.node_port_range)) {
    if (table.find("node_port_range"))
      table.fail_at("node_port_range", fmt::format("{} overlaps nat.snat_ports {}", nat.node_port_range.to_string(),
                                                   nat.snat_ports.to_string()));
    table.fail_at("snat_ports", fmt::format("{} overlaps nat.node_port_range {}", nat.snat_ports.to_string(),
                                            nat.node_port_range.to_string()));
  }
  nat.lb_algorithm = table.choice("lb_algorithm", kLbAlgorithms, nat.lb_algorithm);
}

// ---- [[service]] ----------------------------------------------------------

std::string service_ref(size_t index, std::string_view name) {
  return fmt::format("service[{}] ({})", index, quoted(name));
}

// external_ips or load_balancer_ips: unicast, outside the pod network, each listed once.
std::vector<TableReader::Element<Ipv4>> read_frontend_ips(const TableReader& table, std::string_view name,
                                                          const Config::Node& node) {
  auto ips = table.ipv4_array(name);
  for (size_t k = 0; k < ips.size(); ++k) {
    Ipv4 ip = ips[k].value;
    if (auto problem = special_address_problem(ip)) table.fail_element(name, k, ips[k].line, *problem);
    if (node.cluster_cidr.contains(ip))
      table.fail_element(
          name, k, ips[k].line,
          fmt::format("{} is inside node.cluster_cidr {}", ipv4_to_string(ip), node.cluster_cidr.to_string()));
    for (size_t m = 0; m < k; ++m)
      if (ips[m].value == ip)
        table.fail_element(
            name, k, ips[k].line,
            fmt::format("{} is already listed in {}", ipv4_to_string(ip), index_key(table.key(name), m)));
  }
  return ips;
}

// Where a service frontend comes from, to name the key when two collide.
struct FrontendSite {
  ServiceKey key;
  FrontendKind kind;
  size_t service;
  std::string config_key;
  toml::source_index line;
};

struct ServiceKeyHash {
  size_t operator()(const ServiceKey& k) const {
    return std::hash<uint64_t>{}(uint64_t{k.vip} << 24 | uint64_t{static_cast<uint8_t>(k.proto)} << 16 | k.port);
  }
};

// What the services read so far claim (names, cluster IPs, node ports,
// frontends), indexed so that each new service is checked in constant time
// and 100k services load in linear time. Values: the claiming service's index.
struct ServiceClaims {
  std::unordered_map<std::string, size_t> names;
  std::unordered_map<Ipv4, size_t> cluster_ips;
  std::unordered_map<uint32_t, size_t> node_ports;  // protocol << 16 | node port
  std::unordered_map<ServiceKey, FrontendSite, ServiceKeyHash> frontends;

  static uint32_t node_port_key(L4Proto proto, uint16_t node_port) {
    return uint32_t{static_cast<uint8_t>(proto)} << 16 | node_port;
  }
};

void read_service_cluster_ip(const TableReader& table, const Config& config, const std::vector<ServiceConfig>& services,
                             const ServiceClaims& claims, ServiceConfig& service) {
  const Config::Node& node = config.node;
  if (table.optional_string("cluster_ip") == "None")
    table.fail_at("cluster_ip", "headless services (\"None\") have no cluster IP to serve; leave them out");
  service.cluster_ip = table.required_ipv4("cluster_ip");
  std::string ip_text = ipv4_to_string(service.cluster_ip);
  if (auto problem = special_address_problem(service.cluster_ip)) table.fail_at("cluster_ip", *problem);
  if (node.service_cidr) {
    if (!node.service_cidr->contains(service.cluster_ip))
      table.fail_at("cluster_ip",
                    fmt::format("{} is outside node.service_cidr {}", ip_text, node.service_cidr->to_string()));
  } else {
    // Without a service range, at least keep clear of the pods and the node.
    if (node.cluster_cidr.contains(service.cluster_ip))
      table.fail_at("cluster_ip",
                    fmt::format("{} is inside node.cluster_cidr {}", ip_text, node.cluster_cidr.to_string()));
    if (service.cluster_ip == node.node_ip)
      table.fail_at("cluster_ip", fmt::format("{} is this node's own address (node.node_ip)", ip_text));
  }
  if (auto it = claims.cluster_ips.find(service.cluster_ip); it != claims.cluster_ips.end())
    table.fail_at("cluster_ip", fmt::format("{} is already the cluster IP of {}", ip_text,
                                            service_ref(it->second, services[it->second].name)));
}

// Node ports are unique per protocol across all services: they all share node_ip.
void claim_node_port(const TableReader& port_table, const ServicePortConfig& port,
                     const std::vector<ServiceConfig>& services, const ServiceConfig& service, size_t service_index,
                     ServiceClaims& claims) {
  auto [it, fresh] = claims.node_ports.emplace(ServiceClaims::node_port_key(port.protocol, port.node_port), service_index);
  if (!fresh) {
    const size_t j = it->second;
    port_table.fail_at("node_port",
                       fmt::format("{}/{} is already used by {}", port.node_port, to_string(port.protocol),
                                   service_ref(j, j < services.size() ? services[j].name : service.name)));
  }
}

void read_service_ports(const TableReader& table, const Config& config, const std::vector<ServiceConfig>& services,
                        ServiceClaims& claims, ServiceConfig& service) {
  const size_t service_index = services.size();
  auto tables = table.table_array("port", "", "service.port");
  if (tables.empty()) table.fail_at("port", "at least one [[service.port]] is required");
  for (size_t p = 0; p < tables.size(); ++p) {
    TableReader port_table(table.source(), *tables[p], index_key(table.key("port"), p));
    port_table.reject_unknown_keys({"name", "protocol", "port", "target_port", "node_port"});
    ServicePortConfig port;

    // Kubernetes: a lone port may go unnamed; several need unique names.
    if (auto name = port_table.optional_string("name")) {
      if (!is_dns_label(*name))
        port_table.fail_at("name", fmt::format("must be a DNS label (lowercase letters, digits and '-', at most {} "
                                               "characters, starting and ending with a letter or digit), got {}",
                                               kMaxDnsLabelLen, quoted(*name)));
      for (size_t q = 0; q < service.ports.size(); ++q)
        if (service.ports[q].name == *name)
          port_table.fail_at(
              "name", fmt::format("{} is already the name of {}", quoted(*name), index_key(table.key("port"), q)));
      port.name = *name;
    } else if (tables.size() > 1) {
      port_table.fail_at("name", "required when a service has several ports");
    }

    port.protocol = port_table.choice(
        "protocol", {{"TCP", L4Proto::Tcp}, {"UDP", L4Proto::Udp}, {"SCTP", L4Proto::Sctp}}, L4Proto::Tcp);

    if (!port_table.find("port")) port_table.fail_at("port", "required key is missing");
    port.port = static_cast<uint16_t>(port_table.uint("port", 1, 65535, 0));
    for (size_t q = 0; q < service.ports.size(); ++q)
      if (service.ports[q].port == port.port && service.ports[q].protocol == port.protocol)
        port_table.fail_at("port", fmt::format("{}/{} is already used by {}", port.port, to_string(port.protocol),
                                               index_key(table.key("port"), q)));
    port.target_port = static_cast<uint16_t>(port_table.uint("target_port", 1, 65535, port.port));

    if (port_table.find("node_port")) {
      if (service.type == ServiceType::ClusterIP)
        port_table.fail_at("node_port", "type \"ClusterIP\" services have no node ports");
      int64_t node_port = port_table.integer("node_port", 1, 65535, 0);
      const PortRange& range = config.nat.node_port_range;
      if (!range.contains(static_cast<unsigned>(node_port)))
        port_table.fail_at("node_port",
                           fmt::format("{} is outside nat.node_port_range {}", node_port, range.to_string()));
      port.node_port = static_cast<uint16_t>(node_port);
      claim_node_port(port_table, port, services, service, service_index, claims);
    } else if (service.type != ServiceType::ClusterIP) {
      // LoadBalancer services get node ports too, as in Kubernetes.
      port_table.fail_at("node_port", fmt::format("required for type {} services (kdp does not allocate node ports)",
                                                  quoted(to_string(service.type))));
    }
    service.ports.push_back(std::move(port));
  }
}

// Where an endpoint address was given, for the checks made once all services
// are read; its key is spelled out only for a message (a node may list
// 100,000 endpoints).
struct EndpointSite {
  Ipv4 ip;
  size_t service, endpoint;
  toml::source_index line;

  std::string key() const { return index_key(index_key("service", service) + ".endpoint", endpoint) + ".ip"; }
};

void read_service_endpoints(const TableReader& table, size_t service_index, const Config& config,
                            ServiceConfig& service, std::vector<EndpointSite>& sites) {
  const Config::Node& node = config.node;
  auto tables = table.table_array("endpoint", "", "service.endpoint");
  const std::string endpoints_key = table.key("endpoint");
  for (size_t e = 0; e < tables.size(); ++e) {
    TableReader endpoint_table(table.source(), *tables[e], index_key(endpoints_key, e));
    endpoint_table.reject_unknown_keys({"ip", "node", "ready", "serving", "terminating"});
    EndpointConfig endpoint;

    // Any unicast address: pods, host-network pods (node addresses) and
    // endpoints outside the cluster alike; never a service address.
    endpoint.ip = endpoint_table.required_ipv4("ip");
    if (auto problem = special_address_problem(endpoint.ip)) endpoint_table.fail_at("ip", *problem);
    if (node.service_cidr && node.service_cidr->contains(endpoint.ip))
      endpoint_table.fail_at("ip", fmt::format("{} is inside node.service_cidr {}", ipv4_to_string(endpoint.ip),
                                               node.service_cidr->to_string()));
    for (size_t f = 0; f < service.endpoints.size(); ++f)
      if (service.endpoints[f].ip == endpoint.ip)
        endpoint_table.fail_at("ip", fmt::format("{} is already listed in {}", ipv4_to_string(endpoint.ip),
                                                 index_key(endpoints_key, f)));
    sites.push_back({endpoint.ip, service_index, e, line_of(*endpoint_table.find("ip"))});

    endpoint.node = endpoint_table.name_string("node", kMaxNodeNameLen, /*required=*/false);
    endpoint.ready = endpoint_table.optional_bool("ready").value_or(true);
    endpoint.serving = endpoint_table.optional_bool("serving").value_or(endpoint.ready);
    // EndpointSlice: serving is ready regardless of terminating, so ready implies serving.
    if (endpoint.ready && !endpoint.serving)
      endpoint_table.fail_at("serving", "must be true when ready is true (a ready endpoint is serving)");
    endpoint.terminating = endpoint_table.optional_bool("terminating").value_or(false);
    service.endpoints.push_back(std::move(endpoint));
  }
}

// Every (address, protocol, port) a packet can be matched on belongs to one
// frontend only: an external IP equal to another service's cluster IP, or to
// node_ip with a port some service uses as a node port, would be ambiguous.
void check_frontends_unique(const TableReader& table, const Config& config, const std::vector<ServiceConfig>& services,
                            const ServiceConfig& service, ServiceClaims& claims) {
  const size_t index = services.size();
  std::vector<FrontendSite> sites;
  for (const ServicePortConfig& port : service.ports)
    sites.push_back({{service.cluster_ip, port.protocol, port.port},
                     FrontendKind::ClusterIP,
                     index,
                     table.key("cluster_ip"),
                     line_of(*table.find("cluster_ip"))});
  auto port_tables = table.table_array("port");
  for (size_t p = 0; p < service.ports.size(); ++p)
    if (const ServicePortConfig& port = service.ports[p]; port.node_port != 0)
      sites.push_back({{config.node.node_ip, port.protocol, port.node_port},
                       FrontendKind::NodePort,
                       index,
                       fmt::format("{}.node_port", index_key(table.key("port"), p)),
                       line_of(*port_tables[p]->get("node_port"))});
  for (auto [name, kind] : {std::pair{"external_ips", FrontendKind::ExternalIP},
                            std::pair{"load_balancer_ips", FrontendKind::LoadBalancerIP}}) {
    auto ips = table.ipv4_array(name);
    for (size_t k = 0; k < ips.size(); ++k)
      for (const ServicePortConfig& port : service.ports)
        sites.push_back(
            {{ips[k].value, port.protocol, port.port}, kind, index, index_key(table.key(name), k), ips[k].line});
  }

  for (FrontendSite& site : sites) {
    if (auto it = claims.frontends.find(site.key); it != claims.frontends.end()) {
      const FrontendSite& other = it->second;
      std::string_view owner = other.service < services.size() ? services[other.service].name : service.name;
      fail(table.source(), site.line, site.config_key,
           fmt::format("{} is already served by {} as its {}", site.key.to_string(),
                       service_ref(other.service, owner), to_string(other.kind)));
    }
    if (claims.frontends.size() >= kMaxServiceFrontends)
      fail(table.source(), site.line, site.config_key,
           fmt::format("{} is one frontend more than the {} all services together may have", site.key.to_string(),
                       kMaxServiceFrontends));
    const ServiceKey key = site.key;
    claims.frontends.emplace(key, std::move(site));
  }
}

void read_services(const TableReader& root, const Config& config, std::vector<ServiceConfig>& services) {
  const Config::Node& node = config.node;
  std::vector<EndpointSite> endpoint_sites;
  ServiceClaims claims;

  auto tables = root.table_array("service");
  for (size_t i = 0; i < tables.size(); ++i) {
    TableReader table(root.source(), *tables[i], index_key("service", i));
    table.reject_unknown_keys({"name", "type", "cluster_ip", "external_ips", "load_balancer_ips",
                               "load_balancer_source_ranges", "external_traffic_policy", "internal_traffic_policy",
                               "session_affinity", "session_affinity_timeout_s", "lb_algorithm", "port", "endpoint"});
    ServiceConfig service;

    service.name = table.required_string("name");
    size_t slash = service.name.find('/');
    if (slash == std::string::npos || !is_dns_label(std::string_view(service.name).substr(0, slash)) ||
        !is_dns_label(std::string_view(service.name).substr(slash + 1)))
      table.fail_at("name", fmt::format("must be \"namespace/name\", each a DNS label (lowercase letters, digits and "
                                        "'-', at most {} characters), got {}",
                                        kMaxDnsLabelLen, quoted(service.name)));
    if (auto it = claims.names.find(service.name); it != claims.names.end())
      table.fail_at("name", fmt::format("{} is already the name of service[{}]", quoted(service.name), it->second));

    service.type = table.choice("type",
                                {{"ClusterIP", ServiceType::ClusterIP},
                                 {"NodePort", ServiceType::NodePort},
                                 {"LoadBalancer", ServiceType::LoadBalancer}},
                                ServiceType::ClusterIP);
    read_service_cluster_ip(table, config, services, claims, service);

    for (const auto& ip : read_frontend_ips(table, "external_ips", node)) service.external_ips.push_back(ip.value);
    if (service.type != ServiceType::LoadBalancer && !table.ipv4_array("load_balancer_ips").empty())
      table.fail_at("load_balancer_ips", "only type \"LoadBalancer\" services have load balancer IPs");
    for (const auto& ip : read_frontend_ips(table, "load_balancer_ips", node))
      service.load_balancer_ips.push_back(ip.value);
    for (const auto& range : table.prefix_array("load_balancer_source_ranges"))
      service.load_balancer_source_ranges.push_back(range.value);
    // kube-proxy applies source ranges to load balancer IPs only.
    if (!service.load_balancer_source_ranges.empty() && service.load_balancer_ips.empty())
      table.fail_at("load_balancer_source_ranges", "has no effect without load_balancer_ips");

    constexpr std::pair<std::string_view, TrafficPolicy> policies[] = {{"Cluster", TrafficPolicy::Cluster},
                                                                       {"Local", TrafficPolicy::Local}};
    service.external_traffic_policy = table.choice("external_traffic_policy", policies, TrafficPolicy::Cluster);
    // The external policy governs node ports, load balancer IPs and external IPs only.
    if (service.external_traffic_policy == TrafficPolicy::Local && service.type == ServiceType::ClusterIP &&
        service.external_ips.empty())
      table.fail_at("external_traffic_policy",
                    "\"Local\" applies to node ports, load balancer IPs and external IPs; this \"ClusterIP\" service "
                    "has no external_ips");
    service.internal_traffic_policy = table.choice("internal_traffic_policy", policies, TrafficPolicy::Cluster);

    service.session_affinity =
        table.choice("session_affinity", {{"None", SessionAffinity::None}, {"ClientIP", SessionAffinity::ClientIP}},
                     SessionAffinity::None);
    // As the Kubernetes API: a timeout without affinity is a mistake, not a no-op.
    if (table.find("session_affinity_timeout_s") && service.session_affinity == SessionAffinity::None)
      table.fail_at("session_affinity_timeout_s", "only applies with session_affinity = \"ClientIP\"");
    service.session_affinity_timeout_s =
        table.uint("session_affinity_timeout_s", 1, 86400, service.session_affinity_timeout_s);
    if (table.find("lb_algorithm"))
      service.lb_algorithm = table.choice("lb_algorithm", kLbAlgorithms, config.nat.lb_algorithm);

    read_service_ports(table, config, services, claims, service);
    read_service_endpoints(table, i, config, service, endpoint_sites);
    check_frontends_unique(table, config, services, service, claims);
    claims.names.emplace(service.name, services.size());
    claims.cluster_ips.emplace(service.cluster_ip, services.size());
    services.push_back(std::move(service));
  }

  // Endpoints are never service addresses; without node.service_cidr only
  // the cluster IPs themselves say which those are.
  for (const EndpointSite& site : endpoint_sites)
    if (auto it = claims.cluster_ips.find(site.ip); it != claims.cluster_ips.end())
      fail(root.source(), site.line, site.key(),
           fmt::format("{} is the cluster IP of {}", ipv4_to_string(site.ip),
                       service_ref(it->second, services[it->second].name)));
}

// ---- [control] -------------------------------------------------------------

constexpr size_t kMaxSocketPathLen = 107;  // sockaddr_un.sun_path, less its terminating NUL

void read_control(const TableReader& root, Config::ControlApi& control) {
  TableReader table = section(root, "control");
  table.reject_unknown_keys({"socket", "metrics_listen"});
  if (auto socket = table.optional_string("socket")) {
    if (socket->empty() || socket->front() != '/')
      table.fail_at("socket", fmt::format("must be an absolute path, got {}", quoted(*socket)));
    if (socket->back() == '/') table.fail_at("socket", fmt::format("must name a file, got {}", quoted(*socket)));
    if (socket->find('\0') != std::string::npos) table.fail_at("socket", "must not contain NUL characters");
    if (socket->size() > kMaxSocketPathLen)
      table.fail_at("socket", fmt::format("must be at most {} bytes (a Unix socket address), got {}",
                                          kMaxSocketPathLen, socket->size()));
    control.socket = *socket;
  }
  if (auto listen = table.optional_string("metrics_listen")) {
    auto problem = [&] {
      table.fail_at("metrics_listen",
                    fmt::format("must be \"IP:PORT\" (an IPv4 address and a port 1-65535), got {}", quoted(*listen)));
    };
    size_t colon = listen->rfind(':');
    if (colon == std::string::npos) problem();
    auto ip = parse_ipv4(std::string_view(*listen).substr(0, colon));
    std::string_view digits = std::string_view(*listen).substr(colon + 1);
    unsigned port = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (!ip || digits.empty() || digits.size() > 5 || digits[0] == '0' || ec != std::errc{} ||
        end != digits.data() + digits.size() || port < 1 || port > 65535)
      problem();
    control.metrics_ip = *ip;
    control.metrics_port = static_cast<uint16_t>(port);
  }
}

}  // namespace

Config parse_config(std::string_view toml_text, std::string_view source_name) {
  toml::table document;
  try {
    document = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& error) {
    const toml::source_position& at = error.source().begin;
    throw ConfigError(fmt::format("{}:{}:{}: syntax error: {}", source_name, at.line, at.column, error.description()));
  }

  Config config;
  config.source = std::string(source_name);
  TableReader root(source_name, document, "", /*is_root=*/true);
  root.reject_unknown_keys({"node", "eal", "workers", "mbufs", "dataplane", "bridge", "neighbors", "conntrack", "nat",
                            "port", "route", "neighbor", "pod", "service", "control"});

  // Sections in schema order; later ones refer back to node and ports.
  read_node(root, config.node);
  read_eal(root, config.eal);
  read_workers(root, config.workers);
  read_mbufs(root, config.mbufs);
  read_dataplane(root, config.dataplane);
  read_bridge(root, config.bridge);
  read_neighbor_settings(root, config.neighbor);
  read_ports(root, config.ports);
  read_routes(root, config, config.routes);
  read_static_neighbors(root, config, config.neighbors);
  read_pods(root, config, config.pods);
  read_conntrack(root, config.conntrack);
  read_nat(root, config.nat);
  read_services(root, config, config.services);
  read_control(root, config.control);
  return config;
}

Config load_config_file(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw ConfigError(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  std::string text;
  char buffer[65536];
  size_t count;
  while ((count = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) text.append(buffer, count);
  // A directory opens fine on Linux and fails here, with errno saying why.
  if (std::ferror(file.get())) throw ConfigError(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  return parse_config(text, path);
}

std::optional<std::string> host_port_conflict(const Config& config, const PortRange& kernel_ports) {
  // A reply to the node's own connection arrives at node_ip on the port the
  // kernel chose; kdp must not take it for a SNAT flow or a node port.
  auto conflict = [&](const char* key, const PortRange& range) {
    return fmt::format(
        "{}: {} overlaps the kernel's ephemeral ports {} (sysctl net.ipv4.ip_local_port_range), which the node's "
        "own connections through the host port use; make the two ranges disjoint",
        key, range.to_string(), kernel_ports.to_string());
  };
  if (config.nat.snat_ports.overlaps(kernel_ports)) return conflict("nat.snat_ports", config.nat.snat_ports);
  if (config.nat.node_port_range.overlaps(kernel_ports))
    return conflict("nat.node_port_range", config.nat.node_port_range);
  return std::nullopt;
}

std::optional<std::string> unicast_address_problem(Ipv4 ip) { return special_address_problem(ip); }

// ---- Changing the desired state of a running kdp ---------------------------

std::optional<std::string> immutable_difference(const Config& a, const Config& b) {
  // Everything but routes, neighbor (static entries) and service.
#define KDP_SAME(field, key) \
  if (!(a.field == b.field)) return std::string(key)
  KDP_SAME(node.name, "node.name");
  KDP_SAME(node.node_ip, "node.node_ip");
  KDP_SAME(node.node_prefix_len, "node.node_ip");
  KDP_SAME(node.pod_cidr, "node.pod_cidr");
  KDP_SAME(node.gateway_ip, "node.gateway_ip");
  KDP_SAME(node.gateway_mac, "node.gateway_mac");
  KDP_SAME(node.cluster_cidr, "node.cluster_cidr");
  KDP_SAME(node.service_cidr, "node.service_cidr");
  KDP_SAME(eal.args, "eal.args");
  KDP_SAME(eal.file_prefix, "eal.file_prefix");
  KDP_SAME(workers.lcores, "workers.lcores");
  KDP_SAME(workers.main_lcore, "workers.main_lcore");
  KDP_SAME(workers.idle_sleep_us, "workers.idle_sleep_us");
  KDP_SAME(workers.realtime_priority, "workers.realtime_priority");
  KDP_SAME(workers.cpus, "workers.cpus");
  KDP_SAME(mbufs.pool_size, "mbufs.pool_size");
  KDP_SAME(mbufs.cache_size, "mbufs.cache_size");
  KDP_SAME(mbufs.rx_desc, "mbufs.rx_desc");
  KDP_SAME(mbufs.tx_desc, "mbufs.tx_desc");
  KDP_SAME(dataplane.vlan, "dataplane.vlan");
  KDP_SAME(dataplane.icmp_errors_per_s, "dataplane.icmp_errors_per_s");
  KDP_SAME(bridge.fdb_max, "bridge.fdb_max");
  KDP_SAME(bridge.aging_s, "bridge.aging_s");
  KDP_SAME(neighbor.max, "neighbors.max");
  KDP_SAME(neighbor.reachable_s, "neighbors.reachable_s");
  KDP_SAME(neighbor.stale_s, "neighbors.stale_s");
  KDP_SAME(neighbor.hold_packets, "neighbors.hold_packets");
  KDP_SAME(neighbor.retries, "neighbors.retries");
  KDP_SAME(neighbor.retry_ms, "neighbors.retry_ms");
  KDP_SAME(conntrack.max_flows, "conntrack.max_flows");
  KDP_SAME(conntrack.tcp_syn_sent_s, "conntrack.tcp_syn_sent_s");
  KDP_SAME(conntrack.tcp_syn_recv_s, "conntrack.tcp_syn_recv_s");
  KDP_SAME(conntrack.tcp_established_s, "conntrack.tcp_established_s");
  KDP_SAME(conntrack.tcp_fin_wait_s, "conntrack.tcp_fin_wait_s");
  KDP_SAME(conntrack.tcp_close_wait_s, "conntrack.tcp_close_wait_s");
  KDP_SAME(conntrack.tcp_last_ack_s, "conntrack.tcp_last_ack_s");
  KDP_SAME(conntrack.tcp_time_wait_s, "conntrack.tcp_time_wait_s");
  KDP_SAME(conntrack.tcp_close_s, "conntrack.tcp_close_s");
  KDP_SAME(conntrack.udp_s, "conntrack.udp_s");
  KDP_SAME(conntrack.udp_stream_s, "conntrack.udp_stream_s");
  KDP_SAME(conntrack.icmp_s, "conntrack.icmp_s");
  KDP_SAME(nat.masquerade_egress, "nat.masquerade_egress");
  KDP_SAME(nat.masquerade_all, "nat.masquerade_all");
  KDP_SAME(nat.non_masquerade_cidrs, "nat.non_masquerade_cidrs");
  KDP_SAME(nat.snat_ports, "nat.snat_ports");
  KDP_SAME(nat.node_port_range, "nat.node_port_range");
  KDP_SAME(nat.lb_algorithm, "nat.lb_algorithm");
  KDP_SAME(control.socket, "control.socket");
  KDP_SAME(control.metrics_ip, "control.metrics_listen");
  KDP_SAME(control.metrics_port, "control.metrics_listen");
#undef KDP_SAME
  if (a.ports.size() != b.ports.size()) return std::string("port");
  for (size_t i = 0; i < a.ports.size(); ++i) {
    const PortConfig &p = a.ports[i], &q = b.ports[i];
    if (p.name != q.name) return index_key("port", i) + ".name";
    if (p.role != q.role) return index_key("port", i) + ".role";
    if (p.device != q.device) return index_key("port", i) + ".device";
    if (p.mac != q.mac) return index_key("port", i) + ".mac";
    if (p.mtu != q.mtu) return index_key("port", i) + ".mtu";
  }
  return std::nullopt;
}

size_t service_index(const Config& config, std::string_view name, std::string_view key) {
  for (size_t i = 0; i < config.services.size(); ++i)
    if (config.services[i].name == name) return i;
  throw ConfigError(fmt::format("{}: no service is named {}", key, quoted(name)));
}

ServiceConfig with_endpoint(const Config& config, std::string_view service_name, const EndpointConfig& endpoint) {
  ServiceConfig service = config.services[service_index(config, service_name, "endpoint.service")];
  auto fail_key = [](std::string_view key, std::string_view problem) {
    throw ConfigError(fmt::format("endpoint.{}: {}", key, problem));
  };
  const std::string ip_text = ipv4_to_string(endpoint.ip);
  if (auto problem = special_address_problem(endpoint.ip)) fail_key("ip", *problem);
  const auto& node = config.node;
  if (node.service_cidr && node.service_cidr->contains(endpoint.ip))
    fail_key("ip", fmt::format("{} is inside node.service_cidr {}", ip_text, node.service_cidr->to_string()));
  for (size_t j = 0; j < config.services.size(); ++j)
    if (config.services[j].cluster_ip == endpoint.ip)
      fail_key("ip", fmt::format("{} is the cluster IP of {}", ip_text, service_ref(j, config.services[j].name)));
  if (endpoint.node.size() > kMaxNodeNameLen)
    fail_key("node", fmt::format("must be at most {} characters, got {}", kMaxNodeNameLen, endpoint.node.size()));
  if (!std::all_of(endpoint.node.begin(), endpoint.node.end(), is_name_char))
    fail_key("node", fmt::format("may contain only letters, digits, '.', '_' and '-', got {}", quoted(endpoint.node)));
  if (endpoint.ready && !endpoint.serving)
    fail_key("serving", "must be true when ready is true (a ready endpoint is serving)");
  auto same_ip = [&](const EndpointConfig& e) { return e.ip == endpoint.ip; };
  auto it = std::find_if(service.endpoints.begin(), service.endpoints.end(), same_ip);
  if (it != service.endpoints.end()) *it = endpoint;
  else service.endpoints.push_back(endpoint);
  return service;
}

ServiceConfig without_endpoint(const Config& config, std::string_view service_name, Ipv4 ip) {
  ServiceConfig service = config.services[service_index(config, service_name, "endpoint.service")];
  auto it = std::find_if(service.endpoints.begin(), service.endpoints.end(),
                         [&](const EndpointConfig& e) { return e.ip == ip; });
  if (it == service.endpoints.end())
    throw ConfigError(fmt::format("endpoint.ip: {} is not an endpoint of {}", ipv4_to_string(ip), quoted(service_name)));
  service.endpoints.erase(it);
  return service;
}

std::vector<RouteConfig> with_route(const Config& config, RouteConfig route) {
  std::vector<RouteConfig> out = config.routes;
  check_route(config, config.routes, route, [](std::string_view key, std::string_view problem) -> void {
    throw ConfigError(key.empty() ? fmt::format("route: {}", problem) : fmt::format("route.{}: {}", key, problem));
  });
  out.push_back(std::move(route));
  return out;
}

std::vector<RouteConfig> without_route(const Config& config, const Ipv4Prefix& prefix) {
  std::vector<RouteConfig> out = config.routes;
  auto it = std::find_if(out.begin(), out.end(), [&](const RouteConfig& r) { return r.prefix == prefix; });
  if (it == out.end())
    throw ConfigError(fmt::format("route.prefix: no route for {} (connected and local routes cannot be removed)",
                                  prefix.to_string()));
  out.erase(it);
  return out;
}

}  // namespace kdp
