// kvmesh-bench: kvmesh's throughput, latency, memory and CPU next to raw RocksDB with the same
// options, in one run, so that a noisy machine still gives a true ratio.
//
//   kvmesh-bench                                   # rocksdb and embedded, put/get, 100 B and 1 KiB
//   kvmesh-bench --targets rocksdb,embedded,remote --workloads put,get,list,mixed,batch
//   kvmesh-bench --targets remote --node 127.0.0.1:7370 --inflight 1,50 --connections 1,4
//   kvmesh-bench --targets embedded --databases 100000 --workloads get --keys 100000
//   kvmesh-bench --targets cluster --workloads put      # 3 kvmeshd, replication lag, catch-up
//   kvmesh-bench --targets remote,redis --workloads put,get --inflight 1,50   # x_redis
//   kvmesh-bench --targets remote,caf-echo --workloads put,get --inflight 1,50  # CAF's floor
//   kvmesh-bench --targets redis,loop-echo,loop-echo-inline --workloads put,get  # an own port's
//   kvmesh-bench --targets embedded,remote --workloads put,put-ttl,cas-put,watch  # issue 18
//   kvmesh-bench --compare-a "kvmesh-bench --scheduler sharing" \
//                --compare-b "kvmesh-bench --scheduler stealing" --rounds 3
//
// Every run stops after --ops operations or --duration seconds, whichever comes first.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "common/replication_status.hpp"
#include "kvmesh/client.hpp"
#include "kvmesh/database.hpp"
#include "tools/bench/measure.hpp"
#include "tools/bench/targets.hpp"

namespace kvmesh::bench {

/// Every target --targets accepts, as listed in help and errors.
constexpr const char* kTargetNames =
    "rocksdb, embedded, remote, cluster, remote-tls, cluster-tls, http, redis, caf-echo, "
    "loop-echo, loop-echo-inline";
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

struct Settings {
  std::vector<std::string> targets = {"rocksdb", "embedded"};
  std::vector<std::string> workloads = {"put", "get"};
  std::vector<size_t> value_sizes = {100, 1024};
  std::vector<int> inflight = {1, 50};
  std::vector<int> connections = {1};
  uint64_t databases = 1;
  uint64_t keys = 100000;
  std::string distribution = "uniform";
  double read_ratio = 0.9;
  uint32_t scan_length = 100;
  uint32_t batch_size = 100;
  uint64_t ops = 100000;
  double duration_s = 20;
  std::string dir = "/tmp/kvmesh-bench";
  /// How targets are set up (its dir is set per target).
  TargetOptions target;
  uint64_t lag_samples = 500;
  uint64_t catchup_keys = 20000;
  /// Cluster: seconds over which each node's idle CPU is measured after the workloads.
  double idle_seconds = 10;
  double idle_after = 0;
  bool json = false;
  std::string json_file;
  bool quiet = false;
  /// Print the node's CPU by thread under the table (always in the JSON).
  bool thread_cpu = false;
};

/// The failures of one kind (a Status code) in a run: how many, and the first one's message.
struct ErrorKind {
  std::string code;
  uint64_t count = 0;
  std::string first_message;
};

/// Collects failed operations by kind from any session thread.
class ErrorLog {
 public:
  void Add(const Status& s) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string code = CodeName(s.code());
    for (ErrorKind& k : kinds_) {
      if (k.code == code) {
        ++k.count;
        return;
      }
    }
    kinds_.push_back({code, 1, s.message()});
  }
  /// In the order the kinds first occurred.
  std::vector<ErrorKind> kinds() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return kinds_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<ErrorKind> kinds_;
};

/// One measured run: a workload on a target with one setting of each knob.
struct Outcome {
  std::string target;
  std::string workload;
  size_t value_size = 0;
  int connections = 1;
  int inflight = 1;
  uint64_t databases = 1;
  uint64_t ops = 0;
  uint64_t keys = 0;
  uint64_t failures = 0;
  double seconds = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;
  /// The slowest operation (within the histogram's 3%): a stall that holds every request in
  /// flight for a while hits too few of them to show at p99.9. JSON only.
  double max_us = 0;
  /// Largest resident set of the node's process seen during the run (sampled every 50 ms).
  double rss_peak_mb = 0;
  /// CPU used by the node's process, and by this process, in cores (1.0 = one core busy).
  double node_cpu = 0;
  double bench_cpu = 0;
  /// CPU time per operation, in microseconds: of this process, and of the server processes
  /// (Target::server_pids: kvmeshd, every node of a cluster, redis-server; -1 when the target
  /// runs in this process).
  double bench_cpu_us_per_op = 0;
  double server_cpu_us_per_op = -1;
  /// server_cpu_us_per_op by server process, in Target::server_pids order (a cluster's node 0,
  /// which takes the load, first): what a replicated write costs the writer and each replica.
  /// Empty when server_cpu_us_per_op is -1.
  std::vector<double> server_cpu_us_per_op_each;
  /// The node's CPU by thread group over the run (the first server's for remote targets; the
  /// whole process, benchmark threads included, for in-process ones): shows which thread
  /// saturates first and whether every worker thread works.
  std::vector<ThreadGroupCpu> node_threads;
  /// The failures by kind (failures counts them all).
  std::vector<ErrorKind> errors;
  bool bounded_by_time = false;
  /// Figures particular to the workload (watch: events before their acknowledgement, delay
  /// from the put's sending), printed under the table; null for none.
  Json details;
  double ops_per_second() const { return seconds > 0 ? ops / seconds : 0; }
  double keys_per_second() const { return seconds > 0 ? keys / seconds : 0; }
};

/// Instantiating the benchmark's databases on a target.
struct Instantiation {
  std::string target;
  uint64_t databases = 0;
  double seconds = 0;
  double rss_before_mb = 0, rss_after_mb = 0;
};

/// Writes the benchmark prints besides its table (replication lag, catch-up).
struct Extra {
  std::string target;
  std::string what;
  Json figures;
};

std::vector<std::string> DatabasePaths(uint64_t n) {
  std::vector<std::string> paths;
  paths.reserve(n);
  for (uint64_t i = 0; i < n; ++i) paths.push_back("/bench/db-" + std::to_string(i));
  return paths;
}

double MiB(uint64_t bytes) {
  return bytes / 1048576.0;
}

