#include "actors/membership.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp_broker.hpp>

#include "actors/database_request.hpp"
#include "common/address.hpp"
#include "common/path.hpp"
#include "messages/cluster.pb.h"

namespace kvmesh {
namespace {

using membership_pointer = peer_actor::stateful_pointer<membership_state>;
using Clock = membership_state::clock;

bool Blocked(membership_pointer self, uint64_t from, uint64_t to) {
  return self->state.options.faults && self->state.options.faults->Blocked(from, to);
}

std::string MemberListBytes(membership_pointer self) {
  proto::MemberList list;
  list.mutable_sender()->ParseFromString(self->state.self_member);
  for (const auto& [id, m] : self->state.members) {
    proto::Member* out = list.add_members();
    out->set_node_id(id);
    out->set_host(m.host);
    out->set_cluster_port(m.cluster_port);
    out->set_client_port(m.client_port);
    out->set_sync(m.sync);
    out->set_incarnation(m.incarnation);
    out->set_name(m.name);
  }
  return list.SerializeAsString();
}

/// Sends the supervisor the view if it changed: members not given up on, with liveness.
void PublishView(membership_pointer self) {
  auto& st = self->state;
  const auto now = Clock::now();
  std::vector<MemberView> view;
  std::vector<std::pair<uint64_t, bool>> summary;
  for (const auto& [id, m] : st.members) {
    if (!m.alive && now - m.down_since > st.options.replica_grace) continue;
    view.push_back(MemberView{id, m.actor, m.alive && static_cast<bool>(m.actor)});
    summary.emplace_back(id, view.back().alive);
  }
  if (st.first_view_sent && summary == st.last_view) return;
  st.first_view_sent = true;
  st.last_view = summary;
  self->send(st.supervisor, atom::members_v, std::move(view));
}

void MarkDown(membership_pointer self, uint64_t id, const char* why) {
  auto it = self->state.members.find(id);
  if (it == self->state.members.end()) return;
  auto& m = it->second;
  if (m.alive) {
    spdlog::warn("node {}: member {} is down ({})", FormatNodeId(self->state.node_id),
                 FormatNodeId(id), why);
    m.alive = false;
    m.down_since = Clock::now();
  }
}

void MarkHeard(membership_pointer self, uint64_t id) {
  // Only members Merge accepted (a usable address, not this node) can be heard from.
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end()) return;
  auto& m = it->second;
  const auto now = Clock::now();
  // Out of the view (see PublishView), after having been heard here before: see the header.
  const bool stale = !m.alive && m.last_heard != Clock::time_point{} &&
                     now - m.down_since > st.options.replica_grace;
  const auto apart = now - m.last_heard;
  m.last_heard = now;
  if (!m.alive) {
    m.alive = true;
    spdlog::info("node {}: member {} is up ({}:{})", FormatNodeId(st.node_id), FormatNodeId(id),
                 m.host, m.cluster_port);
  }
  if (stale) {
    spdlog::warn(
        "node {}: member {} is back after {} s apart, out of this node's placement view: "
        "deletes either side missed may have been collected; repairing every database shared "
        "with it by a full sync (stale repair)",
        FormatNodeId(st.node_id), FormatNodeId(id),
        std::chrono::duration_cast<std::chrono::seconds>(apart).count());
    if (st.options.node_summary) st.options.node_summary->CountStaleMember();
    // The supervisor places over the view: it must hold the member before the repair starts.
    PublishView(self);
    self->send(st.supervisor, atom::full_sync_v, id);
  }
}

/// Learns (or updates) a member from its own or a peer's description.
void Merge(membership_pointer self, const proto::Member& info) {
  auto& st = self->state;
  if (info.node_id() == 0 || info.node_id() == st.node_id || info.cluster_port() == 0 ||
      info.cluster_port() > 65535 || info.host().empty()) {
    return;
  }
  auto [it, inserted] = st.members.try_emplace(info.node_id());
  auto& m = it->second;
  if (!inserted && info.incarnation() <= m.incarnation) return;
  if (!inserted && m.actor) {
    // A restart: our handle names the old process, wherever the new one listens. It must not
    // be kept because its address is unchanged: CAF's middleman keeps answering connects to
    // that address with the old proxy while the proxy lives, and a proxy reached through
    // another node (an indirect BASP route) is never told that its process died, so heartbeats
    // sent to it vanish while the member's own heartbeats keep arriving (issue 13).
    spdlog::info("node {}: member {} restarted (incarnation {} -> {}); dropping the old handle",
                 FormatNodeId(st.node_id), FormatNodeId(info.node_id()), m.incarnation,
                 info.incarnation());
    self->demonitor(m.actor.address());
    m.actor = nullptr;
  }
  if (inserted) {
    m.down_since = Clock::now();
    // Forgotten after being heard: it is still apart since then (see MarkHeard).
    if (auto f = st.forgotten.find(info.node_id()); f != st.forgotten.end()) {
      m.last_heard = f->second.last_heard;
      m.down_since = f->second.down_since;
      st.forgotten.erase(f);
    }
  }
  m.host = info.host();
  m.cluster_port = static_cast<uint16_t>(info.cluster_port());
  m.client_port = static_cast<uint16_t>(info.client_port());
  m.sync = info.sync();
  m.incarnation = info.incarnation();
  m.name = info.name();
  // Forget seeds that turned out to be this member.
  st.seeds_connecting.erase(m.host + ":" + std::to_string(m.cluster_port));
}

/// Keeps `actor` as member `id`'s cluster actor and watches its connection.
void Adopt(membership_pointer self, uint64_t id, peer_actor actor) {
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end() || id == st.node_id) return;
  if (it->second.actor == actor) return;
  if (it->second.actor) self->demonitor(it->second.actor.address());
  it->second.actor = actor;
  it->second.adopted = Clock::now();
  it->second.unreachable_since = {};
  it->second.unreachable_reported = false;
  self->monitor(actor);
  // The supervisor can route to it now. Telling it here, before anyone can ask `members`, means
  // whoever saw the member alive through `members` finds the supervisor knowing it too.
  PublishView(self);
}

