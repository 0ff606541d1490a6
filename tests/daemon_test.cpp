// kvmeshd as a real process: start-up, signals, crashes, a silent node, hot reload. (Clusters of
// kvmeshd processes are in process_cluster_test.cpp.)
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include <caf/abstract_actor.hpp>
#include <caf/binary_serializer.hpp>

#include "kvmesh/client.hpp"
#include "process_util.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::DaemonProcess;
using kvmesh::testing::Eventually;

class DaemonTest : public kvmesh::testing::ProcessTest {
 protected:
  std::vector<std::string> Args(int port = 0) {
    return {"--data-dir",    dir_ / "data", "--config-dir",
            dir_ / "config", "--port",      std::to_string(port)};
  }

  void StartDaemon(DaemonProcess* d, int port = 0) {
    ASSERT_TRUE(d->Start(KVMESHD_PATH, Args(port))) << d->output();
  }

  /// Starts kvmeshd into `*d` on `port` (the data of an earlier run) and expects every key of
  /// `acknowledged` in the database at `path`, with the value "value-of" + key; `*db` is that
  /// database.
  void RestartAndExpectAcknowledged(DaemonProcess* d, int port, const std::string& path,
                                    const std::vector<std::string>& acknowledged,
                                    client::Database* db) {
    StartDaemon(d, port);
    if (HasFatalFailure()) return;
    *db = client::connect(d->address()).open(path);
    ASSERT_TRUE(db->ok()) << db->status();
    for (const std::string& key : acknowledged) {
      auto value = db->get(key);
      ASSERT_TRUE(value.ok()) << key << ": " << value.status();
      ASSERT_EQ(*value, "value-of" + key);
    }
  }
};

TEST_F(DaemonTest, StartsReportsAndStopsCleanly) {
  DaemonProcess d;
  StartDaemon(&d);
  EXPECT_NE(d.output().find("listening on 127.0.0.1:"), std::string::npos) << d.output();
  EXPECT_NE(d.output().find("with 2 database configs"), std::string::npos) << d.output();
  auto db = client::connect(d.address()).open("/example/kv");
  ASSERT_TRUE(db.put("/k", "v").ok());
  d.Kill(SIGTERM);
  EXPECT_EQ(d.Wait(), 0);
  // Everything written before the clean stop is there after a restart.
  DaemonProcess again;
  StartDaemon(&again);
  auto value = client::connect(again.address()).open("/example/kv").get("/k");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "v");
}

TEST_F(DaemonTest, InvalidConfigDirectoryFailsStartupWithTheErrors) {
  dir_.Write("config/bad.yaml", "matcher: /x\nreplication: {min: 3, max: 1}\nsize: 1MB\n");
  DaemonProcess d;
  EXPECT_FALSE(d.Start(KVMESHD_PATH, Args()));
  EXPECT_EQ(d.Wait(), 1);
  EXPECT_NE(d.output().find("bad.yaml:2"), std::string::npos) << d.output();
  EXPECT_NE(d.output().find("replication.max"), std::string::npos) << d.output();
}

