// Network addresses as users and configs write them: "host:port".
#pragma once

#include <cstdint>
#include <string>

#include "kvmesh/status.hpp"

namespace kvmesh {

/// Splits "host:port" (IPv4 address or name, or "[v6]:port") into host and port (1-65535).
/// kInvalidArgument naming the address and what is wrong otherwise.
Status ParseHostPort(const std::string& address, std::string* host, uint16_t* port);

}  // namespace kvmesh
