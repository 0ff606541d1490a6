#include "common/address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>

#include "common/path.hpp"

namespace kvmesh {

Status ParseHostPort(const std::string& address, std::string* host, uint16_t* port) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bad address " + Quote(address) + ": " + why +
                                   " (expected host:port)");
  };
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no port");
  std::string name = address.substr(0, colon);
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  const std::string digits = address.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return bad("port is not a number");
  }
  unsigned long value = std::stoul(digits);
  if (value == 0 || value > 65535) return bad("port out of range");
  *host = std::move(name);
  *port = static_cast<uint16_t>(value);
  return Status::OK();
}

bool IsLoopbackHost(const std::string& host) {
  if (::strcasecmp(host.c_str(), "localhost") == 0) return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  std::string bare = host;
  if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']') {
    bare = bare.substr(1, bare.size() - 2);
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, bare.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

Status CheckPlaintextListener(const std::string& what, const std::string& host, int port, bool tls,
                              bool insecure_plaintext, bool* exposed) {
  *exposed = false;
  if (tls || IsLoopbackHost(host)) return Status::OK();
  if (!insecure_plaintext) {
    return Status::InvalidArgument(
        "the " + what + " would listen on " + host + ":" + std::to_string(port) +
        ", beyond loopback, without TLS: anyone who can reach it could read and change every "
        "database. Turn on TLS (--tls-ca, --tls-cert and --tls-key), or accept plaintext "
        "with --insecure-plaintext (only on a network you trust), or listen on 127.0.0.1");
  }
  *exposed = true;
  return Status::OK();
}

}  // namespace kvmesh