std::string Human(double v) {
  char buf[32];
  if (v >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2fM", v / 1e6);
  } else if (v >= 1e4) {
    std::snprintf(buf, sizeof(buf), "%.1fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  }
  return buf;
}

/// Samples the node's memory while a run goes, and prints the progress line.
class Monitor {
 public:
  Monitor(pid_t pid, std::string label, const std::atomic<uint64_t>* done, bool progress)
      : pid_(pid), label_(std::move(label)), done_(done), progress_(progress) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Monitor() { Stop(); }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (progress_ && printed_) std::fprintf(stderr, "\r%-100s\r", "");
  }
  uint64_t peak_rss() const { return peak_rss_; }

 private:
  void Loop() {
    const auto start = Clock::now();
    auto next_print = start + std::chrono::milliseconds(500);
    const bool tty = ::isatty(STDERR_FILENO);
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      if (pid_ > 0) peak_rss_ = std::max(peak_rss_, SampleProcess(pid_).rss_bytes);
      const auto now = Clock::now();
      if (progress_ && now >= next_print) {
        const double s = std::chrono::duration<double>(now - start).count();
        const uint64_t n = done_->load();
        std::fprintf(stderr, "%s%-40s %6.1f s %12llu ops %10s ops/s%s", tty ? "\r" : "",
                     label_.c_str(), s, static_cast<unsigned long long>(n),
                     Human(n / std::max(s, 1e-9)).c_str(), tty ? "" : "\n");
        printed_ = tty;
        next_print = now + (tty ? std::chrono::milliseconds(500) : std::chrono::seconds(5));
      }
      cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (pid_ > 0) peak_rss_ = std::max(peak_rss_, SampleProcess(pid_).rss_bytes);
  }

  pid_t pid_;
  std::string label_;
  const std::atomic<uint64_t>* done_;
  bool progress_;
  bool printed_ = false;
  uint64_t peak_rss_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

/// Where a key index of the whole key space lives: database index / per_db, key index % per_db.
struct KeySpace {
  uint64_t databases;
  uint64_t per_db;
  uint64_t total() const { return databases * per_db; }
};

/// The watch workload's bookkeeping, shared by the writers and the watcher: when each write was
/// sent and acknowledged and when its event arrived, whichever comes first waiting for the other.
/// Each write is of a fresh key, so each event belongs to exactly one write (a watch reports a
/// key changed twice between two updates once).
class WatchDelays {
 public:
  void Acked(const std::string& key, Clock::time_point sent, Clock::time_point acked) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = arrived_.find(key);
    if (it == arrived_.end()) {
      acked_.emplace(key, std::make_pair(sent, acked));
      return;
    }
    Match(sent, acked, it->second);
    arrived_.erase(it);
    cv_.notify_all();
  }
  void Arrived(const std::string& key, Clock::time_point at) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++events_;
    last_event_ = std::max(last_event_, at);
    auto it = acked_.find(key);
    if (it == acked_.end()) {
      arrived_.emplace(key, at);
      return;
    }
    Match(it->second.first, it->second.second, at);
    acked_.erase(it);
    cv_.notify_all();
  }
  /// Waits until every acknowledged write's event arrived, or `until`; returns those missing.
  uint64_t WaitForAll(Clock::time_point until) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait_until(lock, until, [&] { return acked_.empty(); });
    return acked_.size();
  }
  uint64_t events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  /// Events that arrived before their write's acknowledgement (a delay of 0 after it).
  uint64_t early() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return early_;
  }
  Clock::time_point last_event() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_event_;
  }
  /// From the acknowledgement (0 when the event came first), and from when the put was sent.
  const LatencyHistogram& after_ack() const { return after_ack_; }
  const LatencyHistogram& after_send() const { return after_send_; }

 private:
  static uint64_t Nanos(Clock::time_point from, Clock::time_point to) {
    return to > from ? std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count() : 0;
  }
  void Match(Clock::time_point sent, Clock::time_point acked, Clock::time_point arrived) {
    if (arrived < acked) ++early_;
    after_ack_.Record(Nanos(acked, arrived));
    after_send_.Record(Nanos(sent, arrived));
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::unordered_map<std::string, std::pair<Clock::time_point, Clock::time_point>> acked_;
  std::unordered_map<std::string, Clock::time_point> arrived_;
  uint64_t events_ = 0, early_ = 0;
  Clock::time_point last_event_{};
  LatencyHistogram after_ack_, after_send_;
};

/// The ttl of put-ttl: longer than any run, so that no key expires while it is measured.
constexpr std::chrono::milliseconds kBenchTtl = std::chrono::minutes(10);

/// What one session thread does in one run.
struct RunPlan {
  std::string workload;
  std::string value;
  int inflight = 1;
  KeySpace space;
  const Settings* settings;
  /// Shared by all session threads of the run.
  std::atomic<uint64_t>* issued;
  std::atomic<uint64_t>* completed;
  std::atomic<uint64_t>* keys;
  std::atomic<uint64_t>* failures;
  ErrorLog* errors;
  LatencyHistogram* latency;
  uint64_t ops;
  Clock::time_point deadline;
  /// cas-put and watch write fresh keys: "<fresh_prefix>/<n>", unique to the run.
  std::string fresh_prefix;
  /// watch: where writers note their acknowledgements.
  WatchDelays* watch = nullptr;
};

// Drives one session: keeps plan.inflight operations outstanding until the run's operation
// count or deadline is reached, then waits for what is still in flight.
void DriveSession(Session& session, const RunPlan& plan, uint64_t seed) {
  const Settings& s = *plan.settings;
  const bool load = plan.workload == "load";
  const bool list = plan.workload == "list";
  const uint64_t groups_per_db = (plan.space.per_db + s.scan_length - 1) / s.scan_length;
  KeyChooser chooser(s.distribution,
                     list ? plan.space.databases * groups_per_db : plan.space.total(), seed);
  std::mt19937_64 coin(seed ^ 0x5bd1e995);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const uint64_t load_chunk = 1000;
  const uint64_t chunks_per_db = (plan.space.per_db + load_chunk - 1) / load_chunk;

  std::mutex mutex;
  std::condition_variable cv;
  int outstanding = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex);
      cv.wait(lock, [&] { return outstanding < plan.inflight; });
    }
    const uint64_t n = plan.issued->fetch_add(1);
    if (n >= plan.ops || Clock::now() >= plan.deadline) break;
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++outstanding;
    }
    const auto t0 = Clock::now();
    // Notifies under the lock: once the driver sees outstanding == 0 it returns and `cv` is gone.
    Done done = [&, t0](const Status& status, uint64_t keys) {
      plan.latency->Record(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      if (!status.ok()) {
        plan.failures->fetch_add(1);
        plan.errors->Add(status);
      }
      if (status.ok()) plan.keys->fetch_add(keys);  // keys/s counts what was done
      plan.completed->fetch_add(1);
      std::lock_guard<std::mutex> lock(mutex);
      --outstanding;
      cv.notify_one();
    };
    if (load) {
      // Chunk n: keys [first, first + load_chunk) of one database, in order.
      const uint64_t db = n / chunks_per_db;
      const uint64_t first = (n % chunks_per_db) * load_chunk;
      WriteBatch batch;
      for (uint64_t k = first; k < std::min(plan.space.per_db, first + load_chunk); ++k) {
        batch.Put(KeyOf(k, s.scan_length), plan.value);
      }
      session.Write(db, std::move(batch), std::move(done));
      continue;
    }
    const uint64_t pick = chooser.Next();
    if (list) {
      session.List(pick / groups_per_db, GroupPrefix(pick % groups_per_db), s.scan_length,
                   std::move(done));
      continue;
    }
    const uint64_t db = pick / plan.space.per_db;
    std::string key = KeyOf(pick % plan.space.per_db, s.scan_length);
    if (plan.workload == "quorum-get") {
      session.QuorumGet(db, std::move(key), std::move(done));
    } else if (plan.workload == "cas-put") {
      // A conditional put that passes: if_absent on a key never written. One request, so it
      // compares with put directly (the check's cost, not a get's round trip in front of it).
      WriteOptions options;
      options.if_absent = true;
      session.PutWith(0, plan.fresh_prefix + "/" + std::to_string(n), plan.value,
                      std::move(options), std::move(done));
    } else if (plan.workload == "put-ttl") {
      WriteOptions options;
      options.ttl = kBenchTtl;
      session.PutWith(db, std::move(key), plan.value, std::move(options), std::move(done));
    } else if (plan.workload == "watch") {
      std::string fresh = plan.fresh_prefix + "/" + std::to_string(n);
      WatchDelays* delays = plan.watch;
      session.Put(0, fresh, plan.value,
                  [done = std::move(done), fresh, delays, t0](const Status& status, uint64_t keys) {
                    if (status.ok()) delays->Acked(fresh, t0, Clock::now());
                    done(status, keys);
                  });
    } else if (plan.workload == "get" || (plan.workload == "mixed" && unit(coin) < s.read_ratio)) {
      session.Get(db, std::move(key), std::move(done));
    } else if (plan.workload == "batch") {
      WriteBatch batch;
      batch.Put(std::move(key), plan.value);
      // The rest of the batch in the same database (a batch is atomic within one database).
      for (uint32_t i = 1; i < s.batch_size; ++i) {
        batch.Put(KeyOf(chooser.Next() % plan.space.per_db, s.scan_length), plan.value);
      }
      session.Write(db, std::move(batch), std::move(done));
    } else {
      session.Put(db, std::move(key), plan.value, std::move(done));
    }
  }
  std::unique_lock<std::mutex> lock(mutex);
  cv.wait(lock, [&] { return outstanding == 0; });
}