TEST_F(DaemonTest, NodeSettingsFileIsReadAndCheckedStrictly) {
  std::string file = dir_.Write(
      "node.yaml", "name: alpha\nport: 0\ndata_dir: " + (dir_ / "d2") +
                       "\nconfig_dir: " + (dir_ / "config") +
                       "\ncluster_port: 0\nseeds: [\"127.0.0.1:1\"]\nfailure_timeout_ms: 500\n"
                       "max_connections: 500\nmax_connections_per_address: 1\n");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(KVMESHD_PATH, {"--config", file})) << d.output();
  EXPECT_NE(d.output().find("kvmeshd alpha"), std::string::npos) << d.output();
  EXPECT_GT(d.cluster_port(), 0) << "cluster_port from the file: " << d.output();
  {
    // max_connections_per_address from the file: a second connection is closed at once.
    const int held = kvmesh::testing::Connect(d.port());
    const int extra = kvmesh::testing::Connect(d.port());
    EXPECT_TRUE(kvmesh::testing::WaitClosedByPeer(extra, 2s));
    ::close(extra);
    ::close(held);
  }
  d.Kill(SIGTERM);
  EXPECT_EQ(d.Wait(), 0);

  std::string bad = dir_.Write("bad-node.yaml", "name: beta\nprot: 7000\n");
  DaemonProcess b;
  EXPECT_FALSE(b.Start(KVMESHD_PATH, {"--config", bad}));
  EXPECT_EQ(b.Wait(), 2);
  EXPECT_NE(b.output().find("bad-node.yaml:2: prot: unknown setting"), std::string::npos)
      << b.output();

  std::string bad_size = dir_.Write("bad-size.yaml", "low_space: 100 parsecs\n");
  DaemonProcess e;
  EXPECT_FALSE(e.Start(KVMESHD_PATH, {"--config", bad_size}));
  EXPECT_EQ(e.Wait(), 2);
  EXPECT_NE(e.output().find("bad-size.yaml:1: low_space: "), std::string::npos) << e.output();

  std::string bad_seed = dir_.Write("bad-seed.yaml", "cluster_port: 0\nseeds: [nowhere]\n");
  DaemonProcess c;
  EXPECT_FALSE(c.Start(KVMESHD_PATH, {"--config", bad_seed}));
  EXPECT_EQ(c.Wait(), 2);
  EXPECT_NE(c.output().find("bad-seed.yaml:2: seeds: each seed is a host:port address"),
            std::string::npos)
      << c.output();
}

TEST_F(DaemonTest, SigkillMidLoadLosesNoAcknowledgedWrite) {
  DaemonProcess d;
  StartDaemon(&d);
  const int port = d.port();
  auto db = client::connect(d.address()).open("/data/load");
  ASSERT_TRUE(db.ok()) << db.status();
  // Writes with 32 in flight; the node is killed once 2000 are acknowledged.
  std::vector<std::string> acknowledged;
  std::vector<std::pair<std::string, std::future<Status>>> in_flight;
  int next = 0;
  bool killed = false;
  while (!killed || !in_flight.empty()) {
    while (!killed && in_flight.size() < 32) {
      std::string key = "/k/" + std::to_string(next++);
      in_flight.emplace_back(key, db.put_async(key, "value-of" + key));
    }
    auto [key, future] = std::move(in_flight.front());
    in_flight.erase(in_flight.begin());
    if (future.get().ok()) acknowledged.push_back(key);
    if (!killed && acknowledged.size() >= 2000) {
      d.Kill(SIGKILL);
      killed = true;
    }
  }
  ASSERT_GE(acknowledged.size(), 2000u);

  DaemonProcess restarted;
  client::Database after;
  RestartAndExpectAcknowledged(&restarted, port, "/data/load", acknowledged, &after);
  if (HasFatalFailure()) return;
  // The size accounting survived the crash with the data: the key count and the used bytes
  // (key plus value bytes of every key there, acknowledged or not) match what is stored.
  auto keys = after.list("/k");
  ASSERT_TRUE(keys.ok());
  uint64_t stored_bytes = 0;
  for (const std::string& key : *keys) stored_bytes += key.size() + ("value-of" + key).size();
  auto stats = after.stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->key_count, keys->size());
  EXPECT_EQ(stats->used_bytes, stored_bytes);
}

