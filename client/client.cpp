#include "kvmesh/client.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "common/address.hpp"
#include "common/completion.hpp"
#include "common/path.hpp"
#include "messages/type_ids.hpp"

namespace kvmesh::client {
namespace {

struct connection_state {
  static inline const char* name = "kvmesh.client_connection";
  gateway_actor gateway;
  std::string address;
  uint64_t next_id = 0;
  /// A request in flight: the id its reply carries, its deadline, and how to fail it.
  struct Pending {
    caf::message_id reply_id;
    std::chrono::steady_clock::time_point deadline;
    std::function<void(Status)> fail;
  };
  /// By local request number.
  std::unordered_map<uint64_t, Pending> in_flight;
  /// A tick is scheduled (while requests are in flight).
  bool ticking = false;
  /// Time between ticks: an expired request fails within this much after its deadline.
  caf::timespan tick_interval{};
  /// Tells the Connection the gateway is gone, so the next call reconnects.
  std::function<void()> on_lost;
};

using connection_pointer = caf::stateful_actor<connection_state>*;

}  // namespace

/// Work for the connection actor, from a caller's thread. Local only (never serialized).
using ConnectionJob = std::function<void(connection_pointer)>;

}  // namespace kvmesh::client

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvmesh::client::ConnectionJob)

namespace kvmesh::client {
namespace {

/// Answers request `reply_id` of `self` with `err` now. Consumes CAF's response handler (the real
/// reply, if it ever comes, is dropped) as CAF's own timeout would.
void InjectReply(connection_pointer self, caf::message_id reply_id, caf::error err) {
  caf::actor_cast<caf::strong_actor_ptr>(self)->enqueue(nullptr, reply_id,
                                                        caf::make_message(std::move(err)), nullptr);
}

void FailAll(connection_pointer self, const Status& why) {
  auto pending = std::move(self->state.in_flight);
  self->state.in_flight.clear();
  for (auto& [id, p] : pending) {
    p.fail(why);
    InjectReply(self, p.reply_id, ToError(why));
  }
}

/// Requests carry no CAF deadline (in CAF 0.17 each one wakes the timer thread and stays queued
/// there until it expires); instead one tick at a time, while requests are in flight, times out
/// the expired ones.
void ScheduleTick(connection_pointer self) {
  auto& st = self->state;
  if (st.ticking || st.in_flight.empty()) return;
  st.ticking = true;
  self->delayed_send(self, st.tick_interval, atom::tick_v);
}

void Tick(connection_pointer self) {
  auto& st = self->state;
  st.ticking = false;
  const auto now = std::chrono::steady_clock::now();
  for (auto& [id, p] : st.in_flight) {
    if (p.deadline <= now)
      InjectReply(self, p.reply_id, caf::make_error(caf::sec::request_timeout));
  }
  ScheduleTick(self);
}

/// What the connection actor and callers' threads share: the gateway while connected, and the
/// blocking calls waiting for a reply (which wait in their own thread, not on the actor).
struct Link {
  /// A blocking call in flight: its actor and the id its reply will carry.
  struct Waiter {
    caf::strong_actor_ptr actor;
    caf::message_id reply_id;
    bool sent = false;  // reply_id is known
    bool lost = false;  // the connection went before the request was sent
  };
  std::atomic<bool> connected{false};
  std::mutex mutex;
  gateway_actor gateway;  // guarded by mutex; valid while connected
  uint64_t next_waiter = 0;
  std::unordered_map<uint64_t, Waiter> waiters;

