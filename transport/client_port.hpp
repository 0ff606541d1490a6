// kvmesh's own client port: a node's client gateway reached over one TCP (or TLS) connection
// per client, without CAF's network layer.
//
// Why: over CAF 0.17's BASP every message crosses the multiplexer thread on both sides, as an
// actor message to the BASP broker and back: a round trip of messages that do no work
// (kvmesh-bench's caf-echo target) ran at 0.36x Redis with one request in flight, where one epoll
// loop handing each request to an actor and back (loop-echo) ran at 0.87x.
//
// What travels is what travelled over BASP: CAF messages between the client's actors and the
// gateway (and its shards), in CAF's binary format, so the client library's actors, requests,
// deadlines and monitors are those it had. Each side stands for the other side's actors with
// proxies (CAF actor_proxy) that write a message to the socket on the sending actor's own thread
// (a reply leaves from the worker thread that made it; the replies of a burst together, when the
// sender holds a SendCork: transport/send_cork.hpp); a message read from the socket goes to
// its receiver's mailbox from the reading thread (the node's port thread, the client's reader).
// A connection that breaks or falls silent kills its proxies: whoever monitors one (the client's
// connection actor monitors the gateway's) gets a down message at once.
//
// Thread hand-offs, which on a loaded machine cost more than a small request's work: the node's
// port thread runs a request that arrives alone itself, with the actors it makes ready (of the
// kinds ClientPortOptions::run_on_port names), so the answer leaves from there; and a client's
// blocking call reads its own reply when the reader thread is not reading (PortClient::ReadFor).
// A sequential round trip then wakes two threads, as Redis's does.
//
// Wire format, integers little-endian:
//   frame     := u32 size (of kind and body) | u8 kind | body
//   hello     (1; the client's first frame): u32 magic "KVMP" | u32 version | u64 heartbeat ns
//   welcome   (2; the node's answer): u32 magic | u32 version | u64 heartbeat ns |
//             u64 id of the gateway actor | the node's CAF node id (CAF binary format)
//   message   (3): u64 sender actor id (0: none) | u64 receiver actor id | u64 CAF message id |
//             the message (CAF binary format)
//   heartbeat (4): nothing; each side sends one when it wrote nothing for the smaller of the
//             two sides' heartbeat intervals, and closes a connection silent for its peer timeout.
//
// The node's side keeps the BASP client port's guards (transport/connection_guard.hpp), by the
// same ListenerLimits and TransportSecurity: connections counted and bounded in all, per address
// and while in their handshake; TLS with client certificates checked (and `admit`ted) before a
// byte of data; the hello due within the handshake timeout; a frame announcing more than
// max_message_bytes closes the connection before its body is read; a message may go to the
// gateway or one of its shards only, and must be one of the gateway's requests before it is
// decoded (a request carries no actor handle, and none can be decoded here). Such a refused
// request is answered with an error (unexpected_message) rather than left to time out. Each
// connection's messages come from actors of its own CAF node id, made up by the port and, with
// TLS, bound to the connection's certificate in the PeerDirectory: what a client claims about
// itself is never asked.
#pragma once

#include <caf/actor_system.hpp>
#include <caf/fwd.hpp>
#include <caf/timespan.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/busy_poll.hpp"
#include "kvmesh/status.hpp"
#include "transport/connection_guard.hpp"

namespace kvmesh {

/// What a node's client port serves, and how it is guarded.
struct ClientPortOptions {
  /// Where it listens; port 0: any free port.
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  /// Bounds and checks (see the top of this file); `name` names the port in logs.
  ListenerLimits limits;
  TransportSecurity security;
  /// The kinds of actor (their CAF names, a stateful actor's state `name`) that a request read
  /// alone may run on the port's thread, saving two thread hand-offs; quick, bounded work only
  /// (the gateway, a database's reads and writes). Others, and all in a burst, go to CAF's
  /// workers. Empty: all go to the workers.
  std::set<std::string, std::less<>> run_on_port;
  /// The gateway, and its shards: the only actors clients may address.
  caf::strong_actor_ptr gateway;
  std::vector<caf::strong_actor_ptr> shards;
  /// The gateway's message interface (actor_system::message_types of gateway_actor): the
  /// requests a client may send.
  std::set<std::string> interface;
  /// A connection silent this long is closed; heartbeats go every third of it.
  caf::timespan peer_timeout = std::chrono::seconds(3);
  /// The port's thread, out of work, polls its connections up to this long before it sleeps,
  /// while requests come that soon (common/busy_poll.hpp). 0: sleeps at once.
  caf::timespan busy_poll{0};
};

/// A node's client port: one thread ("kvmesh.port") accepting and reading every connection, and
/// running a request that arrives alone; a watchdog thread ("kvmesh.port.wd") sends heartbeats
/// while it runs one for long.
class ClientPort {
 public:
  /// Listens and starts serving. `system` must have a node id (CAF's middleman loaded). Errors:
  /// kIOError "HOST:PORT: <why>" when the port cannot be bound (or resolved).
  static Status Open(caf::actor_system& system, ClientPortOptions options,
                     std::unique_ptr<ClientPort>* out);
  /// Close()s.
  ~ClientPort();
  ClientPort(const ClientPort&) = delete;
  ClientPort& operator=(const ClientPort&) = delete;

