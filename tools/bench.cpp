// kvmesh-bench: measures kvmesh against raw RocksDB with the same options, in one run, so a noisy
// machine still gives a true ratio. Targets: rocksdb (the baseline), embedded (a node in this
// process), remote (a running kvmeshd), cluster (three in-process nodes replicating with min 2).
//
//   kvmesh-bench --ops 200000 --value-size 100 --inflight 1,64 --workloads put,get
#include <rocksdb/db.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <future>
#include <iostream>
#include <mutex>
#include <numeric>
#include <random>

#include "bootstrap/local_cluster.hpp"
#include "bootstrap/node.hpp"
#include "client/client.hpp"
#include "config/config_set.hpp"
#include "storage/rocks_options.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  std::string workload;
  std::string target;
  int inflight = 1;
  uint64_t ops = 0;
  double seconds = 0;
  double p50_us = 0;
  double p99_us = 0;
  double ops_per_second() const { return seconds > 0 ? ops / seconds : 0; }
};

struct Settings {
  uint64_t ops = 100000;
  size_t value_size = 100;
  std::vector<int> inflight = {1, 64};
  std::vector<std::string> workloads = {"put", "get"};
  std::vector<std::string> targets = {"rocksdb", "embedded"};
  std::string dir = "/tmp/kvmesh-bench";
  std::string scheduler_policy = "sharing";
  /// For the remote target: a kvmeshd started with --config-dir tools/bench.
  std::string node = "127.0.0.1:7371";
  /// For the cluster target: writes a crashed node misses before it restarts.
  uint64_t catchup_keys = 100000;
};

std::vector<std::string> MakeKeys(uint64_t n) {
  std::vector<std::string> keys(n);
  char buf[32];
  for (uint64_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof(buf), "/bench/%010llu", static_cast<unsigned long long>(i));
    keys[i] = buf;
  }
  std::shuffle(keys.begin(), keys.end(), std::mt19937_64(42));
  return keys;
}

void Percentiles(std::vector<uint32_t>& ns, Result* r) {
  if (ns.empty()) return;
  std::sort(ns.begin(), ns.end());
  r->p50_us = ns[ns.size() / 2] / 1000.0;
  r->p99_us = ns[std::min(ns.size() - 1, ns.size() * 99 / 100)] / 1000.0;
}

uint32_t Nanos(Clock::time_point since) {
  return static_cast<uint32_t>(std::min<int64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count(),
      UINT32_MAX));
}

