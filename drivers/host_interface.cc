#include "drivers/host_interface.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>

namespace kdp {

namespace {

void set_ipv4(ifreq& req, Ipv4 address) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(address);
  std::memcpy(&req.ifr_addr, &sin, sizeof(sin));
}

// ioctl requests on one kernel interface, named by its index; each failure
// throws, naming the interface and the step.
class InterfaceRequests {
 public:
  explicit InterfaceRequests(unsigned if_index) {
    if (if_indextoname(if_index, name_) == nullptr)
      throw std::runtime_error(fmt::format("no kernel interface has index {}: {}", if_index, std::strerror(errno)));
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(fmt::format("interface {}: socket: {}", name_, std::strerror(errno)));
  }
  ~InterfaceRequests() { close(fd_); }
  InterfaceRequests(const InterfaceRequests&) = delete;
  InterfaceRequests& operator=(const InterfaceRequests&) = delete;

  const char* name() const { return name_; }
  void run(unsigned long request, ifreq& req, std::string_view what) const {
    std::memcpy(req.ifr_name, name_, IF_NAMESIZE);
    if (ioctl(fd_, request, &req) != 0)
      throw std::runtime_error(fmt::format("interface {}: cannot {}: {}", name_, what, std::strerror(errno)));
  }

 private:
  char name_[IF_NAMESIZE] = {};
  int fd_ = -1;
};

}  // namespace

void configure_host_interface(unsigned if_index, Ipv4 ip, uint8_t prefix_len) {
  const InterfaceRequests interface(if_index);
  ifreq req{};
  set_ipv4(req, ip);
  interface.run(SIOCSIFADDR, req, fmt::format("set address {}", ipv4_to_string(ip)));
  req = {};
  set_ipv4(req, prefix_len == 0 ? 0 : ~Ipv4{0} << (32 - prefix_len));
  interface.run(SIOCSIFNETMASK, req, "set its netmask");
  req = {};
  interface.run(SIOCGIFFLAGS, req, "read its flags");
  req.ifr_flags |= IFF_UP;
  interface.run(SIOCSIFFLAGS, req, "bring it up");
  // Without IPv6 the kernel sends no router or neighbour solicitations that
  // kdp would only count as dropped.
  std::ofstream(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", interface.name())) << "1\n";
}

unsigned kernel_interface_mtu(unsigned if_index) {
  ifreq req{};
  InterfaceRequests(if_index).run(SIOCGIFMTU, req, "read its MTU");
  return static_cast<unsigned>(req.ifr_mtu);
}

std::optional<PortRange> kernel_ephemeral_ports() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  unsigned low = 0, high = 0;
  if (!(in >> low >> high) || low > high || high > 65535) return std::nullopt;
  return PortRange{static_cast<uint16_t>(low), static_cast<uint16_t>(high)};
}

}  // namespace kdp