  /// The connection is gone: the next call reconnects, and every blocking call in flight gets
  /// `why` as its reply now (CAF would let it wait for its timeout).
  void Lost(const Status& why) {
    std::unordered_map<uint64_t, Waiter> pending;
    {
      std::lock_guard<std::mutex> lock(mutex);
      connected = false;
      gateway = nullptr;
      for (auto& [key, waiter] : waiters) {
        if (!waiter.sent) {
          waiter.lost = true;
        } else {
          pending.emplace(key, waiter);
        }
      }
    }
    for (auto& [key, waiter] : pending) {
      waiter.actor->enqueue(nullptr, waiter.reply_id, caf::make_message(ToError(why)), nullptr);
    }
  }
};

// The connection actor: sends every asynchronous request to the gateway and fails all requests
// in flight the moment the gateway's node is lost (CAF would otherwise let them run to their
// timeout).
caf::behavior ConnectionActor(connection_pointer self, std::string address,
                              std::shared_ptr<Link> link, caf::timespan request_timeout) {
  self->state.address = std::move(address);
  self->state.tick_interval =
      std::max(caf::timespan{std::chrono::milliseconds(1)}, request_timeout / 8);
  self->state.on_lost = [self, link] {
    link->Lost(Status::Unavailable("lost the connection to kvmesh node " + self->state.address));
  };
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (!st.gateway || msg.source != st.gateway.address()) return;
    st.gateway = nullptr;
    st.on_lost();
    FailAll(self, Status::Unavailable("lost the connection to kvmesh node " + st.address));
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    FailAll(self, Status::Unavailable("the client was closed before the request completed"));
    self->quit(msg.reason);
  });
  return {
      [=](gateway_actor& gateway) {
        self->state.gateway = gateway;
        self->monitor(gateway);
      },
      [=](ConnectionJob& job) { job(self); },
      [=](atom::tick) { Tick(self); },
  };
}

}  // namespace

struct Connection {
  ClientOptions options;
  std::string address;
  std::string host;
  uint16_t port = 0;
  caf::timespan timeout{};
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> system;
  caf::actor actor;
  std::mutex connect_mutex;
  std::shared_ptr<Link> link = std::make_shared<Link>();
  std::atomic<uint64_t> node_id{0};

  /// Blocking actors for Call, reused: each new actor that talks to the node makes both sides
  /// set up (and later tear down) a proxy for it, which costs more than the call.
  std::mutex callers_mutex;
  std::vector<std::unique_ptr<caf::scoped_actor>> idle_callers;

  ~Connection() {
    if (system) {
      idle_callers.clear();
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
      actor = nullptr;
      system->await_all_actors_done();
      system.reset();
    }
  }

  Status Start() {
    if (options.scheduler_policy != "sharing" && options.scheduler_policy != "stealing") {
      return Status::InvalidArgument("scheduler_policy must be \"sharing\" or \"stealing\"");
    }
    cfg = std::make_unique<caf::actor_system_config>();
    RegisterMessageTypes(*cfg);
    cfg->load<caf::io::middleman>();
    cfg->set("scheduler.policy",
             options.scheduler_policy == "sharing" ? caf::atom("sharing") : caf::atom("stealing"));
    cfg->set("middleman.heartbeat-interval",
             std::chrono::duration_cast<caf::timespan>(options.peer_timeout / 3));
    cfg->set("middleman.connection-timeout",
             std::chrono::duration_cast<caf::timespan>(options.peer_timeout));
    cfg->set("middleman.app-identifiers", std::vector<std::string>{"kvmesh"});
    // Deserialize replies in the multiplexer thread instead of handing each to a BASP worker
    // thread first: one thread wake-up less per reply.
    cfg->set("middleman.workers", size_t{0});
    system = std::make_unique<caf::actor_system>(*cfg);
    timeout = std::chrono::duration_cast<caf::timespan>(options.request_timeout);
    actor = system->spawn(ConnectionActor, address, link, timeout);
    return EnsureConnected();
  }

  /// Connects (again) if needed: finds the gateway, checks the protocol version, hands the
  /// gateway to the connection actor.
  Status EnsureConnected() {
    if (link->connected) return Status::OK();
    std::lock_guard<std::mutex> lock(connect_mutex);
    if (link->connected) return Status::OK();
    auto gateway = system->middleman().remote_actor<gateway_actor>(host, port);
    if (!gateway) {
      if (gateway.error() == caf::sec::unexpected_actor_messaging_interface) {
        return Status::InvalidArgument("the service at " + address +
                                       " is not a kvmesh node of this client's protocol version");
      }
      return Status::Unavailable("cannot reach kvmesh node at " + address + ": " +
                                 system->render(gateway.error()));
    }
    // The handshake is bounded by the peer timeout, not the request timeout: right after a node
    // comes back, a first attempt can go over a route CAF has not dropped yet, and the caller
    // should then get a prompt failure and retry, not wait for a long request deadline.
    caf::scoped_actor self{*system};
    Status result;
    const auto handshake_timeout =
        std::min(timeout, std::chrono::duration_cast<caf::timespan>(options.peer_timeout));
    self->request(*gateway, handshake_timeout, atom::hello_v, kClientProtocolVersion)
        .receive([&](uint32_t, uint64_t id) { node_id = id; },
                 [&](caf::error& err) { result = ToStatus(err); });
    if (!result.ok()) return result;
    caf::anon_send(actor, *gateway);
    {
      std::lock_guard<std::mutex> guard(link->mutex);
      link->gateway = *gateway;
      link->connected = true;
    }
    return Status::OK();
  }

