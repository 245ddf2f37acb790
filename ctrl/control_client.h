// A client for kdp's control socket (ctrl/control_protocol.h): one request,
// one reply, over a fresh connection. Shared by kdpctl and kdp-cni.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <string_view>

namespace kdp::control {

// kdp could not be asked: no socket, refused connection, timeout, a
// malformed reply. cannot_connect() is true when nothing was listening.
class ConnectionError : public std::runtime_error {
 public:
  ConnectionError(const std::string& message, bool cannot_connect = false)
      : std::runtime_error(message), cannot_connect_(cannot_connect) {}
  bool cannot_connect() const { return cannot_connect_; }

 private:
  bool cannot_connect_;
};

// kdp answered {"ok": false}; what() is its "error".
class RefusedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Sends {"verb", "args"} to the socket at socket_path and returns the reply's
// "result"; waits at most timeout_s seconds for each send and receive.
nlohmann::json call(const std::string& socket_path, std::string_view verb, const nlohmann::json& args,
                    int timeout_s);
// The same with a request line already made, and the payload it announces
// (request_line_with_payload) sent right after it.
nlohmann::json call_line(const std::string& socket_path, const std::string& request, int timeout_s,
                         std::string_view payload = {});

}  // namespace kdp::control
