// What the guards of kvmesh's two kinds of listening port share: the BASP ports
// (transport/connection_guard.hpp: the cluster port) and kvmesh's own client port
// (transport/client_port.hpp). Internal to the transport library.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

namespace kvmesh {

struct ListenerLimits;

/// One kind of event worth a log line, logged at most once per second with how many more
/// happened meanwhile: a flood of refused connections must not become a flood of log lines.
/// Thread-safe (several actor systems in one process have several network threads).
class RateLimitedLog {
 public:
  /// True if a line may be written now; `*suppressed` is how many were held back since the last.
  bool Allow(uint64_t* suppressed);

 private:
  std::mutex mutex_;
  bool logged_ = false;
  std::chrono::steady_clock::time_point last_{};
  uint64_t suppressed_ = 0;
};

/// " (N more <what> since the last such line)", or "" for none.
std::string MoreSince(uint64_t suppressed, const char* what);

/// Logs a line about one connection through `log` (one per kind of event, process-wide).
template <class... Ts>
void WarnRateLimited(RateLimitedLog& log, const char* what, fmt::format_string<Ts...> format,
                     Ts&&... args) {
  uint64_t suppressed = 0;
  if (!log.Allow(&suppressed)) return;
  spdlog::warn("{}{}", fmt::format(format, std::forward<Ts>(args)...), MoreSince(suppressed, what));
}

/// The process-wide logs of the guards' events, one per kind.
struct GuardLogs {
  RateLimitedLog tls_failures;
  RateLimitedLog refusals;
  RateLimitedLog oversized;
  RateLimitedLog dropped;
};
GuardLogs& guard_logs();

/// Counts the open connections of one listening port, in all and by remote address, and refuses
/// one over the port's bounds (ListenerLimits: max_connections, max_pending_handshakes,
/// max_connections_per_address) with a rate-limited warning naming the address and the bound.
/// Not thread-safe: its owner serialises the calls.
class ConnectionCounter {
 public:
  explicit ConnectionCounter(const ListenerLimits& limits);

  /// Counts a new connection from `address` to the port `port`, while `pending_handshakes` of
  /// the port's connections have not finished their handshake; false (logged) if refused.
  bool Admit(const std::string& address, size_t pending_handshakes, uint16_t port);
  /// A connection Admit counted is gone.
  void Release(const std::string& address);

 private:
  const ListenerLimits& limits_;
  size_t total_ = 0;
  std::unordered_map<std::string, size_t> per_address_;
  RateLimitedLog refused_log_;
};

/// The type strings CAF gives the messages an actor with interface `sigs` takes
/// ("caf::replies_to<put,@str,@str>::with<ok>" takes "@<>+@atom+@str+@str"): what a client
/// may send the gateway, checked before CAF decodes a message.
std::shared_ptr<const std::set<std::string>> RequestTypes(const std::set<std::string>& sigs);

}  // namespace kvmesh
