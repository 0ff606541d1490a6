// kvmesh::Database: the one handle to a kvmesh database, whether the node runs in this process or
// in another one. Only how the handle is obtained differs:
//
//   // A node in this process (kvmesh/node.hpp):
//   kvmesh::Database db = node->open("/example/kv");
//   // A node reached over the network (kvmesh/client.hpp):
//   kvmesh::Database db = kvmesh::client::connect("127.0.0.1:7370").open("/example/kv");
//
//   if (!db.ok()) { /* db.status(): no_matching_config, unavailable, ... */ }
//   kvmesh::Status s = db.put("/users/123/profile", bytes);
//   kvmesh::Result<std::string> v = db.get("/users/123/profile");   // v.IsNotFound() if missing
//   s = db.erase("/users/123/profile");
//   kvmesh::Result<std::vector<std::string>> keys = db.list("/users/");  // pages transparently
//   s = db.batch().put("/a", "1").erase("/b").commit();                  // atomic
//   s = db.put("/session", token, {std::chrono::seconds(30)});           // expires
//   auto vv = db.get_versioned("/n");                                     // value + version
//   s = db.put("/n", "2", {{}, vv->version});  // only if unchanged, else condition_failed
//   std::future<kvmesh::Status> f = db.put_async("/k", "v");             // many in flight
//   kvmesh::Watch w;                                                      // changes, as they come
//   s = db.watch({"/users"}, [](kvmesh::Result<kvmesh::WatchUpdate> u) { /* u->events */ }, &w);
//
// Nothing throws. A handle that could not be opened (or was closed) is unusable: its status() says
// why, and every call on it returns that status at once (a callback runs on the calling thread,
// a future is ready). Errors are typed (kvmesh::Code): not_found, no_matching_config,
// size_limit_exceeded (with the numbers), value_too_large, invalid_key, invalid_argument,
// timeout (the request's deadline passed; it may still be applied), unavailable (the node is
// stopped or unreachable; over the network in-flight requests fail as soon as the connection is
// lost, and the next call reconnects).
//
// Thread-safety: a Database is a cheap, copyable handle; its copies share one backend. Any number
// of threads may call one handle (or its copies) at once. close() and assignment change only the
// object they are called on and must not race other calls on that same object.
//
// Ordering: requests made through one handle (and its copies) from one thread reach the database
// in the order they were made, asynchronous ones included, also when they race the passivation
// and re-activation of an idle database, with one exception: over the network a blocking call is
// sent from the calling thread itself, so it may overtake asynchronous requests of that thread
// still in flight.
// When order matters across handles or threads, or between a blocking call and earlier
// asynchronous ones, wait for the earlier callback or future first, or use one batch. Over the
// network, a later request's answer does not mean an earlier get was answered (a get sent
// together with others may be sent again alone): wait for each one the next call depends on.
//
// Callbacks: the `*_async(..., done)` variants return at once; `done` runs exactly once, later,
// on one of the node's threads (embedded) or of the client's threads (network), after the
// callbacks of earlier requests of the same handle made from the same thread (embedded). It runs
// on the calling thread before the call returns when the handle is unusable, its node is stopped
// (embedded), the node cannot be reached (network), or the client library refuses the request
// before sending it (network: a value or batch over kMaxBatchBytes / kMaxBatchOps). Keep `done`
// short: never block in it, nor wait in it for another request (a blocking call from it may wait
// for a thread that is busy running it, and fails with timeout). Do not let `done` hold the last
// copy of a Database, Client or Node: they would be torn down from their own thread.
#pragma once

#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {

class Batch;
class DatabaseBackend;
class Watch;

class Database {
 public:
  using StatusCallback = std::function<void(Status)>;
  template <class T>
  using ResultCallback = std::function<void(Result<T>)>;

  /// An unusable handle (status invalid_argument); use Node::open() or client::Client::open().
  Database();

