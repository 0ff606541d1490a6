#include "kvmesh/client.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "common/address.hpp"
#include "common/completion.hpp"
#include "common/database_backend.hpp"
#include "common/deadline.hpp"
#include "common/path.hpp"
#include "common/request_limits.hpp"
#include "messages/local_deadlines.hpp"
#include "messages/remote_exits.hpp"
#include "messages/system_config.hpp"
#include "messages/type_ids.hpp"
#include "security/tls.hpp"
#include "transport/client_port.hpp"
#include "transport/send_cork.hpp"

namespace kvmesh::client {
namespace {

/// The gateway for the requests of a path whose hash is `route` (Link::RouteOf): one of the
/// gateway's shards, or the gateway itself when it has none or for kNodeRoute.
constexpr size_t kNodeRoute = SIZE_MAX;
/// The route of the normalised path `path`: every request naming it goes to one shard, so one
/// client's requests to it keep their order.
size_t RouteOf(const std::string& path) {
  return std::hash<std::string>{}(path) % (kNodeRoute - 1);
}
const gateway_actor& GatewayFor(const gateway_actor& gateway,
                                const std::vector<gateway_actor>& shards, size_t route) {
  if (route == kNodeRoute || shards.empty()) return gateway;
  return shards[route % shards.size()];
}

struct connection_state {
  static inline const char* name = "kvmesh.client_connection";
  gateway_actor gateway;
  /// The gateway's shards (actors/client_gateway.hpp); empty: none.
  std::vector<gateway_actor> shards;
  std::string address;
  /// Deadline of every request.
  caf::timespan timeout{};
  /// The deadlines of the requests in flight (they carry no CAF timeout; see LocalDeadlines).
  std::shared_ptr<LocalDeadlines> deadlines = std::make_shared<LocalDeadlines>();
  /// Tells the Connection the gateway is gone, so the next call reconnects.
  std::function<void()> on_lost;
  /// Held while a commit sends the waiting groups: requests to many databases leave in one send
  /// (transport/send_cork.hpp).
  SendCork cork;
  /// Asynchronous puts (or gets) to one database that came one after another, waiting to go to
  /// the node as one message (TakePut, TakeGet): under load many share one message's cost on
  /// both sides.
  struct WaitingPuts {
    /// Gets (`keys`, `get_dones`) rather than puts (`puts`, `dones`).
    bool gets = false;
    std::string path;
    size_t route = 0;
    /// Plain puts only, in order.
    WriteBatch puts;
    std::vector<Completion<atom::ok>> dones;
    /// The keys of plain gets, in order.
    PackedKeys keys;
    std::vector<Completion<std::string>> get_dones;
    /// The first one's deadline: the earliest.
    Deadline deadline;
    size_t bytes = 0;
  };
  /// In the order they came; sent by the next `commit` to itself, before any other request, or
  /// when a message is full.
  std::vector<WaitingPuts> waiting;
  bool commit_sent = false;

  /// Normalised keys.
  using KeySet = std::unordered_multiset<std::string>;
  /// Whether a request writes one of a set of keys.
  using Writes = std::function<bool(const KeySet&)>;
  /// A request of a path held back (SendInOrder): sent once it may go.
  struct Held {
    Writes writes;
    std::function<void()> send;
  };
  /// Per path with messages of several gets in flight or requests held back: a reply to several
  /// gets may leave some out, which the client then sends alone, later than they were made; so
  /// while such a message is in flight, the path's later writes of its keys (which those gets
  /// must not see) wait, and every request made after one that waits waits too.
  struct PathOrder {
    size_t gets_in_flight = 0;
    /// The keys of those messages, normalised.
    KeySet keys;
    std::deque<Held> held;
  };
  std::unordered_map<std::string, PathOrder> orders;
};

using connection_pointer = caf::stateful_actor<connection_state>*;

}  // namespace

/// Work for the connection actor, from a caller's thread. Local only (never serialized).
using ConnectionJob = std::function<void(connection_pointer)>;

}  // namespace kvmesh::client

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvmesh::client::ConnectionJob)

namespace kvmesh::client {
namespace {

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
  /// The node's wall clock minus this process's steady clock, in nanoseconds, as measured at the
  /// handshake: requests state their deadlines in the node's clock (common/deadline.hpp).
  std::atomic<int64_t> node_clock_offset_ns{0};
  std::mutex mutex;
  gateway_actor gateway;              // guarded by mutex; valid while connected
  std::vector<gateway_actor> shards;  // guarded by mutex
  /// The connection to the node (guarded by mutex): a blocking call reads its reply from it
  /// itself when no other thread does (PortClient::ReadFor).
  std::shared_ptr<PortClient> port;
  uint64_t next_waiter = 0;
  std::unordered_map<uint64_t, Waiter> waiters;

  /// The deadline `budget` from now, in the node's clock.
  Deadline NodeDeadline(caf::timespan budget) const {
    const int64_t steady = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    return Deadline{steady + node_clock_offset_ns.load(std::memory_order_relaxed) +
                    std::chrono::duration_cast<std::chrono::nanoseconds>(budget).count()};
  }