// SIGTERM and SIGINT: the node stops taking requests, fails those in flight promptly with a
// clear error (not at their timeout), exits 0 and keeps every acknowledged write.
TEST_F(DaemonTest, SigtermAndSigintFailRequestsInFlightPromptlyAndLoseNoAcknowledgedWrite) {
  for (int signal : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(signal == SIGTERM ? "SIGTERM" : "SIGINT");
    DaemonProcess d;
    StartDaemon(&d);
    const int port = d.port();
    client::ClientOptions options;
    options.request_timeout = 60s;  // far beyond "promptly"
    auto db = client::connect(d.address(), options).open("/data/stop");
    ASSERT_TRUE(db.ok()) << db.status();
    // Writes with 32 in flight; the signal comes once 300 are acknowledged, and writes go on
    // until one fails (the node stopped taking them) or 5 s have passed.
    std::vector<std::string> acknowledged;
    std::deque<std::pair<std::string, std::future<Status>>> in_flight;
    std::chrono::steady_clock::time_point signalled{};
    Status failure;
    for (int next = 0; failure.ok(); ++next) {
      if (signalled != std::chrono::steady_clock::time_point{} &&
          std::chrono::steady_clock::now() - signalled > 5s) {
        break;
      }
      const std::string key = "/k/" + std::to_string(next);
      in_flight.emplace_back(key, db.put_async(key, "value-of" + key));
      if (in_flight.size() < 32) continue;
      auto [done_key, future] = std::move(in_flight.front());
      in_flight.pop_front();
      Status s = future.get();
      if (s.ok()) acknowledged.push_back(done_key);
      if (!s.ok()) failure = s;
      if (acknowledged.size() == 300 && signalled == std::chrono::steady_clock::time_point{}) {
        d.Kill(signal);
        signalled = std::chrono::steady_clock::now();
      }
    }
    ASSERT_NE(signalled, std::chrono::steady_clock::time_point{}) << failure;
    EXPECT_FALSE(failure.ok()) << "writes were still taken 5 s after the signal";
    for (auto& [key, future] : in_flight) {
      ASSERT_EQ(future.wait_for(5s), std::future_status::ready) << key << " still in flight";
      Status s = future.get();
      if (s.ok()) acknowledged.push_back(key);
      if (!s.ok()) failure = s;
    }
    EXPECT_LT(std::chrono::steady_clock::now() - signalled, 8s);
    EXPECT_EQ(failure.code(), Code::kUnavailable) << failure;
    // The message depends on where the request was when the node stopped ("lost the connection
    // to kvmesh node ...", or "the actor serving the request is gone ..."); it must say something.
    EXPECT_FALSE(failure.message().empty()) << failure;
    EXPECT_EQ(d.Wait(), 0);

    DaemonProcess restarted;
    client::Database after;
    RestartAndExpectAcknowledged(&restarted, port, "/data/stop", acknowledged, &after);
    if (HasFatalFailure()) return;
    restarted.Kill(SIGTERM);
    EXPECT_EQ(restarted.Wait(), 0);
  }
}

TEST_F(DaemonTest, RequestsToAStoppedNodeFailPromptlyNotAtTheirTimeout) {
  DaemonProcess d;
  StartDaemon(&d);
  client::ClientOptions options;
  options.request_timeout = 120s;
  options.peer_timeout = 1s;
  auto db = client::connect(d.address(), options).open("/example/kv");
  ASSERT_TRUE(db.put("/k", "v").ok());
  d.Kill(SIGSTOP);
  const auto start = std::chrono::steady_clock::now();
  auto pending = db.get_async("/k");
  auto result = pending.get();
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(result.status().code(), Code::kUnavailable) << result.status();
  EXPECT_LT(waited, 30s) << "the request waited for its timeout instead of the lost connection";
  d.Kill(SIGCONT);
  // The node recovers and the same handle reconnects.
  Result<std::string> again = Status::Unavailable("not tried");
  Eventually(30s, [&] {
    again = db.get("/k");
    return again.ok();
  });
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "v");
}

// Issue 13: a write that timed out at its client is never applied later. The node is stopped with
// the write queued (in its socket buffer), the client times out, the node resumes: the write is
// past its deadline and refused unapplied, so a read sent after it still sees the value before it.
TEST_F(DaemonTest, AWriteThatTimedOutIsNotAppliedWhenTheStoppedNodeResumes) {
  DaemonProcess d;
  StartDaemon(&d);
  client::ClientOptions options;
  options.request_timeout = 300ms;
  options.peer_timeout = 30s;  // the stop must not cost the connection
  auto db = client::connect(d.address(), options).open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "before").ok());
  d.Kill(SIGSTOP);
  Status late = db.put("/k", "late");
  EXPECT_EQ(late.code(), Code::kTimeout) << late;
  d.Kill(SIGCONT);
  // Sent after the late put on the same connection, so the node handles it after that put.
  Result<std::string> value = Status::Unavailable("not tried");
  Eventually(30s, [&] {
    value = db.get("/k");
    return value.ok();
  });
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "before") << "the timed-out write was applied after its deadline";
}

