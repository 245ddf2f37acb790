// kdpctl: talks to a running kdp over its control socket (ctrl/control_protocol.h).
//
//   kdpctl [--socket PATH] [--json] VERB ...
//   kdpctl apply -f FILE      FILE: a node config (TOML), or Kubernetes Services
//                             and EndpointSlices as `kubectl get -o json` prints
//                             them (JSON: its first character is '{' or '[')
//   kdpctl watch -f FILE|-    a watch-event stream (`kubectl get services,
//                             endpointslices -A --watch --output-watch-events
//                             -o json`), one watch.event per event
//
// Human-readable tables by default, the reply's JSON with --json. Exit codes:
// 0 ok, 1 kdp answered with an error (printed), 2 usage or connection error.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "ctrl/control_client.h"
#include "ctrl/control_protocol.h"

namespace {

using nlohmann::json;

constexpr int kExitOk = 0, kExitKdpError = 1, kExitUsage = 2;

// A usage or connection problem: exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// kdp answered {"ok": false}: exit 1.
struct KdpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Unmaps a whole mapping (its length kept with the pointer).
struct Unmap {
  size_t size = 0;
  void operator()(char* p) const { ::munmap(p, size); }
};

// A file's bytes: a regular file's mapped, its pages taken from the page
// cache as they are (reading a 14 MB List into fresh memory costs 6x more);
// a pipe's, FIFO's or stdin's read to their end.
struct FileBytes {
  std::unique_ptr<char, Unmap> mapped;
  std::string stream;
  std::string_view view() const {
    return mapped ? std::string_view(mapped.get(), mapped.get_deleter().size) : std::string_view(stream);
  }
};

// A document of apply, sent as it is after the request line as args[key]
// (the protocol's payload); `key` empty: none.
struct Document {
  std::string key;
  FileBytes bytes;
  std::string_view text() const { return bytes.view(); }
};

json call(const std::string& socket_path, const std::string& verb, const json& args, int timeout_s,
          const Document& document = {}) {
  try {
    if (!document.key.empty())
      return kdp::control::call_line(
          socket_path, kdp::control::request_line_with_payload(verb, args, document.key, document.text().size()),
          timeout_s, document.text());
    return kdp::control::call(socket_path, verb, args, timeout_s);
  } catch (const kdp::control::RefusedError& e) {
    throw KdpError(e.what());
  } catch (const kdp::control::ConnectionError& e) {
    throw UsageError(e.what());
  }
}

// ---- output ---------------------------------------------------------------

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i + 1 == cells.size()) out += cells[i];
      else out += fmt::format("{:<{}}  ", cells[i], width[i]);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    fmt::print("{}\n", out);
  };
  line(header);
  for (const auto& row : rows) line(row);
}

std::string backends_text(const json& list) {
  std::string out;
  for (const json& b : list) {
    if (!out.empty()) out += ",";
    out += fmt::format("{}:{}{}", text(b["ip"]), text(b["port"]), b.value("local", false) ? "*" : "");
  }
  return out.empty() ? "(none)" : out;
}

std::string tuple_text(const json& t) {
  return fmt::format("{}:{}->{}:{}", text(t["src"]), text(t["sport"]), text(t["dst"]), text(t["dport"]));
}

void print_services(const json& r) {
  std::vector<std::vector<std::string>> rows;
  for (const json& e : r) {
    std::string backends = backends_text(e["backends_from_pods"]);
    if (e["backends"] != e["backends_from_pods"]) backends += " (external: " + backends_text(e["backends"]) + ")";
    std::string name = text(e["service"]);
    if (!e.value("port_name", std::string()).empty()) name += ":" + text(e["port_name"]);
    rows.push_back({name, text(e["kind"]), text(e["key"]), backends});
  }
  print_table({"SERVICE", "KIND", "FRONTEND", "BACKENDS (* = this node)"}, rows);
}