  /// The connection is gone: the next call reconnects, and every blocking call in flight gets
  /// `why` as its reply now (CAF would let it wait for its timeout).
  void Lost(const Status& why) {
    std::unordered_map<uint64_t, Waiter> pending;
    {
      std::lock_guard<std::mutex> lock(mutex);
      connected = false;
      gateway = nullptr;
      shards.clear();
      port = nullptr;
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

/// Stands for the request's deadline among a data request's arguments: replaced by the deadline
/// in the node's clock when the request is sent (WithDeadline), so that it counts from then.
struct DeadlineHere {};

/// `arg` itself, or for DeadlineHere the deadline `budget` from now in the node's clock.
template <class T>
decltype(auto) WithDeadline(T&& arg, const Link& link, caf::timespan budget) {
  if constexpr (std::is_same_v<std::decay_t<T>, DeadlineHere>) {
    return link.NodeDeadline(budget);
  } else {
    return std::forward<T>(arg);
  }
}

/// Sends `puts`: one alone as the put it is, several as one message answered per put.
void SendPuts(connection_pointer self, connection_state::WaitingPuts puts) {
  auto& st = self->state;
  if (!st.gateway) {
    const Status lost = Status::Unavailable("lost the connection to kvmesh node " + st.address);
    for (auto& done : puts.dones) done(lost, atom::ok_v);
    return;
  }
  const gateway_actor& target = GatewayFor(st.gateway, st.shards, puts.route);
  if (puts.dones.size() == 1) {
    Completion<atom::ok> done = puts.dones.front();
    WriteOp& put = puts.puts.ops.front();
    RequestWithin(
        self, st.deadlines, st.timeout, target,
        [done](atom::ok) { done(Status::OK(), atom::ok_v); },
        [done](caf::error& err) { done(ToStatus(err), atom::ok_v); }, atom::put_v,
        std::move(puts.path), std::move(put.key), std::move(put.value), puts.deadline);
    return;
  }
  auto dones = std::make_shared<std::vector<Completion<atom::ok>>>(std::move(puts.dones));
  RequestWithin(
      self, st.deadlines, st.timeout, target,
      [dones](std::vector<caf::error>& errors) {
        for (size_t i = 0; i < dones->size(); ++i) {
          if (i >= errors.size()) {
            (*dones)[i](
                Status::Internal("the node answered " + std::to_string(errors.size()) + " of " +
                                 std::to_string(dones->size()) + " puts sent together"),
                atom::ok_v);
          } else {
            (*dones)[i](errors[i] ? ToStatus(errors[i]) : Status::OK(), atom::ok_v);
          }
        }
      },
      [dones](caf::error& err) {
        const Status s = ToStatus(err);
        for (auto& done : *dones) done(s, atom::ok_v);
      },
      atom::put_v, std::move(puts.path), std::move(puts.puts), puts.deadline);
}

/// `raw` normalised, or as it is if it is no valid key (then no write of it is applied).
std::string KeyOf(std::string_view raw) {
  std::string key;
  if (!NormalizeKey(raw, &key).ok()) key.assign(raw);
  return key;
}

/// The Writes of a request that writes no key.
bool WritesNothing(const connection_state::KeySet&) {
  return false;
}
/// The Writes of a request whose keys are not looked at (a batch): any.
bool WritesAny(const connection_state::KeySet&) {
  return true;
}

/// Runs `send`, which sends a request of `path` that writes the keys `writes` says, now, or
/// holds it back while it may not go yet (connection_state::PathOrder).
template <class Send>
void SendInOrder(connection_pointer self, const std::string& path, connection_state::Writes writes,
                 Send send) {
  auto& orders = self->state.orders;
  auto it = orders.empty() ? orders.end() : orders.find(path);
  if (it == orders.end() ||
      (it->second.held.empty() && (it->second.keys.empty() || !writes(it->second.keys)))) {
    send();
    return;
  }
  it->second.held.push_back({std::move(writes), std::function<void()>(std::move(send))});
}

/// A message of several gets of `path` came back (its left-out gets sent again already): the
/// requests held behind it that may go now go, in order.
void GetsAnswered(connection_pointer self, const std::string& path, const PackedKeys& packed) {
  auto& orders = self->state.orders;
  auto it = orders.find(path);
  if (it == orders.end()) return;
  // A reference stays valid while sends add entries of other paths (an unordered_map moves no
  // element); only this function removes one.
  connection_state::PathOrder& order = it->second;
  if (order.gets_in_flight > 0) --order.gets_in_flight;
  std::vector<std::string_view> keys;
  (void)packed.Unpack(kMaxGetsPerMessage, &keys);
  for (std::string_view key : keys) {
    auto found = order.keys.find(KeyOf(key));
    if (found != order.keys.end()) order.keys.erase(found);
  }
  if (order.gets_in_flight == 0) order.keys.clear();
  while (!order.held.empty() && (order.keys.empty() || !order.held.front().writes(order.keys))) {
    connection_state::Held held = std::move(order.held.front());
    order.held.pop_front();
    held.send();
  }
  if (order.gets_in_flight == 0 && order.held.empty()) orders.erase(path);
}

/// Sends one plain get of `key`, with its own deadline.
void SendGetAlone(connection_pointer self, size_t route, const std::string& path, std::string key,
                  Deadline deadline, Completion<std::string> done) {
  auto& st = self->state;
  if (!st.gateway) {
    done(Status::Unavailable("lost the connection to kvmesh node " + st.address), std::string());
    return;
  }
  RequestWithin(
      self, st.deadlines, st.timeout, GatewayFor(st.gateway, st.shards, route),
      [done](std::string& value) { done(Status::OK(), std::move(value)); },
      [done](caf::error& err) { done(ToStatus(err), std::string()); }, atom::get_v, path,
      std::move(key), deadline);
}

/// Sends `gets`: one alone as the get it is, several as one message answered per get. Those
/// the reply leaves out (GetManyReply) are sent again alone, each answered once.
void SendGets(connection_pointer self, connection_state::WaitingPuts gets) {
  auto& st = self->state;
  if (!st.gateway) {
    const Status lost = Status::Unavailable("lost the connection to kvmesh node " + st.address);
    for (auto& done : gets.get_dones) done(lost, std::string());
    return;
  }
  std::vector<std::string_view> keys;
  if (Status s = gets.keys.Unpack(kMaxGetsPerMessage, &keys); !s.ok()) {
    for (auto& done : gets.get_dones) done(s, std::string());  // not made here: TakeGet bounds it
    return;
  }
  if (keys.size() == 1) {
    SendGetAlone(self, gets.route, gets.path, std::string(keys.front()), gets.deadline,
                 gets.get_dones.front());
    return;
  }
  {
    connection_state::PathOrder& order = st.orders[gets.path];
    ++order.gets_in_flight;
    for (std::string_view key : keys) order.keys.insert(KeyOf(key));
  }
  auto dones = std::make_shared<std::vector<Completion<std::string>>>(std::move(gets.get_dones));
  auto packed = std::make_shared<const PackedKeys>(std::move(gets.keys));
  const std::string path = gets.path;
  const size_t route = gets.route;
  const Deadline deadline = gets.deadline;
  RequestWithin(
      self, st.deadlines, st.timeout, GatewayFor(st.gateway, st.shards, route),
      [self, dones, packed, path, route, deadline](GetManyReply& reply) {
        const size_t answered = reply.errors.size();
        if (answered > dones->size() || reply.values.size() != answered) {
          const Status bad =
              Status::Internal("the node answered " + std::to_string(answered) + " of " +
                               std::to_string(dones->size()) + " gets sent together, with " +
                               std::to_string(reply.values.size()) + " values");
          for (auto& done : *dones) done(bad, std::string());
        } else {
          for (size_t i = 0; i < answered; ++i) {
            (*dones)[i](reply.errors[i] ? ToStatus(reply.errors[i]) : Status::OK(),
                        std::move(reply.values[i]));
          }
          std::vector<std::string_view> keys;
          if (answered < dones->size()) (void)packed->Unpack(kMaxGetsPerMessage, &keys);
          for (size_t i = answered; i < dones->size() && i < keys.size(); ++i) {
            SendGetAlone(self, route, path, std::string(keys[i]), deadline, (*dones)[i]);
          }
        }
        GetsAnswered(self, path, *packed);
      },
      [self, dones, packed, path](caf::error& err) {
        const Status s = ToStatus(err);
        for (auto& done : *dones) done(s, std::string());
        GetsAnswered(self, path, *packed);
      },
      atom::get_v, path, *packed, deadline);
}

/// Sends every waiting put and get, in order: before any other request, so requests keep their
/// order.
void SendWaitingPuts(connection_pointer self) {
  std::vector<connection_state::WaitingPuts> waiting;
  waiting.swap(self->state.waiting);
  for (auto& w : waiting) {
    const std::string path = w.path;
    if (w.gets) {
      SendInOrder(self, path, WritesNothing,
                  [self, w = std::move(w)]() mutable { SendGets(self, std::move(w)); });
    } else {
      auto puts = std::make_shared<connection_state::WaitingPuts>(std::move(w));
      SendInOrder(
          self, path,
          [puts](const connection_state::KeySet& keys) {
            for (const WriteOp& op : puts->puts.ops) {
              if (keys.count(KeyOf(op.key)) > 0) return true;
            }
            return false;
          },
          [self, puts] { SendPuts(self, std::move(*puts)); });
    }
  }
}

/// The group of waiting requests (puts, or gets) to path that one more of `bytes` joins: the last
/// one waiting, if it is of that kind and path, has room (kMaxPutsPerMessage puts or
/// kMaxGetsPerMessage gets, kMaxPutsMessageBytes) and its deadline lies within
/// kCoalescedDeadlineSpreadNs; else a new group (the last one, if of that path, is sent first: it
/// is full or too late to share its deadline). Makes sure a commit is on its way.
connection_state::WaitingPuts& JoinWaiting(connection_pointer self, bool gets, size_t route,
                                           std::string path, Deadline deadline, size_t bytes) {
  auto& st = self->state;
  const bool same_path =
      !st.waiting.empty() && st.waiting.back().gets == gets && st.waiting.back().path == path;
  const size_t count =
      same_path ? (gets ? st.waiting.back().get_dones.size() : st.waiting.back().dones.size()) : 0;
  const bool joins =
      same_path && count < (gets ? kMaxGetsPerMessage : kMaxPutsPerMessage) &&
      st.waiting.back().bytes + bytes <= kMaxPutsMessageBytes &&
      deadline.wall_ns - st.waiting.back().deadline.wall_ns <= kCoalescedDeadlineSpreadNs;
  if (!joins) {
    if (same_path) SendWaitingPuts(self);
    connection_state::WaitingPuts group;
    group.gets = gets;
    group.path = std::move(path);
    group.route = route;
    group.deadline = deadline;
    st.waiting.push_back(std::move(group));
  }
  auto& group = st.waiting.back();
  group.bytes += bytes;
  if (!st.commit_sent) {
    st.commit_sent = true;
    self->send(self, atom::commit_v);
  }
  return group;
}

/// Takes an asynchronous put (its deadline already in the node's clock): it waits to go with
/// the puts to the same database that follow it in the actor's mailbox (a `commit` to itself
/// goes behind them), unless the message would hold more than kMaxPutsPerMessage puts or
/// kMaxPutsMessageBytes, or their deadlines would lie more than kCoalescedDeadlineSpreadNs apart.
void TakePut(connection_pointer self, size_t route, std::string path, std::string key,
             std::string value, Deadline deadline, Completion<atom::ok> done) {
  const size_t bytes = key.size() + value.size();
  auto& puts = JoinWaiting(self, /*gets=*/false, route, std::move(path), deadline, bytes);
  puts.puts.Put(std::move(key), std::move(value));
  puts.dones.push_back(std::move(done));
}

/// Takes an asynchronous plain get (its deadline already in the node's clock), as TakePut takes
/// a put: it waits to go with the gets of the same database that follow it, up to
/// kMaxGetsPerMessage keys and kMaxPutsMessageBytes of them, deadlines within
/// kCoalescedDeadlineSpreadNs.
void TakeGet(connection_pointer self, size_t route, std::string path, std::string key,
             Deadline deadline, Completion<std::string> done) {
  const size_t bytes = key.size() + 4;  // its length prefix in PackedKeys
  auto& gets = JoinWaiting(self, /*gets=*/true, route, std::move(path), deadline, bytes);
  gets.keys.Add(key);
  gets.get_dones.push_back(std::move(done));
}

// The connection actor: sends every asynchronous request to the gateway and fails all requests
// in flight the moment the gateway's node is lost (CAF would otherwise let them run to their
// timeout).
caf::behavior ConnectionActor(connection_pointer self, std::string address,
                              std::shared_ptr<Link> link, caf::timespan request_timeout) {
  self->state.address = std::move(address);
  self->state.timeout = request_timeout;
  self->state.deadlines->set_schedule_check(
      [self](caf::timespan period) { self->delayed_send(self, period, atom::tick_v); });
  self->state.on_lost = [self, link] {
    link->Lost(Status::Unavailable("lost the connection to kvmesh node " + self->state.address));
  };
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (!st.gateway || msg.source != st.gateway.address()) return;
    st.gateway = nullptr;
    st.on_lost();
    st.deadlines->EndAll(
        ToError(Status::Unavailable("lost the connection to kvmesh node " + st.address)));
    // Whatever is still held back fails now (no gateway), in order.
    std::vector<std::string> paths;
    for (auto& [path, order] : st.orders) paths.push_back(path);
    for (auto& path : paths) {
      auto it = st.orders.find(path);
      if (it == st.orders.end()) continue;
      it->second.gets_in_flight = 1;
      GetsAnswered(self, path, PackedKeys{});
    }
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // No gateway first: ending a grouped get releases the writes held behind it, which must
    // fail here with the rest, not be sent to the node by an actor about to quit.
    self->state.gateway = nullptr;
    self->state.deadlines->EndAll(
        ToError(Status::Unavailable("the client was closed before the request completed")));
    self->quit(msg.reason);
  });
  return {
      [=](ConnectionJob& job) { job(self); },
      [=](atom::tick) { self->state.deadlines->ExpireDue(); },
      [=](atom::commit) {
        auto& st = self->state;
        st.commit_sent = false;
        if (st.waiting.size() < 2) {  // one send anyway
          SendWaitingPuts(self);
          return;
        }
        {
          SendCork::Hold hold(st.cork);
          SendWaitingPuts(self);
        }
        st.cork.Flush();
      },
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
  /// TLS for the connection (ClientOptions::tls); no directory: a client looks nobody up.
  TransportSecurity security;
  /// The connection to the node's client port (the latest; under connect_mutex).
  std::shared_ptr<PortClient> transport;

  /// Blocking actors for Call, reused: each new actor that talks to the node makes both sides
  /// set up (and later tear down) a proxy for it, which costs more than the call.
  std::mutex callers_mutex;
  std::vector<std::unique_ptr<caf::scoped_actor>> idle_callers;

  ~Connection() {
    if (system) {
      idle_callers.clear();
      StopLocally(*system, actor, caf::exit_reason::user_shutdown);
      actor = nullptr;
      // Its proxies are the system's: they go (killed) before it. (A blocking call still
      // holding it through the link finds it closed.)
      if (transport) transport->Close();
      transport.reset();
      system->await_all_actors_done();
      system.reset();
    }
  }

  /// Opens a new connection to the node's client port (TLS when configured; see
  /// transport/client_port.hpp) and returns its gateway. The connection before, if any, is
  /// closed. Under connect_mutex.
  Result<gateway_actor> ConnectGateway(caf::timespan deadline) {
    if (transport) transport->Close();
    PortConnectOptions connect;
    connect.security = security;
    // Replies are bounded like requests: a value plus its key and framing.
    connect.max_message_bytes = 2 * kMaxRequestBytes;
    connect.connect_timeout = deadline;
    connect.peer_timeout = std::chrono::duration_cast<caf::timespan>(options.peer_timeout);
    connect.busy_poll = std::chrono::duration_cast<caf::timespan>(options.busy_poll);
    caf::strong_actor_ptr gateway;
    std::unique_ptr<PortClient> fresh;
    Status s = PortClient::Connect(*system, host, port, connect, &fresh, &gateway);
    if (!s.ok()) return s;
    transport = std::move(fresh);
    return caf::actor_cast<gateway_actor>(std::move(gateway));
  }

  Status Start() {
    if (Status s = ValidateBusyPoll(options.busy_poll); !s.ok()) return s;
    if (options.tls.enabled()) {
      if (Status s = security::TlsContext::Load(options.tls, &security.tls); !s.ok()) return s;
    }
    cfg = std::make_unique<caf::actor_system_config>();
    ActorSystemSettings settings;
    settings.scheduler_policy = options.scheduler_policy;
    // No CAF network layer: the connection is kvmesh's own (transport/client_port.hpp).
    if (Status s = ConfigureActorSystem(settings, cfg.get()); !s.ok()) {
      cfg.reset();
      return s;
    }
    system = std::make_unique<caf::actor_system>(*cfg);
    timeout = std::chrono::duration_cast<caf::timespan>(options.request_timeout);
    // Filtered: the node (or whatever answers at `address`) learns this actor's handle.
    actor = SpawnNetworkFacing(*system, ConnectionActor, address, link, timeout);
    return EnsureConnected();
  }

  /// Connects (again) if needed: finds the gateway, checks the protocol version, hands the
  /// gateway to the connection actor.
  Status EnsureConnected() {
    if (link->connected) return Status::OK();
    // A callback run while the connection actor holds its cork may reconnect from its thread:
    // the handshake must not wait for that cork's flush.
    SendCork::Suspend not_held;
    std::lock_guard<std::mutex> lock(connect_mutex);
    if (link->connected) return Status::OK();
    const auto handshake_timeout =
        std::min(timeout, std::chrono::duration_cast<caf::timespan>(options.peer_timeout));
    Result<gateway_actor> gateway = ConnectGateway(handshake_timeout);
    if (!gateway.ok()) {
      if (gateway.status().code() == Code::kInvalidArgument) {
        return Status::InvalidArgument("the service at " + address +
                                       " is not a kvmesh node of this client's protocol version (" +
                                       gateway.status().message() + ")");
      }
      return Status::Unavailable("cannot reach kvmesh node at " + address + ": " +
                                 gateway.status().message());
    }
    // The handshake is bounded by the peer timeout, not the request timeout: right after a node
    // comes back, a first attempt can go over a route CAF has not dropped yet, and the caller
    // should then get a prompt failure and retry, not wait for a long request deadline.
    caf::scoped_actor self{*system};
    Status result;
    self->request(*gateway, handshake_timeout, atom::hello_v, kClientProtocolVersion)
        .receive([&](uint32_t, uint64_t id) { node_id = id; },
                 [&](caf::error& err) { result = ToStatus(err); });
    // Nothing was asked of the node yet: a handshake without an answer means the node is not
    // serving (e.g. its gateway is gone), which the caller may retry, not an indeterminate write.
    if (result.code() == Code::kTimeout) {
      return Status::Unavailable("kvmesh node at " + address +
                                 " did not answer the client handshake: " + result.message());
    }
    if (!result.ok()) return result;
    // The node's clock, taken as if read when its answer arrived (it was read earlier): deadlines
    // mapped with it are never later in the node's clock than here.
    self->request(*gateway, handshake_timeout, atom::clock_v)
        .receive(
            [&](int64_t node_now) {
              const int64_t steady = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::steady_clock::now().time_since_epoch())
                                         .count();
              link->node_clock_offset_ns = node_now - steady;
            },
            [&](caf::error& err) { result = ToStatus(err); });
    if (!result.ok()) return result;
    std::vector<gateway_actor> shards;
    self->request(*gateway, handshake_timeout, atom::gateways_v)
        .receive(
            [&](std::vector<caf::actor>& actors) {
              for (caf::actor& a : actors) {
                if (a) shards.push_back(caf::actor_cast<gateway_actor>(std::move(a)));
              }
            },
            [&](caf::error& err) { result = ToStatus(err); });
    if (!result.ok()) return result;
    // Shards die only with their node's gateway, which the connection actor watches.
    caf::anon_send(actor, ConnectionJob{[gateway = *gateway, shards](connection_pointer self) {
                     self->state.gateway = gateway;
                     self->state.shards = shards;
                     self->monitor(gateway);
                   }});
    {
      std::lock_guard<std::mutex> guard(link->mutex);
      link->gateway = *gateway;
      link->shards = std::move(shards);
      link->port = transport;
      link->connected = true;
    }
    return Status::OK();
  }

  /// Sends `args...` to the gateway for `route` (GatewayFor); `done` gets the reply or the
  /// error, exactly once.
  /// `path` is the database's, `writes` says which keys it writes (see SendInOrder).
  template <class Reply, class... Ts>
  void Send(size_t route, const std::string& path, connection_state::Writes writes,
            Completion<Reply> done, Ts... args) {
    Status s = EnsureConnected();
    if (!s.ok()) {
      done(std::move(s), Reply{});
      return;
    }
    ConnectionJob job = [done, link = link, route, path, writes, args...](connection_pointer self) {
      SendWaitingPuts(self);  // sent before, so they go first
      SendInOrder(self, path, writes, [self, done, link, route, args...] {
        auto& st = self->state;
        if (!st.gateway) {
          done(Status::Unavailable("lost the connection to kvmesh node " + st.address), Reply{});
          return;
        }
        RequestWithin(
            self, st.deadlines, st.timeout, GatewayFor(st.gateway, st.shards, route),
            [done](Reply& reply) { done(Status::OK(), std::move(reply)); },
            [done](caf::error& err) { done(ToStatus(err), Reply{}); },
            WithDeadline(args, *link, st.timeout)...);
      });
    };
    caf::anon_send(actor, std::move(job));
  }

  /// An asynchronous put: it may travel with the puts to the same database that follow it
  /// (TakePut); `done` gets its own outcome, exactly once.
  void SendPut(size_t route, std::string path, std::string key, std::string value,
               Completion<atom::ok> done) {
    Status s = EnsureConnected();
    if (!s.ok()) {
      done(std::move(s), atom::ok_v);
      return;
    }
    ConnectionJob job = [done, link = link, route, path = std::move(path), key = std::move(key),
                         value = std::move(value)](connection_pointer self) mutable {
      TakePut(self, route, std::move(path), std::move(key), std::move(value),
              link->NodeDeadline(self->state.timeout), std::move(done));
    };
    caf::anon_send(actor, std::move(job));
  }

  /// An asynchronous plain get: it may travel with the gets of the same database that follow it
  /// (TakeGet); `done` gets its own answer, exactly once.
  void SendGet(size_t route, std::string path, std::string key, Completion<std::string> done) {
    Status s = EnsureConnected();
    if (!s.ok()) {
      done(std::move(s), std::string());
      return;
    }
    ConnectionJob job = [done, link = link, route, path = std::move(path),
                         key = std::move(key)](connection_pointer self) mutable {
      TakeGet(self, route, std::move(path), std::move(key), link->NodeDeadline(self->state.timeout),
              std::move(done));
    };
    caf::anon_send(actor, std::move(job));
  }

  /// Blocking call returning the reply as a Result. The calling thread sends the request and
  /// waits for the reply itself (a scoped actor), so a round trip costs no hop through the
  /// connection actor and no wake-up of CAF's timer thread (the deadline is the receive's own).
  template <class Reply, class... Ts>
  Result<Reply> Call(Ts... args) {
    return CallVia<Reply>(kNodeRoute, std::move(args)...);
  }

  /// Call, sent to the gateway for `route` (GatewayFor).
  template <class Reply, class... Ts>
  Result<Reply> CallVia(size_t route, Ts... args) {
    Status s = EnsureConnected();
    if (!s.ok()) return s;
    // Sent at once, also from a callback run while the connection actor holds its cork (the
    // request would otherwise wait for that cork's flush, behind this very call).
    SendCork::Suspend not_held;
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
    std::shared_ptr<PortClient> port;
    uint64_t key = 0;
    {
      std::lock_guard<std::mutex> lock(link->mutex);
      if (!link->connected || !link->gateway) {
        return Status::Unavailable("lost the connection to kvmesh node " + address);
      }
      gateway = GatewayFor(link->gateway, link->shards, route);
      port = link->port;
      key = link->next_waiter++;
      Link::Waiter waiter;
      waiter.actor = caf::actor_cast<caf::strong_actor_ptr>(self);
      link->waiters.emplace(key, std::move(waiter));
    }
    // Before the request: a reply read by another thread before this one looks is known.
    if (port) port->Expect(self->id());
    // No CAF timeout: the receive below bounds the wait, and a late reply finds the scoped actor
    // gone and is dropped.
    auto handle =
        self->request(gateway, caf::infinite, WithDeadline(std::move(args), *link, timeout)...);
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
      // This thread reads the reply off the connection itself when no other thread reads it:
      // no wake-up of the reader thread, and none from it.
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      if (port) port->ReadFor(self->id(), deadline);
      caf::blocking_actor::accept_one_cond rc;
      self->varargs_receive(
          rc, handle.id(),
          [&](Reply& reply) {
            result = std::move(reply);
            replied = true;
          },
          [&](caf::error& err) { result = ToStatus(err); },
          caf::after(std::max(caf::timespan{0}, deadline - std::chrono::steady_clock::now())) >>
              [&] { result = ToStatus(caf::make_error(caf::sec::request_timeout)); });
    }
    if (port) port->DoneWaiting(self->id());
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

  /// Blocking call to the gateway for `route` whose reply is only "ok".
  template <class... Ts>
  Status CallOkVia(size_t route, Ts... args) {
    return CallVia<atom::ok>(route, std::move(args)...).status();
  }
};

// -- NetworkDatabase ---------------------------------------------------------------------------

namespace {

/// The backend of a handle from Client::open: every request names the database path and goes to
/// the node's gateway over the connection. Blocking calls wait on the caller's thread (see
/// Connection::Call); asynchronous ones go through the connection actor, which keeps them in
/// order.
class NetworkDatabase final : public DatabaseBackend {
 public:
  NetworkDatabase(std::shared_ptr<Connection> connection, std::string path)
      : connection_(std::move(connection)), path_(std::move(path)), route_(RouteOf(path_)) {}

