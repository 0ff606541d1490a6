// The one place that registers every type kvmesh sends between actors: the CAF type-id block,
// the atoms, the inspect() overloads that make the plain types of kvmesh/types.hpp serializable,
// and the "kvmesh" error category that carries a Status across actors (and later nodes).
#pragma once

#include <caf/atom.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/deadline.hpp"
#include "common/packed_keys.hpp"
#include "common/read_levels.hpp"
#include "common/replica_set.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, Deadline& x) {
  return f(caf::meta::type_name("kvmesh.Deadline"), x.wall_ns);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, WriteOp& x) {
  return f(caf::meta::type_name("kvmesh.WriteOp"), x.kind, x.key, x.value, x.ttl_ms);
}

/// Status -> CAF error in the "kvmesh" category; the message travels as the error's context.
caf::error ToError(const Status& status);

/// Reads a WriteBatch's operations as `f(x.ops)` would, but keeps at most kMaxBatchOps + 1 of
/// them. CAF decodes a message before the connection guard or the gateway can look at it, and an
/// empty operation is 11 bytes on the wire but ~160 in memory (a WriteOp with two strings, in a
/// vector that doubles): unbounded, one 68 MiB request decoded into ~0.7 GB. Operations past the
/// bound are read into one scratch operation and dropped, so the batch still arrives, over the
/// limit by one, and every receiver's check refuses it with the clear error a client gets for too
/// many operations. (Refusing while decoding is no better: CAF 0.17 drops a message element's
/// decoding error and delivers an empty message in its place.)
///
/// The vector is sized once, for as many operations as the count says, the bound allows and the
/// bytes left could hold (kMinWriteOpBytes each; 1024 from a source that cannot tell): growing it
/// operation by operation moved every operation read so far at each doubling, a third of the
/// port thread's time receiving batches of 1000. A count that lies costs no more memory than
/// operations that are really there.
inline constexpr size_t kMinWriteOpBytes = 11;  // kind 1, two empty strings 1 + 1, ttl 8

/// Reads one WriteOp from CAF's binary format as `in(op)` would (inspect above: the kind's byte,
/// key and value each a varbyte length and the bytes, ttl_ms 8 bytes in network order), but
/// directly: through the inspector each field was a virtual call returning a caf::error, and those
/// calls were over half of decoding a batch of 1000 operations on the node's port thread (the
/// rest is the strings' allocations). False, and `in` where it was, if the bytes end early or a
/// length's varbyte runs past 5 bytes (CAF's would shift past its 32 bits).
/// tests/messages_test.cpp checks both ways agree.
bool ReadWriteOp(caf::binary_deserializer& in, WriteOp& op);

template <class Deserializer>
caf::error LoadWriteOps(Deserializer& f, std::vector<WriteOp>& ops) {
  size_t count = 0;
  if (auto err = f.begin_sequence(count)) return err;
  ops.clear();
  size_t room = 1024;
  auto* binary = dynamic_cast<caf::binary_deserializer*>(&f);
  if (binary != nullptr) room = binary->remaining() / kMinWriteOpBytes;
  ops.reserve(std::min({count, kMaxBatchOps + 1, room}));
  WriteOp scratch;
  for (size_t i = 0; i < count; ++i) {
    WriteOp& op = i <= kMaxBatchOps ? ops.emplace_back() : scratch;
    if (binary != nullptr) {
      if (!ReadWriteOp(*binary, op)) return caf::make_error(caf::sec::end_of_stream);
    } else if (auto err = f(op)) {
      return err;
    }
  }
  return f.end_sequence();
}

/// Writes `ops` in CAF's binary format as `out(ops)` would (ReadWriteOp's format), straight
/// into the serializer's buffer: through the inspector each field was a virtual call returning a
/// caf::error, a third of a client's CPU sending batches of 1000 operations (perf,
/// `kvmesh-bench --targets remote --workloads batch --batch-size 1000`).
/// tests/messages_test.cpp checks that both ways write the same bytes.
void SaveWriteOps(caf::binary_serializer& out, const std::vector<WriteOp>& ops);

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, WriteBatch& x) {
  if constexpr (Inspector::writes_state) {
    return LoadWriteOps(f, x.ops);
  } else {
    if constexpr (std::is_base_of_v<caf::serializer, Inspector>) {
      if (auto* binary = dynamic_cast<caf::binary_serializer*>(&f)) {
        SaveWriteOps(*binary, x.ops);
        return caf::none;
      }
    }
    return f(caf::meta::type_name("kvmesh.WriteBatch"), x.ops);
  }
}

