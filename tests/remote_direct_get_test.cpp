// Remote plain gets served on the gateway shard's thread (actors/client_gateway.hpp, "Direct
// reads"): the same answers as through the database actor, never ahead of a write the same
// client sent before, and a clear error once the node is stopping.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actor_test_util.hpp"
#include "actors/direct_reads.hpp"
#include "bootstrap/node_testing.hpp"
#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "messages/type_ids.hpp"
#include "storage/store.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::Eventually;
using kvmesh::testing::TempDir;

constexpr const char* kConfigs = R"(
- id: kv
  matcher: /example/kv
  size: 100MB
- id: fresh
  matcher: /fresh/*
  size: 1MB
)";

constexpr const char* kPath = "/example/kv";

/// What a get was answered: the value, or the error's code and message.
std::string Shown(const caf::expected<std::string>& reply) {
  if (reply) return "value " + std::to_string(reply->size()) + " bytes: " + *reply;
  const Status s = ToStatus(reply.error());
  return "error " + std::to_string(static_cast<int>(s.code())) + ": " + s.message();
}

std::string Shown(const caf::expected<GetManyReply>& reply) {
  if (!reply) return Shown(caf::expected<std::string>(reply.error()));
  std::string out = std::to_string(reply->errors.size()) + " answered;";
  for (size_t i = 0; i < reply->errors.size(); ++i) {
    out += " [" +
           Shown(reply->errors[i] ? caf::expected<std::string>(reply->errors[i])
                                  : caf::expected<std::string>(reply->values[i])) +
           "]";
  }
  return out;
}

/// The node's get counters: every sample of `op="get"` but the latency buckets and sum (a read
/// served directly is faster), by its line up to the value.
std::map<std::string, double> GetCounters(const Node& node) {
  std::map<std::string, double> out;
  Result<std::string> text = node.metrics();
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.find("op=\"get\"") == std::string::npos ||
        line.find("_bucket") != std::string::npos || line.find("_sum") != std::string::npos) {
      continue;
    }
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

/// What the counters `after` grew by since `before`.
std::map<std::string, double> Grown(const std::map<std::string, double>& before,
                                    const std::map<std::string, double>& after) {
  std::map<std::string, double> out;
  for (const auto& [name, value] : after) {
    auto it = before.find(name);
    const double grown = value - (it == before.end() ? 0 : it->second);
    if (grown != 0) out[name] = grown;
  }
  return out;
}

/// Starts a single node on a free port of 127.0.0.1 with kConfigs, its data and configs in `dir`
/// (`options` gives the rest).
Status StartNode(const TempDir& dir, NodeOptions options, std::unique_ptr<Node>* node) {
  dir.Write("config/dbs.yaml", kConfigs);
  options.data_dir = dir / "data";
  options.config_dir = dir / "config";
  options.listen_port = 0;
  return Node::Start(options, node);
}

/// A node with two gateway shards, single or (the parameter) clustered alone, and a raw peer
/// that talks to one of them the way the client library does (so a test decides what is in
/// flight on that shard).
class RemoteDirectGetTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    NodeOptions options;
    options.worker_threads = 2;
    if (GetParam()) options.cluster_port = 0;
    Status s = StartNode(dir_, options, &node_);
    ASSERT_TRUE(s.ok()) << s;
    raw_ = testing::ConnectRaw(system_, node_->port());
    ASSERT_TRUE(raw_) << raw_.status;
    self_->request(*raw_, 10s, atom::gateways_v)
        .receive(
            [&](std::vector<caf::actor>& v) {
              ASSERT_FALSE(v.empty());
              shard_ = caf::actor_cast<gateway_actor>(v.front());
            },
            [&](caf::error& err) { FAIL() << ToStatus(err); });
    ASSERT_TRUE(shard_);
  }

  void TearDown() override { node_.reset(); }

  caf::expected<std::string> Get(const std::string& path, const std::string& key) {
    caf::expected<std::string> out{caf::error{}};
    self_->request(shard_, 10s, atom::get_v, path, key, testing::Later())
        .receive([&](std::string& value) { out = std::move(value); },
                 [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  caf::expected<GetManyReply> GetMany(const std::string& path,
                                      const std::vector<std::string>& keys) {
    PackedKeys packed;
    for (const auto& key : keys) packed.Add(key);
    caf::expected<GetManyReply> out{caf::error{}};
    self_->request(shard_, 10s, atom::get_v, path, packed, testing::Later())
        .receive([&](GetManyReply& reply) { out = std::move(reply); },
                 [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  /// Holds a watch pull of `kPath` in the shard's route to the database (the database keeps
  /// it until a write or its wait ends, 10 s): until then every request of that route, gets
  /// included, goes through the database actor behind it.
  void HoldTheRoute() {
    WatchRequest first;
    first.prefix = "/";
    std::string position;
    self_->request(shard_, 10s, atom::watch_v, std::string(kPath), first, testing::Later())
        .receive([&](WatchUpdate& update) { position = update.position; },
                 [&](caf::error& err) { FAIL() << ToStatus(err); });
    ASSERT_FALSE(position.empty());
    WatchRequest held = first;
    held.position = position;
    held.wait_ms = 10000;
    // Its answer (at the write that ends the test, or the node's stop) is never awaited: a
    // blocking receive skips responses it does not wait for.
    self_->request(shard_, caf::infinite, atom::watch_v, std::string(kPath), held,
                   testing::Later());
  }

  TempDir dir_;
  std::unique_ptr<Node> node_;
  testing::RawPeerConfig config_;
  caf::actor_system system_{config_};
  caf::scoped_actor self_{system_};
  testing::RawGateway raw_;
  gateway_actor shard_;
};

// Every kind of answer a plain get (alone, or several together) can get, first on an idle route
// (served on the shard's thread), then behind a held request (through the database actor):
// byte for byte the same.
TEST_P(RemoteDirectGetTest, TheSameAnswersDirectAndThroughTheDatabaseActor) {
  Database db = node_->open(kPath);
  ASSERT_TRUE(db.ok()) << db.status();
  std::string binary(100 * 1000, '\0');
  for (size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 7 + 3);
  ASSERT_TRUE(db.put("/found", binary).ok());
  ASSERT_TRUE(db.put("/small", "v").ok());
  WriteBatch expiring;
  expiring.Put("/expired", "gone soon", /*ttl_ms=*/1);
  ASSERT_TRUE(db.write(expiring).ok());
  ASSERT_TRUE(Eventually(10s, [&] {
    return db.get("/expired").status().code() == Code::kNotFound;
  })) << "the key with a 1 ms ttl never expired";

  const std::vector<std::pair<std::string, std::string>> cases = {
      {kPath, "/found"},  {kPath, "/small"}, {kPath, "/missing"},       {kPath, "/expired"},
      {kPath, "/a/../b"}, {kPath, ""},       {"/no/config/here", "/k"}, {"bad path", "/k"},
  };
  const std::vector<std::string> together = {"/small", "/missing", "/expired", "bad", "/found"};
  // The route exists (and has its actor) after a first request; the first goes to the actor.
  ASSERT_TRUE(Get(kPath, "/small"));

  const auto before_direct = GetCounters(*node_);
  std::vector<std::string> direct;
  for (const auto& [path, key] : cases) direct.push_back(Shown(Get(path, key)));
  const std::string direct_together = Shown(GetMany(kPath, together));
  const auto counted_direct = Grown(before_direct, GetCounters(*node_));
  // A database not created yet: the actor path creates it, and a second get reads it directly.
  const std::string fresh_first = Shown(Get("/fresh/one", "/k"));
  const std::string fresh_direct = Shown(Get("/fresh/one", "/k"));

  HoldTheRoute();
  const auto before_actor = GetCounters(*node_);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(direct[i], Shown(Get(cases[i].first, cases[i].second)))
        << "get " << cases[i].second << " of " << cases[i].first;
  }
  EXPECT_EQ(direct_together, Shown(GetMany(kPath, together)));
  // Counted alike: by result code, and in the latency histogram's count.
  EXPECT_EQ(counted_direct, Grown(before_actor, GetCounters(*node_)));
  std::string counted;
  for (const auto& [name, grown] : counted_direct)
    counted += name + " +" + std::to_string(grown) + "\n";
  EXPECT_EQ(counted_direct.size(), 5u)
      << "ok, not_found, invalid_key, no_matching_config, and the histogram's count:\n"
      << counted;
  EXPECT_EQ(fresh_first, fresh_direct);

  // The cases are what they claim to be.
  EXPECT_EQ(direct[0], Shown(caf::expected<std::string>(binary)));
  EXPECT_NE(direct[2].find("error " + std::to_string(static_cast<int>(Code::kNotFound))),
            std::string::npos)
      << direct[2];
  EXPECT_EQ(direct[3].substr(0, 8), direct[2].substr(0, 8)) << direct[3];
  EXPECT_NE(direct[4].find("'..' segment"), std::string::npos) << direct[4];
  EXPECT_NE(fresh_first.find("not found"), std::string::npos) << fresh_first;
  EXPECT_NE(direct_together.find("5 answered"), std::string::npos) << direct_together;
  ASSERT_TRUE(db.put("/release", "the held watch").ok());
}

