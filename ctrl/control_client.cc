#include "ctrl/control_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "ctrl/control_protocol.h"

namespace kdp::control {

using nlohmann::json;

json call(const std::string& socket_path, std::string_view verb, const json& args, int timeout_s) {
  return call_line(socket_path, request_line(verb, args), timeout_s);
}

json call_line(const std::string& socket_path, const std::string& request, int timeout_s, std::string_view payload) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) throw ConnectionError("socket path too long: " + socket_path);
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ConnectionError(fmt::format("socket: {}", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    // Nothing listening there (as opposed to a listener that misbehaves).
    const bool absent = errno == ENOENT || errno == ECONNREFUSED;
    throw ConnectionError(fmt::format("cannot connect to {}: {} (is kdp running? --socket names its [control] socket)",
                                      socket_path, std::strerror(errno)),
                          absent);
  }
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  if (request.size() + payload.size() > kMaxRequestBytes)
    throw ConnectionError(fmt::format("request of {} bytes exceeds the control socket's limit of {} bytes",
                                      request.size() + payload.size(), kMaxRequestBytes));
  for (std::string_view part : {std::string_view(request), payload})
    for (size_t sent = 0; sent < part.size();) {
      ssize_t n = ::send(fd, part.data() + sent, part.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw ConnectionError(fmt::format("sending to {}: {}", socket_path, std::strerror(errno)));
      sent += static_cast<size_t>(n);
    }
  std::string reply;
  char buffer[65536];
  size_t line_end = std::string::npos;
  while (line_end == std::string::npos) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw ConnectionError(fmt::format("reading from {}: {}", socket_path,
                                        errno == EAGAIN ? "timed out" : std::strerror(errno)));
    if (n == 0) throw ConnectionError(fmt::format("{} closed the connection without a reply", socket_path));
    reply.append(buffer, static_cast<size_t>(n));
    // Only the new bytes are searched: a reply of megabytes arrives in many reads.
    line_end = reply.find('\n', reply.size() - static_cast<size_t>(n));
  }
  reply.resize(line_end);
  json doc = json::parse(reply, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("ok") || !doc["ok"].is_boolean())
    throw ConnectionError(fmt::format("{} sent a malformed reply", socket_path));
  if (!doc["ok"].get<bool>()) {
    const json& error = doc.contains("error") ? doc["error"] : json();
    throw RefusedError(error.is_string() ? error.get<std::string>() : std::string("(no message)"));
  }
  auto result = doc.find("result");
  return result != doc.end() ? std::move(*result) : json();  // a reply of megabytes is not copied
}

}  // namespace kdp::control
