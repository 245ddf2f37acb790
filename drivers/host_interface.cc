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

namespace kdp {

namespace {

void set_ipv4(ifreq& req, Ipv4 address) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(address);
  std::memcpy(&req.ifr_addr, &sin, sizeof(sin));
}

}  // namespace

void configure_host_interface(unsigned if_index, Ipv4 ip, uint8_t prefix_len) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(if_index, name) == nullptr)
    throw std::runtime_error(fmt::format("no kernel interface has index {}: {}", if_index, std::strerror(errno)));
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("interface {}: socket: {}", name, std::strerror(errno)));
  auto step = [&](unsigned long request, ifreq& req, const char* what) {
    std::memcpy(req.ifr_name, name, IF_NAMESIZE);
    if (ioctl(fd, request, &req) != 0) {
      const int err = errno;
      close(fd);
      throw std::runtime_error(fmt::format("interface {}: cannot {}: {}", name, what, std::strerror(err)));
    }
  };
  ifreq req{};
  set_ipv4(req, ip);
  step(SIOCSIFADDR, req, fmt::format("set address {}", ipv4_to_string(ip)).c_str());
  req = {};
  set_ipv4(req, prefix_len == 0 ? 0 : ~Ipv4{0} << (32 - prefix_len));
  step(SIOCSIFNETMASK, req, "set its netmask");
  req = {};
  step(SIOCGIFFLAGS, req, "read its flags");
  req.ifr_flags |= IFF_UP;
  step(SIOCSIFFLAGS, req, "bring it up");
  close(fd);
  // Without IPv6 the kernel sends no router or neighbour solicitations that
  // kdp would only count as dropped.
  std::ofstream(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", name)) << "1\n";
}

unsigned kernel_interface_mtu(unsigned if_index) {
  ifreq req{};
  if (if_indextoname(if_index, req.ifr_name) == nullptr)
    throw std::runtime_error(fmt::format("no kernel interface has index {}: {}", if_index, std::strerror(errno)));
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int rc = fd < 0 ? -1 : ioctl(fd, SIOCGIFMTU, &req);
  const int err = errno;
  if (fd >= 0) close(fd);
  if (rc != 0) throw std::runtime_error(fmt::format("interface {}: cannot read its MTU: {}", req.ifr_name, std::strerror(err)));
  return static_cast<unsigned>(req.ifr_mtu);
}

std::optional<PortRange> kernel_ephemeral_ports() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  unsigned low = 0, high = 0;
  if (!(in >> low >> high) || low > high || high > 65535) return std::nullopt;
  return PortRange{static_cast<uint16_t>(low), static_cast<uint16_t>(high)};
}

}  // namespace kdp
