#include "actors/membership.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>

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
    out->set_incarnation(m.incarnation);
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
  auto it = self->state.members.find(id);
  if (it == self->state.members.end()) return;
  auto& m = it->second;
  m.last_heard = Clock::now();
  if (!m.alive) {
    m.alive = true;
    spdlog::info("node {}: member {} is up ({}:{})", FormatNodeId(self->state.node_id),
                 FormatNodeId(id), m.host, m.cluster_port);
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
  if (!inserted && (m.host != info.host() || m.cluster_port != info.cluster_port())) {
    // Restarted elsewhere: the old connection is useless.
    m.actor = nullptr;
  }
  if (inserted) m.down_since = Clock::now();
  m.host = info.host();
  m.cluster_port = static_cast<uint16_t>(info.cluster_port());
  m.client_port = static_cast<uint16_t>(info.client_port());
  m.incarnation = info.incarnation();
  // Forget seeds that turned out to be this member.
  st.seeds_connecting.erase(m.host + ":" + std::to_string(m.cluster_port));
}

/// Takes in a join answer or heartbeat: the sender is alive, the members it lists are known.
/// Returns false if `bytes` is not a member list.
bool TakeMemberList(membership_pointer self, const std::string& bytes, bool sender_heard,
                    uint64_t* sender_id) {
  proto::MemberList list;
  if (!list.ParseFromString(bytes) || list.sender().node_id() == 0) return false;
  *sender_id = list.sender().node_id();
  if (Blocked(self, *sender_id, self->state.node_id)) return true;
  Merge(self, list.sender());
  for (const auto& m : list.members()) Merge(self, m);
  if (sender_heard && *sender_id != self->state.node_id) MarkHeard(self, *sender_id);
  return true;
}

/// Connects to host:port; on success joins (sends our description) and calls `done` with the
/// peer's node id, or 0 on failure.
void ConnectAndJoin(membership_pointer self, const std::string& host, uint16_t port,
                    std::function<void(uint64_t, peer_actor)> done) {
  auto mm = self->system().middleman().actor_handle();
  const auto timeout = self->state.options.connect_timeout;
  self->request(mm, timeout, caf::connect_atom_v, host, port)
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            if (!ptr) {
              done(0, peer_actor{});
              return;
            }
            auto peer = caf::actor_cast<peer_actor>(std::move(ptr));
            self->request(peer, timeout, atom::join_v, self->state.self_member)
                .then(
                    [=](std::string& answer) {
                      uint64_t sender = 0;
                      if (!FromExpected(self, peer) ||
                          !TakeMemberList(self, answer, true, &sender)) {
                        done(0, peer_actor{});
                        return;
                      }
                      done(sender, peer);
                    },
                    [=](caf::error&) { done(0, peer_actor{}); });
          },
          [=](caf::error&) { done(0, peer_actor{}); });
}

/// Keeps `actor` as member `id`'s cluster actor and watches its connection.
void Adopt(membership_pointer self, uint64_t id, peer_actor actor) {
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end() || id == st.node_id) return;
  if (it->second.actor == actor) return;
  it->second.actor = actor;
  self->monitor(actor);
  // The supervisor can route to it now. Telling it here, before anyone can ask `members`, means
  // whoever saw the member alive through `members` finds the supervisor knowing it too.
  PublishView(self);
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
    ConnectAndJoin(self, host, port, [self, address = address](uint64_t id, peer_actor peer) {
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
    if (Blocked(self, st.node_id, id)) {
      // Partitioned: as if the heartbeats were lost.
    } else if (m.actor) {
      self->send(m.actor, atom::heartbeat_v, heartbeat);
    } else if (!m.connecting) {
      m.connecting = true;
      ConnectAndJoin(self, m.host, m.cluster_port,
                     [self, id = id](uint64_t answered, peer_actor peer) {
                       auto found = self->state.members.find(id);
                       if (found == self->state.members.end()) return;
                       found->second.connecting = false;
                       if (answered == id) Adopt(self, id, peer);
                     });
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
      it = st.members.erase(it);
    } else {
      ++it;
    }
  }
  PublishView(self);
  self->delayed_send(self, st.options.heartbeat_interval, atom::tick_v);
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
        Merge(self, info);
        if (self->state.members.count(info.node_id()) == 0) {
          return ToError(Status::InvalidArgument("join: unusable member description"));
        }
        MarkHeard(self, info.node_id());
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
                                   static_cast<uint16_t>(me.client_port()), true, true, 0});
        if (st.options.fill_local_status) st.options.fill_local_status(out.back());
        for (const auto& [id, m] : st.members) {
          uint64_t silent =
              m.last_heard == Clock::time_point{}
                  ? 0
                  : std::chrono::duration_cast<std::chrono::milliseconds>(now - m.last_heard)
                        .count();
          out.push_back(MemberStatus{id, m.host + ":" + std::to_string(m.cluster_port),
                                     m.client_port, m.alive && static_cast<bool>(m.actor), false,
                                     silent});
        }
        return out;
      },
      [=](atom::open, const std::string& self_member) {
        if (!local() || !self->state.self_member.empty()) return;
        self->state.self_member = self_member;
        Tick(self);
      },
      [=](atom::tick) {
        if (!local()) return;
        Tick(self);
      },
  };
}

}  // namespace kvmesh