/// A target with its sessions (one per connection), kept across runs.
struct Prepared {
  std::unique_ptr<Target> target;
  std::vector<std::unique_ptr<Session>> sessions;
  /// Value size of the data loaded, or 0 if nothing was loaded yet.
  size_t loaded_value_size = 0;
};

Outcome Run(Prepared& p, const Settings& s, const std::string& workload, size_t value_size,
            int connections, int inflight, const KeySpace& space) {
  Outcome out;
  out.target = p.target->name();
  out.workload = workload;
  out.value_size = value_size;
  out.connections = connections;
  out.inflight = inflight;
  out.databases = space.databases;
  std::atomic<uint64_t> issued{0}, completed{0}, keys{0}, failures{0};
  ErrorLog errors;
  LatencyHistogram latency;
  RunPlan plan{workload,   std::string(value_size, 'v'),
               inflight,   space,
               &s,         &issued,
               &completed, &keys,
               &failures,  &errors,
               &latency,   s.ops,
               {}};
  if (workload == "load") {
    plan.ops = space.databases * ((space.per_db + 999) / 1000);
    plan.inflight = std::max(inflight, 8);
  }
  static std::atomic<uint64_t> runs{0};
  const uint64_t run_id = runs.fetch_add(1);
  plan.fresh_prefix = "/" + workload + "/" + std::to_string(run_id);
  // watch: the first session watches the run's fresh keys while the sessions write them.
  WatchDelays delays;
  std::unique_ptr<Watch> watch;
  if (workload == "watch") {
    plan.watch = &delays;
    Status started = p.sessions[0]->Watch(
        0, plan.fresh_prefix,
        [&delays, &errors](Result<WatchUpdate> update) {
          if (!update.ok()) return errors.Add(update.status());
          const auto now = Clock::now();
          for (const WatchEvent& e : update->events) delays.Arrived(e.key, now);
        },
        &watch);
    if (!started.ok()) {
      errors.Add(started);
      plan.ops = 0;  // nothing to measure
    }
  }
  // Values differ per run, so that a put of the same key is a real overwrite.
  for (size_t i = 0; i < plan.value.size(); ++i) plan.value[i] = 'a' + (i * 7 + value_size) % 26;
  char label[128];
  std::snprintf(label, sizeof(label), "%s %s %zuB c%d i%d", out.target.c_str(), workload.c_str(),
                value_size, connections, inflight);
  const pid_t pid = p.target->node_pid();
  const std::vector<pid_t> servers = p.target->server_pids();
  const ProcessSample node_before = SampleProcess(pid);
  const std::map<pid_t, ThreadSample> threads_before = SampleThreads(pid);
  const ProcessSample self_before = SampleProcess(::getpid());
  std::vector<ProcessSample> servers_before;
  for (pid_t server : servers) servers_before.push_back(SampleProcess(server));
  const auto start = Clock::now();
  // A load writes every key whatever --duration says: the reads after it count a key it did not
  // write as a failure (not_found). Each request still ends by its own deadline.
  plan.deadline = workload == "load" ? Clock::time_point::max()
                                     : start + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(s.duration_s));
  {
    Monitor monitor(pid, label, &completed, !s.quiet);
    std::vector<std::thread> threads;
    for (int c = 0; c < connections; ++c) {
      p.sessions[c]->set_blocking(plan.inflight == 1);
      threads.emplace_back(
          [&, c] { DriveSession(*p.sessions[c], plan, 1000003ull * (c + 1) + value_size); });
    }
    for (auto& t : threads) t.join();
    // watch: the events of the last writes are still on their way (bounded wait).
    if (plan.watch != nullptr) {
      const uint64_t missing = delays.WaitForAll(Clock::now() + std::chrono::seconds(10));
      for (uint64_t i = 0; i < missing; ++i) {
        errors.Add(Status::Timeout("no watch event within 10 s of the write's acknowledgement"));
      }
      failures.fetch_add(missing);
    }
    monitor.Stop();
    out.rss_peak_mb = MiB(monitor.peak_rss());
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const ProcessSample node_after = SampleProcess(pid);
  out.node_threads = ThreadCpuBetween(threads_before, SampleThreads(pid), out.seconds);
  const ProcessSample self_after = SampleProcess(::getpid());
  double server_cpu_seconds = 0;
  std::vector<double> server_cpu_seconds_each;
  bool servers_sampled = !servers.empty();
  for (size_t i = 0; i < servers.size(); ++i) {
    const ProcessSample after = SampleProcess(servers[i]);
    // A server that restarted or vanished during the run has no meaningful difference.
    servers_sampled = servers_sampled && servers_before[i].ok && after.ok &&
                      after.cpu_seconds >= servers_before[i].cpu_seconds;
    server_cpu_seconds_each.push_back(after.cpu_seconds - servers_before[i].cpu_seconds);
    server_cpu_seconds += server_cpu_seconds_each.back();
  }
  out.node_cpu = (node_after.cpu_seconds - node_before.cpu_seconds) / out.seconds;
  out.bench_cpu = pid == ::getpid()
                      ? out.node_cpu
                      : (self_after.cpu_seconds - self_before.cpu_seconds) / out.seconds;
  out.ops = completed.load();
  out.keys = keys.load();
  out.failures = failures.load();
  out.errors = errors.kinds();
  if (out.ops > 0) {
    out.bench_cpu_us_per_op = (self_after.cpu_seconds - self_before.cpu_seconds) * 1e6 / out.ops;
    if (servers_sampled) {
      out.server_cpu_us_per_op = server_cpu_seconds * 1e6 / out.ops;
      for (double seconds : server_cpu_seconds_each) {
        out.server_cpu_us_per_op_each.push_back(seconds * 1e6 / out.ops);
      }
    }
  }
  out.bounded_by_time = out.ops < plan.ops;
  out.p50_us = latency.QuantileMicros(0.50);
  out.p99_us = latency.QuantileMicros(0.99);
  out.p999_us = latency.QuantileMicros(0.999);
  out.max_us = latency.QuantileMicros(1.0);
  if (plan.watch != nullptr) {
    // The row is the watcher's: events delivered per second (until the last one arrived) and
    // the delay from each write's acknowledgement to its event's arrival.
    watch.reset();
    out.ops = delays.after_ack().count();
    out.keys = delays.events();
    if (delays.events() > 0) {
      out.seconds = std::chrono::duration<double>(delays.last_event() - start).count();
    }
    out.p50_us = delays.after_ack().QuantileMicros(0.50);
    out.p99_us = delays.after_ack().QuantileMicros(0.99);
    out.p999_us = delays.after_ack().QuantileMicros(0.999);
    out.max_us = delays.after_ack().QuantileMicros(1.0);
    // Where the events land relative to the writes: in a cluster most arrive before the
    // acknowledgement (the watched node applies the write before the replicas answer).
    out.details = {{"events_before_ack", delays.early()},
                   {"after_send_p50_us", delays.after_send().QuantileMicros(0.50)},
                   {"after_send_p99_us", delays.after_send().QuantileMicros(0.99)}};
  }
  if (out.failures > 0) {
    std::fprintf(stderr, "%s: %llu of %llu operations failed\n", label,
                 static_cast<unsigned long long>(out.failures),
                 static_cast<unsigned long long>(out.ops));
    for (const ErrorKind& k : out.errors) {
      std::fprintf(stderr, "  %s x%llu, the first: %s\n", k.code.c_str(),
                   static_cast<unsigned long long>(k.count), k.first_message.c_str());
    }
  }
  return out;
}