void print_apply(const json& r) {
  for (const char* what : {"services", "routes", "neighbors"}) {
    const json& d = r[what];
    fmt::print("{}: {} added, {} changed, {} removed\n", what, d["added"].size(), d["changed"].size(),
               d["removed"].size());
    for (const char* kind : {"added", "changed", "removed"})
      for (const json& item : d[kind]) fmt::print("  {} {}\n", kind[0] == 'a' ? '+' : kind[0] == 'c' ? '~' : '-', text(item));
  }
  if (r.contains("k8s"))
    for (const json& c : r["k8s"])
      fmt::print("{}: {}{}\n", text(c["object"]), text(c["action"]),
                 c.contains("reason") ? " (" + text(c["reason"]) + ")" : "");
  fmt::print("udp flows {}: {}\n", r.value("dry_run", false) ? "to flush" : "flushed", text(r["udp_flows_flushed"]));
  if (r.contains("neighbors_full")) fmt::print("neighbour table full: {} not installed\n", text(r["neighbors_full"]));
  if (r.value("dry_run", false)) fmt::print("(dry run: nothing changed)\n");
  if (r.contains("timing"))
    fmt::print("request read in {:.2f} ms, applied in {:.2f} ms, live in all workers {} later\n",
               r["timing"].value("parse_ms", 0.0), r["timing"].value("apply_ms", 0.0),
               r["timing"]["live_ms"].is_number() ? fmt::format("{:.3f} ms", r["timing"]["live_ms"].get<double>())
                                                  : std::string("(not confirmed)"));
  if (r.contains("warning")) fmt::print("warning: {}\n", text(r["warning"]));
}

void print_stats(const json& s) {
  fmt::print("node {}\n", text(s["node"]));
  std::vector<std::vector<std::string>> rows;
  for (const json& p : s["ports"])
    rows.push_back({text(p["name"]), text(p["role"]), text(p["mac"]), text(p["rx"]), text(p["tx"]),
                    text(p["tx_dropped"]), text(p["rx_missed"])});
  print_table({"PORT", "ROLE", "MAC", "RX", "TX", "TX_DROP", "RX_MISSED"}, rows);
  std::string drops;
  for (const auto& [name, n] : s["drops"].items())
    if (n.is_number() && n.get<uint64_t>() != 0) drops += fmt::format(" {}={}", name, text(n));
  fmt::print("drops:{}\n", drops.empty() ? " none" : drops);
  const json& ct = s["conntrack"];
  fmt::print("conntrack: {} flows of {}, {} created, {} expired, {} evicted, {} refused (full)\n", text(ct["flows"]),
             text(ct["capacity"]), text(ct["created"]), text(ct["expired"]), text(ct["evicted"]), text(ct["full"]));
  fmt::print("services: {} frontends\n", text(s["services"]));
  for (const json& w : s["workers"])
    fmt::print("worker {} (lcore {}): {} packets, {:.0f} cycles/packet\n", text(w["id"]), text(w["lcore"]),
               text(w["packets"]), w.value("cycles_per_packet", 0.0));
}

