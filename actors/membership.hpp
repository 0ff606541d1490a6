// The membership actor: who is in the cluster and who is alive.
//
// Published on the node's cluster port (it is the peer_actor other nodes talk to). It joins the
// cluster through the seeds (a join answer lists the members the seed knows) and connects to
// each member it learns of; failures are detected and news spreads with SWIM (Das, Gupta and
// Motivala, 2002) plus the suspicion and refutation most implementations use:
//
// - Each protocol period (`heartbeat_interval`) the node pings ONE member, round-robin over a
//   list shuffled anew on each pass. No ack within the probe timeout (2/5 of the period): it
//   asks kIndirectProbes other members to ping it (ping-req) and relay the ack. Nothing by the
//   end of the period: the member is SUSPECT.
// - A suspect not refuted within the suspicion timeout (the larger of `failure_timeout` and
//   4 * log10(n + 1) periods, as Lifeguard scales it) is DOWN. A suspected or downed node that
//   hears so raises its `seq` (its refutation count within its incarnation) and spreads that it
//   is ALIVE; news of a member with a higher (incarnation, seq) wins, SUSPECT and DOWN win over
//   ALIVE at an equal one. Pings to a member we hold suspect or down always tell it so, and
//   each period one down member is pinged too, so a healed partition or a lost connection
//   is noticed and refuted within a round trip.
// - Every update (ALIVE, SUSPECT, DOWN) rides on pings and acks (at most kMaxPiggyback per
//   message, fewest-sent first), each retransmitted 3 * ceil(log2(n + 1)) times, which reaches
//   every node with high probability (epidemic spread): new members, restarts and failures
//   spread without full member lists in any periodic message.
//
// Why it scales: per node per period it sends one ping and answers on average one (plus k
// ping-reqs and their pings only when a probe fails), each with a bounded piggyback, so its
// messages and bytes per period do not grow with the cluster (the all-to-all heartbeats this
// replaced sent n - 1 lists of n members). Detection: a failed member is probed by some node
// within about one period on average (every node probes someone each period), suspected at the
// end of that period, and down after the suspicion timeout, the news reaching everyone in
// O(log n) periods. False positives: a slow or lossy link to one member is covered by the k
// indirect probes, and a member suspected by mistake refutes as soon as the suspicion reaches
// it, so only a member unreachable by everyone for the whole suspicion timeout is declared
// down. The CAF connection to a member still counts too: while it is lost (monitor, within
// milliseconds) the member is not offered to the supervisor, until a reconnect succeeds.
//
// Joins (one per connection) answer with the full member list, a one-off O(n) per pair, taken
// as introductions only (a node cut off until now would otherwise spread its stale downs). The
// node keeps a connection to each member it knows of: replication needs them anyway. Known
// limit: after a partition heals, downs the other side declared in its last moments (news not
// yet spent) spread until the members concerned refute them, a flap of a few periods;
// Lifeguard's independent confirmations would avoid it.
//
// A member down for longer than `replica_grace` leaves the view the supervisor places
// databases over, so its databases get new replicas; until then its place is kept, so a
// restart moves no data. A restarted node keeps its id (from its data dir) and announces a
// higher incarnation, so peers learn its new address.
//
// The supervisor gets the view (members other than this node, with their cluster actors and
// liveness) whenever it changes.
//
// Stale repair (README "Convergence"): a member alive again (MarkAlive: heard from itself or by
// gossip) after being out of the view (down
// for longer than the replica grace, as seen here, after having been heard here before) may
// hold keys that the other replicas deleted and collected meanwhile, or this node may: the
// supervisor is told (atom::full_sync) and every database placed on both compares its copy
// with the member's. Why the replica grace and not the tombstone grace: a tombstone is
// collected only once every replica in the collecting node's set has seen it, so a member that
// missed it was out of that node's set, i.e. out of its view; how long ago the delete was
// made says nothing of how long the member was apart (it may have been made long before, and
// reached the collecting node late).
#pragma once

#include <caf/stateful_actor.hpp>
#include <caf/timespan.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/link_faults.hpp"
#include "messages/type_ids.hpp"
#include "replication/node_summary.hpp"
#include "transport/connection_guard.hpp"