  // Puts and batches too large for any node are refused here, before they are sent: a node would
  // close the connection on reading the message's size (kMaxRequestBytes), failing every request
  // on it with a vague "lost the connection".
  void PutAsync(std::string key, std::string value, StatusCallback done) override {
    if (Status s = CheckValueFitsRequest(key, value.size()); !s.ok()) {
      done(std::move(s));
      return;
    }
    connection_->SendPut(route_, path_, std::move(key), std::move(value),
                         StatusCompletion<atom::ok>(std::move(done)));
  }
  void GetAsync(std::string key, ResultCallback<std::string> done) override {
    connection_->SendGet(route_, path_, std::move(key),
                         ResultCompletion<std::string>(std::move(done)));
  }
  void EraseAsync(std::string key, StatusCallback done) override {
    connection_state::Writes writes = [erased = KeyOf(key)](const connection_state::KeySet& keys) {
      return keys.count(erased) > 0;
    };
    connection_->Send<atom::ok>(route_, path_, std::move(writes),
                                StatusCompletion<atom::ok>(std::move(done)), atom::erase_v, path_,
                                std::move(key), DeadlineHere{});
  }
  void WriteAsync(WriteBatch batch, StatusCallback done) override {
    if (Status s = CheckBatchLimits(batch); !s.ok()) {
      done(std::move(s));
      return;
    }
    connection_->Send<atom::ok>(route_, path_, WritesAny,
                                StatusCompletion<atom::ok>(std::move(done)), atom::batch_v, path_,
                                std::move(batch), DeadlineHere{});
  }
  void ListAsync(ListOptions options, ResultCallback<ListPage> done) override {
    connection_->Send<ListPage>(route_, path_, WritesNothing,
                                ResultCompletion<ListPage>(std::move(done)), atom::list_v, path_,
                                std::move(options), DeadlineHere{});
  }
  void StatsAsync(ResultCallback<DatabaseStats> done) override {
    connection_->Send<DatabaseStats>(route_, path_, WritesNothing,
                                     ResultCompletion<DatabaseStats>(std::move(done)),
                                     atom::stats_v, path_, DeadlineHere{});
  }
  void ReplicationAsync(ResultCallback<ReplicationStatus> done) override {
    connection_->Send<ReplicationStatus>(route_, path_, WritesNothing,
                                         ResultCompletion<ReplicationStatus>(std::move(done)),
                                         atom::status_v, path_, DeadlineHere{});
  }