// Reloads (SIGHUP and `kvmesh config reload`) while writes are in flight fail none of them,
// also when each reload changes the size budget of the database being written.
TEST_F(DaemonTest, ReloadsWhileWritesAreInFlightFailNoWrite) {
  DaemonProcess d;
  StartDaemon(&d);
  auto db = client::connect(d.address()).open("/data/busy");
  ASSERT_TRUE(db.ok()) << db.status();
  std::atomic<bool> done{false};
  std::vector<std::pair<std::string, Status>> failed;
  int written = 0;
  std::thread writer([&] {
    std::deque<std::pair<std::string, std::future<Status>>> in_flight;
    for (int i = 0; i < 20000 && !done; ++i) {  // the reloads end it long before
      const std::string key = "/k/" + std::to_string(i);
      in_flight.emplace_back(key, db.put_async(key, "v"));
      written = i + 1;
      if (in_flight.size() < 32) continue;
      Status s = in_flight.front().second.get();
      if (!s.ok()) failed.emplace_back(in_flight.front().first, s);
      in_flight.pop_front();
    }
    for (auto& [key, future] : in_flight) {
      Status s = future.get();
      if (!s.ok()) failed.emplace_back(key, s);
    }
  });
  for (int reload = 0; reload < 12; ++reload) {
    dir_.Write("config/more.yaml",
               "- matcher: /data/*\n  size: " + std::to_string(10 + reload) + "MB\n");
    if (reload % 2 == 0) {
      d.Kill(SIGHUP);
    } else {
      auto cli = kvmesh::testing::RunCommand(
          KVMESH_CLI_PATH, {"--node", d.address(), "config", "reload"}, "", dir_.path());
      EXPECT_EQ(cli.exit_code, 0) << cli.err;
    }
    std::this_thread::sleep_for(50ms);  // pacing only: the writes keep flowing meanwhile
  }
  done = true;
  writer.join();
  EXPECT_GT(written, 100);
  EXPECT_TRUE(failed.empty()) << failed.size() << " of " << written << " writes failed, first "
                              << failed.front().first << ": " << failed.front().second;
  // The last reload is in force (a SIGHUP reload is asynchronous: wait for it).
  EXPECT_TRUE(
      Eventually(10s, [&] { return db.stats().ok() && db.stats()->limit_bytes == 21000000u; }));
  auto stats = db.stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->key_count, static_cast<uint64_t>(written));
}

TEST_F(DaemonTest, SighupReloadsConfigs) {
  DaemonProcess d;
  StartDaemon(&d);
  auto client = client::connect(d.address());
  EXPECT_EQ(client.open("/late/db").status().code(), Code::kNoMatchingConfig);
  dir_.Write("config/late.yaml", "matcher: /late/db\nsize: 1MB\n");
  d.Kill(SIGHUP);
  // The reload happens asynchronously: wait for it with a deadline.
  client::Database late;
  Eventually(30s, [&] {
    late = client.open("/late/db");
    return late.status().code() != Code::kNoMatchingConfig;
  });
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(late.put("/k", "v").ok());
}

