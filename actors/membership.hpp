// The membership actor: who is in the cluster and who is alive.
//
// Published on the node's cluster port (it is the peer_actor other nodes talk to). It joins the
// cluster through the seeds, learns members from every join answer and heartbeat (so the member
// list spreads to every node), connects to each member directly, and sends each a heartbeat
// every `heartbeat_interval`. A member is down when its connection drops (CAF monitor, within
// milliseconds) or when it was silent for `failure_timeout` (a stopped or partitioned process);
// it is alive again as soon as it is heard from. A member down for longer than `replica_grace`
// leaves the view the supervisor places databases over, so its databases get new replicas;
// until then its place is kept, so a restart moves no data. A restarted node keeps its id (from
// its data dir) and announces a higher incarnation, so peers learn its new address.
//
// The supervisor gets the view (members other than this node, with their cluster actors and
// liveness) whenever it changes.
//
// Stale repair (README "Convergence"): a member heard again after being out of the view (down
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

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/link_faults.hpp"
#include "messages/type_ids.hpp"
#include "replication/node_summary.hpp"
#include "transport/connection_guard.hpp"

namespace kvmesh {

/// Fills in the fields of this node's own MemberStatus that only it knows (disk space).
using LocalStatusFiller = std::function<void(MemberStatus&)>;

struct MembershipOptions {
  /// "host:port" cluster addresses to join through. May include this node's own address.
  std::vector<std::string> seeds;
  /// Default 500 ms.
  caf::timespan heartbeat_interval = std::chrono::milliseconds(500);
  /// A member silent this long is down. Default 3 s.
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
    bool alive = false;
    /// Last heartbeat or join received from it.
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
  /// Our own description; empty until the node sends `open` (heartbeats start then).
  std::string self_member;
  std::map<uint64_t, Member> members;
  /// Seeds not yet known as a member address, and whether a connect to each is under way.
  std::map<std::string, bool> seeds_connecting;
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