  void WatchAsync(WatchRequest request, ResultCallback<WatchUpdate> done) override {
    connection_->Send<WatchUpdate>(route_, path_, WritesNothing,
                                   ResultCompletion<WatchUpdate>(std::move(done)), atom::watch_v,
                                   path_, std::move(request), DeadlineHere{});
  }

  void ReadAsync(ReadRequest request, ResultCallback<VersionedValue> done) override {
    connection_->Send<VersionedValue>(route_, path_, WritesNothing,
                                      ResultCompletion<VersionedValue>(std::move(done)),
                                      atom::get_v, path_, std::move(request), DeadlineHere{});
  }
  void SessionWriteAsync(WriteBatch batch, ResultCallback<std::string> done) override {
    if (Status s = CheckBatchLimits(batch); !s.ok()) {
      done(std::move(s));
      return;
    }
    connection_->Send<std::string>(route_, path_, WritesAny,
                                   ResultCompletion<std::string>(std::move(done)), atom::batch_v,
                                   path_, std::move(batch), atom::session_v, DeadlineHere{});
  }
  Result<VersionedValue> Read(const ReadRequest& request) override {
    return connection_->CallVia<VersionedValue>(route_, atom::get_v, path_, request,
                                                DeadlineHere{});
  }
  Result<std::string> SessionWrite(const WriteBatch& batch) override {
    if (Status s = CheckBatchLimits(batch); !s.ok()) return s;
    return connection_->CallVia<std::string>(route_, atom::batch_v, path_, batch, atom::session_v,
                                             DeadlineHere{});
  }