/// A member's own join, heartbeat or join answer comes from its cluster actor, over a route
/// that works now: that actor is the one to send to. Adopting it replaces a handle that names
/// an old process of the member or reaches it by a route that lost it (issue 13: heartbeats
/// sent to such a handle vanish while the member's own keep arriving, forever).
void AdoptSender(membership_pointer self, uint64_t id, uint64_t incarnation) {
  const auto& sender = self->current_sender();
  if (!sender || sender->node() == self->node()) return;
  auto it = self->state.members.find(id);
  if (it == self->state.members.end()) return;
  // A sender of another incarnation is not adopted over a handle we have (it may be an old
  // process's message still in a queue); with no handle at all, the one we hear beats none, and
  // if it is an old process's, it goes silent and is replaced (Tick).
  if (it->second.incarnation != incarnation && it->second.actor) return;
  Adopt(self, id, caf::actor_cast<peer_actor>(sender));
}

bool Authenticated(membership_pointer self) {
  const auto& directory = self->state.options.security.directory;
  return directory && directory->enabled();
}

/// True if the sender of the current message may describe member `info` itself: always without
/// TLS; with TLS, only the holder of the node certificate named `info.name()`, and only for
/// the member id that certificate claimed first (security::PeerDirectory::ClaimMember). So no
/// node can join, heartbeat or speak as another.
bool Vouched(membership_pointer self, const proto::Member& info) {
  if (!Authenticated(self)) return true;
  const auto& directory = self->state.options.security.directory;
  const auto& sender = self->current_sender();
  auto identity = sender ? directory->Lookup(sender->node()) : std::nullopt;
  if (identity && identity->role == security::PeerRole::kNode && identity->name == info.name() &&
      directory->ClaimMember(sender->node(), info.node_id())) {
    return true;
  }
  auto& st = self->state;
  const auto now = Clock::now();
  if (now - st.last_refusal_logged > std::chrono::seconds(10)) {
    st.last_refusal_logged = now;
    spdlog::warn("node {}: ignored a description of member {} (\"{}\") from {}: {}",
                 FormatNodeId(st.node_id), FormatNodeId(info.node_id()), info.name(),
                 identity ? "the " + std::string(security::RoleName(identity->role)) +
                                " certificate \"" + identity->name + "\""
                          : std::string("an unauthenticated sender"),
                 identity && identity->name == info.name()
                     ? "that member id was first claimed by another certificate"
                     : "only the node a certificate names may speak for it");
  }
  return false;
}