// A client's get sent right behind its put (both in flight together, the get alone or with
// others) sees the put: the shard reads directly only when nothing of that database's route is
// in flight, waiting or taken.
TEST(RemoteDirectGetOrderTest, AGetInFlightBehindAPutOfTheSameClientSeesIt) {
  TempDir dir;
  std::unique_ptr<Node> node;
  Status s = StartNode(dir, NodeOptions(), &node);
  ASSERT_TRUE(s.ok()) << s;
  client::Client client = client::connect("127.0.0.1:" + std::to_string(node->port()));
  ASSERT_TRUE(client.ok()) << client.status();
  Database db = client.open(kPath);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/order", "v-start").ok());
  size_t stale = 0;
  std::string first_stale;
  for (int round = 0; round < 200; ++round) {
    const std::string value = "v-" + std::to_string(round);
    std::future<Status> put = db.put_async("/order", value);
    std::vector<std::future<Result<std::string>>> gets;
    // Alone (a get of its own), then several together (one message).
    gets.push_back(db.get_async("/order"));
    if (round % 2 == 1) {
      ASSERT_TRUE(put.get().ok());
      put = db.put_async("/order", value);
      for (int j = 0; j < 3; ++j) gets.push_back(db.get_async("/order"));
    }
    ASSERT_EQ(put.wait_for(30s), std::future_status::ready);
    ASSERT_TRUE(put.get().ok());
    for (auto& get : gets) {
      ASSERT_EQ(get.wait_for(30s), std::future_status::ready);
      Result<std::string> got = get.get();
      ASSERT_TRUE(got.ok()) << got.status();
      if (*got != value && stale++ == 0) {
        first_stale = "round " + std::to_string(round) + " saw " + *got;
      }
    }
  }
  EXPECT_EQ(stale, 0u) << "gets that did not see the put sent before them; first: " << first_stale;
}