  /// OK when the handle is usable; otherwise why not (what open() failed with, or "closed").
  const Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }
  /// The normalised database path ("" if it could not be normalised).
  const std::string& path() const { return path_; }

  /// Stores `value` (any bytes, NUL included) under `key`, replacing what was there. Errors:
  /// invalid_key, value_too_large, size_limit_exceeded (nothing written), timeout, unavailable.
  Status put(std::string_view key, std::string_view value) const;
  /// The same with options (kvmesh/types.hpp WriteOptions): a ttl after which the key reads as
  /// missing, and conditions (if_version, if_absent) checked atomically with the write, which
  /// fail with condition_failed naming the key and write nothing. Where a condition is judged
  /// in a cluster and what holds under failures: README "Versions and conditional writes".
  Status put(std::string_view key, std::string_view value, const WriteOptions& options) const;

  /// The value of `key`. A missing (or expired) key is not_found (IsNotFound()).
  Result<std::string> get(std::string_view key) const;

  /// The value of `key` and its version token (for WriteOptions::if_version). Read like a
  /// one-key list from the same replica get reads from. A missing key is not_found.
  Result<VersionedValue> get_versioned(std::string_view key) const;
  /// get and get_versioned at a read level (README "Read levels"): options.consistency
  /// kEventual is the plain call; kReadYourWrites is served only by a replica holding every
  /// write of this handle's session (needs with_session(), else invalid_argument); kQuorum
  /// returns the newest of replication.min replicas' records by the conflict rule. Both fail
  /// with unavailable (saying how many replicas answered) when the level cannot be met before
  /// the request's deadline; then nothing is known about the key.
  Result<std::string> get(std::string_view key, const ReadOptions& options) const;
  Result<VersionedValue> get_versioned(std::string_view key, const ReadOptions& options) const;
  void get_async(std::string key, ReadOptions options, ResultCallback<std::string> done) const;

  /// A copy of this handle with a session of its own (for read_your_writes), empty: from then on
  /// every write acknowledged through the copy (or copies of it) adds its dot to the session's
  /// token, and reads at kReadYourWrites through them see those writes, whichever replica serves
  /// them. Writes through a session handle travel one by one (the embedded API does not gather
  /// them into one message). Handles without a session (the default) keep no token.
  Database with_session() const;
  /// The session's token: opaque text naming the writes acknowledged in this session ("" for
  /// none, or without a session). Carry it to another handle (another process, another node)
  /// with set_session_token to read your writes there.
  std::string session_token() const;
  /// Adds the writes of `token` (from session_token()) to this handle's session, starting one
  /// (shared with later copies) if it has none. invalid_argument for a malformed token.
  Status set_session_token(std::string_view token);

  /// Removes `key`; removing a missing key succeeds.
  Status erase(std::string_view key) const;
  /// The same with conditions (WriteOptions::if_version, if_absent; ttl must be 0).
  Status erase(std::string_view key, const WriteOptions& options) const;
  /// Every key under `prefix` (segment rule: "/users" lists "/users" and "/users/..."), in byte
  /// order, fetching pages as needed. The pages are separate requests: a list that runs while
  /// others write sees each page as of its own time. Stops at the first failed page.
  Result<std::vector<std::string>> list(std::string_view prefix = "") const;
  /// The same at a read level: kEventual, or kReadYourWrites (each page is served by the replica
  /// this handle's node routes to, and fails with unavailable while it lacks the session's
  /// writes); kQuorum is refused with invalid_argument. list_page takes
  /// ListOptions::consistency likewise (the session token is filled in from this handle).
  Result<std::vector<std::string>> list(std::string_view prefix, const ReadOptions& options) const;
  /// One page, for callers that page themselves (ListOptions::start_after), want values
  /// (ListOptions::with_values), a range (start, end) or the reverse order (reverse).
  /// invalid_argument for bad bounds or a token not of this listing (ListOptions).
  Result<ListPage> list_page(const ListOptions& options) const;
  /// A batch builder bound to this handle; Batch::commit() applies it atomically.
  Batch batch() const;
  /// Applies `batch` atomically and in order: every operation or none. Errors as put's, and
  /// invalid_argument over kMaxBatchOps / kMaxBatchBytes.
  Status write(const WriteBatch& batch) const;
  /// The same, taking the batch's keys and values over instead of copying them (bulk loads).
  Status write(WriteBatch&& batch) const;
  /// Key count, used bytes and size limit.
  Result<DatabaseStats> stats() const;
  /// Replication status from the replica serving this handle's node: replica set, version
  /// vectors, pending deltas and content digest (equal digests: equal contents).
  Result<ReplicationStatus> replication_status() const;
  /// Called with each update of a watch, or once with the error that ended it.
  using WatchCallback = std::function<void(Result<WatchUpdate>)>;
  /// Watches the keys under options.prefix (README "Watch"): `on_update` gets the puts and
  /// deletes made from the position options.from on ("" : from when watch returns OK), each
  /// once, with the position to resume from after them (WatchUpdate::position; also
  /// Watch::position()). Writes made through any replica arrive. A key changed several times
  /// between two updates is reported once, with its latest write; a put whose ttl has passed
  /// before it is reported comes as a delete.
  ///
  /// Returns once the node has answered the first pull: OK with `*watch` running, or what the
  /// first pull failed with (no_matching_config, invalid_key for the prefix, invalid_argument
  /// for a position that is malformed or expired, unavailable...), `*watch` then not running.
  ///
  /// `on_update` runs on a thread of the watch's own, one call at a time, only for updates with
  /// events. It may take its time: the node keeps no events for a watcher, so a slow one only
  /// falls behind (a position older than half the tombstone grace, 12 h by default, is refused
  /// with invalid_argument "watch position expired", and the watch ends). A lost node or
  /// connection is retried every options.retry_interval from the last position, on any
  /// replica the handle reaches, without gaps or repeats; other errors end the watch with one
  /// last call of `on_update` with the error. Stop it with Watch::stop() (or by destroying it).
  Status watch(const WatchOptions& options, WatchCallback on_update, Watch* watch) const;
  /// Releases this handle; its status() becomes invalid_argument ("closed"). Other copies stay
  /// usable; requests in flight still complete.
  void close();

  // Futures: each is a real (not deferred) future, so wait_for works. It becomes ready when the
  // request completes, with what the blocking call would have returned.
  std::future<Status> put_async(std::string key, std::string value) const;
  std::future<Result<std::string>> get_async(std::string key) const;
  std::future<Status> erase_async(std::string key) const;
  std::future<Status> write_async(WriteBatch batch) const;
  std::future<Result<ListPage>> list_page_async(ListOptions options) const;
  std::future<Result<DatabaseStats>> stats_async() const;

  // Callbacks, for callers that keep many requests in flight without a thread per future: `done`
  // runs exactly once (see "Callbacks" above for on which thread and what it must not do).
  void put_async(std::string key, std::string value, StatusCallback done) const;
  void put_async(std::string key, std::string value, WriteOptions options,
                 StatusCallback done) const;
  void erase_async(std::string key, WriteOptions options, StatusCallback done) const;
  void get_async(std::string key, ResultCallback<std::string> done) const;
  void erase_async(std::string key, StatusCallback done) const;
  void write_async(WriteBatch batch, StatusCallback done) const;
  void list_page_async(ListOptions options, ResultCallback<ListPage> done) const;
  void stats_async(ResultCallback<DatabaseStats> done) const;

 private:
  friend class DatabaseBackend;  // makes the handles of Node::open and Client::open
  struct Session;
  /// Sends a write: with a session, as a session write whose dot joins the token.
  void WriteThrough(WriteBatch batch, StatusCallback done) const;
  std::shared_ptr<DatabaseBackend> backend_;
  /// With with_session() / set_session_token(): shared by the copies made after.
  std::shared_ptr<Session> session_;
  std::string path_;
  Status status_;
};