// A reload that lowers a running database's size below what it holds: writes that would grow
// it are refused with size_limit_exceeded, writes that shrink it are accepted (a lowered limit
// never traps data).
TEST_F(DaemonTest, ReloadShrinkingARunningDatabaseRefusesGrowthAndAcceptsShrinking) {
  DaemonProcess d;
  StartDaemon(&d);
  auto client = client::connect(d.address());
  auto db = client.open("/data/shrunk");
  ASSERT_TRUE(db.ok()) << db.status();
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(db.put("/k" + std::to_string(i), std::string(500, 'x')).ok());
  ASSERT_EQ(db.stats()->used_bytes, 4u * (3 + 500));

  dir_.Write("config/more.yaml", "- matcher: /data/*\n  size: 1KB\n");
  auto summary = client.reload_configs();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(db.stats()->limit_bytes, 1000u);
  Status grow = db.put("/new", "x");
  EXPECT_EQ(grow.code(), Code::kSizeLimitExceeded) << grow;
  grow = db.put("/k0", std::string(501, 'x'));
  EXPECT_EQ(grow.code(), Code::kSizeLimitExceeded) << grow;
  EXPECT_TRUE(db.put("/k0", std::string(100, 'y')).ok());
  EXPECT_TRUE(db.erase("/k1").ok());
  EXPECT_TRUE(db.put("/k2", std::string(500, 'z')).ok()) << "an overwrite of equal size";
  auto stats = db.stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->used_bytes, (3 + 100) + 2u * (3 + 500));
  EXPECT_EQ(db.get("/k0").value(), std::string(100, 'y'));
}

// A reload that removes a running database's config stops it and keeps its data; when the
// config comes back, the database serves that data again.
TEST_F(DaemonTest, ReloadRemovingARunningDatabasesConfigStopsItAndKeepsItsData) {
  dir_.Write("config/late.yaml", "matcher: /late/db\nsize: 1MB\n");
  DaemonProcess d;
  StartDaemon(&d);
  auto client = client::connect(d.address());
  auto db = client.open("/late/db");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/kept", "data").ok());

  std::filesystem::remove(dir_ / "config/late.yaml");
  ASSERT_TRUE(client.reload_configs().ok());
  EXPECT_EQ(db.get("/kept").status().code(), Code::kNoMatchingConfig);
  Status refused = db.put("/more", "x");
  EXPECT_EQ(refused.code(), Code::kNoMatchingConfig) << refused;
  EXPECT_EQ(client.open("/late/db").status().code(), Code::kNoMatchingConfig);

  dir_.Write("config/late.yaml", "matcher: /late/db\nsize: 1MB\n");
  ASSERT_TRUE(client.reload_configs().ok());
  auto again = client.open("/late/db");
  ASSERT_TRUE(again.ok()) << again.status();
  auto kept = again.get("/kept");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(*kept, "data");
  EXPECT_TRUE(again.get("/more").IsNotFound());
  EXPECT_EQ(again.stats()->key_count, 1u);
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

TEST_F(DaemonTest, AdvertisedClusterAddressIsWhatMembersSee) {
  DaemonProcess d;
  std::vector<std::string> args = Args();
  args.insert(args.end(), {"--cluster-port", "0", "--cluster-advertise", "127.0.0.1:1234"});
  ASSERT_TRUE(d.Start(KVMESHD_PATH, args)) << d.output();
  EXPECT_NE(d.output().find("(advertised as 127.0.0.1:1234)"), std::string::npos) << d.output();
  auto members = client::connect(d.address()).members();
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ((*members)[0].cluster_address, "127.0.0.1:1234");
  d.Kill(SIGTERM);
  EXPECT_EQ(d.Wait(), 0);

  DaemonProcess bad;
  args = Args();
  args.insert(args.end(), {"--cluster-port", "0", "--cluster-advertise", "127.0.0.1"});
  EXPECT_FALSE(bad.Start(KVMESHD_PATH, args));
  EXPECT_EQ(bad.Wait(), 1);
  EXPECT_NE(bad.output().find("cluster_advertise: bad address \"127.0.0.1\""), std::string::npos)
      << bad.output();
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

TEST_F(DaemonTest, WorkerThreadsCanBeSetAndAreChecked) {
  DaemonProcess one;
  std::vector<std::string> args = Args();
  args.insert(args.end(), {"--worker-threads", "1"});
  ASSERT_TRUE(one.Start(KVMESHD_PATH, args)) << one.output();
  auto db = client::connect(one.address()).open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "v").ok());
  EXPECT_EQ(db.get("/k").value(), "v");
  one.Kill(SIGTERM);
  EXPECT_EQ(one.Wait(), 0);

  DaemonProcess bad;
  args = Args();
  args.insert(args.end(), {"--worker-threads", "1000"});
  EXPECT_FALSE(bad.Start(KVMESHD_PATH, args));
  EXPECT_NE(bad.Wait(), 0);
  EXPECT_NE(bad.output().find("--worker-threads"), std::string::npos) << bad.output();
}