  Status Put(std::string_view key, std::string_view value) override {
    if (Status s = CheckValueFitsRequest(key, value.size()); !s.ok()) return s;
    return connection_->CallOkVia(route_, atom::put_v, path_, std::string(key), std::string(value),
                                  DeadlineHere{});
  }
  Result<std::string> Get(std::string_view key) override {
    return connection_->CallVia<std::string>(route_, atom::get_v, path_, std::string(key),
                                             DeadlineHere{});
  }
  Status Erase(std::string_view key) override {
    return connection_->CallOkVia(route_, atom::erase_v, path_, std::string(key), DeadlineHere{});
  }
  Status Write(const WriteBatch& batch) override {
    if (Status s = CheckBatchLimits(batch); !s.ok()) return s;
    return connection_->CallOkVia(route_, atom::batch_v, path_, batch, DeadlineHere{});
  }
  Status Write(WriteBatch&& batch) override {
    if (Status s = CheckBatchLimits(batch); !s.ok()) return s;
    return connection_->CallOkVia(route_, atom::batch_v, path_, std::move(batch), DeadlineHere{});
  }
  Result<ListPage> List(const ListOptions& options) override {
    return connection_->CallVia<ListPage>(route_, atom::list_v, path_, options, DeadlineHere{});
  }
  Result<DatabaseStats> Stats() override {
    return connection_->CallVia<DatabaseStats>(route_, atom::stats_v, path_, DeadlineHere{});
  }
  Result<ReplicationStatus> Replication() override {
    return connection_->CallVia<ReplicationStatus>(route_, atom::status_v, path_, DeadlineHere{});
  }

