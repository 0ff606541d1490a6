#include "bootstrap/connection_guard.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/basp_broker.hpp>
#include <caf/io/network/default_multiplexer.hpp>
#include <caf/io/network/doorman_impl.hpp>
#include <caf/io/network/scribe_impl.hpp>

#include <chrono>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "messages/type_ids.hpp"

namespace kvmesh {

namespace {

using Clock = std::chrono::steady_clock;
namespace net = caf::io::network;

/// One kind of event worth a log line, logged at most once per second with how many more
/// happened meanwhile: a flood of refused connections must not become a flood of log lines.
class RateLimitedLog {
 public:
  /// True if a line may be written now; `*suppressed` is how many were held back since the last.
  bool Allow(uint64_t* suppressed) {
    const auto now = Clock::now();
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

 private:
  bool logged_ = false;
  Clock::time_point last_{};
  uint64_t suppressed_ = 0;
};

std::string MoreSince(uint64_t suppressed, const char* what) {
  if (suppressed == 0) return "";
  return " (" + std::to_string(suppressed) + " more " + what + " since the last such line)";
}

}  // namespace

class GuardedScribe;

/// The state one listening port shares with its connections. Used on CAF's multiplexer thread;
/// the mutex only guards against CAF destroying a scribe elsewhere (at system shutdown).
class ConnectionGuard {
 public:
  explicit ConnectionGuard(ListenerLimits limits) : limits_(std::move(limits)) {}

  const ListenerLimits& limits() const { return limits_; }
  void set_port(uint16_t port) { port_ = port; }

  /// Counts a new connection from `address`, or says why it is refused (and logs it).
  bool Admit(const std::string& address) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t& from_address = per_address_[address];
    const char* bound = nullptr;
    size_t limit = 0;
    if (total_ >= limits_.max_connections) {
      bound = "max_connections";
      limit = limits_.max_connections;
    } else if (from_address >= limits_.max_connections_per_address) {
      bound = "max_connections_per_address";
      limit = limits_.max_connections_per_address;
    }
    if (bound == nullptr) {
      ++from_address;
      ++total_;
      return true;
    }
    if (from_address == 0) per_address_.erase(address);
    uint64_t suppressed = 0;
    if (refused_log_.Allow(&suppressed)) {
      spdlog::warn(
          "refused a connection from {} to the {} {}: {} connections are open ({} from {}); "
          "{} is {}{}",
          address, limits_.name, port_, total_, from_address, address, bound, limit,
          MoreSince(suppressed, "refused"));
    }
    return false;
  }

  /// A connection from `address` is gone (its descriptor is being closed).
  void Release(const std::string& address, GuardedScribe* scribe) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.erase(scribe);
    auto it = per_address_.find(address);
    if (it != per_address_.end() && --it->second == 0) per_address_.erase(it);
    if (total_ > 0) --total_;
  }

  /// `scribe` must deliver its first complete message by `deadline`.
  void AwaitHandshake(GuardedScribe* scribe, Clock::time_point deadline) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.emplace(scribe, deadline);
  }

  void HandshakeDone(GuardedScribe* scribe) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.erase(scribe);
  }

  /// Closes every connection past its handshake deadline. On the multiplexer thread.
  void ExpireHandshakes();

  /// Logs (rate-limited) that a connection from `address` announced `bytes`.
  void LogOversized(const std::string& address, uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t suppressed = 0;
    if (!oversized_log_.Allow(&suppressed)) return;
    spdlog::warn(
        "closed the connection from {} to the {} {}: it announced a message of {}; the maximum "
        "is {}{}",
        address, limits_.name, port_, FormatSize(bytes), FormatSize(limits_.max_message_bytes),
        MoreSince(suppressed, "closed"));
  }

 private:
  const ListenerLimits limits_;
  uint16_t port_ = 0;
  std::mutex mutex_;
  size_t total_ = 0;
  std::unordered_map<std::string, size_t> per_address_;
  std::unordered_map<GuardedScribe*, Clock::time_point> pending_;
  RateLimitedLog refused_log_;
  RateLimitedLog oversized_log_;
  RateLimitedLog silent_log_;
};

/// One accepted connection: CAF's default scribe, watching the BASP headers it reads.
class GuardedScribe final : public net::scribe_impl {
 public:
  GuardedScribe(net::default_multiplexer& mpx, net::native_socket fd,
                std::shared_ptr<ConnectionGuard> guard, std::string address)
      : scribe_impl(mpx, fd), guard_(std::move(guard)), address_(std::move(address)) {
    guard_->AwaitHandshake(this, Clock::now() + guard_->limits().handshake_timeout);
  }

  ~GuardedScribe() override { guard_->Release(address_, this); }

  const std::string& address() const { return address_; }

  /// Closes the connection as a read failure would: the broker is told, the socket leaves the
  /// event loop, and the descriptor is closed when CAF lets go of this scribe.
  void Close() {
    if (!detached()) io_failure(&stream_.backend(), net::operation::read);
  }

