#include "tools/bench/targets.hpp"

#include <fcntl.h>
#include <poll.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/address.hpp"
#include "config/config_set.hpp"
#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "storage/rocks_options.hpp"
#include "storage/rocks_status.hpp"
#include "tools/bench/measure.hpp"
#include "tools/cluster/process_cluster.hpp"

namespace kvmesh::bench {

client::ClientOptions BenchClientOptions(const TargetOptions& options, const TlsOptions& tls) {
  client::ClientOptions client;
  client.scheduler_policy = options.scheduler;
  client.tls = tls;
  if (options.busy_poll_us >= 0) client.busy_poll = std::chrono::microseconds(options.busy_poll_us);
  return client;
}

bool NeedsKvmeshApi(const std::string& workload) {
  return workload == "put-ttl" || workload == "cas-put" || workload == "watch" ||
         workload == "quorum-get";
}

void Session::PutWith(size_t, std::string, std::string, WriteOptions, Done done) {
  done(Status::InvalidArgument("this target has no puts with options"), 0);
}

Status Session::Watch(size_t, std::string, std::function<void(Result<WatchUpdate>)>,
                      std::unique_ptr<kvmesh::Watch>*) {
  return Status::InvalidArgument("this target has no watch");
}

std::vector<pid_t> Target::server_pids() const {
  const pid_t pid = node_pid();
  if (pid == 0 || pid == ::getpid()) return {};
  return {pid};
}

Status SpawnTiedChild(std::vector<std::string> args, int stdout_fd, pid_t* pid) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t caller = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) return Status::IOError(std::string("fork: ") + strerror(errno));
  if (child == 0) {
    // Only async-signal-safe calls here. The child dies with the benchmark.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != caller) ::_exit(1);
    ::setpgid(0, 0);  // a terminal's Ctrl-C goes to the benchmark only
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, STDIN_FILENO);
    ::dup2(stdout_fd >= 0 ? stdout_fd : null, STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  *pid = child;
  return Status::OK();
}

Status SpawnEchoServer(const std::string& what, std::vector<std::string> server_args,
                       const TargetOptions& options, pid_t* pid, uint16_t* port) {
  std::vector<std::string> args = {std::filesystem::read_symlink("/proc/self/exe").string()};
  for (std::string& arg : server_args) args.push_back(std::move(arg));
  for (std::string& arg :
       EchoServerArgs(options.scheduler, options.worker_threads, options.busy_poll_us)) {
    args.push_back(std::move(arg));
  }
  return SpawnServerChild(what, std::move(args), pid, port);
}