 protected:
  // Every blocking call is overridden (Connection::Call bounds its own wait); this bounds nothing.
  std::chrono::nanoseconds MaxWait() const override {
    return connection_->timeout + std::chrono::seconds(5);
  }

 private:
  std::shared_ptr<Connection> connection_;
  std::string path_;
  /// Which gateway shard takes this path's requests (GatewayFor).
  size_t route_;
};

}  // namespace

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
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (s.ok() && !connection_) s = status_;
  if (s.ok()) {
    s = connection_
            ->CallVia<DatabaseStats>(RouteOf(normalized), atom::open_v, normalized, DeadlineHere{})
            .status();
  }
  if (!s.ok()) return DatabaseBackend::MakeUnusable(std::move(s), std::move(normalized));
  return DatabaseBackend::MakeHandle(std::make_shared<NetworkDatabase>(connection_, normalized),
                                     normalized);
}

Result<std::vector<DatabaseInfo>> Client::databases() const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<DatabaseInfo>>(atom::databases_v);
}

Result<InstancePage> Client::instances(std::string_view config_id,
                                       const InstanceOptions& options) const {
  if (!connection_) return status_;
  return connection_->Call<InstancePage>(atom::instances_v, std::string(config_id), options);
}

Status Client::drop(std::string_view path) const {
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (!s.ok()) return s;
  if (!connection_) return status_;
  return connection_->CallOkVia(RouteOf(normalized), atom::drop_v, normalized, DeadlineHere{});
}

