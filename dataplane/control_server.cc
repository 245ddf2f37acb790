#include "dataplane/control_server.h"

#include <rte_cycles.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <map>
#include <stdexcept>
#include <thread>

#include "dataplane/stats.h"

namespace kdp {

using nlohmann::json;

namespace {

constexpr size_t kMaxClients = 16;
constexpr size_t kReadBudgetPerPoll = size_t{1} << 20;  // per client, so one client cannot hold the loop
constexpr size_t kMaxPendingReply = size_t{256} << 20;   // a client that does not read its replies is dropped

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(fmt::format("{}: {}", what, std::strerror(errno)));
}

// mkdir -p; directories it creates get mode 0700.
void make_parents(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) fail_errno("control.socket: cannot create " + dir);
  }
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("control.socket: path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

std::string ip_text(be32 ip) { return ipv4_to_string(from_be(ip)); }

const char* proto_name(uint8_t proto) {
  switch (proto) {
    case 1: return "icmp";
    case 6: return "tcp";
    case 17: return "udp";
    case 132: return "sctp";
  }
  return "other";
}

json tuple_json(const FlowKey& k) {
  return {{"src", ip_text(k.src_ip)}, {"dst", ip_text(k.dst_ip)}, {"sport", from_be(k.src_port)},
          {"dport", from_be(k.dst_port)}};
}

json flags_json(uint8_t flags) {
  json out = json::array();
  static constexpr std::pair<FlowFlag, const char*> kNames[] = {{kFlowReplied, "replied"}, {kFlowDnat, "dnat"},
                                                                {kFlowSnat, "snat"},       {kFlowFinReply, "fin_reply"},
                                                                {kFlowDying, "dying"}};
  for (const auto& [flag, name] : kNames)
    if (flags & flag) out.push_back(name);
  return out;
}

uint32_t now_s() { return static_cast<uint32_t>(rte_rdtsc() / rte_get_tsc_hz()); }  // the workers' clock

json backends_json(const std::vector<Backend>& backends) {
  json out = json::array();
  for (const Backend& b : backends)
    out.push_back({{"ip", ipv4_to_string(b.ip)}, {"port", b.port}, {"local", b.local}});
  return out;
}

bool has_backend(const ServiceEntry& entry, Ipv4 ip, uint16_t port) {
  auto same = [&](const Backend& b) { return b.ip == ip && b.port == port; };
  return std::any_of(entry.backends.begin(), entry.backends.end(), same) ||
         std::any_of(entry.backends_from_pods.begin(), entry.backends_from_pods.end(), same);
}

// Whether `after` lost a backend `before` had.
bool lost_backend(const ServiceEntry& before, const ServiceEntry& after) {
  auto kept = [&](const Backend& b) { return has_backend(after, b.ip, b.port); };
  return !std::all_of(before.backends.begin(), before.backends.end(), kept) ||
         !std::all_of(before.backends_from_pods.begin(), before.backends_from_pods.end(), kept);
}

json services_json(const ServiceDiff& diff) {
  auto name_of = [](const ServiceKey& k) { return k.to_string(); };
  json services = {{"added", json::array()}, {"changed", json::array()}, {"removed", json::array()}};
  for (const auto& e : diff.added) services["added"].push_back(name_of(e.key()) + " " + e.service);
  for (const auto& e : diff.changed) services["changed"].push_back(name_of(e.key()) + " " + e.service);
  for (const auto& k : diff.removed) services["removed"].push_back(name_of(k));
  return services;
}

json entry_json(const ServiceEntry& e) {
  return {{"key", e.key().to_string()},
          {"vip", ipv4_to_string(e.vip)},
          {"protocol", to_string(e.proto)},
          {"port", e.port},
          {"kind", to_string(e.kind)},
          {"service", e.service},
          {"port_name", e.port_name},
          {"backends", backends_json(e.backends)},
          {"backends_from_pods", backends_json(e.backends_from_pods)}};
}

json no_changes() { return {{"added", json::array()}, {"changed", json::array()}, {"removed", json::array()}}; }

// Added, removed and changed members of two keyed lists.
template <typename T, typename KeyOf, typename Name>
json keyed_diff(const std::vector<T>& before, const std::vector<T>& after, KeyOf key_of, Name name) {
  std::map<decltype(key_of(before.front())), const T*> old_items, new_items;
  for (const T& item : before) old_items[key_of(item)] = &item;
  for (const T& item : after) new_items[key_of(item)] = &item;
  json out = {{"added", json::array()}, {"changed", json::array()}, {"removed", json::array()}};
  for (const auto& [key, item] : new_items) {
    auto it = old_items.find(key);
    if (it == old_items.end()) out["added"].push_back(name(*item));
    else if (!(*it->second == *item)) out["changed"].push_back(name(*item));
  }
  for (const auto& [key, item] : old_items)
    if (!new_items.contains(key)) out["removed"].push_back(name(*item));
  return out;
}

struct RouteItem {
  Ipv4Prefix prefix;
  Ipv4 via;
  std::string port;
  bool operator==(const RouteItem&) const = default;
};
struct NeighborItem {
  Ipv4 ip;
  MacAddr mac;
  std::string port;
  bool operator==(const NeighborItem&) const = default;
};

std::vector<RouteItem> route_items(const std::vector<RouteConfig>& routes) {
  std::vector<RouteItem> out;
  for (const auto& r : routes) out.push_back({r.prefix, r.via, r.port});
  return out;
}

json routes_json(const std::vector<RouteItem>& before, const std::vector<RouteItem>& after) {
  return keyed_diff(
      before, after, [](const RouteItem& r) { return std::pair(r.prefix.addr, r.prefix.len); },
      [](const RouteItem& r) { return fmt::format("{} via {}", r.prefix.to_string(), ipv4_to_string(r.via)); });
}
std::vector<NeighborItem> neighbor_items(const Config& c) {
  std::vector<NeighborItem> out;
  for (const auto& n : c.neighbors) out.push_back({n.ip, n.mac, n.port});
  return out;
}

}  // namespace