void print_result(const std::string& verb, const json& r) {
  if (verb == "service.list" || verb == "service.get") return print_services(r);
  if (kdp::control::changes_state(verb) && r.contains("services")) return print_apply(r);
  if (verb == "stats") return print_stats(r);
  std::vector<std::vector<std::string>> rows;
  if (verb == "port.list") {
    for (const json& p : r)
      rows.push_back({text(p["name"]), text(p["role"]), text(p["mac"]), text(p["mtu"]), text(p["dpdk_id"]),
                      text(p["device"])});
    return print_table({"NAME", "ROLE", "MAC", "MTU", "DPDK_ID", "DEVICE"}, rows);
  }
  if (verb == "route.list") {
    for (const json& e : r) rows.push_back({text(e["prefix"]), text(e["kind"]), text(e["port"]), text(e["via"])});
    return print_table({"PREFIX", "KIND", "PORT", "VIA"}, rows);
  }
  if (verb == "neighbor.list") {
    for (const json& e : r) rows.push_back({text(e["ip"]), text(e["mac"]), text(e["state"]), text(e["port"])});
    return print_table({"IP", "MAC", "STATE", "PORT"}, rows);
  }
  if (verb == "fdb.list") {
    for (const json& e : r)
      rows.push_back({text(e["mac"]), text(e["port"]), e.value("static", false) ? "yes" : "no", text(e["age_s"])});
    return print_table({"MAC", "PORT", "STATIC", "AGE_S"}, rows);
  }
  if (verb == "conntrack.count") return fmt::print("{} flows (capacity {})\n", text(r["flows"]), text(r["capacity"]));
  if (verb == "conntrack.flush") return fmt::print("flushed {} flows\n", text(r["flushed"]));
  if (verb == "conntrack.list") {
    for (const json& e : r["entries"]) {
      std::string flags;
      for (const json& f : e["flags"]) flags += (flags.empty() ? "" : ",") + text(f);
      rows.push_back({text(e["protocol"]), tuple_text(e["orig"]), tuple_text(e["reply"]),
                      e["state"].get<std::string>().empty() ? "-" : text(e["state"]), flags.empty() ? "-" : flags,
                      text(e["age_s"])});
    }
    print_table({"PROTO", "ORIGINAL", "REPLY", "STATE", "FLAGS", "AGE_S"}, rows);
    if (r["shown"] != r["matched"])
      fmt::print("({} of {} matching flows shown; --limit shows more)\n", text(r["shown"]), text(r["matched"]));
    if (r["matched"] != r["flows"]) fmt::print("({} of {} flows match)\n", text(r["matched"]), text(r["flows"]));
    return;
  }
  if (verb == "snat.list") {
    for (const json& w : r["ports"])
      fmt::print("worker {}: ports {}-{}\n", text(w["worker"]), text(w["low"]), text(w["high"]));
    for (const json& e : r["entries"])
      rows.push_back({text(e["protocol"]), tuple_text(e["orig"]), tuple_text(e["reply"]), text(e["age_s"])});
    print_table({"PROTO", "ORIGINAL", "REPLY", "AGE_S"}, rows);
    fmt::print("{} ports in use{}\n", text(r["in_use"]),
               r["shown"] != r["in_use"] ? fmt::format(" ({} shown; --limit shows more)", text(r["shown"])) : "");
    return;
  }
  if (verb == "pod.list") {
    for (const json& e : r)
      rows.push_back({text(e["name"]), text(e["port"]), text(e["index"]), text(e["iface"]), text(e["ip"]),
                      text(e["mac"]), text(e["source"])});
    return print_table({"NAME", "PORT", "INDEX", "IFACE", "IP", "MAC", "SOURCE"}, rows);
  }
  if (verb == "pod.add") {
    fmt::print("pod {} {}: port {} (index {}) on {}, ip {}, mac {}; gateway {} ({})\n", text(r["name"]),
               r.value("dry_run", false) ? "can be attached" : "attached", text(r["port"]), text(r["index"]),
               text(r["iface"]), text(r["ip"]), r["mac"].is_null() ? "any" : text(r["mac"]), text(r["gateway_ip"]),
               text(r["gateway_mac"]));
    if (r.value("dry_run", false)) fmt::print("(dry run: nothing changed)\n");
    return;
  }
  if (verb == "pod.del") {
    fmt::print("pod {} {}: port {} (index {}); {} fdb entries, {} neighbours flushed\n", text(r["name"]),
               r.value("dry_run", false) ? "can be detached" : "detached", text(r["port"]), text(r["index"]),
               text(r["fdb_flushed"]), text(r["neighbors_flushed"]));
    if (r.value("dry_run", false)) fmt::print("(dry run: nothing changed)\n");
    return;
  }
  fmt::print("{}\n", r.dump(2));
}

std::string read_stream(std::istream& in) {
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

FileBytes read_file(const std::string& path) {
  FileBytes out;
  if (path == "-") {
    out.stream = read_stream(std::cin);
    return out;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UsageError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    std::ifstream in(path, std::ios::binary);  // a pipe or FIFO (-f <(...)): no size to ask for
    out.stream = read_stream(in);
    if (in.bad()) throw UsageError(fmt::format("cannot read {}", path));
    return out;
  }
  if (st.st_size == 0) return out;
  // Private and read-only: kdpctl sees the file as it was mapped (a file cut
  // short while kdpctl sends it would end kdpctl with SIGBUS, as any reader
  // of a mapping).
  void* mapped = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (mapped == MAP_FAILED) throw UsageError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  out.mapped = std::unique_ptr<char, Unmap>(static_cast<char*>(mapped), {static_cast<size_t>(st.st_size)});
  return out;
}

// JSON (Kubernetes objects) rather than TOML: the first non-space character
// opens an object, or an array whose first non-space character opens an
// object or closes it ("[node]" and "[[service]]" are TOML tables).
bool looks_like_json(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return false;
  if (text[first] == '{') return true;
  if (text[first] != '[') return false;
  const size_t second = text.find_first_not_of(" \t\r\n", first + 1);
  return second != std::string::npos && (text[second] == '{' || text[second] == ']');
}

// kdpctl watch: one watch.event per event of `in`, a line each in the
// output. Events are one per line, or pretty-printed over several lines
// (each ends on a line whose last character closes it). Returns the exit
// code: 0, or 1 at the first rejected event with `strict`.
int watch(std::istream& in, const std::string& socket_path, int timeout_s, bool strict, bool dry_run, bool as_json) {
  size_t events = 0, rejected = 0;
  auto report = [&](const std::string& type, const std::string& object, const json& result,
                    const std::string& error) {
    ++events;
    if (!error.empty()) ++rejected;
    if (as_json) {
      json line = {{"type", type}, {"object", object}, {"ok", error.empty()}};
      if (error.empty()) line["result"] = result;
      else line["error"] = error;
      fmt::print("{}\n", line.dump());
    } else if (!error.empty()) {
      fmt::print("{} {}: rejected: {}\n", type, object.empty() ? "-" : object, error);
    } else {
      std::string what = "ok";
      if (result.contains("k8s") && !result["k8s"].empty()) {
        const json& c = result["k8s"][0];
        what = text(c["action"]) + (c.contains("reason") ? " (" + text(c["reason"]) + ")" : "");
      }
      std::string services;
      if (result.contains("services")) {
        const json& d = result["services"];
        services = fmt::format("; services: {} added, {} changed, {} removed", d["added"].size(), d["changed"].size(),
                               d["removed"].size());
      }
      fmt::print("{} {}: {}{}\n", type, object, what, services);
    }
    std::fflush(stdout);
  };
  auto handle = [&](const std::string& text_in) {
    json event = json::parse(text_in, nullptr, false);
    if (event.is_discarded()) return report("?", "", {}, "not valid JSON");
    if (!event.is_object()) return report("?", "", {}, "an event must be a JSON object");
    // Bare objects (`--watch` without --output-watch-events): each replaces its namesake.
    if (!event.contains("type") && event.contains("kind")) event = {{"type", "ADDED"}, {"object", event}};
    const std::string type = event.value("type", json("?")).is_string() ? event.value("type", "?") : "?";
    const json object = event.value("object", json());
    std::string name;
    if (object.is_object()) {
      const json metadata = object.value("metadata", json::object());
      if (metadata.is_object() && metadata.value("name", json()).is_string())
        name = fmt::format("{} {}/{}", object.value("kind", json("?")).is_string() ? object.value("kind", "?") : "?",
                           metadata.value("namespace", json("default")).is_string()
                               ? metadata.value("namespace", "default")
                               : "default",
                           metadata.value("name", ""));
    }
    if (type == "BOOKMARK") return report(type, name, {{"k8s", {{{"action", "ignored"}}}}}, "");
    if (type == "ERROR") {
      std::string message = object.is_object() && object.value("message", json()).is_string()
                                ? object.value("message", "")
                                : object.dump();
      return report(type, name, {}, "the API server sent an error: " + message);
    }
    json args = {{"type", event.value("type", json())}, {"object", object}};
    if (dry_run) args["dry_run"] = true;
    try {
      kdp::control::parse_request(kdp::control::request_line("watch.event", args));
      report(type, name, call(socket_path, "watch.event", args, timeout_s), "");
    } catch (const kdp::control::ProtocolError& e) {
      report(type, name, {}, e.what());
    } catch (const KdpError& e) {
      report(type, name, {}, e.what());
    }
  };

  std::string pending;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    // A new top-level value while one is unfinished: that one was malformed.
    if (!pending.empty() && first == 0 && (line[0] == '{' || line[0] == '[')) {
      handle(pending);
      pending.clear();
    }
    pending += line;
    pending += '\n';
    const char last = line[line.find_last_not_of(" \t")];
    if ((last == '}' || last == ']') && json::accept(pending)) {
      handle(pending);
      pending.clear();
    }
    if (strict && rejected != 0) return kExitKdpError;
  }
  if (!pending.empty()) handle(pending);
  if (!as_json) fmt::print("{} events, {} rejected\n", events, rejected);
  return strict && rejected != 0 ? kExitKdpError : kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kdpctl: inspect and change a running kdp through its control socket"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string socket_path = "/run/kdp/kdp.sock";
  bool as_json = false, prometheus = false;
  int timeout_s = 60;
  app.add_option("--socket", socket_path, "kdp's control socket ([control] socket)")
      ->envname("KDP_SOCKET")
      ->capture_default_str();
  app.add_flag("--json", as_json, "print kdp's reply as JSON");
  app.add_option("--timeout", timeout_s, "seconds to wait for a reply")->check(CLI::PositiveNumber)->capture_default_str();

  std::string verb;
  json args = json::object();
  Document document;                   // apply -f: the file
  std::string file, service, ip, node, dst;
  bool not_ready = false, terminating = false, dry_run = false, strict = false;
  size_t limit = kdp::control::kDefaultConntrackListLimit;

  auto* apply = app.add_subcommand("apply", "replace routes, static neighbours and Services with a config file's");
  apply->add_option("-f,--file", file,
                    "the whole node config (TOML), or Kubernetes Services and EndpointSlices (JSON: an object, a "
                    "List or an array); - reads stdin")
      ->required();
  apply->add_flag("--dry-run", dry_run, "show what would change, change nothing");
  auto* diff = app.add_subcommand("diff", "what `apply -f FILE` would change (a dry run)");
  diff->add_option("-f,--file", file, "as apply -f")->required();
  auto* watch_cmd = app.add_subcommand("watch", "follow a Kubernetes watch-event stream (one watch.event per event)");
  watch_cmd->add_option("-f,--file", file, "the events (JSON, one per line or pretty-printed); - reads stdin")
      ->required();
  watch_cmd->add_flag("--strict", strict, "stop and exit 1 at the first rejected event (default: report, go on)");
  watch_cmd->add_flag("--dry-run", dry_run, "check each event, change nothing");

  auto group_of = [&](const char* name, const char* what) {
    auto* group = app.add_subcommand(name, what);
    group->require_subcommand(1);
    return group;
  };
  auto list_of = [&](const char* name, const char* what) { return group_of(name, what)->add_subcommand("list", what); };
  auto* service_group = group_of("service", "Services: their compiled frontends and backends");
  auto* service_list = service_group->add_subcommand("list", "every frontend and its backends");
  auto* service_get = service_group->add_subcommand("get", "one Service's frontends and backends");
  auto* service_del = service_group->add_subcommand("del", "remove a Service (the config file's or a Kubernetes one)");
  for (auto* sub : {service_get, service_del}) sub->add_option("service", service, "namespace/name")->required();
  service_del->add_flag("--dry-run", dry_run, "show what would change, change nothing");
  std::string prefix, via, port;
  auto* route_group = group_of("route", "the route table");
  auto* route_list = route_group->add_subcommand("list", "every route: connected, local and static");
  auto* route_add = route_group->add_subcommand("add", "add a static route");
  auto* route_del = route_group->add_subcommand("del", "remove a static route");
  for (auto* sub : {route_add, route_del}) {
    sub->add_option("prefix", prefix, "destination prefix (a.b.c.d/len)")->required();
    sub->add_flag("--dry-run", dry_run, "show what would change, change nothing");
  }
  route_add->add_option("--via", via, "next hop, on-link on the uplink")->required();
  route_add->add_option("--port", port, "uplink port to leave through (default: the first uplink)");
  auto* snat_list = list_of("snat", "masqueraded flows and each worker's SNAT port range");
  snat_list->add_option("--limit", limit, "at most this many flows")
      ->check(CLI::Range(size_t{1}, kdp::control::kMaxConntrackListLimit))
      ->capture_default_str();
  auto* neighbor_list = list_of("neighbor", "the neighbour (ARP) table");
  auto* fdb_list = list_of("fdb", "the bridge forwarding database");
  auto* port_list = list_of("port", "ports");

  auto* endpoint = app.add_subcommand("endpoint", "add or remove one endpoint of a Service");
  endpoint->require_subcommand(1);
  auto* endpoint_add = endpoint->add_subcommand("add", "add an endpoint (or replace the one with the same IP)");
  auto* endpoint_del = endpoint->add_subcommand("del", "remove an endpoint");
  for (auto* sub : {endpoint_add, endpoint_del}) {
    sub->add_option("--service", service, "namespace/name")->required();
    sub->add_option("--ip", ip, "the endpoint's address")->required();
    sub->add_flag("--dry-run", dry_run, "show what would change, change nothing");
  }
  endpoint_add->add_option("--node", node, "the node it runs on");
  endpoint_add->add_flag("--not-ready", not_ready, "ready = false");
  endpoint_add->add_flag("--terminating", terminating, "terminating = true (with --not-ready: still serving)");

  auto* conntrack = app.add_subcommand("conntrack", "connection tracking");
  conntrack->require_subcommand(1);
  auto* ct_list = conntrack->add_subcommand("list", "flows (the first --limit; all, or those matching --dst/--service)");
  ct_list->add_option("--limit", limit, "at most this many flows")
      ->check(CLI::Range(size_t{1}, kdp::control::kMaxConntrackListLimit))
      ->capture_default_str();
  auto* ct_count = conntrack->add_subcommand("count", "how many flows");
  auto* ct_flush = conntrack->add_subcommand("flush", "remove flows (all, or those matching --dst/--service)");
  for (auto* sub : {ct_list, ct_flush}) {
    sub->add_option("--dst", dst, "original destination or backend address");
    sub->add_option("--service", service, "flows to this Service's frontends (namespace/name)");
  }

  std::string pod_name, iface, mac;
  auto* pod = app.add_subcommand("pod", "pods attached at run time (and those of the config file)");
  pod->require_subcommand(1);
  auto* pod_add = pod->add_subcommand("add", "attach a pod: a new bridge port on its host interface");
  pod_add->add_option("--name", pod_name, "namespace/pod")->required();
  pod_add->add_option("--iface", iface, "the host end of the pod's interface (e.g. its veth peer)")->required();
  pod_add->add_option("--ip", ip, "the pod's address, a.b.c.d or a.b.c.d/len")->required();
  pod_add->add_option("--mac", mac, "the pod's MAC: then only it may send from the port");
  pod_add->add_flag("--dry-run", dry_run, "check everything, attach nothing");
  auto* pod_del = pod->add_subcommand("del", "detach a pod attached by pod add");
  pod_del->add_option("--name", pod_name, "namespace/pod")->required();
  pod_del->add_flag("--dry-run", dry_run, "show what would be removed, remove nothing");
  auto* pod_list = pod->add_subcommand("list", "pods: attached and from the config file");

  auto* stats = app.add_subcommand("stats", "counters");
  stats->add_flag("--prometheus", prometheus, "Prometheus text exposition format");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }

  try {
    if (watch_cmd->parsed()) {
      if (file == "-") return watch(std::cin, socket_path, timeout_s, strict, dry_run, as_json);
      std::ifstream in(file);
      if (!in) throw UsageError(fmt::format("cannot read {}: {}", file, std::strerror(errno)));
      return watch(in, socket_path, timeout_s, strict, dry_run, as_json);
    }
    if (apply->parsed() || diff->parsed()) {
      verb = "apply";
      document.bytes = read_file(file);
      // Sent as it is: kdp parses a List of 10,000 Services once, and nothing escapes a TOML text.
      if (looks_like_json(document.text())) {
        document.key = "k8s";
        args = {{"dry_run", dry_run || diff->parsed()}};
      } else {
        document.key = "toml";
        args = {{"source", file}, {"dry_run", dry_run || diff->parsed()}};
      }
    } else if (service_list->parsed()) {
      verb = "service.list";
    } else if (service_get->parsed()) {
      verb = "service.get";
      args = {{"service", service}};
    } else if (service_del->parsed()) {
      verb = "service.del";
      args = {{"service", service}, {"dry_run", dry_run}};
    } else if (route_list->parsed()) {
      verb = "route.list";
    } else if (route_add->parsed() || route_del->parsed()) {
      verb = route_add->parsed() ? "route.add" : "route.del";
      args = {{"prefix", prefix}, {"dry_run", dry_run}};
      if (route_add->parsed()) args["via"] = via;
      if (!port.empty()) args["port"] = port;
    } else if (snat_list->parsed()) {
      verb = "snat.list";
      args = {{"limit", limit}};
    } else if (neighbor_list->parsed()) {
      verb = "neighbor.list";
    } else if (fdb_list->parsed()) {
      verb = "fdb.list";
    } else if (port_list->parsed()) {
      verb = "port.list";
    } else if (endpoint_add->parsed() || endpoint_del->parsed()) {
      verb = endpoint_add->parsed() ? "endpoint.add" : "endpoint.del";
      args = {{"service", service}, {"ip", ip}, {"dry_run", dry_run}};
      if (endpoint_add->parsed()) {
        if (!node.empty()) args["node"] = node;
        args["ready"] = !not_ready;
        args["serving"] = !not_ready || terminating;
        args["terminating"] = terminating;
      }
    } else if (ct_list->parsed() || ct_flush->parsed()) {
      verb = ct_list->parsed() ? "conntrack.list" : "conntrack.flush";
      if (ct_list->parsed()) args = {{"limit", limit}};
      if (!dst.empty()) args["dst"] = dst;
      if (!service.empty()) args["service"] = service;
    } else if (ct_count->parsed()) {
      verb = "conntrack.count";
    } else if (pod_add->parsed()) {
      verb = "pod.add";
      args = {{"name", pod_name}, {"iface", iface}, {"ip", ip}, {"dry_run", dry_run}};
      if (!mac.empty()) args["mac"] = mac;
    } else if (pod_del->parsed()) {
      verb = "pod.del";
      args = {{"name", pod_name}, {"dry_run", dry_run}};
    } else if (pod_list->parsed()) {
      verb = "pod.list";
    } else if (stats->parsed()) {
      verb = "stats";
      if (prometheus && as_json) throw UsageError("--json and --prometheus exclude each other");
    }
    // Checked here as kdp would, so a typo is a usage error (2), not kdp's
    // (a document in its place is checked above).
    try {
      json checked = args;
      if (document.key == "k8s") checked["k8s"] = json::object();
      if (document.key == "toml") checked["toml"] = "";
      kdp::control::parse_request(kdp::control::request_line(verb, checked));
    } catch (const kdp::control::ProtocolError& e) {
      throw UsageError(e.what());
    }
    json result = call(socket_path, verb, args, timeout_s, document);
    if (prometheus) fmt::print("{}", kdp::control::stats_to_prometheus(result));
    else if (as_json) fmt::print("{}\n", result.dump(2));
    else print_result(verb, result);
    return kExitOk;
  } catch (const KdpError& e) {
    fmt::print(stderr, "kdpctl: {}\n", e.what());
    return kExitKdpError;
  } catch (const std::exception& e) {
    fmt::print(stderr, "kdpctl: {}\n", e.what());
    return kExitUsage;
  }
}
