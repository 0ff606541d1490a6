#include "actors/membership.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp_broker.hpp>

#include <algorithm>
#include <cmath>

#include "actors/database_request.hpp"
#include "common/address.hpp"
#include "common/path.hpp"
#include "messages/cluster.pb.h"

namespace kvmesh {
namespace {

using membership_pointer = peer_actor::stateful_pointer<membership_state>;
using Clock = membership_state::clock;
using proto::MemberUpdate;

bool Blocked(membership_pointer self, uint64_t from, uint64_t to) {
  return self->state.options.faults && self->state.options.faults->Blocked(from, to);
}

/// Counts one message of `kind` (a MembershipCounters field) with `bytes` of payload.
void Count(membership_pointer self, std::atomic<uint64_t> MembershipCounters::*kind, size_t bytes) {
  if (const auto& counters = self->state.options.counters) {
    (counters.get()->*kind).fetch_add(1, std::memory_order_relaxed);
    counters->bytes.fetch_add(bytes, std::memory_order_relaxed);
  }
}

void CountEvent(membership_pointer self, std::atomic<uint64_t> MembershipCounters::*kind) {
  if (const auto& counters = self->state.options.counters) {
    (counters.get()->*kind).fetch_add(1, std::memory_order_relaxed);
  }
}

/// The probe timeout: the rest of the period is left for the indirect probes.
caf::timespan ProbeTimeout(membership_pointer self) {
  return self->state.options.heartbeat_interval * 2 / 5;
}

/// How long a suspect has to refute: failure_timeout, or more in a cluster so large that news
/// takes longer to reach the suspect (Lifeguard's 4 * log10(n) periods).
caf::timespan SuspicionTimeout(membership_pointer self) {
  const auto& st = self->state;
  const double periods = 4 * std::log10(static_cast<double>(st.members.size() + 2));
  const auto scaled =
      std::chrono::duration_cast<caf::timespan>(st.options.heartbeat_interval * periods);
  return std::max(st.options.failure_timeout, scaled);
}

/// How many times an update is piggybacked: kRetransmitMult * ceil(log2(n + 1)).
int RetransmitLimit(membership_pointer self) {
  const double n = static_cast<double>(self->state.members.size() + 1);
  return kRetransmitMult * static_cast<int>(std::ceil(std::log2(n + 1)));
}

/// This node's description with its current seq.
proto::Member SelfMember(membership_pointer self) {
  proto::Member me;
  me.ParseFromString(self->state.self_member);
  me.set_seq(self->state.self_seq);
  return me;
}

proto::Member Describe(uint64_t id, const membership_state::Member& m) {
  proto::Member out;
  out.set_node_id(id);
  out.set_host(m.host);
  out.set_cluster_port(m.cluster_port);
  out.set_client_port(m.client_port);
  out.set_sync(m.sync);
  out.set_incarnation(m.incarnation);
  out.set_name(m.name);
  out.set_seq(m.seq);
  return out;
}

/// What this node holds of member `id`, as an update.
MemberUpdate StateOf(uint64_t id, const membership_state::Member& m) {
  MemberUpdate u;
  u.set_kind(!m.alive                                 ? MemberUpdate::DEAD
             : m.suspect_since != Clock::time_point{} ? MemberUpdate::SUSPECT
                                                      : MemberUpdate::ALIVE);
  *u.mutable_member() = Describe(id, m);
  return u;
}

/// Queues news of member `id` (this node: ALIVE of itself) to piggyback, replacing older news
/// of it.
void Enqueue(membership_pointer self, uint64_t id, uint64_t from) {
  auto& st = self->state;
  MemberUpdate u;
  if (id == st.node_id) {
    u.set_kind(MemberUpdate::ALIVE);
    *u.mutable_member() = SelfMember(self);
  } else {
    auto it = st.members.find(id);
    if (it == st.members.end()) return;
    u = StateOf(id, it->second);
    if (u.kind() != MemberUpdate::ALIVE) u.set_from(from);
  }
  st.gossip[id] = membership_state::Gossip{u.SerializeAsString(), 0};
}

/// Adds the updates for a message to member `to`: what we hold against it if it is suspect or
/// down (so it can refute at once), then up to kMaxPiggyback queued updates, fewest-sent first;
/// an update sent RetransmitLimit times is dropped.
template <class Updates>
void Piggyback(membership_pointer self, uint64_t to, Updates* out) {
  auto& st = self->state;
  auto it = st.members.find(to);
  if (it != st.members.end() &&
      (!it->second.alive || it->second.suspect_since != Clock::time_point{})) {
    MemberUpdate notice = StateOf(to, it->second);
    notice.set_from(st.node_id);
    *out->Add() = std::move(notice);
  }
  std::vector<std::pair<int, uint64_t>> order;
  order.reserve(st.gossip.size());
  for (const auto& [id, g] : st.gossip) {
    if (id != to) order.emplace_back(g.sent, id);
  }
  const size_t n = std::min(order.size(), static_cast<size_t>(kMaxPiggyback));
  std::partial_sort(order.begin(), order.begin() + n, order.end());
  const int limit = RetransmitLimit(self);
  for (size_t i = 0; i < n; ++i) {
    auto g = st.gossip.find(order[i].second);
    out->Add()->ParseFromString(g->second.update);
    if (++g->second.sent >= limit) st.gossip.erase(g);
  }
}

/// A probe, ping-req or ack for member `to`, about `target`.
std::string ProbeBytes(membership_pointer self, uint64_t target, uint64_t to) {
  proto::Probe probe;
  *probe.mutable_sender() = SelfMember(self);
  probe.set_target(target);
  Piggyback(self, to, probe.mutable_updates());
  return probe.SerializeAsString();
}

/// The join answer: us and every member we know of.
std::string MemberListBytes(membership_pointer self) {
  proto::MemberList list;
  *list.mutable_sender() = SelfMember(self);
  for (const auto& [id, m] : self->state.members) *list.add_members() = StateOf(id, m);
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

void MarkDown(membership_pointer self, uint64_t id, const std::string& why) {
  auto it = self->state.members.find(id);
  if (it == self->state.members.end()) return;
  auto& m = it->second;
  m.suspect_since = {};
  if (m.alive) {
    spdlog::warn("node {}: member {} is down ({})", FormatNodeId(self->state.node_id),
                 FormatNodeId(id), why);
    m.alive = false;
    m.down_since = Clock::now();
  }
}

void MarkAlive(membership_pointer self, uint64_t id) {
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end()) return;
  auto& m = it->second;
  m.suspect_since = {};
  const auto now = Clock::now();
  // Out of the view (see PublishView), after having been heard here before: see the header.
  // Whoever says it is alive again (itself or gossip), the repair is due from now on.
  const bool stale = !m.alive && m.last_heard != Clock::time_point{} &&
                     now - m.down_since > st.options.replica_grace;
  const auto apart = now - m.last_heard;
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

void MarkSuspect(membership_pointer self, uint64_t id, uint64_t from) {
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end()) return;
  // Suspect is still alive: back from down, it goes through MarkAlive (stale repair).
  if (!it->second.alive) MarkAlive(self, id);
  if (it->second.suspect_since == Clock::time_point{}) {
    it->second.suspect_since = Clock::now();
    spdlog::info("node {}: member {} is suspect (no ack to {}'s probes)", FormatNodeId(st.node_id),
                 FormatNodeId(id), FormatNodeId(from));
  }
}

/// Learns (or updates) a member from its own or a peer's description: its address, and a new
/// incarnation (a restart: the old handle goes). Liveness is ApplyUpdate's.
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
    // another node (an indirect BASP route) is never told that its process died, so probes
    // sent to it vanish while the member's own keep arriving (issue 13).
    spdlog::info("node {}: member {} restarted (incarnation {} -> {}); dropping the old handle",
                 FormatNodeId(st.node_id), FormatNodeId(info.node_id()), m.incarnation,
                 info.incarnation());
    self->demonitor(m.actor.address());
    m.actor = nullptr;
  }
  if (inserted) {
    m.down_since = Clock::now();
    // Forgotten after being heard: it is still apart since then (see MarkAlive).
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
  m.seq = 0;  // a new incarnation counts its refutations afresh (ApplyUpdate sets it)
  m.name = info.name();
  // Forget seeds that turned out to be this member.
  st.seeds_connecting.erase(m.host + ":" + std::to_string(m.cluster_port));
}

bool Authenticated(membership_pointer self) {
  const auto& directory = self->state.options.security.directory;
  return directory && directory->enabled();
}

/// News that this node is suspect or down: refute it with a higher seq, spread as ALIVE.
void Refute(membership_pointer self, const MemberUpdate& u) {
  auto& st = self->state;
  proto::Member me;
  me.ParseFromString(st.self_member);
  if (u.kind() == MemberUpdate::ALIVE || u.member().incarnation() != me.incarnation() ||
      u.member().seq() < st.self_seq) {
    return;  // not against us, of an older run of this node, or already refuted
  }
  if (u.member().seq() == UINT64_MAX) return;  // cannot be outbid (hearsay is capped: above)
  st.self_seq = u.member().seq() + 1;
  spdlog::info("node {}: refuting that it is {} (by node {}): seq {}", FormatNodeId(st.node_id),
               u.kind() == MemberUpdate::SUSPECT ? "suspect" : "down", FormatNodeId(u.from()),
               st.self_seq);
  CountEvent(self, &MembershipCounters::refutations);
  Enqueue(self, st.node_id, 0);
}

/// Takes in news of a member (from gossip, a join answer, or with `own_word` the member's own
/// message). Of two pieces of news, the higher (incarnation, seq) wins; at an equal one SUSPECT
/// beats ALIVE and DEAD beats both. News that changed what we hold is passed on.
void ApplyUpdate(membership_pointer self, const MemberUpdate& u, bool own_word) {
  auto& st = self->state;
  const proto::Member& info = u.member();
  const uint64_t id = info.node_id();
  if (id == st.node_id) {
    Refute(self, u);
    return;
  }
  auto it = st.members.find(id);
  const bool known = it != st.members.end();
  // A stranger is learnt only from news that it is alive.
  if (!known && u.kind() != MemberUpdate::ALIVE) return;
  // A seq moves by one per refutation: hearsay far ahead of what we know is a forgery or a bug,
  // and would leave the member unable to refute it (its seq cannot go past the largest).
  const uint64_t known_seq = known ? it->second.seq : 0;
  if (!own_word && info.seq() > known_seq + kMaxHearsaySeqJump) return;
  // With TLS, what others say of a member only introduces it (we connect and hear it
  // ourselves); its address and incarnation change only by its own word.
  if (known && !own_word && Authenticated(self) && info.incarnation() != it->second.incarnation) {
    return;
  }
  const uint64_t old_incarnation = known ? it->second.incarnation : 0;
  Merge(self, info);
  it = st.members.find(id);
  if (it == st.members.end()) return;  // an unusable description
  auto& m = it->second;
  if (info.incarnation() < m.incarnation) return;  // news of an older run
  const bool newer = !known || info.incarnation() > old_incarnation || info.seq() > m.seq;
  const bool same = !newer && info.seq() == m.seq;
  const bool suspect = m.suspect_since != Clock::time_point{};
  bool changed = false;
  switch (u.kind()) {
    case MemberUpdate::ALIVE:
      if (newer) {
        m.seq = info.seq();
        MarkAlive(self, id);
        changed = true;
      }
      break;
    case MemberUpdate::SUSPECT:
      if (newer || (same && m.alive && !suspect)) {
        m.seq = info.seq();
        MarkSuspect(self, id, u.from());
        changed = true;
      }
      break;
    case MemberUpdate::DEAD:
      if (newer || (same && m.alive)) {
        m.seq = info.seq();
        MarkDown(self, id, "declared down by node " + FormatNodeId(u.from()));
        changed = true;
      }
      break;
    default:
      return;
  }
  if (changed) Enqueue(self, id, u.from());
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

/// A member's own join, probe or join answer comes from its cluster actor, over a route that
/// works now: that actor is the one to send to. Adopting it replaces a handle that names an old
/// process of the member or reaches it by a route that lost it (issue 13: probes sent to such
/// a handle vanish while the member's own keep arriving, forever).
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

/// True if the sender of the current message may describe member `info` itself: always without
/// TLS; with TLS, only the holder of the node certificate named `info.name()`, and only for
/// the member id that certificate claimed first (security::PeerDirectory::ClaimMember). So no
/// node can join, probe or speak as another.
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

/// A member's own message (join, probe, ack, join answer) with its description: it is alive at
/// its (incarnation, seq), and the actor that sent it is the one to send to.
void HearFrom(membership_pointer self, const proto::Member& info) {
  MemberUpdate u;
  u.set_kind(MemberUpdate::ALIVE);
  *u.mutable_member() = info;
  ApplyUpdate(self, u, true);
  auto it = self->state.members.find(info.node_id());
  if (it == self->state.members.end()) return;
  it->second.last_heard = Clock::now();
  AdoptSender(self, info.node_id(), info.incarnation());
}

/// Takes in a probe, ping-req or ack from the network. `expected_sender` (0: any) is the node it
/// must come from (an ack), `for_us` whether its target must be this node (a ping). False if it
/// is malformed, partitioned away, not vouched for, or not as expected: then nothing of it is
/// taken.
bool TakeProbe(membership_pointer self, const std::string& bytes, uint64_t expected_sender,
               bool for_us, proto::Probe* probe) {
  auto& st = self->state;
  if (!probe->ParseFromString(bytes)) return false;
  const proto::Member& sender = probe->sender();
  if (sender.node_id() == 0 || sender.node_id() == st.node_id) return false;
  if (expected_sender != 0 && sender.node_id() != expected_sender) return false;
  if (for_us && probe->target() != st.node_id) return false;
  if (Blocked(self, sender.node_id(), st.node_id)) return false;
  if (!Vouched(self, sender)) return false;
  HearFrom(self, sender);
  if (st.members.count(sender.node_id()) == 0) return false;  // an unusable description
  // At most what an honest sender piggybacks (plus the target's own news): a message may not
  // introduce or change members without bound.
  int taken = 0;
  for (const auto& u : probe->updates()) {
    if (++taken > kMaxPiggyback + 1) break;
    ApplyUpdate(self, u, false);
  }
  return true;
}

/// Takes in a join answer: the sender is alive, the members it lists are known. Returns false
/// if `bytes` is not a member list; `*sender_id` gets its sender (0 if not vouched for).
bool TakeMemberList(membership_pointer self, const std::string& bytes, uint64_t* sender_id) {
  proto::MemberList list;
  if (!list.ParseFromString(bytes) || list.sender().node_id() == 0) return false;
  *sender_id = list.sender().node_id();
  if (Blocked(self, *sender_id, self->state.node_id)) return true;
  if (!Vouched(self, list.sender())) {
    *sender_id = 0;
    return true;
  }
  if (*sender_id != self->state.node_id) HearFrom(self, list.sender());
  // A join answer is one node's view, maybe stale (it may have been cut off until now): it
  // introduces members and newer incarnations, it does not suspect or down members we know.
  // Members it holds down that we do not know are learnt as down, so that placement keeps
  // their place as on every other node.
  for (const auto& entry : list.members()) {
    MemberUpdate u = entry;
    const uint64_t id = u.member().node_id();
    if (id == self->state.node_id) continue;
    if (u.kind() != MemberUpdate::DEAD) {
      u.set_kind(MemberUpdate::ALIVE);
      ApplyUpdate(self, u, false);
    } else if (self->state.members.count(id) == 0) {
      Merge(self, u.member());
      auto it = self->state.members.find(id);
      if (it != self->state.members.end()) it->second.seq = u.member().seq();
    }
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
          [=](const caf::node_id& node, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            if (node == self->system().node()) {
              // This node itself (a seed list shared by all nodes names each of them): CAF hands
              // back our own actor, whose join handler would refuse our description. The caller
              // learns it was us (Tick then tries that seed less often).
              done(self->state.node_id, peer_actor{}, "this node's own address");
              return;
            }
            if (!ptr) {
              done(0, peer_actor{}, "no actor is published there");
              return;
            }
            auto peer = caf::actor_cast<peer_actor>(std::move(ptr));
            const std::string join = SelfMember(self).SerializeAsString();
            Count(self, &MembershipCounters::joins, join.size());
            self->request(peer, timeout, atom::join_v, join)
                .then(
                    [=](std::string& answer) {
                      uint64_t sender = 0;
                      if (!FromExpected(self, peer) || !TakeMemberList(self, answer, &sender)) {
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

/// Connects anew to member `id` (keeping the handle we have until the new one answers).
void Reconnect(membership_pointer self, uint64_t id) {
  auto it = self->state.members.find(id);
  if (it == self->state.members.end() || it->second.connecting) return;
  it->second.connecting = true;
  ConnectAndJoin(self, it->second.host, it->second.cluster_port,
                 [self, id](uint64_t answered, peer_actor peer, const std::string& why) {
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

/// Pings member `id` (if we have a handle and no partition is in the way); `acked` runs on its
/// ack.
template <class Acked>
void Ping(membership_pointer self, uint64_t id, caf::timespan timeout, Acked acked) {
  auto& st = self->state;
  auto it = st.members.find(id);
  if (it == st.members.end() || !it->second.actor) return;
  auto target = it->second.actor;
  std::string ping = ProbeBytes(self, id, id);
  Count(self, &MembershipCounters::pings, ping.size());
  // Partitioned (fault injection): lost on the way, its piggybacked news spent as on a real
  // network (news made while cut off is not kept fresh for after the partition heals).
  if (Blocked(self, st.node_id, id)) return;
  self->request(target, timeout, atom::ping_v, std::move(ping))
      .then(
          [=](std::string& bytes) mutable {
            proto::Probe ack;
            if (FromExpected(self, target) && TakeProbe(self, bytes, id, false, &ack)) acked();
          },
          [](caf::error&) {});
}

/// The start of a protocol period's probe: the next member of the shuffled round-robin.
void StartProbe(membership_pointer self) {
  auto& st = self->state;
  st.probe_target = 0;
  st.probe_acked = false;
  st.probe_direct_acked = false;
  const uint64_t number = ++st.probe_number;
  for (int pass = 0; pass < 2 && st.probe_target == 0; ++pass) {
    if (st.probe_order.empty()) {
      for (const auto& [id, m] : st.members) {
        if (m.alive) st.probe_order.push_back(id);
      }
      std::shuffle(st.probe_order.begin(), st.probe_order.end(), st.random);
    }
    while (!st.probe_order.empty() && st.probe_target == 0) {
      const uint64_t id = st.probe_order.back();
      st.probe_order.pop_back();
      auto it = st.members.find(id);
      if (it != st.members.end() && it->second.alive) st.probe_target = id;
    }
  }
  if (st.probe_target == 0) return;
  const uint64_t id = st.probe_target;
  Ping(self, id, st.options.heartbeat_interval, [self, id, number] {
    auto& st = self->state;
    if (st.probe_number == number && st.probe_target == id) {
      st.probe_acked = true;
      st.probe_direct_acked = true;
    }
  });
  self->delayed_send(self, ProbeTimeout(self), atom::ping_req_v, atom::tick_v, number);
}

/// The direct probe got no ack in time: asks up to kIndirectProbes other members to probe.
void IndirectProbe(membership_pointer self, uint64_t number) {
  auto& st = self->state;
  if (number != st.probe_number || st.probe_acked || st.probe_target == 0) return;
  const uint64_t target = st.probe_target;
  std::vector<uint64_t> helpers;
  for (const auto& [id, m] : st.members) {
    if (id != target && m.alive && m.suspect_since == Clock::time_point{} && m.actor &&
        !Blocked(self, st.node_id, id)) {
      helpers.push_back(id);
    }
  }
  std::shuffle(helpers.begin(), helpers.end(), st.random);
  if (helpers.size() > static_cast<size_t>(kIndirectProbes)) helpers.resize(kIndirectProbes);
  const caf::timespan timeout = st.options.heartbeat_interval - ProbeTimeout(self);
  for (uint64_t helper : helpers) {
    auto handle = st.members[helper].actor;
    std::string request = ProbeBytes(self, target, helper);
    Count(self, &MembershipCounters::ping_reqs, request.size());
    self->request(handle, timeout, atom::ping_req_v, std::move(request))
        .then(
            [=](std::string& bytes) {
              proto::Probe ack;
              if (!FromExpected(self, handle) || !TakeProbe(self, bytes, helper, false, &ack)) {
                return;
              }
              auto& st = self->state;
              if (st.probe_number == number && st.probe_target == target) st.probe_acked = true;
              auto it = st.members.find(target);
              if (it != st.members.end()) it->second.last_heard = Clock::now();
            },
            [](caf::error&) {});
  }
}

/// The end of a protocol period: a member whose probe got no ack, direct or indirect, is
/// suspect. Acked only through others, our handle may be the problem (issue 13: a route that
/// lost the member): a new connection is tried.
void EndProbe(membership_pointer self) {
  auto& st = self->state;
  const uint64_t id = st.probe_target;
  st.probe_target = 0;
  auto it = st.members.find(id);
  if (id == 0 || it == st.members.end()) return;
  auto& m = it->second;
  if (st.probe_acked && !st.probe_direct_acked &&
      Clock::now() - m.adopted > st.options.failure_timeout) {
    spdlog::debug("node {}: member {} acked only through others; reconnecting",
                  FormatNodeId(st.node_id), FormatNodeId(id));
    Reconnect(self, id);
  }
  if (st.probe_acked || !m.alive || m.suspect_since != Clock::time_point{}) return;
  MarkSuspect(self, id, st.node_id);
  CountEvent(self, &MembershipCounters::suspicions);
  Enqueue(self, id, st.node_id);
}

/// Pings the next down member (round-robin): if it answers, the notice in the ping makes it
/// refute, and its ack brings it back (a healed partition, a lost connection).
void PingDownMember(membership_pointer self) {
  auto& st = self->state;
  while (true) {
    if (st.down_order.empty()) {
      for (const auto& [id, m] : st.members) {
        if (!m.alive) st.down_order.push_back(id);
      }
      if (st.down_order.empty()) return;
      std::shuffle(st.down_order.begin(), st.down_order.end(), st.random);
    }
    const uint64_t id = st.down_order.back();
    st.down_order.pop_back();
    auto it = st.members.find(id);
    if (it == st.members.end() || it->second.alive) continue;
    Ping(self, id, st.options.heartbeat_interval, [] {});
    return;
  }
}

/// Seed `address` answered: with node `id`, this node itself or another. Tried again only after
/// a wait doubled by each answer (the protocol period up to kMaxSeedWait). Not dropped: a
/// name in front of several nodes (a load balancer, round-robin DNS) may lead elsewhere next time,
/// and dropping one that led here could leave two nodes that each reached only themselves apart
/// for good; nor dialled every period, which another name of this node or of a member (never
/// known as the member's address, Merge) would be for as long as the node runs. This node's own
/// literal address is dropped from the seeds when it opens. A seed that did not answer is tried
/// again the next period, as at start.
void SeedAnswered(membership_pointer self, const std::string& address, uint64_t id,
                  membership_state::Seed& seed) {
  if (id == self->state.node_id && !seed.led_here) {
    seed.led_here = true;
    spdlog::info("node {}: seed {} led to this node itself; it is tried again less often",
                 FormatNodeId(self->state.node_id), address);
  }
  seed.wait = std::min<caf::timespan>(
      std::max<caf::timespan>(2 * seed.wait, self->state.options.heartbeat_interval), kMaxSeedWait);
  seed.retry_at = Clock::now() + seed.wait;
}

void Tick(membership_pointer self) {
  auto& st = self->state;
  const auto now = Clock::now();
  // Seeds not yet known as members.
  for (auto& [address, seed] : st.seeds_connecting) {
    if (seed.connecting || now < seed.retry_at) continue;
    std::string host;
    uint16_t port = 0;
    if (!ParseHostPort(address, &host, &port).ok()) continue;
    seed.connecting = true;
    ConnectAndJoin(self, host, port,
                   [self, address = address](uint64_t id, peer_actor peer, const std::string&) {
                     auto& st = self->state;
                     auto it = st.seeds_connecting.find(address);
                     if (it != st.seeds_connecting.end()) {
                       it->second.connecting = false;
                       if (id != 0) SeedAnswered(self, address, id, it->second);
                     }
                     if (id != 0 && id != st.node_id) Adopt(self, id, peer);
                   });
  }
  EndProbe(self);
  const caf::timespan suspicion_timeout = SuspicionTimeout(self);
  for (auto& [id, m] : st.members) {
    if (m.suspect_since != Clock::time_point{} && now - m.suspect_since > suspicion_timeout) {
      MarkDown(self, id,
               "suspected and not refuted for " +
                   std::to_string(
                       std::chrono::duration_cast<std::chrono::milliseconds>(suspicion_timeout)
                           .count()) +
                   " ms");
      CountEvent(self, &MembershipCounters::declared_down);
      Enqueue(self, id, st.node_id);
    }
    if (m.actor && !m.alive &&
        now - std::max(m.down_since, m.adopted) > st.options.failure_timeout) {
      // Down for a whole failure timeout more over a handle that did not fail: whatever route
      // it has may be one that lost the member (see SpawnFreshConnect). Connect anew; CAF keeps
      // a direct connection that still works, so this costs a connect when nothing was wrong.
      spdlog::debug("node {}: member {} silent over a live handle; reconnecting",
                    FormatNodeId(st.node_id), FormatNodeId(id));
      self->demonitor(m.actor.address());
      m.actor = nullptr;
    }
    if (!m.actor && !Blocked(self, st.node_id, id)) Reconnect(self, id);
    // Alive but not reachable: our probes go nowhere. Said once per episode, with why the
    // connects fail, since nothing else would show it.
    if (m.alive && !m.actor && !m.unreachable_reported) {
      if (m.unreachable_since == Clock::time_point{}) {
        m.unreachable_since = now;
      } else if (now - m.unreachable_since > st.options.failure_timeout) {
        m.unreachable_reported = true;
        spdlog::warn(
            "node {}: member {} is alive but cannot be reached ({}:{}): {}",
            FormatNodeId(st.node_id), FormatNodeId(id), m.host, m.cluster_port,
            m.last_connect_error.empty() ? "no connect answered yet" : m.last_connect_error);
      }
    }
  }
  // Members down for twice the grace period are forgotten (their replicas moved after one), so
  // dead nodes are not gossiped forever; a forgotten node that comes back joins again (through
  // its seeds, or ours).
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
      st.gossip.erase(it->first);
      // A seed is tried again, as at start: when a partition outlasts twice the replica grace,
      // both sides forget each other, and nobody would ever probe or gossip across it again.
      const std::string address = m.host + ":" + std::to_string(m.cluster_port);
      if (std::find(st.options.seeds.begin(), st.options.seeds.end(), address) !=
          st.options.seeds.end()) {
        st.seeds_connecting.emplace(address, membership_state::Seed{});
      }
      it = st.members.erase(it);
    } else {
      ++it;
    }
  }
  StartProbe(self);
  PingDownMember(self);
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
  for (const auto& seed : st.options.seeds) {
    st.seeds_connecting.emplace(seed, membership_state::Seed{});
  }

  self->set_down_handler([self](caf::down_msg& msg) {
    // The connection is lost: the member is not offered to the supervisor until a reconnect
    // (Tick) succeeds. Whether it is down is for the probes to find (others may still reach it).
    for (auto& [id, m] : self->state.members) {
      if (m.actor && m.actor.address() == msg.source) {
        m.actor = nullptr;
        spdlog::warn("node {}: lost the connection to member {}; reconnecting",
                     FormatNodeId(self->state.node_id), FormatNodeId(id));
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
        if (info.node_id() == self->state.node_id) {
          return ToError(Status::InvalidArgument("join: unusable member description"));
        }
        HearFrom(self, info);
        if (self->state.members.count(info.node_id()) == 0) {
          return ToError(Status::InvalidArgument("join: unusable member description"));
        }
        PublishView(self);
        std::string answer = MemberListBytes(self);
        Count(self, &MembershipCounters::acks, answer.size());
        return answer;
      },
      [=](atom::ping, const std::string& bytes) -> caf::result<std::string> {
        proto::Probe ping;
        if (!TakeProbe(self, bytes, 0, true, &ping)) {
          return ToError(
              Status::Unavailable("ping: refused (malformed, not for this node, "
                                  "partitioned or not vouched for)"));
        }
        PublishView(self);
        std::string ack = ProbeBytes(self, 0, ping.sender().node_id());
        Count(self, &MembershipCounters::acks, ack.size());
        return ack;
      },
      [=](atom::ping_req, const std::string& bytes) -> caf::result<std::string> {
        auto& st = self->state;
        proto::Probe request;
        if (!TakeProbe(self, bytes, 0, false, &request)) {
          return ToError(
              Status::Unavailable("ping_req: refused (malformed, partitioned or not vouched for)"));
        }
        PublishView(self);
        const uint64_t requester = request.sender().node_id();
        const uint64_t target = request.target();
        auto it = st.members.find(target);
        if (target == st.node_id || it == st.members.end() || !it->second.actor ||
            Blocked(self, st.node_id, target)) {
          return ToError(Status::Unavailable("ping_req: no way to member " + FormatNodeId(target)));
        }
        auto promise = self->make_response_promise<std::string>();
        Ping(self, target, ProbeTimeout(self), [self, requester, promise]() mutable {
          std::string ack = ProbeBytes(self, 0, requester);
          Count(self, &MembershipCounters::acks, ack.size());
          promise.deliver(std::move(ack));
        });
        return promise;
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
        // A seed list shared by every node names this one too: never dialled (another name that
        // leads here is tried less often once it answered with this node, SeedAnswered).
        const proto::Member me = SelfMember(self);
        self->state.seeds_connecting.erase(me.host() + ":" + std::to_string(me.cluster_port()));
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
      [=](atom::ping_req, atom::tick, uint64_t number) {
        if (!local()) return;
        IndirectProbe(self, number);
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
