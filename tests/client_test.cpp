// The client library against a node over a real loopback connection (separate actor systems).
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <atomic>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp/header.hpp>

#include "actor_test_util.hpp"
#include "actors/client_gateway.hpp"
#include "bootstrap/node_testing.hpp"
#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "messages/type_ids.hpp"
#include "process_util.hpp"
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
- id: tiny
  matcher: /tiny/*
  size: 100B
)";

/// Options of a node serving kConfigs from `dir` (written there), on any free client port.
NodeOptions NodeIn(TempDir& dir) {
  dir.Write("config/dbs.yaml", kConfigs);
  NodeOptions options;
  options.data_dir = dir / "data";
  options.config_dir = dir / "config";
  options.listen_port = 0;
  return options;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NodeOptions options = NodeIn(dir_);
    Status s = Node::Start(options, &node_);
    ASSERT_TRUE(s.ok()) << s;
    address_ = "127.0.0.1:" + std::to_string(node_->port());
    client_ = client::connect(address_);
    ASSERT_TRUE(client_.ok()) << client_.status();
  }

  TempDir dir_;
  std::unique_ptr<Node> node_;
  std::string address_;
  client::Client client_;
};

// A gateway that stops unexpectedly (a bug, an exception; here a local kill, which it honours)
// is noticed: the node reports a fatal failure naming it and the reason (kvmeshd then exits
// non-zero), and clients get a clear error rather than a hang.
TEST(NodeWatchdogTest, AGatewayThatDiesIsReportedAndClientsGetAClearError) {
  TempDir dir;
  NodeOptions options = NodeIn(dir);
  options.worker_threads = 2;  // so the gateway has shards, which must end with it
  std::mutex mutex;
  std::vector<Status> reported;
  options.on_fatal = [&](const Status& s) {
    std::lock_guard<std::mutex> lock(mutex);
    reported.push_back(s);
  };
  std::unique_ptr<Node> node;
  Status s = Node::Start(options, &node);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(node->health().ok()) << node->health();
  client::ClientOptions client_options;
  client_options.request_timeout = 5s;
  auto db = client::connect("127.0.0.1:" + std::to_string(node->port()), client_options)
                .open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "v").ok());
  // A raw peer holding the shards' handles, as every client does.
  testing::RawPeerConfig raw_config;
  caf::actor_system raw_system{raw_config};
  auto gateway = testing::ConnectRaw(raw_system, node->port());
  ASSERT_TRUE(gateway) << gateway.status;
  caf::scoped_actor raw{raw_system};
  std::vector<caf::actor> shards;
  raw->request(*gateway, 10s, atom::gateways_v)
      .receive([&](std::vector<caf::actor>& v) { shards = std::move(v); },
               [&](caf::error& err) { ADD_FAILURE() << ToStatus(err); });
  ASSERT_EQ(shards.size(), 2u);

  NodeTesting::KillGateway(*node);
  ASSERT_TRUE(Eventually(10s, [&] { return !node->health().ok(); }))
      << "the gateway's death went unnoticed";
  const Status health = node->health();
  EXPECT_EQ(health.code(), Code::kInternal) << health;
  EXPECT_NE(health.message().find("client gateway stopped unexpectedly"), std::string::npos)
      << health;
  EXPECT_NE(health.message().find("kill"), std::string::npos) << health;
  // on_fatal is called on the watchdog's thread just after health() turns (after the failure is
  // logged): wait for it.
  EXPECT_TRUE(Eventually(10s, [&] {
    std::lock_guard<std::mutex> lock(mutex);
    return !reported.empty();
  })) << "on_fatal was not called";
  {
    std::lock_guard<std::mutex> lock(mutex);
    ASSERT_EQ(reported.size(), 1u);
    EXPECT_EQ(reported[0].message(), health.message());
  }
  // Every shard ended with the gateway, before the report: a request sent to one now is refused,
  // not applied.
  for (size_t i = 0; i < shards.size(); ++i) {
    Status put = Status::OK();
    raw->request(caf::actor_cast<gateway_actor>(shards[i]), 10s, atom::put_v,
                 std::string("/example/kv"), std::string("/k"), std::string("x"), testing::Later())
        .receive([&](atom::ok) {}, [&](caf::error& err) { put = ToStatus(err); });
    EXPECT_FALSE(put.ok()) << "shard " << i << " outlived the gateway and applied a put";
  }
  // The client is told at once, not at its deadline.
  const auto start = std::chrono::steady_clock::now();
  Status put = db.put("/k", "w");
  EXPECT_EQ(put.code(), Code::kUnavailable) << put;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s) << put;
  // The embedded API still works, and the node still stops cleanly (no second report).
  auto local = node->open("/example/kv");
  ASSERT_TRUE(local.ok()) << local.status();
  auto got = local.get("/k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v");
  node.reset();
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(reported.size(), 1u);
}

// One gateway handled every client request of a node in turn, a ceiling on remote throughput
// whatever the cores. The gateway names a shard per worker thread, each serving requests as the
// gateway does; the node's connection guard lets clients address them; the client library
// spreads the databases over them.
TEST(GatewayShardsTest, EachWorkerThreadHasAShardAndClientsReachThemAll) {
  TempDir dir;
  NodeOptions options = NodeIn(dir);
  options.worker_threads = 3;
  std::unique_ptr<Node> node;
  Status s = Node::Start(options, &node);
  ASSERT_TRUE(s.ok()) << s;

  testing::RawPeerConfig config;
  caf::actor_system system{config};
  auto gateway = testing::ConnectRaw(system, node->port());
  ASSERT_TRUE(gateway) << gateway.status;
  caf::scoped_actor self{system};
  std::vector<caf::actor> shards;
  self->request(*gateway, std::chrono::seconds(10), atom::gateways_v)
      .receive([&](std::vector<caf::actor>& v) { shards = std::move(v); },
               [&](caf::error& err) { ADD_FAILURE() << ToStatus(err); });
  ASSERT_EQ(shards.size(), 3u);
  std::set<caf::actor_addr> distinct;
  for (size_t i = 0; i < shards.size(); ++i) {
    ASSERT_TRUE(shards[i]);
    distinct.insert(shards[i].address());
    EXPECT_NE(shards[i].address(), gateway->address());
    Status put = Status::Internal("no answer");
    self->request(caf::actor_cast<gateway_actor>(shards[i]), std::chrono::seconds(10), atom::put_v,
                  std::string("/tiny/direct"), "k" + std::to_string(i), std::string("v"),
                  testing::Later())
        .receive([&](atom::ok) { put = Status::OK(); },
                 [&](caf::error& err) { put = ToStatus(err); });
    EXPECT_TRUE(put.ok()) << "shard " << i << ": " << put;
  }
  EXPECT_EQ(distinct.size(), 3u);

  client::ClientOptions client_options;
  client_options.request_timeout = 5s;
  client::Client client =
      client::connect("127.0.0.1:" + std::to_string(node->port()), client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 24; ++i) {
    const std::string path = "/tiny/p-" + std::to_string(i);
    auto db = client.open(path);
    ASSERT_TRUE(db.ok()) << path << ": " << db.status();
    ASSERT_TRUE(db.put("/k", "v" + std::to_string(i)).ok()) << path;
    std::promise<Status> written;
    db.put_async("/a", "w", [&](Status st) { written.set_value(st); });
    auto future = written.get_future();
    ASSERT_EQ(future.wait_for(10s), std::future_status::ready) << path;
    EXPECT_TRUE(future.get().ok()) << path;
    auto got = node->open(path).get("/k");
    ASSERT_TRUE(got.ok()) << path << ": " << got.status();
    EXPECT_EQ(*got, "v" + std::to_string(i));
  }
  auto direct = node->open("/tiny/direct").list();
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->size(), 3u);
}

// The same for the membership actor of a clustered node: the node reports it, and still stops
// cleanly.
TEST(NodeWatchdogTest, AMembershipActorThatDiesIsReported) {
  TempDir dir;
  NodeOptions options = NodeIn(dir);
  options.cluster_port = 0;
  std::atomic<int> reports{0};
  options.on_fatal = [&](const Status&) { ++reports; };
  std::unique_ptr<Node> node;
  Status s = Node::Start(options, &node);
  ASSERT_TRUE(s.ok()) << s;
  NodeTesting::KillMembership(*node);
  ASSERT_TRUE(Eventually(10s, [&] { return !node->health().ok(); }))
      << "the membership actor's death went unnoticed";
  const Status health = node->health();
  EXPECT_NE(health.message().find("membership actor stopped unexpectedly"), std::string::npos)
      << health;
  EXPECT_NE(health.message().find("kill"), std::string::npos) << health;
  node.reset();
  EXPECT_EQ(reports.load(), 1);
}

TEST_F(ClientTest, SeedOperationsRoundTrip) {
  auto db = client::connect(address_).open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  std::string binary("\0\xff\x01 bytes \xfe\0", 11);
  ASSERT_TRUE(db.put("/users/123/profile", binary).ok());
  auto value = db.get("/users/123/profile");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, binary);
  auto missing = db.get("/users/999");
  EXPECT_TRUE(missing.IsNotFound()) << missing.status();
  EXPECT_NE(missing.status().message().find("\"/users/999\""), std::string::npos);
  ASSERT_TRUE(db.put("/users/123/sessions/1", "s").ok());
  ASSERT_TRUE(db.put("/users1", "x").ok());
  auto keys = db.list("/users/");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"/users/123/profile", "/users/123/sessions/1"}));
  ASSERT_TRUE(db.erase("/users/123/profile").ok());
  EXPECT_TRUE(db.get("/users/123/profile").IsNotFound());
  EXPECT_TRUE(db.erase("/users/123/profile").ok());
  ASSERT_TRUE(db.batch().put("/b/1", "1").put("/b/2", "2").erase("/users1").commit().ok());
  auto stats = db.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->key_count, 3u);
  EXPECT_EQ(stats->limit_bytes, 100'000'000u);
}

// Writes in flight together reach the gateway together and travel to the database as one
// message (OrderedRoute::TakeWrite): each writer still gets exactly the answer it would get alone,
// in the order made (size limits judged per write, checks seeing the writes before them).
TEST_F(ClientTest, WritesInFlightTogetherEachGetTheirOwnAnswerInOrder) {
  for (int round = 0; round < 20; ++round) {
    Database db = client_.open("/tiny/round" + std::to_string(round));  // 100 B budget
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_EQ(testing::WritesMadeTogetherEachGetTheirOwnAnswer(db, 100), "") << "round " << round;
  }
}

// Asynchronous puts made together travel as one message (client/client.cpp TakePut) and each
// gets its own answer, in order: in a 100-byte database the first 20 five-byte puts fit and
// every later one is refused, however the puts were grouped.
TEST_F(ClientTest, PutsInFlightTogetherEachGetTheirOwnAnswer) {
  for (int round = 0; round < 10; ++round) {
    Database db = client_.open("/tiny/puts" + std::to_string(round));  // 100 B budget
    ASSERT_TRUE(db.ok()) << db.status();
    std::vector<std::future<Status>> acks;
    for (int i = 0; i < 40; ++i) acks.push_back(db.put_async("/k" + std::to_string(10 + i), "v"));
    for (int i = 0; i < 40; ++i) {
      ASSERT_EQ(acks[i].wait_for(std::chrono::seconds(30)), std::future_status::ready) << i;
      Status s = acks[i].get();
      EXPECT_EQ(s.code(), i < 20 ? Code::kOk : Code::kSizeLimitExceeded)
          << "round " << round << ", put " << i << ": " << s;
    }
    auto keys = db.list("/");
    ASSERT_TRUE(keys.ok()) << keys.status();
    ASSERT_EQ(keys->size(), 20u) << "round " << round;
    EXPECT_EQ(keys->front(), "/k10");
    EXPECT_EQ(keys->back(), "/k29");
  }
}

// Puts made together travel as one message, which the gateway routes as one write beside the
// other writes waiting on that route (CoalescedWrite::Made::kPuts): a put the gateway refuses
// (an invalid key) and a batch among them still get their own answers, in order.
TEST_F(ClientTest, APutRefusedAmongPutsAndBatchesInFlightGetsItsOwnAnswer) {
  for (int round = 0; round < 10; ++round) {
    Database db = client_.open("/example/kv");
    ASSERT_TRUE(db.ok()) << db.status();
    const std::string r = "/r" + std::to_string(round);
    WriteBatch batch;
    batch.Put(r + "/batch", "b").Erase(r + "/p1");
    std::vector<std::future<Status>> acks;
    acks.push_back(db.put_async(r + "/p0", "0"));
    acks.push_back(db.put_async(r + "/p1", "1"));
    acks.push_back(db.put_async(r + "/../bad", "x"));  // an invalid key
    acks.push_back(db.put_async(r + "/p2", "2"));
    acks.push_back(db.write_async(batch));
    acks.push_back(db.put_async(r + "/p3", "3"));
    const std::vector<Code> expected = {Code::kOk, Code::kOk, Code::kInvalidKey,
                                        Code::kOk, Code::kOk, Code::kOk};
    for (size_t i = 0; i < acks.size(); ++i) {
      ASSERT_EQ(acks[i].wait_for(std::chrono::seconds(30)), std::future_status::ready) << i;
      Status st = acks[i].get();
      EXPECT_EQ(st.code(), expected[i]) << "round " << round << ", write " << i << ": " << st;
    }
    auto keys = db.list(r + "/");
    ASSERT_TRUE(keys.ok()) << keys.status();
    EXPECT_EQ(*keys, (std::vector<std::string>{r + "/batch", r + "/p0", r + "/p2", r + "/p3"}))
        << "round " << round;
  }
}

// Asynchronous gets made together travel as one message (client/client.cpp TakeGet) and each
// gets its own answer: found, not found, or its own error (an invalid key).
TEST_F(ClientTest, GetsInFlightTogetherEachGetTheirOwnAnswer) {
  Database db = client_.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  for (int i = 0; i < 40; i += 2)
    ASSERT_TRUE(db.put("/g" + std::to_string(i), "v" + std::to_string(i)).ok());
  for (int round = 0; round < 5; ++round) {
    std::vector<std::future<Result<std::string>>> gets;
    for (int i = 0; i < 40; ++i) gets.push_back(db.get_async("/g" + std::to_string(i)));
    gets.push_back(db.get_async("/a/../b"));  // invalid: refused alone
    for (int i = 0; i < 41; ++i) {
      ASSERT_EQ(gets[i].wait_for(std::chrono::seconds(30)), std::future_status::ready) << i;
      Result<std::string> got = gets[i].get();
      if (i == 40) {
        EXPECT_EQ(got.status().code(), Code::kInvalidKey) << got.status();
      } else if (i % 2 == 0) {
        ASSERT_TRUE(got.ok()) << "round " << round << ", get " << i << ": " << got.status();
        EXPECT_EQ(*got, "v" + std::to_string(i));
      } else {
        EXPECT_EQ(got.status().code(), Code::kNotFound) << "get " << i << ": " << got.status();
        EXPECT_NE(got.status().message().find("/g" + std::to_string(i)), std::string::npos)
            << got.status();
      }
    }
  }
}

namespace {
std::string RandomBytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  std::mt19937 rng(seed);
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}
}  // namespace

// Gets made together whose values pass the reply's budget (kMaxGetsReplyBytes): the node
// answers a prefix and the client sends the rest alone; every get still gets its whole value.
TEST_F(ClientTest, LargeValuesGottenTogetherComeBackWhole) {
  Database db = client_.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  std::vector<std::string> values;
  for (uint32_t i = 0; i < 5; ++i) {
    values.push_back(RandomBytes(600 * 1000, i));
    ASSERT_TRUE(db.put("/big" + std::to_string(i), values.back()).ok());
  }
  for (int round = 0; round < 3; ++round) {
    std::vector<std::future<Result<std::string>>> gets;
    for (int i = 0; i < 5; ++i) gets.push_back(db.get_async("/big" + std::to_string(i)));
    gets.push_back(db.get_async("/missing"));
    for (int i = 0; i < 6; ++i) {
      ASSERT_EQ(gets[i].wait_for(std::chrono::seconds(30)), std::future_status::ready) << i;
      Result<std::string> got = gets[i].get();
      if (i == 5) {
        EXPECT_EQ(got.status().code(), Code::kNotFound) << got.status();
        continue;
      }
      ASSERT_TRUE(got.ok()) << "round " << round << ", get " << i << ": " << got.status();
      EXPECT_TRUE(*got == values[i])
          << "round " << round << ", get " << i << ": " << got->size() << " bytes";
    }
  }
}

// Order per handle holds for gets made together: each get sees exactly the puts made before it
// and none made after it, also when the replies leave large values out and the client sends
// those gets again alone (later writes of the path wait until then).
TEST_F(ClientTest, AsynchronousGetsSeeExactlyThePutsMadeBeforeThem) {
  Database db = client_.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  for (size_t size : {size_t{10}, size_t{400 * 1000}}) {
    std::vector<std::string> values;
    for (uint32_t i = 0; i < 12; ++i) values.push_back(RandomBytes(size, 100 + i));
    std::vector<std::future<Status>> puts;
    std::vector<std::future<Result<std::string>>> gets;
    for (size_t i = 0; i < values.size(); ++i) {
      puts.push_back(db.put_async("/order", values[i]));
      for (int j = 0; j < 3; ++j) gets.push_back(db.get_async("/order"));
    }
    // An erase waits as a put does: the gets before it see the last value, the one after none.
    std::future<Status> erased = db.erase_async("/order");
    std::future<Result<std::string>> after_erase = db.get_async("/order");
    for (size_t i = 0; i < puts.size(); ++i) {
      ASSERT_EQ(puts[i].wait_for(std::chrono::seconds(30)), std::future_status::ready) << i;
      EXPECT_TRUE(puts[i].get().ok());
    }
    for (size_t g = 0; g < gets.size(); ++g) {
      ASSERT_EQ(gets[g].wait_for(std::chrono::seconds(30)), std::future_status::ready) << g;
      Result<std::string> got = gets[g].get();
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_TRUE(*got == values[g / 3]) << "value size " << size << ": get " << g << " (after put "
                                         << g / 3 << ") saw another put's value";
    }
    ASSERT_EQ(erased.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_TRUE(erased.get().ok());
    ASSERT_EQ(after_erase.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_EQ(after_erase.get().status().code(), Code::kNotFound);
    ASSERT_TRUE(db.put("/order", "reset").ok());
  }
}

TEST_F(ClientTest, ListPagesTransparentlyAndLargeValuesTravel) {
  auto db = client_.open("/example/kv");
  WriteBatch batch;
  for (int i = 0; i < 2500; ++i) batch.Put("/many/" + std::to_string(100000 + i), "v");
  ASSERT_TRUE(db.write(batch).ok());
  auto keys = db.list("/many");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 2500u);  // more than two default pages
  EXPECT_EQ(keys->front(), "/many/100000");
  EXPECT_EQ(keys->back(), "/many/102499");

  std::string mib(1 << 20, '\0');
  std::mt19937 rng(7);
  for (char& c : mib) c = static_cast<char>(rng());
  ASSERT_TRUE(db.put("/big", mib).ok());
  auto got = db.get("/big");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, mib);
  Status too_big = db.put("/huge", std::string((16u << 20) + 1, 'x'));
  EXPECT_EQ(too_big.code(), Code::kValueTooLarge) << too_big;
}

// A page holds at most kMaxListLimit keys, whatever limit is asked; the rest follows on later
// pages.
TEST_F(ClientTest, ListPagesAreCappedAtTheMaximumLimit) {
  auto db = client_.open("/example/kv");
  WriteBatch batch;
  const size_t total = kMaxListLimit + 50;
  for (size_t i = 0; i < total; ++i) batch.Put("/c/" + std::to_string(100000 + i), "");
  ASSERT_TRUE(db.write(batch).ok());
  for (uint32_t asked : {kMaxListLimit + 1, 2 * kMaxListLimit, ~uint32_t{0}}) {
    ListOptions options;
    options.limit = asked;
    auto first = db.list_page(options);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->keys.size(), kMaxListLimit) << "limit " << asked;
    ASSERT_TRUE(first->has_more()) << "limit " << asked;
    options.start_after = first->next_token;
    auto rest = db.list_page(options);
    ASSERT_TRUE(rest.ok()) << rest.status();
    EXPECT_EQ(rest->keys.size(), total - kMaxListLimit);
    EXPECT_FALSE(rest->has_more());
  }
}

// A batch over kMaxBatchBytes of keys and values is refused whole, saying so.
TEST_F(ClientTest, BatchesOverTheByteLimitAreRefusedWhole) {
  auto db = client_.open("/example/kv");
  const size_t value_bytes = 13u << 20;  // under the value limit; five are over the batch limit
  WriteBatch batch;
  for (int i = 0; i < 5; ++i) batch.Put("/b/" + std::to_string(i), std::string(value_bytes, 'v'));
  Status refused = db.write(batch);
  EXPECT_EQ(refused.code(), Code::kInvalidArgument) << refused;
  EXPECT_NE(refused.message().find("the maximum is 67108864 B (64 MiB)"), std::string::npos)
      << refused;
  EXPECT_TRUE(db.get("/b/0").IsNotFound());
  EXPECT_EQ(db.stats()->key_count, 0u);
}

// Keys that exist throughout a paged list are each listed exactly once, in order, however other
// writes land between the pages: keys added and erased before and after the resume point,
// the resume point (the key a page ended with) itself erased.
TEST_F(ClientTest, ListPagesSkipAndRepeatNoKeyWhileWritesLandBetweenThem) {
  auto db = client_.open("/example/kv");
  WriteBatch batch;
  for (int i = 0; i < 300; ++i) batch.Put("/p/" + std::to_string(1000 + i), "v");
  ASSERT_TRUE(db.write(batch).ok());
  std::set<std::string> throughout;
  for (int i = 0; i < 300; ++i) throughout.insert("/p/" + std::to_string(1000 + i));

  std::vector<std::string> listed;
  ListOptions options;
  options.prefix = "/p";
  options.limit = 40;
  for (int page = 0; page < 100; ++page) {  // 300 keys and the new ones need about 10
    auto got = db.list_page(options);
    ASSERT_TRUE(got.ok()) << got.status();
    listed.insert(listed.end(), got->keys.begin(), got->keys.end());
    if (!got->has_more()) break;
    // The resume key goes, a key lands just after it and one at the end; before it, two keys
    // land (even pages) or an already listed key goes (odd pages), so the number of keys
    // before the resume point changes.
    const std::string last = got->keys.back();
    ASSERT_TRUE(db.erase(last).ok());
    throughout.erase(last);
    ASSERT_TRUE(db.put(last + "-after", "new").ok());
    ASSERT_TRUE(db.put("/p/9999-" + std::to_string(page), "new").ok());
    if (page % 2 == 0) {
      ASSERT_TRUE(db.put("/p/0999-" + std::to_string(page) + "a", "new").ok());
      ASSERT_TRUE(db.put("/p/0999-" + std::to_string(page) + "b", "new").ok());
    } else {
      const std::string early = "/p/" + std::to_string(1000 + page);
      ASSERT_TRUE(db.erase(early).ok());
      throughout.erase(early);
    }
    options.start_after = got->next_token;
  }
  for (size_t i = 1; i < listed.size(); ++i) {
    ASSERT_LT(listed[i - 1], listed[i]) << "listed out of order or twice at " << i;
  }
  std::set<std::string> seen(listed.begin(), listed.end());
  for (const auto& key : throughout) EXPECT_EQ(seen.count(key), 1u) << key << " was skipped";
}

// One client's asynchronous writes to one key apply in the order they were sent: a read sent
// among them sees exactly the write sent last before it, and the last write sent stays.
TEST_F(ClientTest, OneClientsAsyncWritesToOneKeyApplyInSendOrder) {
  auto db = client_.open("/example/kv");
  std::vector<std::future<Status>> puts;
  std::vector<std::pair<int, std::future<Result<std::string>>>> reads;
  for (int i = 0; i < 2000; ++i) {
    puts.push_back(db.put_async("/order", std::to_string(i)));
    if (i % 10 == 9) reads.emplace_back(i, db.get_async("/order"));
  }
  for (auto& put : puts) ASSERT_TRUE(put.get().ok());
  for (auto& [after, read] : reads) {
    auto value = read.get();
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ(*value, std::to_string(after)) << "a read sent after write " << after;
  }
  EXPECT_EQ(db.get("/order").value(), "1999");
}

// Issue 13: the gateway keeps one client's requests in order also when they race the passivation
// and re-activation of their database.
TEST_F(ClientTest, OneClientsWritesStayInOrderAcrossPassivations) {
  auto db = client_.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(testing::WriteInOrderAcrossPassivations(db, *node_, 300, 40), "");
}

TEST_F(ClientTest, ErrorsAreTypedAndReadable) {
  auto unknown = client_.open("/nope");
  EXPECT_EQ(unknown.status().code(), Code::kNoMatchingConfig);
  EXPECT_EQ(unknown.status().message(), "no database config matches \"/nope\"");
  EXPECT_EQ(unknown.put("/k", "v").code(), Code::kNoMatchingConfig);

  auto tiny = client_.open("/tiny/a");
  ASSERT_TRUE(tiny.ok());
  ASSERT_TRUE(tiny.put("/k", std::string(90, 'x')).ok());
  Status full = tiny.put("/k2", std::string(20, 'x'));
  EXPECT_EQ(full.code(), Code::kSizeLimitExceeded);
  EXPECT_NE(full.message().find("100 B"), std::string::npos) << full;
  EXPECT_EQ(tiny.put("/a/../b", "x").code(), Code::kInvalidKey);

  auto bad_address = client::connect("no-port");
  EXPECT_EQ(bad_address.status().code(), Code::kInvalidArgument);
  auto nobody = client::connect("127.0.0.1:1");
  EXPECT_EQ(nobody.status().code(), Code::kUnavailable) << nobody.status();
  EXPECT_EQ(nobody.open("/example/kv").status().code(), Code::kUnavailable);
}

TEST_F(ClientTest, BadOptionsFailCleanlyAndFuturesAreReal) {
  client::ClientOptions bad;
  bad.scheduler_policy = "Sharing";
  auto unusable = client::connect(address_, bad);
  EXPECT_EQ(unusable.status().code(), Code::kInvalidArgument) << unusable.status();
  EXPECT_EQ(unusable.open("/example/kv").status().code(), Code::kInvalidArgument);
  EXPECT_FALSE(unusable.databases().ok());
  EXPECT_FALSE(unusable.reload_configs().ok());
  client::ClientOptions polls_too_long;
  polls_too_long.busy_poll = kMaxBusyPoll + std::chrono::microseconds(1);
  auto refused_options = client::connect(address_, polls_too_long);
  EXPECT_EQ(refused_options.status().code(), Code::kInvalidArgument) << refused_options.status();
  EXPECT_NE(refused_options.status().message().find("busy_poll"), std::string::npos);
  polls_too_long.busy_poll = std::chrono::microseconds(-1);
  EXPECT_EQ(client::connect(address_, polls_too_long).status().code(), Code::kInvalidArgument);

  auto db = client_.open("/example/kv");
  auto put = db.put_async("/f", "v");
  // A real future: wait_for reports progress instead of "deferred".
  EXPECT_NE(put.wait_for(std::chrono::seconds(0)), std::future_status::deferred);
  ASSERT_EQ(put.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(put.get().ok());
  auto get = db.get_async("/f");
  ASSERT_EQ(get.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(*get.get(), "v");
  auto closed = db;
  closed.close();
  auto refused = closed.put_async("/f", "w");
  ASSERT_EQ(refused.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(refused.get().code(), Code::kInvalidArgument);
}

TEST_F(ClientTest, ManyRequestsInFlightOnOneConnection) {
  auto db = client_.open("/example/kv");
  std::vector<std::future<Status>> puts;
  for (int i = 0; i < 5000; ++i) puts.push_back(db.put_async("/p/" + std::to_string(i), "v"));
  for (auto& f : puts) ASSERT_TRUE(f.get().ok());
  std::vector<std::future<Result<std::string>>> gets;
  for (int i = 0; i < 5000; i += 7) gets.push_back(db.get_async("/p/" + std::to_string(i)));
  for (auto& f : gets) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, "v");
  }
  EXPECT_EQ(db.stats()->key_count, 5000u);
}

// Requests to many databases in flight together: the gateway answers them as they come, and
// holds a reply back while more messages wait for it (actors/client_gateway.cpp Answer), so the
// replies of a burst leave together. Every one arrives, each handle's in the order made.
TEST_F(ClientTest, RequestsToManyDatabasesInFlightTogetherAreAllAnswered) {
  constexpr int kDatabases = 32;
  std::vector<Database> dbs;
  for (int i = 0; i < kDatabases; ++i) {
    dbs.push_back(client_.open("/tiny/many" + std::to_string(i)));
    ASSERT_TRUE(dbs.back().ok()) << dbs.back().status();
  }
  for (int round = 0; round < 5; ++round) {
    std::vector<std::future<Status>> puts;
    std::vector<std::future<Result<std::string>>> gets;
    for (int i = 0; i < kDatabases; ++i) {
      const std::string value = std::to_string(round) + "/" + std::to_string(i);
      puts.push_back(dbs[i].put_async("/k", value));
      gets.push_back(dbs[i].get_async("/k"));
    }
    for (int i = 0; i < kDatabases; ++i) {
      ASSERT_EQ(puts[i].wait_for(30s), std::future_status::ready) << "round " << round << ", " << i;
      EXPECT_TRUE(puts[i].get().ok());
      ASSERT_EQ(gets[i].wait_for(30s), std::future_status::ready) << "round " << round << ", " << i;
      auto value = gets[i].get();
      ASSERT_TRUE(value.ok()) << value.status();
      EXPECT_EQ(*value, std::to_string(round) + "/" + std::to_string(i)) << "read before its put";
    }
  }
}

// The client's connection actor sends the puts waiting for several databases under its send
// cork and flushes it after: with heartbeats 20 s apart on both sides, nothing but that flush
// sends them, so a missing one leaves them waiting (the futures below would time out). Whether a
// commit finds several databases' puts waiting depends on timing; 16 databases make it usual.
TEST(ClientSendCorkTest, PutsToSeveralDatabasesLeaveAtTheCommitNotAtAHeartbeat) {
  TempDir dir;
  NodeOptions options = NodeIn(dir);
  options.peer_timeout = 60s;
  std::unique_ptr<Node> node;
  Status s = Node::Start(options, &node);
  ASSERT_TRUE(s.ok()) << s;
  client::ClientOptions client_options;
  client_options.peer_timeout = 60s;
  client_options.request_timeout = 60s;
  client::Client client =
      client::connect("127.0.0.1:" + std::to_string(node->port()), client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<Database> dbs;
  for (int i = 0; i < 16; ++i) {
    dbs.push_back(client.open("/tiny/cork" + std::to_string(i)));
    ASSERT_TRUE(dbs.back().ok()) << dbs.back().status();
  }
  for (int round = 0; round < 5; ++round) {
    std::vector<std::future<Status>> puts;
    for (auto& db : dbs) puts.push_back(db.put_async("/k", std::to_string(round)));
    for (size_t i = 0; i < puts.size(); ++i) {
      ASSERT_EQ(puts[i].wait_for(10s), std::future_status::ready)
          << "round " << round << ", database " << i << ": held past the commit";
      EXPECT_TRUE(puts[i].get().ok());
    }
  }
}

TEST_F(ClientTest, NodeShutdownFailsRequestsAndClientReconnects) {
  auto db = client_.open("/example/kv");
  ASSERT_TRUE(db.put("/k", "v").ok());
  const uint16_t port = node_->port();
  node_.reset();
  Status gone = db.put("/k", "v2");
  EXPECT_EQ(gone.code(), Code::kUnavailable) << gone;

  // The node comes back on the same port and data: the same handle works again.
  NodeOptions options;
  options.data_dir = dir_ / "data";
  options.config_dir = dir_ / "config";
  options.listen_port = port;
  ASSERT_TRUE(Node::Start(options, &node_).ok());
  auto value = db.get("/k");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "v");
}

TEST_F(ClientTest, HotReloadAddsDatabasesAndRejectsBadConfigs) {
  EXPECT_EQ(client_.open("/new/db").status().code(), Code::kNoMatchingConfig);
  dir_.Write("config/new.yaml", "matcher: /new/db\nsize: 1MB\n");
  auto summary = client_.reload_configs();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_NE(summary->find("loaded 3 database configs"), std::string::npos) << *summary;
  auto fresh = client_.open("/new/db");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ASSERT_TRUE(fresh.put("/k", "v").ok());

  dir_.Write("config/broken.yaml", "matcher: /broken\nsize: lots\n");
  auto rejected = client_.reload_configs();
  EXPECT_EQ(rejected.status().code(), Code::kInvalidConfig);
  EXPECT_NE(rejected.status().message().find("broken.yaml:2"), std::string::npos)
      << rejected.status();
  // The previous configs stay active.
  auto still = fresh.get("/k");
  EXPECT_TRUE(still.ok()) << still.status();
  EXPECT_TRUE(client_.open("/example/kv").ok());
  auto configs = client_.configs();
  ASSERT_TRUE(configs.ok()) << configs.status();
  EXPECT_EQ(configs->size(), 3u);
}

TEST_F(ClientTest, CatalogAndConfigsAreListed) {
  ASSERT_TRUE(client_.open("/tiny/x").ok());
  auto dbs = client_.databases();
  ASSERT_TRUE(dbs.ok()) << dbs.status();
  ASSERT_EQ(dbs->size(), 1u);
  EXPECT_EQ((*dbs)[0].path, "/tiny/x");
  EXPECT_EQ((*dbs)[0].config_id, "tiny");
  auto configs = client_.configs();
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 2u);
  EXPECT_EQ((*configs)[1].matcher, "/tiny/*");
  EXPECT_EQ((*configs)[1].matcher_kind, "wildcard");
  EXPECT_EQ((*configs)[1].size_bytes, 100u);
}

TEST_F(ClientTest, GarbageOnTheNodePortDoesNotHurtIt) {
  auto db = client_.open("/example/kv");
  ASSERT_TRUE(db.put("/before", "x").ok());
  std::mt19937 rng(1234);
  for (int round = 0; round < 20; ++round) {
    int fd = kvmesh::testing::Connect(node_->port());
    ASSERT_GE(fd, 0);
    std::string junk(1 + rng() % 4096, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (round % 4 == 0) junk = std::string(8, '\xff');  // a huge announced payload size
    (void)::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
  // Still serving, nothing lost.
  auto value = client::connect(address_).open("/example/kv").get("/before");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "x");
  EXPECT_TRUE(db.put("/after", "y").ok());
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

// A raw CAF peer (with no heartbeats), to send the node what the client library never would.
using kvmesh::testing::RawPeerConfig;

// A client that goes silent (no requests, no heartbeats) is closed by the node once it has heard
// nothing for its heartbeat timeout (3 s by default, as in kvmeshd), so dead or stalled clients
// do not hold connections for good.
TEST_F(ClientTest, ASilentClientIsClosedAfterTheHeartbeatTimeout) {
  RawPeerConfig config;
  caf::actor_system system{config};
  auto gateway =
      testing::ConnectRaw(system, node_->port(), /*heartbeats=*/false, std::chrono::seconds(60));
  ASSERT_TRUE(gateway) << gateway.status;
  caf::scoped_actor self{system};
  self->monitor(*gateway);
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  self->receive([&](caf::down_msg&) { closed = true; },
                caf::after(std::chrono::seconds(10)) >> [] {});
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(closed) << "the node kept a silent connection open for 10 s";
  EXPECT_GE(waited, 2500ms) << "closed before the heartbeat timeout";
  EXPECT_LT(waited, 8s);
}

