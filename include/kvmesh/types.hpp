// The plain value types a user of kvmesh sees: batches, list pages, counters, configs, members
// and replication status. Shared by the embedded node, the client library and the node's own
// layers. No CAF here: messages/type_ids.hpp adds the CAF inspect() overloads for them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvmesh {

/// When a node's writes reach the disk, and so what a power loss or kernel crash can take from
/// the writes it acknowledged (README "Durability"). A crash of the process alone (kill -9)
/// loses no acknowledged write in any mode: each write is in the operating system's hands
/// before it is acknowledged.
enum class SyncMode : uint8_t {
  /// The write-ahead log is left to the kernel's writeback: a power loss can take the writes
  /// of about the last 30 s (Linux's default dirty_expire_centisecs). Fastest.
  kNone = 0,
  /// A background thread syncs the write-ahead log every sync period (when something was
  /// written): a power loss takes at most the writes of the last period and of the sync under
  /// way, as Redis's appendfsync everysec or Cassandra's periodic commit log.
  kPeriodic = 1,
  /// A write is synced before it is acknowledged: a power loss takes no acknowledged write.
  /// Writes to one database that arrive together share one sync (group commit).
  kAlways = 2,
};

/// "none", "periodic" or "always".
inline const char* SyncModeName(SyncMode mode) {
  switch (mode) {
    case SyncMode::kNone:
      return "none";
    case SyncMode::kPeriodic:
      return "periodic";
    case SyncMode::kAlways:
      return "always";
  }
  return "unknown";
}

/// Reads "none", "periodic" or "always" into `*out`; false (and `*out` unchanged) otherwise.
inline bool ParseSyncMode(std::string_view text, SyncMode* out) {
  for (SyncMode mode : {SyncMode::kNone, SyncMode::kPeriodic, SyncMode::kAlways}) {
    if (text == SyncModeName(mode)) {
      *out = mode;
      return true;
    }
  }
  return false;
}

/// The mode as logs and `kvmesh members` show it: "none", "always", or "periodic 100ms".
inline std::string DescribeSync(SyncMode mode, std::chrono::milliseconds period) {
  std::string text = SyncModeName(mode);
  if (mode == SyncMode::kPeriodic) text += " " + std::to_string(period.count()) + "ms";
  return text;
}

/// The longest busy_poll a node (NodeOptions) or a client (ClientOptions) accepts: 100 ms.
inline constexpr std::chrono::microseconds kMaxBusyPoll{100000};

/// The most actor worker threads kvmeshd's --worker-threads (NodeOptions::worker_threads) and
/// kvmesh-bench's accept: 256.
inline constexpr int kMaxWorkerThreads = 256;

/// One operation of an atomic batch.
struct WriteOp {
  /// kCheck writes nothing: it makes the whole batch fail with condition_failed (naming the
  /// key), and write nothing, unless `key` has the version `value` or, if `value` is empty, is
  /// absent (missing, deleted or expired). Checks see the state the earlier operations of the
  /// batch leave.
  enum class Kind : uint8_t { kPut = 0, kErase = 1, kCheck = 2 };
  Kind kind = Kind::kPut;
  std::string key;
  /// kPut: the value. kCheck: the version expected, or empty for "absent". Ignored for kErase.
  std::string value;
  /// kPut only: the key expires this many milliseconds after the write (0: never). An expired
  /// key reads as missing on every replica (see README "Expiry"). At most kMaxTtlMs.
  uint64_t ttl_ms = 0;
};

/// Largest ttl: about a hundred years.
inline constexpr uint64_t kMaxTtlMs = 100ull * 366 * 24 * 3600 * 1000;

/// Puts, erases and checks applied atomically, in order: all of them or none. A later
/// operation on the same key overrides an earlier one. Limits: kMaxBatchOps operations,
/// kMaxBatchBytes of keys and values together.
struct WriteBatch {
  std::vector<WriteOp> ops;

  WriteBatch& Put(std::string key, std::string value, uint64_t ttl_ms = 0) {
    ops.push_back({WriteOp::Kind::kPut, std::move(key), std::move(value), ttl_ms});
    return *this;
  }
  WriteBatch& Erase(std::string key) {
    ops.push_back({WriteOp::Kind::kErase, std::move(key), {}, 0});
    return *this;
  }
  /// The batch applies only if `key` has `version` (a token from get_versioned or a list with
  /// versions), or is absent when `version` is empty.
  WriteBatch& Check(std::string key, std::string version) {
    ops.push_back({WriteOp::Kind::kCheck, std::move(key), std::move(version), 0});
    return *this;
  }
  bool empty() const { return ops.empty(); }
  size_t size() const { return ops.size(); }
};

