// What kvmesh-bench measures: a target (raw RocksDB, an embedded node, a kvmeshd reached with the
// client library, a multi-process cluster, a redis-server, a CAF echo server) and its sessions. A
// session is one client's view (one connection for the remote targets) and is driven by one thread;
// its operations complete through a callback, so a thread keeps several in flight.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/tls.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {
class Watch;
}

namespace kvmesh::bench {

/// The workloads that need the kvmesh API (ttl, conditional writes, watch, read levels): only
/// the embedded, remote and cluster targets have them.
bool NeedsKvmeshApi(const std::string& workload);

/// Completion of one operation: how it ended (a get of a missing key is a failure, NotFound),
/// and how many keys it covered (1 for put/get, the keys written for a batch, the keys returned
/// for a list).
using Done = std::function<void(const Status& status, uint64_t keys)>;

class Session {
 public:
  virtual ~Session() = default;
  /// Opens the databases at `paths` (instantiating them on first access); later calls name a
  /// database by its index in `paths`.
  virtual Status Open(const std::vector<std::string>& paths) = 0;
  /// With one request in flight a sequential caller uses the blocking calls (what such a
  /// program would call; they can take a shorter path than the callbacks). Default false.
  void set_blocking(bool blocking) { blocking_ = blocking; }
  virtual void Put(size_t db, std::string key, std::string value, Done done) = 0;
  /// Fails (ok false) if the key is missing.
  virtual void Get(size_t db, std::string key, Done done) = 0;
  /// A get at read level quorum (README "Read levels"): kvmesh's own targets only (see
  /// Target::supports); others fail it.
  virtual void QuorumGet(size_t db, std::string key, Done done) {
    (void)db;
    (void)key;
    done(Status::InvalidArgument("this target has no quorum reads"), 0);
  }
  /// One page of at most `limit` keys under `prefix`.
  virtual void List(size_t db, std::string prefix, uint32_t limit, Done done) = 0;
  virtual void Write(size_t db, WriteBatch batch, Done done) = 0;
  /// A put with options (ttl, if_absent, if_version). Default: fails, unsupported (targets
  /// without it do not run the workloads that need it, Target::supports).
  virtual void PutWith(size_t db, std::string key, std::string value, WriteOptions options,
                       Done done);
  /// Watches database `db` under `prefix` from now; `on_update` runs on the watch's thread.
  /// Default: unsupported.
  virtual Status Watch(size_t db, std::string prefix,
                       std::function<void(Result<WatchUpdate>)> on_update,
                       std::unique_ptr<kvmesh::Watch>* watch);