/// A running watch (Database::watch). Movable, not copyable; destroying it stops it. Stop and
/// position may be called from any thread.
class Watch {
 public:
  /// Not watching.
  Watch() = default;
  ~Watch() { stop(); }
  Watch(Watch&& other) noexcept = default;
  Watch& operator=(Watch&& other) noexcept {
    if (this != &other) {
      stop();
      shared_ = std::move(other.shared_);
      thread_ = std::move(other.thread_);
    }
    return *this;
  }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  /// Ends the watch. When it returns, the callback is not running and will not run again
  /// (called from the callback itself: not again after that call returns). Idempotent.
  void stop();
  /// The position after the last update handed to the callback (or after changes to keys
  /// outside the prefix): pass it as WatchOptions::from to resume. "" if not watching.
  std::string position() const;
  /// True from a successful Database::watch until stop() or an error ended it.
  bool active() const;

 private:
  friend class Database;
  struct Shared;
  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

/// Puts and erases collected for one atomic write through the Database that made it. Not
/// thread-safe: build a batch on one thread.
class Batch {
 public:
  Batch& put(std::string key, std::string value) {
    batch_.Put(std::move(key), std::move(value));
    return *this;
  }
  Batch& erase(std::string key) {
    batch_.Erase(std::move(key));
    return *this;
  }
  /// A put that expires after `ttl` (WriteOptions::ttl).
  Batch& put(std::string key, std::string value, std::chrono::milliseconds ttl) {
    batch_.Put(std::move(key), std::move(value), static_cast<uint64_t>(ttl.count()));
    return *this;
  }
  /// The batch applies only if `key` has `version` (WriteBatch::Check).
  Batch& check(std::string key, std::string version) {
    batch_.Check(std::move(key), std::move(version));
    return *this;
  }
  /// The batch applies only if `key` is absent (missing, deleted or expired).
  Batch& check_absent(std::string key) {
    batch_.Check(std::move(key), {});
    return *this;
  }
  /// Applies every operation atomically, in order (Database::write).
  Status commit() const { return db_.write(batch_); }

 private:
  friend class Database;
  explicit Batch(Database db) : db_(std::move(db)) {}
  Database db_;
  WriteBatch batch_;
};

}  // namespace kvmesh
