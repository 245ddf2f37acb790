#include "tools/cni/system.h"

#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tools/cni/cni.h"

namespace kdp::cni {

using nlohmann::json;

namespace {

[[noreturn]] void setup_failed(const std::string& what) { throw Error(ErrorCode::kInterfaceSetup, what); }

// Reads fds until both reach EOF.
void drain(int out_fd, int err_fd, std::string& out, std::string& err) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&out, &err};
  int open = 2;
  char buffer[4096];
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;
        --open;
      } else {
        sinks[i]->append(buffer, static_cast<size_t>(n));
      }
    }
  }
}

int wait_status(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

ifreq ifreq_for(const std::string& ifname) {
  ifreq request{};
  if (ifname.size() >= sizeof request.ifr_name) setup_failed(fmt::format("interface name too long: {}", ifname));
  std::memcpy(request.ifr_name, ifname.c_str(), ifname.size() + 1);
  return request;
}

struct Socket {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

// An interface ioctl on a throwaway socket of the current namespace.
int interface_ioctl(unsigned long request, ifreq& ifr) {
  Socket s;
  if (s.fd < 0) setup_failed(fmt::format("socket: {}", std::strerror(errno)));
  return ::ioctl(s.fd, request, &ifr);
}

const std::string& ip_binary() {
  static const std::string path = [] {
    for (const char* candidate : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
      if (::access(candidate, X_OK) == 0) return std::string(candidate);
    return std::string();
  }();
  return path;
}

}  // namespace

CommandOutput run_command(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) setup_failed(fmt::format("pipe: {}", std::strerror(errno)));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    setup_failed(fmt::format("pipe: {}", std::strerror(errno)));
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::execv(args[0], args.data());
    const std::string message = fmt::format("cannot run {}: {}\n", argv[0], std::strerror(errno));
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, message.data(), message.size());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  CommandOutput output;
  if (pid < 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    setup_failed(fmt::format("fork: {}", std::strerror(errno)));
  }
  drain(out_pipe[0], err_pipe[0], output.out, output.err);
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  output.status = wait_status(pid);
  return output;
}

std::string ip(const std::vector<std::string>& args) {
  if (ip_binary().empty()) setup_failed("iproute2's ip not found in /usr/sbin, /sbin, /usr/bin or /bin");
  std::vector<std::string> argv = {ip_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandOutput output = run_command(argv);
  if (output.status != 0) {
    std::string command = "ip";
    for (const std::string& a : args) command += " " + a;
    while (!output.err.empty() && output.err.back() == '\n') output.err.pop_back();
    setup_failed(fmt::format("{}: {}", command, output.err.empty() ? "failed" : output.err));
  }
  return output.out;
}

bool netns_exists(const std::string& netns_path) {
  int fd = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::string in_netns(const std::string& netns_path, const std::function<std::string()>& work) {
  int ns_fd = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns_fd < 0)
    throw Error(ErrorCode::kContainerUnknown,
                fmt::format("network namespace {}: {}", netns_path, std::strerror(errno)));
  int reply_pipe[2];
  if (::pipe2(reply_pipe, O_CLOEXEC) != 0) {
    ::close(ns_fd);
    setup_failed(fmt::format("pipe: {}", std::strerror(errno)));
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    // The child: join the namespace, do the work, report {ok, code, text}.
    ::close(reply_pipe[0]);
    json reply;
    try {
      if (::setns(ns_fd, CLONE_NEWNET) != 0)
        throw Error(ErrorCode::kContainerUnknown,
                    fmt::format("cannot enter network namespace {}: {}", netns_path, std::strerror(errno)));
      reply = {{"ok", true}, {"text", work()}};
    } catch (const Error& e) {
      reply = {{"ok", false}, {"code", static_cast<int>(e.code())}, {"text", e.what()}};
    } catch (const std::exception& e) {
      reply = {{"ok", false}, {"code", static_cast<int>(ErrorCode::kInterfaceSetup)}, {"text", e.what()}};
    }
    const std::string text = reply.dump();
    for (size_t done = 0; done < text.size();) {
      ssize_t n = ::write(reply_pipe[1], text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(ns_fd);
  ::close(reply_pipe[1]);
  if (pid < 0) {
    ::close(reply_pipe[0]);
    setup_failed(fmt::format("fork: {}", std::strerror(errno)));
  }
  std::string text;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(reply_pipe[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(reply_pipe[0]);
  const int status = wait_status(pid);
  json reply = json::parse(text, nullptr, false);
  if (status != 0 || reply.is_discarded() || !reply.is_object())
    setup_failed(fmt::format("the child working in {} died (status {})", netns_path, status));
  if (!reply["ok"].get<bool>())
    throw Error(static_cast<ErrorCode>(reply["code"].get<int>()), reply["text"].get<std::string>());
  return reply["text"].get<std::string>();
}

bool link_exists(const std::string& ifname) { return ::if_nametoindex(ifname.c_str()) != 0; }

bool link_is_up(const std::string& ifname) {
  ifreq ifr = ifreq_for(ifname);
  return interface_ioctl(SIOCGIFFLAGS, ifr) == 0 && (ifr.ifr_flags & IFF_UP);
}

MacAddr link_mac(const std::string& ifname) {
  ifreq ifr = ifreq_for(ifname);
  if (interface_ioctl(SIOCGIFHWADDR, ifr) != 0)
    setup_failed(fmt::format("cannot read the MAC address of {}: {}", ifname, std::strerror(errno)));
  MacAddr mac;
  std::memcpy(mac.bytes.data(), ifr.ifr_hwaddr.sa_data, mac.bytes.size());
  return mac;
}

void disable_tx_checksum(const std::string& ifname) {
  // The legacy ETHTOOL_STXCSUM request: the kernel then also drops the
  // offloads that need it (TSO, GSO checksums), as `ethtool -K IF tx off`.
  ethtool_value value{};
  value.cmd = ETHTOOL_STXCSUM;
  value.data = 0;
  ifreq ifr = ifreq_for(ifname);
  ifr.ifr_data = reinterpret_cast<char*>(&value);
  if (interface_ioctl(SIOCETHTOOL, ifr) != 0)
    setup_failed(fmt::format("cannot turn off TX checksum offload on {}: {}", ifname, std::strerror(errno)));
}

void write_sysctl(const std::string& path, const std::string& value, bool required) {
  std::ofstream out(path);
  if (!out) {
    if (!required && !std::filesystem::exists(path)) return;
    setup_failed(fmt::format("cannot open {}", path));
  }
  out << value << "\n";
  out.flush();
  if (!out) setup_failed(fmt::format("cannot write {} to {}", value, path));
}

}  // namespace kdp::cni