/// Options of one put or erase (Database::put, Database::erase).
struct WriteOptions {
  /// Put only: the key expires this long after the write (at most kMaxTtlMs); 0 (default):
  /// never. A later put without ttl clears the expiry.
  std::chrono::milliseconds ttl{0};
  /// If not empty: write only if the key's current version is this token (from get_versioned
  /// or a list with versions); otherwise condition_failed and nothing is written. Default "".
  std::string if_version;
  /// If true: write only if the key is absent (missing, deleted or expired). Default false.
  bool if_absent = false;
};

/// How fresh a read must be (README "Read levels"). Per request: ReadOptions::consistency,
/// ListOptions::consistency, CLI --consistency, HTTP ?consistency=.
enum class ReadConsistency : uint8_t {
  /// Whatever the replica serving the request holds now (it may lag other replicas). Fastest.
  kEventual = 0,
  /// Served only by a replica that holds every write the handle's session has had
  /// acknowledged (Database::session_token); unavailable if none does in time.
  kReadYourWrites = 1,
  /// Asks replication.min replicas and returns the newest answer by the conflict rule;
  /// unavailable if fewer answer in time. get and get_versioned only.
  kQuorum = 2,
};

/// "eventual", "read_your_writes" or "quorum".
inline const char* ReadConsistencyName(ReadConsistency level) {
  switch (level) {
    case ReadConsistency::kEventual:
      return "eventual";
    case ReadConsistency::kReadYourWrites:
      return "read_your_writes";
    case ReadConsistency::kQuorum:
      return "quorum";
  }
  return "unknown";
}

/// Reads "eventual", "read_your_writes" or "quorum" into `*out`; false (and `*out` unchanged)
/// otherwise.
inline bool ParseReadConsistency(std::string_view text, ReadConsistency* out) {
  for (ReadConsistency level :
       {ReadConsistency::kEventual, ReadConsistency::kReadYourWrites, ReadConsistency::kQuorum}) {
    if (text == ReadConsistencyName(level)) {
      *out = level;
      return true;
    }
  }
  return false;
}

/// Options of one get or get_versioned (Database::get, Database::get_versioned).
struct ReadOptions {
  /// Default kEventual (as a get without options).
  ReadConsistency consistency = ReadConsistency::kEventual;
};

/// One read of one key at a read level (internal: what Database::get with ReadOptions sends).
struct ReadRequest {
  std::string key;
  ReadConsistency consistency = ReadConsistency::kEventual;
  /// kReadYourWrites: the session's token (SessionToken text, common/read_levels.hpp).
  std::string session_token;
};

/// A value with its version (Database::get_versioned).
struct VersionedValue {
  std::string value;
  /// Opaque token of the write that stored the value (its dot and timestamp): equal tokens,
  /// same write. Pass it to WriteOptions::if_version or WriteBatch::Check.
  std::string version;
};

inline constexpr size_t kMaxBatchOps = 100000;
inline constexpr size_t kMaxBatchBytes = 64u << 20;
/// Largest request a node reads from a client connection: kMaxBatchBytes of keys and values plus
/// room for the framing of kMaxBatchOps operations, the key and the path. A connection that
/// announces a larger message is closed before the message is read (the node never buffers
/// it). A value can be at most kMaxBatchBytes (NodeOptions::max_value_bytes is capped there), and
/// the client library refuses larger values and batches before sending them.
inline constexpr size_t kMaxRequestBytes = kMaxBatchBytes + (4u << 20);
/// Most puts a client sends to a node as one message (its puts to one database waiting together
/// under load), and most bytes of their keys and values: well inside kMaxRequestBytes.
inline constexpr size_t kMaxPutsPerMessage = 256;
inline constexpr size_t kMaxPutsMessageBytes = 1u << 20;
/// Most gets a client sends to a node as one message (its gets to one database waiting together
/// under load). The client keeps their keys within kMaxPutsMessageBytes; a node bounds the count
/// (and the message, by kMaxRequestBytes).
inline constexpr size_t kMaxGetsPerMessage = 256;
/// Most bytes of values a database puts in its one reply to several gets. Values are up to
/// kMaxBatchBytes each, so the reply to 256 gets could otherwise reach gigabytes, held in memory
/// on the way and over a connection's message bound: past this budget the reply answers no
/// further key (it always answers the first), and the client sends the gets it left out alone.
inline constexpr size_t kMaxGetsReplyBytes = 1u << 20;

