// Watch (README "Watch") on one node, through an embedded handle and over the network alike:
// puts and deletes under a prefix arrive, a resumed watch gets exactly what it missed, a slow
// watcher costs a position rather than a queue, and passivation does not lose a watcher.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "kvmesh/client.hpp"
#include "kvmesh/database.hpp"
#include "kvmesh/node.hpp"
#include "test_util.hpp"
#include "watch_test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::Eventually;
using kvmesh::testing::TempDir;
using kvmesh::testing::WatchCollector;

/// The body both backends run.
void ExerciseWatch(const Database& db, const std::string& name) {
  SCOPED_TRACE(name);
  WatchOptions options;
  options.prefix = "/w";
  options.with_values = true;
  options.poll_wait = 1s;
  WatchCollector seen;
  Watch watch;
  ASSERT_TRUE(db.put("/w/before", "old").ok());
  Status s = db.watch(options, seen.Callback(), &watch);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(watch.active());
  // One write at a time, each awaited: the watch reports every change made after it started,
  // under the prefix only ("/wx" and "/x" are not under "/w"; segments count).
  ASSERT_TRUE(db.put("/w/a", "1").ok());
  ASSERT_TRUE(seen.WaitFor(1));
  ASSERT_TRUE(db.put("/x/b", "outside").ok());
  ASSERT_TRUE(db.put("/wx", "outside").ok());
  ASSERT_TRUE(db.put("/w/b", "2").ok());
  ASSERT_TRUE(seen.WaitFor(2));
  ASSERT_TRUE(db.erase("/w/a").ok());
  ASSERT_TRUE(seen.WaitFor(3));
  EXPECT_EQ(seen.lines(), (std::vector<std::string>{"put /w/a=1", "put /w/b=2", "erase /w/a"}));

  // Stopped: the position resumes exactly after what was delivered.
  watch.stop();
  EXPECT_FALSE(watch.active());
  const std::string position = watch.position();
  ASSERT_FALSE(position.empty());
  ASSERT_TRUE(db.put("/w/c", "3").ok());
  ASSERT_TRUE(db.put("/w/b", "22").ok());
  ASSERT_TRUE(db.put("/w/b", "23").ok());  // collapsed with the one before: one event
  ASSERT_TRUE(db.erase("/w/never").ok());  // a delete of a key never written is a delete too
  ASSERT_TRUE(db.put("/x/c", "outside").ok());

  WatchCollector resumed;
  options.from = position;
  s = db.watch(options, resumed.Callback(), &watch);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(resumed.WaitFor(3));
  ASSERT_TRUE(db.put("/w/d", "4").ok());
  ASSERT_TRUE(resumed.WaitFor(4));
  EXPECT_EQ(resumed.lines(), (std::vector<std::string>{"put /w/c=3", "put /w/b=23",
                                                       "erase /w/never", "put /w/d=4"}));

  // Later writes keep coming.
  const size_t before = resumed.size();
  ASSERT_TRUE(db.put("/w/e", "5").ok());
  ASSERT_TRUE(resumed.WaitFor(before + 1));
  EXPECT_EQ(resumed.lines().back(), "put /w/e=5");
  watch.stop();
  EXPECT_TRUE(resumed.error().ok()) << resumed.error();

  // Bad positions and prefixes are refused by watch() itself, naming the problem.
  options.from = "not-a-position";
  s = db.watch(options, resumed.Callback(), &watch);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("not a position a watch gave"), std::string::npos) << s;
  EXPECT_FALSE(watch.active());
  options.from = "";
  options.prefix = "/a/../b";
  s = db.watch(options, resumed.Callback(), &watch);
  EXPECT_EQ(s.code(), Code::kInvalidKey) << s;
  EXPECT_FALSE(watch.active());
}

class WatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.Write("config/example.yaml", kvmesh::testing::kSeedExampleConfig);
    dir_.Write("config/data.yaml", "matcher: /data/*\nsize: 10MB\n");
  }

  std::unique_ptr<Node> Start(const std::string& name, int listen_port,
                              std::chrono::milliseconds grace = std::chrono::hours(24)) {
    NodeOptions options;
    options.data_dir = dir_ / name;
    options.config_dir = dir_ / "config";
    options.listen_port = listen_port;
    options.tombstone_grace = grace;
    std::unique_ptr<Node> node;
    Status s = Node::Start(options, &node);
    EXPECT_TRUE(s.ok()) << s;
    return node;
  }

  TempDir dir_;
};