/// Takes in a join answer or heartbeat: the sender is alive, the members it lists are known.
/// Returns false if `bytes` is not a member list.
bool TakeMemberList(membership_pointer self, const std::string& bytes, bool sender_heard,
                    uint64_t* sender_id) {
  proto::MemberList list;
  if (!list.ParseFromString(bytes) || list.sender().node_id() == 0) return false;
  *sender_id = list.sender().node_id();
  if (Blocked(self, *sender_id, self->state.node_id)) return true;
  if (!Vouched(self, list.sender())) {
    *sender_id = 0;
    return true;
  }
  Merge(self, list.sender());
  for (const auto& m : list.members()) {
    // With TLS, what others say of a member only introduces it (we connect and hear it
    // ourselves); its address and incarnation change only by its own word.
    if (!Authenticated(self) || self->state.members.count(m.node_id()) == 0) Merge(self, m);
  }
  if (sender_heard && *sender_id != self->state.node_id) {
    MarkHeard(self, *sender_id);
    AdoptSender(self, *sender_id, list.sender().incarnation());
  }
  return true;
}

/// Connects to host:port; on success joins (sends our description) and calls `done` with the
/// peer's node id, or 0 on failure.
void ConnectAndJoin(membership_pointer self, const std::string& host, uint16_t port,
                    std::function<void(uint64_t, peer_actor, std::string)> done) {
  const auto timeout = self->state.options.connect_timeout;
  // A connection of its own every time (see SpawnConnector): a reconnect must make one.
  auto connector = SpawnConnector(self->system(), self->state.options.security,
                                  self->state.options.max_message_bytes, timeout);
  self->request(connector, timeout, caf::connect_atom_v, host, port)
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            if (!ptr) {
              done(0, peer_actor{}, "no actor is published there");
              return;
            }
            auto peer = caf::actor_cast<peer_actor>(std::move(ptr));
            self->request(peer, timeout, atom::join_v, self->state.self_member)
                .then(
                    [=](std::string& answer) {
                      uint64_t sender = 0;
                      if (!FromExpected(self, peer) ||
                          !TakeMemberList(self, answer, true, &sender)) {
                        done(0, peer_actor{}, "the join answer is not a member list");
                        return;
                      }
                      if (sender == 0) {
                        done(0, peer_actor{},
                             "the join answer's certificate does not name its "
                             "sender (see the node's log)");
                        return;
                      }
                      done(sender, peer, "");
                    },
                    [=](caf::error& err) { done(0, peer_actor{}, "join: " + to_string(err)); });
          },
          [=](caf::error& err) { done(0, peer_actor{}, "connect: " + to_string(err)); });
}

