#include "tools/cni/ipam.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "tools/cni/cni.h"

namespace kdp::cni {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLockFile = "lock";
constexpr const char* kLastReservedFile = "last_reserved_ip";

[[noreturn]] void io_failure(const std::string& what) { throw Error(ErrorCode::kIoFailure, what); }

std::string owner_text(const std::string& container_id, const std::string& ifname) {
  return container_id + "\n" + ifname + "\n";
}

std::optional<std::string> read_small_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

// Holds the store's flock for its lifetime (released when the fd closes,
// also if the process dies).
class AddressStore::Lock {
 public:
  explicit Lock(const fs::path& dir) {
    const fs::path path = dir / kLockFile;
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) io_failure(fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd_);
      io_failure(fmt::format("cannot lock {}: {}", path.string(), std::strerror(error)));
    }
  }
  ~Lock() { ::close(fd_); }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  int fd_ = -1;
};

AddressStore::AddressStore(fs::path data_dir, const std::string& network, Ipv4Prefix subnet, Ipv4 gateway)
    : dir_(std::move(data_dir) / network), subnet_(subnet), gateway_(gateway) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) io_failure(fmt::format("cannot create {}: {}", dir_.string(), ec.message()));
}

std::optional<Ipv4> AddressStore::find_locked(const std::string& container_id, const std::string& ifname) const {
  const std::string owner = owner_text(container_id, ifname);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    auto ip = parse_ipv4(entry.path().filename().string());
    if (!ip || !subnet_.contains(*ip)) continue;  // the lock and last_reserved_ip files
    if (read_small_file(entry.path()) == owner) return ip;
  }
  if (ec) io_failure(fmt::format("cannot list {}: {}", dir_.string(), ec.message()));
  return std::nullopt;
}

std::optional<Ipv4> AddressStore::find(const std::string& container_id, const std::string& ifname) const {
  Lock lock(dir_);
  return find_locked(container_id, ifname);
}

Ipv4 AddressStore::allocate(const std::string& container_id, const std::string& ifname) {
  Lock lock(dir_);
  if (auto held = find_locked(container_id, ifname))
    throw Error(ErrorCode::kAlreadyAdded,
                fmt::format("container {} interface {} already holds {} (ADD again without DEL)", container_id,
                            ifname, ipv4_to_string(*held)));

  const Ipv4 first = subnet_.addr + 1, last = (subnet_.addr | ~subnet_.mask()) - 1;
  // Start after the last address handed out, as host-local does, so a freed
  // address is not reused at once (peers may still hold its ARP entry).
  Ipv4 start = first;
  if (auto text = read_small_file(dir_ / kLastReservedFile)) {
    auto previous = parse_ipv4(text->substr(0, text->find('\n')));
    if (previous && *previous >= first && *previous < last) start = *previous + 1;
  }
  const uint64_t count = uint64_t{last} - first + 1;
  for (uint64_t i = 0; i < count; ++i) {
    const Ipv4 ip = first + static_cast<Ipv4>((uint64_t{start} - first + i) % count);
    if (ip == gateway_) continue;
    const fs::path path = dir_ / ipv4_to_string(ip);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // taken
      io_failure(fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
    }
    const std::string owner = owner_text(container_id, ifname);
    const bool written = ::write(fd, owner.data(), owner.size()) == static_cast<ssize_t>(owner.size());
    const bool closed = ::close(fd) == 0;
    if (!written || !closed) {
      const int error = errno;
      fs::remove(path);
      io_failure(fmt::format("cannot write {}: {}", path.string(), std::strerror(error)));
    }
    std::ofstream(dir_ / kLastReservedFile, std::ios::trunc) << ipv4_to_string(ip) << "\n";
    return ip;
  }
  throw Error(ErrorCode::kAddressesExhausted,
              fmt::format("no free address in {} ({} in use under {})", subnet_.to_string(),
                          gateway_ >= first && gateway_ <= last ? count - 1 : count, dir_.string()));
}

bool AddressStore::release(const std::string& container_id, const std::string& ifname) {
  Lock lock(dir_);
  auto ip = find_locked(container_id, ifname);
  if (!ip) return false;
  const fs::path path = dir_ / ipv4_to_string(*ip);
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) io_failure(fmt::format("cannot remove {}: {}", path.string(), ec.message()));
  return true;
}

}  // namespace kdp::cni