TEST_F(WatchTest, PutsAndDeletesUnderAPrefixArriveAndResumeWithoutGapsOrRepeats) {
  std::unique_ptr<Node> embedded = Start("embedded", -1);
  ASSERT_TRUE(embedded);
  ExerciseWatch(embedded->open("/example/kv"), "embedded");

  std::unique_ptr<Node> remote = Start("remote", 0);
  ASSERT_TRUE(remote);
  client::Client client = client::connect("127.0.0.1:" + std::to_string(remote->port()));
  ASSERT_TRUE(client.ok()) << client.status();
  ExerciseWatch(client.open("/example/kv"), "network");
}

TEST_F(WatchTest, AWatchSurvivesPassivationOfItsDatabase) {
  std::unique_ptr<Node> node = Start("node", -1);
  ASSERT_TRUE(node);
  Database db = node->open("/data/p");
  WatchOptions options;
  options.poll_wait = 2s;
  WatchCollector seen;
  Watch watch;
  ASSERT_TRUE(db.watch(options, seen.Callback(), &watch).ok());
  for (int round = 0; round < 3; ++round) {
    // Passivated with a pull held: it is answered, and the next pull re-opens the database.
    Result<uint64_t> stopped = node->passivate_all();
    ASSERT_TRUE(stopped.ok()) << stopped.status();
    ASSERT_TRUE(db.put("/k" + std::to_string(round), "v").ok());
    ASSERT_TRUE(seen.WaitFor(round + 1));
  }
  EXPECT_EQ(seen.lines(), (std::vector<std::string>{"put /k0=", "put /k1=", "put /k2="}));
}

TEST_F(WatchTest, ANetworkWatchReconnectsAfterItsNodeRestartsAndMissesNothing) {
  std::unique_ptr<Node> node = Start("node", 0);
  ASSERT_TRUE(node);
  const int port = node->port();
  client::ClientOptions client_options;
  client_options.peer_timeout = 1s;
  client::Client client = client::connect("127.0.0.1:" + std::to_string(port), client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  WatchOptions options;
  options.poll_wait = 1s;
  options.retry_interval = 100ms;
  WatchCollector seen;
  Watch watch;
  ASSERT_TRUE(client.open("/data/r").watch(options, seen.Callback(), &watch).ok());
  ASSERT_TRUE(node->open("/data/r").put("/before", "").ok());
  ASSERT_TRUE(seen.WaitFor(1));
  // The node goes away with a pull in flight (the watch retries), and comes back on its port.
  node.reset();
  node = Start("node", port);
  ASSERT_TRUE(node);
  ASSERT_TRUE(node->open("/data/r").put("/after", "").ok());
  ASSERT_TRUE(seen.WaitFor(2));
  ASSERT_TRUE(node->open("/data/r").put("/later", "").ok());
  ASSERT_TRUE(seen.WaitFor(3));
  watch.stop();
  EXPECT_EQ(seen.lines(), (std::vector<std::string>{"put /before=", "put /after=", "put /later="}));
  EXPECT_TRUE(seen.error().ok()) << seen.error();
}

TEST_F(WatchTest, AnEmbeddedWatchEndsWhenItsNodeStops) {
  std::unique_ptr<Node> node = Start("node", -1);
  ASSERT_TRUE(node);
  WatchOptions options;
  options.poll_wait = 1s;
  options.retry_interval = 20ms;
  WatchCollector seen;
  Watch watch;
  Database db = node->open("/data/stop");
  ASSERT_TRUE(db.watch(options, seen.Callback(), &watch).ok());
  ASSERT_TRUE(db.put("/k", "").ok());
  ASSERT_TRUE(seen.WaitFor(1));
  // A stopped node never answers again (a node started again is a new node): the watch ends
  // with one last call naming why, instead of retrying every retry_interval for ever.
  node.reset();
  ASSERT_TRUE(Eventually(10s, [&] { return !watch.active(); }))
      << "the watch still retries a stopped node";
  EXPECT_EQ(seen.error().code(), Code::kUnavailable) << seen.error();
  EXPECT_NE(seen.error().message().find("stopped"), std::string::npos) << seen.error();
}

TEST_F(WatchTest, ASlowWatcherFallsBehindToAPositionNotAQueue) {
  std::unique_ptr<Node> node = Start("node", -1);
  ASSERT_TRUE(node);
  Database db = node->open("/data/slow");
  std::mutex mutex;
  std::condition_variable cv;
  bool release = false;
  std::vector<std::string> events;
  std::atomic<int> updates{0};
  Watch watch;
  WatchOptions options;
  options.with_values = true;
  Status s = db.watch(
      options,
      [&](Result<WatchUpdate> update) {
        ASSERT_TRUE(update.ok()) << update.status();
        std::unique_lock<std::mutex> lock(mutex);
        for (const WatchEvent& e : update->events) events.push_back(e.key + "=" + e.value);
        // The first update blocks until released: the watcher is slow.
        if (updates++ == 0) cv.wait_for(lock, 30s, [&] { return release; });
      },
      &watch);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(db.put("/first", "0").ok());
  ASSERT_TRUE(Eventually(10s, [&] { return updates.load() == 1; }));
  // 2000 writes to 10 keys while the watcher is stuck: none waits for it.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1; i <= 2000; ++i) {
    ASSERT_TRUE(db.put("/k/" + std::to_string(i % 10), std::to_string(i)).ok());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  {
    std::lock_guard<std::mutex> lock(mutex);
    release = true;
  }
  cv.notify_all();
  // It catches up with each key's latest value, once: 10 events, not 2000.
  auto caught_up = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    return events.size() >= 11;
  };
  ASSERT_TRUE(Eventually(10s, caught_up));
  watch.stop();
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_EQ(events.size(), 11u);
  EXPECT_EQ(events[0], "/first=0");
  std::vector<std::string> rest(events.begin() + 1, events.end());
  std::sort(rest.begin(), rest.end());
  EXPECT_EQ(rest.front(), "/k/0=2000");
  EXPECT_EQ(rest.back(), "/k/9=1999");
}