void Tick(membership_pointer self) {
  auto& st = self->state;
  const auto now = Clock::now();
  // Seeds not yet known as members.
  for (auto& [address, connecting] : st.seeds_connecting) {
    if (connecting) continue;
    std::string host;
    uint16_t port = 0;
    if (!ParseHostPort(address, &host, &port).ok()) continue;
    connecting = true;
    ConnectAndJoin(self, host, port,
                   [self, address = address](uint64_t id, peer_actor peer, const std::string&) {
                     auto it = self->state.seeds_connecting.find(address);
                     if (it != self->state.seeds_connecting.end()) it->second = false;
                     if (id != 0 && id != self->state.node_id) {
                       Adopt(self, id, peer);
                     } else if (id == self->state.node_id) {
                       self->state.seeds_connecting.erase(address);  // our own address
                     }
                   });
  }
  std::string heartbeat = MemberListBytes(self);
  for (auto& [id, m] : st.members) {
    if (m.actor && !m.alive &&
        now - std::max(m.down_since, m.adopted) > st.options.failure_timeout) {
      // Silent for a whole failure timeout more over a handle that did not fail: whatever route
      // it has may be one that lost the member (see SpawnFreshConnect). Connect anew; CAF keeps
      // a direct connection that still works, so this costs a connect when nothing was wrong.
      spdlog::debug("node {}: member {} silent over a live handle; reconnecting",
                    FormatNodeId(st.node_id), FormatNodeId(id));
      self->demonitor(m.actor.address());
      m.actor = nullptr;
    }
    if (Blocked(self, st.node_id, id)) {
      // Partitioned: as if the heartbeats were lost.
    } else if (m.actor) {
      self->send(m.actor, atom::heartbeat_v, heartbeat);
    } else if (!m.connecting) {
      m.connecting = true;
      ConnectAndJoin(self, m.host, m.cluster_port,
                     [self, id = id](uint64_t answered, peer_actor peer, const std::string& why) {
                       auto found = self->state.members.find(id);
                       if (found == self->state.members.end()) return;
                       found->second.connecting = false;
                       if (answered == id) {
                         Adopt(self, id, peer);
                       } else {
                         found->second.last_connect_error =
                             answered != 0 ? "answered by node " + FormatNodeId(answered) : why;
                       }
                     });
    }
    // Heard but not reachable: our heartbeats go nowhere, so the member sees us down. Said once
    // per episode, with why the connects fail, since nothing else would show it.
    if (m.alive && !m.actor && !m.unreachable_reported) {
      if (m.unreachable_since == Clock::time_point{}) {
        m.unreachable_since = now;
      } else if (now - m.unreachable_since > st.options.failure_timeout) {
        m.unreachable_reported = true;
        spdlog::warn(
            "node {}: member {} is heard but cannot be reached ({}:{}): {}",
            FormatNodeId(st.node_id), FormatNodeId(id), m.host, m.cluster_port,
            m.last_connect_error.empty() ? "no connect answered yet" : m.last_connect_error);
      }
    }
    if (m.alive && now - m.last_heard > st.options.failure_timeout) {
      MarkDown(self, id, "no heartbeat within the failure timeout");
    }
  }
  // Members down for twice the grace period are forgotten (their replicas moved after one), so
  // dead nodes are not gossiped forever; a forgotten node that comes back joins again.
  for (auto it = st.members.begin(); it != st.members.end();) {
    const auto& m = it->second;
    if (!m.alive && !m.connecting && now - m.down_since > 2 * st.options.replica_grace) {
      spdlog::info("node {}: forgetting member {}, down since {} s", FormatNodeId(st.node_id),
                   FormatNodeId(it->first),
                   std::chrono::duration_cast<std::chrono::seconds>(now - m.down_since).count());
      if (m.last_heard != Clock::time_point{}) {
        // Bounded: beyond that many, one is let go (it then looks new if it comes back).
        constexpr size_t kMaxForgotten = 4096;
        if (st.forgotten.size() >= kMaxForgotten) st.forgotten.erase(st.forgotten.begin());
        st.forgotten[it->first] = {m.last_heard, m.down_since};
      }
      it = st.members.erase(it);
    } else {
      ++it;
    }
  }
  PublishView(self);
  self->delayed_send(self, st.options.heartbeat_interval, atom::tick_v);
}

// -- Node-level anti-entropy (replication/node_summary.hpp) --------------------------------------

void SendSummaryPage(membership_pointer self, uint64_t id);