// README "Durability": what each sync mode does with the write-ahead log. The node runs under
// strace, which logs the fsync/fdatasync calls of all its threads; a test counts them around a
// workload.
class SyncModeTest : public DaemonTest {
 protected:
  struct Traced {
    /// Successful sync calls of the node's whole life, start-up and shutdown included.
    int syncs = -1;
    /// From before the node started to after it stopped.
    std::chrono::milliseconds lifetime{0};
  };

  /// Runs kvmeshd with `flags` (and a data dir of its own, `name`) under strace, calls `work`
  /// with a handle on /example/kv, then stops the node and counts its syncs.
  Traced Run(const std::string& name, const std::vector<std::string>& flags,
             const std::function<void(client::Database&)>& work) {
    Traced result;
    const std::string strace = "/usr/bin/strace";
    const std::string trace = dir_ / ("syncs-" + name);
    std::vector<std::string> args = {"-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", trace};
    args.insert(args.end(), {KVMESHD_PATH, "--data-dir", dir_ / ("data-" + name), "--config-dir",
                             dir_ / "config", "--port", "0"});
    args.insert(args.end(), flags.begin(), flags.end());
    const auto started = std::chrono::steady_clock::now();
    DaemonProcess d;
    if (!d.Start(strace, args)) {
      ADD_FAILURE() << d.output();
      return result;
    }
    auto db = client::connect(d.address()).open("/example/kv");
    EXPECT_TRUE(db.ok()) << db.status();
    if (db.ok()) work(db);
    // kvmeshd is strace's child: stop it, and strace ends with it.
    std::ifstream children("/proc/" + std::to_string(d.pid()) + "/task/" + std::to_string(d.pid()) +
                           "/children");
    pid_t kvmeshd = 0;
    children >> kvmeshd;
    EXPECT_GT(kvmeshd, 0) << "no kvmeshd under strace";
    if (kvmeshd > 0) ::kill(kvmeshd, SIGTERM);
    EXPECT_EQ(d.Wait(), 0) << d.output();
    result.lifetime = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    std::ifstream in(trace);
    result.syncs = 0;
    for (std::string line; std::getline(in, line);) {
      result.syncs +=
          line.find("sync(") != std::string::npos && line.find("= 0") != std::string::npos;
    }
    return result;
  }

  void SetUp() override {
    if (!std::filesystem::exists("/usr/bin/strace")) GTEST_SKIP() << "needs /usr/bin/strace";
  }
};

/// `count` puts, one after another, each acknowledged before the next is sent.
std::function<void(client::Database&)> SequentialPuts(int count) {
  return [count](client::Database& db) {
    for (int i = 0; i < count; ++i) {
      Status s = db.put("/k" + std::to_string(i), "v");
      EXPECT_TRUE(s.ok()) << s;
    }
  };
}

// always: a write is durable before it is acknowledged, so writes acknowledged one after another
// each need a sync of their own. none: only RocksDB's own syncs (start, shutdown).
TEST_F(SyncModeTest, AlwaysSyncsEveryWriteBeforeItIsAcknowledged) {
  constexpr int kWrites = 50;
  const Traced none = Run("none", {"--sync", "none"}, SequentialPuts(kWrites));
  const Traced always = Run("always", {"--sync", "always"}, SequentialPuts(kWrites));
  EXPECT_GE(always.syncs - none.syncs, kWrites)
      << "sync always: " << always.syncs << " syncs, none: " << none.syncs;
  EXPECT_LT(none.syncs, kWrites / 2) << "sync none: " << none.syncs << " syncs";
}

