// Exits from other nodes stop nothing: the one filter every network-reachable actor is spawned
// with (node and client library alike).
//
// CAF 0.17 honours an exit message from any sender, a remote peer included, and an exit of
// reason `kill` stops an actor whatever its exit handler says. An asynchronous `caf::error`
// message stops an actor that installed no error handler. Any peer holding an actor's handle can
// send either: the published client gateway and membership actor, database actors (their peer
// slice goes to other nodes), helpers that asked another node something (the receiver learns the
// asker's handle), and in the client library the connection actor (the node learns it).
//
// Rule: such an actor is spawned with SpawnNetworkFacing and takes an exit (any reason) or an
// asynchronous error message only from a sender that is
//   - an actor of this node (not a proxy: a peer may claim this node's id in its handshake), and
//   - unknown to this node's actor registry. A routed BASP message may name as its sender any
//     local actor that the registry knows, which is every actor whose handle ever crossed the
//     network; an actor whose handle never left the node (the supervisor, a scoped_actor made to
//     stop something) cannot be named by a peer.
// Anything else is dropped before it reaches the mailbox, with a warning naming the sender's node
// and the reason (at most one a second per actor; the next says how many were not logged).
//
// Consequences for local code:
//   - Anonymous exits are dropped (a remote anonymous exit looks the same): stop such an actor
//     with StopLocally (an exit from a fresh local actor), or by a message it honours.
//   - A link to such an actor from a local actor whose handle crossed the network no longer
//     delivers that actor's exit; use a monitor (none of kvmesh's actors are linked today).
//   - A remote peer linking to such an actor and then dying (any reason) sends it an exit from
//     a proxy: dropped.
// Installed in: the client gateway and membership actor (bootstrap/node.cpp), database actors and
// the supervisor's replica asker (actors/matcher_supervisor.cpp), the client library's connection
// actor (client/client.cpp). Not needed by actors whose handle never leaves the node: the
// supervisor, the watchdog, membership's fresh-connect helper (it talks to the local BASP broker
// only). Not installable in the client library's blocking callers (scoped actors, which send
// requests to the node): while waiting for a reply they skip exits, which stay in their mailbox.
// Not covered (each actor's own handlers decide): down messages (forged down messages name an
// address that must match one the actor monitors; a routed message can name any remote node's
// actor, so a peer can forge the down of a replica on a third node), CAF's `sys get info`
// (answers the actor's name), timeout and stream control messages, and ordinary messages (each
// actor checks senders where it matters, see FromExpected and MaySteer).
#pragma once

#include <caf/actor_cast.hpp>
#include <caf/actor_config.hpp>
#include <caf/actor_system.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/spawn_options.hpp>

#include <atomic>
#include <cstdint>
#include <utility>

namespace kvmesh {

/// Limits the warnings of one actor to one a second (a peer can send exits as fast as it likes).
struct WarningLimit {
  std::atomic<int64_t> next_ns{0};
  std::atomic<uint64_t> suppressed{0};
};

/// True when `self` must not act on `element`: an exit message or an asynchronous error message
/// whose sender is not a local actor that no peer can name (see the rule above). Logs a warning
/// naming `self`, the sender's node and the reason when it returns true, as `limit` allows.
bool IsForeignStop(const caf::abstract_actor& self, const caf::mailbox_element& element,
                   WarningLimit& limit);

/// `Base` (a CAF actor class) that drops foreign stops (IsForeignStop) before its mailbox.
template <class Base>
class RemoteExitFilter : public Base {
 public:
  using Base::Base;

  void enqueue(caf::mailbox_element_ptr ptr, caf::execution_unit* host) override {
    if (ptr != nullptr && IsForeignStop(*this, *ptr, warnings_)) return;
    Base::enqueue(std::move(ptr), host);
  }
  using Base::enqueue;

 private:
  WarningLimit warnings_;
};

/// Spawns the function-based actor `fun(self, xs...)` on `system` like `system.spawn<Os>` does,
/// with the RemoteExitFilter installed. For every actor whose handle can reach another node.
template <caf::spawn_options Os = caf::no_spawn_options, class F, class... Ts>
caf::infer_handle_from_fun_t<F> SpawnNetworkFacing(caf::actor_system& system, F fun, Ts&&... xs) {
  using Impl = caf::infer_impl_from_fun_t<F>;
  caf::actor_config cfg;
  caf::detail::init_fun_factory<Impl, F> factory;
  cfg.init_fun = factory(std::move(fun), std::forward<Ts>(xs)...);
  return system.spawn_impl<RemoteExitFilter<Impl>, Os>(cfg);
}

/// Sends `target` an exit with `reason` that a RemoteExitFilter honours: from a fresh local
/// actor, whose handle never left the node.
template <class Handle>
void StopLocally(caf::actor_system& system, const Handle& target, caf::error reason) {
  if (!target) return;
  caf::scoped_actor stopper{system};
  stopper->send_exit(target, std::move(reason));
}

}  // namespace kvmesh
