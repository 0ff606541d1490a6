#include "transport/connection_guard.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/basp_broker.hpp>
#include <caf/io/network/default_multiplexer.hpp>
#include <caf/io/network/doorman_impl.hpp>
#include <caf/io/network/stream_impl.hpp>
#include <caf/policy/tcp.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "messages/type_ids.hpp"
#include "security/tls.hpp"
#include "transport/guard_common.hpp"

namespace kvmesh {

namespace {

using Clock = std::chrono::steady_clock;
namespace net = caf::io::network;
namespace basp = caf::io::basp;

/// The I/O policy of a TLS connection: CAF's stream calls it like policy::tcp.
class TlsPolicy {
 public:
  TlsPolicy(std::unique_ptr<security::TlsSession> session, std::string description)
      : session_(std::move(session)), description_(std::move(description)) {}

  net::rw_state read_some(size_t& result, net::native_socket fd, void* buf, size_t len) {
    return Checked(session_->read_some(result, fd, buf, len));
  }
  net::rw_state write_some(size_t& result, net::native_socket fd, const void* buf, size_t len) {
    return Checked(session_->write_some(result, fd, buf, len));
  }
  bool must_read_more(net::native_socket fd, size_t threshold) {
    return session_->must_read_more(fd, threshold);
  }

  const security::TlsSession& session() const { return *session_; }

 private:
  net::rw_state Checked(net::rw_state state) {
    if (state == net::rw_state::failure && !logged_ && !session_->failure().empty()) {
      logged_ = true;
      WarnRateLimited(guard_logs().tls_failures, "TLS failures", "closed the connection {}: {}",
                      description_, session_->failure());
    }
    return state;
  }

  std::unique_ptr<security::TlsSession> session_;
  const std::string description_;
  bool logged_ = false;
};

}  // namespace

class GuardedConnection;

namespace {

/// A connection handle no other connection of this process ever had. CAF's own scribes take the
/// socket's descriptor as their handle, but the BASP broker cleans a closed connection up only
/// after every message already read from any connection is delivered (it sends the cleanup
/// through its ordered delivery queue), while the descriptor is closed, and reused by the next
/// accept, at once. A connection accepted in between under the same handle lost its route and
/// state to the late cleanup: its requests reached actors without a sender and were never
/// answered (a client that disconnected while the node was busy made the next client hang).
/// Handles start above any descriptor; the broker and the multiplexer need no more than
/// uniqueness (the stream keeps the descriptor).
caf::io::connection_handle UniqueHandle() {
  static std::atomic<int64_t> next{int64_t{1} << 32};
  return caf::io::connection_handle::from_int(next.fetch_add(1));
}

/// True for kvmesh's own actors, whose state names start with "kvmesh.".
bool IsKvmeshActor(const caf::strong_actor_ptr& actor) {
  auto* local = dynamic_cast<caf::local_actor*>(actor->get());
  return local != nullptr && std::string_view(local->name()).rfind("kvmesh.", 0) == 0;
}

}  // namespace

/// The state one listening port shares with its connections. Used on CAF's multiplexer thread;
/// the mutex only guards against CAF destroying a scribe elsewhere (at system shutdown).
class ConnectionGuard {
 public:
  explicit ConnectionGuard(ListenerLimits limits) : limits_(std::move(limits)) {}

  const ListenerLimits& limits() const { return limits_; }
  void set_port(uint16_t port) { port_ = port; }
  uint16_t port() const { return port_; }

  /// Counts a new connection from `address`, or says why it is refused (and logs it).
  bool Admit(const std::string& address) {
    std::lock_guard<std::mutex> lock(mutex_);
    return counter_.Admit(address, pending_.size(), port_);
  }

  /// A connection from `address` is gone (its descriptor is being closed).
  void Release(const std::string& address, GuardedConnection* connection) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.erase(connection);
    counter_.Release(address);
  }

  /// `connection` must deliver its first complete message by `deadline`.
  void AwaitHandshake(GuardedConnection* connection, Clock::time_point deadline) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.emplace(connection, deadline);
  }

  void HandshakeDone(GuardedConnection* connection) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.erase(connection);
  }

  /// Closes every connection past its handshake deadline. On the multiplexer thread.
  void ExpireHandshakes();

 private:
  const ListenerLimits limits_;
  uint16_t port_ = 0;
  std::mutex mutex_;
  ConnectionCounter counter_{limits_};
  std::unordered_map<GuardedConnection*, Clock::time_point> pending_;
  RateLimitedLog silent_log_;
};

