// kdp-cni's address store, in the manner of CNI's host-local IPAM: one file
// per allocated address under DATA_DIR/NETWORK/, named by the address and
// holding the container id and ifname it belongs to. Every operation holds
// an exclusive flock on DATA_DIR/NETWORK/lock, so concurrent ADDs (each a
// process of its own) never hand out one address twice.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "ctrl/net_types.h"

namespace kdp::cni {

class AddressStore {
 public:
  // Creates DATA_DIR/NETWORK when missing. Throws Error(kIoFailure).
  AddressStore(std::filesystem::path data_dir, const std::string& network, Ipv4Prefix subnet, Ipv4 gateway);

  // The next free host address of the subnet after the last one handed out
  // (wrapping; never the network, broadcast or gateway address), recorded
  // for container_id + ifname. Throws Error(kAlreadyAdded) when that pair
  // already holds one, Error(kAddressesExhausted) when none is free.
  Ipv4 allocate(const std::string& container_id, const std::string& ifname);

  // The address held by container_id + ifname.
  std::optional<Ipv4> find(const std::string& container_id, const std::string& ifname) const;

  // Frees the address of container_id + ifname; false when it held none.
  bool release(const std::string& container_id, const std::string& ifname);

  const std::filesystem::path& directory() const { return dir_; }

 private:
  class Lock;
  std::optional<Ipv4> find_locked(const std::string& container_id, const std::string& ifname) const;

  std::filesystem::path dir_;
  Ipv4Prefix subnet_;
  Ipv4 gateway_;
};

}  // namespace kdp::cni