/// A write (a batch of operations) that its requester keeps for a resend while the database
/// actor applies it: shared by both, read-only, where a WriteBatch in the message was copied for
/// every attempt (OrderedRoute resends a request bounced by a database actor that stopped
/// before it ran): 2000 allocations more per batch of 1000 keys, and 7-11% of a bulk load's
/// time (kvmesh-bench, 1000-key batches, embedded 1.07-1.12x without the copy). OrderedRoute sends
/// it only to a database actor of its own node (a node of an older version would not know the
/// type); serialized, it is its WriteBatch, and arrives as a batch of its own.
struct SharedWriteBatch {
  std::shared_ptr<const WriteBatch> batch;
};

/// Several writes, each its own WriteBatch (the messages of writes made together), shared in the
/// same way.
struct SharedWriteBatches {
  std::shared_ptr<const std::vector<WriteBatch>> batches;
};

/// Saved as the value it shares (nothing shared: an empty one); loaded into a value of its own.
template <class Inspector, class T>
typename Inspector::result_type InspectShared(Inspector& f, std::shared_ptr<const T>& x,
                                              const char* name) {
  if constexpr (Inspector::writes_state) {
    auto loaded = std::make_shared<T>();
    auto result = f(caf::meta::type_name(name), *loaded);
    x = std::move(loaded);
    return result;
  } else {
    static const T kNone{};
    // Saving reads the value; CAF's inspectors take it by reference only to share the code.
    return f(caf::meta::type_name(name), const_cast<T&>(x ? *x : kNone));
  }
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SharedWriteBatch& x) {
  return InspectShared(f, x.batch, "kvmesh.SharedWriteBatch");
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SharedWriteBatches& x) {
  return InspectShared(f, x.batches, "kvmesh.SharedWriteBatches");
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, PackedKeys& x) {
  return f(caf::meta::type_name("kvmesh.PackedKeys"), x.bytes);
}

