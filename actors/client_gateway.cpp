#include "actors/client_gateway.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "common/path.hpp"

#include <algorithm>
#include <optional>

namespace kvmesh {
namespace {

using security::Right;
using gateway_pointer = gateway_actor::stateful_pointer<client_gateway_state>;

/// Remembers `actor` as the one serving `path` and watches it, so the entry leaves with it.
void Track(gateway_pointer self, const std::string& path, const database_client_actor& actor) {
  auto& st = self->state;
  if (!actor || st.path_of.count(actor.address()) > 0) return;
  self->monitor(actor);
  st.path_of[actor.address()] = path;
}

/// The route of a normalised path, created on first use.
client_gateway_state::Entry& EntryFor(gateway_pointer self, const std::string& path) {
  auto& st = self->state;
  auto it = st.routes.find(path);
  if (it != st.routes.end()) return it->second;
  auto route = std::make_shared<DatabaseRoute>();
  route->supervisor = st.supervisor;
  route->path = path;
  route->timeout = st.timeout;
  // Every client request has its client's deadline; a gateway deadline per request would only
  // cost a timer-thread wake-up and a timer entry kept for the whole timeout (see DatabaseRoute).
  route->no_local_deadline = true;
  route->local_deadlines = st.deadlines;  // for its re-opens
  route->on_reopen = [self, path](const database_client_actor& fresh) { Track(self, path, fresh); };
  route->remote_requests = st.remote_requests;
  route->placement = st.placement;
  auto ordered = std::make_shared<OrderedRoute>(std::move(route), database_client_actor{});
  return st.routes.emplace(path, client_gateway_state::Entry{std::move(ordered)}).first->second;
}

/// The sender of the current message as access control sees it.
struct Caller {
  /// The ACL to check it against; null when nothing is checked for this sender (TLS off, no
  /// ACL, or a node certificate).
  std::shared_ptr<const security::Acl> acl;
  /// Its certificate's name; empty without TLS.
  std::string principal;

