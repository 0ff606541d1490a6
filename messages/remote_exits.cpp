#include "messages/remote_exits.hpp"

#include <spdlog/spdlog.h>
#include <caf/actor_proxy.hpp>
#include <caf/actor_registry.hpp>
#include <caf/error.hpp>
#include <caf/local_actor.hpp>
#include <caf/system_messages.hpp>

#include <atomic>
#include <chrono>
#include <string>

namespace kvmesh {
namespace {

/// Whether a peer could have made `sender` the sender of a message to an actor of `self`'s node
/// (see the rule in remote_exits.hpp). `*node` gets the sender's node for the log.
bool NameableByPeer(const caf::abstract_actor& self, const caf::strong_actor_ptr& sender,
                    std::string* node) {
  if (sender == nullptr) {
    *node = "an anonymous sender (local or remote)";
    return true;
  }
  *node = "node " + to_string(sender->node());
  if (sender->node() != self.node()) return true;
  if (dynamic_cast<const caf::actor_proxy*>(sender->get()) != nullptr) {
    *node = "a remote peer claiming this node's id";
    return true;
  }
  if (self.home_system().registry().get(sender->id()) == sender) {
    *node = "this node's actor " + std::to_string(sender->id()) +
            " (its handle crossed the network, so a peer may have forged it)";
    return true;
  }
  return false;
}

/// At most one warning a second per actor: a peer can send exits as fast as it likes.
void WarnRateLimited(WarningLimit& limit, const char* actor, const std::string& node,
                     const std::string& what) {
  using clock = std::chrono::steady_clock;
  const int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
  int64_t next = limit.next_ns.load();
  if (now < next || !limit.next_ns.compare_exchange_strong(next, now + 1'000'000'000)) {
    ++limit.suppressed;
    return;
  }
  const uint64_t skipped = limit.suppressed.exchange(0);
  spdlog::warn(
      "{} ignored {} from {}: only this node's own actors may stop it{}", actor, what, node,
      skipped == 0
          ? std::string()
          : " (" + std::to_string(skipped) + " more such messages ignored since the last warning)");
}

}  // namespace

bool IsForeignStop(const caf::abstract_actor& self, const caf::mailbox_element& element,
                   WarningLimit& limit) {
  const auto& content = element.content();
  std::string what;
  if (content.match_elements<caf::exit_msg>()) {
    what = "an exit (" + to_string(content.get_as<caf::exit_msg>(0).reason) + ")";
  } else if (content.match_elements<caf::error>() && !element.mid.is_response()) {
    // Error responses are replies to this actor's requests; only asynchronous errors stop it.
    what = "an error message (" + to_string(content.get_as<caf::error>(0)) + ")";
  } else {
    return false;
  }
  std::string node;
  if (!NameableByPeer(self, element.sender, &node)) return false;
  const auto* local = dynamic_cast<const caf::local_actor*>(&self);
  WarnRateLimited(limit, local != nullptr ? local->name() : "an actor", node, what);
  return true;
}

}  // namespace kvmesh