  // BASP reads exactly one header, then exactly its payload_len bytes (if any), then the next
  // header. Each chunk arrives here whole, before the broker sees it.
  bool consume(caf::execution_unit* ctx, const void* buf, size_t num_bytes) override {
    if (detached()) return scribe_impl::consume(ctx, buf, num_bytes);
    bool message_complete = false;
    if (expect_header_ && num_bytes == caf::io::basp::header_size) {
      caf::io::basp::header header;
      caf::binary_deserializer source{ctx, static_cast<const char*>(buf), num_bytes};
      if (!source(header)) {  // an unreadable header is the broker's to refuse
        if (header.payload_len > guard_->limits().max_message_bytes) {
          guard_->LogOversized(address_, header.payload_len);
          Close();
          return false;
        }
        if (header.payload_len > 0) {
          expect_header_ = false;
        } else {
          message_complete = true;
        }
      }
    } else if (!expect_header_) {
      expect_header_ = true;
      message_complete = true;
    }
    if (message_complete && !handshake_done_) {
      handshake_done_ = true;
      guard_->HandshakeDone(this);
    }
    return scribe_impl::consume(ctx, buf, num_bytes);
  }

 private:
  std::shared_ptr<ConnectionGuard> guard_;
  const std::string address_;
  bool expect_header_ = true;
  bool handshake_done_ = false;
};

void ConnectionGuard::ExpireHandshakes() {
  std::vector<caf::intrusive_ptr<GuardedScribe>> expired;
  uint64_t suppressed = 0;
  bool log = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second <= now) {
        // Still referenced: a scribe leaves pending_ in its destructor, under this mutex.
        expired.emplace_back(it->first);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (!expired.empty()) log = silent_log_.Allow(&suppressed);
  }
  if (log) {
    spdlog::info(
        "closed {} connection(s) to the {} {} (one from {}) that sent no handshake within "
        "{} ms{}",
        expired.size(), limits_.name, port_, expired.front()->address(),
        std::chrono::duration_cast<std::chrono::milliseconds>(limits_.handshake_timeout).count(),
        MoreSince(suppressed, "such closes"));
  }
  for (auto& scribe : expired) scribe->Close();
}

namespace {

/// CAF's default doorman, except that it counts, bounds and guards what it accepts.
class GuardedDoorman final : public net::doorman_impl {
 public:
  GuardedDoorman(net::default_multiplexer& mpx, net::native_socket fd,
                 std::shared_ptr<ConnectionGuard> guard)
      : doorman_impl(mpx, fd), guard_(std::move(guard)) {}

  // As doorman_impl::new_connection, with the admission check and a GuardedScribe.
  bool new_connection() override {
    if (detached()) return false;
    auto& mpx = acceptor_.backend();
    const net::native_socket fd = acceptor_.accepted_socket();
    auto address = net::remote_addr_of_fd(fd);
    const std::string from = address ? *address : std::string("an unknown address");
    if (!guard_->Admit(from)) {
      net::close_socket(fd);
      return true;  // keep accepting
    }
    (void)net::keepalive(fd, true);
    auto scribe = caf::make_counted<GuardedScribe>(mpx, fd, guard_, from);
    auto hdl = scribe->hdl();
    parent()->add_scribe(std::move(scribe));
    return doorman::new_connection(&mpx, hdl);
  }

 private:
  std::shared_ptr<ConnectionGuard> guard_;
};

caf::behavior HandshakeSweeper(caf::event_based_actor* self,
                               std::vector<std::shared_ptr<ConnectionGuard>> guards,
                               caf::timespan period) {
  self->delayed_send(self, period, atom::tick_v);
  return {
      [=](atom::tick) {
        self->system().middleman().backend().post([guards] {
          for (const auto& guard : guards) guard->ExpireHandshakes();
        });
        self->delayed_send(self, period, atom::tick_v);
      },
  };
}

}  // namespace

Status PublishGuarded(caf::actor_system& system, const caf::strong_actor_ptr& whom,
                      std::set<std::string> sigs, const std::string& host, uint16_t port,
                      ListenerLimits limits, uint16_t* actual_port,
                      std::shared_ptr<ConnectionGuard>* guard_out) {
  auto& mpx = static_cast<net::default_multiplexer&>(system.middleman().backend());
  auto fd = net::new_tcp_acceptor_impl(port, host.empty() ? nullptr : host.c_str(),
                                       /*reuse_addr=*/true);
  if (!fd) {
    return Status::IOError(host + ":" + std::to_string(port) + ": " + system.render(fd.error()));
  }
  auto guard = std::make_shared<ConnectionGuard>(std::move(limits));
  caf::io::doorman_ptr doorman = caf::make_counted<GuardedDoorman>(mpx, *fd, guard);
  const uint16_t bound = doorman->port();
  guard->set_port(bound);
  // What middleman::publish does after opening its own doorman: the BASP broker takes it over
  // and answers handshakes on it for `whom`.
  auto basp = system.middleman().named_broker<caf::io::basp_broker>(caf::atom("BASP"));
  caf::anon_send(basp, caf::publish_atom_v, std::move(doorman), bound, whom, std::move(sigs));
  *actual_port = bound;
  *guard_out = std::move(guard);
  return Status::OK();
}

caf::actor SpawnHandshakeSweeper(caf::actor_system& system,
                                 std::vector<std::shared_ptr<ConnectionGuard>> guards,
                                 caf::timespan period) {
  return system.spawn(HandshakeSweeper, std::move(guards), period);
}

}  // namespace kvmesh