Status MakeTarget(const std::string& name, const Settings& s, std::unique_ptr<Target>* out) {
  TargetOptions options = s.target;
  options.dir = s.dir + "/" + name;
  if (name == "rocksdb") return MakeRocksDbTarget(options, out);
  if (name == "embedded") return MakeEmbeddedTarget(options, out);
  // remote-tls and cluster-tls are remote and cluster with TLS (as --tls makes them), so a run
  // can measure TLS next to plaintext.
  const bool tls_variant = name == "remote-tls" || name == "cluster-tls";
  if (tls_variant) options.tls = true;
  if (name == "remote" || name == "remote-tls") return MakeRemoteTarget(options, out);
  if (name == "cluster" || name == "cluster-tls") return MakeClusterTarget(options, out);
  if (name == "http") return MakeHttpTarget(options, out);
  if (name == "redis") return MakeRedisTarget(options, out);
  if (name == "caf-echo") return MakeCafEchoTarget(options, out);
  if (name == "loop-echo" || name == "loop-echo-inline") {
    return MakeLoopEchoTarget(options, name == "loop-echo-inline", out);
  }
  return Status::InvalidArgument("unknown target \"" + name + "\" (" + kTargetNames + ")");
}

// -- Replicated targets: lag and catch-up --------------------------------------------------------

/// Replication lag: a put acknowledged through the first node, until every other node serves
/// it. Polled with gets through a client connection per node, so the resolution is one local
/// round trip (reported as poll_us).
Status MeasureLag(Target& target, const Settings& s, std::vector<Extra>* extras) {
  const auto addresses = target.addresses();
  if (addresses.size() < 2 || s.lag_samples == 0) return Status::OK();
  const client::ClientOptions options = BenchClientOptions(s.target, target.tls());
  std::vector<Database> dbs;
  for (const std::string& address : addresses) {
    dbs.push_back(client::connect(address, options).open("/bench/lag"));
    if (!dbs.back().ok()) return dbs.back().status();
  }
  LatencyHistogram lag, poll;
  uint64_t lost = 0;
  const std::string value(100, 'l');
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(s.duration_s));
  uint64_t i = 0;
  for (; i < s.lag_samples && Clock::now() < deadline; ++i) {
    const std::string key = "/lag/" + std::to_string(i);
    Status put = dbs[0].put(key, value);
    if (!put.ok()) return put;
    const auto acked = Clock::now();
    bool everywhere = true;
    for (size_t n = 1; n < dbs.size(); ++n) {
      while (true) {
        const auto asked = Clock::now();
        const bool found = dbs[n].get(key).ok();
        poll.Record(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - asked).count());
        if (found) break;
        if (Clock::now() - acked > std::chrono::seconds(10)) {
          everywhere = false;
          break;
        }
      }
    }
    if (!everywhere) {
      ++lost;
      continue;
    }
    lag.Record(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - acked).count());
  }
  Json figures = {{"samples", lag.count()},
                  {"not_visible_after_10s", lost},
                  {"p50_us", lag.QuantileMicros(0.5)},
                  {"p99_us", lag.QuantileMicros(0.99)},
                  {"p999_us", lag.QuantileMicros(0.999)},
                  {"poll_round_trip_p50_us", poll.QuantileMicros(0.5)}};
  extras->push_back({target.name(), "replication_lag", figures});
  return Status::OK();
}

/// Idle cost: each node's CPU (from /proc, in cores: CPU seconds per second) over
/// `--idle-seconds` after the workloads (right after, or `--idle-after` seconds later), when
/// nobody sends requests, and its RSS then, with all the benchmark's databases instantiated
/// (anti-entropy and timers are what is left). Right after, the window also holds what the
/// load leaves behind for a while: CAF 0.17 fires every request's timeout (30 s for opens)
/// even when it was answered long ago, waking its requester; a window that starts 35 s later
/// shows what holding the databases costs.
Status MeasureIdle(Target& target, const Settings& s, std::vector<Extra>* extras) {
  const std::vector<pid_t> pids = target.server_pids();
  if (pids.size() < 2 || s.idle_seconds <= 0) return Status::OK();
  std::this_thread::sleep_for(std::chrono::duration<double>(s.idle_after));
  std::vector<ProcessSample> before;
  for (pid_t pid : pids) before.push_back(SampleProcess(pid));
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(s.idle_seconds));
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  Json nodes = Json::array();
  double max_cpu = 0, max_rss = 0;
  for (size_t i = 0; i < pids.size(); ++i) {
    const ProcessSample after = SampleProcess(pids[i]);
    if (!before[i].ok || !after.ok) {
      return Status::Unavailable("cannot read /proc for node pid " + std::to_string(pids[i]));
    }
    const double cores = (after.cpu_seconds - before[i].cpu_seconds) / elapsed;
    const double rss = MiB(after.rss_bytes);
    max_cpu = std::max(max_cpu, cores);
    max_rss = std::max(max_rss, rss);
    nodes.push_back({{"node", i}, {"idle_cpu_cores", cores}, {"rss_mib", rss}});
  }
  extras->push_back({target.name(),
                     "idle",
                     {{"databases", s.databases},
                      {"after_seconds", s.idle_after},
                      {"seconds", elapsed},
                      {"max_idle_cpu_cores", max_cpu},
                      {"max_rss_mib", max_rss},
                      {"nodes", nodes}}});
  return Status::OK();
}

/// True when every node's replica agrees (common/replication_status.hpp).
bool Converged(const std::vector<Database>& dbs) {
  std::vector<ReplicationStatus> statuses;
  for (const Database& db : dbs) {
    Result<ReplicationStatus> st = db.replication_status();
    if (!st.ok()) return false;
    statuses.push_back(std::move(*st));
  }
  return CheckReplicasAgree(statuses).ok();
}