 protected:
  bool blocking_ = false;
};

class Target {
 public:
  virtual ~Target() = default;
  /// "rocksdb", "embedded", "remote", "cluster3", "http", "redis" or "caf-echo".
  virtual std::string name() const = 0;
  virtual Status NewSession(std::unique_ptr<Session>* out) = 0;
  /// The process serving the data (for memory and CPU): this one for in-process targets, the
  /// node for remote ones; 0 if it cannot be found (another host).
  virtual pid_t node_pid() const = 0;
  /// Every process other than this one that serves the data (all nodes of a cluster): their CPU
  /// per operation is reported apart from the benchmark's. Default: node_pid() unless that is
  /// this process.
  virtual std::vector<pid_t> server_pids() const;
  /// Whether the target can run `workload` (redis has no ordered listing). Default: all but
  /// the kvmesh API's (NeedsKvmeshApi).
  virtual bool supports(const std::string& workload) const { return !NeedsKvmeshApi(workload); }
  /// True when operations complete before the call returns (raw RocksDB): requests in flight
  /// mean nothing there.
  virtual bool synchronous() const { return false; }
  /// Client addresses of every node (remote targets); the first one takes the workload.
  virtual std::vector<std::string> addresses() const { return {}; }
  /// What clients of addresses() need for TLS (ClientOptions::tls); empty for plaintext.
  virtual TlsOptions tls() const { return {}; }
  /// Restarts node `index` after killing it with SIGKILL, writing through `during_outage`
  /// while it is down (multi-process clusters started by the benchmark only).
  virtual Status KillAndRestart(int index, const std::function<Status()>& during_outage) {
    (void)index;
    (void)during_outage;
    return Status::InvalidArgument("this target cannot restart nodes");
  }
};

struct TargetOptions {
  /// Scratch directory of this target (wiped by the caller).
  std::string dir;
  /// CAF scheduler of in-process nodes, of spawned nodes and of clients: sharing or stealing.
  std::string scheduler = "sharing";
  /// Actor worker threads of in-process and started nodes (NodeOptions::worker_threads,
  /// kvmeshd --worker-threads) and of the echo servers; 0: the node's default (one per core, at
  /// least 2).
  size_t worker_threads = 0;
  /// Busy polling of started kvmeshd (--busy-poll-us), of the echo servers' workers and of remote
  /// clients (ClientOptions::busy_poll), in microseconds; -1: their defaults.
  int busy_poll_us = -1;
  /// remote: client addresses of running nodes; empty starts a kvmeshd.
  std::vector<std::string> nodes;
  /// The node's pid when `nodes` is given and the node cannot be found from its port.
  pid_t node_pid = 0;
  /// When writes reach the disk, the same for every target: the node's mode for embedded and
  /// started nodes; for raw RocksDB, the sync flag on every write (always) or a thread calling
  /// SyncWAL every period while something was written (periodic), as a kvmesh store does.
  SyncMode sync = SyncMode::kPeriodic;
  std::chrono::milliseconds sync_period = std::chrono::milliseconds(100);
  /// kvmeshd to start (default: beside this executable) and extra flags for it.
  std::string kvmeshd;
  std::vector<std::string> node_args;
  /// remote: start kvmeshd as a single node (--cluster-port -1) rather than as a one-node
  /// cluster; only a single node serves plain gets on the gateway's thread (direct reads).
  /// Default false.
  bool single_node = false;
  /// cluster: number of kvmeshd processes, and the replication they use.
  int cluster_nodes = 3;
  int replication_min = 2;
  int replication_max = 3;
  /// remote (when started here) and cluster: every node runs with TLS and the clients use the
  /// cluster's client certificate (ProcessClusterOptions::tls); the targets are then named
  /// "remote-tls", "cluster3-tls". Default false.
  bool tls = false;
  /// redis: the redis-server to start; empty looks it up on PATH (RedisServerPath).
  std::string redis_server;
};

/// The database config every target uses: a regex matcher, so that every benchmark database is
/// one instantiated path of one config, as an application with many databases would have it.
std::string BenchConfigYaml(int replication_min, int replication_max);

/// Options of the benchmark's client connections: the target's `scheduler` and `busy_poll_us`
/// (-1: the client's default), and `tls`.
client::ClientOptions BenchClientOptions(const TargetOptions& options, const TlsOptions& tls);

Status MakeRocksDbTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
Status MakeEmbeddedTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
/// Connects to options.nodes, or starts one kvmeshd when none is given.
Status MakeRemoteTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
/// Starts one kvmeshd with its HTTP API and drives it over HTTP (one keep-alive connection per
/// session, blocking requests: one in flight per connection).
Status MakeHttpTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
/// A session over the HTTP API at host:port (tools/bench/http_session.cpp).
std::unique_ptr<Session> NewHttpSession(const std::string& host, int port);
/// Starts options.cluster_nodes kvmeshd processes that replicate every database.
Status MakeClusterTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
/// The redis-server the redis target starts: options.redis_server if set, else the first
/// "redis-server" on PATH; empty when there is none (the target is then skipped).
std::string RedisServerPath(const TargetOptions& options);
/// Starts redis-server on a free 127.0.0.1 port, in options.dir, without persistence (no RDB
/// snapshots, no AOF), tied to this process; a session is one connection (hiredis's protocol
/// code), its requests pipelined when several are in flight (tools/bench/redis_session.cpp).
Status MakeRedisTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
/// A session speaking Redis's protocol (RESP) to 127.0.0.1:port, as the redis target's sessions
/// do (SET, GET, MSET; pipelined when several are in flight).
Status NewRespSession(int port, std::unique_ptr<Session>* out);
/// Starts a loop-echo server (this executable with --loop-echo-server MODE and EchoServerArgs:
/// an event loop of its own answering Redis's protocol, handing each request to an actor and
/// back when MODE is "actor", answering on the loop when "inline") and returns a target whose
/// sessions are NewRespSession's (tools/bench/loop_echo.cpp). What a client port of kvmesh's own
/// would put under `remote`, next to redis and caf-echo.
Status MakeLoopEchoTarget(const TargetOptions& options, bool inline_answers,
                          std::unique_ptr<Target>* out);
/// The loop-echo server's main: prints its port on stdout, then serves until killed.
int RunLoopEchoServer(const std::string& mode, const NodeOptions& node);
/// Starts a CAF echo server (this executable with --caf-echo-server: an actor system set up as a
/// kvmeshd's, answering the client library's put and get with no work) on a free 127.0.0.1
/// port, tied to this process; a session is one connection set up and used as the client
/// library's (tools/bench/caf_echo.cpp). The floor CAF's network layer puts under `remote`.
Status MakeCafEchoTarget(const TargetOptions& options, std::unique_ptr<Target>* out);
/// The caf-echo server's main: prints its port on stdout, then serves until killed. Returns an
/// exit code when it cannot start (the reason on stderr).
int RunCafEchoServer(const NodeOptions& node);

/// Starts `args` (args[0]: the executable's path) as a child process tied to this one: the
/// kernel kills it when this process ends, and a terminal's Ctrl-C reaches only this process.
/// Its stdin is /dev/null, its stdout `stdout_fd` (-1: /dev/null), its stderr this process's.
Status SpawnTiedChild(std::vector<std::string> args, int stdout_fd, pid_t* pid);

/// Starts `args` as a tied child (SpawnTiedChild) that prints the port it listens on as its
/// first line on stdout, and reads that port (waiting at most 10 s). `what` names the server in
/// errors.
Status SpawnServerChild(const std::string& what, std::vector<std::string> args, pid_t* pid,
                        uint16_t* port);

/// Starts an echo server: this executable with `server_args` (its flag, and its mode if any)
/// followed by EchoServerArgs of `options`, as SpawnServerChild.
Status SpawnEchoServer(const std::string& what, std::vector<std::string> server_args,
                       const TargetOptions& options, pid_t* pid, uint16_t* port);

}  // namespace kvmesh::bench