/// One kvmesh connection (accepted or opened): a CAF scribe that watches each BASP message it
/// reads before the broker sees it. The stream (plain TCP or TLS) is the subclass's.
///
/// BASP reads exactly one header, then exactly its payload_len bytes (if any), then the next
/// header; each chunk arrives in consume() whole. The header of a message whose payload needs
/// checking (handshakes, routed, monitor and down messages) is held back, its payload read here,
/// and both are handed to the broker only if the payload passes.
class GuardedConnection : public caf::io::scribe {
 public:
  struct Settings {
    /// The listener's state, or null for a connection this side opened.
    std::shared_ptr<ConnectionGuard> guard;
    TransportSecurity security;
    size_t max_message_bytes = 0;
    /// The peer must hold a node certificate (TLS only).
    bool nodes_only = false;
    /// If not 0: messages to other actors are dropped (ListenerLimits::published_actor_only),
    /// and a message to it must carry no forwarding stages and be one of `requests`.
    caf::actor_id only_actor = 0;
    /// With only_actor: the other actors that may be addressed (ListenerLimits::also_addressable).
    std::vector<caf::actor_id> also_actors;
    /// The type strings of the messages the published actor takes (see RequestTypes).
    std::shared_ptr<const std::set<std::string>> requests;
    /// Remote address, and what the connection is, for logs ("from A to the cluster port 7371").
    std::string address;
    std::string description;
  };

  explicit GuardedConnection(Settings settings)
      : caf::io::scribe(UniqueHandle()), settings_(std::move(settings)) {
    if (settings_.guard) {
      settings_.guard->AwaitHandshake(this,
                                      Clock::now() + settings_.guard->limits().handshake_timeout);
    }
  }

  ~GuardedConnection() override {
    if (settings_.guard) settings_.guard->Release(settings_.address, this);
    if (bound_ && settings_.security.directory) settings_.security.directory->Unbind(peer_node_);
  }

  const std::string& address() const { return settings_.address; }

  /// Closes the connection as a read failure would: the broker is told, the socket leaves the
  /// event loop, and the descriptor is closed when CAF lets go of this scribe.
  virtual void Close() = 0;

  /// Why TLS refused or lost the connection; empty if it did not (or without TLS).
  virtual std::string TlsFailure() const = 0;

  bool consume(caf::execution_unit* ctx, const void* buf, size_t num_bytes) override {
    if (detached()) return caf::io::scribe::consume(ctx, buf, num_bytes);
    if (!peer_checked_) {
      peer_checked_ = true;
      if (!CheckPeerCertificate()) return Refuse();
    }
    switch (state_) {
      case State::kHeader:
        return ConsumeHeader(ctx, buf, num_bytes);
      case State::kPayload:
        state_ = State::kHeader;
        MessageComplete();
        return caf::io::scribe::consume(ctx, buf, num_bytes);
      case State::kHeldPayload:
        state_ = State::kHeader;
        return ConsumeHeldPayload(ctx, buf, num_bytes);
      case State::kDropPayload:
        state_ = State::kHeader;
        configure_read(caf::io::receive_policy::exactly(basp::header_size));
        return true;
    }
    return false;
  }

 protected:
  /// While set, rd_buf() returns this instead of the stream's buffer (see Deliver).
  std::vector<char>* rd_override_ = nullptr;

  /// The peer's verified certificate, with TLS once the handshake is done; nullopt otherwise.
  virtual std::optional<security::PeerIdentity> PeerCertificate() const = 0;