/// What to list. Pages are bounded by `limit` keys and by kMaxListPageBytes of keys and values,
/// so listing a million keys never builds one giant message.
/// What to list (Database::list_page). The keys listed are those under `prefix` that lie in
/// [start, end), in byte order (descending with `reverse`), live ones only (not deleted, not
/// expired). Invalid input fails with invalid_argument naming it, nothing listed: a bound that
/// is not a valid key or not under `prefix`, `start` after `end`, a token that is not a key of
/// this listing's range. `start == end` lists nothing.
struct ListOptions {
  /// Segment prefix (common/path.hpp): "/users" lists "/users" and "/users/...". "" lists all.
  std::string prefix;
  /// Resume token: the `next_token` of the previous page, or "" for the first page. The page
  /// then holds the keys after it in the listing's order (below it with `reverse`); pass the
  /// same prefix, start, end and reverse as for the page that gave it.
  std::string start_after;
  /// Keys per page; 0 means kDefaultListLimit; capped at kMaxListLimit.
  uint32_t limit = 0;
  /// Also return the values (for export); otherwise `ListPage::values` stays empty.
  bool with_values = false;
  /// Also return each key's version token (VersionedValue::version) in `ListPage::versions`.
  bool with_versions = false;
  /// Lower bound, inclusive; "" (default) for none. Normalised like a key (a leading '/' added,
  /// runs of '/' collapsed, a trailing '/' dropped: "users/b" is "/users/b"), then compared with
  /// the keys in byte order; it need not exist. Must be under `prefix` when one is given.
  std::string start;
  /// Upper bound, exclusive; "" (default) for none. Normalised and checked as `start`.
  std::string end;
  /// List from the highest key down (descending byte order) instead of up. Default false.
  bool reverse = false;
  /// Read level (README "Read levels"): kEventual (default) or kReadYourWrites; kQuorum is
  /// refused with invalid_argument (quorum reads are for get and get_versioned).
  ReadConsistency consistency = ReadConsistency::kEventual;
  /// kReadYourWrites: the session's token; Database::list_page fills it from the handle.
  std::string session_token;
};

inline constexpr uint32_t kDefaultListLimit = 1000;
inline constexpr uint32_t kMaxListLimit = 10000;
inline constexpr size_t kMaxListPageBytes = 4u << 20;

/// One page of a list, keys in byte order (descending for ListOptions::reverse).
struct ListPage {
  std::vector<std::string> keys;
  /// Parallel to `keys` when ListOptions::with_values was set.
  std::vector<std::string> values;
  /// Pass as ListOptions::start_after to get the next page; empty on the last page.
  std::string next_token;
  /// Parallel to `keys` when ListOptions::with_versions was set. (After next_token, so code
  /// that initialises the fields above in order keeps compiling.)
  std::vector<std::string> versions;

  bool has_more() const { return !next_token.empty(); }
};

/// What to watch (Database::watch). A watch reports the changes to the keys under `prefix` since
/// a position: puts and deletes, each with the key and the version of the write (README "Watch").
struct WatchOptions {
  /// Segment prefix, as for list: "/users" watches "/users" and "/users/...". "" watches all.
  std::string prefix;
  /// Where to start: "" for now (changes made from here on), or a WatchUpdate::position this
  /// database's watch gave earlier (the changes since then, none twice).
  std::string from;
  /// Also deliver the values of puts (WatchEvent::value). Default false.
  bool with_values = false;
  /// How long a node holds a pull when nothing changed before answering "nothing yet"; capped
  /// at half the request timeout and at 10 s by the node. Shorter notices a lost node sooner.
  /// Default 5 s.
  std::chrono::milliseconds poll_wait = std::chrono::seconds(5);
  /// Pause before trying again after the node could not be reached (unavailable, timeout).
  /// Default 500 ms.
  std::chrono::milliseconds retry_interval = std::chrono::milliseconds(500);
};

/// One change a watch reports.
struct WatchEvent {
  enum class Kind : uint8_t { kPut = 0, kErase = 1 };
  Kind kind = Kind::kPut;
  std::string key;
  /// The value of a put with WatchOptions::with_values; empty otherwise.
  std::string value;
  /// The version token of the write (as get_versioned returns; usable as if_version).
  std::string version;
};

/// Events delivered together, and the position just after them.
struct WatchUpdate {
  /// In the order of their writes' timestamps; at most one per key.
  std::vector<WatchEvent> events;
  /// Resume here (WatchOptions::from) once `events` are handled: none of them comes again,
  /// nothing after them is missed. Opaque text (hex).
  std::string position;
};

