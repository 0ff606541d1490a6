// The kvmesh client library: talk to a kvmesh node (kvmeshd) from another process.
//
//   auto db = kvmesh::client::connect("127.0.0.1:7370").open("/example/kv");
//   kvmesh::Status s = db.put("/users/123/profile", bytes);
//   kvmesh::Result<std::string> v = db.get("/users/123/profile");   // v.IsNotFound() if missing
//   s = db.erase("/users/123/profile");
//   kvmesh::Result<std::vector<std::string>> keys = db.list("/users/");  // pages transparently
//   s = db.batch().put("/a", "1").erase("/b").commit();                  // atomic
//   std::future<kvmesh::Status> f = db.put_async("/k", "v");             // many in flight
//
// Nothing throws: connect() and open() return handles whose status() says whether they are
// usable, and every call on an unusable handle returns that status. Errors are typed (see
// kvmesh::Code): not_found, no_matching_config, size_limit_exceeded (with the numbers),
// value_too_large, invalid_key, unavailable (node unreachable: in-flight requests fail as soon as
// the connection is lost, not after their timeout), timeout. After a lost connection the next call
// reconnects. Handles are cheap to copy and thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh::client {

struct ClientOptions {
  /// Deadline of every request. Default 10 s.
  std::chrono::milliseconds request_timeout = std::chrono::seconds(10);
  /// A connection silent for this long is considered dead (heartbeats every third of it).
  /// Also bounds connecting to a node that accepts TCP but never answers. Default 3 s.
  std::chrono::milliseconds peer_timeout = std::chrono::seconds(3);
  /// CAF scheduler of the client's actor system: "sharing" (default; idle workers wake at once,
  /// which is what round-trip latency needs) or "stealing".
  std::string scheduler_policy = "sharing";
};

class Database;
class Batch;
struct Connection;

class Client {
 public:
  /// An unusable client (status kInvalidArgument); use connect().
  Client();

  /// OK when connected (or reconnectable); otherwise why not.
  const Status& status() const;
  bool ok() const { return status().ok(); }
  /// The node's "host:port".
  const std::string& address() const;
  /// The connected node's id (0 before the first connection).
  uint64_t node_id() const;

  /// Opens the database at `path` on the node, instantiating it on first access. Check the
  /// returned handle's status(): no_matching_config names the path.
  Database open(std::string_view path) const;

  /// Databases instantiated on the node.
  Result<std::vector<DatabaseInfo>> databases() const;
  /// Database configs in force on the node.
  Result<std::vector<ConfigInfo>> configs() const;
  /// Asks the node to re-read its config directory; the summary of what it loaded.
  Result<std::string> reload_configs() const;
  /// The cluster members as the node sees them, itself first (just itself when not clustered).
  Result<std::vector<MemberStatus>> members() const;

 private:
  friend Client connect(const std::string& address, const ClientOptions& options);
  std::shared_ptr<Connection> connection_;
  Status status_;
};

/// Connects to the node at "host:port" (IPv4 address or name; "[::1]:port" for IPv6) and checks
/// that it speaks this client's protocol version.
Client connect(const std::string& address, const ClientOptions& options = {});

class Database {
 public:
  /// An unusable handle (status kInvalidArgument); use Client::open().
  Database();

  const Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }
  /// The normalised database path.
  const std::string& path() const { return path_; }

  /// Stores `value` (any bytes) under `key`.
  Status put(std::string_view key, std::string_view value) const;
  /// The value of `key`; IsNotFound() when it does not exist.
  Result<std::string> get(std::string_view key) const;
  /// Removes `key`; removing a missing key succeeds.
  Status erase(std::string_view key) const;
  /// Every key under `prefix` (segment rule: "/users" lists "/users" and "/users/..."), in byte
  /// order, fetching pages as needed.
  Result<std::vector<std::string>> list(std::string_view prefix = "") const;
  /// One page, for callers that page themselves (or want values: ListOptions::with_values).
  Result<ListPage> list_page(const ListOptions& options) const;
  /// A batch builder bound to this database; commit() applies it atomically.
  Batch batch() const;
  /// Applies `batch` atomically.
  Status write(const WriteBatch& batch) const;
  /// Key count, used bytes and limit.
  Result<DatabaseStats> stats() const;
  /// Replication status from the replica serving this node: replica set, version vectors,
  /// pending deltas and content digest (equal digests: equal contents).
  Result<ReplicationStatus> replication_status() const;
  /// Releases this handle (other copies stay usable).
  void close();

  std::future<Status> put_async(std::string key, std::string value) const;
  std::future<Result<std::string>> get_async(std::string key) const;
  std::future<Status> erase_async(std::string key) const;
  std::future<Status> write_async(WriteBatch batch) const;

  /// Callback variants, for callers that keep many requests in flight without a thread per
  /// future. `done` runs exactly once, on one of the client's threads (possibly before the call
  /// returns when the handle is unusable); keep it short and never wait in it for another
  /// request of the same client. Do not let `done` hold the last copy of the Client or of a
  /// Database handle: the connection would then be torn down from its own thread and hang.
  void put_async(std::string key, std::string value, std::function<void(Status)> done) const;
  void get_async(std::string key, std::function<void(Result<std::string>)> done) const;
  void erase_async(std::string key, std::function<void(Status)> done) const;
  void write_async(WriteBatch batch, std::function<void(Status)> done) const;
  void list_page_async(ListOptions options, std::function<void(Result<ListPage>)> done) const;

 private:
  friend class Client;
  std::shared_ptr<Connection> connection_;
  std::string path_;
  Status status_ = Status::InvalidArgument("database handle is not open");
};

/// Puts and erases collected for one atomic write.
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
  /// Applies every operation atomically, in order.
  Status commit() const { return db_.write(batch_); }

 private:
  friend class Database;
  explicit Batch(Database db) : db_(std::move(db)) {}
  Database db_;
  WriteBatch batch_;
};

}  // namespace kvmesh::client
