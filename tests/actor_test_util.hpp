// Helpers for tests that talk to actors directly.
#pragma once

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include <chrono>
#include <functional>
#include <string>

#include "messages/type_ids.hpp"
#include "transport/client_port.hpp"

namespace kvmesh::testing {

/// An actor system config with kvmesh's message types registered.
struct TestSystemConfig : caf::actor_system_config {
  TestSystemConfig() { RegisterMessageTypes(*this); }
};

/// How a raw CAF peer (a test that speaks to a node's published actors directly, as no client
/// library would) treats its connections.
struct RawPeerOptions {
  /// Interval of the peer's heartbeats; zero (the default) sends none, so the node hears
  /// nothing from a silent peer.
  caf::timespan heartbeat_interval{0};
  /// How long the peer waits for a silent connection before giving it up; zero (the default)
  /// keeps CAF's default.
  caf::timespan connection_timeout{0};
};

/// An actor system config for a raw CAF peer of a node: kvmesh's message types, the middleman,
/// and kvmesh's application identifier (the node refuses peers without it).
struct RawPeerConfig : caf::actor_system_config {
  explicit RawPeerConfig(const RawPeerOptions& options = RawPeerOptions()) {
    RegisterMessageTypes(*this);
    load<caf::io::middleman>();
    set("middleman.app-identifiers", std::vector<std::string>{"kvmesh"});
    if (options.heartbeat_interval != caf::timespan{0}) {
      set("middleman.heartbeat-interval", options.heartbeat_interval);
    }
    if (options.connection_timeout != caf::timespan{0}) {
      set("middleman.connection-timeout", options.connection_timeout);
    }
  }
};

/// A raw client of a node's client port (transport/client_port.hpp) and the gateway's handle
/// over it: for tests that send a node what the client library never would. Reads like the
/// caf::expected a CAF connect gives (`*gateway`, `gateway->address()`). Destroy it before its
/// actor system.
struct RawGateway {
  std::unique_ptr<PortClient> connection;
  gateway_actor gateway;
  /// Why there is no gateway.
  Status status;
  const gateway_actor& operator*() const { return gateway; }
  const gateway_actor* operator->() const { return &gateway; }
  explicit operator bool() const { return static_cast<bool>(gateway); }
};

/// Connects `system` to the client port `port` on 127.0.0.1. `heartbeats` false: the
/// connection sends none, so the node hears nothing from it while it is idle.
inline RawGateway ConnectRaw(caf::actor_system& system, int port, bool heartbeats = true,
                             caf::timespan peer_timeout = std::chrono::seconds(3)) {
  RawGateway raw;
  PortConnectOptions options;
  options.max_message_bytes = 2 * kMaxRequestBytes;
  options.heartbeats = heartbeats;
  options.peer_timeout = peer_timeout;
  caf::strong_actor_ptr gateway;
  raw.status = PortClient::Connect(system, "127.0.0.1", static_cast<uint16_t>(port), options,
                                   &raw.connection, &gateway);
  if (raw.status.ok()) raw.gateway = caf::actor_cast<gateway_actor>(std::move(gateway));
  return raw;
}

/// Serves `gateway` (a stand-in for a node's) on a client port of its own on 127.0.0.1, as a node
/// serves its gateway; the port number goes to `*port`. Close it (or destroy it) before its
/// actor system.
inline std::unique_ptr<ClientPort> ServeGateway(caf::actor_system& system,
                                                const gateway_actor& gateway, int* port) {
  ClientPortOptions options;
  options.limits.name = "client port";
  options.limits.max_message_bytes = kMaxRequestBytes;
  options.gateway = caf::actor_cast<caf::strong_actor_ptr>(gateway);
  options.interface = system.message_types(caf::detail::type_list<gateway_actor>{});
  std::unique_ptr<ClientPort> served;
  Status s = ClientPort::Open(system, std::move(options), &served);
  EXPECT_TRUE(s.ok()) << s;
  *port = served ? served->port() : 0;
  return served;
}

/// Sends one request from `self` and waits for the reply (explicit synchronisation, no sleeps):
/// the reply goes to `*out`, an error comes back as a Status.
template <class Reply, class Handle, class... Ts>
Status Ask(caf::scoped_actor& self, const Handle& to, Reply* out, Ts... args) {
  Status result;
  self->request(to, std::chrono::seconds(5), args...)
      .receive([&](Reply& reply) { *out = std::move(reply); },
               [&](caf::error& err) { result = ToStatus(err); });
  return result;
}

/// Sends the request `op, xs...` from `self` with the deadline `timeout` and waits for the
/// answer: a success goes to `on_reply` (whose parameters say which reply is expected), an error
/// is returned (none on success). For requests that must be answered whatever their contents: no
/// answer within the deadline is what a hang looks like, and fails the test (non-fatally) whatever
/// the caller expects.
template <class Handle, class OnReply, class Atom, class... Ts>
caf::error AskWithin(caf::timespan timeout, caf::scoped_actor& self, const Handle& to,
                     OnReply on_reply, Atom op, Ts&&... xs) {
  caf::error result;
  self->request(to, timeout, op, std::forward<Ts>(xs)...)
      .receive(std::move(on_reply), [&](caf::error& err) { result = std::move(err); });
  EXPECT_FALSE(result == caf::sec::request_timeout)
      << caf::to_string(Atom::value) << ": no answer within the deadline (a hang)";
  return result;
}

/// A deadline no test reaches.
inline Deadline Later() {
  return Deadline::In(std::chrono::minutes(10));
}

/// Stands in for a database actor's client slice: answers every request with an empty reply,
/// except that each put first runs `on_put` (if set; e.g. a sleep, as a slow disk), a get
/// answers `get_reply`, a shared batch is answered by `on_shared_batch` (if set), and every
/// write message of a batch is told to `on_batch` (if set) by the type it carried:
/// "WriteBatch", "vector<WriteBatch>", "SharedWriteBatch" or "SharedWriteBatches".
inline database_client_actor::behavior_type StubDatabase(
    std::function<void()> on_put, std::string get_reply,
    std::function<caf::result<atom::ok>(const SharedWriteBatch&)> on_shared_batch = nullptr,
    std::function<void(const char*)> on_batch = nullptr) {
  auto told = [on_batch](const char* kind) {
    if (on_batch) on_batch(kind);
  };
  return {
      [on_put](atom::put, std::string&, std::string&, Deadline) {
        if (on_put) on_put();
        return atom::ok_v;
      },
      [get_reply](atom::get, std::string&, Deadline) { return get_reply; },
      [get_reply](atom::get, PackedKeys& packed, Deadline) {
        std::vector<std::string_view> keys;
        (void)packed.Unpack(kMaxGetsPerMessage, &keys);
        GetManyReply reply;
        reply.errors.resize(keys.size());
        reply.values.assign(keys.size(), get_reply);
        return reply;
      },
      [get_reply](atom::get, ReadRequest&, Deadline) {
        return VersionedValue{get_reply, ""};
      },
      [](atom::erase, std::string&, Deadline) { return atom::ok_v; },
      [](atom::list, ListOptions&, Deadline) { return ListPage{}; },
      [told](atom::batch, WriteBatch&, Deadline) {
        told("WriteBatch");
        return atom::ok_v;
      },
      [told](atom::batch, WriteBatch&, atom::session, Deadline) {
        told("WriteBatch");
        return std::string();
      },
      [on_shared_batch, told](atom::batch, const SharedWriteBatch& batch,
                              Deadline) -> caf::result<atom::ok> {
        told("SharedWriteBatch");
        if (on_shared_batch) return on_shared_batch(batch);
        return atom::ok_v;
      },
      [told](atom::batch, const SharedWriteBatch&, atom::session, Deadline) {
        told("SharedWriteBatch");
        return std::string();
      },
      [told](atom::batch, std::vector<WriteBatch>& writes, Deadline) {
        told("vector<WriteBatch>");
        return std::vector<caf::error>(writes.size());
      },
      [told](atom::batch, const SharedWriteBatches& writes, Deadline) {
        told("SharedWriteBatches");
        return std::vector<caf::error>(writes.batches ? writes.batches->size() : 0);
      },
      [](atom::stats, Deadline) { return DatabaseStats{}; },
      [](atom::status, Deadline) { return ReplicationStatus{}; },
      [](atom::drop, Deadline) { return atom::ok_v; },
      [](atom::backup, std::string&, Deadline) { return std::string(); },
      [](atom::restore, std::string&, Deadline) { return std::string(); },
      [](atom::watch, WatchRequest&, Deadline) { return WatchUpdate{}; },
  };
}

}  // namespace kvmesh::testing
