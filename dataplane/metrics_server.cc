#include "dataplane/metrics_server.h"

#include <httplib.h>

#include <fmt/format.h>

#include <stdexcept>

namespace kdp {

MetricsServer::MetricsServer(const std::string& ip, uint16_t port) : http_(std::make_unique<httplib::Server>()) {
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    std::lock_guard lock(mutex_);
    response.set_content(text_, "text/plain; version=0.0.4; charset=utf-8");
  });
  if (!http_->bind_to_port(ip, port))
    throw std::runtime_error(fmt::format("control.metrics_listen: cannot listen on {}:{}", ip, port));
  thread_ = std::thread([this] { http_->listen_after_bind(); });
}

MetricsServer::~MetricsServer() {
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

void MetricsServer::publish(std::string text) {
  std::lock_guard lock(mutex_);
  text_ = std::move(text);
}

}  // namespace kdp