ControlServer::ControlServer(NodeTables& tables, const std::vector<std::unique_ptr<WorkerContext>>& workers,
                             const Control& control, const Config& running)
    : tables_(tables),
      workers_(workers),
      control_(control),
      desired_(running),
      installed_(compile_services(running)),
      pods_(tables, workers),
      base_(running),
      own_uid_(::geteuid()) {}

ControlServer::~ControlServer() {
  for (auto& c : clients_) ::close(c->fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (bound_) ::unlink(path_.c_str());
}

void ControlServer::start() {
  path_ = desired_.control.socket;
  const sockaddr_un addr = unix_address(path_);
  make_parents(path_);
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw std::runtime_error(fmt::format("control.socket: {} exists and is not a socket", path_));
    // A socket someone still answers on is another kdp's; a dead one is ours to replace.
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) fail_errno("control.socket: socket");
    const bool live = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(probe);
    if (live)
      throw std::runtime_error(fmt::format(
          "control.socket: {} is in use by another process (another kdp?); set [control] socket", path_));
    if (::unlink(path_.c_str()) != 0) fail_errno("control.socket: cannot remove stale " + path_);
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail_errno("control.socket: socket");
  const mode_t old_mask = ::umask(0177);  // created 0600: no window with wider permissions
  const int bound = ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  if (bound != 0) fail_errno("control.socket: cannot bind " + path_);
  bound_ = true;
  if (::chmod(path_.c_str(), 0600) != 0) fail_errno("control.socket: chmod " + path_);
  if (::listen(listen_fd_, 16) != 0) fail_errno("control.socket: listen");
}

