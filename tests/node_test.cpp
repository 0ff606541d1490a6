// The embedded node end to end: the API an application uses.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "kvmesh/node.hpp"
#include "config/config_set.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::TempDir;

constexpr const char* kMoreConfigs = R"(
- id: history
  matcher: /profile/history/[^/]+
  size: 1KB
- id: data
  matcher: /data/*
  size: 10MB
)";

/// Waits, polling with a 10 s deadline, until `node` has no active database (passivation comes
/// one or two idle periods after the last request).
void WaitUntilAllPassivated(Node& node) {
  uint64_t active = 1;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (active != 0 && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(node.ActiveDatabases(&active).ok());
    if (active != 0) std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(active, 0u) << "database still active after 10 s";
}

class NodeTest : public ::testing::Test {
 protected:
  NodeTest() {
    dir_.Write("config/example.yaml", kvmesh::testing::kSeedExampleConfig);
    dir_.Write("config/more.yaml", kMoreConfigs);
  }

  NodeOptions Options() {
    NodeOptions options;
    options.data_dir = dir_ / "data";
    options.config_dir = dir_ / "config";
    return options;
  }

  std::unique_ptr<Node> StartNode(NodeOptions options) {
    std::unique_ptr<Node> node;
    Status s = Node::Start(std::move(options), &node);
    EXPECT_TRUE(s.ok()) << s;
    return node;
  }

  Database Open(Node& node, const std::string& path) {
    Database db;
    Status s = node.Open(path, &db);
    EXPECT_TRUE(s.ok()) << s;
    return db;
  }

  TempDir dir_;
};

TEST_F(NodeTest, SeedExampleDatabaseWorks) {
  auto node = StartNode(Options());
  Database db = Open(*node, "/example/kv");
  EXPECT_EQ(db.path(), "/example/kv");
  const std::string profile("{\"name\":\"a\0b\"}", 14);
  ASSERT_TRUE(db.Put("/users/123/profile", profile).ok());
  ASSERT_TRUE(db.Put("/users/123/sessions/456", "s").ok());
  ASSERT_TRUE(db.Put("/users1", "not under /users").ok());
  std::string value;
  ASSERT_TRUE(db.Get("/users/123/profile", &value).ok());
  EXPECT_EQ(value, profile);
  std::vector<std::string> keys;
  ASSERT_TRUE(db.ListAll("/users/", &keys).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"/users/123/profile", "/users/123/sessions/456"}));
  ASSERT_TRUE(db.Erase("/users/123/profile").ok());
  Status s = db.Get("/users/123/profile", &value);
  EXPECT_TRUE(s.IsNotFound()) << s;
  EXPECT_TRUE(db.Erase("/users/123/profile").ok());
  DatabaseStats stats;
  ASSERT_TRUE(db.Stats(&stats).ok());
  EXPECT_EQ(stats.key_count, 2u);
  EXPECT_EQ(stats.limit_bytes, 100'000'000u);
}

TEST_F(NodeTest, UnknownPathAndBadInputGiveClearErrors) {
  auto node = StartNode(Options());
  Database db;
  Status s = node->Open("/unknown", &db);
  EXPECT_EQ(s.code(), Code::kNoMatchingConfig) << s;
  EXPECT_EQ(s.message(), "no database config matches \"/unknown\"");
  EXPECT_EQ(db.Put("/k", "v").code(), Code::kInvalidArgument);  // never opened

  db = Open(*node, "/data/x");
  EXPECT_EQ(db.Put("/a/../b", "v").code(), Code::kInvalidKey);
  EXPECT_EQ(db.Put("/big", std::string((16u << 20) + 1, 'v')).code(), Code::kValueTooLarge);
}

TEST_F(NodeTest, DatabasesAreCreatedOnFirstAccessAndIsolated) {
  auto node = StartNode(Options());
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(node->ListDatabases(&catalog).ok());
  EXPECT_TRUE(catalog.empty());
  Database alice = Open(*node, "/profile/history/alice");
  Database bob = Open(*node, "/profile/history/bob");
  ASSERT_TRUE(alice.Put("/visits", std::string(900, 'a')).ok());
  ASSERT_TRUE(bob.Put("/visits", std::string(900, 'b')).ok());
  std::string value;
  ASSERT_TRUE(alice.Get("/visits", &value).ok());
  EXPECT_EQ(value, std::string(900, 'a'));
  Status s = alice.Put("/more", std::string(200, 'a'));
  EXPECT_EQ(s.code(), Code::kSizeLimitExceeded) << s;
  ASSERT_TRUE(node->ListDatabases(&catalog).ok());
  ASSERT_EQ(catalog.size(), 2u);
  EXPECT_EQ(catalog[0].path, "/profile/history/alice");
  EXPECT_EQ(catalog[0].config_id, "history");
}

TEST_F(NodeTest, PassivatedDatabasesReactivateTransparently) {
  auto node = StartNode(Options());
  Database db = Open(*node, "/data/p");
  ASSERT_TRUE(db.Put("/k", "v").ok());
  uint64_t active = 0;
  ASSERT_TRUE(node->ActiveDatabases(&active).ok());
  EXPECT_EQ(active, 1u);
  ASSERT_TRUE(node->PassivateAll(nullptr).ok());
  ASSERT_TRUE(node->ActiveDatabases(&active).ok());
  EXPECT_EQ(active, 0u);
  // The old handle still works: its request is re-routed to a re-activated actor.
  std::string value;
  ASSERT_TRUE(db.Get("/k", &value).ok());
  EXPECT_EQ(value, "v");
  ASSERT_TRUE(db.Put("/k2", "v2").ok());
  ASSERT_TRUE(node->ActiveDatabases(&active).ok());
  EXPECT_EQ(active, 1u);
  DatabaseStats stats;
  ASSERT_TRUE(db.Stats(&stats).ok());
  EXPECT_EQ(stats.key_count, 2u);
}

TEST_F(NodeTest, NonUtf8DatabasePathsSurvivePassivationAndRestart) {
  const std::string path("/data/caf\xe9", 10);
  {
    auto node = StartNode(Options());
    Database db = Open(*node, path);
    ASSERT_TRUE(db.Put("/k", "v").ok());
    ASSERT_TRUE(node->PassivateAll(nullptr).ok());
    std::string value;
    Status s = db.Get("/k", &value);
    ASSERT_TRUE(s.ok()) << s;
    std::vector<DatabaseInfo> catalog;
    s = node->ListDatabases(&catalog);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(catalog.size(), 1u);
    EXPECT_EQ(catalog[0].path, path);
  }
  auto node = StartNode(Options());
  std::string value;
  ASSERT_TRUE(Open(*node, path).Get("/k", &value).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(NodeTest, IdleDatabasesPassivateByThemselves) {
  NodeOptions options = Options();
  options.idle_timeout = 20ms;
  auto node = StartNode(options);
  Database db = Open(*node, "/data/idle");
  ASSERT_TRUE(db.Put("/k", "v").ok());
  WaitUntilAllPassivated(*node);
  std::string value;
  ASSERT_TRUE(db.Get("/k", &value).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(NodeTest, ConcurrentClientsGetExactResults) {
  auto node = StartNode(Options());
  Database shared = Open(*node, "/data/shared");
  constexpr int kThreads = 8;
  constexpr int kPerThread = 300;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Database own = Open(*node, "/data/t" + std::to_string(t));
      for (int i = 0; i < kPerThread; ++i) {
        std::string key = "/t" + std::to_string(t) + "/" + std::to_string(i);
        if (!shared.Put(key, "0123456789").ok()) ++failures;
        if (!own.Put(key, "x").ok()) ++failures;
      }
    });
  }
  // Meanwhile, many asynchronous requests in flight from this thread.
  constexpr int kAsync = 2000;
  std::atomic<int> remaining{kAsync};
  std::promise<void> all_done;
  for (int i = 0; i < kAsync; ++i) {
    shared.PutAsync("/async/" + std::to_string(i), "0123456789", [&](Status s) {
      if (!s.ok()) ++failures;
      if (--remaining == 0) all_done.set_value();
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_EQ(all_done.get_future().wait_for(60s), std::future_status::ready);
  EXPECT_EQ(failures.load(), 0);
  DatabaseStats stats;
  ASSERT_TRUE(shared.Stats(&stats).ok());
  EXPECT_EQ(stats.key_count, uint64_t{kThreads * kPerThread + kAsync});
  uint64_t expected_bytes = 0;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kPerThread; ++i)
      expected_bytes += ("/t" + std::to_string(t) + "/" + std::to_string(i)).size() + 10;
  for (int i = 0; i < kAsync; ++i) expected_bytes += ("/async/" + std::to_string(i)).size() + 10;
  EXPECT_EQ(stats.used_bytes, expected_bytes);
}

TEST_F(NodeTest, AsyncRequestsFromOneHandleApplyInOrder) {
  auto node = StartNode(Options());
  Database db = Open(*node, "/data/order");
  for (int round = 0; round < 300; ++round) {
    const std::string key = "/k" + std::to_string(round);
    std::atomic<int> remaining{10};
    std::promise<void> all_done;
    for (int i = 0; i < 10; ++i) {
      db.PutAsync(key, std::to_string(i), [&](Status s) {
        EXPECT_TRUE(s.ok()) << s;
        if (--remaining == 0) all_done.set_value();
      });
    }
    all_done.get_future().wait();
    std::string value;
    ASSERT_TRUE(db.Get(key, &value).ok());
    ASSERT_EQ(value, "9") << "round " << round;
  }
}

TEST_F(NodeTest, RestartKeepsEverything) {
  DatabaseStats before;
  uint64_t node_id = 0;
  {
    auto node = StartNode(Options());
    node_id = node->node_id();
    Database db = Open(*node, "/example/kv");
    WriteBatch batch;
    for (int i = 0; i < 500; ++i) batch.Put("/k/" + std::to_string(i), std::string(i, 'v'));
    ASSERT_TRUE(db.Write(batch).ok());
    ASSERT_TRUE(db.Erase("/k/7").ok());
    ASSERT_TRUE(Open(*node, "/profile/history/zoe").Put("/a", "b").ok());
    ASSERT_TRUE(db.Stats(&before).ok());
  }
  auto node = StartNode(Options());
  EXPECT_EQ(node->node_id(), node_id);
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(node->ListDatabases(&catalog).ok());
  EXPECT_EQ(catalog.size(), 2u);
  Database db = Open(*node, "/example/kv");
  DatabaseStats after;
  ASSERT_TRUE(db.Stats(&after).ok());
  EXPECT_EQ(after.key_count, before.key_count);
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.database_id, before.database_id);
  std::string value;
  ASSERT_TRUE(db.Get("/k/499", &value).ok());
  EXPECT_EQ(value, std::string(499, 'v'));
  EXPECT_TRUE(db.Get("/k/7", &value).IsNotFound());
  ASSERT_TRUE(Open(*node, "/profile/history/zoe").Get("/a", &value).ok());
  EXPECT_EQ(value, "b");
}

TEST_F(NodeTest, HandlesOutlivingTheNodeFailCleanly) {
  Database db;
  {
    auto node = StartNode(Options());
    db = Open(*node, "/example/kv");
    ASSERT_TRUE(db.Put("/k", "v").ok());
  }
  std::string value;
  EXPECT_EQ(db.Get("/k", &value).code(), Code::kUnavailable);
  std::promise<Status> done;
  db.PutAsync("/k", "v", [&](Status s) { done.set_value(s); });
  EXPECT_EQ(done.get_future().get().code(), Code::kUnavailable);
  // The handle does not keep RocksDB open: the data dir can be used again at once.
  auto again = StartNode(Options());
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(Open(*again, "/example/kv").Get("/k", &value).ok());
}

TEST_F(NodeTest, LastOwnerInsideACallbackDoesNotDeadlock) {
  std::shared_ptr<Node> node = StartNode(Options());
  Database db = Open(*node, "/example/kv");
  std::promise<Status> done;
  // The callback owns the node; once the test lets go, it is the last owner, destroyed on a node
  // thread.
  db.PutAsync("/k", "v", [owner = node, &done](Status s) { done.set_value(s); });
  node.reset();
  EXPECT_TRUE(done.get_future().get().ok());
  // The node shuts down on another thread; the data dir becomes free again (bounded wait).
  std::unique_ptr<Node> again;
  Status s = Status::IOError("not tried");
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!s.ok() && std::chrono::steady_clock::now() < deadline) {
    s = Node::Start(Options(), &again);
    if (!s.ok()) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(s.ok()) << s;
  std::string value;
  ASSERT_TRUE(Open(*again, "/example/kv").Get("/k", &value).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(NodeTest, InvalidConfigFailsStartWithItsErrors) {
  dir_.Write("config/broken.yaml", "matcher: /broken\nsize: 10XB\n");
  std::unique_ptr<Node> node;
  Status s = Node::Start(Options(), &node);
  EXPECT_EQ(s.code(), Code::kInvalidConfig) << s;
  EXPECT_NE(s.message().find("broken.yaml"), std::string::npos) << s;
  EXPECT_EQ(node, nullptr);
  NodeOptions no_data = Options();
  no_data.data_dir.clear();
  EXPECT_EQ(Node::Start(no_data, &node).code(), Code::kInvalidArgument);
}

TEST_F(NodeTest, ReloadChangesTheConfigsInForce) {
  auto node = StartNode(Options());
  std::vector<ConfigInfo> configs;
  ASSERT_TRUE(node->ListConfigs(&configs).ok());
  EXPECT_EQ(configs.size(), 3u);
  Database db = Open(*node, "/profile/history/ann");
  ASSERT_TRUE(db.Put("/k", std::string(500, 'x')).ok());
  dir_.Write("config/more.yaml", "- id: history\n  matcher: /profile/history/[^/]+\n  size: 2KB\n");
  std::string summary;
  Status s = node->ReloadConfigs(&summary);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(node->ListConfigs(&configs).ok());
  EXPECT_EQ(configs.size(), 2u);
  // The running database got its new budget, and the config that went away no longer opens.
  ASSERT_TRUE(db.Put("/k2", std::string(1400, 'x')).ok());
  DatabaseStats stats;
  ASSERT_TRUE(db.Stats(&stats).ok());
  EXPECT_EQ(stats.limit_bytes, 2000u);
  Database gone;
  EXPECT_EQ(node->Open("/data/x", &gone).code(), Code::kNoMatchingConfig);
}

TEST_F(NodeTest, EmbeddedConfigsNeedNoDirectory) {
  auto configs = std::make_shared<config::ConfigSet>();
  ASSERT_TRUE(
      config::ConfigSet::LoadString("matcher: /mem\nsize: 1KiB\n", "inline", configs.get(), nullptr)
          .ok());
  NodeOptions options;
  options.data_dir = dir_ / "mem-data";
  options.configs = configs;
  auto node = StartNode(options);
  Database db = Open(*node, "/mem");
  ASSERT_TRUE(db.Put("/k", "v").ok());
  DatabaseStats stats;
  ASSERT_TRUE(db.Stats(&stats).ok());
  EXPECT_EQ(stats.limit_bytes, 1024u);
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

// Tombstones older than the grace period are collected; a copy away for longer may hold keys
// deleted meanwhile. A clustered node notices that from its data dir and refuses to start.
TEST_F(NodeTest, AClusteredNodeAwayLongerThanTheTombstoneGraceRefusesToStart) {
  NodeOptions options = Options();
  options.cluster_port = 0;
  options.tombstone_grace = std::chrono::milliseconds(1);
  {
    auto node = StartNode(options);
    ASSERT_TRUE(node);
    // No database yet: a restart has nothing to bring back and is fine.
  }
  {
    auto node = StartNode(options);
    ASSERT_TRUE(node);
    Database db;
    ASSERT_TRUE(node->Open("/example/kv", &db).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the 1 ms grace, surely
  std::unique_ptr<Node> refused;
  Status s = Node::Start(options, &refused);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("longer than the tombstone grace period"), std::string::npos) << s;
  EXPECT_NE(s.message().find("--accept-stale-data"), std::string::npos) << s;
  EXPECT_FALSE(refused);
  // Told to, it starts; a node without a cluster port has no peers to disagree with.
  options.accept_stale_data = true;
  EXPECT_TRUE(StartNode(options));
  options.accept_stale_data = false;
  options.cluster_port = -1;
  EXPECT_TRUE(StartNode(options));
}

// -- Direct reads (a single node's Get reads the store on the caller's thread) --

TEST_F(NodeTest, ReadsSeeEveryEarlierWriteOfTheHandleEvenInFlight) {
  auto node = StartNode(Options());
  Database db = Open(*node, "/data/ryw");
  std::atomic<int> failures{0};
  for (int round = 0; round < 300; ++round) {
    const std::string key = "/k" + std::to_string(round % 7);
    // Writes in flight, not waited for; the reads right behind them must see the last.
    for (int i = 0; i < 5; ++i) {
      db.PutAsync(key, std::to_string(round * 10 + i), [&](Status s) {
        if (!s.ok()) ++failures;
      });
    }
    std::string value;
    Status s = db.Get(key, &value);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(value, std::to_string(round * 10 + 4)) << "round " << round;
    db.EraseAsync(key, [&](Status s) {
      if (!s.ok()) ++failures;
    });
    s = db.Get(key, &value);
    ASSERT_TRUE(s.IsNotFound()) << "round " << round << ": " << s;
    // An asynchronous read behind an asynchronous write, callbacks in order.
    std::promise<std::pair<Status, std::string>> got;
    std::atomic<bool> put_done{false};
    db.PutAsync(key, "async" + std::to_string(round), [&](Status s) {
      if (!s.ok()) ++failures;
      put_done = true;
    });
    db.GetAsync(key, [&](Status s, std::string v) {
      if (!put_done) ++failures;
      got.set_value({s, v});
    });
    auto [status, v] = got.get_future().get();
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(v, "async" + std::to_string(round));
  }
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(NodeTest, ReadsOfErasedAndInvalidKeysFailAsBefore) {
  auto node = StartNode(Options());
  Database db = Open(*node, "/data/tomb");
  ASSERT_TRUE(db.Put("/k", "v").ok());
  ASSERT_TRUE(db.Erase("/k").ok());
  std::string value = "unchanged";
  Status direct = db.Get("/k", &value);
  EXPECT_TRUE(direct.IsNotFound()) << direct;
  EXPECT_EQ(direct.message(), "key \"/k\" not found in database \"/data/tomb\"");
  EXPECT_EQ(value, "unchanged");
  Status never = db.Get("/never", &value);
  EXPECT_TRUE(never.IsNotFound()) << never;
  EXPECT_EQ(value, "unchanged");
  // The same through the actor path: a write of this handle is in flight when it is asked
  // (if the write was answered already, both reads went directly; they must agree anyway).
  std::promise<Status> put;
  db.PutAsync("/other", "x", [&](Status s) { put.set_value(s); });
  Status via_actor = db.Get("/k", &value);
  EXPECT_EQ(via_actor.code(), direct.code());
  EXPECT_EQ(via_actor.message(), direct.message());
  ASSERT_TRUE(put.get_future().get().ok());
  Status invalid = db.Get("/a/../b", &value);
  EXPECT_EQ(invalid.code(), Code::kInvalidKey) << invalid;
  std::promise<Status> put2;
  db.PutAsync("/other", "y", [&](Status s) { put2.set_value(s); });
  Status invalid_via_actor = db.Get("/a/../b", &value);
  EXPECT_EQ(invalid_via_actor.code(), invalid.code());
  EXPECT_EQ(invalid_via_actor.message(), invalid.message());
  ASSERT_TRUE(put2.get_future().get().ok());
  std::promise<Status> async_get;
  db.GetAsync("/k", [&](Status s, std::string) { async_get.set_value(s); });
  Status got = async_get.get_future().get();
  EXPECT_EQ(got.code(), direct.code());
  EXPECT_EQ(got.message(), direct.message());
  // A null value pointer is allowed.
  ASSERT_TRUE(db.Put("/k", "again").ok());
  EXPECT_TRUE(db.Get("/k", nullptr).ok());
}

TEST_F(NodeTest, AsyncReadCallbacksRunLaterOnANodeThread) {
  auto node = StartNode(Options());
  Database db = Open(*node, "/data/cb");
  ASSERT_TRUE(db.Put("/k", "v").ok());
  for (int i = 0; i < 100; ++i) {
    // The caller holds a lock its callback takes: calling it inline would deadlock.
    std::mutex mutex;
    std::promise<std::thread::id> ran_on;
    {
      std::lock_guard<std::mutex> lock(mutex);
      db.GetAsync("/k", [&](Status s, std::string v) {
        std::lock_guard<std::mutex> inner(mutex);
        EXPECT_TRUE(s.ok()) << s;
        EXPECT_EQ(v, "v");
        ran_on.set_value(std::this_thread::get_id());
      });
    }
    EXPECT_NE(ran_on.get_future().get(), std::this_thread::get_id());
  }
}

TEST_F(NodeTest, ReadsKeepADatabaseActiveAndSurvivePassivation) {
  NodeOptions options = Options();
  options.idle_timeout = 20ms;
  auto node = StartNode(options);
  Database db = Open(*node, "/data/busy");
  ASSERT_TRUE(db.Put("/k", "v").ok());
  auto read_for = [&](std::chrono::milliseconds period) {
    const auto end = std::chrono::steady_clock::now() + period;
    while (std::chrono::steady_clock::now() < end) {
      std::string value;
      Status s = db.Get("/k", &value);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(value, "v");
    }
  };
  auto wait_passivated = [&] { WaitUntilAllPassivated(*node); };
  for (int cycle = 0; cycle < 3; ++cycle) {
    // Reads alone, for many idle periods, keep it running (the actor itself serves none of
    // them once the handle has its store).
    read_for(300ms);
    uint64_t active = 0;
    ASSERT_TRUE(node->ActiveDatabases(&active).ok());
    EXPECT_EQ(active, 1u) << "cycle " << cycle;
    // Idle: it passivates; the next read re-activates it and reads go on.
    wait_passivated();
    read_for(10ms);
    ASSERT_TRUE(node->ActiveDatabases(&active).ok());
    EXPECT_EQ(active, 1u) << "cycle " << cycle;
  }
}

TEST_F(NodeTest, ReadsRacingPassivationAndWritesStayExact) {
  auto node = StartNode(Options());
  constexpr int kReaders = 4;
  std::vector<Database> dbs;
  for (int t = 0; t < kReaders; ++t) {
    dbs.push_back(Open(*node, "/data/race" + std::to_string(t)));
    ASSERT_TRUE(dbs.back().Put("/fixed", "f").ok());
  }
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kReaders; ++t) {
    threads.emplace_back([&, t] {
      Database db = dbs[t];
      Database shared = dbs[0];
      for (uint64_t i = 0; !stop; ++i) {
        // Each thread writes its own counter and reads it back at once.
        const std::string mine = std::to_string(i);
        Status s = db.Put("/counter", mine);
        if (s.code() == Code::kUnavailable) return;  // the node stopped
        std::string value;
        s = db.Get("/counter", &value);
        if (s.code() == Code::kUnavailable) return;
        if (!s.ok() || value != mine) ++failures;
        s = shared.Get("/fixed", &value);
        if (s.code() == Code::kUnavailable) return;
        if (!s.ok() || value != "f") ++failures;
        ++reads;
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(node->PassivateAll(nullptr).ok());
    std::this_thread::sleep_for(2ms);
  }
  // Not stopped under the readers: a blocking write racing Shutdown can wait out its whole
  // bound (185 s) whether reads are direct or not (its LocalDeadlines entry outlives the
  // requester), a separate issue.
  stop = true;
  for (auto& thread : threads) thread.join();
  node.reset();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(reads.load(), 0u);
  std::string value;
  EXPECT_EQ(dbs[0].Get("/fixed", &value).code(), Code::kUnavailable);
  std::promise<Status> async_get;
  dbs[0].GetAsync("/fixed", [&](Status s, std::string) { async_get.set_value(s); });
  EXPECT_EQ(async_get.get_future().get().code(), Code::kUnavailable);
}

}  // namespace
}  // namespace kvmesh