/// The answer to several gets sent as one message (PackedKeys), in the keys' order: the first
/// errors.size() keys are answered (an empty error: found, its value in `values`; else the
/// error the get alone would have had, kNotFound included); the keys after them were left out
/// to bound the reply (kMaxGetsReplyBytes) and are for the asker to send alone. Not an error
/// for the user: the asker's marker for "send alone" is the answered count.
struct GetManyReply {
  std::vector<caf::error> errors;
  /// One per answered key; empty unless found.
  std::vector<std::string> values;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, GetManyReply& x) {
  return f(caf::meta::type_name("kvmesh.GetManyReply"), x.errors, x.values);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ListOptions& x) {
  return f(caf::meta::type_name("kvmesh.ListOptions"), x.prefix, x.start_after, x.limit,
           x.with_values, x.with_versions, x.start, x.end, x.reverse, x.consistency,
           x.session_token);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ReadRequest& x) {
  return f(caf::meta::type_name("kvmesh.ReadRequest"), x.key, x.consistency, x.session_token);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, VersionedValue& x) {
  return f(caf::meta::type_name("kvmesh.VersionedValue"), x.value, x.version);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, KeyRecord& x) {
  return f(caf::meta::type_name("kvmesh.KeyRecord"), x.exists, x.live, x.value, x.hlc, x.origin,
           x.counter);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ListPage& x) {
  return f(caf::meta::type_name("kvmesh.ListPage"), x.keys, x.values, x.next_token, x.versions);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, WatchRequest& x) {
  return f(caf::meta::type_name("kvmesh.WatchRequest"), x.prefix, x.position, x.with_values,
           x.wait_ms);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, WatchEvent& x) {
  return f(caf::meta::type_name("kvmesh.WatchEvent"), x.kind, x.key, x.value, x.version);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, WatchUpdate& x) {
  return f(caf::meta::type_name("kvmesh.WatchUpdate"), x.events, x.position);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, DatabaseStats& x) {
  return f(caf::meta::type_name("kvmesh.DatabaseStats"), x.path, x.config_id, x.database_id,
           x.key_count, x.used_bytes, x.limit_bytes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, DatabaseInfo& x) {
  return f(caf::meta::type_name("kvmesh.DatabaseInfo"), x.path, x.config_id, x.database_id,
           x.created_ms);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, InstanceInfo& x) {
  return f(caf::meta::type_name("kvmesh.InstanceInfo"), x.path, x.config_id, x.database_id,
           x.created_ms, x.last_access_ms, x.active, x.key_count, x.used_bytes, x.replicas);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, InstanceOptions& x) {
  return f(caf::meta::type_name("kvmesh.InstanceOptions"), x.cursor, x.limit);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, InstancePage& x) {
  return f(caf::meta::type_name("kvmesh.InstancePage"), x.instances, x.next_cursor);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ConfigInfo& x) {
  return f(caf::meta::type_name("kvmesh.ConfigInfo"), x.id, x.description, x.tags, x.matcher,
           x.matcher_kind, x.replication_min, x.replication_max, x.size_bytes, x.max_instances,
           x.source, x.origin);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ConfigApplyOptions& x) {
  return f(caf::meta::type_name("kvmesh.ConfigApplyOptions"), x.dry_run, x.id, x.source_name,
           x.applied_by);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ConfigApplyResult& x) {
  return f(caf::meta::type_name("kvmesh.ConfigApplyResult"), x.configs, x.warnings);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ConfigHistoryEntry& x) {
  return f(caf::meta::type_name("kvmesh.ConfigHistoryEntry"), x.config, x.deleted, x.applied_by,
           x.node, x.time_ms, x.in_force);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, MemberStatus& x) {
  return f(caf::meta::type_name("kvmesh.MemberStatus"), x.node_id, x.cluster_address, x.client_port,
           x.alive, x.self, x.silent_ms, x.sync, x.low_space, x.free_disk_bytes, x.placement,
           x.drain_total, x.drain_left, x.rebalance_pending);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ReplicaSet& x) {
  return f(caf::meta::type_name("kvmesh.ReplicaSet"), x.nodes, x.unreachable, x.required_acks,
           x.min, x.max);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, PeerReplicaStatus& x) {
  return f(caf::meta::type_name("kvmesh.PeerReplicaStatus"), x.node_id, x.reachable,
           x.version_vector, x.writes_seen, x.pending_deltas);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ReplicationStatus& x) {
  return f(caf::meta::type_name("kvmesh.ReplicationStatus"), x.path, x.node_id, x.replicas, x.min,
           x.max, x.required_acks, x.key_count, x.used_bytes, x.tombstones, x.digest,
           x.version_vector, x.writes_seen, x.entries_received, x.entries_applied, x.peers);
}

/// Version of the client protocol (the gateway_actor interface below). A client says its version
/// in `hello`, whose signature never changes, and a node of another version refuses it with a
/// clear error instead of failing later with unexpected_message. Bump on any change to
/// gateway_actor or to a type it carries that a client sends or receives. (`uncork` came without
/// one: only the gateway sends it, to itself; version 10 came with `expire_due`, of the same
/// kind.)
inline constexpr uint32_t kClientProtocolVersion = 13;

/// CAF error -> Status. Errors of the "kvmesh" category keep their code and message; CAF's own
/// errors map to kTimeout (request_timeout) or kUnavailable (receiver down, connection failures),
/// anything else to kInternal with CAF's rendering.
Status ToStatus(const caf::error& error);

/// Registers the type-id block and the error category. Call once on every actor_system_config.
void RegisterMessageTypes(caf::actor_system_config& cfg);

}  // namespace kvmesh

// Atoms: at most 10 characters each.
CAF_ADD_ATOM(kvmesh, kvmesh::atom, put, "put")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, get, "get")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, erase, "erase")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, list, "list")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, batch, "batch")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, stats, "stats")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, open, "open")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, databases, "databases")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, active, "active")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, idle, "idle")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, passivate, "passivate")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, tick, "tick")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, ok, "ok")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, hello, "hello")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, configs, "configs")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, reload, "reload")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, limit, "limit")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, join, "join")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, ping, "ping")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, ping_req, "ping_req")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, replicate, "replicate")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, sync, "sync")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, replica, "replica")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, replicas, "replicas")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, members, "members")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, status, "status")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, dropped, "dropped")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, clock, "clock")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, changed, "changed")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, instances, "instances")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, drop, "drop")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, backup, "backup")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, restore, "restore")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, watch, "watch")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, drain, "drain")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, rebalance, "rebalance")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, summary, "summary")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, session, "session")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, full_sync, "full_sync")
// Timers of the database actor (database_timer_actor).
CAF_ADD_ATOM(kvmesh, kvmesh::atom, idle_check, "idle_check")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, sync_round, "sync_round")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, commit, "commit")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, expire_due, "expire_due")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, sweep, "sweep")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, gateways, "gateways")
CAF_ADD_ATOM(kvmesh, kvmesh::atom, uncork, "uncork")