// Once the node is stopping (its direct-read gate closed, the first step of its shutdown), a get
// the shard would read directly is refused as unavailable, with a message saying why; one that
// goes through the database actor is served by it as before.
TEST_P(RemoteDirectGetTest, AGetWhileTheNodeStopsIsUnavailableWithAClearError) {
  Database db = node_->open(kPath);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "v").ok());
  ASSERT_TRUE(Get(kPath, "/k"));  // the route has its actor now
  ASSERT_EQ(Shown(Get(kPath, "/k")), "value 1 bytes: v");

  NodeTesting::CloseDirectReadGate(*node_);
  const caf::expected<std::string> refused = Get(kPath, "/k");
  ASSERT_FALSE(refused) << Shown(refused);
  EXPECT_EQ(ToStatus(refused.error()).code(), Code::kUnavailable) << Shown(refused);
  EXPECT_NE(Shown(refused).find("the node is stopping"), std::string::npos) << Shown(refused);
  const caf::expected<GetManyReply> refused_together = GetMany(kPath, {"/k", "/k"});
  ASSERT_FALSE(refused_together) << Shown(refused_together);
  EXPECT_EQ(ToStatus(refused_together.error()).code(), Code::kUnavailable);

  HoldTheRoute();
  EXPECT_EQ(Shown(Get(kPath, "/k")), "value 1 bytes: v")
      << "a get behind a request in flight goes through the database actor";
}

// Gets in flight while the node really stops: each is answered (a value, or unavailable), and
// nothing crashes.
TEST_P(RemoteDirectGetTest, GetsWhileTheNodeShutsDownEndUnavailable) {
  Database db = node_->open(kPath);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "v").ok());
  client::Client client = client::connect("127.0.0.1:" + std::to_string(node_->port()));
  ASSERT_TRUE(client.ok()) << client.status();
  Database remote = client.open(kPath);
  ASSERT_TRUE(remote.ok()) << remote.status();
  std::atomic<int> served{0};
  Status last;
  std::thread reader([&] {
    const auto until = std::chrono::steady_clock::now() + 60s;
    for (int i = 0; i < 1000000 && std::chrono::steady_clock::now() < until; ++i) {
      Result<std::string> got = remote.get("/k");
      if (!got.ok()) {
        last = got.status();
        return;
      }
      ++served;
    }
  });
  EXPECT_TRUE(Eventually(30s, [&] { return served.load() >= 50; }));
  node_.reset();
  reader.join();
  EXPECT_FALSE(last.ok()) << "gets went on being served after the node stopped";
  EXPECT_EQ(last.code(), Code::kUnavailable) << last;
}

