// Helpers for tests that talk to actors directly.
#pragma once

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include <functional>
#include <string>

#include "messages/type_ids.hpp"

namespace kvmesh::testing {

/// An actor system config with kvmesh's message types registered.
struct TestSystemConfig : caf::actor_system_config {
  TestSystemConfig() { RegisterMessageTypes(*this); }
};

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

/// Stands in for a database actor's client slice: answers every request with an empty reply,
/// except that each put first runs `on_put` (if set; e.g. a sleep, as a slow disk) and a get
/// answers `get_reply`.
inline database_client_actor::behavior_type StubDatabase(std::function<void()> on_put,
                                                         std::string get_reply) {
  return {
      [on_put](atom::put, std::string&, std::string&) {
        if (on_put) on_put();
        return atom::ok_v;
      },
      [get_reply](atom::get, std::string&) { return get_reply; },
      [](atom::erase, std::string&) { return atom::ok_v; },
      [](atom::list, ListOptions&) { return ListPage{}; },
      [](atom::batch, WriteBatch&) { return atom::ok_v; },
      [](atom::stats) { return DatabaseStats{}; },
      [](atom::status) { return ReplicationStatus{}; },
  };
}

}  // namespace kvmesh::testing
