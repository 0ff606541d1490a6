#include "transport/guard_common.hpp"

#include "transport/connection_guard.hpp"

namespace kvmesh {

bool RateLimitedLog::Allow(uint64_t* suppressed) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (logged_ && now - last_ < std::chrono::seconds(1)) {
    ++suppressed_;
    return false;
  }
  logged_ = true;
  last_ = now;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

std::string MoreSince(uint64_t suppressed, const char* what) {
  if (suppressed == 0) return "";
  return " (" + std::to_string(suppressed) + " more " + what + " since the last such line)";
}

GuardLogs& guard_logs() {
  static GuardLogs logs;
  return logs;
}

ConnectionCounter::ConnectionCounter(const ListenerLimits& limits) : limits_(limits) {}

bool ConnectionCounter::Admit(const std::string& address, size_t pending_handshakes,
                              uint16_t port) {
  size_t& from_address = per_address_[address];
  const char* bound = nullptr;
  size_t limit = 0;
  if (total_ >= limits_.max_connections) {
    bound = "max_connections";
    limit = limits_.max_connections;
  } else if (pending_handshakes >= limits_.max_pending_handshakes) {
    // Each costs buffers (TLS state) until its handshake is done or its deadline passes.
    bound = "max_pending_handshakes";
    limit = limits_.max_pending_handshakes;
  } else if (from_address >= limits_.max_connections_per_address) {
    bound = "max_connections_per_address";
    limit = limits_.max_connections_per_address;
  }
  if (bound == nullptr) {
    ++from_address;
    ++total_;
    return true;
  }
  const size_t open_from_address = from_address;
  if (from_address == 0) per_address_.erase(address);
  uint64_t suppressed = 0;
  if (refused_log_.Allow(&suppressed)) {
    spdlog::warn(
        "refused a connection from {} to the {} {}: {} connections are open ({} from {}); "
        "{} is {}{}",
        address, limits_.name, port, total_, open_from_address, address, bound, limit,
        MoreSince(suppressed, "refused"));
  }
  return false;
}

void ConnectionCounter::Release(const std::string& address) {
  auto it = per_address_.find(address);
  if (it != per_address_.end() && --it->second == 0) per_address_.erase(it);
  if (total_ > 0) --total_;
}

std::shared_ptr<const std::set<std::string>> RequestTypes(const std::set<std::string>& sigs) {
  auto out = std::make_shared<std::set<std::string>>();
  for (const std::string& sig : sigs) {
    const size_t open = sig.find('<');
    const size_t close = sig.find(">::with<");
    if (open == std::string::npos) continue;
    const std::string inputs =
        sig.substr(open + 1, (close == std::string::npos ? sig.rfind('>') : close) - open - 1);
    std::string type = "@<>";
    int depth = 0;
    std::string token;
    bool first = true;
    auto take = [&] {
      // Atoms (the request's first input, and any other such as `configs, put`) are written by
      // name in signatures and serialized as "@atom"; other types have "@" (built in) or a
      // namespaced name.
      const bool atom = first || (!token.empty() && token[0] != '@' &&
                                  token.find_first_of(".:<") == std::string::npos);
      type += "+" + (atom ? std::string("@atom") : token);
      first = false;
      token.clear();
    };
    for (char c : inputs) {
      if (c == ',' && depth == 0) {
        take();
        continue;
      }
      depth += c == '<' ? 1 : c == '>' ? -1 : 0;
      token += c;
    }
    take();
    out->insert(type);
  }
  return out;
}

}  // namespace kvmesh