Result<std::string> Client::backup(std::string_view path, const std::string& dir) const {
  if (!connection_) return status_;
  if (path.empty()) return connection_->Call<std::string>(atom::backup_v, dir);
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (!s.ok()) return s;
  return connection_->CallVia<std::string>(RouteOf(normalized), atom::backup_v, normalized, dir,
                                           DeadlineHere{});
}

Result<std::string> Client::restore(std::string_view path, const std::string& dir) const {
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (!s.ok()) return s;
  if (!connection_) return status_;
  return connection_->CallVia<std::string>(RouteOf(normalized), atom::restore_v, normalized, dir,
                                           DeadlineHere{});
}

Result<std::string> Client::drain_node(uint64_t node_id) const {
  if (!connection_) return status_;
  return connection_->Call<std::string>(atom::drain_v, atom::put_v, node_id);
}

Result<std::string> Client::undrain_node(uint64_t node_id) const {
  if (!connection_) return status_;
  return connection_->Call<std::string>(atom::drain_v, atom::erase_v, node_id);
}

Result<std::vector<ConfigInfo>> Client::configs() const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<ConfigInfo>>(atom::configs_v);
}

Result<std::string> Client::reload_configs() const {
  if (!connection_) return status_;
  return connection_->Call<std::string>(atom::reload_v);
}

Result<ConfigApplyResult> Client::apply_configs(std::string_view yaml,
                                                const ConfigApplyOptions& options) const {
  if (!connection_) return status_;
  return connection_->Call<ConfigApplyResult>(atom::configs_v, atom::put_v, std::string(yaml),
                                              options);
}

Result<ConfigApplyResult> Client::delete_config(std::string_view id) const {
  if (!connection_) return status_;
  return connection_->Call<ConfigApplyResult>(atom::configs_v, atom::erase_v, std::string(id));
}

Result<std::vector<ConfigHistoryEntry>> Client::config_history(std::string_view id) const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<ConfigHistoryEntry>>(atom::configs_v, atom::get_v,
                                                            std::string(id));
}

Result<std::vector<MemberStatus>> Client::members() const {
  if (!connection_) return status_;
  return connection_->Call<std::vector<MemberStatus>>(atom::members_v);
}

}  // namespace kvmesh::client