  /// CAF's BASP broker (0.17.6) makes the state of a connection it is asked to open (its
  /// connect_atom handler: the connector's) with a `last_seen` of the clock's epoch, set only when
  /// the first bytes arrive, and its heartbeat tick closes every connection not seen for
  /// middleman.connection-timeout: a tick between the connect and the server's handshake failed
  /// the connect with connection_timeout. The broker configures the connection's first read right
  /// after making that state (on the multiplexer thread, where it runs): from there the
  /// connection counts as seen, so the server has the whole timeout to answer, and a server that
  /// never answers is still closed once it passes.
  void MarkSeenByBroker() {
    if (settings_.guard) return;  // accepted: the broker makes their state on their first bytes
    auto* broker = dynamic_cast<caf::io::basp_broker*>(parent());
    if (broker == nullptr) return;
    auto it = broker->ctx.find(hdl());
    if (it != broker->ctx.end()) it->second.last_seen = broker->clock().now();
  }

 private:
  enum class State { kHeader, kPayload, kHeldPayload, kDropPayload };

  bool Refuse() {
    Close();
    return false;
  }

  /// With TLS, the first bytes arrive only after the handshake verified the peer (and its role:
  /// TlsSession refuses a client certificate where only nodes may connect).
  bool CheckPeerCertificate() {
    if (!settings_.security.tls) return true;
    identity_ = PeerCertificate();
    return identity_.has_value();  // the TLS session refused it already otherwise
  }

