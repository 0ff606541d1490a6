// Network addresses as users and configs write them: "host:port".
#pragma once

#include <cstdint>
#include <string>

#include "kvmesh/status.hpp"

namespace kvmesh {

/// Splits "host:port" (IPv4 address or name, or "[v6]:port") into host and port (1-65535).
/// kInvalidArgument naming the address and what is wrong otherwise.
Status ParseHostPort(const std::string& address, std::string* host, uint16_t* port);

/// True if `host` names only this machine's loopback: an IPv4 address in 127.0.0.0/8, ::1 (with
/// or without brackets, or as ::ffff:127.x.y.z), or "localhost". Any other name is taken as
/// reachable from elsewhere (it is not resolved); so are 0.0.0.0 and ::, which listen everywhere.
bool IsLoopbackHost(const std::string& host);

/// The one rule for every listener (client port, cluster port, HTTP API): without TLS, anyone
/// who reaches `host`:`port` can read and change every database. OK, with `*exposed` false, when
/// `tls` is on or `host` is loopback; otherwise kInvalidArgument naming `what` ("client port"),
/// the address and the ways out, unless `insecure_plaintext`: then OK with `*exposed` true (the
/// caller warns once it listens).
Status CheckPlaintextListener(const std::string& what, const std::string& host, int port, bool tls,
                              bool insecure_plaintext, bool* exposed);

}  // namespace kvmesh
