// The database actor: serves one instantiated database path from its storage namespace.
//
// One actor per instantiated path, spawned by the matcher supervisor on first access. It owns the
// only DatabaseStore of its path while it runs, so writes to one database are serialised here and
// the store's size accounting needs no locks. When it sees no request for a whole idle period it
// tells the supervisor, which takes it out of service and sends `passivate`; the actor then stops
// after the requests already in its mailbox. A later request is bounced (request_receiver_down)
// without being applied, so callers re-open the path and retry safely.
#pragma once

#include <caf/stateful_actor.hpp>
#include <caf/timespan.hpp>

#include <memory>

#include "messages/type_ids.hpp"
#include "storage/database_store.hpp"

namespace kvmesh {

struct database_state {
  static inline const char* name = "kvmesh.database";
  std::shared_ptr<storage::DatabaseStore> store;
  /// Requests served since the last idle check (the check costs one increment per request).
  uint64_t requests_since_tick = 0;
};

/// Behaviour of a database actor over `store`. Every `idle_timeout` it checks whether it served a
/// request; if not, it reports (path, itself) to `supervisor`. So a database passivates between
/// one and two idle periods after its last request. A zero `idle_timeout` disables passivation.
database_actor::behavior_type database_actor_impl(
    database_actor::stateful_pointer<database_state> self,
    std::shared_ptr<storage::DatabaseStore> store, matcher_supervisor_actor supervisor,
    caf::timespan idle_timeout);

}  // namespace kvmesh