  bool ConsumeHeader(caf::execution_unit* ctx, const void* buf, size_t num_bytes) {
    basp::header header;
    if (num_bytes != basp::header_size) return caf::io::scribe::consume(ctx, buf, num_bytes);
    caf::binary_deserializer source{ctx, static_cast<const char*>(buf), num_bytes};
    if (source(header)) {  // an unreadable header is the broker's to refuse
      return caf::io::scribe::consume(ctx, buf, num_bytes);
    }
    // CAF's broker dereferences the payload of a handshake without checking there is one, and
    // trusts other header fields it checks only later: an invalid header closes at once.
    if (!basp::valid(header) || (basp::is_handshake(header) && header.payload_len == 0)) {
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: an invalid BASP header ({}, {} bytes)",
                      settings_.description, to_string(header.operation), header.payload_len);
      return Refuse();
    }
    if (settings_.only_actor != 0 && header.operation == basp::message_type::routed_message) {
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: a client sent a routed message",
                      settings_.description);
      return Refuse();
    }
    if (header.payload_len > settings_.max_message_bytes) {
      WarnRateLimited(guard_logs().oversized, "closes",
                      "closed the connection {}: it announced a message of {}; the "
                      "maximum is {}",
                      settings_.description, FormatSize(header.payload_len),
                      FormatSize(settings_.max_message_bytes));
      return Refuse();
    }
    if (settings_.only_actor != 0 &&
        // Not monitor messages: CAF sends one for every proxy it makes (of whatever actor's
        // address reached the peer), and all it asks is a down message when that actor stops.
        (header.operation == basp::message_type::direct_message ||
         header.operation == basp::message_type::routed_message) &&
        ((header.dest_actor != settings_.only_actor &&
          std::find(settings_.also_actors.begin(), settings_.also_actors.end(),
                    header.dest_actor) == settings_.also_actors.end()) ||
         header.has(basp::header::named_receiver_flag))) {
      if (header.has(basp::header::named_receiver_flag)) {
        // CAF itself sends one on every new connection (its broker asks the peer's "ConfigServ"
        // how to reach it; a kvmesh node unregisters that service anyway): not worth a line.
        spdlog::debug("dropped a BASP {} to a named actor on the connection {}",
                      to_string(header.operation), settings_.description);
      } else if (auto target = parent()->system().registry().get(header.dest_actor);
                 !target || !IsKvmeshActor(target)) {
        // CAF's own helpers: its broker registers one per connected node and asks the peer's
        // "SpawnServ" for it, whose answer lands here. Not a peer probing kvmesh's actors.
        spdlog::debug("dropped a BASP {} to CAF's actor {} on the connection {}",
                      to_string(header.operation), header.dest_actor, settings_.description);
      } else {
        auto* local = dynamic_cast<caf::local_actor*>(target->get());
        WarnRateLimited(guard_logs().dropped, "dropped messages",
                        "dropped a BASP {} on the connection {}: it is addressed to actor {} "
                        "({}), and only actor {} (the one published there) may be addressed",
                        to_string(header.operation), settings_.description, header.dest_actor,
                        local != nullptr ? local->name() : "unknown", settings_.only_actor);
      }
      if (header.payload_len == 0) return true;
      state_ = State::kDropPayload;
      configure_read(caf::io::receive_policy::exactly(header.payload_len));
      return true;
    }
    if (header.payload_len == 0) {
      MessageComplete();
      return caf::io::scribe::consume(ctx, buf, num_bytes);
    }
    switch (header.operation) {
      case basp::message_type::server_handshake:
      case basp::message_type::client_handshake:
      case basp::message_type::routed_message:
      case basp::message_type::monitor_message:
      case basp::message_type::down_message:
      hold:
        held_header_.assign(static_cast<const char*>(buf),
                            static_cast<const char*>(buf) + num_bytes);
        held_operation_ = header.operation;
        state_ = State::kHeldPayload;
        configure_read(caf::io::receive_policy::exactly(header.payload_len));
        return true;
      default:
        // A client's request is checked before CAF deserializes it (RequestAllowed).
        if (settings_.only_actor != 0 && header.operation == basp::message_type::direct_message) {
          goto hold;
        }
        state_ = State::kPayload;
        return caf::io::scribe::consume(ctx, buf, num_bytes);
    }
  }

  /// On the client port: a direct message must carry no forwarding stages and be one of the
  /// gateway's requests. CAF deserializes a message (and its stages) before any actor sees it,
  /// and makes a proxy, with an indirect route through this connection, for every actor handle
  /// of an unknown node in it, under a lock it also holds while blocking on the I/O thread: a
  /// client sending thousands of made-up handles deadlocked the node. Requests carry none.
  bool RequestAllowed(caf::execution_unit* ctx, const void* buf, size_t num_bytes,
                      std::string* type) {
    caf::binary_deserializer source{ctx, static_cast<const char*>(buf), num_bytes};
    size_t stages = 0;
    uint16_t type_number = 0;
    if (source.begin_sequence(stages) || stages != 0) {
      *type = "(forwarding stages)";
      return false;
    }
    if (source.begin_object(type_number, *type) || type_number != 0) return false;
    return settings_.requests && settings_.requests->count(*type) > 0;
  }

  bool ConsumeHeldPayload(caf::execution_unit* ctx, const void* buf, size_t num_bytes) {
    caf::binary_deserializer source{ctx, static_cast<const char*>(buf), num_bytes};
    const caf::node_id& this_node = parent()->system().node();
    if (held_operation_ == basp::message_type::direct_message) {
      std::string type;
      if (!RequestAllowed(ctx, buf, num_bytes, &type)) {
        WarnRateLimited(guard_logs().dropped, "dropped messages",
                        "replaced a message on the connection {} by an empty one: the gateway "
                        "takes no {}",
                        settings_.description, type.empty() ? "unreadable message" : type);
        return DeliverEmpty(ctx);
      }
    } else if (held_operation_ == basp::message_type::server_handshake ||
               held_operation_ == basp::message_type::client_handshake) {
      caf::node_id announced;
      if (source(announced)) return Deliver(ctx, buf, num_bytes);  // the broker's to refuse
      if (!Bind(announced)) return Refuse();
    } else {
      caf::node_id from;
      caf::node_id to;
      if (source(from, to)) return Deliver(ctx, buf, num_bytes);  // the broker's to refuse
      const char* why = nullptr;
      if (!has_peer_node_) {
        why = "it came before the handshake";
      } else if (from != peer_node_) {
        why = "it claims to come from another node";
      } else if (to != this_node) {
        why = "it asks this node to forward it to another node";
      }
      if (why != nullptr) {
        WarnRateLimited(guard_logs().dropped, "dropped messages",
                        "dropped a BASP {} on the connection {}: {} "
                        "(from {}, to {})",
                        to_string(held_operation_), settings_.description, why,
                        caf::to_string(from), caf::to_string(to));
        configure_read(caf::io::receive_policy::exactly(basp::header_size));
        return true;
      }
    }
    return Deliver(ctx, buf, num_bytes);
  }

  /// Hands the held header and then its payload to the broker: `replacement` if given, else the
  /// payload just read (in the stream's buffer). CAF's scribe::consume reads rd_buf(), not its
  /// argument, so rd_buf() is pointed at each in turn; nothing is copied.
  bool Deliver(caf::execution_unit* ctx, const void* buf, size_t num_bytes,
               std::vector<char>* replacement = nullptr) {
    MessageComplete();
    rd_override_ = &held_header_;
    const bool header_taken =
        caf::io::scribe::consume(ctx, held_header_.data(), held_header_.size());
    rd_override_ = nullptr;
    if (!header_taken || detached()) return false;
    if (replacement == nullptr) return caf::io::scribe::consume(ctx, buf, num_bytes);
    rd_override_ = replacement;
    const bool taken = caf::io::scribe::consume(ctx, replacement->data(), replacement->size());
    rd_override_ = nullptr;
    return taken;
  }

  /// Replaces the held request by an empty message, which the gateway refuses as it refuses
  /// any message it does not take (unexpected_message): the client gets its clear error, and
  /// CAF deserializes nothing the client wrote.
  bool DeliverEmpty(caf::execution_unit* ctx) {
    std::vector<char> empty;
    caf::binary_serializer sink{ctx, empty};
    if (sink(std::vector<caf::strong_actor_ptr>{}, caf::message{})) return Refuse();
    basp::header header;
    caf::binary_deserializer source{ctx, held_header_.data(), held_header_.size()};
    if (source(header)) return Refuse();
    header.payload_len = static_cast<uint32_t>(empty.size());
    held_header_.clear();
    caf::binary_serializer header_sink{ctx, held_header_};
    if (header_sink(header)) return Refuse();
    return Deliver(ctx, nullptr, 0, &empty);
  }

  /// Records which CAF node this connection speaks for; false if it may not.
  bool Bind(const caf::node_id& announced) {
    if (has_peer_node_) {
      if (announced == peer_node_) return true;
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: a second handshake announced "
                      "another node",
                      settings_.description);
      return false;
    }
    if (announced == parent()->system().node() && settings_.guard) {
      // Our own node id on a connection a peer opened: never a real connection to ourselves
      // (CAF closes those after the server handshake), and it would make proxies that pass
      // for this node's own actors.
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: it announced this node's own id",
                      settings_.description);
      return false;
    }
    has_peer_node_ = true;
    peer_node_ = announced;
    if (!settings_.security.tls || !settings_.security.directory || !identity_) return true;
    if (!settings_.security.directory->Bind(announced, *identity_)) {
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: its certificate \"{}\" announced "
                      "the node id of a peer connected under another certificate",
                      settings_.description, identity_->name);
      return false;
    }
    bound_ = true;
    return true;
  }

  void MessageComplete() {
    if (handshake_done_) return;
    handshake_done_ = true;
    if (settings_.guard) settings_.guard->HandshakeDone(this);
  }

  Settings settings_;
  State state_ = State::kHeader;
  std::vector<char> held_header_;
  basp::message_type held_operation_ = basp::message_type::heartbeat;
  bool peer_checked_ = false;
  bool handshake_done_ = false;
  std::optional<security::PeerIdentity> identity_;
  bool has_peer_node_ = false;
  bool bound_ = false;
  caf::node_id peer_node_;
};