  /// The port it listens on.
  uint16_t port() const;
  /// Connections open now (accepted and not yet closed).
  size_t connections() const;
  /// How the port's thread waited for work so far (ClientPortOptions::busy_poll).
  BusyPoll::Stats busy_poll_stats() const;
  /// Stops accepting, closes every connection (killing its proxies) and waits for the port's
  /// thread. Idempotent. Must be called before the actor system is destroyed.
  void Close();

  struct Impl;

 private:
  explicit ClientPort(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// How a client reaches a node's client port.
struct PortConnectOptions {
  /// With `tls` set: TLS to the node, whose certificate must name the host dialled.
  TransportSecurity security;
  /// Largest frame the node may send (a reply); a larger one closes the connection.
  size_t max_message_bytes = 0;
  /// Bounds the TCP connect, the TLS handshake and the node's welcome together.
  caf::timespan connect_timeout = std::chrono::seconds(3);
  /// A connection silent this long is lost; heartbeats go every third of it.
  caf::timespan peer_timeout = std::chrono::seconds(3);
  /// False: sends no heartbeats (for tests of a node closing silent connections).
  bool heartbeats = true;
  /// A caller reading for its reply (ReadFor) polls up to this long before it sleeps, while
  /// replies come that soon (common/busy_poll.hpp). 0: sleeps at once.
  caf::timespan busy_poll{0};
};

/// A client's connection to a node's client port, with a reader thread ("kvmesh.reader").
class PortClient {
 public:
  /// Connects to `host`:`port` (a name or an IPv4/IPv6 address), and on success sets `*out` and
  /// `*gateway` (a proxy for the node's gateway, with the gateway_actor interface). Errors:
  /// kUnavailable naming what failed (resolving, connecting, TLS, a node that does not answer
  /// within the timeout), kInvalidArgument when the service there does not speak this protocol
  /// version.
  static Status Connect(caf::actor_system& system, const std::string& host, uint16_t port,
                        const PortConnectOptions& options, std::unique_ptr<PortClient>* out,
                        caf::strong_actor_ptr* gateway);
  /// Close()s.
  ~PortClient();
  PortClient(const PortClient&) = delete;
  PortClient& operator=(const PortClient&) = delete;

  /// True while the connection is up.
  bool connected() const;
  /// A blocking call's reply without a hand-off between threads. Before sending a request from
  /// actor `waiter` (one request at a time), Expect(waiter); then ReadFor(waiter, deadline), which
  /// reads the connection on the calling thread, delivering whatever comes, until a message for
  /// `waiter` was delivered (true) or `deadline` passed, if no other thread reads it now. True at
  /// once if the message came already. False at once if another thread reads (it reads for
  /// `waiter` until its message came), or the connection is closed or broken; the message, when
  /// it comes, is in `waiter`'s mailbox in every case. Then DoneWaiting(waiter), always.
  void Expect(caf::actor_id waiter);
  bool ReadFor(caf::actor_id waiter, std::chrono::steady_clock::time_point deadline);
  /// Ends what Expect started for `waiter` (its message came, or it gave up waiting).
  void DoneWaiting(caf::actor_id waiter);
  /// How callers reading their replies (ReadFor) waited so far (PortConnectOptions::busy_poll).
  BusyPoll::Stats busy_poll_stats() const;
  /// Closes the connection (its proxies are killed: monitors of the gateway get a down
  /// message) and waits for the reader thread. Idempotent. Not from the reader thread itself
  /// (a callback run by a message it delivered).
  void Close();

  struct Impl;

 private:
  explicit PortClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh
