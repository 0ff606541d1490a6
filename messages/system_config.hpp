// The CAF actor system settings a node and a client share: message types, scheduler, and the
// middleman options every kvmesh network endpoint needs. One place, so the two sides cannot
// drift apart (a type one side does not register fails silently across nodes).
#pragma once

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/timespan.hpp>

#include <chrono>
#include <cstddef>
#include <string>

#include "kvmesh/status.hpp"

namespace kvmesh {

struct NodeOptions;

struct ActorSystemSettings {
  /// "sharing" (one shared queue: idle workers wake at once, which request/response latency
  /// needs) or "stealing".
  std::string scheduler_policy = "sharing";
  /// Worker threads; 0 leaves CAF's default.
  size_t worker_threads = 0;
  /// Load the middleman (CAF io): the system talks to other processes.
  bool network = false;
  /// With `network`: a connection silent this long is closed (heartbeats every third of it), so
  /// dead or stalled peers are noticed; also bounds connecting to a peer that never answers.
  caf::timespan peer_timeout = std::chrono::seconds(3);
  /// With `network`: deserialize messages in the multiplexer thread instead of handing each to
  /// a BASP worker thread first (one thread wake-up less per message; for a client, whose
  /// replies are small).
  bool deserialize_in_multiplexer = false;
  /// With `network` and not `deserialize_in_multiplexer`: the threads that decode messages
  /// (CAF's middleman.workers); 0 leaves CAF's default.
  size_t decode_workers = 0;
  /// With the "sharing" policy: idle workers poll the queue this long at most before they sleep
  /// (messages/polling_scheduler.hpp; a node's NodeOptions::busy_poll). 0: CAF's own scheduler,
  /// whose workers sleep at once (a client's: its program needs the CPU). At most kMaxBusyPoll.
  std::chrono::microseconds busy_poll{0};
};

/// The settings of a node started with `opts`: its scheduler, its workers (`worker_threads`, 0:
/// one per core and at least two) and their polling (`busy_poll`), and with `network` (a client
/// port or a cluster port) its peer timeout and message decoding (`network_workers`). The one
/// place that says what a node's actor system is: the benchmark's echo servers use it too, so that
/// they measure one.
ActorSystemSettings NodeActorSystemSettings(const NodeOptions& opts, bool network);

/// OK if `policy` names a scheduler policy kvmesh supports ("sharing" or "stealing"); otherwise
/// kInvalidArgument naming it.
Status ValidateSchedulerPolicy(const std::string& policy);

/// OK if `busy_poll` (NodeOptions' or ClientOptions') is from 0 to kMaxBusyPoll; otherwise
/// kInvalidArgument naming the range and the value.
Status ValidateBusyPoll(std::chrono::microseconds busy_poll);

/// Registers kvmesh's message types and error category on `cfg` and applies `settings`.
/// Errors: kInvalidArgument for an unknown scheduler policy (nothing is changed then).
Status ConfigureActorSystem(const ActorSystemSettings& settings, caf::actor_system_config* cfg);

/// Names the network thread of `system` (configured with `network`) "caf.network". CAF 0.17.6
/// names its scheduler workers "caf.multiplexer" too, so per-thread CPU (top -H, kvmesh-bench
/// --thread-cpu) could not tell the one network thread from the workers; ConfigureActorSystem
/// names the workers "caf.worker". Call once, after the system is made.
void NameNetworkThread(caf::actor_system& system);

}  // namespace kvmesh