TEST_F(ClientTest, OtherProtocolVersionsAndForeignMessagesGetClearErrors) {
  RawPeerConfig config;
  caf::actor_system system{config};
  auto gateway = testing::ConnectRaw(system, node_->port());
  ASSERT_TRUE(gateway) << gateway.status;
  caf::scoped_actor self{system};
  Status status;
  self->request(*gateway, std::chrono::seconds(10), atom::hello_v, uint32_t{999})
      .receive([](uint32_t, uint64_t) {}, [&](caf::error& err) { status = ToStatus(err); });
  EXPECT_EQ(status.code(), Code::kInvalidArgument) << status;
  EXPECT_EQ(status.message(),
            "incompatible protocol: the client speaks version 999, this node "
            "speaks version " +
                std::to_string(kClientProtocolVersion));
  // A message the gateway does not know is refused, and the node keeps serving.
  caf::error foreign;
  self->request(caf::actor_cast<caf::actor>(*gateway), std::chrono::seconds(10),
                std::string("DROP TABLE"), 42)
      .receive([](const caf::message&) {}, [&](caf::error& err) { foreign = err; });
  EXPECT_EQ(foreign, caf::sec::unexpected_message) << system.render(foreign);
  auto db = client_.open("/example/kv");
  EXPECT_TRUE(db.put("/still", "serving").ok());
  // Every answer comes from the gateway itself: no internal actor's handle reaches a client.
  for (int op = 0; op < 3; ++op) {
    caf::strong_actor_ptr responder;
    auto remember = [&] { responder = self->current_sender(); };
    auto request = [&](auto... args) {
      return self->request(*gateway, std::chrono::seconds(10), args...);
    };
    if (op == 0)
      request(atom::databases_v)
          .receive([&](std::vector<DatabaseInfo>&) { remember(); }, [](caf::error&) {});
    if (op == 1)
      request(atom::configs_v)
          .receive([&](std::vector<ConfigInfo>&) { remember(); }, [](caf::error&) {});
    if (op == 2) {
      request(atom::get_v, std::string("/example/kv"), std::string("/still"), testing::Later())
          .receive([&](std::string&) { remember(); }, [](caf::error&) {});
    }
    ASSERT_TRUE(responder) << "operation " << op;
    EXPECT_EQ(responder->address(), gateway->address()) << "operation " << op;
  }
  // An exit message from a peer must not stop the gateway: the next request from the same peer
  // (ordered after it on the same connection) is still answered.
  self->send_exit(*gateway, caf::exit_reason::user_shutdown);
  Status after_exit = Status::Internal("no answer");
  self->request(*gateway, std::chrono::seconds(10), atom::hello_v, kClientProtocolVersion)
      .receive([&](uint32_t, uint64_t) { after_exit = Status::OK(); },
               [&](caf::error& err) { after_exit = ToStatus(err); });
  EXPECT_TRUE(after_exit.ok()) << after_exit;
  EXPECT_TRUE(db.get("/still").ok());
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

TEST_F(ClientTest, ErrorMessagesDoNotStopTheGateway) {
  RawPeerConfig config;
  caf::actor_system system{config};
  auto gateway = testing::ConnectRaw(system, node_->port());
  ASSERT_TRUE(gateway) << gateway.status;
  caf::scoped_actor self{system};
  // An asynchronous error message would stop an actor with CAF's default error handler.
  caf::anon_send(caf::actor_cast<caf::actor>(*gateway), caf::make_error(caf::sec::runtime_error));
  Status alive = Status::Internal("no answer");
  self->request(*gateway, std::chrono::seconds(10), atom::hello_v, kClientProtocolVersion)
      .receive([&](uint32_t, uint64_t) { alive = Status::OK(); },
               [&](caf::error& err) { alive = ToStatus(err); });
  EXPECT_TRUE(alive.ok()) << alive;
  // (CAF's built-in ConfigServ and SpawnServ are erased from the node's registry; a lookup of an
  // erased name is never answered in CAF 0.17, so that is not asserted here.)
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

// Stands in for a node whose databases never answer: the handshake and open succeed, and every
// put or get is left in flight for good.
gateway_actor::behavior_type SilentGateway(gateway_actor::pointer self) {
  return {
      [](atom::hello, uint32_t) -> caf::result<uint32_t, uint64_t> {
        return {kClientProtocolVersion, uint64_t{42}};
      },
      [](atom::clock) { return Deadline::NowNs(); },
      [](atom::gateways) { return std::vector<caf::actor>{}; },
      [](atom::open, std::string&, Deadline) { return DatabaseStats{}; },
      [](atom::put, std::string&, std::string&, std::string&, Deadline) {
        return caf::delegated<atom::ok>{};
      },
      [](atom::put, std::string&, WriteBatch&, Deadline) {
        return caf::delegated<std::vector<caf::error>>{};
      },
      [](atom::get, std::string&, std::string&, Deadline) { return caf::delegated<std::string>{}; },
      [](atom::get, std::string&, PackedKeys&, Deadline) { return caf::delegated<GetManyReply>{}; },
      [](atom::get, std::string&, ReadRequest&, Deadline) {
        return caf::delegated<VersionedValue>{};
      },
      [](atom::batch, std::string&, WriteBatch&, atom::session, Deadline) {
        return caf::delegated<std::string>{};
      },
      [](atom::erase, std::string&, std::string&, Deadline) { return caf::delegated<atom::ok>{}; },
      [](atom::list, std::string&, ListOptions&, Deadline) { return ListPage{}; },
      [](atom::batch, std::string&, WriteBatch&, Deadline) { return caf::delegated<atom::ok>{}; },
      [](atom::commit, std::string&) {},
      [](atom::stats, std::string&, Deadline) { return DatabaseStats{}; },
      [](atom::status, std::string&, Deadline) { return ReplicationStatus{}; },
      [](atom::watch, std::string&, WatchRequest&, Deadline) { return WatchUpdate{}; },
      [](atom::members) { return std::vector<MemberStatus>{}; },
      [](atom::databases) { return std::vector<DatabaseInfo>{}; },
      [](atom::instances, std::string&, InstanceOptions&) { return InstancePage{}; },
      [](atom::drop, std::string&, Deadline) { return caf::delegated<atom::ok>{}; },
      [](atom::backup, std::string&, std::string&, Deadline) { return std::string(); },
      [](atom::backup, std::string&) { return std::string(); },
      [](atom::restore, std::string&, std::string&, Deadline) { return std::string(); },
      [](atom::configs) { return std::vector<ConfigInfo>{}; },
      [](atom::reload) { return std::string(); },
      [](atom::configs, atom::put, const std::string&, const ConfigApplyOptions&) {
        return ConfigApplyResult{};
      },
      [](atom::configs, atom::erase, const std::string&) { return ConfigApplyResult{}; },
      [](atom::configs, atom::get, const std::string&) {
        return std::vector<ConfigHistoryEntry>{};
      },
      [](atom::drain, atom::put, uint64_t) { return std::string(); },
      [](atom::drain, atom::erase, uint64_t) { return std::string(); },
      [](atom::expire_due) {},
      [](atom::uncork) {},
  };
}

// Blocking calls wait in the caller's thread, asynchronous ones on the connection actor: both
// must fail as soon as the node goes, not after their (here one minute) timeout.
TEST(ClientConnectionTest, LostNodeFailsBlockingAndAsyncCallsInFlightPromptly) {
  RawPeerConfig config;
  auto system = std::make_unique<caf::actor_system>(config);
  auto gateway = system->spawn(SilentGateway);
  int port = 0;
  auto served = testing::ServeGateway(*system, gateway, &port);
  ASSERT_TRUE(served);
  client::ClientOptions options;
  options.request_timeout = std::chrono::minutes(1);
  auto client = client::connect("127.0.0.1:" + std::to_string(port), options);
  ASSERT_TRUE(client.ok()) << client.status();
  auto db = client.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();

  auto put = std::async(std::launch::async, [db] { return db.put("/k", "v"); });
  auto get = std::async(std::launch::async, [db] { return db.get("/k").status(); });
  auto async_put = db.put_async("/k2", "v");
  ASSERT_EQ(put.wait_for(300ms), std::future_status::timeout) << put.get();
  ASSERT_EQ(get.wait_for(0ms), std::future_status::timeout) << get.get();
  ASSERT_EQ(async_put.wait_for(0ms), std::future_status::timeout) << async_put.get();

  const auto lost_at = std::chrono::steady_clock::now();
  caf::anon_send_exit(gateway, caf::exit_reason::user_shutdown);
  gateway = nullptr;
  served.reset();  // closes the connection
  system.reset();
  for (auto* call : {&put, &get, &async_put}) {
    ASSERT_EQ(call->wait_for(10s), std::future_status::ready);
    Status s = call->get();
    EXPECT_EQ(s.code(), Code::kUnavailable) << s;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - lost_at, 10s);
  // The next call tries to reconnect, and says the node is unreachable.
  EXPECT_EQ(db.put("/k", "v").code(), Code::kUnavailable);
}

// Requests that get no answer time out at their deadline (the client keeps deadlines itself,
// not in CAF's timer), blocking and asynchronous alike, and the connection stays usable.
TEST(ClientConnectionTest, UnansweredRequestsTimeOutAtTheirDeadline) {
  RawPeerConfig config;
  caf::actor_system system{config};
  auto gateway = system.spawn(SilentGateway);
  int port = 0;
  auto served = testing::ServeGateway(system, gateway, &port);
  ASSERT_TRUE(served);
  client::ClientOptions options;
  options.request_timeout = 300ms;
  auto client = client::connect("127.0.0.1:" + std::to_string(port), options);
  ASSERT_TRUE(client.ok()) << client.status();
  auto db = client.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  for (int round = 0; round < 2; ++round) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::future<Status>> calls;
    for (int i = 0; i < 20; ++i) calls.push_back(db.put_async("/k" + std::to_string(i), "v"));
    auto read = db.get_async("/k");
    Status blocking = db.put("/k", "v");
    EXPECT_EQ(blocking.code(), Code::kTimeout) << blocking;
    for (auto& call : calls) {
      ASSERT_EQ(call.wait_for(5s), std::future_status::ready);
      Status s = call.get();
      EXPECT_EQ(s.code(), Code::kTimeout) << s;
    }
    ASSERT_EQ(read.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(read.get().status().code(), Code::kTimeout);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_GE(took, 290ms);
    EXPECT_LT(took, 3s);
    // Not a lost connection: answered requests still work.
    EXPECT_TRUE(db.stats().ok());
  }
  caf::anon_send_exit(gateway, caf::exit_reason::user_shutdown);
}

// -- Connection bounds (transport/connection_guard.hpp) -------------------------------------------

/// Collects what the node logs while it lives (the default spdlog logger is swapped for it).
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return stream_.str();
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream stream_;
};

// -- Exits from the node (messages/remote_exits.hpp) ---------------------------------------------

// Stands in for a hostile node: it answers every request, and first sends the requester (in the
// client library, the connection actor for asynchronous calls, a blocking caller otherwise) exits
// of every reason, kill included, and an asynchronous error message.
gateway_actor::behavior_type HostileGateway(gateway_actor::pointer self) {
  auto attack = [self] {
    auto requester = caf::actor_cast<caf::actor>(self->current_sender());
    if (!requester) return;
    for (const caf::error& reason :
         {caf::error{caf::exit_reason::kill}, caf::error{caf::exit_reason::user_shutdown},
          caf::error{caf::exit_reason::unknown}, ToError(Status::Internal("from the node"))}) {
      self->send_exit(requester, reason);
      // (A typed actor cannot send() to an untyped handle: enqueue by hand.)
      caf::actor_cast<caf::strong_actor_ptr>(requester)->enqueue(
          self->ctrl(), caf::make_message_id(), caf::make_message(reason), self->context());
    }
  };
  return {
      [](atom::hello, uint32_t) -> caf::result<uint32_t, uint64_t> {
        return {kClientProtocolVersion, uint64_t{42}};
      },
      [](atom::clock) { return Deadline::NowNs(); },
      [](atom::gateways) { return std::vector<caf::actor>{}; },
      [](atom::open, std::string&, Deadline) { return DatabaseStats{}; },
      [=](atom::put, std::string&, std::string&, std::string&, Deadline) {
        attack();
        return atom::ok_v;
      },
      [=](atom::put, std::string&, WriteBatch& puts, Deadline) {
        attack();
        return std::vector<caf::error>(puts.ops.size());
      },
      [=](atom::get, std::string&, std::string& key, Deadline) {
        attack();
        return key;
      },
      [=](atom::get, std::string&, PackedKeys& packed, Deadline) {
        attack();
        std::vector<std::string_view> keys;
        (void)packed.Unpack(kMaxGetsPerMessage, &keys);
        GetManyReply reply;
        for (auto key : keys) {
          reply.errors.emplace_back();
          reply.values.emplace_back(key);
        }
        return reply;
      },
      [](atom::get, std::string&, ReadRequest& request, Deadline) {
        return VersionedValue{request.key, ""};
      },
      [](atom::batch, std::string&, WriteBatch&, atom::session, Deadline) { return std::string(); },
      [](atom::erase, std::string&, std::string&, Deadline) { return atom::ok_v; },
      [](atom::list, std::string&, ListOptions&, Deadline) { return ListPage{}; },
      [](atom::batch, std::string&, WriteBatch&, Deadline) { return atom::ok_v; },
      [](atom::commit, std::string&) {},
      [](atom::stats, std::string&, Deadline) { return DatabaseStats{}; },
      [](atom::status, std::string&, Deadline) { return ReplicationStatus{}; },
      [](atom::watch, std::string&, WatchRequest&, Deadline) { return WatchUpdate{}; },
      [](atom::members) { return std::vector<MemberStatus>{}; },
      [](atom::databases) { return std::vector<DatabaseInfo>{}; },
      [](atom::instances, std::string&, InstanceOptions&) { return InstancePage{}; },
      [](atom::drop, std::string&, Deadline) { return caf::delegated<atom::ok>{}; },
      [](atom::backup, std::string&, std::string&, Deadline) { return std::string(); },
      [](atom::backup, std::string&) { return std::string(); },
      [](atom::restore, std::string&, std::string&, Deadline) { return std::string(); },
      [](atom::configs) { return std::vector<ConfigInfo>{}; },
      [](atom::reload) { return std::string(); },
      [](atom::configs, atom::put, const std::string&, const ConfigApplyOptions&) {
        return ConfigApplyResult{};
      },
      [](atom::configs, atom::erase, const std::string&) { return ConfigApplyResult{}; },
      [](atom::configs, atom::get, const std::string&) {
        return std::vector<ConfigHistoryEntry>{};
      },
      [](atom::drain, atom::put, uint64_t) { return std::string(); },
      [](atom::drain, atom::erase, uint64_t) { return std::string(); },
      [](atom::expire_due) {},
      [](atom::uncork) {},
  };
}

// The node a client talks to learns the client's actors (they send it requests) and could send
// them exits; the client library ignores exits from other nodes, so a node cannot break the
// client's connection that way.
TEST(ClientConnectionTest, ExitsFromTheNodeDoNotBreakTheClient) {
  RawPeerConfig config;
  caf::actor_system system{config};
  auto gateway = system.spawn(HostileGateway);
  int port = 0;
  auto served = testing::ServeGateway(system, gateway, &port);
  ASSERT_TRUE(served);
  LogCapture log;
  client::ClientOptions options;
  options.request_timeout = 5s;
  auto client = client::connect("127.0.0.1:" + std::to_string(port), options);
  ASSERT_TRUE(client.ok()) << client.status();
  auto db = client.open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  // Each asynchronous call lets the node attack the connection actor; the later ones need it.
  for (int i = 0; i < 5; ++i) {
    auto put = db.put_async("/k", "v");
    ASSERT_EQ(put.wait_for(10s), std::future_status::ready) << "call " << i;
    Status s = put.get();
    ASSERT_TRUE(s.ok()) << "asynchronous put " << i << " after exits from the node: " << s;
  }
  // Blocking calls (a caller actor of their own, reused) too.
  for (int i = 0; i < 5; ++i) {
    auto got = db.get("/k" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << "get " << i << " after exits from the node: " << got.status();
    EXPECT_EQ(*got, "/k" + std::to_string(i));
  }
  // Said once (rate-limited), naming the node and the reason.
  const std::string text = log.text();
  EXPECT_NE(text.find("kvmesh.client_connection ignored an exit (exit_reason(kill)) from node " +
                      to_string(system.node())),
            std::string::npos)
      << text;
  caf::anon_send_exit(gateway, caf::exit_reason::user_shutdown);
}

class ConnectionGuardTest : public ::testing::Test {
 protected:
  void Start(const std::function<void(NodeOptions&)>& change) {
    NodeOptions options = NodeIn(dir_);
    change(options);
    Status s = Node::Start(options, &node_);
    ASSERT_TRUE(s.ok()) << s;
    address_ = "127.0.0.1:" + std::to_string(node_->port());
  }

  /// True once a fresh client can write through the node.
  bool ClientWorks() {
    auto db = client::connect(address_).open("/example/kv");
    return db.ok() && db.put("/guard", "ok").ok();
  }

  LogCapture log_;
  TempDir dir_;
  std::unique_ptr<Node> node_;
  std::string address_;
};

TEST_F(ConnectionGuardTest, ConnectionsThatNeverHandshakeAreClosedAtTheDeadline) {
  Start([](NodeOptions& o) { o.peer_timeout = 1s; });
  if (HasFatalFailure()) return;
  // A peer that completes its handshake first (and then heartbeats): it must outlive the
  // deadlines of the others. Monitored, so that losing its connection shows.
  testing::RawPeerOptions peer_options;
  peer_options.heartbeat_interval = 100ms;
  RawPeerConfig config{peer_options};
  caf::actor_system system{config};
  auto gateway = testing::ConnectRaw(system, node_->port());
  ASSERT_TRUE(gateway) << gateway.status;
  caf::scoped_actor self{system};
  self->monitor(*gateway);
  // Silent ones, and one that stops half-way through its first header.
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) fds.push_back(testing::Connect(node_->port()));
  const int half = testing::Connect(node_->port());
  ASSERT_GE(half, 0);
  testing::SendAll(half, std::string("\x10\x00", 2));  // 2 of a frame header's 5 bytes
  fds.push_back(half);
  const auto start = std::chrono::steady_clock::now();
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(testing::WaitClosedByPeer(fd, 5s)) << "still open 5 s after connecting";
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 700ms) << "closed before the handshake deadline";
  EXPECT_LT(waited, 3s);
  for (int fd : fds) ::close(fd);
  EXPECT_NE(log_.text().find("that sent no handshake within 1000 ms"), std::string::npos)
      << log_.text();
  // The peer's deadline passed before theirs, so the sweep that closed them saw it too (its
  // loss would reach this process within the half second waited here).
  bool lost = false;
  self->receive([&](caf::down_msg&) { lost = true; }, caf::after(500ms) >> [] {});
  EXPECT_FALSE(lost) << "the node closed a connection that had completed its handshake";
}