Status SpawnServerChild(const std::string& what, std::vector<std::string> args, pid_t* pid,
                        uint16_t* port) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::IOError(std::string("pipe: ") + strerror(errno));
  Status s = SpawnTiedChild(std::move(args), fds[1], pid);
  ::close(fds[1]);
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (s.ok() && line.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p = {fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, std::max<int>(0, static_cast<int>(left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      s = Status::Timeout("the " + what + " server did not report its port within 10 s");
      break;
    }
    char buf[64];
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      s = Status::IOError("the " + what + " server exited at start (its error is above)");
      break;
    }
    line.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (!s.ok()) return s;
  *port = static_cast<uint16_t>(std::atoi(line.c_str()));
  if (*port == 0) return Status::IOError("the " + what + " server reported no port: " + line);
  return Status::OK();
}

std::string BenchConfigYaml(int replication_min, int replication_max) {
  return "# kvmesh-bench's databases: /bench/db-0, /bench/db-1, ... and /bench/lag.\n"
         "description: kvmesh-bench\n"
         "matcher: /bench/[a-z0-9-]+\n"
         "size: 1TB\n"
         "replication: {min: " +
         std::to_string(replication_min) + ", max: " + std::to_string(replication_max) + "}\n";
}

namespace {

// -- rocksdb: the baseline ----------------------------------------------------------------------

// Raw RocksDB opened with exactly the options of a kvmesh store (default StoreOptions). Each
// benchmark database is a key prefix, as each kvmesh database is a namespace of one RocksDB.
class RocksDbSession : public Session {
 public:
  RocksDbSession(rocksdb::DB* db, const storage::StoreOptions& options) : db_(db) {
    write_options_ = storage::RocksWriteOptions(options);
  }
  Status Open(const std::vector<std::string>& paths) override {
    prefixes_.clear();
    for (size_t i = 0; i < paths.size(); ++i) prefixes_.push_back(paths[i] + "\x01");
    return Status::OK();
  }
  void Put(size_t db, std::string key, std::string value, Done done) override {
    done(FromRocks(db_->Put(write_options_, prefixes_[db] + key, value)), 1);
  }
  void Get(size_t db, std::string key, Done done) override {
    std::string value;
    done(FromRocks(db_->Get(rocksdb::ReadOptions(), prefixes_[db] + key, &value)), 1);
  }
  void List(size_t db, std::string prefix, uint32_t limit, Done done) override {
    const std::string start = prefixes_[db] + prefix + "/";
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    uint64_t n = 0;
    for (it->Seek(start); it->Valid() && n < limit && it->key().starts_with(start); it->Next()) {
      ++n;
    }
    done(FromRocks(it->status()), n);
  }
  void Write(size_t db, WriteBatch batch, Done done) override {
    rocksdb::WriteBatch wb;
    for (const WriteOp& op : batch.ops) wb.Put(prefixes_[db] + op.key, op.value);
    done(FromRocks(db_->Write(write_options_, &wb)), batch.size());
  }

 private:
  static Status FromRocks(const rocksdb::Status& s) {
    if (s.IsNotFound()) return Status::NotFound("raw RocksDB: key not found");
    return storage::FromRocksStatus(s, "raw RocksDB");
  }

  rocksdb::DB* db_;
  rocksdb::WriteOptions write_options_;
  std::vector<std::string> prefixes_;
};

class RocksDbTarget : public Target {
 public:
  std::unique_ptr<rocksdb::DB> db;
  storage::StoreOptions store_options;
  ~RocksDbTarget() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (syncer_.joinable()) syncer_.join();
  }
  std::string name() const override { return "rocksdb"; }
  Status NewSession(std::unique_ptr<Session>* out) override {
    *out = std::make_unique<RocksDbSession>(db.get(), store_options);
    return Status::OK();
  }
  /// SyncMode::kPeriodic as storage::Store does it: SyncWAL every period if something was written.
  void StartPeriodicSync() {
    syncer_ = std::thread([this] {
      uint64_t synced = db->GetLatestSequenceNumber();
      std::unique_lock<std::mutex> lock(mutex_);
      while (!cv_.wait_for(lock, store_options.sync_period, [this] { return stop_; })) {
        const uint64_t latest = db->GetLatestSequenceNumber();
        if (latest != synced && db->SyncWAL().ok()) synced = latest;
      }
    });
  }

 private:
  std::thread syncer_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;

 public:
  pid_t node_pid() const override { return ::getpid(); }
  bool synchronous() const override { return true; }
};

// -- embedded, remote and cluster: the same kvmesh::Database calls ----------------------------

/// A session over kvmesh::Database handles; the targets differ only in how they open them.
class DatabaseSession : public Session {
 public:
  Status Open(const std::vector<std::string>& paths) override {
    dbs_.clear();
    dbs_.reserve(paths.size());
    for (const std::string& path : paths) {
      dbs_.push_back(OpenOne(path));
      if (!dbs_.back().ok()) return dbs_.back().status();
    }
    return Status::OK();
  }
  void Put(size_t db, std::string key, std::string value, Done done) override {
    if (blocking_) return done(dbs_[db].put(key, value), 1);
    dbs_[db].put_async(std::move(key), std::move(value),
                       [done = std::move(done)](Status s) { done(s, 1); });
  }
  void Get(size_t db, std::string key, Done done) override {
    if (blocking_) return done(dbs_[db].get(key).status(), 1);
    dbs_[db].get_async(std::move(key),
                       [done = std::move(done)](Result<std::string> r) { done(r.status(), 1); });
  }
  void QuorumGet(size_t db, std::string key, Done done) override {
    const ReadOptions quorum{ReadConsistency::kQuorum};
    if (blocking_) return done(dbs_[db].get(key, quorum).status(), 1);
    dbs_[db].get_async(std::move(key), quorum,
                       [done = std::move(done)](Result<std::string> r) { done(r.status(), 1); });
  }
  void List(size_t db, std::string prefix, uint32_t limit, Done done) override {
    ListOptions options;
    options.prefix = std::move(prefix);
    options.limit = limit;
    if (blocking_) {
      Result<ListPage> page = dbs_[db].list_page(options);
      return done(page.status(), page.ok() ? page->keys.size() : 0);
    }
    dbs_[db].list_page_async(std::move(options), [done = std::move(done)](Result<ListPage> r) {
      done(r.status(), r.ok() ? r->keys.size() : 0);
    });
  }
  void Write(size_t db, WriteBatch batch, Done done) override {
    const uint64_t n = batch.size();
    if (blocking_) return done(dbs_[db].write(std::move(batch)), n);
    dbs_[db].write_async(std::move(batch), [done = std::move(done), n](Status s) { done(s, n); });
  }
  void PutWith(size_t db, std::string key, std::string value, WriteOptions options,
               Done done) override {
    if (blocking_) return done(dbs_[db].put(key, value, options), 1);
    dbs_[db].put_async(std::move(key), std::move(value), std::move(options),
                       [done = std::move(done)](Status s) { done(s, 1); });
  }
  Status Watch(size_t db, std::string prefix, std::function<void(Result<WatchUpdate>)> on_update,
               std::unique_ptr<kvmesh::Watch>* watch) override {
    WatchOptions options;
    options.prefix = std::move(prefix);
    *watch = std::make_unique<kvmesh::Watch>();
    return dbs_[db].watch(options, std::move(on_update), watch->get());
  }

 protected:
  virtual Database OpenOne(const std::string& path) = 0;

 private:
  std::vector<Database> dbs_;
};

// -- embedded: a node in this process -----------------------------------------------------------

class EmbeddedSession : public DatabaseSession {
 public:
  explicit EmbeddedSession(Node* node) : node_(node) {}

 protected:
  Database OpenOne(const std::string& path) override { return node_->open(path); }

 private:
  Node* node_;
};

class EmbeddedTarget : public Target {
 public:
  std::unique_ptr<Node> node;
  std::string name() const override { return "embedded"; }
  Status NewSession(std::unique_ptr<Session>* out) override {
    *out = std::make_unique<EmbeddedSession>(node.get());
    return Status::OK();
  }
  pid_t node_pid() const override { return ::getpid(); }
  bool supports(const std::string&) const override { return true; }
};

// -- remote and cluster: kvmeshd processes through the client library ---------------------------

class RemoteSession : public DatabaseSession {
 public:
  explicit RemoteSession(client::Client client) : client_(std::move(client)) {}

 protected:
  Database OpenOne(const std::string& path) override { return client_.open(path); }

 private:
  client::Client client_;
};

class RemoteTarget : public Target {
 public:
  explicit RemoteTarget(std::string name) : name_(std::move(name)) {}
  ~RemoteTarget() override {
    if (spawned_) cluster_.Down();
  }
  std::string name() const override { return name_; }
  Status NewSession(std::unique_ptr<Session>* out) override {
    client::Client client =
        client::connect(addresses_.front(), BenchClientOptions(options_, tls()));
    if (!client.ok()) return client.status();
    *out = std::make_unique<RemoteSession>(std::move(client));
    return Status::OK();
  }
  std::vector<pid_t> server_pids() const override {
    if (!spawned_) return Target::server_pids();
    std::vector<pid_t> pids;
    for (int i = 0; i < cluster_.size(); ++i) pids.push_back(cluster_.node(i).pid);
    return pids;
  }
  pid_t node_pid() const override {
    if (spawned_) return cluster_.node(0).pid;
    if (node_pid_ != 0) return node_pid_;
    std::string host;
    uint16_t port = 0;
    if (!ParseHostPort(addresses_.front(), &host, &port).ok()) return 0;
    return PidListeningOn(port);
  }
  bool supports(const std::string&) const override { return true; }
  std::vector<std::string> addresses() const override { return addresses_; }
  TlsOptions tls() const override { return spawned_ ? cluster_.client_tls() : TlsOptions{}; }
  Status KillAndRestart(int index, const std::function<Status()>& during_outage) override {
    if (!spawned_) return Status::InvalidArgument("only a cluster started by kvmesh-bench");
    Status s = cluster_.Kill(index);
    if (s.ok()) s = during_outage();
    Status started = cluster_.Start(index);
    return s.ok() ? started : s;
  }

  /// Starts `nodes` kvmeshd processes (tied to this process, so none outlives a crash).
  Status Spawn(const TargetOptions& options, int nodes) {
    const std::string config_dir = options.dir + "/config";
    std::filesystem::create_directories(config_dir);
    std::ofstream(config_dir + "/bench.yaml") << BenchConfigYaml(
        nodes > 1 ? options.replication_min : 1, nodes > 1 ? options.replication_max : 1);
    cluster::ProcessClusterOptions cluster_options;
    cluster_options.dir = options.dir + "/nodes";
    cluster_options.kvmeshd = options.kvmeshd;
    cluster_options.config_dir = config_dir;
    cluster_options.tie_to_caller = true;
    cluster_options.tls = options.tls;
    cluster_options.single = nodes == 1 && options.single_node;
    cluster_options.extra_args = {"--scheduler",      options.scheduler,
                                  "--log-level",      "warn",
                                  "--sync",           SyncModeName(options.sync),
                                  "--sync-period-ms", std::to_string(options.sync_period.count())};
    if (options.worker_threads != 0) {
      cluster_options.extra_args.push_back("--worker-threads");
      cluster_options.extra_args.push_back(std::to_string(options.worker_threads));
    }
    if (options.busy_poll_us >= 0) {
      cluster_options.extra_args.push_back("--busy-poll-us");
      cluster_options.extra_args.push_back(std::to_string(options.busy_poll_us));
    }
    cluster_options.extra_args.insert(cluster_options.extra_args.end(), options.node_args.begin(),
                                      options.node_args.end());
    Status s = cluster::ProcessCluster::Up(cluster_options, nodes, &cluster_);
    if (!s.ok()) return s;
    spawned_ = true;
    if (nodes > 1) s = cluster_.WaitForMembership(std::chrono::seconds(60));
    for (int i = 0; i < nodes; ++i) addresses_.push_back(cluster_.client_address(i));
    return s;
  }

  std::string name_;
  TargetOptions options_;
  std::vector<std::string> addresses_;
  pid_t node_pid_ = 0;
  bool spawned_ = false;
  cluster::ProcessCluster cluster_;
};

// -- http: one kvmeshd through its HTTP API ------------------------------------------------------

class HttpTarget : public RemoteTarget {
 public:
  HttpTarget() : RemoteTarget("http") {}
  Status NewSession(std::unique_ptr<Session>* out) override {
    *out = NewHttpSession("127.0.0.1", http_port_);
    return Status::OK();
  }
  // Each session's requests are blocking: one in flight per connection.
  bool synchronous() const override { return true; }
  bool supports(const std::string& workload) const override { return !NeedsKvmeshApi(workload); }

  int http_port_ = 0;
};

}  // namespace