/// One pull of a watch (internal: what Database::watch sends to the node, again and again).
struct WatchRequest {
  /// Normalised or not; the node normalises it.
  std::string prefix;
  /// "" for now, else a WatchUpdate::position.
  std::string position;
  bool with_values = false;
  /// How long the node may hold the pull when nothing changed (it also stops at half the time
  /// left before the request's deadline, and after at most WatchHub::kMaxHold, 10 s).
  uint32_t wait_ms = 0;
};

/// Counters of one instantiated database.
struct DatabaseStats {
  std::string path;
  std::string config_id;
  /// The namespace id inside the node's store.
  uint64_t database_id = 0;
  uint64_t key_count = 0;
  /// Key bytes plus value bytes of live entries.
  uint64_t used_bytes = 0;
  /// The config's size budget.
  uint64_t limit_bytes = 0;
};

/// A catalog entry: a database path that has been instantiated on this node.
struct DatabaseInfo {
  std::string path;
  std::string config_id;
  uint64_t database_id = 0;
  uint64_t created_ms = 0;
};

/// One instantiated database of a config on the node asked (`kvmesh instances`).
struct InstanceInfo {
  std::string path;
  std::string config_id;
  uint64_t database_id = 0;
  uint64_t created_ms = 0;
  /// Milliseconds since the Unix epoch when it last served a request, recorded when it
  /// passivates (so at most one write per activation); 0 if never recorded. While `active`, it
  /// may have been used since.
  uint64_t last_access_ms = 0;
  /// True if its database actor runs on this node now (not passivated).
  bool active = false;
  /// Live keys and their bytes (keys plus values) in this node's copy.
  uint64_t key_count = 0;
  uint64_t used_bytes = 0;
  /// The node ids of its replicas as placement chooses them now (this node alone when not
  /// clustered); empty if no config matches its path any more.
  std::vector<uint64_t> replicas;
};

/// Options of an instances listing: one page in path order.
struct InstanceOptions {
  /// Resume token: the previous page's `next_cursor`, or "" for the first page.
  std::string cursor;
  /// Instances per page; 0 means kDefaultInstanceLimit; capped at kMaxInstanceLimit.
  uint32_t limit = 0;
};

inline constexpr uint32_t kDefaultInstanceLimit = 100;
inline constexpr uint32_t kMaxInstanceLimit = 1000;

/// One page of instances. A page may hold fewer than `limit` (even none) and still have more:
/// each page examines a bounded part of the node's catalog, so a config with few instances among
/// many databases never makes one slow request.
struct InstancePage {
  std::vector<InstanceInfo> instances;
  /// Pass as InstanceOptions::cursor for the next page; empty when the catalog is exhausted.
  std::string next_cursor;

  bool has_more() const { return !next_cursor.empty(); }
};

/// A database config as reported to clients (`kvmesh dbs`).
struct ConfigInfo {
  std::string id;
  std::string description;
  std::vector<std::string> tags;
  std::string matcher;
  /// "literal", "wildcard" or "regex".
  std::string matcher_kind;
  uint32_t replication_min = 1;
  uint32_t replication_max = 1;
  uint64_t size_bytes = 0;
  /// "file:line" it was read from; for a cluster-wide config, who applied it, through which
  /// node, when.
  std::string source;
  /// "file": one of this node's own configs (its config files, or the YAML text or configs an
  /// embedding program gave it); "api": a cluster-wide config (Node::apply_configs,
  /// `kvmesh config apply`, the HTTP API), the same on every node.
  std::string origin;
  /// Most databases of this config one node instantiates (`max_instances`); 0: no bound.
  uint64_t max_instances = 0;
};

/// How Node::apply_configs and Client::apply_configs apply configs.
struct ConfigApplyOptions {
  /// Validate only: check the configs exactly as an apply would and report, changing nothing.
  /// Default false.
  bool dry_run = false;
  /// If not empty, the text must hold exactly one config, whose id must be this one (a config
  /// without an id gets it). For APIs that name the config in the request (HTTP PUT
  /// /v1/configs/{id}). Default empty.
  std::string id;
  /// The name errors give the text ("FILE.yaml:3: error: size: ..."). Default "request".
  std::string source_name = "request";
  /// Who is recorded in the config's history: a node fills in its client's principal; the
  /// embedded API records this (empty: "embedded"). Default empty.
  std::string applied_by;
};

