// PollingSharing (messages/polling_scheduler.hpp): a node's CAF workers poll the queue for a
// while before they sleep, so a hop between actors seldom needs a wake-up; idle, they sleep.
#include "messages/polling_scheduler.hpp"

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "kvmesh/node.hpp"
#include "kvmesh/types.hpp"
#include "messages/system_config.hpp"

namespace kvmesh {
namespace {

struct TestSystem {
  TestSystem(std::chrono::microseconds busy_poll, const std::string& policy) {
    ActorSystemSettings settings;
    settings.scheduler_policy = policy;
    settings.worker_threads = 2;
    settings.busy_poll = busy_poll;
    status = ConfigureActorSystem(settings, &cfg);
    if (status.ok()) system = std::make_unique<caf::actor_system>(cfg);
  }
  caf::actor_system_config cfg;
  Status status;
  std::unique_ptr<caf::actor_system> system;
};

// Requests one after another through two actors on the workers (a relay delegating to an echo):
// every one is answered, the workers find hops while they poll (at least 2: a loaded machine
// makes them back off, but never polling at all fails), and once the requests stop they stop
// polling (the time spent polling stops growing).
TEST(PollingSchedulerTest, WorkersFindHopsPollingAndStopWhenIdle) {
  TestSystem t(std::chrono::microseconds(200), "sharing");
  ASSERT_TRUE(t.status.ok()) << t.status.ToString();
  ASSERT_TRUE(WorkerPollingStats(*t.system).has_value()) << "the polling scheduler runs";
  auto echo = t.system->spawn([]() -> caf::behavior { return {[](int x) { return x + 1; }}; });
  auto relay = t.system->spawn([echo](caf::event_based_actor* self) -> caf::behavior {
    return {[=](int x) { return self->delegate(echo, x); }};
  });
  caf::scoped_actor client{*t.system};
  for (int i = 0; i < 2000; ++i) {
    int got = -1;
    client->request(relay, std::chrono::seconds(30), i)
        .receive([&](int y) { got = y; },
                 [&](caf::error& e) { ADD_FAILURE() << t.system->render(e); });
    ASSERT_EQ(got, i + 1) << i;
  }
  const BusyPoll::Stats busy = *WorkerPollingStats(*t.system);
  EXPECT_GE(busy.found_polling, 2u) << "slept " << busy.slept;
  // Idle: within 2 s (bounded), three reads 20 ms apart see no more polling.
  int64_t last = -1;
  int unchanged = 0;
  for (int i = 0; i < 100 && unchanged < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const int64_t now = WorkerPollingStats(*t.system)->polling_ns;
    unchanged = now == last ? unchanged + 1 : 0;
    last = now;
  }
  EXPECT_EQ(unchanged, 3) << "the workers kept polling while idle";
}

// 0 keeps CAF's own scheduler (a client's); so does the stealing policy; a bound past
// kMaxBusyPoll is refused, naming it.
TEST(PollingSchedulerTest, OnlyASharingSchedulerWithABoundPolls) {
  TestSystem off(std::chrono::microseconds(0), "sharing");
  ASSERT_TRUE(off.status.ok());
  EXPECT_FALSE(WorkerPollingStats(*off.system).has_value());
  TestSystem stealing(std::chrono::microseconds(200), "stealing");
  ASSERT_TRUE(stealing.status.ok());
  EXPECT_FALSE(WorkerPollingStats(*stealing.system).has_value());
  TestSystem too_long(kMaxBusyPoll + std::chrono::microseconds(1), "sharing");
  EXPECT_EQ(too_long.status.code(), Code::kInvalidArgument);
  EXPECT_NE(too_long.status.message().find("busy_poll"), std::string::npos);
}

// A node's actor system is made from its options in one place (NodeActorSystemSettings, which
// kvmeshd and the benchmark's echo servers use): its workers poll as busy_poll says, at least two
// of them by default, and network_workers picks who decodes messages.
TEST(PollingSchedulerTest, ANodesActorSystemIsMadeAsItsOptionsSay) {
  NodeOptions opts;
  const ActorSystemSettings defaults = NodeActorSystemSettings(opts, true);
  EXPECT_EQ(defaults.busy_poll, opts.busy_poll);
  EXPECT_GT(defaults.busy_poll.count(), 0) << "a node polls by default";
  EXPECT_GE(defaults.worker_threads, 2u);
  EXPECT_TRUE(defaults.network);
  EXPECT_EQ(defaults.peer_timeout, std::chrono::duration_cast<caf::timespan>(opts.peer_timeout));
  EXPECT_FALSE(defaults.deserialize_in_multiplexer);
  EXPECT_EQ(defaults.decode_workers, 0u);
  {
    caf::actor_system_config cfg;
    ASSERT_TRUE(ConfigureActorSystem(defaults, &cfg).ok());
    caf::actor_system system{cfg};
    EXPECT_TRUE(WorkerPollingStats(system).has_value()) << "the workers poll";
  }
  opts.busy_poll = std::chrono::microseconds(0);
  opts.worker_threads = 3;
  opts.network_workers = 0;
  opts.scheduler_policy = "stealing";
  opts.peer_timeout = std::chrono::milliseconds(1500);
  const ActorSystemSettings quiet = NodeActorSystemSettings(opts, false);
  EXPECT_EQ(quiet.busy_poll.count(), 0);
  EXPECT_EQ(quiet.worker_threads, 3u);
  EXPECT_FALSE(quiet.network);
  EXPECT_TRUE(quiet.deserialize_in_multiplexer);
  EXPECT_EQ(quiet.scheduler_policy, "stealing");
  EXPECT_EQ(quiet.peer_timeout, std::chrono::duration_cast<caf::timespan>(opts.peer_timeout));
  {
    ActorSystemSettings sharing = quiet;  // the stealing policy alone would not poll either
    sharing.scheduler_policy = "sharing";
    caf::actor_system_config cfg;
    ASSERT_TRUE(ConfigureActorSystem(sharing, &cfg).ok());
    caf::actor_system system{cfg};
    EXPECT_FALSE(WorkerPollingStats(system).has_value()) << "busy_poll 0: CAF's own scheduler";
  }
  opts.network_workers = 4;
  EXPECT_EQ(NodeActorSystemSettings(opts, true).decode_workers, 4u);
}

}  // namespace
}  // namespace kvmesh