namespace kvmesh {

/// The client slice of a database actor (actors/database_actor.hpp): what the gateway and the
/// embedded API send to serve a user's requests. Supervisor `open` answers with this handle.
using database_client_actor = caf::typed_actor<
    // Every request carries its Deadline (common/deadline.hpp) last, and is refused unapplied with
    // Code::kTimeout ("deadline exceeded") once it has passed.
    // Stores a value under a key: (key, value) -> ok.
    caf::replies_to<atom::put, std::string, std::string, Deadline>::with<atom::ok>,
    // Reads a key: key -> value, or an error with Code::kNotFound.
    caf::replies_to<atom::get, std::string, Deadline>::with<std::string>,
    // Reads 1 to kMaxGetsPerMessage keys (what the gateway sends for a client's gets sent
    // together) with one storage read, each as the get above would, in order; the reply holds
    // at most kMaxGetsReplyBytes of values past the first (see GetManyReply). Malformed keys
    // are refused with kInvalidArgument.
    caf::replies_to<atom::get, PackedKeys, Deadline>::with<GetManyReply>,
    // Reads a key at a read level (README "Read levels") -> value and version, or kNotFound;
    // kUnavailable when the level cannot be met in time (too few replicas answer, none covers
    // the session token).
    caf::replies_to<atom::get, ReadRequest, Deadline>::with<VersionedValue>,
    // Removes a key (a missing key is not an error): key -> ok.
    caf::replies_to<atom::erase, std::string, Deadline>::with<atom::ok>,
    // Lists one page of keys.
    caf::replies_to<atom::list, ListOptions, Deadline>::with<ListPage>,
    // Applies a batch atomically.
    caf::replies_to<atom::batch, WriteBatch, Deadline>::with<atom::ok>,
    // The same for a handle that keeps a session (read_your_writes): -> the dot of the write
    // on the replica that accepted it, as SessionToken text, to merge into the session's token.
    caf::replies_to<atom::batch, WriteBatch, atom::session, Deadline>::with<std::string>,
    // Applies several writes, each as if it had come in its own batch message, in order (what
    // the embedded API's requester sends for writes made together): one error per write, none
    // for a success. Conditional batches (with checks) are refused here: they go alone.
    caf::replies_to<atom::batch, std::vector<WriteBatch>, Deadline>::with<std::vector<caf::error>>,
    // The same three with the writes shared (what OrderedRoute sends to a database actor of its
    // own node; to another node it sends the ones above, which every version of kvmesh reads).
    caf::replies_to<atom::batch, SharedWriteBatch, Deadline>::with<atom::ok>,
    caf::replies_to<atom::batch, SharedWriteBatch, atom::session, Deadline>::with<std::string>,
    caf::replies_to<atom::batch, SharedWriteBatches, Deadline>::with<std::vector<caf::error>>,
    // Current counters.
    caf::replies_to<atom::stats, Deadline>::with<DatabaseStats>,
    // Replication status: replica set, version vectors, pending deltas, digest.
    caf::replies_to<atom::status, Deadline>::with<ReplicationStatus>,
    // Deletes every key (a tombstone each, replicated like erases) -> ok once every page of
    // tombstones is acknowledged as a write would be.
    caf::replies_to<atom::drop, Deadline>::with<atom::ok>,
    // Writes a consistent backup of the database as it is now to a directory of this node
    // (storage/backup.hpp) while writes go on -> a summary.
    caf::replies_to<atom::backup, std::string, Deadline>::with<std::string>,
    // Replaces the database's contents with a backup's, as new writes that replicate -> a summary.
    caf::replies_to<atom::restore, std::string, Deadline>::with<std::string>,
    // One pull of a watch: the changes the request's position has not seen (under its prefix),
    // and the position after them. Held (at most the request's wait, and half the time left
    // before its deadline) while there are none; answered with no events and the position
    // unchanged if the database stops meanwhile (README "Watch").
    caf::replies_to<atom::watch, WatchRequest, Deadline>::with<WatchUpdate>>;

/// The peer slice of a database actor: what other nodes may send it, and the only slice that
/// leaves the node (the `replica` lookups answer with it). Other nodes route their clients'
/// requests for a database placed elsewhere to one of its replicas, so it holds the client slice;
/// the replicas of a database add the replication protocol.
using database_peer_actor = database_client_actor::extend<
    // From another replica (on node `from`): a serialized proto::Delta to apply -> ok once it is
    // durable here. Idempotent; a malformed delta is refused with kInvalidArgument.
    caf::replies_to<atom::replicate, std::string, uint64_t>::with<atom::ok>,
    // Anti-entropy pull from another replica (on node `from`): a serialized proto::SyncRequest
    // (its version vector, and which origins to send) -> a serialized proto::SyncReply (what it
    // lacks of those origins, bounded; our vector; whether more remains).
    caf::replies_to<atom::sync, std::string, uint64_t>::with<std::string>,
    // Stale repair from another replica (on node `from`): a serialized proto::FullSyncRequest ->
    // a serialized proto::FullSyncPage (our keys and dots after its key, bounded; our vector).
    caf::replies_to<atom::full_sync, std::string, uint64_t>::with<std::string>,
    // A read at a level from another replica (on node `from`): (key, session token, from) ->
    // the record of the key here, tombstones included (the asker compares records by the
    // conflict rule). kUnavailable if this replica's version vector does not cover the token.
    caf::replies_to<atom::get, atom::replica, std::string, std::string, uint64_t,
                    Deadline>::with<KeyRecord>>;

/// The control slice of a database actor: what the matcher supervisor that spawned it sends.
using database_control_actor = caf::typed_actor<
    // The replica set placement chose (sent on start and on every change).
    caf::reacts_to<atom::replicas, ReplicaSet>,
    // After a config reload: the new size budget in bytes.
    caf::reacts_to<atom::limit, uint64_t>,
    // Stop after the requests already queued (passivation).
    caf::reacts_to<atom::passivate>,
    // For metrics: the replication status, not counted as use (scrapes must not keep a database
    // from passivating).
    caf::replies_to<atom::status>::with<ReplicationStatus>,
    // The node-level anti-entropy round found that a peer's vector of this database differs:
    // pull from every peer now (Replicator::SyncNow).
    caf::reacts_to<atom::sync>,
    // Member `peer` is back after being out of the placement view: run a stale repair with
    // its replica (Replicator::StartFullSync), asking it to answer back.
    caf::reacts_to<atom::full_sync, uint64_t>>;

/// The timers of a database actor, which only it sends to itself.
using database_timer_actor = caf::typed_actor<
    // The periodic idle check.
    caf::reacts_to<atom::idle_check>,
    // The deadlines of its own requests (LocalDeadlines): expire those past due.
    caf::reacts_to<atom::expire_due>,
    // The anti-entropy round of the given sequence number (only the latest counts): periodic
    // while anything is to do, stopped while the replica is quiet (see database_state::round).
    caf::reacts_to<atom::sync_round, uint64_t>,
    // The next step of the round's sweep of the dot ranges (Replicator::ContinueSweep): sent
    // after each step while steps are left, so the requests that came meanwhile go first.
    caf::reacts_to<atom::sweep>,
    // Group commit: apply the writes received since the last one together, then acknowledge
    // them. Sent when the first of them arrives, so it queues behind the writes already
    // waiting, which join the group.
    caf::reacts_to<atom::commit>,
    // Watches: new commits to tell the held pulls of (coalesced: sent once per burst).
    caf::reacts_to<atom::watch, atom::tick>,
    // Watches: the held pull with this id has waited long enough; answer it.
    caf::reacts_to<atom::watch, uint64_t>>;

/// A database actor (actors/database_actor.hpp), every slice: only the matcher supervisor that
/// spawned it holds this handle.
using database_actor =
    database_peer_actor::extend_with<database_control_actor, database_timer_actor>;

/// The cluster actor of a node (actors/membership.hpp), published on its cluster port: what
/// other nodes talk to. Every message crossing nodes is a serialized proto (messages/*.proto).
using peer_actor = caf::typed_actor<
    // From a node that starts or finds us: its proto::Member -> our proto::MemberList.
    caf::replies_to<atom::join, std::string>::with<std::string>,
    // SWIM probe from a member: a proto::Probe whose target is this node -> our proto::Probe
    // (the ack). Both carry piggybacked membership updates.
    caf::replies_to<atom::ping, std::string>::with<std::string>,
    // SWIM indirect probe: a proto::Probe asking us to ping its target -> our ack once the
    // target acked us, an error if it did not within the probe timeout.
    caf::replies_to<atom::ping_req, std::string>::with<std::string>,
    // The database actor of a path on this node, instantiated if needed as a replica (whatever
    // our own placement says, which may lag the asker's): path -> its peer slice.
    caf::replies_to<atom::replica, std::string>::with<database_peer_actor>,
    // Local: the members as this node sees them, itself first.
    caf::replies_to<atom::members>::with<std::vector<MemberStatus>>,
    // Local, once, from the node after it published this actor: our own proto::Member (with the
    // port it got). Probes start then. Refused from other nodes.
    caf::reacts_to<atom::open, std::string>,
    // Internal: the protocol period (probe one member, suspicion timeouts, connects).
    caf::reacts_to<atom::tick>,
    // Internal: the direct probe number n got no ack within the probe timeout.
    caf::reacts_to<atom::ping_req, atom::tick, uint64_t>,
    // Node-level anti-entropy (replication/node_summary.hpp): a serialized
    // proto::NodeSummaryRequest from a member -> a serialized proto::NodeSummaryReply.
    caf::replies_to<atom::summary, std::string>::with<std::string>,
    // Internal: the periodic node-level anti-entropy round.
    caf::reacts_to<atom::summary, atom::tick>>;

/// A member as the membership actor tells the supervisor (local only).
struct MemberView {
  uint64_t node_id = 0;
  /// Its cluster actor; invalid until connected.
  peer_actor actor;
  /// Up: not declared down by membership (SWIM), and connected.
  bool alive = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, MemberView& x) {
  return f(caf::meta::type_name("kvmesh.MemberView"), x.node_id, x.actor, x.alive);
}

/// The matcher supervisor (actors/matcher_supervisor.hpp): resolves paths to database actors.
using matcher_supervisor_actor = caf::typed_actor<
    // Returns the actor serving a database path: the local replica (instantiated on first
    // access) when placement puts the path on this node, else a replica on another node.
    caf::replies_to<atom::open, std::string>::with<database_client_actor>,
    // The database actor of a path on node `node` (this node included, instantiating it here
    // whatever placement says): (path, node) -> its peer slice.
    caf::replies_to<atom::replica, std::string, uint64_t>::with<database_peer_actor>,
    // From the membership actor: the other members (this node excluded) whenever they change.
    caf::reacts_to<atom::members, std::vector<MemberView>>,
    // From a database actor that handed its data over and dropped it: (path, itself).
    caf::reacts_to<atom::dropped, std::string, database_actor>,
    // The catalog: every database instantiated on this node.
    caf::replies_to<atom::databases>::with<std::vector<DatabaseInfo>>,
    // A RocksDB checkpoint of the node's store into a new directory -> a summary.
    caf::replies_to<atom::backup, std::string>::with<std::string>,
    // One page of the catalog's databases of a config: (config id, options) -> page.
    caf::replies_to<atom::instances, std::string, InstanceOptions>::with<InstancePage>,
    // Number of database actors currently running (not passivated).
    caf::replies_to<atom::active>::with<uint64_t>,
    // For metrics: the replication status of every running database (those that do not answer
    // within the replication timeout are left out).
    caf::replies_to<atom::status>::with<std::vector<ReplicationStatus>>,
    // Passivates every running database now; replies with how many were asked to stop.
    caf::replies_to<atom::passivate>::with<uint64_t>,
    // The database configs in force.
    caf::replies_to<atom::configs>::with<std::vector<ConfigInfo>>,
    // Re-reads the config directory. On success the new configs take effect at once (running
    // databases get their new size budget; those no config matches any more stop) and the reply
    // summarises what was loaded; on any error nothing changes and the error lists them.
    caf::replies_to<atom::reload>::with<std::string>,
    // Cluster-wide configs (config/cluster_configs.hpp). Applies the configs in the YAML text,
    // recording options.applied_by: all of them or, on any error, none.
    caf::replies_to<atom::configs, atom::put, std::string,
                    ConfigApplyOptions>::with<ConfigApplyResult>,
    // Deletes the cluster-wide config with this id, recording the second string as who asked.
    caf::replies_to<atom::configs, atom::erase, std::string, std::string>::with<ConfigApplyResult>,
    // The history of the cluster-wide config with this id, oldest first.
    caf::replies_to<atom::configs, atom::get, std::string>::with<std::vector<ConfigHistoryEntry>>,
    // From the system database's store (any thread): the cluster-wide configs changed.
    caf::reacts_to<atom::configs, atom::changed>,
    // From a database actor that saw no request for its idle time: (path, itself).
    caf::reacts_to<atom::idle, std::string, database_actor>,
    // `kvmesh node drain|undrain`: (node id, true to drain or false to undrain, who asked) ->
    // a summary. Stored cluster-wide (config/cluster_configs.hpp, DrainRecord).
    caf::replies_to<atom::drain, uint64_t, bool, std::string>::with<std::string>,
    // Its own timer: the next wave of databases to rebalance, and the drain progress report.
    caf::reacts_to<atom::rebalance>,
    // From the membership actor's node-level anti-entropy round (replication/node_summary.hpp):
    // (peer, paths) whose vectors differ from that peer's; running ones sync now, the others
    // are woken in waves like a rebalance and passivate again once in sync.
    caf::reacts_to<atom::summary, uint64_t, std::vector<std::string>>,
    // From the membership actor: member `peer` is heard again after being out of this node's
    // placement view (down for longer than the replica grace). Every database of this node's
    // catalog placed on both runs a stale repair with it (Replicator::StartFullSync): running
    // ones at once, the others woken in waves like a rebalance.
    caf::reacts_to<atom::full_sync, uint64_t>>;

/// The client gateway (actors/client_gateway.hpp): what a node publishes for clients. Every data
/// request names its database path; the gateway routes it to that database's actor.
using gateway_actor = caf::typed_actor<
    // Handshake: client protocol version -> (node protocol version, node id). A different
    // version is refused with Code::kInvalidArgument naming both versions.
    caf::replies_to<atom::hello, uint32_t>::with<uint32_t, uint64_t>,
    // The node's wall clock (Deadline::NowNs()), so that a client can state its deadlines in it.
    caf::replies_to<atom::clock>::with<int64_t>,
    // The gateway's shards (gateway_actor each; empty: none): actors with this interface that
    // serve the requests naming a path as the gateway does. A client sends every request of one
    // path to one shard (its choice, by the path's hash), so that the requests of different
    // databases are not handled one at a time by a single actor.
    caf::replies_to<atom::gateways>::with<std::vector<caf::actor>>,
    // Every data request carries its Deadline (in the node's clock) last: one that has passed is
    // refused unapplied with Code::kTimeout ("deadline exceeded").
    // Opens (instantiating on first access) the database at a path: path -> its stats.
    caf::replies_to<atom::open, std::string, Deadline>::with<DatabaseStats>,
    // (path, key, value) -> ok.
    caf::replies_to<atom::put, std::string, std::string, std::string, Deadline>::with<atom::ok>,
    // (path, puts): several plain puts to one database sent as one message (1 to
    // kMaxPutsPerMessage kPut operations without ttl; the client's puts waiting together under
    // load), each applied as if it came alone, in order -> one outcome per put (an empty error:
    // ok). A WriteBatch carries them (not vectors of strings): CAF decodes a message before
    // anyone checks it, and a vector of strings costs 32 bytes of memory per byte on the wire.
    caf::replies_to<atom::put, std::string, WriteBatch, Deadline>::with<std::vector<caf::error>>,
    // (path, key) -> value, or Code::kNotFound.
    caf::replies_to<atom::get, std::string, std::string, Deadline>::with<std::string>,
    // (path, keys): several plain gets of one database sent as one message (1 to
    // kMaxGetsPerMessage keys; the client's gets waiting together under load), admitted
    // together and read in one go -> one answer per key, the reply bounded (GetManyReply: keys
    // it leaves out are for the client to send alone). PackedKeys, not a vector of strings, for
    // the reason the puts use a WriteBatch.
    caf::replies_to<atom::get, std::string, PackedKeys, Deadline>::with<GetManyReply>,
    // (path, read at a level) -> value and version (see database_client_actor).
    caf::replies_to<atom::get, std::string, ReadRequest, Deadline>::with<VersionedValue>,
    // (path, key) -> ok; a missing key is not an error.
    caf::replies_to<atom::erase, std::string, std::string, Deadline>::with<atom::ok>,
    // (path, options) -> one page.
    caf::replies_to<atom::list, std::string, ListOptions, Deadline>::with<ListPage>,
    // (path, batch) -> ok, all or nothing.
    caf::replies_to<atom::batch, std::string, WriteBatch, Deadline>::with<atom::ok>,
    // Its own: sends the writes to the path it took since the last one together (see
    // OrderedRoute::TakeWrite). From anyone else it only sends them sooner.
    caf::reacts_to<atom::commit, std::string>,
    // (path, batch) for a session -> the write's dot as SessionToken text.
    caf::replies_to<atom::batch, std::string, WriteBatch, atom::session,
                    Deadline>::with<std::string>,
    // path -> counters.
    caf::replies_to<atom::stats, std::string, Deadline>::with<DatabaseStats>,
    // path -> replication status, from the replica serving this node's requests.
    caf::replies_to<atom::status, std::string, Deadline>::with<ReplicationStatus>,
    // (path, pull) -> the changes since the pull's position (see database_client_actor).
    caf::replies_to<atom::watch, std::string, WatchRequest, Deadline>::with<WatchUpdate>,
    // The cluster members as this node sees them (just this node when it is not clustered).
    caf::replies_to<atom::members>::with<std::vector<MemberStatus>>,
    // The catalog of instantiated databases.
    caf::replies_to<atom::databases>::with<std::vector<DatabaseInfo>>,
    // (config id, options) -> one page of its databases instantiated on this node.
    caf::replies_to<atom::instances, std::string, InstanceOptions>::with<InstancePage>,
    // path -> ok once every key is deleted (tombstoned) on its replicas (see README "Dropping a
    // database"). Needs the admin right when the node has an ACL.
    caf::replies_to<atom::drop, std::string, Deadline>::with<atom::ok>,
    // (path, directory on the node) -> summary: a backup of one database; admin.
    caf::replies_to<atom::backup, std::string, std::string, Deadline>::with<std::string>,
    // directory on the node -> summary: a checkpoint of the node's whole store; admin.
    caf::replies_to<atom::backup, std::string>::with<std::string>,
    // (path, directory on the node) -> summary: restores a database from its backup; admin.
    caf::replies_to<atom::restore, std::string, std::string, Deadline>::with<std::string>,
    // The database configs in force.
    caf::replies_to<atom::configs>::with<std::vector<ConfigInfo>>,
    // Reloads the config directory (see matcher_supervisor_actor).
    caf::replies_to<atom::reload>::with<std::string>,
    // Cluster-wide configs (see matcher_supervisor_actor): apply (admin), delete (admin), history
    // (any grant). Who asked is the caller's principal, whatever the options say.
    caf::replies_to<atom::configs, atom::put, std::string,
                    ConfigApplyOptions>::with<ConfigApplyResult>,
    caf::replies_to<atom::configs, atom::erase, std::string>::with<ConfigApplyResult>,
    caf::replies_to<atom::configs, atom::get, std::string>::with<std::vector<ConfigHistoryEntry>>,
    // node id -> summary: takes a node out of placement for good (put), or puts it back (erase)
    // (see matcher_supervisor_actor); admin. Atoms rather than a bool: the connection guard
    // admits requests by their types, and reads a bool in a signature as an atom.
    caf::replies_to<atom::drain, atom::put, uint64_t>::with<std::string>,
    caf::replies_to<atom::drain, atom::erase, uint64_t>::with<std::string>,
    // Internal, the gateway's timer: expire its own requests past their deadline (LocalDeadlines).
    // From anyone else it changes nothing (only what is due expires).
    caf::reacts_to<atom::expire_due>,
    // Internal, sent by the gateway to itself behind the messages waiting when it held back a
    // reply (client_gateway_state::cork): sends the replies held back. From anyone else it only
    // sends them sooner.
    caf::reacts_to<atom::uncork>>;

}  // namespace kvmesh

