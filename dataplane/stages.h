// Pipeline stages. Each is a small final class over one worker's context:
// process() handles a burst and sets each packet's next stage.
#pragma once

#include "dataplane/burst.h"
#include "dataplane/worker.h"

namespace kdp {

// ICMP "type" meaning: deliver locally instead of sending an error.
inline constexpr uint8_t kIcmpLocalDelivery = 0xff;

class Classify final {
 public:
  explicit Classify(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  WorkerContext& ctx_;
};

class Bridge final {
 public:
  explicit Bridge(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  WorkerContext& ctx_;
};

class Arp final {
 public:
  explicit Arp(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  WorkerContext& ctx_;
};

class Router final {
 public:
  explicit Router(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  WorkerContext& ctx_;
};

class Icmp final {
 public:
  explicit Icmp(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  bool reply_echo(rte_mbuf* m);
  bool make_error(rte_mbuf* m, DropReason& why_not);
  WorkerContext& ctx_;
};

// Terminal stages: they take the packets out of the pipeline.
class Output final {
 public:
  explicit Output(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  void send(uint16_t port, rte_mbuf* m);
  WorkerContext& ctx_;
};

class Punt final {
 public:
  explicit Punt(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  WorkerContext& ctx_;
};

class Drop final {
 public:
  explicit Drop(WorkerContext& ctx) : ctx_(ctx) {}
  void process(Burst& burst);

 private:
  WorkerContext& ctx_;
};

}  // namespace kdp