  /// Who to record as having asked (config histories): the principal, or "anonymous".
  std::string Who() const { return principal.empty() ? "anonymous" : principal; }
};

/// Who sent the current message. Fails (kPermissionDenied) when TLS is on and the sender has no
/// verified identity.
Status Identify(gateway_pointer self, Caller* out) {
  auto& st = self->state;
  const auto& directory = st.security.directory;
  if (!directory || !directory->enabled()) return Status::OK();
  // An anonymous message has no sender; a remote one names its node, bound by the transport.
  const caf::strong_actor_ptr& sender = self->current_sender();
  std::optional<security::PeerIdentity> identity;
  if (sender) {
    // The generation is read before asking, so an answer cached under it is never older than
    // it; any change since moves it and empties the cache.
    const uint64_t generation = directory->generation();
    if (generation != st.identities_generation || st.identities.size() >= 4096) {
      st.identities.clear();
      st.identities_generation = generation;
    }
    auto cached = st.identities.find(sender->node());
    if (cached == st.identities.end()) {
      cached = st.identities.emplace(sender->node(), directory->Lookup(sender->node())).first;
    }
    identity = cached->second;
  }
  if (!identity) {
    return Status::PermissionDenied(
        "unauthenticated: the request did not come over a connection with a verified "
        "certificate; nothing was done");
  }
  out->principal = identity->name;
  // Node certificates are the cluster's own machinery (security/identity.hpp).
  if (identity->role == security::PeerRole::kNode) return Status::OK();
  const auto& store = st.security.acl;
  if (!store || !store->configured()) return Status::OK();
  // A reload bumps the generation: the next request sees the new ACL.
  const uint64_t generation = store->generation();
  if (generation != st.acl_generation) {
    st.acl = store->current();
    st.acl_generation = generation;
  }
  if (!st.acl) {
    // Node::Start loads the ACL before the gateway exists; fail closed all the same.
    return Status::PermissionDenied("principal " + Quote(identity->name) +
                                    " may not do anything: no ACL is loaded yet");
  }
  out->acl = st.acl;
  return Status::OK();
}

/// OK if the sender of the current message holds `right` on the normalised path `database`, or,
/// with `database` empty, may do the node-wide `operation` (security/acl.hpp). `caller` (may be
/// null) gets who sent it.
Status Authorize(gateway_pointer self, security::Right right, std::string_view database,
                 std::string_view operation = {}, Caller* caller = nullptr) {
  Caller local;
  Caller& c = caller != nullptr ? *caller : local;
  Status s = Identify(self, &c);
  if (!s.ok() || !c.acl) return s;
  s = c.acl->Check(c.principal, right, database, operation);
  if (!s.ok()) spdlog::debug("client gateway denied a request: {}", s.message());
  return s;
}

/// OK if the sender of the current message is authenticated and, with an ACL, has any grant;
/// fills `*caller` for filtering listings.
Status AuthorizeKnown(gateway_pointer self, Caller* caller) {
  Status s = Identify(self, caller);
  if (!s.ok() || !caller->acl) return s;
  return caller->acl->CheckKnown(caller->principal);
}

/// Counts a request once, when answered (README "Metrics"), with its latency from now; `op`
/// empty: not counted (an open).
std::function<void(Code)> Recorder(gateway_pointer self, std::optional<metrics::Op> op) {
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<metrics::RequestMetrics> requests = self->state.requests;
  return [requests, op, start](Code code) {
    if (requests && op) requests->Record(*op, code, std::chrono::steady_clock::now() - start);
  };
}

/// The checks a request for the database at `raw_path` passes before it is routed: its
/// deadline, its path (normalised into `*path`) and the sender's `right` on it. Runs before any
/// response promise is made, since making one takes the request's sender. Nothing is created or
/// sent for a refused request: a denied request changes nothing.
Status Admit(gateway_pointer self, security::Right right, const std::string& raw_path,
             Deadline deadline, std::string* path) {
  // A request that waited past its deadline (its client gave up on it) goes no further.
  if (deadline.Passed()) {
    return Status::Timeout(DeadlinePassedMessage("the node's gateway forwarded it"));
  }
  if (self->state.routes.count(raw_path) > 0) {
    *path = raw_path;
  } else {
    Status s = NormalizeDatabasePath(raw_path, path);
    if (!s.ok()) return Status(s.code(), s.message() + ": " + Quote(raw_path));
  }
  return Authorize(self, right, *path);
}

/// Hands an admitted request for the database at the normalised `path` to its route with
/// `send(route, done)`; `answer` gets what `done` gets, and `record` counts it.
template <class Reply, class Send>
void Dispatch(gateway_pointer self, const std::string& path, std::function<void(Code)> record,
              std::function<void(caf::expected<Reply>)> answer, Send send) {
  std::shared_ptr<OrderedRoute> ordered = EntryFor(self, path).ordered;
  std::function<void(caf::expected<Reply>)> done = [self, path, ordered, answer,
                                                    record](caf::expected<Reply> reply) mutable {
    if (reply) {
      record(Code::kOk);
      answer(std::move(reply));
      return;
    }
    record(ToStatus(reply.error()).code());
    answer(reply.error());
    // A path that never opened (no config matches, say) keeps no entry: otherwise a peer could
    // grow the gateway's memory with one entry per distinct bad path.
    auto it = self->state.routes.find(path);
    if (it != self->state.routes.end() && it->second.ordered == ordered && !ordered->actor() &&
        ordered->Idle()) {
      self->state.routes.erase(it);
    }
  };
  send(*ordered, std::move(done));
}

/// Answers `promise` with `value` through the gateway's SendCork (transport/send_cork.hpp
/// SendCork::Answer): while more messages wait for the gateway (a burst of replies from
/// database actors, requests of many clients), a reply to a client is held back, so that each
/// connection gets the burst's replies in one send.
template <class Promise, class Value>
void Answer(gateway_pointer self, Promise& promise, Value&& value) {
  self->state.cork.Answer(
      !self->mailbox().empty(), [&] { promise.deliver(std::forward<Value>(value)); },
      [self] { self->send(self, atom::uncork_v); });
}

/// A handler's reply it has at once (a direct read): its result while nothing else waits for the
/// gateway, else answered through Answer with the burst's other replies.
template <class Reply>
caf::result<Reply> AnswerNow(gateway_pointer self, Reply value) {
  if (self->mailbox().empty()) {
    self->state.cork.Flush();  // the replies held before it go first
    return value;
  }
  auto promise = self->make_response_promise<Reply>();
  Answer(self, promise, std::move(value));
  return promise;
}

/// Hands an admitted request for the database at the normalised `path` to its route with
/// `send(route, done)` (Dispatch), and answers the client with what `done` gets.
template <class Reply, class Send>
caf::result<Reply> RouteAdmitted(gateway_pointer self, const std::string& path,
                                 std::function<void(Code)> record, Send send) {
  auto promise = self->make_response_promise<Reply>();
  Dispatch<Reply>(
      self, path, std::move(record),
      [self, promise](caf::expected<Reply> reply) mutable {
        if (reply) {
          Answer(self, promise, std::move(*reply));
        } else {
          Answer(self, promise, reply.error());
        }
      },
      std::move(send));
  return promise;
}

/// The outcome of each request of a message of several (puts, grouped gets), in order.
const std::vector<caf::error>& OutcomesOf(const std::vector<caf::error>& errors) {
  return errors;
}
const std::vector<caf::error>& OutcomesOf(const GetManyReply& reply) {
  return reply.errors;
}

/// Counts each request of a message of several alone: `count` of them failed with `s`.
void RecordEach(const std::function<void(Code)>& record, size_t count, const Status& s) {
  for (size_t i = 0; i < count; ++i) record(s.code());
}
/// ... or each with its own outcome (a request the reply left out is counted when it comes
/// again alone).
void RecordEach(const std::function<void(Code)>& record, const std::vector<caf::error>& outcomes) {
  for (const caf::error& err : outcomes) record(err ? ToStatus(err).code() : Code::kOk);
}

/// RouteAdmitted for a message of `count` requests, each counted alone (RecordEach).
template <class Reply, class Send>
caf::result<Reply> RouteAdmittedEach(gateway_pointer self, const std::string& path,
                                     std::function<void(Code)> record, size_t count, Send send) {
  auto promise = self->make_response_promise<Reply>();
  Dispatch<Reply>(
      self, path, [](Code) {},
      [self, promise, record, count](caf::expected<Reply> reply) mutable {
        if (!reply) {
          RecordEach(record, count, ToStatus(reply.error()));
          Answer(self, promise, reply.error());
          return;
        }
        RecordEach(record, OutcomesOf(*reply));
        Answer(self, promise, std::move(*reply));
      },
      std::move(send));
  return promise;
}

/// Hands a request for the database at `raw_path` to its route with `send(route, done)`, if it
/// is admitted (Admit), and answers the client with what `done` gets.
///
/// The path comes from the network, so the gateway is where the node normalises it (the client
/// library normalised it already, but a peer need not be that library). Routes are keyed by
/// normalised paths, so a path found among them is normalised: only a first request, or another
/// spelling, pays for the normalisation.
template <class Reply, class Send>
caf::result<Reply> Route(gateway_pointer self, std::optional<metrics::Op> op, security::Right right,
                         const std::string& raw_path, Deadline deadline, Send send) {
  std::function<void(Code)> record = Recorder(self, op);
  std::string path;
  if (Status s = Admit(self, right, raw_path, deadline, &path); !s.ok()) {
    record(s.code());
    return ToError(std::move(s));
  }
  return RouteAdmitted<Reply>(self, path, std::move(record), std::move(send));
}

/// The store a read of the database at the normalised `path` may use on this thread now (the
/// rule is at the top of client_gateway.hpp), or null: the actor path.
std::shared_ptr<DirectReadTarget> DirectTarget(gateway_pointer self, const std::string& path) {
  auto& st = self->state;
  if (!st.direct.reads) return nullptr;
  auto it = st.routes.find(path);
  // Not routed yet: the actor path opens the database (and creates it on first use).
  if (it == st.routes.end()) return nullptr;
  client_gateway_state::Entry& entry = it->second;
  const OrderedRoute& ordered = *entry.ordered;
  const database_client_actor& actor = ordered.actor();
  // Something of this route in flight, waiting or taken (a write, a batch, a get, a re-open):
  // the read waits behind it, so it sees every write sent before it.
  if (!actor || !ordered.Idle()) return nullptr;
  // Another node's copy: the actor path. (Its id may be one of this node's actors' too.)
  if (actor.node() != self->node()) return nullptr;
  if (entry.direct_of != actor.id()) {
    // Ids of this node's actors are never reused: the cached target is this actor's.
    entry.direct = st.direct.reads->Find(actor.id());
    entry.direct_of = actor.id();
  }
  // Retired: the actor stopped serving (passivated, dropped); the actor path re-opens it.
  if (!entry.direct || entry.direct->retired.load(std::memory_order_acquire)) return nullptr;
  return entry.direct;
}

/// Runs `read(store)` on this thread if a read of the database at the normalised `path` may go
/// direct now (DirectTarget), and gives what it returns; nothing: take the actor path. Once the
/// node is stopping it does not read, and gives kUnavailable.
template <class Read>
std::optional<Status> ReadDirectly(gateway_pointer self, const std::string& path, Read read) {
  std::shared_ptr<DirectReadTarget> target = DirectTarget(self, path);
  if (!target) return std::nullopt;
  // Node shutdown closes RocksDB only after this scope ends (DirectReadGate).
  DirectReadScope scope(*self->state.direct.gate);
  if (!scope.node_open()) {
    return Status::Unavailable("the node is stopping: database " + Quote(path) +
                               " no longer serves reads");
  }
  target->MarkUsed();  // for the database's idle check, as a request to its actor counts
  std::optional<Status> result;
  // Retired or paused meanwhile (a dropped copy, a drop, a restore): the actor path.
  if (!target->TryRead([&](const storage::DatabaseStore& store) { result = read(store); })) {
    return std::nullopt;
  }
  return result;
}

/// Forwards `args...` to the database at `raw_path` (Route).
template <class Reply, class... Ts>
caf::result<Reply> Forward(gateway_pointer self, std::optional<metrics::Op> op,
                           security::Right right, const std::string& raw_path, Deadline deadline,
                           Ts... args) {
  return Route<Reply>(self, op, right, raw_path, deadline,
                      [&](OrderedRoute& ordered, std::function<void(caf::expected<Reply>)> done) {
                        ordered.Request<Reply>(self, std::move(done), deadline, std::move(args)...);
                      });
}

/// The `send` of a plain write for Route or Dispatch: its route takes it (see ForwardWrite).
auto TakeWriteInto(gateway_pointer self, Deadline deadline, CoalescedWrite::Made made,
                   WriteBatch batch) {
  return [self, deadline, made, batch = std::move(batch)](
             OrderedRoute& ordered, std::function<void(caf::expected<atom::ok>)> done) mutable {
    if (ordered.TakeWrite({made, std::move(batch), deadline, std::move(done)})) {
      self->send(self, atom::commit_v, ordered.route().path);
    }
  };
}

/// A plain write (no checks) to the database at `raw_path`: its route takes it, to send with the
/// other writes to that database waiting in the gateway's mailbox (OrderedRoute::TakeWrite), so
/// under load many clients' writes travel to the database actor as one message.
caf::result<atom::ok> ForwardWrite(gateway_pointer self, metrics::Op op,
                                   const std::string& raw_path, Deadline deadline,
                                   CoalescedWrite::Made made, WriteBatch batch) {
  return Route<atom::ok>(self, op, security::Right::kWrite, raw_path, deadline,
                         TakeWriteInto(self, deadline, made, std::move(batch)));
}

/// OK if a message of several puts (a client's puts to one database waiting together, see the
/// put handler taking a WriteBatch) holds 1 to kMaxPutsPerMessage plain puts.
Status CheckSeveralPuts(const WriteBatch& puts) {
  if (puts.ops.empty() || puts.ops.size() > kMaxPutsPerMessage) {
    return Status::InvalidArgument("a message of several puts holds 1 to " +
                                   std::to_string(kMaxPutsPerMessage) + " of them, not " +
                                   std::to_string(puts.ops.size()));
  }
  for (const WriteOp& op : puts.ops) {
    if (op.kind != WriteOp::Kind::kPut || op.ttl_ms != 0) {
      return Status::InvalidArgument(
          "a message of several puts holds plain puts only (no erase, check or ttl)");
    }
  }
  return Status::OK();
}

}  // namespace

gateway_actor::behavior_type client_gateway_impl(
    gateway_pointer self, matcher_supervisor_actor supervisor, caf::timespan timeout,
    uint64_t node_id, peer_actor membership, std::string sync, LocalStatusFiller fill_local_status,
    GatewaySecurity security, std::shared_ptr<metrics::RequestMetrics> requests,
    std::shared_ptr<const PlacementBoard> placement, std::vector<caf::actor> shards,
    GatewayDirectReads direct) {
  self->state.direct = std::move(direct);
  self->state.placement = std::move(placement);
  self->state.shards = std::move(shards);
  self->state.security = std::move(security);
  self->state.requests = std::move(requests);
  self->state.supervisor = std::move(supervisor);
  self->state.fill_local_status = std::move(fill_local_status);
  self->state.membership = std::move(membership);
  self->state.timeout = timeout;
  self->state.node_id = node_id;
  self->state.sync = std::move(sync);
  // Pending re-opens hold their routes, which hold these deadlines: dropped on the way out.
  DropPendingOnExit(self, self->state.deadlines);
  self->state.deadlines->set_schedule_check(
      [self](caf::timespan period) { self->delayed_send(self, period, atom::expire_due_v); });
  // The gateway is published, so anyone who can reach the port can send it an exit message, and
  // a remote anonymous exit looks like a local one. It therefore ignores exits and stops with the
  // supervisor instead, whose handle never leaves the node.
  self->monitor(self->state.supervisor);
  self->set_exit_handler([](caf::exit_msg& msg) {
    spdlog::debug("client gateway ignored an exit message ({})", to_string(msg.reason));
  });
  // CAF's defaults would stop the actor on an asynchronous error message and print every unknown
  // message to stdout: both are a peer's to send.
  self->set_error_handler(
      [](caf::error& err) { spdlog::debug("client gateway ignored an error message"); });
  self->set_default_handler(caf::drop);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (msg.source == st.supervisor.address()) {
      self->quit(msg.reason);
      return;
    }
    auto found = st.path_of.find(msg.source);
    if (found == st.path_of.end()) return;
    // A replica on another node is lost (its node died or the connection dropped): requests
    // forwarded to it fail now rather than at their deadline. They may have been applied there.
    st.remote_requests->FailAll(
        self, msg.source,
        ToError(Status::Unavailable("lost the replica of database " + Quote(found->second) +
                                    " on another node while it served this request (" +
                                    to_string(msg.reason) + "); it may have been applied")));
    auto entry = st.routes.find(found->second);
    if (entry != st.routes.end()) {
      auto& ordered = *entry->second.ordered;
      ordered.Forget(msg.source);
      // An entry with requests in flight or waiting keeps their order: it stays.
      if (!ordered.actor() && ordered.Idle()) st.routes.erase(entry);
    }
    st.path_of.erase(found);
  });
  // Never `delegate` to an internal actor: the client would see that actor as the responder and
  // hold its handle (and with it messages like passivate, limit or exit). The gateway relays
  // every reply itself, so clients only ever know the gateway.
  // `filter` trims the reply to what the caller may see.
  auto ask_supervisor = [self](auto reply_tag, auto filter, auto... args) {
    using Reply = decltype(reply_tag);
    auto promise = self->make_response_promise<Reply>();
    RequestWithin(
        self, self->state.deadlines, self->state.timeout, self->state.supervisor,
        [self, promise, filter](Reply& reply) mutable {
          if (FromExpected(self, self->state.supervisor)) {
            filter(reply);
            promise.deliver(std::move(reply));
          } else {
            promise.deliver(ForgedReply());
          }
        },
        [promise](caf::error& err) mutable { promise.deliver(std::move(err)); }, args...);
    return promise;
  };
  return {
      [=](atom::expire_due) {
        // Its own timer only: anyone else's would start another chain of checks.
        if (self->current_sender() == self->ctrl()) self->state.deadlines->ExpireDue();
      },
      [=](atom::uncork) { self->state.cork.Uncorked(self->current_sender() == self->ctrl()); },
      [=](atom::hello, uint32_t version) -> caf::result<uint32_t, uint64_t> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        if (version != kClientProtocolVersion) {
          return ToError(Status::InvalidArgument(
              "incompatible protocol: the client speaks version " + std::to_string(version) +
              ", this node speaks version " + std::to_string(kClientProtocolVersion)));
        }
        return {kClientProtocolVersion, self->state.node_id};
      },
      [=](atom::gateways) -> caf::result<std::vector<caf::actor>> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        return self->state.shards;
      },
      [=](atom::clock) -> caf::result<int64_t> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        return Deadline::NowNs();
      },
      [=](atom::open, const std::string& path, Deadline deadline) {
        return Forward<DatabaseStats>(self, std::nullopt, Right::kRead, path, deadline,
                                      atom::stats_v);
      },
      [=](atom::put, const std::string& path, std::string& key, std::string& value,
          Deadline deadline) {
        WriteBatch write;
        write.Put(std::move(key), std::move(value));
        return ForwardWrite(self, metrics::Op::kPut, path, deadline, CoalescedWrite::Made::kPut,
                            std::move(write));
      },
      [=](atom::put, const std::string& path, WriteBatch& puts,
          Deadline deadline) -> caf::result<std::vector<caf::error>> {
        if (Status s = CheckSeveralPuts(puts); !s.ok()) {
          Recorder(self, metrics::Op::kPut)(s.code());
          return ToError(s);
        }
        // One path, one deadline, one sender: admitted (or refused) together, counted alone.
        std::string db;
        std::function<void(Code)> record = Recorder(self, metrics::Op::kPut);
        const size_t count = puts.ops.size();
        if (Status s = Admit(self, Right::kWrite, path, deadline, &db); !s.ok()) {
          RecordEach(record, count, s);
          return ToError(std::move(s));
        }
        // The puts go to the route as one write (CoalescedWrite::Made::kPuts), in order, so they
        // join the database's next group commit together, each judged and answered alone; the
        // message is answered once all are, each put counted alone.
        return RouteAdmittedEach<std::vector<caf::error>>(
            self, db, std::move(record), count,
            [&](OrderedRoute& ordered,
                std::function<void(caf::expected<std::vector<caf::error>>)> done) {
              if (ordered.TakeWrite({CoalescedWrite::Made::kPuts,
                                     std::move(puts),
                                     deadline,
                                     {},
                                     std::move(done)})) {
                self->send(self, atom::commit_v, ordered.route().path);
              }
            });
      },
      [=](atom::get, const std::string& path, std::string& key,
          Deadline deadline) -> caf::result<std::string> {
        std::function<void(Code)> record = Recorder(self, metrics::Op::kGet);
        std::string db;
        if (Status s = Admit(self, Right::kRead, path, deadline, &db); !s.ok()) {
          record(s.code());
          return ToError(std::move(s));
        }
        std::string value;
        std::optional<Status> read = ReadDirectly(
            self, db, [&](const storage::DatabaseStore& store) { return store.Get(key, &value); });
        if (read) {
          record(read->code());
          if (!read->ok()) return ToError(std::move(*read));
          return AnswerNow(self, std::move(value));
        }
        return RouteAdmitted<std::string>(
            self, db, std::move(record),
            [&](OrderedRoute& ordered, std::function<void(caf::expected<std::string>)> done) {
              ordered.Request<std::string>(self, std::move(done), deadline, atom::get_v,
                                           std::move(key));
            });
      },
      [=](atom::get, const std::string& path, PackedKeys& keys,
          Deadline deadline) -> caf::result<GetManyReply> {
        std::function<void(Code)> record = Recorder(self, metrics::Op::kGet);
        std::vector<std::string_view> views;
        if (Status s = keys.Unpack(kMaxGetsPerMessage, &views); !s.ok()) {
          record(s.code());
          return ToError(s);
        }
        const size_t count = views.size();
        // One path, one deadline, one sender: admitted (or refused) together, counted per key.
        std::string db;
        if (Status s = Admit(self, Right::kRead, path, deadline, &db); !s.ok()) {
          RecordEach(record, count, s);
          return ToError(std::move(s));
        }
        GetManyReply answers;
        std::optional<Status> read =
            ReadDirectly(self, db, [&](const storage::DatabaseStore& store) {
              answers = ReadMany(store, views);
              return Status::OK();
            });
        if (read) {
          if (!read->ok()) {
            RecordEach(record, count, *read);
            return ToError(std::move(*read));
          }
          RecordEach(record, OutcomesOf(answers));
          return AnswerNow(self, std::move(answers));
        }
        // One request to the database, after the requests routed before it (OrderedRoute), so
        // the gets see what this client wrote before them.
        return RouteAdmittedEach<GetManyReply>(
            self, db, std::move(record), count,
            [&](OrderedRoute& ordered, std::function<void(caf::expected<GetManyReply>)> done) {
              ordered.Request<GetManyReply>(self, std::move(done), deadline, atom::get_v,
                                            std::move(keys));
            });
      },
      [=](atom::get, const std::string& path, ReadRequest& request, Deadline deadline) {
        return Forward<VersionedValue>(self, metrics::Op::kGet, Right::kRead, path, deadline,
                                       atom::get_v, std::move(request));
      },
      [=](atom::erase, const std::string& path, std::string& key, Deadline deadline) {
        WriteBatch write;
        write.Erase(std::move(key));
        return ForwardWrite(self, metrics::Op::kErase, path, deadline, CoalescedWrite::Made::kErase,
                            std::move(write));
      },
      [=](atom::list, const std::string& path, ListOptions& options, Deadline deadline) {
        return Forward<ListPage>(self, metrics::Op::kList, Right::kRead, path, deadline,
                                 atom::list_v, std::move(options));
      },
      [=](atom::batch, const std::string& path, WriteBatch& batch, Deadline deadline) {
        // Judged by one replica, perhaps forwarded there: a conditional batch goes alone.
        if (HasChecks(batch)) {
          return Forward<atom::ok>(self, metrics::Op::kBatch, Right::kWrite, path, deadline,
                                   atom::batch_v, std::move(batch));
        }
        return ForwardWrite(self, metrics::Op::kBatch, path, deadline, CoalescedWrite::Made::kBatch,
                            std::move(batch));
      },
      [=](atom::commit, const std::string& path) {
        // The writes to `path` taken since the last flush (ForwardWrite). Anyone may send this
        // (it is in the published interface): it only sends what is waiting, sooner.
        auto it = self->state.routes.find(path);
        if (it != self->state.routes.end()) it->second.ordered->FlushWrites(self);
      },
      [=](atom::batch, const std::string& path, WriteBatch& batch, atom::session,
          Deadline deadline) {
        return Forward<std::string>(self, metrics::Op::kBatch, Right::kWrite, path, deadline,
                                    atom::batch_v, std::move(batch), atom::session_v);
      },
      [=](atom::stats, const std::string& path, Deadline deadline) {
        return Forward<DatabaseStats>(self, metrics::Op::kStats, Right::kRead, path, deadline,
                                      atom::stats_v);
      },
      [=](atom::status, const std::string& path, Deadline deadline) {
        return Forward<ReplicationStatus>(self, metrics::Op::kStatus, Right::kRead, path, deadline,
                                          atom::status_v);
      },
      [=](atom::watch, const std::string& path, WatchRequest& request, Deadline deadline) {
        return Forward<WatchUpdate>(self, metrics::Op::kWatch, Right::kRead, path, deadline,
                                    atom::watch_v, std::move(request));
      },
      [=](atom::members) -> caf::result<std::vector<MemberStatus>> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        auto membership = self->state.membership;
        if (!membership) {
          std::vector<MemberStatus> out{
              MemberStatus{self->state.node_id, "", 0, true, true, 0, self->state.sync}};
          if (self->state.fill_local_status) self->state.fill_local_status(out.back());
          return out;
        }
        auto promise = self->make_response_promise<std::vector<MemberStatus>>();
        RequestWithin(
            self, self->state.deadlines, self->state.timeout, membership,
            [=](std::vector<MemberStatus>& members) mutable {
              if (FromExpected(self, membership)) {
                promise.deliver(std::move(members));
              } else {
                promise.deliver(ForgedReply());
              }
            },
            [=](caf::error& err) mutable { promise.deliver(std::move(err)); }, atom::members_v);
        return promise;
      },
      // Listings show a principal only what it may read (security/acl.hpp).
      [=](atom::databases) -> caf::result<std::vector<DatabaseInfo>> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        return ask_supervisor(
            std::vector<DatabaseInfo>{},
            [caller](std::vector<DatabaseInfo>& infos) {
              if (!caller.acl) return;
              infos.erase(std::remove_if(infos.begin(), infos.end(),
                                         [&](const DatabaseInfo& info) {
                                           return !caller.acl->Allows(caller.principal,
                                                                      Right::kRead, info.path);
                                         }),
                          infos.end());
            },
            atom::databases_v);
      },
      [=](atom::instances, const std::string& config_id,
          InstanceOptions& options) -> caf::result<InstancePage> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        return ask_supervisor(
            InstancePage{},
            [caller](InstancePage& page) {
              if (!caller.acl) return;
              auto& v = page.instances;
              v.erase(std::remove_if(v.begin(), v.end(),
                                     [&](const InstanceInfo& info) {
                                       return !caller.acl->Allows(caller.principal, Right::kRead,
                                                                  info.path);
                                     }),
                      v.end());
            },
            atom::instances_v, config_id, std::move(options));
      },
      // Deleting a whole database is an operator's act: the admin right, like reload.
      [=](atom::drop, const std::string& path, Deadline deadline) {
        return Forward<atom::ok>(self, std::nullopt, Right::kAdmin, path, deadline, atom::drop_v);
      },
      // Backups read and write directories of the node's machine: admin only.
      [=](atom::backup, const std::string& path, std::string& dir, Deadline deadline) {
        return Forward<std::string>(self, std::nullopt, Right::kAdmin, path, deadline,
                                    atom::backup_v, std::move(dir));
      },
      [=](atom::restore, const std::string& path, std::string& dir, Deadline deadline) {
        return Forward<std::string>(self, std::nullopt, Right::kAdmin, path, deadline,
                                    atom::restore_v, std::move(dir));
      },
      [=](atom::backup, std::string& dir) -> caf::result<std::string> {
        if (Status s = Authorize(self, Right::kAdmin, {}, "back up the node"); !s.ok()) {
          return ToError(s);
        }
        return ask_supervisor(
            std::string{}, [](std::string&) {}, atom::backup_v, std::move(dir));
      },
      // Taking a node out of placement moves data cluster-wide: admin only, like drop.
      [=](atom::drain, atom::put, uint64_t node) -> caf::result<std::string> {
        Caller caller;
        if (Status s = Authorize(self, Right::kAdmin, {}, "drain nodes", &caller); !s.ok()) {
          return ToError(s);
        }
        return ask_supervisor(
            std::string{}, [](std::string&) {}, atom::drain_v, node, true, caller.Who());
      },
      [=](atom::drain, atom::erase, uint64_t node) -> caf::result<std::string> {
        Caller caller;
        if (Status s = Authorize(self, Right::kAdmin, {}, "undrain nodes", &caller); !s.ok()) {
          return ToError(s);
        }
        return ask_supervisor(
            std::string{}, [](std::string&) {}, atom::drain_v, node, false, caller.Who());
      },
      [=](atom::configs) -> caf::result<std::vector<ConfigInfo>> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        return ask_supervisor(
            std::vector<ConfigInfo>{},
            [caller](std::vector<ConfigInfo>& infos) {
              if (!caller.acl) return;
              infos.erase(std::remove_if(infos.begin(), infos.end(),
                                         [&](const ConfigInfo& info) {
                                           return !caller.acl->MayReadSomeOf(caller.principal,
                                                                             info.matcher);
                                         }),
                          infos.end());
            },
            atom::configs_v);
      },
      [=](atom::reload) -> caf::result<std::string> {
        if (Status s = Authorize(self, Right::kAdmin, {}, "reload configs"); !s.ok()) {
          return ToError(s);
        }
        return ask_supervisor(
            std::string{}, [](std::string&) {}, atom::reload_v);
      },
      [=](atom::configs, atom::put, std::string& yaml,
          ConfigApplyOptions& options) -> caf::result<ConfigApplyResult> {
        Caller caller;
        if (Status s = Authorize(self, Right::kAdmin, {}, "apply configs", &caller); !s.ok()) {
          return ToError(s);
        }
        options.applied_by = caller.Who();  // whatever the client claims
        return ask_supervisor(
            ConfigApplyResult{}, [](ConfigApplyResult&) {}, atom::configs_v, atom::put_v,
            std::move(yaml), std::move(options));
      },
      [=](atom::configs, atom::erase, std::string& id) -> caf::result<ConfigApplyResult> {
        Caller caller;
        if (Status s = Authorize(self, Right::kAdmin, {}, "delete configs", &caller); !s.ok()) {
          return ToError(s);
        }
        return ask_supervisor(
            ConfigApplyResult{}, [](ConfigApplyResult&) {}, atom::configs_v, atom::erase_v,
            std::move(id), caller.Who());
      },
      [=](atom::configs, atom::get,
          std::string& id) -> caf::result<std::vector<ConfigHistoryEntry>> {
        Caller caller;
        if (Status s = AuthorizeKnown(self, &caller); !s.ok()) return ToError(s);
        // As the config listing: only configs whose matcher may serve a database the principal
        // may read (a history of which none does comes back empty).
        return ask_supervisor(
            std::vector<ConfigHistoryEntry>{},
            [caller](std::vector<ConfigHistoryEntry>& entries) {
              if (!caller.acl) return;
              const bool readable =
                  std::any_of(entries.begin(), entries.end(), [&](const ConfigHistoryEntry& e) {
                    return !e.deleted &&
                           caller.acl->MayReadSomeOf(caller.principal, e.config.matcher);
                  });
              if (!readable) entries.clear();
            },
            atom::configs_v, atom::get_v, std::move(id));
      },
  };
}

}  // namespace kvmesh