namespace kvmesh {

/// Fills in the fields of this node's own MemberStatus that only it knows (disk space).
using LocalStatusFiller = std::function<void(MemberStatus&)>;

/// What the membership actor sent, for metrics and tests (kvmesh_membership_messages_total).
struct MembershipCounters {
  /// Pings (direct probes, and those sent for another member's ping-req), ping-reqs, acks
  /// (answers to pings and ping-reqs), joins; and bytes of their payloads.
  std::atomic<uint64_t> pings{0};
  std::atomic<uint64_t> ping_reqs{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> joins{0};
  std::atomic<uint64_t> bytes{0};
  /// Members this node suspected, and declared down (its own finding, not news from others).
  std::atomic<uint64_t> suspicions{0};
  std::atomic<uint64_t> declared_down{0};
  /// Suspicions of this node it refuted.
  std::atomic<uint64_t> refutations{0};
};

/// SWIM's constants (see above).
inline constexpr int kIndirectProbes = 3;
inline constexpr int kMaxPiggyback = 6;
/// Hearsay about a member whose seq lies further than this above the one known is ignored.
inline constexpr uint64_t kMaxHearsaySeqJump = 1024;
/// Longest wait before a seed that answered is tried again.
inline constexpr caf::timespan kMaxSeedWait = std::chrono::seconds(10);
inline constexpr int kRetransmitMult = 3;

struct MembershipOptions {
  /// "host:port" cluster addresses to join through. May include this node's own address.
  std::vector<std::string> seeds;
  /// The protocol period: one member probed per period. Default 500 ms.
  caf::timespan heartbeat_interval = std::chrono::milliseconds(500);
  /// A suspected member that does not refute for this long (at least; see above) is down.
  /// Default 3 s.
  caf::timespan failure_timeout = std::chrono::seconds(3);
  /// A member down this long loses its replicas to other nodes. Default 30 s.
  caf::timespan replica_grace = std::chrono::seconds(30);
  /// Deadline of a connect or join attempt. Default 3 s.
  caf::timespan connect_timeout = std::chrono::seconds(3);
  /// Test clusters only: faults between nodes (may be null).
  std::shared_ptr<LinkFaults> faults;
  /// Fills in this node's own MemberStatus fields only it knows (disk space); may be null.
  LocalStatusFiller fill_local_status;
  /// Fills in what the supervisor knows of every member, this node included (drains,
  /// rebalancing: PlacementBoard); may be null.
  std::function<void(MemberStatus&)> fill_member_status;
  /// How connections to members are made and who is behind them (TLS, identities).
  TransportSecurity security;
  /// Largest message a member may send over a connection this node opens.
  size_t max_message_bytes = 64u << 20;
  /// Node-level anti-entropy (replication/node_summary.hpp): this node's summary (null: no
  /// rounds) and the period of its rounds (zero: none). Default 1 s.
  std::shared_ptr<replication::NodeSummary> node_summary;
  caf::timespan sync_interval = std::chrono::seconds(1);
  /// Where to count messages sent (may be null).
  std::shared_ptr<MembershipCounters> counters;
};

struct membership_state {
  static inline const char* name = "kvmesh.membership";
  using clock = std::chrono::steady_clock;
  struct Member {
    std::string host;
    uint16_t cluster_port = 0;
    uint16_t client_port = 0;
    /// Its durability mode (proto::Member::sync).
    std::string sync;
    uint64_t incarnation = 0;
    /// Its name (with TLS: its certificate's CN).
    std::string name;
    peer_actor actor;
    bool connecting = false;
    /// Not down (alive or suspect).
    bool alive = false;
    /// Its refutation count within `incarnation` as last heard (proto::Member::seq).
    uint64_t seq = 0;
    /// Suspected since (zero: not suspected).
    clock::time_point suspect_since{};
    /// Last news that it is alive: its own messages, an ack relayed by an indirect probe, a
    /// join.
    clock::time_point last_heard{};
    /// When it went down (or was first learnt of without being heard).
    clock::time_point down_since{};
    /// When `actor` was adopted: a handle silent for a failure timeout is replaced.
    clock::time_point adopted{};
    /// Since when it is heard without a handle (zero: it is not), whether that was logged, and
    /// why the last connect to it failed.
    clock::time_point unreachable_since{};
    bool unreachable_reported = false;
    std::string last_connect_error;
    /// Node-level anti-entropy with this member: an exchange is under way; the totals
    /// differed and pages are being compared (resuming after `summary_after`); pages this
    /// round may still send.
    bool summary_busy = false;
    bool summary_paging = false;
    std::string summary_after;
    int summary_pages_left = 0;
  };
  MembershipOptions options;
  matcher_supervisor_actor supervisor;
  uint64_t node_id = 0;
  /// Our own description; empty until the node sends `open` (probes start then). Its seq is
  /// `self_seq`.
  std::string self_member;
  uint64_t self_seq = 0;
  /// Members still to probe this pass (shuffled), and the down members still to ping.
  std::vector<uint64_t> probe_order;
  std::vector<uint64_t> down_order;
  /// The probe of this period: its number, target (0: none), whether an ack came, and whether
  /// it came directly.
  uint64_t probe_number = 0;
  uint64_t probe_target = 0;
  bool probe_acked = false;
  bool probe_direct_acked = false;
  /// Updates to piggyback, by the member they are about (this node included), with the times
  /// each was sent.
  struct Gossip {
    std::string update;  // serialized proto::MemberUpdate
    int sent = 0;
  };
  std::map<uint64_t, Gossip> gossip;
  std::mt19937_64 random{std::random_device{}()};
  std::map<uint64_t, Member> members;
  /// A seed not yet known as a member address.
  struct Seed {
    /// A connect to it is under way.
    bool connecting = false;
    /// It answered (with this node itself or another): tried again only from `retry_at`, after
    /// a wait doubled by each answer (at most kMaxSeedWait); see SeedAnswered.
    clock::time_point retry_at{};
    caf::timespan wait{0};
    /// It led to this node itself once (said once in the log).
    bool led_here = false;
  };
  std::map<std::string, Seed> seeds_connecting;
  /// The last view sent to the supervisor, to send only changes.
  std::vector<std::pair<uint64_t, bool>> last_view;
  bool first_view_sent = false;
  /// Members forgotten (down for twice the replica grace) after this node had heard them: when
  /// they were last heard and went down, so that one heard again is known to come back from
  /// outside the placement view (stale repair). Bounded (kMaxForgotten).
  struct Forgotten {
    clock::time_point last_heard{};
    clock::time_point down_since{};
  };
  std::map<uint64_t, Forgotten> forgotten;
  /// When a refused member description was last logged (at most one line per 10 s).
  clock::time_point last_refusal_logged{};
};

/// Behaviour of the membership actor of node `node_id`.
peer_actor::behavior_type membership_impl(peer_actor::stateful_pointer<membership_state> self,
                                          uint64_t node_id, matcher_supervisor_actor supervisor,
                                          MembershipOptions options);

}  // namespace kvmesh