/// Ends this round's exchange with member `id` (what is left of its pages goes on next round).
void EndSummary(membership_pointer self, uint64_t id, bool stop_paging) {
  auto it = self->state.members.find(id);
  if (it == self->state.members.end()) return;
  it->second.summary_busy = false;
  if (stop_paging) {
    it->second.summary_paging = false;
    it->second.summary_after.clear();
  }
}

/// Sends member `id` a summary request and hands its parsed answer to `then`; on any failure
/// (no handle, the link cut, an error, a forged or malformed answer) ends the exchange.
template <class Then>
void AskSummary(membership_pointer self, uint64_t id, const proto::NodeSummaryRequest& request,
                Then then) {
  auto it = self->state.members.find(id);
  if (it == self->state.members.end() || !it->second.actor ||
      Blocked(self, self->state.node_id, id)) {
    EndSummary(self, id, false);
    return;
  }
  auto target = it->second.actor;
  self->request(target, self->state.options.connect_timeout, atom::summary_v,
                request.SerializeAsString())
      .then(
          [=](std::string& bytes) {
            proto::NodeSummaryReply reply;
            if (!FromExpected(self, target) || Blocked(self, id, self->state.node_id) ||
                !reply.ParseFromString(bytes)) {
              EndSummary(self, id, false);
              return;
            }
            then(reply);
          },
          [=](caf::error& err) {
            spdlog::debug("node {}: summary exchange with {} failed: {}",
                          FormatNodeId(self->state.node_id), FormatNodeId(id), to_string(err));
            EndSummary(self, id, false);
          });
}

/// The start of a round with member `id`: one total. Equal: done until the next round.
void SendSummaryTotals(membership_pointer self, uint64_t id) {
  auto& st = self->state;
  const replication::NodeSummary::Totals totals = st.options.node_summary->TotalsWith(id);
  proto::NodeSummaryRequest request;
  request.set_from(st.node_id);
  request.set_hash(totals.hash);
  request.set_count(totals.count);
  st.options.node_summary->CountTotals();
  AskSummary(self, id, request, [self, id](const proto::NodeSummaryReply& reply) {
    auto it = self->state.members.find(id);
    if (it == self->state.members.end()) return;
    if (reply.equal()) {
      EndSummary(self, id, true);
      return;
    }
    it->second.summary_paging = true;
    it->second.summary_after.clear();
    it->second.summary_pages_left = replication::kSummaryPagesPerRound;
    SendSummaryPage(self, id);
  });
}

/// The next page of this node's entries shared with member `id`; the databases its answer names
/// go to the supervisor to sync or wake.
void SendSummaryPage(membership_pointer self, uint64_t id) {
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end()) return;
  proto::NodeSummaryRequest request;
  request.set_from(st.node_id);
  request.set_page(true);
  request.set_after(it->second.summary_after);
  std::string until;
  bool to_end = false;
  for (auto& entry : st.options.node_summary->Page(id, it->second.summary_after, &until, &to_end)) {
    proto::SummaryEntry* out = request.add_entries();
    out->set_path(std::move(entry.path));
    out->set_digest(entry.digest);
  }
  request.set_until(until);
  request.set_to_end(to_end);
  st.options.node_summary->CountPage();
  AskSummary(self, id, request, [self, id, until, to_end](const proto::NodeSummaryReply& reply) {
    auto& st = self->state;
    auto it = st.members.find(id);
    if (it == st.members.end()) return;
    auto& m = it->second;
    if (reply.differ_size() > 0 &&
        static_cast<size_t>(reply.differ_size()) <= replication::kSummaryMaxDiffer) {
      std::vector<std::string> paths(reply.differ().begin(), reply.differ().end());
      st.options.node_summary->CountWoken(paths.size());
      self->send(st.supervisor, atom::summary_v, id, std::move(paths));
    }
    if (!reply.compared_until().empty() && reply.compared_until() > m.summary_after) {
      m.summary_after = reply.compared_until();
    } else if (to_end) {
      EndSummary(self, id, true);
      return;
    } else {
      m.summary_after = until;
    }
    if (--m.summary_pages_left > 0) {
      SendSummaryPage(self, id);
    } else {
      EndSummary(self, id, false);
    }
  });
}