Status MakeHttpTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  if (!options.nodes.empty() || options.tls) {
    return Status::InvalidArgument("the http target starts its own plaintext kvmeshd");
  }
  auto target = std::make_unique<HttpTarget>();
  target->options_ = options;
  std::vector<int> ports;
  Status s = cluster::PickFreePorts(1, &ports);
  if (!s.ok()) return s;
  target->http_port_ = ports[0];
  TargetOptions with_http = options;
  with_http.node_args.insert(with_http.node_args.end(), {"--http-port", std::to_string(ports[0])});
  s = target->Spawn(with_http, 1);
  if (!s.ok()) return s;
  *out = std::move(target);
  return Status::OK();
}

Status MakeRocksDbTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  auto target = std::make_unique<RocksDbTarget>();
  target->store_options.sync = options.sync;
  target->store_options.sync_period = options.sync_period;
  std::filesystem::create_directories(options.dir);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status st =
      rocksdb::DB::Open(storage::RocksOptions(target->store_options), options.dir, &raw);
  if (!st.ok()) return Status::IOError("cannot open raw RocksDB: " + st.ToString());
  target->db.reset(raw);
  if (options.sync == SyncMode::kPeriodic) target->StartPeriodicSync();
  *out = std::move(target);
  return Status::OK();
}