/// What an apply or delete did.
struct ConfigApplyResult {
  /// The configs applied (as now in force), in the order of the text; empty for a delete.
  std::vector<ConfigInfo> configs;
  /// Findings that did not stop it: overlapping matchers, a size lowered below what instances
  /// may hold, instances a delete leaves without a config.
  std::vector<std::string> warnings;
};

/// One apply or delete of a cluster-wide config (`kvmesh config get ID --history`).
struct ConfigHistoryEntry {
  /// The config as applied; for a delete only `config.id` is set.
  ConfigInfo config;
  bool deleted = false;
  /// Principal that asked ("embedded" for the embedded API, "anonymous" without TLS).
  std::string applied_by;
  /// Name of the node it was applied through.
  std::string node;
  /// That node's wall clock, milliseconds since the epoch.
  int64_t time_ms = 0;
  /// True for the entry in force on the node that answered. Of two concurrent edits, the one not
  /// in force lost (the later edit wins on every node).
  bool in_force = false;
};

/// A cluster member as one node sees it (`kvmesh members`).
struct MemberStatus {
  uint64_t node_id = 0;
  /// "host:port" of its cluster port.
  std::string cluster_address;
  /// Its client port; 0 if it serves no clients.
  uint16_t client_port = 0;
  /// True while it answers probes, directly or through other members, and its connection holds;
  /// false once it stayed suspected (unanswered) for the failure timeout, or while the
  /// connection to it is lost.
  bool alive = false;
  /// True for the node that reports.
  bool self = false;
  /// Milliseconds since it was last heard from (0 for the reporting node): its own probes and
  /// acks, or an ack relayed by another member. With SWIM each node probes one member per
  /// period, so this grows to about as many periods as there are members while it is up.
  uint64_t silent_ms = 0;
  /// Its durability mode as DescribeSync gives it ("none", "always", "periodic 100ms"); empty
  /// if it did not say (a node of an older version).
  std::string sync;
  /// The reporting node only (false and 0 for the others): true while it is low on disk space
  /// (puts refused, deletes accepted; NodeOptions::low_space_bytes), and the free bytes of its
  /// data dir's file system at the last check.
  bool low_space = false;
  uint64_t free_disk_bytes = 0;
  /// Its place in placement, cluster-wide (`kvmesh node drain`): empty while it takes replicas,
  /// "draining" while a drain hands its databases over, "drained" once it holds none.
  std::string placement;
  /// While draining or drained, as the node last reported (reports follow each wave of its
  /// hand-over): the users' databases it held when the drain began and those it still holds.
  uint64_t drain_total = 0;
  uint64_t drain_left = 0;
  /// The reporting node only: databases it still has to rebalance after a membership change or
  /// a drain (waiting for their wave, or in one).
  uint64_t rebalance_pending = 0;
};

/// One replica of a database as seen by the replica that reports (ReplicationStatus::peers).
struct PeerReplicaStatus {
  uint64_t node_id = 0;
  /// True if the reporting replica can reach it now (connected, not partitioned, answering).
  bool reachable = false;
  /// Its version vector as last reported to us ("{origin:base, ...}", hex origins); empty if
  /// it has not answered yet.
  std::string version_vector;
  /// Writes it has applied by that vector (VersionVector::Total); 0 if unknown.
  uint64_t writes_seen = 0;
  /// Deltas queued here for it and not yet acknowledged.
  uint64_t pending_deltas = 0;
};

/// The replication status of one database, reported by one of its replicas (`kvmesh status`).
struct ReplicationStatus {
  std::string path;
  /// The reporting node.
  uint64_t node_id = 0;
  /// The replica set by placement, best first (includes the reporting node unless it is
  /// handing its copy over after a membership change).
  std::vector<uint64_t> replicas;
  /// The config's replication.min and replication.max, and the acknowledgements a write needs
  /// (min in a cluster, 1 on a node without a cluster port).
  uint32_t min = 1;
  uint32_t max = 1;
  uint32_t required_acks = 1;
  /// The reporting replica's counters, vector and content digest.
  uint64_t key_count = 0;
  uint64_t used_bytes = 0;
  uint64_t tombstones = 0;
  uint64_t digest = 0;
  std::string version_vector;
  uint64_t writes_seen = 0;
  /// Records received from other replicas since this replica (actor) started, and how many of
  /// them changed a key here (the rest it had already, or were older than what it held).
  uint64_t entries_received = 0;
  uint64_t entries_applied = 0;
  /// The other replicas.
  std::vector<PeerReplicaStatus> peers;
};

}  // namespace kvmesh
