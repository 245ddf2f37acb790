// Closing a port waits for what the close set off on EAL's interrupt thread
// (drivers/ports.h close_port). A memif server and client in one process,
// as kdp-gen runs them: closing the server makes the client's control
// channel hang up, which net_memif handles on the interrupt thread (it frees
// the channel with rte_free). Had the caller gone on to the EAL's teardown
// meanwhile, that rte_free would touch memory already unmapped (the SIGSEGV
// a CI run of kdp-gen once died of).
#include <gtest/gtest.h>
#include <rte_alarm.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "drivers/eal.h"
#include "drivers/ports.h"

namespace kdp {
namespace {

using namespace std::chrono_literals;

bool link_up(uint16_t port) {
  rte_eth_link link{};
  return rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP;
}

uint16_t start_memif(const std::string& device, rte_mempool* pool) {
  const uint16_t port = probe_device(device);
  rte_eth_conf conf{};
  if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
      rte_eth_rx_queue_setup(port, 0, 256, SOCKET_ID_ANY, nullptr, pool) != 0 ||
      rte_eth_tx_queue_setup(port, 0, 256, SOCKET_ID_ANY, nullptr) != 0 || rte_eth_dev_start(port) != 0)
    throw std::runtime_error("cannot start " + device);
  return port;
}

TEST(WaitForInterruptThread, ReturnsAfterWhatWasDueBeforeIt) {
  std::atomic<bool> slow_done{false};
  // Due now and busy for a while: the interrupt thread is still in it when
  // the wait begins.
  auto slow = [](void* arg) {
    std::this_thread::sleep_for(100ms);
    static_cast<std::atomic<bool>*>(arg)->store(true);
  };
  ASSERT_EQ(rte_eal_alarm_set(1, slow, &slow_done), 0);
  wait_for_interrupt_thread();
  EXPECT_TRUE(slow_done.load());
}

TEST(ClosePort, MemifPeerInTheSameProcessHasHungUpWhenItReturns) {
  const auto dir = std::filesystem::temp_directory_path() / ("kdp-port-close-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::unique_ptr<rte_mempool, decltype(&rte_mempool_free)> pool(
      rte_pktmbuf_pool_create("port_close_pool", 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY),
      &rte_mempool_free);
  ASSERT_NE(pool, nullptr);

  // Several rounds: without the wait, the client is seen still up in most
  // runs, but not in every round.
  for (int round = 0; round < 5; ++round) {
    const std::string id = std::to_string(round);
    const std::string sock = (dir / ("memif" + id + ".sock")).string();
    const uint16_t server = start_memif("net_memif_close_s" + id + ",role=server,id=" + id + ",socket=" + sock,
                                        pool.get());
    const uint16_t client = start_memif("net_memif_close_c" + id + ",role=client,id=" + id + ",socket=" + sock,
                                        pool.get());
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!(link_up(server) && link_up(client)) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(link_up(server) && link_up(client)) << "memif pair did not connect, round " << round;

    remove_port(server);  // closes it (close_port), then removes the device
    // No waiting here: the hang-up has been handled when the close returned.
    EXPECT_FALSE(link_up(client)) << "round " << round;
    remove_port(client);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kdp
