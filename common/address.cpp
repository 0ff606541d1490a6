#include "common/address.hpp"

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

}  // namespace kvmesh