// periodic: while writes come, the log is synced about once a period, never more often, and
// not once per write. The bounds hold on a slow machine: the upper one counts periods of the
// node's whole life, the lower one asks for a fraction of the periods of a second of writing.
TEST_F(SyncModeTest, PeriodicSyncsEveryPeriodWhileWriting) {
  constexpr int kPeriodMs = 50;
  const Traced none = Run("none", {"--sync", "none"}, SequentialPuts(10));
  int writes = 0;
  const Traced periodic =
      Run("periodic", {"--sync", "periodic", "--sync-period-ms", std::to_string(kPeriodMs)},
          [&](client::Database& db) {
            const auto until = std::chrono::steady_clock::now() + 1s;
            while (std::chrono::steady_clock::now() < until && writes < 1000000) {
              Status s = db.put("/k" + std::to_string(writes++), "v");
              EXPECT_TRUE(s.ok()) << s;
            }
          });
  const int made = periodic.syncs - none.syncs;
  const int periods = static_cast<int>(periodic.lifetime.count() / kPeriodMs);
  EXPECT_GE(made, 1000 / kPeriodMs / 4)
      << periodic.syncs << " syncs (none: " << none.syncs << ") in 1 s of writing";
  EXPECT_LE(made, periods + 2) << periodic.syncs << " syncs (none: " << none.syncs << ") in "
                               << periodic.lifetime.count() << " ms";
  EXPECT_LT(made, writes / 2) << writes << " writes, " << made << " syncs";
}

// The mode is a flag and a node.yaml setting (true and false of older versions still mean
// always and none), shown at start and in members; bad values are refused with the reason.
TEST_F(DaemonTest, SyncModeIsSetShownAndChecked) {
  auto expect_mode = [&](const std::vector<std::string>& extra, const std::string& shown) {
    std::vector<std::string> args = Args();
    args.insert(args.end(), extra.begin(), extra.end());
    DaemonProcess d;
    ASSERT_TRUE(d.Start(KVMESHD_PATH, args)) << d.output();
    EXPECT_NE(d.output().find("(sync " + shown + ")"), std::string::npos) << d.output();
    auto members = client::connect(d.address()).members();
    ASSERT_TRUE(members.ok()) << members.status();
    EXPECT_EQ(members->at(0).sync, shown);
    d.Kill(SIGTERM);
    EXPECT_EQ(d.Wait(), 0);
  };
  expect_mode({}, "periodic 100ms");
  expect_mode({"--sync", "always"}, "always");
  expect_mode({"--sync", "periodic", "--sync-period-ms", "20"}, "periodic 20ms");
  expect_mode({"--config", dir_.Write("old.yaml", "sync: true\n")}, "always");
  expect_mode({"--config", dir_.Write("none.yaml", "sync: none\nsync_period_ms: 5\n")}, "none");
  // The flag wins over the file.
  expect_mode({"--config", dir_.Write("file.yaml", "sync: false\n"), "--sync", "always"}, "always");

  auto expect_refused = [&](const std::vector<std::string>& extra, const std::string& why) {
    std::vector<std::string> args = Args();
    args.insert(args.end(), extra.begin(), extra.end());
    DaemonProcess d;
    EXPECT_FALSE(d.Start(KVMESHD_PATH, args));
    EXPECT_NE(d.Wait(), 0);
    EXPECT_NE(d.output().find(why), std::string::npos) << d.output();
  };
  expect_refused({"--sync", "sometimes"}, "--sync");
  expect_refused({"--sync-period-ms", "0"}, "--sync-period-ms");
  expect_refused({"--config", dir_.Write("bad.yaml", "sync: sometimes\n")},
                 "bad.yaml:1: sync: must be none, periodic or always");
  expect_refused({"--config", dir_.Write("bad-period.yaml", "sync_period_ms: 0\n")},
                 "bad-period.yaml:1: sync_period_ms: must be between 1 and 60000");
}

