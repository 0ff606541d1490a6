// Every connection a kvmesh node or client makes or accepts, guarded where CAF reads it.
//
// kvmesh replaces CAF's scribes (connections) and, on its ports, doormen (acceptors) with its own,
// which the BASP broker drives as usual, so that:
//   - with TLS (security/tls.hpp) every connection is mutually authenticated against the cluster
//     CA before CAF sees a byte; a port may take node certificates only (the cluster port); a
//     connection this side opens must reach a node whose certificate names the host dialled;
//   - each BASP handshake's node id is bound to the connection's certificate in the
//     security::PeerDirectory (refused if that node id is bound to another certificate), so the
//     sender of a message stands for a certificate;
//   - a message that claims another node as its source (BASP's routed, monitor and down
//     messages), or asks this node to forward it to a third node, is dropped: CAF 0.17 would
//     otherwise accept a routed message naming any node as its sender, including this node's
//     own registered actors. kvmesh connects every pair of nodes (and each client to its node)
//     directly and never needs routing;
//   - on the client port, a message to any actor but the gateway is dropped;
//   - on a listening port: a connection is refused at once (with a rate-limited warning naming
//     the address and the bound) when the port already holds `max_connections`, or
//     `max_connections_per_address` from the same address (loopback counts as one address);
//     one that has not delivered its first complete message (the BASP handshake, after TLS's)
//     within `handshake_timeout` is closed (CAF keeps a silent connection open for good);
//   - a connection whose next message header announces more than `max_message_bytes` is closed
//     before the payload is read (CAF would allocate what the peer announces).
// Everything runs on CAF's multiplexer thread, where CAF runs its own servants; the handshake
// deadlines are checked by a sweeper actor that posts the check to that thread.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/fwd.hpp>
#include <caf/timespan.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kvmesh/status.hpp"
#include "security/identity.hpp"

namespace kvmesh {

namespace security {
class TlsContext;
}  // namespace security

/// How one actor system's connections are secured. Shared by its listeners and connects.
struct TransportSecurity {
  /// TLS for every connection; nullptr: plaintext.
  std::shared_ptr<security::TlsContext> tls;
  /// Where each connected CAF node's certificate identity is recorded (with TLS). May be null
  /// (a client, which needs no lookups).
  std::shared_ptr<security::PeerDirectory> directory;
  /// With TLS: asked about each client certificate on an accepted connection once its handshake
  /// verified it (e.g. "is it in the ACL?"); an error refuses the connection before any data.
  /// Empty: every client certificate of the CA may connect.
  std::function<Status(const security::PeerIdentity&)> admit;
};

struct ListenerLimits {
  /// What the port is, for logs ("client port", "cluster port").
  std::string name;
  /// Most connections open on the port at once.
  size_t max_connections = 10000;
  /// Most connections open on the port from one remote address.
  size_t max_connections_per_address = 1000;
  /// Most connections on the port that have not finished their handshake (TLS and BASP); more
  /// are refused until some finish or time out. Bounds what peers without a certificate cost.
  size_t max_pending_handshakes = 256;
  /// Largest message payload a peer may announce (the BASP payload length).
  size_t max_message_bytes = 0;
  /// A connection must deliver its first complete message (the handshake) within this.
  caf::timespan handshake_timeout = std::chrono::seconds(3);
  /// With TLS: only node certificates may connect (the cluster port). Client certificates are
  /// refused during the handshake's check, before CAF sees a byte.
  bool nodes_only = false;
  /// Messages to any actor but the published one are dropped (the client port: a client may
  /// talk to the gateway only, not to actors whose ids it guesses). BASP addresses actors by
  /// small integer ids, and CAF delivers a message to any actor of the node that was ever named
  /// to a peer.
  bool published_actor_only = false;
  /// With published_actor_only: actors besides the published one that clients may address,
  /// with the same message interface (the client gateway's shards, which the gateway names in
  /// its `gateways` answer).
  std::vector<caf::actor_id> also_addressable;
};

class ConnectionGuard;

/// Listens on `host`:`port` (0: any free port) and publishes `whom` there with the message
/// interface `sigs`, as caf::io::middleman::publish does (middleman::unpublish undoes it), but
/// with `security` and `limits` enforced on every connection accepted. On success sets
/// `*actual_port` and `*guard` (for SpawnHandshakeSweeper). Errors: kIOError "HOST:PORT: <why>"
/// when the port cannot be bound.
Status PublishGuarded(caf::actor_system& system, const caf::strong_actor_ptr& whom,
                      std::set<std::string> sigs, const std::string& host, uint16_t port,
                      ListenerLimits limits, const TransportSecurity& security,
                      uint16_t* actual_port, std::shared_ptr<ConnectionGuard>* guard);

/// Spawns the actor that, every `period`, closes the connections of `guards` past their handshake
/// deadline. It runs until it is sent an exit message.
caf::actor SpawnHandshakeSweeper(caf::actor_system& system,
                                 std::vector<std::shared_ptr<ConnectionGuard>> guards,
                                 caf::timespan period);

/// Spawns a one-shot actor that opens a new guarded connection to a node and answers what CAF's
/// middleman answers a connect: ask it (caf::connect_atom, host, port) and get
/// (caf::node_id, caf::strong_actor_ptr published there, std::set<std::string> its interface),
/// or an error (with TLS, naming the handshake's failure when there was one). It quits after
/// answering. Messages from the peer announcing more than `max_message_bytes` close it.
///
/// Not through CAF's middleman actor: it answers a connect to an address it connected before with
/// the proxy it got then, for as long as that proxy lives (also after that node is gone), and it
/// knows neither TLS nor kvmesh's checks. A connect here always makes a connection. (If a
/// direct connection to the node exists, CAF keeps that and closes the new one.) Detached,
/// because the TCP connect blocks (for minutes, to a host that drops SYNs): bound it with the
/// request's timeout.
caf::actor SpawnConnector(caf::actor_system& system, TransportSecurity security,
                          size_t max_message_bytes, caf::timespan timeout);

}  // namespace kvmesh