unsigned ControlServer::poll() {
  if (listen_fd_ < 0) return 0;
  std::vector<pollfd> fds;
  fds.reserve(clients_.size() + 1);
  fds.push_back({listen_fd_, POLLIN, 0});
  for (const auto& c : clients_)
    fds.push_back({c->fd, static_cast<short>(c->out.size() > c->out_sent ? POLLIN | POLLOUT : POLLIN), 0});
  if (::poll(fds.data(), fds.size(), 0) <= 0) return 0;
  unsigned answered = 0;
  // Clients first (the vector changes when new ones are accepted).
  for (size_t i = clients_.size(); i-- > 0;) {
    if (fds[i + 1].revents == 0) continue;
    if (!serve(*clients_[i], answered)) {
      ::close(clients_[i]->fd);
      clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  if (fds[0].revents & POLLIN) accept_clients();
  return answered + (fds[0].revents ? 1 : 0);
}

void ControlServer::accept_clients() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a client that went away
    ucred cred{};
    socklen_t len = sizeof cred;
    const bool known = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
    std::string refusal;
    if (!known || !control::peer_allowed(cred.uid, own_uid_))
      refusal = "permission denied: only root or kdp's own user may use the control socket";
    else if (clients_.size() >= kMaxClients)
      refusal = fmt::format("too many control connections (at most {})", kMaxClients);
    if (!refusal.empty()) {
      const std::string line = control::error_line(refusal);
      [[maybe_unused]] ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    auto client = std::make_unique<Client>();
    client->fd = fd;
    clients_.push_back(std::move(client));
  }
}

bool ControlServer::serve(Client& c, unsigned& answered) {
  if (!flush(c)) return false;
  if (c.close_when_sent) return c.out_sent < c.out.size();
  char buffer[65536];
  size_t budget = kReadBudgetPerPoll;
  bool eof = false;
  while (budget > 0) {
    ssize_t n = ::recv(c.fd, buffer, std::min(sizeof buffer, budget), MSG_DONTWAIT);
    if (n > 0) {
      c.in.feed(buffer, static_cast<size_t>(n));
      budget -= static_cast<size_t>(n);
      // Answer as requests complete, so a long stream never piles up unread.
      while (!c.close_when_sent) {
        if (c.awaiting) {
          auto bytes = c.in.next_bytes(c.awaiting->payload->bytes);
          if (!bytes) break;
          c.out += receive_payload(c, std::move(*bytes));
          ++answered;
          continue;
        }
        auto line = c.in.next_line();
        if (!line) break;
        c.out += receive_line(c, *line);
        // With the room a Kubernetes document needs to be parsed where it lies.
        if (c.awaiting) c.in.reserve(c.awaiting->payload->bytes + K8sJsonParser::kPadding);
        else ++answered;
      }
      if (c.in.overflowed() || c.close_when_sent) break;
      continue;
    }
    if (n == 0) eof = true;
    else if (errno == EINTR) continue;
    else if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    break;
  }
  if (c.in.overflowed()) {
    c.out += control::error_line(fmt::format("request larger than {} bytes", control::kMaxRequestBytes));
    c.close_when_sent = true;
  }
  if (eof && c.awaiting && !c.close_when_sent) {
    c.out += control::error_line(fmt::format("{}: payload {} cut short: {} of {} bytes arrived", c.awaiting->verb,
                                             c.awaiting->payload->arg, c.in.buffered(), c.awaiting->payload->bytes));
    c.awaiting.reset();
  }
  if (eof) c.close_when_sent = true;
  if (c.out.size() - c.out_sent > kMaxPendingReply) return false;
  if (!flush(c)) return false;
  return !(c.close_when_sent && c.out_sent >= c.out.size());
}

bool ControlServer::flush(Client& c) {
  while (c.out_sent < c.out.size()) {
    ssize_t n = ::send(c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
  c.out.clear();
  c.out_sent = 0;
  return true;
}

std::string ControlServer::receive_line(Client& c, std::string_view line) {
  const auto received = Clock::now();
  control::Request request;
  try {
    request = control::parse_request(line);
  } catch (const control::PayloadRequestError& e) {
    c.close_when_sent = true;  // the payload's bytes would be read as requests
    return control::error_line(e.what());
  } catch (const std::exception& e) {
    return control::error_line(e.what());
  }
  if (request.payload) {
    c.awaiting = std::move(request);
    c.awaiting_since = received;
    return "";
  }
  return answer(request, received);
}

std::string ControlServer::receive_payload(Client& c, std::string&& bytes) {
  control::Request request = std::move(*c.awaiting);
  c.awaiting.reset();
  try {
    control::attach_payload(request, std::move(bytes));
  } catch (const std::exception& e) {
    return control::error_line(e.what());
  }
  return answer(request, c.awaiting_since);
}

std::string ControlServer::answer(control::Request& request, Clock::time_point received) {
  const double parse_ms = std::chrono::duration<double, std::milli>(Clock::now() - received).count();
  try {
    json result = dispatch(request);
    // A change's timing: reading its request (a 10,000-Service List is megabytes) comes first.
    if (auto timing = result.find("timing"); result.is_object() && timing != result.end() && timing->is_object())
      (*timing)["parse_ms"] = parse_ms;
    return control::ok_line(result);
  } catch (const std::exception& e) {
    if (control::changes_state(request.verb)) ++failed_changes_;
    return control::error_line(e.what());
  }
}

void ControlServer::LatencyHistogram::record(double seconds) {
  for (size_t i = 0; i < std::size(kBounds); ++i)
    if (seconds <= kBounds[i]) {
      ++counts[i];
      break;
    }
  ++count;
  sum += seconds;
  last = seconds;
  max = std::max(max, seconds);
}

json ControlServer::LatencyHistogram::to_json() const {
  json buckets = json::array();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < std::size(kBounds); ++i) {
    cumulative += counts[i];
    buckets.push_back({kBounds[i], cumulative});
  }
  return {{"count", count}, {"sum", sum}, {"last", last}, {"max", max}, {"buckets", std::move(buckets)}};
}

json ControlServer::update_stats() const {
  return {{"applied", apply_latency_.count},
          {"failed", failed_changes_},
          {"apply_seconds", apply_latency_.to_json()},
          {"live_seconds", live_latency_.to_json()}};
}

json ControlServer::stats() const {
  json out = collect_stats(tables_, workers_, control_);
  out["updates"] = update_stats();
  return out;
}

template <typename Change>
json ControlServer::change_live(bool dry_run, Change change) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  json result = change();
  if (dry_run) return result;
  const auto published = Clock::now();
  // Workers poll in bursts of microseconds and a sleeping worker is offline,
  // so this ends quickly; the bound only guards against a stuck worker.
  const uint64_t token = tables_.rcu.start_grace();
  bool live = tables_.rcu.grace_ended(token);
  while (!live && Clock::now() - published < std::chrono::seconds(1)) {
    std::this_thread::yield();
    live = tables_.rcu.grace_ended(token);
  }
  const auto done = Clock::now();
  const double apply_s = std::chrono::duration<double>(published - start).count();
  const double live_s = std::chrono::duration<double>(done - published).count();
  apply_latency_.record(apply_s);
  if (live) live_latency_.record(live_s);
  result["timing"] = {{"apply_ms", apply_s * 1e3}, {"live_ms", live ? json(live_s * 1e3) : json()}};
  if (!live) result["warning"] = "a worker has not passed a quiescent point within 1 s of the change";
  return result;
}

json ControlServer::dispatch(control::Request& request) {
  const std::string& verb = request.verb;
  if (verb == "pod.add") {
    const auto args = control::pod_add_args(request);
    return change_live(args.dry_run, [&] { return pods_.add(args); });
  }
  if (verb == "pod.del") {
    const auto args = control::pod_del_args(request);
    return change_live(args.dry_run, [&] { return pods_.del(args); });
  }
  if (verb == "pod.list") return pods_.list();
  if (verb == "stats") return stats();
  if (verb == "port.list") return list_ports();
  if (verb == "route.list") return list_routes();
  if (verb == "neighbor.list") return list_neighbors();
  if (verb == "fdb.list") return list_fdb();
  if (verb == "service.list") return list_services();
  if (verb == "service.get") return get_service(control::service_args(request).service);
  if (verb == "snat.list") return list_snat(control::list_limit(request));
  if (verb == "conntrack.count")
    return {{"flows", tables_.conntrack->size()}, {"capacity", tables_.conntrack->capacity()}};
  if (verb == "conntrack.list") return list_conntrack(control::conntrack_list_args(request));
  if (verb == "conntrack.flush") return flush_conntrack(control::conntrack_flush_args(request));
  if (verb == "apply") {
    control::ApplyArgs args = control::apply_args(std::move(request));
    return change_live(args.dry_run, [&] {
      if (args.k8s) {
        K8sState next = k8s_;
        std::vector<K8sChange> changes = next.apply(k8s_json_.parse(*args.k8s, "apply: args.k8s"));
        return apply_k8s(std::move(next), std::move(changes), args.dry_run);
      }
      Config next = parse_config(args.toml, args.source);
      json result = apply(with_k8s_services(next, k8s_), args.dry_run);
      if (!args.dry_run) base_ = std::move(next);
      return result;
    });
  }
  if (verb == "watch.event") {
    const control::WatchEventArgs args = control::watch_event_args(request);
    return change_live(args.dry_run, [&] {
      const simdjson::dom::element& event = k8s_json_.parse(args.event, "watch.event: args");
      if (auto slice = K8sState::slice_event_target(event)) return slice_event(*slice, event, args.dry_run);
      K8sState next = k8s_;
      K8sChange change = next.apply_event(event);
      return apply_k8s(std::move(next), {std::move(change)}, args.dry_run);
    });
  }
  if (verb == "endpoint.add" || verb == "endpoint.del") {
    // Edits of the config file's Services; those of EndpointSlices change by watch.event.
    const control::EndpointArgs args = control::endpoint_args(request);
    return change_live(args.dry_run, [&] {
      const size_t index = service_index(base_, args.service, "endpoint.service");
      // Checked against every Service's addresses, the rendered ones included.
      ServiceConfig edited = verb == "endpoint.add" ? with_endpoint(desired_, args.service, args.endpoint)
                                                    : without_endpoint(desired_, args.service, args.endpoint.ip);
      return edit_base_service(index, std::move(edited), args.dry_run);
    });
  }
  if (verb == "service.del") {
    const control::ServiceArgs args = control::service_args(request);
    return change_live(args.dry_run, [&] { return delete_service(args); });
  }
  if (verb == "route.add" || verb == "route.del") {
    const control::RouteArgs args = control::route_args(request);
    return change_live(args.dry_run, [&] {
      return edit_routes(verb == "route.add" ? with_route(base_, args.route) : without_route(base_, args.route.prefix),
                         args.dry_run);
    });
  }
  throw control::ProtocolError(fmt::format("verb \"{}\" is not implemented", verb));
}

json ControlServer::delete_service(const control::ServiceArgs& args) {
  for (size_t i = 0; i < base_.services.size(); ++i)
    if (base_.services[i].name == args.service) return edit_base_service(i, std::nullopt, args.dry_run);
  if (k8s_.services().contains(args.service)) {
    K8sState next = k8s_;
    K8sChange change = next.delete_service(args.service);
    return apply_k8s(std::move(next), {std::move(change)}, args.dry_run);
  }
  throw control::ProtocolError(fmt::format("service.del: args.service: no service is named \"{}\"", args.service));
}

json ControlServer::apply_k8s(K8sState next, std::vector<K8sChange> changes, bool dry_run) {
  json result = apply(with_k8s_services(base_, next), dry_run);
  if (!dry_run) k8s_ = std::move(next);
  result["k8s"] = to_json(changes);
  return result;
}

json ControlServer::apply(Config next, bool dry_run) {
  // Workers read node, nat, dataplane, bridge and neighbour settings from
  // NodeTables::config on the fast path: those stay as kdp started.
  if (auto key = immutable_difference(desired_, next))
    throw control::ProtocolError(fmt::format(
        "{}: {}: differs from the running configuration; only routes, static neighbours and services can change "
        "while kdp runs (restart kdp to change it)",
        next.source, *key));

  // Everything is built before anything is published: an error changes nothing.
  const ServiceDiff diff = installed_.diff(compile_services(next));
  const auto old_routes = route_items(desired_.routes), new_routes = route_items(next.routes);
  json routes = routes_json(old_routes, new_routes);
  const auto old_neighbors = neighbor_items(desired_), new_neighbors = neighbor_items(next);
  json neighbors = keyed_diff(
      old_neighbors, new_neighbors, [](const NeighborItem& n) { return n.ip; },
      [](const NeighborItem& n) { return fmt::format("{} {}", ipv4_to_string(n.ip), n.mac.to_string()); });

  json result = {{"dry_run", dry_run}, {"services", services_json(diff)}, {"routes", routes}, {"neighbors", neighbors}};
  if (dry_run) {
    result["udp_flows_flushed"] = count_stale_udp(diff);
    return result;
  }

  const bool routes_changed = old_routes != new_routes;
  std::unique_ptr<RouteSnapshot> route_snapshot;
  if (routes_changed)
    route_snapshot =
        std::make_unique<RouteSnapshot>(tables_.routes_from_config(next.routes), tables_.next_route_generation());
  std::unique_ptr<ServiceSnapshot> service_snapshot;
  if (!diff.empty())
    service_snapshot = std::make_unique<ServiceSnapshot>(*tables_.services(), diff, tables_.next_service_generation());

  if (route_snapshot) tables_.publish_routes(std::move(route_snapshot));
  const unsigned flushed = service_snapshot ? install_services(std::move(service_snapshot), diff) : 0;
  // Static neighbours: gone ones are removed (then learned again by ARP if
  // still in use), new and changed ones written as static entries.
  unsigned neighbors_full = 0;
  for (const NeighborItem& old : old_neighbors)
    if (std::none_of(new_neighbors.begin(), new_neighbors.end(), [&](const NeighborItem& n) { return n.ip == old.ip; }))
      if (NeighborEntry* e = tables_.neighbors.lookup(NeighborKey{to_be32(old.ip)});
          e != nullptr && e->state() == NeighborState::Static)
        tables_.neighbors.erase(NeighborKey{to_be32(old.ip)});
  for (const NeighborItem& n : new_neighbors) {
    const uint64_t word = NeighborEntry::pack(to_ether(n.mac), NeighborState::Static);
    const uint16_t port = n.port.empty() ? kNoPort : tables_.port_index(n.port);
    if (NeighborEntry* e = tables_.neighbors.lookup(NeighborKey{to_be32(n.ip)})) {
      e->mac_state.store(word, std::memory_order_relaxed);
      e->port = port;
      continue;
    }
    NeighborEntry entry;
    entry.mac_state.store(word);
    entry.port = port;
    if (tables_.neighbors.insert(NeighborKey{to_be32(n.ip)}, entry) == nullptr) ++neighbors_full;
  }
  desired_ = std::move(next);
  result["udp_flows_flushed"] = flushed;
  if (neighbors_full != 0) result["neighbors_full"] = neighbors_full;
  return result;
}

json ControlServer::edit_base_service(size_t index, std::optional<ServiceConfig> edited, bool dry_run) {
  const ServiceDiff diff = installed_.diff_service(&base_.services[index], edited ? &*edited : nullptr, desired_);
  json result = {{"dry_run", dry_run}, {"services", services_json(diff)}, {"routes", no_changes()},
                 {"neighbors", no_changes()}};
  if (dry_run) {
    result["udp_flows_flushed"] = count_stale_udp(diff);
    return result;
  }
  unsigned flushed = 0;
  if (!diff.empty())
    flushed = install_services(
        std::make_unique<ServiceSnapshot>(*tables_.services(), diff, tables_.next_service_generation()), diff);
  // The config file's services lead desired_'s, in the same order (with_k8s_services).
  if (edited) {
    desired_.services[index] = *edited;
    base_.services[index] = std::move(*edited);
  } else {
    desired_.services.erase(desired_.services.begin() + static_cast<std::ptrdiff_t>(index));
    base_.services.erase(base_.services.begin() + static_cast<std::ptrdiff_t>(index));
  }
  result["udp_flows_flushed"] = flushed;
  return result;
}

json ControlServer::slice_event(const std::string& slice_key, const simdjson::dom::element& event, bool dry_run) {
  // The Services the slice fed before and after the event (its label may change).
  auto fed = [](const K8sEndpointSlice* s) {
    return s != nullptr && s->address_type == "IPv4" && !s->service.empty() ? s->ns + "/" + s->service : std::string();
  };
  std::optional<K8sEndpointSlice> before;
  if (const K8sEndpointSlice* s = k8s_.slice(slice_key)) before = *s;
  const K8sChange change = k8s_.apply_event(event);  // a refused event changes nothing
  struct Undo {
    K8sState& k8s;
    const std::string& key;
    std::optional<K8sEndpointSlice>& before;
    bool armed = true;
    ~Undo() {
      if (armed) k8s.restore_slice(key, std::move(before));
    }
  } undo{k8s_, slice_key, before};
  std::vector<std::string> services = {fed(before ? &*before : nullptr), fed(k8s_.slice(slice_key))};
  if (services[0] == services[1]) services.pop_back();

  // Rendered Services follow the config file's, sorted by name (with_k8s_services).
  const auto rendered_begin = desired_.services.begin() + static_cast<std::ptrdiff_t>(base_.services.size());
  auto cluster_ip_owner = [&](Ipv4 ip) -> std::string {
    if (!std::binary_search(installed_.cluster_ips().begin(), installed_.cluster_ips().end(), ip)) return "";
    for (size_t j = 0; j < desired_.services.size(); ++j)
      if (desired_.services[j].cluster_ip == ip)
        return j < base_.services.size() ? config_service_ref(j, desired_.services[j].name)
                                         : "Service " + desired_.services[j].name;
    return "";
  };
  ServiceDiff diff;
  std::vector<std::pair<size_t, ServiceConfig>> edits;
  for (const std::string& name : services) {
    auto it = std::lower_bound(rendered_begin, desired_.services.end(), name,
                               [](const ServiceConfig& s, const std::string& n) { return s.name < n; });
    if (name.empty() || it == desired_.services.end() || it->name != name) continue;  // unknown or skipped
    ServiceConfig updated = *it;
    updated.endpoints = k8s_.render_endpoints(name, desired_.node, cluster_ip_owner);
    ServiceDiff one = installed_.diff_service(&*it, &updated, desired_);
    for (auto& e : one.added) diff.added.push_back(std::move(e));
    for (auto& e : one.changed) diff.changed.push_back(std::move(e));
    for (auto& k : one.removed) diff.removed.push_back(k);
    edits.emplace_back(static_cast<size_t>(it - desired_.services.begin()), std::move(updated));
  }
  json result = {{"dry_run", dry_run},          {"services", services_json(diff)}, {"routes", no_changes()},
                 {"neighbors", no_changes()}, {"k8s", to_json({change})}};
  if (dry_run) {
    result["udp_flows_flushed"] = count_stale_udp(diff);
    return result;  // the event is undone
  }
  unsigned flushed = 0;
  if (!diff.empty())
    flushed = install_services(
        std::make_unique<ServiceSnapshot>(*tables_.services(), diff, tables_.next_service_generation()), diff);
  for (auto& [index, service] : edits) desired_.services[index] = std::move(service);
  undo.armed = false;
  result["udp_flows_flushed"] = flushed;
  return result;
}

json ControlServer::edit_routes(std::vector<RouteConfig> routes, bool dry_run) {
  json result = {{"dry_run", dry_run},
                 {"services", no_changes()},
                 {"routes", routes_json(route_items(desired_.routes), route_items(routes))},
                 {"neighbors", no_changes()},
                 {"udp_flows_flushed", 0}};
  if (dry_run) return result;
  tables_.publish_routes(
      std::make_unique<RouteSnapshot>(tables_.routes_from_config(routes), tables_.next_route_generation()));
  desired_.routes = routes;
  base_.routes = std::move(routes);
  return result;
}

unsigned ControlServer::install_services(std::unique_ptr<ServiceSnapshot> snapshot, const ServiceDiff& diff) {
  // The filter reads the entries as they were: built before installed_ changes.
  const auto stale = stale_udp_filter(diff);
  tables_.publish_services(std::move(snapshot));
  installed_.apply(diff);
  return stale ? tables_.conntrack->remove_if(stale) : 0;
}

unsigned ControlServer::count_stale_udp(const ServiceDiff& diff) const {
  const auto stale = stale_udp_filter(diff);
  unsigned count = 0;
  if (stale) tables_.conntrack->for_each([&](const FlowEntry& e) { count += stale(e) ? 1 : 0; });
  return count;
}

std::function<bool(const FlowEntry&)> ControlServer::stale_udp_filter(const ServiceDiff& diff) const {
  // kube-proxy's stale-UDP cleanup: a UDP flow to a frontend whose backend
  // (the reply's source) is no longer one of its endpoints would keep
  // sending there; TCP flows stay (graceful termination). Only frontends the
  // change removes, or that lose a backend, can have such flows: other
  // changes (most endpoint additions, TCP services) scan no flow at all.
  std::map<ServiceKey, std::optional<ServiceEntry>> affected;  // nullopt: the frontend goes
  for (const ServiceKey& key : diff.removed)
    if (key.proto == L4Proto::Udp) affected.emplace(key, std::nullopt);
  for (const ServiceEntry& e : diff.changed)
    if (const ServiceEntry* before = installed_.find(e.key());
        e.proto == L4Proto::Udp && before != nullptr && lost_backend(*before, e))
      affected.emplace(e.key(), e);
  if (affected.empty()) return {};
  return [affected = std::move(affected)](const FlowEntry& f) {
    if (f.orig.proto != static_cast<uint8_t>(L4Proto::Udp) || !f.has(kFlowDnat)) return false;
    auto it = affected.find(ServiceKey{from_be(f.orig.dst_ip), L4Proto::Udp, from_be(f.orig.dst_port)});
    if (it == affected.end()) return false;
    return !it->second || !has_backend(*it->second, from_be(f.reply.src_ip), from_be(f.reply.src_port));
  };
}

std::string ControlServer::port_name(uint16_t index) const {
  const PortSet& set = *tables_.port_set();
  return set.has(index) ? set.ports[index].name : std::string();
}

json ControlServer::list_ports() const {
  json out = json::array();
  for (const PortInfo& p : tables_.port_set()->ports) {
    if (!p.in_use) continue;
    out.push_back({{"name", p.name},
                   {"role", port_role_name(p.role)},
                   {"mac", from_ether(p.mac).to_string()},
                   {"mtu", p.mtu},
                   {"dpdk_id", p.dpdk_id},
                   {"device", p.device}});
  }
  return out;
}

json ControlServer::list_routes() const {
  json out = json::array();
  for (const RouteEntry& r : tables_.routes()->routes()) {
    json route = {{"prefix", r.prefix.to_string()}, {"kind", next_hop_kind_name(r.next_hop.kind)}};
    route["port"] = r.next_hop.port != kNoPort ? json(port_name(r.next_hop.port)) : json();
    route["via"] = r.next_hop.kind == NextHopKind::Gateway ? json(ipv4_to_string(r.next_hop.gateway)) : json();
    out.push_back(std::move(route));
  }
  return out;
}

json ControlServer::list_neighbors() {
  json out = json::array();
  tables_.neighbors.for_each([&](const NeighborKey& key, NeighborEntry& e) {
    rte_ether_addr mac;
    e.mac(mac);
    json n = {{"ip", ip_text(key.ip)}, {"mac", from_ether(mac).to_string()}, {"state", neighbor_state_name(e.state())}};
    n["port"] = e.port != kNoPort ? json(port_name(e.port)) : json();
    out.push_back(std::move(n));
  });
  std::sort(out.begin(), out.end(), [](const json& a, const json& b) {
    return parse_ipv4(a["ip"].get<std::string>()) < parse_ipv4(b["ip"].get<std::string>());
  });
  return out;
}

json ControlServer::list_fdb() {
  json out = json::array();
  const uint32_t now = now_s();
  tables_.fdb.for_each([&](const FdbKey& key, FdbEntry& e) {
    MacAddr mac;
    std::memcpy(mac.bytes.data(), key.mac, 6);
    const uint16_t port = e.port.load(std::memory_order_relaxed);
    out.push_back({{"mac", mac.to_string()},
                   {"port", port_name(port)},
                   {"static", e.is_static},
                   {"age_s", seconds_since(now, e.last_seen_s.load(std::memory_order_relaxed))}});
  });
  std::sort(out.begin(), out.end(), [](const json& a, const json& b) { return a["mac"] < b["mac"]; });
  return out;
}

json ControlServer::list_services() const {
  json out = json::array();
  for (const auto& [key, e] : installed_.entries()) out.push_back(entry_json(e));
  return out;
}

json ControlServer::get_service(const std::string& name) const {
  json out = json::array();
  for (const ServiceKey& key : installed_.keys_of(name)) out.push_back(entry_json(*installed_.find(key)));
  if (out.empty()) throw control::ProtocolError(fmt::format("service.get: args.service: no service is named \"{}\"", name));
  return out;
}

std::function<bool(const FlowEntry&)> ControlServer::flow_filter(const control::ConntrackFilter& filter) const {
  std::vector<ServiceKey> keys;
  if (filter.service) {
    keys = installed_.keys_of(*filter.service);
    if (keys.empty())
      throw control::ProtocolError(fmt::format("args.service: no service is named \"{}\"", *filter.service));
  }
  return [filter, keys = std::move(keys)](const FlowEntry& e) {
    if (filter.dst && from_be(e.orig.dst_ip) != *filter.dst && from_be(e.reply.src_ip) != *filter.dst) return false;
    if (filter.service) {
      const ServiceKey key{from_be(e.orig.dst_ip), static_cast<L4Proto>(e.orig.proto), from_be(e.orig.dst_port)};
      if (!std::binary_search(keys.begin(), keys.end(), key)) return false;
    }
    return true;
  };
}

json ControlServer::list_conntrack(const control::ConntrackListArgs& args) const {
  const auto matches = flow_filter(args.filter);
  json entries = json::array();
  size_t matched = 0;
  const uint32_t now = now_s();
  tables_.conntrack->for_each([&](const FlowEntry& e) {
    if (!matches(e)) return;
    if (++matched > args.limit) return;
    const bool tcp = e.orig.proto == 6;
    entries.push_back({{"protocol", proto_name(e.orig.proto)},
                       {"orig", tuple_json(e.orig)},
                       {"reply", tuple_json(e.reply)},
                       {"state", tcp ? tcp_state_name(e.state()) : ""},
                       {"flags", flags_json(e.flags.load(std::memory_order_relaxed))},
                       {"age_s", seconds_since(now, e.created_s)},
                       {"idle_s", seconds_since(now, e.last_seen_s.load(std::memory_order_relaxed))}});
  });
  return {{"flows", tables_.conntrack->size()}, {"matched", matched}, {"shown", entries.size()},
          {"entries", std::move(entries)}};
}

json ControlServer::list_snat(size_t limit) const {
  json ranges = json::array();
  for (const auto& w : workers_)
    ranges.push_back({{"worker", w->id}, {"low", w->snat_port_low}, {"high", w->snat_port_high}});
  json entries = json::array();
  size_t in_use = 0;
  const uint32_t now = now_s();
  tables_.conntrack->for_each([&](const FlowEntry& e) {
    if (!(e.flags.load(std::memory_order_relaxed) & kFlowSnat)) return;
    if (++in_use > limit) return;
    entries.push_back({{"protocol", proto_name(e.orig.proto)},
                       {"orig", tuple_json(e.orig)},
                       {"reply", tuple_json(e.reply)},
                       {"age_s", seconds_since(now, e.created_s)}});
  });
  // Each masqueraded flow holds one port of its worker's share.
  return {{"ports", std::move(ranges)}, {"flows", tables_.conntrack->size()}, {"in_use", in_use},
          {"shown", entries.size()}, {"entries", std::move(entries)}};
}

json ControlServer::flush_conntrack(const control::ConntrackFlushArgs& args) {
  return {{"flushed", tables_.conntrack->remove_if(flow_filter(args))}};
}

}  // namespace kdp