// Watch::position() is where to resume without missing anything: it never passes events the
// callback has not had yet, also right after a watch resumed from a position with changes
// waiting (a caller that stops there and saves it must get those changes next time).
TEST_F(WatchTest, ThePositionNeverPassesEventsNotYetHandedToTheCallback) {
  std::unique_ptr<Node> node = Start("node", -1);
  ASSERT_TRUE(node);
  Database db = node->open("/data/position");
  std::string start;
  {
    Watch now;
    ASSERT_TRUE(db.watch(
                      {}, [](Result<WatchUpdate>) {}, &now)
                    .ok());
    start = now.position();
    now.stop();
  }
  ASSERT_TRUE(db.put("/a", "1").ok());
  std::mutex mutex;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> events{0};
  WatchOptions options;
  options.from = start;
  Watch watch;
  ASSERT_TRUE(db.watch(
                    options,
                    [&](Result<WatchUpdate> update) {
                      if (!update.ok()) return;
                      std::unique_lock<std::mutex> lock(mutex);
                      cv.wait_for(lock, 30s, [&] { return release; });
                      events += static_cast<int>(update->events.size());
                    },
                    &watch)
                  .ok());
  // The callback holds /a: the position is still where it started.
  EXPECT_EQ(watch.position(), start);
  {
    std::lock_guard<std::mutex> lock(mutex);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(Eventually(10s, [&] { return watch.position() != start; }));
  EXPECT_EQ(events.load(), 1);
  watch.stop();
}

TEST_F(WatchTest, APositionOlderThanHalfTheTombstoneGraceIsRefused) {
  std::unique_ptr<Node> node = Start("node", -1, 2s);
  ASSERT_TRUE(node);
  Database db = node->open("/data/old");
  WatchCollector seen;
  Watch watch;
  ASSERT_TRUE(db.watch({}, seen.Callback(), &watch).ok());
  const std::string position = watch.position();
  watch.stop();
  WatchOptions options;
  options.from = position;
  // Half the grace is 1 s: the same position is refused once that has passed.
  Status s;
  ASSERT_TRUE(Eventually(10s, [&] {
    s = db.watch(options, seen.Callback(), &watch);
    watch.stop();
    return !s.ok();
  }));
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("watch position expired"), std::string::npos) << s;
}

}  // namespace
}  // namespace kvmesh