Status MakeEmbeddedTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  auto configs = std::make_shared<config::ConfigSet>();
  Status s =
      config::ConfigSet::LoadString(BenchConfigYaml(1, 1), "bench.yaml", configs.get(), nullptr);
  if (!s.ok()) return s;
  NodeOptions node_options;
  node_options.data_dir = options.dir;
  node_options.configs = configs;
  node_options.scheduler_policy = options.scheduler;
  node_options.worker_threads = options.worker_threads;
  node_options.sync = options.sync;
  node_options.sync_period = options.sync_period;
  auto target = std::make_unique<EmbeddedTarget>();
  s = Node::Start(node_options, &target->node);
  if (!s.ok()) return s;
  *out = std::move(target);
  return Status::OK();
}

Status MakeRemoteTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  auto target = std::make_unique<RemoteTarget>(options.tls ? "remote-tls" : "remote");
  target->options_ = options;
  if (options.tls && !options.nodes.empty()) {
    return Status::InvalidArgument(
        "--tls starts nodes with certificates of their own; it cannot be used with --node");
  }
  if (options.nodes.empty()) {
    Status s = target->Spawn(options, 1);
    if (!s.ok()) return s;
  } else {
    target->addresses_ = options.nodes;
    target->node_pid_ = options.node_pid;
  }
  *out = std::move(target);
  return Status::OK();
}

Status MakeClusterTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  if (options.cluster_nodes < 2) return Status::InvalidArgument("a cluster needs 2 or more nodes");
  auto target = std::make_unique<RemoteTarget>("cluster" + std::to_string(options.cluster_nodes) +
                                               (options.tls ? "-tls" : ""));
  target->options_ = options;
  Status s = target->Spawn(options, options.cluster_nodes);
  if (!s.ok()) return s;
  *out = std::move(target);
  return Status::OK();
}

}  // namespace kvmesh::bench