/// One node-level round: one exchange with each reachable member not still in one.
void SummaryRound(membership_pointer self) {
  auto& st = self->state;
  for (auto& [id, m] : st.members) {
    if (m.summary_busy || !m.alive || !m.actor) continue;
    m.summary_busy = true;
    if (m.summary_paging) {
      m.summary_pages_left = replication::kSummaryPagesPerRound;
      SendSummaryPage(self, id);
    } else {
      SendSummaryTotals(self, id);
    }
  }
}

/// A member's summary request (see peer_actor).
caf::result<std::string> AnswerSummary(membership_pointer self, const std::string& bytes) {
  auto& st = self->state;
  proto::NodeSummaryRequest request;
  if (!st.options.node_summary) {
    return ToError(Status::Unavailable("node-level anti-entropy is off on this node"));
  }
  if (!request.ParseFromString(bytes) || request.from() == 0 || request.from() == st.node_id) {
    return ToError(Status::InvalidArgument("summary: not a summary request"));
  }
  const uint64_t from = request.from();
  if (Blocked(self, from, st.node_id)) {
    return ToError(Status::Unavailable("partitioned (fault injection)"));
  }
  // A node speaks only for itself: with TLS the connection's certificate must be `from`'s.
  if (Authenticated(self)) {
    const auto& sender = self->current_sender();
    if (!sender || !st.options.security.directory->Vouches(sender->node(), from)) {
      return ToError(
          Status::PermissionDenied("a summary request for node " + FormatNodeId(from) +
                                   " came from a peer whose certificate is not that node's"));
    }
  }
  proto::NodeSummaryReply reply;
  if (!request.page()) {
    const replication::NodeSummary::Totals mine = st.options.node_summary->TotalsWith(from);
    reply.set_equal(mine.hash == request.hash() && mine.count == request.count());
    return reply.SerializeAsString();
  }
  std::vector<replication::NodeSummary::Entry> theirs;
  theirs.reserve(request.entries_size());
  for (const auto& e : request.entries()) theirs.push_back({e.path(), e.digest()});
  std::vector<std::string> differ;
  std::string compared_until;
  Status s = st.options.node_summary->Compare(from, request.after(), request.until(),
                                              request.to_end(), theirs, &differ, &compared_until);
  if (!s.ok()) return ToError(s);
  for (auto& path : differ) reply.add_differ(std::move(path));
  reply.set_compared_until(compared_until);
  return reply.SerializeAsString();
}

}  // namespace

