// Helpers for tests that talk to actors directly.
#pragma once

#include <gtest/gtest.h>

#include <caf/all.hpp>

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

}  // namespace kvmesh::testing