/// Kills the last node, writes `catchup_keys` keys while it is down, restarts it and times how
/// long it takes until all replicas agree again.
Status MeasureCatchUp(Target& target, const Settings& s, std::vector<Extra>* extras) {
  const auto addresses = target.addresses();
  if (addresses.size() < 2 || s.catchup_keys == 0) return Status::OK();
  const client::ClientOptions options = BenchClientOptions(s.target, target.tls());
  Database writer = client::connect(addresses[0], options).open("/bench/catchup");
  if (!writer.ok()) return writer.status();
  Status st = writer.put("/warm", "w");
  if (!st.ok()) return st;
  std::vector<Database> dbs;
  for (const std::string& address : addresses) {
    dbs.push_back(client::connect(address, options).open("/bench/catchup"));
  }
  // Every replica holds the database before the outage, so the restarted node misses exactly
  // the writes made while it was down.
  for (auto until = Clock::now() + std::chrono::seconds(30); !Converged(dbs);) {
    if (Clock::now() > until)
      return Status::Timeout("the replicas did not converge before the outage");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a remote node
  }
  const int victim = static_cast<int>(addresses.size()) - 1;
  Clock::time_point restarted;
  st = target.KillAndRestart(victim, [&] {
    const std::string value(100, 'c');
    for (uint64_t i = 0; i < s.catchup_keys; i += 1000) {
      WriteBatch batch;
      for (uint64_t k = i; k < std::min(s.catchup_keys, i + 1000); ++k) {
        batch.Put("/c/" + std::to_string(k), value);
      }
      Status w = writer.write(batch);
      if (!w.ok()) return w;
    }
    restarted = Clock::now();
    return Status::OK();
  });
  if (!st.ok()) return st;
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  bool converged = false;
  while (!(converged = Converged(dbs)) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a remote node
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - restarted).count();
  Result<ReplicationStatus> victim_status = dbs[victim].replication_status();
  Json figures = {{"missed_keys", s.catchup_keys},
                  {"converged", converged},
                  {"seconds_after_restart", seconds}};
  if (victim_status.ok()) {
    figures["entries_received"] = victim_status->entries_received;
    figures["entries_applied"] = victim_status->entries_applied;
  }
  extras->push_back({target.name(), "catch_up", figures});
  return Status::OK();
}

// -- Output -------------------------------------------------------------------------------------

/// The row of `baseline` ("rocksdb" or "redis") to compare a row with: the same workload, value
/// size, connection count and number of databases, and for redis the same requests in flight
/// (raw RocksDB is synchronous: it runs once, whatever the requests in flight). Null for the
/// baseline's own rows or when there is none.
const Outcome* BaselineOf(const Outcome& r, const std::vector<Outcome>& all,
                          const std::string& baseline) {
  if (r.target == baseline) return nullptr;
  for (const Outcome& b : all) {
    if (b.target == baseline && b.workload == r.workload && b.value_size == r.value_size &&
        b.connections == r.connections && b.databases == r.databases &&
        (baseline == "rocksdb" || b.inflight == r.inflight)) {
      return &b;
    }
  }
  return nullptr;
}

/// r's ops/s over the baseline's, or a negative number when there is no baseline row.
double RatioTo(const Outcome& r, const std::vector<Outcome>& all, const std::string& baseline) {
  const Outcome* base = BaselineOf(r, all, baseline);
  if (base == nullptr || base->ops_per_second() <= 0) return -1;
  return r.ops_per_second() / base->ops_per_second();
}

void PrintTable(const std::vector<Outcome>& results, const std::vector<Instantiation>& inst,
                const std::vector<Extra>& extras, bool print_threads) {
  std::printf("%-12s %-8s %6s %5s %5s %7s %9s %9s %9s %9s %9s %9s %8s %6s %8s %8s %9s %9s\n",
              "target", "workload", "value", "conns", "infl", "dbs", "ops", "ops/s", "keys/s",
              "p50_us", "p99_us", "p99.9_us", "rss_MiB", "cpu", "x_rocks", "x_redis", "bench_us",
              "server_us");
  auto ratio = [&](const Outcome& r, const std::string& baseline) {
    const double x = RatioTo(r, results, baseline);
    char buf[16] = "-";
    if (x >= 0) std::snprintf(buf, sizeof(buf), "%.2fx", x);
    return std::string(buf);
  };
  for (const Outcome& r : results) {
    char server[16] = "-";
    if (r.server_cpu_us_per_op >= 0) {
      std::snprintf(server, sizeof(server), "%.1f", r.server_cpu_us_per_op);
    }
    std::printf(
        "%-12s %-8s %6zu %5d %5d %7llu %9llu %9s %9s %9.1f %9.1f %9.1f %8.0f %6.2f %8s %8s %9.1f "
        "%9s%s\n",
        r.target.c_str(), r.workload.c_str(), r.value_size, r.connections, r.inflight,
        static_cast<unsigned long long>(r.databases), static_cast<unsigned long long>(r.ops),
        Human(r.ops_per_second()).c_str(), Human(r.keys_per_second()).c_str(), r.p50_us, r.p99_us,
        r.p999_us, r.rss_peak_mb, r.node_cpu, ratio(r, "rocksdb").c_str(),
        ratio(r, "redis").c_str(), r.bench_cpu_us_per_op, server,
        r.failures > 0 ? "  FAILURES" : "");
    // The first error of each kind, under its row.
    for (const ErrorKind& k : r.errors) {
      std::printf("    %llu failed with %s, the first: %s\n",
                  static_cast<unsigned long long>(k.count), k.code.c_str(),
                  k.first_message.c_str());
    }
  }
  for (const Instantiation& i : inst) {
    std::printf(
        "%s: instantiated %llu databases in %.2f s (%s/s); node RSS %.0f -> %.0f MiB (%.1f KiB "
        "per database)\n",
        i.target.c_str(), static_cast<unsigned long long>(i.databases), i.seconds,
        Human(i.databases / std::max(i.seconds, 1e-9)).c_str(), i.rss_before_mb, i.rss_after_mb,
        (i.rss_after_mb - i.rss_before_mb) * 1024 / std::max<uint64_t>(1, i.databases));
  }
  for (const Extra& e : extras)
    std::printf("%s %s: %s\n", e.target.c_str(), e.what.c_str(), e.figures.dump().c_str());
  for (const Outcome& r : results) {
    if (!print_threads || r.server_cpu_us_per_op_each.size() < 2) continue;
    std::printf("%s %s c%d i%d server processes (us per op):", r.target.c_str(), r.workload.c_str(),
                r.connections, r.inflight);
    for (double us : r.server_cpu_us_per_op_each) std::printf(" %.1f", us);
    std::printf("\n");
  }
  for (const Outcome& r : results) {
    const bool any = std::any_of(r.node_threads.begin(), r.node_threads.end(),
                                 [](const ThreadGroupCpu& g) { return g.cores >= 0.01; });
    if (!print_threads || !any) continue;
    std::printf("%s %s c%d i%d node threads (cores, busiest thread, us per op):", r.target.c_str(),
                r.workload.c_str(), r.connections, r.inflight);
    for (const ThreadGroupCpu& g : r.node_threads) {
      if (g.cores < 0.01) continue;
      std::printf(" %s x%d %.2f (%.2f) %.1f;", g.name.c_str(), g.threads, g.cores, g.busiest,
                  r.ops > 0 ? g.cores * r.seconds * 1e6 / r.ops : 0.0);
    }
    std::printf("\n");
  }
  for (const Outcome& r : results) {
    if (r.details.is_null()) continue;
    std::printf("%s %s c%d i%d: %s\n", r.target.c_str(), r.workload.c_str(), r.connections,
                r.inflight, r.details.dump().c_str());
  }
}