// Raw RocksDB, opened with exactly the options a kvmesh store (with default StoreOptions) uses.
std::vector<Result> RunRocksDb(const Settings& s, const std::vector<std::string>& keys,
                               const std::string& value) {
  const kvmesh::storage::StoreOptions store_defaults;
  const rocksdb::WriteOptions write_options = kvmesh::storage::RocksWriteOptions(store_defaults);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status st =
      rocksdb::DB::Open(kvmesh::storage::RocksOptions(store_defaults), s.dir + "/rocksdb", &raw);
  if (!st.ok()) {
    std::cerr << "cannot open raw RocksDB: " << st.ToString() << "\n";
    std::exit(3);
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  std::vector<Result> out;
  for (const std::string& workload : s.workloads) {
    Result r{workload, "rocksdb", 1, keys.size()};
    std::vector<uint32_t> ns;
    ns.reserve(keys.size());
    std::string got;
    auto start = Clock::now();
    for (const std::string& key : keys) {
      auto t0 = Clock::now();
      st = workload == "put" ? db->Put(write_options, key, value)
                             : db->Get(rocksdb::ReadOptions(), key, &got);
      if (!st.ok()) {
        std::cerr << "rocksdb " << workload << " failed: " << st.ToString() << "\n";
        std::exit(3);
      }
      ns.push_back(Nanos(t0));
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    Percentiles(ns, &r);
    out.push_back(r);
  }
  return out;
}

// One workload against an embedded database with `inflight` asynchronous requests outstanding
// (1 = the blocking API).
Result RunEmbeddedOne(kvmesh::Database& db, const std::string& workload, int inflight,
                      const std::vector<std::string>& keys, const std::string& value,
                      const std::string& target = "embedded") {
  Result r{workload, target, inflight, keys.size()};
  std::vector<uint32_t> ns(keys.size());
  std::atomic<uint64_t> failures{0};
  auto start = Clock::now();
  if (inflight <= 1) {
    std::string got;
    for (size_t i = 0; i < keys.size(); ++i) {
      auto t0 = Clock::now();
      kvmesh::Status st = workload == "put" ? db.Put(keys[i], value) : db.Get(keys[i], &got);
      if (!st.ok()) ++failures;
      ns[i] = Nanos(t0);
    }
  } else {
    // Each completion issues the next request and only then counts itself done, so when `done`
    // reaches the total no callback touches this frame any more except through `finished`,
    // which is shared.
    std::atomic<uint64_t> next{0};
    std::atomic<uint64_t> done{0};
    auto finished = std::make_shared<std::promise<void>>();
    auto finished_future = finished->get_future();
    std::function<void()> issue = [&] {
      uint64_t i = next++;
      if (i >= keys.size()) return;
      auto t0 = Clock::now();
      auto complete = [&, i, t0, finished](const kvmesh::Status& st) {
        if (!st.ok()) ++failures;
        ns[i] = Nanos(t0);
        issue();
        if (++done == keys.size()) finished->set_value();
      };
      if (workload == "put") {
        db.PutAsync(keys[i], value, complete);
      } else {
        db.GetAsync(keys[i], [complete](kvmesh::Status st, std::string) { complete(st); });
      }
    };
    for (int w = 0; w < inflight; ++w) issue();
    finished_future.wait();
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (failures > 0) std::cerr << target << " " << workload << ": " << failures << " failures\n";
  Percentiles(ns, &r);
  return r;
}

std::vector<Result> RunEmbedded(const Settings& s, const std::vector<std::string>& keys,
                                const std::string& value) {
  auto configs = std::make_shared<kvmesh::config::ConfigSet>();
  kvmesh::Status st = kvmesh::config::ConfigSet::LoadString("matcher: /bench/*\nsize: 1TB\n",
                                                            "bench", configs.get(), nullptr);
  kvmesh::NodeOptions options;
  options.data_dir = s.dir + "/embedded";
  options.configs = configs;
  options.scheduler_policy = s.scheduler_policy;
  std::unique_ptr<kvmesh::Node> node;
  if (st.ok()) st = kvmesh::Node::Start(options, &node);
  if (!st.ok()) {
    std::cerr << "cannot start embedded node: " << st << "\n";
    std::exit(3);
  }
  std::vector<Result> out;
  for (int inflight : s.inflight) {
    // A fresh database per concurrency level, so every put run inserts new keys.
    kvmesh::Database db;
    st = node->Open("/bench/run" + std::to_string(inflight), &db);
    if (!st.ok()) {
      std::cerr << "open: " << st << "\n";
      std::exit(3);
    }
    for (const std::string& workload : s.workloads) {
      out.push_back(RunEmbeddedOne(db, workload, inflight, keys, value));
    }
  }
  return out;
}

// One workload against a remote node: sequential blocking calls, or `inflight` futures
// outstanding on one connection.
Result RunRemoteOne(const kvmesh::client::Database& db, const std::string& workload, int inflight,
                    const std::vector<std::string>& keys, const std::string& value) {
  Result r{workload, "remote", inflight, keys.size()};
  std::vector<uint32_t> ns(keys.size());
  uint64_t failures = 0;
  auto start = Clock::now();
  if (inflight <= 1) {
    for (size_t i = 0; i < keys.size(); ++i) {
      auto t0 = Clock::now();
      bool ok = workload == "put" ? db.put(keys[i], value).ok() : db.get(keys[i]).ok();
      if (!ok) ++failures;
      ns[i] = Nanos(t0);
    }
  } else {
    struct Pending {
      size_t index;
      Clock::time_point started;
      std::future<kvmesh::Status> put;
      std::future<kvmesh::Result<std::string>> get;
    };
    std::deque<Pending> window;
    auto finish_oldest = [&] {
      Pending& p = window.front();
      bool ok = p.put.valid() ? p.put.get().ok() : p.get.get().ok();
      if (!ok) ++failures;
      ns[p.index] = Nanos(p.started);
      window.pop_front();
    };
    for (size_t i = 0; i < keys.size(); ++i) {
      if (window.size() >= static_cast<size_t>(inflight)) finish_oldest();
      Pending p{i, Clock::now(), {}, {}};
      if (workload == "put") {
        p.put = db.put_async(keys[i], value);
      } else {
        p.get = db.get_async(keys[i]);
      }
      window.push_back(std::move(p));
    }
    while (!window.empty()) finish_oldest();
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (failures > 0) std::cerr << "remote " << workload << ": " << failures << " failures\n";
  Percentiles(ns, &r);
  return r;
}

std::vector<Result> RunRemote(const Settings& s, const std::vector<std::string>& keys,
                              const std::string& value) {
  kvmesh::client::ClientOptions options;
  options.scheduler_policy = s.scheduler_policy;
  auto client = kvmesh::client::connect(s.node, options);
  if (!client.ok()) {
    std::cerr << "remote: " << client.status() << " (start kvmeshd --config-dir tools/bench)\n";
    std::exit(3);
  }
  std::vector<Result> out;
  const std::string run =
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int inflight : s.inflight) {
    auto db = client.open("/bench/" + run + "-" + std::to_string(inflight));
    if (!db.ok()) {
      std::cerr << "remote open: " << db.status() << "\n";
      std::exit(3);
    }
    for (const std::string& workload : s.workloads) {
      out.push_back(RunRemoteOne(db, workload, inflight, keys, value));
    }
  }
  return out;
}

/// Microseconds at quantile q of `us` (sorted in place).
double Quantile(std::vector<double>& us, double q) {
  if (us.empty()) return 0;
  std::sort(us.begin(), us.end());
  return us[std::min(us.size() - 1, static_cast<size_t>(q * us.size()))];
}

// A 3-node in-process cluster (LocalCluster: real nodes over loopback). Writes go through node 0
// with the embedded API; the config is /bench/* with replication min 2, max 3, so every write
// waits for one other replica. Also measures replication lag (acknowledgement on node 0 until
// the key is readable on every node) and how long a crashed node takes to catch up on
// `catchup_keys` writes it missed.
std::vector<Result> RunCluster(const Settings& s, const std::vector<std::string>& keys,
                               const std::string& value) {
  auto configs = std::make_shared<kvmesh::config::ConfigSet>();
  kvmesh::Status st = kvmesh::config::ConfigSet::LoadString(
      "matcher: /bench/*\nsize: 1TB\nreplication: {min: 2, max: 3}\n", "bench", configs.get(),
      nullptr);
  kvmesh::LocalClusterOptions options;
  options.nodes = 3;
  options.dir = s.dir + "/cluster";
  options.configs = configs;
  options.node.scheduler_policy = s.scheduler_policy;
  options.node.sync_interval = std::chrono::seconds(1);
  options.node.worker_threads = 0;
  std::unique_ptr<kvmesh::LocalCluster> cluster;
  if (st.ok()) st = kvmesh::LocalCluster::Start(options, &cluster);
  if (!st.ok()) {
    std::cerr << "cannot start the cluster: " << st << "\n";
    std::exit(3);
  }
  std::vector<Result> out;
  for (int inflight : s.inflight) {
    kvmesh::Database db;
    st = cluster->node(0)->Open("/bench/run" + std::to_string(inflight), &db);
    if (!st.ok()) {
      std::cerr << "open: " << st << "\n";
      std::exit(3);
    }
    for (const std::string& workload : s.workloads) {
      out.push_back(RunEmbeddedOne(db, workload, inflight, keys, value, "cluster3"));
    }
  }

  // Replication lag.
  std::vector<kvmesh::Database> dbs(3);
  for (size_t i = 0; i < 3; ++i) cluster->node(i)->Open("/bench/lag", &dbs[i]);
  std::vector<double> lag_us;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "/lag/" + std::to_string(i);
    if (!dbs[0].Put(key, value).ok()) continue;
    const auto acked = Clock::now();
    std::string got;
    for (size_t n = 1; n < 3; ++n) {
      while (!dbs[n].Get(key, &got).ok()) {
        if (Clock::now() - acked > std::chrono::seconds(10)) break;
      }
    }
    lag_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - acked).count());
  }
  const double lag_p50 = Quantile(lag_us, 0.5), lag_p99 = Quantile(lag_us, 0.99);

  // Catch-up of a crashed node.
  kvmesh::Database catchup;
  cluster->node(0)->Open("/bench/catchup", &catchup);
  catchup.Put("/warm", value);
  cluster->WaitForConvergence("/bench/catchup", std::chrono::seconds(30));
  cluster->Crash(2);
  cluster->WaitForMembership(std::chrono::seconds(30));
  for (uint64_t i = 0; i < s.catchup_keys; i += 1000) {
    kvmesh::WriteBatch batch;
    for (uint64_t k = i; k < std::min(s.catchup_keys, i + 1000); ++k) {
      batch.Put("/c/" + std::to_string(k), value);
    }
    st = catchup.Write(batch);
    if (!st.ok()) std::cerr << "catch-up load: " << st << "\n";
  }
  const auto restart = Clock::now();
  st = cluster->Restart(2);
  if (st.ok()) st = cluster->WaitForConvergence("/bench/catchup", std::chrono::minutes(10));
  const double catchup_s = std::chrono::duration<double>(Clock::now() - restart).count();
  kvmesh::ReplicationStatus restarted;
  cluster->ReplicaStatus(2, "/bench/catchup", &restarted);
  std::printf(
      "cluster3: replication lag (ack on node 0 -> readable on all 3), %zu samples: p50 %.0f us, "
      "p99 %.0f us\n",
      lag_us.size(), lag_p50, lag_p99);
  std::printf(
      "cluster3: restarted node caught up on %llu missed keys in %.2f s (%s); it received "
      "%llu records and applied %llu\n",
      static_cast<unsigned long long>(s.catchup_keys), catchup_s,
      st.ok() ? "converged" : st.ToString().c_str(),
      static_cast<unsigned long long>(restarted.entries_received),
      static_cast<unsigned long long>(restarted.entries_applied));
  return out;
}

