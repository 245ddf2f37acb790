#include "drivers/eal.h"

#include <rte_eal.h>
#include <rte_errno.h>

#include <fmt/format.h>

#include <filesystem>
#include <stdexcept>

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

void cleanup_eal() {
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  std::error_code ignored;
  std::filesystem::remove_all(runtime_dir, ignored);
}

}  // namespace kdp