Json ToJson(const Outcome& r, const std::vector<Outcome>& all) {
  Json j = {{"target", r.target},
            {"workload", r.workload},
            {"value_size", r.value_size},
            {"connections", r.connections},
            {"inflight", r.inflight},
            {"databases", r.databases},
            {"ops", r.ops},
            {"keys", r.keys},
            {"failures", r.failures},
            {"seconds", r.seconds},
            {"ops_per_second", r.ops_per_second()},
            {"keys_per_second", r.keys_per_second()},
            {"p50_us", r.p50_us},
            {"p99_us", r.p99_us},
            {"p999_us", r.p999_us},
            {"max_us", r.max_us},
            {"rss_peak_mib", r.rss_peak_mb},
            {"node_cpu_cores", r.node_cpu},
            {"bench_cpu_cores", r.bench_cpu},
            {"bench_cpu_us_per_op", r.bench_cpu_us_per_op},
            {"bounded_by_time", r.bounded_by_time}};
  j["node_threads"] = Json::array();
  for (const ThreadGroupCpu& g : r.node_threads) {
    j["node_threads"].push_back({{"name", g.name},
                                 {"threads", g.threads},
                                 {"cores", g.cores},
                                 {"busiest_cores", g.busiest},
                                 {"us_per_op", r.ops > 0 ? g.cores * r.seconds * 1e6 / r.ops : 0}});
  }
  if (r.server_cpu_us_per_op >= 0) j["server_cpu_us_per_op"] = r.server_cpu_us_per_op;
  if (!r.server_cpu_us_per_op_each.empty()) {
    j["server_cpu_us_per_op_each"] = r.server_cpu_us_per_op_each;
  }
  j["errors"] = Json::array();
  for (const ErrorKind& k : r.errors) {
    j["errors"].push_back(
        {{"code", k.code}, {"count", k.count}, {"first_message", k.first_message}});
  }
  const double vs_rocksdb = RatioTo(r, all, "rocksdb");
  if (vs_rocksdb >= 0) j["vs_rocksdb"] = vs_rocksdb;
  const double vs_redis = RatioTo(r, all, "redis");
  if (vs_redis >= 0) j["vs_redis"] = vs_redis;
  if (!r.details.is_null()) j["details"] = r.details;
  return j;
}

// -- Comparing two builds or configurations -------------------------------------------------------

/// The identity of a result row across runs.
std::string RowKey(const Json& r) {
  return r["target"].get<std::string>() + " " + r["workload"].get<std::string>() + " " +
         std::to_string(r["value_size"].get<size_t>()) + "B c" +
         std::to_string(r["connections"].get<int>()) + " i" +
         std::to_string(r["inflight"].get<int>()) + " dbs " +
         std::to_string(r["databases"].get<uint64_t>());
}

Status RunJson(const std::string& command, Json* out) {
  const std::string full = command + " --json --quiet";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) return Status::IOError("cannot run " + full);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) text.append(buf, n);
  const int rc = ::pclose(pipe);
  if (rc != 0) return Status::IOError("\"" + full + "\" exited with " + std::to_string(rc));
  try {
    *out = Json::parse(text);
  } catch (const std::exception& e) {
    return Status::IOError("\"" + full + "\" printed no JSON: " + e.what());
  }
  return Status::OK();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Runs A and B in alternation (A B, B A, A B, ...) so that drift of the machine hits both, and
// prints per row the median ops/s of each and the median of the per-round ratios B/A.
int Compare(const std::string& a, const std::string& b, int rounds, bool json) {
  std::map<std::string, std::vector<double>> ops_a, ops_b, ratios, p99_a, p99_b;
  std::vector<std::string> order;
  for (int round = 0; round < rounds; ++round) {
    Json ja, jb;
    const bool a_first = round % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      const bool run_a = (k == 0) == a_first;
      std::fprintf(stderr, "round %d/%d: %s\n", round + 1, rounds, run_a ? "A" : "B");
      Status s = RunJson(run_a ? a : b, run_a ? &ja : &jb);
      if (!s.ok()) {
        std::fprintf(stderr, "compare: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    std::map<std::string, const Json*> rows_b;
    for (const Json& r : jb["results"]) rows_b[RowKey(r)] = &r;
    for (const Json& r : ja["results"]) {
      const std::string key = RowKey(r);
      auto it = rows_b.find(key);
      if (it == rows_b.end()) continue;
      if (!ops_a.count(key)) order.push_back(key);
      const double oa = r["ops_per_second"].get<double>();
      const double ob = (*it->second)["ops_per_second"].get<double>();
      ops_a[key].push_back(oa);
      ops_b[key].push_back(ob);
      p99_a[key].push_back(r["p99_us"].get<double>());
      p99_b[key].push_back((*it->second)["p99_us"].get<double>());
      if (oa > 0) ratios[key].push_back(ob / oa);
    }
  }
  if (order.empty()) {
    std::fprintf(stderr, "compare: A and B have no result row in common\n");
    return 1;
  }
  Json rows = Json::array();
  if (!json) {
    std::printf("A: %s\nB: %s\n%d rounds, alternating\n", a.c_str(), b.c_str(), rounds);
    std::printf("%-42s %10s %10s %8s %15s %10s %10s\n", "run", "A ops/s", "B ops/s", "B/A",
                "B/A min..max", "A p99_us", "B p99_us");
  }
  for (const std::string& key : order) {
    auto& r = ratios[key];
    const double lo = r.empty() ? 0 : *std::min_element(r.begin(), r.end());
    const double hi = r.empty() ? 0 : *std::max_element(r.begin(), r.end());
    if (json) {
      rows.push_back({{"run", key},
                      {"a_ops_per_second", Median(ops_a[key])},
                      {"b_ops_per_second", Median(ops_b[key])},
                      {"ratio_b_over_a", Median(r)},
                      {"ratio_min", lo},
                      {"ratio_max", hi},
                      {"a_p99_us", Median(p99_a[key])},
                      {"b_p99_us", Median(p99_b[key])}});
    } else {
      char range[32];
      std::snprintf(range, sizeof(range), "%.2f..%.2f", lo, hi);
      std::printf("%-42s %10s %10s %7.2fx %15s %10.1f %10.1f\n", key.c_str(),
                  Human(Median(ops_a[key])).c_str(), Human(Median(ops_b[key])).c_str(), Median(r),
                  range, Median(p99_a[key]), Median(p99_b[key]));
    }
  }
  if (json)
    std::cout << Json{{"a", a}, {"b", b}, {"rounds", rounds}, {"rows", rows}}.dump(2) << "\n";
  return 0;
}

}  // namespace

int BadEchoServerArgs(const char* server, const char* worker_threads, const char* busy_poll_us) {
  std::fprintf(stderr,
               "%s: worker threads must be 0 to %d and busy polling -1 to %lld us, not %s and "
               "%s\n",
               server, kvmesh::kMaxWorkerThreads,
               static_cast<long long>(kvmesh::kMaxBusyPoll.count()), worker_threads, busy_poll_us);
  return 2;
}

}  // namespace kvmesh::bench