  /// Sends `args...` to the gateway; `done` gets the reply or the error, exactly once.
  template <class Reply, class... Ts>
  void Send(Completion<Reply> done, Ts... args) {
    Status s = EnsureConnected();
    if (!s.ok()) {
      done(std::move(s), Reply{});
      return;
    }
    ConnectionJob job = [done, args..., t = timeout](connection_pointer self) {
      auto& st = self->state;
      if (!st.gateway) {
        done(Status::Unavailable("lost the connection to kvmesh node " + st.address), Reply{});
        return;
      }
      const uint64_t id = st.next_id++;
      auto handle = self->request(st.gateway, caf::infinite, args...);
      st.in_flight.emplace(
          id, connection_state::Pending{handle.id(), std::chrono::steady_clock::now() + t,
                                        [done](Status why) { done(std::move(why), Reply{}); }});
      ScheduleTick(self);
      handle.then(
          [self, id, done](Reply& reply) {
            if (self->state.in_flight.erase(id) != 0) done(Status::OK(), std::move(reply));
          },
          [self, id, done](caf::error& err) {
            if (self->state.in_flight.erase(id) != 0) done(ToStatus(err), Reply{});
          });
    };
    caf::anon_send(actor, std::move(job));
  }

  /// Sends a request; `done` gets the reply or the error as a Result.
  template <class Reply, class... Ts>
  void SendWithCallback(std::function<void(Result<Reply>)> done, Ts... args) {
    Send<Reply>(Completion<Reply>([done = std::move(done)](Status s, Reply r) {
                  done(s.ok() ? Result<Reply>(std::move(r)) : Result<Reply>(std::move(s)));
                }),
                std::move(args)...);
  }

  /// Sends a request whose reply is only "ok"; `done` gets its Status.
  template <class... Ts>
  void SendWithStatusCallback(std::function<void(Status)> done, Ts... args) {
    Send<atom::ok>(
        Completion<atom::ok>([done = std::move(done)](Status s, atom::ok) { done(std::move(s)); }),
        std::move(args)...);
  }

  /// Sends a request; the future holds the reply or the error. A real future (not a deferred
  /// one), so wait_for works.
  template <class Reply, class... Ts>
  std::future<Result<Reply>> SendForResult(Ts... args) {
    auto promise = std::make_shared<std::promise<Result<Reply>>>();
    auto future = promise->get_future();
    Send<Reply>(
        Completion<Reply>([promise](Status s, Reply r) {
          promise->set_value(s.ok() ? Result<Reply>(std::move(r)) : Result<Reply>(std::move(s)));
        }),
        std::move(args)...);
    return future;
  }

  /// Sends a request whose reply is only "ok"; the future holds its Status.
  template <class... Ts>
  std::future<Status> SendForStatus(Ts... args) {
    auto promise = std::make_shared<std::promise<Status>>();
    auto future = promise->get_future();
    Send<atom::ok>(Completion<atom::ok>([promise](Status s, atom::ok) { promise->set_value(s); }),
                   std::move(args)...);
    return future;
  }

