// The kvmesh client library: talk to a kvmesh node (kvmeshd) from another process.
//
//   kvmesh::Database db = kvmesh::client::connect("127.0.0.1:7370").open("/example/kv");
//   kvmesh::Status s = db.put("/users/123/profile", bytes);
//   kvmesh::Result<std::string> v = db.get("/users/123/profile");   // v.IsNotFound() if missing
//
// open() returns the same kvmesh::Database handle a node embedded in the process gives
// (kvmesh/database.hpp has its calls and their contracts), so moving between the two is changing
// how the handle is obtained. Nothing throws: connect() and open() return handles whose status()
// says whether they are usable, and every call on an unusable handle returns that status.
// Over the network every request has a deadline (ClientOptions::request_timeout); requests in
// flight fail with unavailable as soon as the connection is lost (about peer_timeout), not after
// their deadline, and the next call reconnects. Client handles are cheap to copy and
// thread-safe; do not let a callback hold the last copy of a Client or of a Database it opened
// (the connection would be torn down from its own thread and hang).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvmesh/database.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/tls.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh::client {

struct ClientOptions {
  /// Deadline of every request. Default 10 s.
  std::chrono::milliseconds request_timeout = std::chrono::seconds(10);
  /// A connection silent for this long is considered dead (heartbeats every third of it).
  /// Also bounds connecting to a node that accepts TCP but never answers. Default 3 s.
  std::chrono::milliseconds peer_timeout = std::chrono::seconds(3);
  /// A blocking call waiting for its reply polls the connection for up to this long before it
  /// sleeps, while replies come that soon (see NodeOptions::busy_poll). 0: sleeps at once. At
  /// most kMaxBusyPoll (kvmesh/types.hpp); more makes connect() fail with kInvalidArgument.
  /// Default 200 us.
  std::chrono::microseconds busy_poll = std::chrono::microseconds(200);
  /// CAF scheduler of the client's actor system: "sharing" (default; idle workers wake at once,
  /// which is what round-trip latency needs) or "stealing".
  std::string scheduler_policy = "sharing";
  /// TLS to the node (include/kvmesh/tls.hpp): needed when the node runs with TLS. Default off.
  TlsOptions tls;
};

/// The handle types, by their names before they were shared with the embedded node.
using Database = kvmesh::Database;
using Batch = kvmesh::Batch;
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
  /// returned handle's status(): no_matching_config names the path; unavailable when the node
  /// cannot be reached (the handle stays unusable: open again).
  Database open(std::string_view path) const;

  /// Databases instantiated on the node.
  Result<std::vector<DatabaseInfo>> databases() const;
  /// One page of the databases of config `config_id` instantiated on the node (see
  /// Node::instances). Listing needs any grant when the node has an ACL, and shows only the
  /// databases the caller may read.
  Result<InstancePage> instances(std::string_view config_id,
                                 const InstanceOptions& options = {}) const;
  /// Deletes every key of the database at `path` on every replica (see Node::drop). Needs the
  /// admin right when the node has an ACL.
  Status drop(std::string_view path) const;
  /// Backs up the database at `path` to directory `dir` of the node's machine (see
  /// Node::backup); with `path` empty, a checkpoint of the node's whole store (Node::backup_all).
  /// Needs the admin right when the node has an ACL.
  Result<std::string> backup(std::string_view path, const std::string& dir) const;
  /// Restores the database at `path` from the backup in directory `dir` of the node's machine
  /// (see Node::restore). Needs the admin right when the node has an ACL.
  Result<std::string> restore(std::string_view path, const std::string& dir) const;
  /// Drains cluster member `node_id`, or puts it back (see Node::drain_node and undrain_node);
  /// a summary. Needs the admin right when the node has an ACL.
  Result<std::string> drain_node(uint64_t node_id) const;
  Result<std::string> undrain_node(uint64_t node_id) const;
  /// Database configs in force on the node.
  Result<std::vector<ConfigInfo>> configs() const;
  /// Asks the node to re-read its config directory and ACL file (needs the admin right when the
  /// node has an ACL); the summary of what it loaded.
  Result<std::string> reload_configs() const;
  /// Cluster-wide configs, as Node::apply_configs, delete_config and config_history (see
  /// kvmesh/node.hpp) on the connected node. Applying and deleting need the admin right when the
  /// node has an ACL; the history records the client certificate's name (options.applied_by is
  /// ignored).
  Result<ConfigApplyResult> apply_configs(std::string_view yaml,
                                          const ConfigApplyOptions& options = {}) const;
  Result<ConfigApplyResult> delete_config(std::string_view id) const;
  Result<std::vector<ConfigHistoryEntry>> config_history(std::string_view id) const;
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

}  // namespace kvmesh::client