namespace {

/// A GuardedConnection over CAF's stream with I/O policy `Policy` (policy::tcp or TlsPolicy).
/// The stream calls are those of CAF's own scribe_impl (and libcaf_openssl's).
template <class Policy>
class Connection final : public GuardedConnection {
 public:
  /// `session` is the TLS session inside the policy (nullptr for plain TCP).
  template <class... Ts>
  Connection(net::default_multiplexer& mpx, net::native_socket fd, Settings settings,
             security::TlsSession* session, Ts&&... policy_args)
      : GuardedConnection(std::move(settings)),
        session_(session),
        stream_(mpx, fd, std::forward<Ts>(policy_args)...) {
    if (session != nullptr) {
      // Runs on the multiplexer thread, inside the stream's own event handling.
      // Nothing is written before the TLS handshake is done (see flush()).
      session->set_on_established([this] {
        if (flush_deferred_) {
          flush_deferred_ = false;
          stream_.flush(this);
        }
      });
    }
  }

  void Close() override {
    if (!detached()) io_failure(&stream_.backend(), net::operation::read);
  }

  void configure_read(caf::io::receive_policy::config config) override {
    stream_.configure_read(config);
    if (!launched_) {
      MarkSeenByBroker();
      Launch();
    }
  }
  void ack_writes(bool enable) override { stream_.ack_writes(enable); }
  std::vector<char>& wr_buf() override { return stream_.wr_buf(); }
  std::vector<char>& rd_buf() override {
    return rd_override_ != nullptr ? *rd_override_ : stream_.rd_buf();
  }
  void graceful_shutdown() override {
    stream_.graceful_shutdown();
    detach(&stream_.backend(), false);
  }
  // CAF's broker writes its BASP handshake as soon as a connection is accepted. Over TLS, a
  // write before the handshake is done cannot proceed until the peer's handshake messages are
  // read, and CAF's stream retries a write on every writable event: it would spin the I/O thread
  // for as long as a peer holds its handshake back. So the data waits in the stream's buffer and
  // is flushed once the session is established (a refused session never sends it).
  void flush() override {
    if (session_ != nullptr && !session_->established()) {
      flush_deferred_ = true;
      return;
    }
    stream_.flush(this);
  }
  std::string addr() const override {
    auto x = net::remote_addr_of_fd(stream_.fd());
    return x ? *x : std::string();
  }
  uint16_t port() const override {
    auto x = net::remote_port_of_fd(stream_.fd());
    return x ? *x : 0;
  }
  void add_to_loop() override { stream_.activate(this); }
  void remove_from_loop() override { stream_.passivate(); }

