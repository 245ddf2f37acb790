// EAL start-up from the [eal], [workers] and [[port]] config.
#pragma once

#include <string>
#include <vector>

#include "ctrl/config.h"

namespace kdp {

// The full rte_eal_init argument list: program name, quiet default log
// level, the user's [eal] args, lcores from [workers], a unique file prefix
// and one --vdev (or -a for PCI addresses) per port.
std::vector<std::string> build_eal_args(const Config& config, const std::string& program, int pid);

// Device name of a port's device string: the part before the first comma.
std::string device_name(const std::string& device);
bool is_vdev(const std::string& device);

// Initialises the EAL; throws std::runtime_error with rte_strerror.
void init_eal(const std::vector<std::string>& args);

// Returns once EAL's interrupt thread has handled every event pending at the
// call, and what those handlers set off in turn. A PMD handles a peer's
// hang-up there (net_memif frees its control channel with rte_free), so a
// port just closed may still have work on that thread; the caller waits for
// it before it closes the next port or tears the EAL down, whose memory that
// work would touch. Does nothing when called on that thread.
void wait_for_interrupt_thread();

// Makes each lcore's thread SCHED_FIFO at priority (1-99), so that no
// ordinary task on its CPU (a kernel thread compacting memory, a build)
// holds it off for milliseconds while its rings fill; 0 leaves the policy
// as it is. Throws std::runtime_error starting with `setting` (the config
// key or option the priority came from) and naming the lcore and the reason
// (EPERM without CAP_SYS_NICE). Run before the lcores are launched.
void set_lcores_realtime(const std::vector<unsigned>& lcores, unsigned priority, const std::string& setting);

// wait_for_interrupt_thread, rte_eal_cleanup, then removal of this
// process's runtime directory (/var/run/dpdk/<file prefix>), which the EAL
// leaves behind: every run has a prefix of its own, so they would pile up.
void cleanup_eal();

// The EAL for one run of a program: init_eal when made. When it goes,
// however the run ends (a start-up step that threw included), it closes
// every port still open and calls cleanup_eal, so that no way out leaves a
// peer's hang-up handler running on unmapped memory or a runtime directory
// behind. Make it before anything that holds DPDK memory, so it goes last;
// worker lcores must have returned by then.
class EalSession {
 public:
  explicit EalSession(const std::vector<std::string>& args);
  ~EalSession();
  EalSession(const EalSession&) = delete;
  EalSession& operator=(const EalSession&) = delete;
};

}  // namespace kdp