  /// Blocking call returning the reply as a Result. The calling thread sends the request and
  /// waits for the reply itself (a scoped actor), so a round trip costs no hop through the
  /// connection actor and no wake-up of CAF's timer thread (the deadline is the receive's own).
  template <class Reply, class... Ts>
  Result<Reply> Call(Ts... args) {
    Status s = EnsureConnected();
    if (!s.ok()) return s;
    std::unique_ptr<caf::scoped_actor> caller;
    {
      std::lock_guard<std::mutex> lock(callers_mutex);
      if (!idle_callers.empty()) {
        caller = std::move(idle_callers.back());
        idle_callers.pop_back();
      }
    }
    if (!caller) caller = std::make_unique<caf::scoped_actor>(*system);
    auto& self = *caller;
    gateway_actor gateway;
    uint64_t key = 0;
    {
      std::lock_guard<std::mutex> lock(link->mutex);
      if (!link->connected || !link->gateway) {
        return Status::Unavailable("lost the connection to kvmesh node " + address);
      }
      gateway = link->gateway;
      key = link->next_waiter++;
      Link::Waiter waiter;
      waiter.actor = caf::actor_cast<caf::strong_actor_ptr>(self);
      link->waiters.emplace(key, std::move(waiter));
    }
    // No CAF timeout: the receive below bounds the wait, and a late reply finds the scoped actor
    // gone and is dropped.
    auto handle = self->request(gateway, caf::infinite, std::move(args)...);
    bool lost = false;
    {
      std::lock_guard<std::mutex> lock(link->mutex);
      auto& waiter = link->waiters[key];
      lost = waiter.lost;
      waiter.reply_id = handle.id();
      waiter.sent = true;
    }
    Result<Reply> result = Status::Unavailable("lost the connection to kvmesh node " + address);
    bool replied = false;
    if (!lost) {
      caf::blocking_actor::accept_one_cond rc;
      self->varargs_receive(
          rc, handle.id(),
          [&](Reply& reply) {
            result = std::move(reply);
            replied = true;
          },
          [&](caf::error& err) { result = ToStatus(err); },
          caf::after(timeout) >>
              [&] { result = ToStatus(caf::make_error(caf::sec::request_timeout)); });
    }
    {
      std::lock_guard<std::mutex> lock(link->mutex);
      link->waiters.erase(key);
    }
    // An actor whose reply may still come (timeout, lost connection) is not reused: the reply
    // would sit in its mailbox for good.
    if (replied) {
      std::lock_guard<std::mutex> lock(callers_mutex);
      idle_callers.push_back(std::move(caller));
    }
    return result;
  }

  /// Blocking call whose reply is only "ok".
  template <class... Ts>
  Status CallOk(Ts... args) {
    return Call<atom::ok>(std::move(args)...).status();
  }
};

// -- Client -------------------------------------------------------------------------------------

Client::Client() : status_(Status::InvalidArgument("client is not connected; use connect()")) {}

Client connect(const std::string& address, const ClientOptions& options) {
  Client client;
  auto connection = std::make_shared<Connection>();
  connection->options = options;
  connection->address = address;
  client.status_ = ParseHostPort(address, &connection->host, &connection->port);
  if (!client.status_.ok()) return client;
  client.status_ = connection->Start();
  // Keep the connection after a failed first attempt if later calls can retry it (the node was
  // unreachable); not when it could not even be set up.
  if (connection->system) client.connection_ = std::move(connection);
  return client;
}

const Status& Client::status() const {
  return status_;
}

const std::string& Client::address() const {
  static const std::string kNone;
  return connection_ ? connection_->address : kNone;
}

uint64_t Client::node_id() const {
  return connection_ ? connection_->node_id.load() : 0;
}

Database Client::open(std::string_view path) const {
  Database db;
  if (!connection_) {
    db.status_ = status_;
    return db;
  }
  Status s = NormalizeDatabasePath(path, &db.path_);
  if (s.ok()) s = connection_->Call<DatabaseStats>(atom::open_v, db.path_).status();
  db.status_ = s;
  if (s.ok()) db.connection_ = connection_;
  return db;
}

Result<std::vector<DatabaseInfo>> Client::databases() const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<DatabaseInfo>>(atom::databases_v);
}

Result<std::vector<ConfigInfo>> Client::configs() const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<ConfigInfo>>(atom::configs_v);
}

Result<std::string> Client::reload_configs() const {
  if (!connection_) return status_;
  return connection_->Call<std::string>(atom::reload_v);
}

Result<std::vector<MemberStatus>> Client::members() const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<MemberStatus>>(atom::members_v);
}

// -- Database -----------------------------------------------------------------------------------