void Print(const std::vector<Result>& results) {
  std::printf("%-9s %-9s %8s %10s %12s %9s %9s %11s\n", "workload", "target", "inflight", "ops",
              "ops/s", "p50_us", "p99_us", "vs_rocksdb");
  for (const Result& r : results) {
    double base = 0;
    for (const Result& b : results)
      if (b.target == "rocksdb" && b.workload == r.workload) base = b.ops_per_second();
    char ratio[32] = "-";
    if (base > 0 && r.target != "rocksdb") {
      std::snprintf(ratio, sizeof(ratio), "%.2fx", r.ops_per_second() / base);
    }
    std::printf("%-9s %-9s %8d %10llu %12.0f %9.1f %9.1f %11s\n", r.workload.c_str(),
                r.target.c_str(), r.inflight, static_cast<unsigned long long>(r.ops),
                r.ops_per_second(), r.p50_us, r.p99_us, ratio);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"kvmesh-bench: kvmesh throughput and latency next to raw RocksDB"};
  app.add_option("--ops", s.ops, "operations per workload")->capture_default_str();
  app.add_option("--value-size", s.value_size, "value bytes")->capture_default_str();
  app.add_option("--inflight", s.inflight, "requests in flight (embedded), comma separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--workloads", s.workloads, "put,get")->delimiter(',')->capture_default_str();
  app.add_option("--node", s.node, "remote target: kvmeshd address (--config-dir tools/bench)")
      ->capture_default_str();
  app.add_option("--catchup-keys", s.catchup_keys, "cluster target: keys a crashed node misses")
      ->capture_default_str();
  app.add_option("--targets", s.targets, "rocksdb,embedded,remote,cluster")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--dir", s.dir, "scratch directory (wiped first)")->capture_default_str();
  app.add_option("--scheduler", s.scheduler_policy, "CAF scheduler: sharing or stealing")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (std::find(s.workloads.begin(), s.workloads.end(), "put") == s.workloads.end()) {
    s.workloads.insert(s.workloads.begin(), "put");  // get needs the keys loaded
  }
  std::filesystem::remove_all(s.dir);
  std::filesystem::create_directories(s.dir);
  const auto keys = MakeKeys(s.ops);
  const std::string value(s.value_size, 'v');
  std::vector<Result> results;
  for (const std::string& target : s.targets) {
    std::vector<Result> r;
    if (target == "rocksdb") {
      r = RunRocksDb(s, keys, value);
    } else if (target == "embedded") {
      r = RunEmbedded(s, keys, value);
    } else if (target == "remote") {
      r = RunRemote(s, keys, value);
    } else if (target == "cluster") {
      r = RunCluster(s, keys, value);
    } else {
      std::cerr << "unknown target " << target << "\n";
      return 2;
    }
    results.insert(results.end(), r.begin(), r.end());
  }
  Print(results);
  std::filesystem::remove_all(s.dir);
  return 0;
}