TEST_F(ConnectionGuardTest, ConnectionsOverThePerAddressBoundAreClosedAtOnceAndLogged) {
  Start([](NodeOptions& o) {
    o.max_connections_per_address = 3;
    o.peer_timeout = 10s;  // the held connections outlive the test's checks
  });
  if (HasFatalFailure()) return;
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(testing::Connect(node_->port()));
  for (int fd : held) ASSERT_GE(fd, 0);
  // The fourth from 127.0.0.1 is closed at once, not at the handshake deadline.
  const int extra = testing::Connect(node_->port());
  ASSERT_GE(extra, 0);
  EXPECT_TRUE(testing::WaitClosedByPeer(extra, 2s));
  ::close(extra);
  for (int fd : held) {
    EXPECT_FALSE(testing::WaitClosedByPeer(fd, 10ms)) << "a connection within the bound closed";
  }
  EXPECT_FALSE(ClientWorks()) << "a client got in over the bound";
  const std::string log = log_.text();
  EXPECT_NE(log.find("refused a connection from 127.0.0.1 to the client port " +
                     std::to_string(node_->port())),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("max_connections_per_address is 3"), std::string::npos) << log;
  // Once they go, clients get in again.
  for (int fd : held) ::close(fd);
  EXPECT_TRUE(Eventually(5s, [&] { return ClientWorks(); }));
}