int main(int argc, char** argv) {
  using namespace kvmesh::bench;
  // The caf-echo target's server is this executable (hidden from --help): --caf-echo-server
  // SCHEDULER WORKER_THREADS BUSY_POLL_US (EchoServerArgs).
  if (argc == 5 && std::string(argv[1]) == "--caf-echo-server") {
    const auto node = EchoServerNode(argv[2], argv[3], argv[4]);
    if (!node) return BadEchoServerArgs(argv[1], argv[3], argv[4]);
    return RunCafEchoServer(*node);
  }
  // The loop-echo targets' server likewise: --loop-echo-server actor|inline SCHEDULER
  // WORKER_THREADS BUSY_POLL_US.
  if (argc == 6 && std::string(argv[1]) == "--loop-echo-server") {
    const auto node = EchoServerNode(argv[3], argv[4], argv[5]);
    if (!node) return BadEchoServerArgs(argv[1], argv[4], argv[5]);
    return RunLoopEchoServer(argv[2], *node);
  }
  Settings s;
  std::string compare_a, compare_b;
  int rounds = 3;
  CLI::App app{
      "kvmesh-bench: kvmesh's throughput, latency, memory and CPU next to raw RocksDB with the "
      "same options, in one run"};
  app.add_option("--targets", s.targets, kTargetNames)->delimiter(',')->capture_default_str();
  app.add_option("--workloads", s.workloads,
                 "put, get, quorum-get (get at read level quorum), list, mixed, batch, put-ttl, "
                 "cas-put, watch")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--value-sizes", s.value_sizes, "value bytes")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--inflight", s.inflight,
                 "requests in flight per connection (1: the blocking calls, else callbacks)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--connections", s.connections,
                 "client connections (remote) or threads (embedded, rocksdb)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--databases", s.databases,
                 "databases the keys are spread over (/bench/db-N, one regex config)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10000000}))
      ->capture_default_str();
  app.add_option("--keys", s.keys, "keys in all (at least one per database)")
      ->capture_default_str();
  app.add_option("--distribution", s.distribution,
                 "key choice: uniform, zipfian (theta 0.99) or sequential (from a random start)")
      ->check(CLI::IsMember({"uniform", "zipfian", "sequential"}))
      ->capture_default_str();
  app.add_option("--read-ratio", s.read_ratio, "mixed: share of gets")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--scan-length", s.scan_length, "list: keys per prefix scan")
      ->check(CLI::Range(1u, 10000u))
      ->capture_default_str();
  app.add_option("--batch-size", s.batch_size, "batch: puts per atomic batch")
      ->check(CLI::Range(1u, 100000u))
      ->capture_default_str();
  app.add_option("--ops", s.ops, "operations per run (at most)")->capture_default_str();
  app.add_option("--duration", s.duration_s, "seconds per run (at most)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--dir", s.dir,
                 "scratch directory, wiped before and after (refused if it holds other files, or "
                 "another run uses it)")
      ->capture_default_str();
  app.add_option("--scheduler", s.target.scheduler, "CAF scheduler: sharing or stealing")
      ->check(CLI::IsMember({"sharing", "stealing"}))
      ->capture_default_str();
  app.add_option("--busy-poll-us", s.target.busy_poll_us,
                 "busy polling of started kvmeshd, of the echo servers' workers and of remote "
                 "clients, in microseconds (NodeOptions::busy_poll); -1: their defaults")
      ->check(CLI::Range(-1, static_cast<int>(kvmesh::kMaxBusyPoll.count())))
      ->capture_default_str();
  app.add_option("--worker-threads", s.target.worker_threads,
                 "actor worker threads of the embedded node, of started kvmeshd and of the echo "
                 "servers (0: one per core, at least 2); scaling with cores: compare 1 and 2 with "
                 "--databases 64")
      ->check(CLI::Range(0, kvmesh::kMaxWorkerThreads))
      ->capture_default_str();
  std::string sync = SyncModeName(s.target.sync);
  app.add_option("--sync", sync,
                 "none, periodic or always, for every target (raw RocksDB syncs the same way)")
      ->check(CLI::IsMember({"none", "periodic", "always"}))
      ->capture_default_str();
  long long sync_period_ms = s.target.sync_period.count();
  app.add_option("--sync-period-ms", sync_period_ms, "period of --sync periodic")
      ->check(CLI::Range(1LL, 60000LL))
      ->capture_default_str();
  app.add_option("--node", s.target.nodes,
                 "remote: client addresses of running nodes (the first takes the load; more "
                 "measure replication lag); default starts a kvmeshd")
      ->delimiter(',');
  app.add_option("--node-pid", s.target.node_pid,
                 "remote: the node's pid, if not found from its port");
  app.add_option("--kvmeshd", s.target.kvmeshd, "kvmeshd to start (default: beside kvmesh-bench)");
  app.add_option("--node-arg", s.target.node_args, "extra flag for started kvmeshd (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--cluster-nodes", s.target.cluster_nodes,
                 "cluster: kvmeshd processes (min 2, max 3)")
      ->check(CLI::Range(2, 9))
      ->capture_default_str();
  app.add_option("--lag-samples", s.lag_samples, "cluster: replication lag samples")
      ->capture_default_str();
  app.add_option("--catchup-keys", s.catchup_keys,
                 "cluster: keys written while a node is down (0: skip)")
      ->capture_default_str();
  app.add_option("--idle-seconds", s.idle_seconds,
                 "cluster: seconds after the workloads over which each node's idle CPU "
                 "(idle_cpu_cores) and RSS are measured (0: skip)")
      ->capture_default_str();
  app.add_option("--idle-after", s.idle_after,
                 "cluster: seconds to wait after the workloads before --idle-seconds starts "
                 "(35 leaves out the timeouts of the load's requests)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--redis-server", s.target.redis_server,
                 "redis: the redis-server to start (default: the one on PATH; without one the "
                 "redis target is skipped)");
  app.add_flag("--single-node", s.target.single_node,
               "remote: start kvmeshd as a single node (no cluster port) rather than a one-node "
               "cluster; only a single node serves plain gets on the gateway's thread");
  app.add_flag("--tls", s.target.tls,
               "remote and cluster: start the nodes with TLS (certificates made in --dir)");
  app.add_flag("--json", s.json, "print JSON instead of tables");
  app.add_option("--json-file", s.json_file, "also write the JSON to this file");
  app.add_flag("--quiet", s.quiet, "no progress line");
  app.add_flag("--thread-cpu", s.thread_cpu,
               "print the node's CPU by thread under the table (cores, the busiest thread, us per "
               "op); always in --json");
  app.add_option("--compare-a", compare_a,
                 "compare: command line of run A (a kvmesh-bench with its flags)");
  app.add_option("--compare-b", compare_b, "compare: command line of run B");
  app.add_option("--rounds", rounds, "compare: rounds of A and B")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ParseSyncMode(sync, &s.target.sync);  // CLI11 checked it
  s.target.sync_period = std::chrono::milliseconds(sync_period_ms);

  if (!compare_a.empty() || !compare_b.empty()) {
    if (compare_a.empty() || compare_b.empty()) {
      std::fprintf(stderr, "--compare-a and --compare-b go together\n");
      return 2;
    }
    return Compare(compare_a, compare_b, rounds, s.json);
  }
  for (const std::string& w : s.workloads) {
    if (w != "put" && w != "get" && w != "list" && w != "mixed" && w != "batch" &&
        !NeedsKvmeshApi(w)) {
      std::fprintf(stderr,
                   "unknown workload \"%s\" (put, get, quorum-get, list, mixed, batch, put-ttl, "
                   "cas-put, watch)\n",
                   w.c_str());
      return 2;
    }
  }
  for (const std::string& t : s.targets) {
    const std::string known = std::string(", ") + kTargetNames + ",";
    if (known.find(", " + t + ",") == std::string::npos) {
      std::fprintf(stderr, "unknown target \"%s\" (%s)\n", t.c_str(), kTargetNames);
      return 2;
    }
  }
  if (s.target.kvmeshd.empty()) {
    s.target.kvmeshd = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "kvmeshd");
  }
  const KeySpace space{s.databases,
                       (std::max(s.keys, s.databases) + s.databases - 1) / s.databases};
  // Two runs given one scratch dir would wipe each other's data and nodes mid-run (seen: a
  // node's "000008.log: No such file or directory"): a run holds a lock beside the dir (the
  // dir itself is wiped) until it exits.
  const std::string lock_path = s.dir + ".lock";
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(stderr,
                 "--dir %s is in use by another kvmesh-bench (it holds %s): give each run its "
                 "own --dir\n",
                 s.dir.c_str(), lock_path.c_str());
    return 2;
  }
  // The scratch dir is wiped: only one this tool made (it holds the marker) or an empty one.
  const std::filesystem::path marker = std::filesystem::path(s.dir) / ".kvmesh-bench";
  std::error_code ec;
  if (std::filesystem::exists(s.dir) && !std::filesystem::is_empty(s.dir, ec) &&
      !std::filesystem::exists(marker)) {
    std::fprintf(stderr,
                 "refusing to wipe --dir %s: it is not empty and was not made by kvmesh-bench\n",
                 s.dir.c_str());
    return 2;
  }
  std::filesystem::remove_all(s.dir);
  std::filesystem::create_directories(s.dir);
  std::ofstream(marker) << "kvmesh-bench scratch directory: wiped by every run\n";

  std::vector<Outcome> results;
  std::vector<Instantiation> instantiations;
  std::vector<Extra> extras;
  const int max_connections = *std::max_element(s.connections.begin(), s.connections.end());
  int exit_code = 0;
  for (const std::string& name : s.targets) {
    // Redis is a peer to compare with, not part of kvmesh: a machine without it still measures
    // everything else.
    if (name == "redis" && RedisServerPath(s.target).empty()) {
      std::fprintf(stderr,
                   "redis: skipped: redis-server is not installed (not on PATH; apt install "
                   "redis-server, or --redis-server PATH)\n");
      continue;
    }
    Prepared p;
    kvmesh::Status st = MakeTarget(name, s, &p.target);
    // Sessions first (one per connection), then the databases: instantiation is timed on the
    // first session, the others only attach.
    for (int c = 0; st.ok() && c < max_connections; ++c) {
      p.sessions.emplace_back();
      st = p.target->NewSession(&p.sessions.back());
    }
    const auto paths = DatabasePaths(s.databases);
    if (st.ok()) {
      Instantiation inst{p.target->name(), s.databases};
      inst.rss_before_mb = MiB(SampleProcess(p.target->node_pid()).rss_bytes);
      const auto t0 = Clock::now();
      st = p.sessions[0]->Open(paths);
      inst.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      inst.rss_after_mb = MiB(SampleProcess(p.target->node_pid()).rss_bytes);
      if (s.databases > 1 && name != "rocksdb") instantiations.push_back(inst);
    }
    for (size_t c = 1; st.ok() && c < p.sessions.size(); ++c) st = p.sessions[c]->Open(paths);
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), st.ToString().c_str());
      exit_code = 3;
      continue;
    }
    for (size_t value_size : s.value_sizes) {
      for (const std::string& workload : s.workloads) {
        if (!p.target->supports(workload)) {
          std::fprintf(stderr, "%s: skipped %s: the target has no such operation\n", name.c_str(),
                       workload.c_str());
          continue;
        }
        const bool reads = workload == "get" || workload == "quorum-get" || workload == "list" ||
                           workload == "mixed";
        if (reads && p.loaded_value_size != value_size) {
          Outcome load = Run(p, s, "load", value_size, 1, 16, space);
          if (!s.quiet) {
            std::fprintf(stderr, "%s: loaded %llu keys of %zu B in %.2f s\n", name.c_str(),
                         static_cast<unsigned long long>(load.keys), value_size, load.seconds);
          }
          if (load.keys < space.total()) {
            // Run printed the load's errors; the reads below fail on the keys it missed.
            std::fprintf(stderr,
                         "%s: the load wrote only %llu of %llu keys: reads of the others fail\n",
                         name.c_str(), static_cast<unsigned long long>(load.keys),
                         static_cast<unsigned long long>(space.total()));
            exit_code = 1;
          }
          p.loaded_value_size = value_size;
        }
        for (int connections : s.connections) {
          for (int inflight : s.inflight) {
            if (p.target->synchronous() && inflight != s.inflight.front()) continue;
            Outcome r = Run(p, s, workload, value_size, connections,
                            p.target->synchronous() ? 1 : inflight, space);
            if (r.failures > 0) exit_code = 1;
            results.push_back(r);
          }
        }
        // A put run leaves keys of this value size behind, but not necessarily all of them.
        if (workload == "put" || workload == "batch" || workload == "put-ttl") {
          p.loaded_value_size = 0;
        }
      }
    }
    kvmesh::Status extra = kvmesh::Status::OK();
    if (name == "cluster" || name == "cluster-tls") extra = MeasureIdle(*p.target, s, &extras);
    if (extra.ok()) extra = MeasureLag(*p.target, s, &extras);
    if (extra.ok() && (name == "cluster" || name == "cluster-tls")) {
      extra = MeasureCatchUp(*p.target, s, &extras);
    }
    if (!extra.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), extra.ToString().c_str());
      exit_code = 3;
    }
  }

  {
    Json out;
    out["machine"] = MachineDescription();
    out["sync"] = DescribeSync(s.target.sync, s.target.sync_period);
    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    out["command"] = command;
    out["results"] = Json::array();
    for (const Outcome& r : results) out["results"].push_back(ToJson(r, results));
    out["instantiation"] = Json::array();
    for (const Instantiation& i : instantiations) {
      out["instantiation"].push_back({{"target", i.target},
                                      {"databases", i.databases},
                                      {"seconds", i.seconds},
                                      {"rss_before_mib", i.rss_before_mb},
                                      {"rss_after_mib", i.rss_after_mb}});
    }
    out["extras"] = Json::array();
    for (const Extra& e : extras) {
      out["extras"].push_back({{"target", e.target}, {"what", e.what}, {"figures", e.figures}});
    }
    if (s.json) std::cout << out.dump(2) << "\n";
    if (!s.json_file.empty()) std::ofstream(s.json_file) << out.dump(2) << "\n";
  }
  if (!s.json) {
    std::printf("machine: %s; sync %s\n", MachineDescription().c_str(),
                DescribeSync(s.target.sync, s.target.sync_period).c_str());
    PrintTable(results, instantiations, extras, s.thread_cpu);
  }
  std::filesystem::remove_all(s.dir);
  return exit_code;
}