CAF_BEGIN_TYPE_ID_BLOCK(kvmesh, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::WriteOp))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::WriteBatch))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::WriteBatch>))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<caf::error>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ListOptions))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ListPage))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::DatabaseStats))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::DatabaseInfo))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::DatabaseInfo>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ConfigInfo))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::InstanceInfo))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::InstanceInfo>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::InstanceOptions))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::InstancePage))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::ConfigInfo>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ConfigApplyOptions))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ConfigApplyResult))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ConfigHistoryEntry))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::ConfigHistoryEntry>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::MemberStatus))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::MemberStatus>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ReplicaSet))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::PeerReplicaStatus))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::PeerReplicaStatus>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ReplicationStatus))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::MemberView))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::MemberView>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::database_client_actor))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::database_peer_actor))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::database_actor))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::peer_actor))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::matcher_supervisor_actor))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::gateway_actor))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::Deadline))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::ReplicationStatus>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::WatchRequest))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::WatchEvent))
CAF_ADD_TYPE_ID(kvmesh, (std::vector<kvmesh::WatchEvent>))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::WatchUpdate))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::ReadRequest))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::VersionedValue))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::KeyRecord))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::PackedKeys))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::GetManyReply))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::SharedWriteBatch))
CAF_ADD_TYPE_ID(kvmesh, (kvmesh::SharedWriteBatches))
CAF_END_TYPE_ID_BLOCK(kvmesh)
