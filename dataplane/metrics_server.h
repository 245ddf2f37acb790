// Serves the node's counters in the Prometheus text format at /metrics on
// [control] metrics_listen, so a Prometheus server can scrape the node.
// The HTTP server has its own thread; it only ever serves the latest text
// the control thread published (workers are never touched from it).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace kdp {

class MetricsServer {
 public:
  // Binds ip:port at once; throws std::runtime_error naming the address.
  MetricsServer(const std::string& ip, uint16_t port);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Control thread: the text scrapes get from now on.
  void publish(std::string text);

 private:
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::mutex mutex_;
  std::string text_;
};

}  // namespace kdp