// Issue 13: rejecting a 100 MiB value used to cost the node 600 MB. A hostile peer that announces
// a 100 MiB message is cut off after the header, before the node allocates anything for it; the
// client library refuses such a value before sending it.
TEST_F(DaemonTest, AnOversizedMessageIsRefusedBeforeTheNodeBuffersIt) {
  DaemonProcess d;
  StartDaemon(&d);
  auto db = client::connect(d.address()).open("/example/kv");
  ASSERT_TRUE(db.put("/warm", "up").ok());
  const long before_kb = kvmesh::testing::StatusKb(d.pid(), "VmRSS");
  ASSERT_GT(before_kb, 0);

  // The first frame of a raw connection announces 100 MiB (transport/client_port.hpp: a u32
  // size of kind and body, little-endian, then the kind); then the payload follows.
  constexpr uint32_t kHundredMiB = 100u << 20;
  std::vector<char> frame(5);
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(((kHundredMiB + 1) >> (8 * i)) & 0xff);
  frame[4] = 1;  // a hello
  const int fd = kvmesh::testing::Connect(d.port());
  ASSERT_GE(fd, 0);
  kvmesh::testing::SendAll(fd, std::string(frame.begin(), frame.end()));
  kvmesh::testing::SendAll(fd, std::string(kHundredMiB, 'x'));  // stops when the node closes
  EXPECT_TRUE(kvmesh::testing::WaitClosedByPeer(fd, 5s));
  ::close(fd);
  EXPECT_TRUE(Eventually(5s, [&] {
    return d.output_now().find("it announced a message of 104857600 B (100 MiB); the maximum is") !=
           std::string::npos;
  })) << d.output_now();

  // The real client refuses such a value itself, with a clear error.
  Status s = db.put("/huge", std::string(kHundredMiB, 'v'));
  EXPECT_EQ(s.code(), Code::kValueTooLarge) << s;
  EXPECT_NE(s.message().find("is 104857600 B (100 MiB); no kvmesh node accepts values over"),
            std::string::npos)
      << s;
  const long after_kb = kvmesh::testing::StatusKb(d.pid(), "VmRSS");
  EXPECT_LT(after_kb - before_kb, 30 * 1024)
      << "RSS went from " << before_kb << " kB to " << after_kb << " kB";
  EXPECT_TRUE(db.put("/still", "serving").ok());
}

// The connection bounds and the handshake deadline hold on the cluster port too, and kvmeshd's
// flags set them.
TEST_F(DaemonTest, ConnectionBoundsApplyToBothPortsAndAreSetByFlags) {
  DaemonProcess d;
  std::vector<std::string> args = Args();
  args.insert(args.end(), {"--cluster-port", "0", "--max-connections-per-address", "2"});
  ASSERT_TRUE(d.Start(KVMESHD_PATH, args)) << d.output();
  ASSERT_GT(d.cluster_port(), 0) << d.output();
  for (int port : {d.port(), d.cluster_port()}) {
    const int a = kvmesh::testing::Connect(port), b = kvmesh::testing::Connect(port);
    const int extra = kvmesh::testing::Connect(port);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    ASSERT_GE(extra, 0);
    EXPECT_TRUE(kvmesh::testing::WaitClosedByPeer(extra, 2s)) << "port " << port;
    // The silent ones go at the handshake deadline (3 s).
    EXPECT_TRUE(kvmesh::testing::WaitClosedByPeer(a, 6s)) << "port " << port;
    EXPECT_TRUE(kvmesh::testing::WaitClosedByPeer(b, 6s)) << "port " << port;
    for (int fd : {a, b, extra}) ::close(fd);
  }
  const std::string out = d.output_now();
  EXPECT_NE(out.find("to the client port " + std::to_string(d.port())), std::string::npos) << out;
  EXPECT_NE(out.find("to the cluster port " + std::to_string(d.cluster_port())), std::string::npos)
      << out;
  EXPECT_NE(out.find("max_connections_per_address is 2"), std::string::npos) << out;
  auto db = client::connect(d.address()).open("/example/kv");
  EXPECT_TRUE(db.put("/k", "v").ok()) << db.status();

  DaemonProcess bad;
  args = Args();
  args.insert(args.end(), {"--max-connections", "0"});
  EXPECT_FALSE(bad.Start(KVMESHD_PATH, args));
  EXPECT_NE(bad.Wait(), 0);
  EXPECT_NE(bad.output().find("--max-connections"), std::string::npos) << bad.output();
}

}  // namespace
}  // namespace kvmesh