TEST_F(ConnectionGuardTest, ConnectionsOverTheTotalBoundAreClosedAtOnce) {
  Start([](NodeOptions& o) {
    o.max_connections = 2;
    o.peer_timeout = 10s;
  });
  if (HasFatalFailure()) return;
  const int a = testing::Connect(node_->port()), b = testing::Connect(node_->port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  const int extra = testing::Connect(node_->port());
  ASSERT_GE(extra, 0);
  EXPECT_TRUE(testing::WaitClosedByPeer(extra, 2s));
  ::close(extra);
  EXPECT_NE(log_.text().find("max_connections is 2"), std::string::npos) << log_.text();
  ::close(a);
  ::close(b);
  EXPECT_TRUE(Eventually(5s, [&] { return ClientWorks(); }));
}

TEST_F(ConnectionGuardTest, TheClientRefusesValuesAndBatchesNoNodeAcceptsBeforeSending) {
  Start([](NodeOptions&) {});
  if (HasFatalFailure()) return;
  auto db = client::connect(address_).open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  const std::string huge(kMaxBatchBytes + 1, 'x');
  Status s = db.put("/huge", huge);
  EXPECT_EQ(s.code(), Code::kValueTooLarge) << s;
  EXPECT_NE(s.message().find("no kvmesh node accepts values over"), std::string::npos) << s;
  EXPECT_EQ(db.put_async("/huge", huge).get().code(), Code::kValueTooLarge);
  WriteBatch batch;
  batch.Put("/a", huge);
  s = db.write(batch);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("of keys and values; the maximum is"), std::string::npos) << s;
  // Nothing reached the node, and the connection is still good.
  EXPECT_EQ(log_.text().find("announced a message"), std::string::npos) << log_.text();
  EXPECT_TRUE(db.put("/small", "fine").ok());
}

}  // namespace
}  // namespace kvmesh