Database::Database() = default;

Status Database::put(std::string_view key, std::string_view value) const {
  if (!connection_) return status_;
  return connection_->CallOk(atom::put_v, path_, std::string(key), std::string(value));
}

Result<std::string> Database::get(std::string_view key) const {
  if (!connection_) return status_;
  return connection_->Call<std::string>(atom::get_v, path_, std::string(key));
}

Status Database::erase(std::string_view key) const {
  if (!connection_) return status_;
  return connection_->CallOk(atom::erase_v, path_, std::string(key));
}

Result<ListPage> Database::list_page(const ListOptions& options) const {
  if (!connection_) return status_;
  return connection_->Call<ListPage>(atom::list_v, path_, options);
}

Result<std::vector<std::string>> Database::list(std::string_view prefix) const {
  std::vector<std::string> keys;
  ListOptions options;
  options.prefix = std::string(prefix);
  while (true) {
    Result<ListPage> page = list_page(options);
    if (!page.ok()) return page.status();
    keys.insert(keys.end(), std::make_move_iterator(page->keys.begin()),
                std::make_move_iterator(page->keys.end()));
    if (!page->has_more()) return keys;
    options.start_after = std::move(page->next_token);
  }
}

Batch Database::batch() const {
  return Batch(*this);
}

Status Database::write(const WriteBatch& batch) const {
  if (!connection_) return status_;
  return connection_->CallOk(atom::batch_v, path_, batch);
}

Result<DatabaseStats> Database::stats() const {
  if (!connection_) return status_;
  return connection_->Call<DatabaseStats>(atom::stats_v, path_);
}

Result<ReplicationStatus> Database::replication_status() const {
  if (!connection_) return status_;
  return connection_->Call<ReplicationStatus>(atom::status_v, path_);
}

void Database::close() {
  connection_.reset();
  status_ = Status::InvalidArgument("database handle " + Quote(path_) + " was closed");
}

namespace {

// A future that is already satisfied (for calls on an unusable handle).
template <class T>
std::future<T> Ready(T value) {
  std::promise<T> promise;
  promise.set_value(std::move(value));
  return promise.get_future();
}

}  // namespace

std::future<Status> Database::put_async(std::string key, std::string value) const {
  if (!connection_) return Ready(status_);
  return connection_->SendForStatus(atom::put_v, path_, std::move(key), std::move(value));
}

std::future<Result<std::string>> Database::get_async(std::string key) const {
  if (!connection_) return Ready(Result<std::string>(status_));
  return connection_->SendForResult<std::string>(atom::get_v, path_, std::move(key));
}

std::future<Status> Database::erase_async(std::string key) const {
  if (!connection_) return Ready(status_);
  return connection_->SendForStatus(atom::erase_v, path_, std::move(key));
}

std::future<Status> Database::write_async(WriteBatch batch) const {
  if (!connection_) return Ready(status_);
  return connection_->SendForStatus(atom::batch_v, path_, std::move(batch));
}

void Database::put_async(std::string key, std::string value,
                         std::function<void(Status)> done) const {
  if (!connection_) return done(status_);
  connection_->SendWithStatusCallback(std::move(done), atom::put_v, path_, std::move(key),
                                      std::move(value));
}

void Database::get_async(std::string key, std::function<void(Result<std::string>)> done) const {
  if (!connection_) return done(status_);
  connection_->SendWithCallback<std::string>(std::move(done), atom::get_v, path_, std::move(key));
}

void Database::erase_async(std::string key, std::function<void(Status)> done) const {
  if (!connection_) return done(status_);
  connection_->SendWithStatusCallback(std::move(done), atom::erase_v, path_, std::move(key));
}

void Database::write_async(WriteBatch batch, std::function<void(Status)> done) const {
  if (!connection_) return done(status_);
  connection_->SendWithStatusCallback(std::move(done), atom::batch_v, path_, std::move(batch));
}

void Database::list_page_async(ListOptions options,
                               std::function<void(Result<ListPage>)> done) const {
  if (!connection_) return done(status_);
  connection_->SendWithCallback<ListPage>(std::move(done), atom::list_v, path_, std::move(options));
}

}  // namespace kvmesh::client