// Reads served on the shard count as use: a database only read that way does not passivate
// (it would record a last access when it did), and reads go on across a passivation.
TEST(RemoteDirectGetIdleTest, DirectReadsKeepADatabaseActive) {
  TempDir dir;
  NodeOptions options;
  // As NodeTest.ReadsKeepADatabaseActiveAndSurvivePassivation: long enough that a loaded
  // machine's scheduling hiccup is not an idle period, short enough for many periods.
  options.idle_timeout = 100ms;
  std::unique_ptr<Node> node;
  Status s = StartNode(dir, options, &node);
  ASSERT_TRUE(s.ok()) << s;
  client::Client client = client::connect("127.0.0.1:" + std::to_string(node->port()));
  ASSERT_TRUE(client.ok()) << client.status();
  Database db = client.open(kPath);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "v").ok());
  const auto end = std::chrono::steady_clock::now() + 800ms;
  for (int i = 0; i < 1000000 && std::chrono::steady_clock::now() < end; ++i) {
    Result<std::string> value = db.get("/k");
    ASSERT_TRUE(value.ok()) << value.status();
    ASSERT_EQ(*value, "v");
  }
  Result<InstancePage> page = node->instances("kv");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->instances.size(), 1u);
  EXPECT_TRUE(page->instances[0].active);
  EXPECT_EQ(page->instances[0].last_access_ms, 0u)
      << "the database passivated while it was read (8 idle periods)";
  // Idle: it passivates; the next get re-opens it through the actor path.
  ASSERT_TRUE(Eventually(10s, [&] {
    Result<uint64_t> active = node->active_databases();
    return active.ok() && *active == 0;
  }));
  Result<std::string> value = db.get("/k");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "v");
}

INSTANTIATE_TEST_SUITE_P(SingleAndClustered, RemoteDirectGetTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Clustered" : "Single";
                         });

// A copy handed over to its new replicas is dropped only once the direct reads in progress have
// ended (DirectReadTarget::Retire, which the drop calls first): none finds it half deleted, and
// reads after it take the actor path, which re-opens the database where it is now.
TEST(DirectReadTargetTest, RetireWaitsForTheReadInProgressAndTurnsLaterReadsAway) {
  TempDir dir;
  storage::StoreOptions store_options;
  store_options.path = dir / "data";
  std::shared_ptr<storage::Store> store;
  ASSERT_TRUE(storage::Store::Open(store_options, &store).ok());
  std::unique_ptr<storage::DatabaseStore> db;
  ASSERT_TRUE(store->OpenDatabase(kPath, "kv", 1u << 20, &db).ok());
  ASSERT_TRUE(db->Put("/k", "v", nullptr).ok());
  auto target = std::make_shared<DirectReadTarget>(std::move(db));

  std::atomic<bool> inside{false};
  std::atomic<bool> release{false};
  std::atomic<bool> retired{false};
  bool retired_while_reading = true;
  std::string value;
  std::thread reader([&] {
    EXPECT_TRUE(target->TryRead([&](const storage::DatabaseStore& store) {
      inside = true;
      for (int i = 0; i < 10000 && !release.load(); ++i) std::this_thread::sleep_for(1ms);
      EXPECT_TRUE(store.Get("/k", &value).ok());
      retired_while_reading = retired.load();
    }));
  });
  if (!Eventually(10s, [&] { return inside.load(); })) {
    ADD_FAILURE() << "the read never started";
    release = true;
    reader.join();
    return;
  }
  std::thread retirer([&] {
    target->Retire();
    retired = true;
  });
  // Retire has begun (readers from now on are turned away) and waits for the one inside.
  EXPECT_TRUE(Eventually(10s, [&] { return target->retired.load(); }));
  release = true;
  reader.join();
  retirer.join();
  EXPECT_FALSE(retired_while_reading) << "Retire returned while a read was in progress";
  EXPECT_EQ(value, "v");
  bool ran = false;
  EXPECT_FALSE(target->TryRead([&](const storage::DatabaseStore&) { ran = true; }));
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace kvmesh
