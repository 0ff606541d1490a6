// The client gateway: the one actor a node publishes for clients, and its shards.
//
// The published gateway serves every request, and names its shards (`gateways`): gateways
// with the same behaviour and interface, one per worker thread, each with routes of its own. The
// client library sends the requests of one database path to one shard (by the path's hash), so
// that one actor does not handle every client request of the node one after another: requests
// for different databases are routed on as many threads as there are shards. Requests of one
// path from one client stay on one shard, in order.
//
// Clients name a database path in every request; the gateway routes it to that database's actor
// (asking the supervisor on first use, caching the handle, monitoring it) through one
// OrderedRoute per path, so a passivated database is re-activated here, clients never see it,
// and requests to one path are applied in the order they arrived. The
// handshake (`hello`) checks the client protocol version before anything else. It ignores exit
// messages (a network peer could send one) and stops when the supervisor stops.
//
// Access control (security/acl.hpp lists the right each request needs): with TLS on, the sender
// of every request is looked up in the node's PeerDirectory by its CAF node; a node certificate
// may do everything, a client certificate what the ACL gives its name. The check comes before
// anything else runs, so a denied request changes nothing. A sender with no identity while TLS is
// on is denied as unauthenticated. Without an ACL every authenticated peer may do everything.
//
// Direct reads (actors/direct_reads.hpp): a plain get (alone or several together), once
// admitted, reads the database's store on the shard's own thread instead of going to the
// database actor and back, when that gives what the actor would: the path's route has an actor
// of this node that still serves (a database not opened yet, passivated, or served by another
// node's copy goes the actor path, which opens it or forwards), and nothing is in flight, waiting
// or taken on that route (writes, batches, gets of any client of this shard), so the read cannot
// overtake a write sent before it: a client's requests of one path all come to one shard, in order.
// A get at a read level (ReadRequest) always goes to the actor. Once the node is stopping
// (DirectReadGate closed), such a get is answered unavailable.
#pragma once

#include <caf/stateful_actor.hpp>
#include <caf/timespan.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/database_request.hpp"
#include "actors/direct_reads.hpp"
#include "actors/membership.hpp"
#include "common/metrics.hpp"
#include "messages/local_deadlines.hpp"
#include "messages/type_ids.hpp"
#include "security/acl.hpp"
#include "security/identity.hpp"
#include "transport/send_cork.hpp"

namespace kvmesh {

/// What the gateway checks requests against (see the top of this file).
struct GatewaySecurity {
  /// Identities of the connected peers; null or not enabled (TLS off): nothing is checked. A
  /// sender on this node is looked up like any other (by this node's id): the node's own API
  /// does not go through the gateway.
  std::shared_ptr<const security::PeerDirectory> directory;
  /// The node's ACL, replaced by reloads; null or holding none: every authenticated peer may do
  /// everything.
  std::shared_ptr<const security::AclStore> acl;
};

/// What the gateway needs for direct reads (see the top of this file); `reads` null (a
/// clustered node, or a test): every read goes to the database actors.
struct GatewayDirectReads {
  std::shared_ptr<DirectReads> reads;
  /// The node's (DirectReadGate); not null when `reads` is not.
  std::shared_ptr<DirectReadGate> gate;
};

struct client_gateway_state {
  static inline const char* name = "kvmesh.client_gateway";
  matcher_supervisor_actor supervisor;
  /// The node's membership actor; invalid when the node is not clustered.
  peer_actor membership;
  caf::timespan timeout{};
  /// Deadlines of the gateway's own requests (opens, and what it asks the supervisor and the
  /// membership actor; RequestWithin), rather than one CAF clock entry per request kept for the
  /// whole timeout. Requests to local database actors carry none (DatabaseRoute).
  std::shared_ptr<LocalDeadlines> deadlines = std::make_shared<LocalDeadlines>();
  uint64_t node_id = 0;
  /// The node's durability mode (DescribeSync), for `members` when not clustered.
  std::string sync;
  /// Adds this node's disk space to its MemberStatus when not clustered; may be null.
  LocalStatusFiller fill_local_status;
  struct Entry {
    /// Its actor is invalid until opened, and replaced after a re-open.
    std::shared_ptr<OrderedRoute> ordered;
    /// The direct read target of the actor `ordered` had when it was last looked up (its id
    /// `direct_of`, an actor of this node's; 0: none yet), so a get looks it up once per actor, not
    /// under the map's mutex each time. Null: that actor has none.
    std::shared_ptr<DirectReadTarget> direct;
    uint64_t direct_of = 0;
  };
  /// By normalised path; an entry leaves when its actor goes down with nothing in flight.
  std::unordered_map<std::string, Entry> routes;
  /// Path of each monitored database actor (local or, in a cluster, on another node), by
  /// address: actor ids are unique per node only.
  std::map<caf::actor_addr, std::string> path_of;
  /// Requests forwarded to database actors on other nodes: failed at once when one goes down.
  std::shared_ptr<RemoteRequests> remote_requests = std::make_shared<RemoteRequests>();
  GatewaySecurity security;
  /// The ACL as of `acl_generation` (AclStore::generation), so a request costs one atomic read
  /// rather than the store's mutex while no reload happened.
  std::shared_ptr<const security::Acl> acl;
  uint64_t acl_generation = UINT64_MAX;
  /// The directory's answers for the senders seen since its generation was
  /// `identities_generation` (PeerDirectory::generation): with TLS a request costs one atomic
  /// read rather than the directory's mutex, which every gateway shard and connection shares.
  std::unordered_map<caf::node_id, std::optional<security::PeerIdentity>> identities;
  uint64_t identities_generation = UINT64_MAX;
  /// Where the requests it forwards are counted (the node's, shared with its embedded handles);
  /// may be null: not counted.
  std::shared_ptr<metrics::RequestMetrics> requests;
  /// The node's placement changes (DatabaseRoute::placement); may be null (not clustered).
  std::shared_ptr<const PlacementBoard> placement;
  /// The shards `gateways` names (empty in a shard).
  std::vector<caf::actor> shards;
  GatewayDirectReads direct;
  /// Replies to clients held back while more messages wait for the gateway, sent together
  /// (transport/send_cork.hpp; Answer in actors/client_gateway.cpp).
  SendCork cork;
};

/// Behaviour of the gateway of node `node_id`. `timeout` bounds each request it forwards;
/// `membership` (may be invalid) answers `members`; otherwise the gateway does, with the node's
/// durability mode `sync` (DescribeSync) and `fill_local_status` (may be null) adding what only
/// this node knows. `security` says who may do what (default: no checks). Every request it
/// forwards is counted in `requests` (may be null) once answered. `shards`: what `gateways`
/// answers (gateways spawned with this same behaviour and no shards of their own). `direct`:
/// the node's direct reads (default: none).
gateway_actor::behavior_type client_gateway_impl(
    gateway_actor::stateful_pointer<client_gateway_state> self, matcher_supervisor_actor supervisor,
    caf::timespan timeout, uint64_t node_id, peer_actor membership, std::string sync,
    LocalStatusFiller fill_local_status, GatewaySecurity security,
    std::shared_ptr<metrics::RequestMetrics> requests,
    std::shared_ptr<const PlacementBoard> placement, std::vector<caf::actor> shards,
    GatewayDirectReads direct);

}  // namespace kvmesh
