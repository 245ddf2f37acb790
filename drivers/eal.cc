// rte_intr_instance_alloc and its setters are experimental in DPDK 22.11;
// they are the only way to hand EAL's interrupt thread a descriptor.
#define ALLOW_EXPERIMENTAL_API
#include "drivers/eal.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_interrupts.h>
#include <rte_launch.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>

#include "drivers/ports.h"

namespace kdp {

std::string device_name(const std::string& device) { return device.substr(0, device.find(',')); }

bool is_vdev(const std::string& device) { return device.rfind("net_", 0) == 0; }

std::vector<std::string> build_eal_args(const Config& config, const std::string& program, int pid) {
  std::vector<std::string> args{program, "--log-level=notice"};
  args.insert(args.end(), config.eal.args.begin(), config.eal.args.end());
  const auto& workers = config.workers;
  if (workers.cpus.empty()) {
    std::string lcores = std::to_string(workers.main_lcore);
    for (unsigned lcore : workers.lcores) lcores += "," + std::to_string(lcore);
    args.insert(args.end(), {"-l", lcores});
  } else {
    // lcore@cpu: several worker lcores may share a CPU.
    std::string lcores = fmt::format("{}@{}", workers.main_lcore, workers.main_lcore);
    for (size_t i = 0; i < workers.lcores.size(); ++i)
      lcores += fmt::format(",{}@{}", workers.lcores[i], workers.cpus[i]);
    args.insert(args.end(), {"--lcores", lcores});
  }
  args.insert(args.end(), {"--main-lcore", std::to_string(workers.main_lcore)});
  // Two instances on one machine must not share DPDK's runtime directory.
  std::string prefix = config.eal.file_prefix.empty() ? fmt::format("kdp-{}-{}", config.node.name, pid)
                                                      : config.eal.file_prefix;
  args.insert(args.end(), {"--file-prefix", prefix});
  for (const auto& port : config.ports) {
    if (is_vdev(port.device)) args.push_back("--vdev=" + port.device);
    else args.insert(args.end(), {"-a", port.device});
  }
  return args;
}

void init_eal(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(args.size()), argv.data()) < 0)
    throw std::runtime_error(fmt::format("EAL initialisation failed: {}", rte_strerror(rte_errno)));
}

namespace {

// An eventfd that EAL's interrupt thread serves, registered once and never
// removed: adding or removing a source makes that thread rebuild its epoll
// set, reading every source's handle, and one that net_memif leaves behind
// lies in DPDK memory, unmapped by rte_eal_cleanup. A barrier that caused a
// rebuild during the teardown would bring about the very crash it prevents.
class InterruptThreadBarrier {
 public:
  // nullptr when the source cannot be set up (the wait is then skipped).
  static InterruptThreadBarrier* get() {
    static InterruptThreadBarrier* barrier = create();
    return barrier;
  }

  // Returns once the interrupt thread has served a write made now. It serves
  // ready descriptors in the order they became ready, so the handlers of
  // everything ready before the write have run too.
  void pass() {
    std::unique_lock lock(mutex_);
    const uint64_t target = ++written_;
    eventfd_write(fd_, 1);
    served_cv_.wait(lock, [&] { return served_ >= target; });
  }

 private:
  static InterruptThreadBarrier* create() {
    auto* b = new InterruptThreadBarrier;
    b->fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    // Private: plain heap memory, still there after the EAL's teardown.
    b->handle_ = rte_intr_instance_alloc(RTE_INTR_INSTANCE_F_PRIVATE);
    if (b->fd_ >= 0 && b->handle_ != nullptr && rte_intr_fd_set(b->handle_, b->fd_) == 0 &&
        rte_intr_type_set(b->handle_, RTE_INTR_HANDLE_EXT) == 0 &&
        rte_intr_callback_register(b->handle_, on_ready, b) == 0)
      return b;
    if (b->handle_ != nullptr) rte_intr_instance_free(b->handle_);
    if (b->fd_ >= 0) close(b->fd_);
    delete b;
    return nullptr;
  }

  static void on_ready(void* arg) {
    auto* b = static_cast<InterruptThreadBarrier*>(arg);
    eventfd_t writes = 0;
    if (eventfd_read(b->fd_, &writes) != 0) return;
    std::lock_guard lock(b->mutex_);
    b->served_ += writes;
    b->served_cv_.notify_all();
  }

  int fd_ = -1;
  rte_intr_handle* handle_ = nullptr;
  std::mutex mutex_;
  std::condition_variable served_cv_;
  uint64_t written_ = 0;
  uint64_t served_ = 0;
};

}  // namespace

void wait_for_interrupt_thread() {
  if (rte_thread_is_intr()) return;
  InterruptThreadBarrier* barrier = InterruptThreadBarrier::get();
  if (barrier == nullptr) return;
  // A pass may be served in the same batch as, and before, a handler that
  // was ready earlier; the next pass comes after that handler, and a third
  // after the epoll rebuild the handler may have asked for (net_memif
  // unregistering a hung-up channel).
  for (int pass = 0; pass < 3; ++pass) barrier->pass();
}

void set_lcores_realtime(const std::vector<unsigned>& lcores, unsigned priority, const std::string& setting) {
  if (priority == 0) return;
  // Each lcore sets its own thread's policy; its return value is the errno.
  auto set_own_policy = [](void* arg) -> int {
    sched_param param{};
    param.sched_priority = static_cast<int>(*static_cast<unsigned*>(arg));
    return pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
  };
  for (unsigned lcore : lcores) {
    if (rte_eal_remote_launch(set_own_policy, &priority, lcore) != 0)
      throw std::runtime_error(fmt::format("{}: lcore {} is busy", setting, lcore));
    if (int rc = rte_eal_wait_lcore(lcore); rc != 0)
      throw std::runtime_error(fmt::format("{}: cannot run lcore {} as SCHED_FIFO at priority {}: {}", setting,
                                           lcore, priority, std::strerror(rc)));
  }
}

void cleanup_eal() {
  wait_for_interrupt_thread();
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  std::error_code ignored;
  std::filesystem::remove_all(runtime_dir, ignored);
}

EalSession::EalSession(const std::vector<std::string>& args) { init_eal(args); }

EalSession::~EalSession() {
  uint16_t port_id;
  RTE_ETH_FOREACH_DEV(port_id) close_port(port_id);
  cleanup_eal();
}

}  // namespace kdp