 protected:
  std::optional<security::PeerIdentity> PeerCertificate() const override {
    return session_ != nullptr ? session_->peer() : std::nullopt;
  }

 public:
  std::string TlsFailure() const override {
    return session_ != nullptr ? session_->failure() : std::string();
  }

 private:
  void Launch() {
    launched_ = true;
    // With TLS the reads drive the handshake (a connecting session sent its ClientHello when it
    // was made): no write event is asked for before the session is established (see flush()).
    stream_.start(this);
  }

  bool launched_ = false;
  bool flush_deferred_ = false;
  const security::TlsSession* const session_;
  net::stream_impl<Policy> stream_;
};

}  // namespace

void ConnectionGuard::ExpireHandshakes() {
  std::vector<caf::intrusive_ptr<GuardedConnection>> expired;
  uint64_t suppressed = 0;
  bool log = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second <= now) {
        // Still referenced: a connection leaves pending_ in its destructor, under this mutex.
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
  for (auto& connection : expired) connection->Close();
}

namespace {

/// A guarded connection over `fd` (non-blocking, connected or accepted), TLS if `settings` say
/// so; nullptr if TLS cannot start (logged). `host` is the name dialled (connects only).
caf::intrusive_ptr<GuardedConnection> MakeConnection(net::default_multiplexer& mpx,
                                                     net::native_socket fd, bool accepted,
                                                     const std::string& host,
                                                     GuardedConnection::Settings settings) {
  if (!settings.security.tls) {
    return caf::make_counted<Connection<caf::policy::tcp>>(mpx, fd, std::move(settings), nullptr);
  }
  auto session = accepted
                     ? security::TlsSession::Accept(settings.security.tls, fd, settings.nodes_only,
                                                    settings.security.admit)
                     : security::TlsSession::Connect(settings.security.tls, fd, host);
  if (!session) return nullptr;
  security::TlsSession* raw = session.get();  // owned by the policy, as long as the stream
  std::string description = settings.description;
  return caf::make_counted<Connection<TlsPolicy>>(mpx, fd, std::move(settings), raw,
                                                  std::move(session), std::move(description));
}

/// CAF's default doorman, except that it counts, bounds and guards what it accepts.
class GuardedDoorman final : public net::doorman_impl {
 public:
  GuardedDoorman(net::default_multiplexer& mpx, net::native_socket fd,
                 std::shared_ptr<ConnectionGuard> guard, TransportSecurity security,
                 caf::actor_id published, std::shared_ptr<const std::set<std::string>> requests)
      : doorman_impl(mpx, fd),
        guard_(std::move(guard)),
        security_(std::move(security)),
        published_(published),
        requests_(std::move(requests)) {}

