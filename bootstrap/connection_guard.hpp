// Bounds on the connections a node accepts, enforced where CAF accepts and reads them.
//
// CAF 0.17's BASP broker closes a connection that stays silent for middleman.connection-timeout,
// but only once the peer has sent a full BASP header: a peer that connects and never speaks is
// kept open for good. It also reads a message's announced payload length into one buffer before
// anything looks at the message, so a peer announcing 100 MiB costs the node 100 MiB. A guarded
// listener replaces CAF's doorman (the acceptor) and scribes (the connections) on one port with
// kvmesh subclasses of CAF's default ones that
//   - refuse a connection at once (closing it, with a rate-limited warning naming the address and
//     the bound) when the port already holds `max_connections`, or `max_connections_per_address`
//     from the same address (loopback counts as one address);
//   - close a connection that has not delivered its first complete message (the BASP handshake)
//     within `handshake_timeout`;
//   - close a connection whose next message header announces more than `max_message_bytes`,
//     before the payload is read.
// Everything runs on CAF's multiplexer thread, where CAF runs its own servants; the handshake
// deadlines are checked by a sweeper actor that posts the check to that thread.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/fwd.hpp>
#include <caf/timespan.hpp>

#include <cstddef>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kvmesh/status.hpp"

namespace kvmesh {

struct ListenerLimits {
  /// What the port is, for logs ("client port", "cluster port").
  std::string name;
  /// Most connections open on the port at once.
  size_t max_connections = 10000;
  /// Most connections open on the port from one remote address.
  size_t max_connections_per_address = 1000;
  /// Largest message payload a peer may announce (the BASP payload length).
  size_t max_message_bytes = 0;
  /// A connection must deliver its first complete message (the handshake) within this.
  caf::timespan handshake_timeout = std::chrono::seconds(3);
};

class ConnectionGuard;

/// Listens on `host`:`port` (0: any free port) and publishes `whom` there with the message
/// interface `sigs`, as caf::io::middleman::publish does (middleman::unpublish undoes it), but
/// with `limits` enforced on every connection accepted. On success sets `*actual_port` and
/// `*guard` (for SpawnHandshakeSweeper). Errors: kIOError "HOST:PORT: <why>" when the port
/// cannot be bound.
Status PublishGuarded(caf::actor_system& system, const caf::strong_actor_ptr& whom,
                      std::set<std::string> sigs, const std::string& host, uint16_t port,
                      ListenerLimits limits, uint16_t* actual_port,
                      std::shared_ptr<ConnectionGuard>* guard);

/// Spawns the actor that, every `period`, closes the connections of `guards` past their handshake
/// deadline. It runs until it is sent an exit message.
caf::actor SpawnHandshakeSweeper(caf::actor_system& system,
                                 std::vector<std::shared_ptr<ConnectionGuard>> guards,
                                 caf::timespan period);

}  // namespace kvmesh