peer_actor::behavior_type membership_impl(membership_pointer self, uint64_t node_id,
                                          matcher_supervisor_actor supervisor,
                                          MembershipOptions options) {
  auto& st = self->state;
  st.node_id = node_id;
  st.supervisor = std::move(supervisor);
  st.options = std::move(options);
  for (const auto& seed : st.options.seeds) st.seeds_connecting.emplace(seed, false);

  self->set_down_handler([self](caf::down_msg& msg) {
    for (auto& [id, m] : self->state.members) {
      if (m.actor && m.actor.address() == msg.source) {
        m.actor = nullptr;
        MarkDown(self, id, "connection lost");
      }
    }
    PublishView(self);
  });
  // Exit messages from the network are ignored; the node stops this actor with a kill.
  self->set_exit_handler([](caf::exit_msg&) {});
  // CAF's default would stop the actor on an asynchronous error message, a peer's to send.
  self->set_error_handler(
      [](caf::error&) { spdlog::debug("membership ignored an error message"); });
  self->set_default_handler(caf::drop);

  auto local = [self] {
    return self->current_sender() != nullptr && self->current_sender()->node() == self->node();
  };
  return {
      [=](atom::join, const std::string& bytes) -> caf::result<std::string> {
        proto::Member info;
        if (!info.ParseFromString(bytes) || info.node_id() == 0) {
          return ToError(Status::InvalidArgument("join: not a member description"));
        }
        if (Blocked(self, info.node_id(), self->state.node_id)) {
          return ToError(Status::Unavailable("partitioned (fault injection)"));
        }
        if (!Vouched(self, info)) {
          return ToError(Status::PermissionDenied(
              "join: the certificate of this connection does not name member " +
              FormatNodeId(info.node_id()) + " (\"" + info.name() + "\")"));
        }
        Merge(self, info);
        if (self->state.members.count(info.node_id()) == 0) {
          return ToError(Status::InvalidArgument("join: unusable member description"));
        }
        MarkHeard(self, info.node_id());
        AdoptSender(self, info.node_id(), info.incarnation());
        PublishView(self);
        return MemberListBytes(self);
      },
      [=](atom::heartbeat, const std::string& bytes) {
        uint64_t sender = 0;
        if (!TakeMemberList(self, bytes, true, &sender)) return;
        PublishView(self);
      },
      [=](atom::replica, const std::string& raw_path) -> caf::result<database_peer_actor> {
        // A peer's request, from the network: this is where the node normalises its path
        // (the supervisor takes normalised paths).
        std::string path;
        Status s = NormalizeDatabasePath(raw_path, &path);
        if (!s.ok()) return ToError(Status(s.code(), s.message() + ": " + Quote(raw_path)));
        auto promise = self->make_response_promise<database_peer_actor>();
        auto supervisor = self->state.supervisor;
        self->request(supervisor, self->state.options.connect_timeout, atom::replica_v, path,
                      self->state.node_id)
            .then(
                [=](database_peer_actor& db) mutable {
                  if (FromExpected(self, supervisor)) {
                    promise.deliver(db);
                  } else {
                    promise.deliver(ForgedReply());
                  }
                },
                [=](caf::error& err) mutable { promise.deliver(err); });
        return promise;
      },
      [=](atom::members) {
        auto& st = self->state;
        const auto now = Clock::now();
        std::vector<MemberStatus> out;
        proto::Member me;
        me.ParseFromString(st.self_member);
        out.push_back(MemberStatus{st.node_id, me.host() + ":" + std::to_string(me.cluster_port()),
                                   static_cast<uint16_t>(me.client_port()), true, true, 0,
                                   me.sync()});
        if (st.options.fill_local_status) st.options.fill_local_status(out.back());
        for (const auto& [id, m] : st.members) {
          uint64_t silent =
              m.last_heard == Clock::time_point{}
                  ? 0
                  : std::chrono::duration_cast<std::chrono::milliseconds>(now - m.last_heard)
                        .count();
          out.push_back(MemberStatus{id, m.host + ":" + std::to_string(m.cluster_port),
                                     m.client_port, m.alive && static_cast<bool>(m.actor), false,
                                     silent, m.sync});
        }
        if (st.options.fill_member_status) {
          for (auto& member : out) st.options.fill_member_status(member);
        }
        return out;
      },
      [=](atom::open, const std::string& self_member) {
        if (!local() || !self->state.self_member.empty()) return;
        self->state.self_member = self_member;
        Tick(self);
        if (self->state.options.node_summary && self->state.options.sync_interval.count() > 0) {
          self->delayed_send(self, self->state.options.sync_interval, atom::summary_v,
                             atom::tick_v);
        }
      },
      [=](atom::tick) {
        if (!local()) return;
        Tick(self);
      },
      [=](atom::summary, const std::string& bytes) -> caf::result<std::string> {
        return AnswerSummary(self, bytes);
      },
      [=](atom::summary, atom::tick) {
        if (!local()) return;
        SummaryRound(self);
        self->delayed_send(self, self->state.options.sync_interval, atom::summary_v, atom::tick_v);
      },
  };
}

}  // namespace kvmesh