  // As doorman_impl::new_connection, with the admission check and a GuardedConnection.
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
    (void)net::nonblocking(fd, true);
    GuardedConnection::Settings settings;
    settings.guard = guard_;
    settings.security = security_;
    settings.max_message_bytes = guard_->limits().max_message_bytes;
    settings.nodes_only = guard_->limits().nodes_only;
    if (guard_->limits().published_actor_only) {
      settings.only_actor = published_;
      settings.also_actors = guard_->limits().also_addressable;
      settings.requests = requests_;
    }
    settings.address = from;
    settings.description =
        "from " + from + " to the " + guard_->limits().name + " " + std::to_string(guard_->port());
    auto connection = MakeConnection(mpx, fd, /*accepted=*/true, "", std::move(settings));
    if (!connection) {
      // Admitted but never made: the guard's count is released by hand (no destructor runs).
      guard_->Release(from, nullptr);
      net::close_socket(fd);
      return true;
    }
    auto hdl = connection->hdl();
    parent()->add_scribe(std::move(connection));
    return doorman::new_connection(&mpx, hdl);
  }

 private:
  std::shared_ptr<ConnectionGuard> guard_;
  TransportSecurity security_;
  const caf::actor_id published_;
  const std::shared_ptr<const std::set<std::string>> requests_;
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
                      ListenerLimits limits, const TransportSecurity& security,
                      uint16_t* actual_port, std::shared_ptr<ConnectionGuard>* guard_out) {
  auto& mpx = static_cast<net::default_multiplexer&>(system.middleman().backend());
  auto fd = net::new_tcp_acceptor_impl(port, host.empty() ? nullptr : host.c_str(),
                                       /*reuse_addr=*/true);
  if (!fd) {
    return Status::IOError(host + ":" + std::to_string(port) + ": " + system.render(fd.error()));
  }
  auto guard = std::make_shared<ConnectionGuard>(std::move(limits));
  caf::io::doorman_ptr doorman =
      caf::make_counted<GuardedDoorman>(mpx, *fd, guard, security, whom->id(), RequestTypes(sigs));
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

caf::actor SpawnConnector(caf::actor_system& system, TransportSecurity security,
                          size_t max_message_bytes, caf::timespan timeout) {
  return system.spawn<caf::detached>([=](caf::event_based_actor* self) -> caf::behavior {
    return {
        [=](caf::connect_atom, const std::string& host,
            uint16_t port) -> caf::result<caf::message> {
          auto& mm = self->system().middleman();
          auto& mpx = static_cast<net::default_multiplexer&>(mm.backend());
          auto fd = net::new_tcp_connection(host, port);
          if (!fd) {
            self->quit();
            return fd.error();
          }
          (void)net::nonblocking(*fd, true);
          (void)net::keepalive(*fd, true);
          GuardedConnection::Settings settings;
          settings.security = security;
          settings.max_message_bytes = max_message_bytes;
          settings.nodes_only = true;  // kvmesh connects to nodes only
          settings.address = host;
          settings.description = "to " + host + ":" + std::to_string(port);
          auto connection = MakeConnection(mpx, *fd, /*accepted=*/false, host, settings);
          if (!connection) {
            net::close_socket(*fd);
            self->quit();
            return caf::make_error(caf::sec::cannot_connect_to_node, "cannot start TLS");
          }
          auto basp = mm.named_broker<caf::io::basp_broker>(caf::atom("BASP"));
          auto promise = self->make_response_promise();
          caf::io::scribe_ptr scribe = connection;
          self->request(basp, timeout, caf::connect_atom_v, std::move(scribe), port)
              .then(
                  [=](caf::node_id& node, caf::strong_actor_ptr& actor,
                      std::set<std::string>& interface) mutable {
                    promise.deliver(std::move(node), std::move(actor), std::move(interface));
                    self->quit();
                  },
                  [=, mpx = &mpx](caf::error& err) mutable {
                    // A peer that never answers the BASP handshake would keep this connection
                    // (no listener's deadline covers it): close it.
                    mpx->post([connection] { connection->Close(); });
                    // With TLS, a refused handshake looks like any closed connection to CAF;
                    // say what TLS saw.
                    if (std::string why = connection->TlsFailure(); !why.empty()) {
                      err = ToError(Status::Unavailable(std::move(why)));
                    }
                    promise.deliver(std::move(err));
                    self->quit();
                  });
          return promise;
        },
    };
  });
}

}  // namespace kvmesh
