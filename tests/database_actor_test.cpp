// The database actor on its own: replies, error kinds across the actor boundary, idle reports.
#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <algorithm>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actor_test_util.hpp"
#include "actors/database_actor.hpp"
#include "actors/database_request.hpp"
#include "actors/watch_hub.hpp"
#include "storage/store.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::Ask;

class DatabaseActorTest : public ::testing::Test {
 protected:
  DatabaseActorTest() : system_(config_), self_(system_) {
    storage::StoreOptions options;
    options.path = dir_ / "data";
    EXPECT_TRUE(storage::Store::Open(options, &store_).ok());
  }

  database_actor Spawn(uint64_t limit, caf::timespan idle, matcher_supervisor_actor supervisor,
                       caf::timespan sync_interval = caf::timespan{0}) {
    std::unique_ptr<storage::DatabaseStore> db;
    EXPECT_TRUE(store_->OpenDatabase("/db", "cfg", limit, &db).ok());
    auto replication = std::make_shared<ReplicationOptions>();
    replication->node_id = store_->node_id();
    if (sync_interval.count() > 0) replication->sync_interval = sync_interval;
    return system_.spawn(
        database_actor_impl, std::shared_ptr<storage::DatabaseStore>(std::move(db)), supervisor,
        idle, std::shared_ptr<const ReplicationOptions>(replication),
        ReplicaSet{{store_->node_id()}, {}, 1, 1, 1}, std::shared_ptr<DirectReadTarget>());
  }

  kvmesh::testing::TempDir dir_;
  std::shared_ptr<storage::Store> store_;
  kvmesh::testing::TestSystemConfig config_;
  caf::actor_system system_;
  caf::scoped_actor self_;
};

TEST_F(DatabaseActorTest, ServesEveryOperationAndKeepsErrorKinds) {
  auto db = Spawn(100, caf::timespan{0}, matcher_supervisor_actor{});
  atom::ok ok;
  ASSERT_TRUE(
      Ask(self_, db, &ok, atom::put_v, std::string("/a"), std::string("x\0y", 3), testing::Later())
          .ok());
  std::string value;
  ASSERT_TRUE(Ask(self_, db, &value, atom::get_v, std::string("a"), testing::Later()).ok());
  EXPECT_EQ(value, std::string("x\0y", 3));

  Status missing = Ask(self_, db, &value, atom::get_v, std::string("/missing"), testing::Later());
  EXPECT_EQ(missing.code(), Code::kNotFound) << missing;
  EXPECT_NE(missing.message().find("\"/missing\""), std::string::npos) << missing;

  Status full =
      Ask(self_, db, &ok, atom::put_v, std::string("/b"), std::string(200, 'b'), testing::Later());
  EXPECT_EQ(full.code(), Code::kSizeLimitExceeded) << full;
  EXPECT_NE(full.message().find("\"/db\""), std::string::npos) << full;

  WriteBatch batch;
  batch.Put("/c", "1").Put("/d", "2").Erase("/a");
  ASSERT_TRUE(Ask(self_, db, &ok, atom::batch_v, batch, testing::Later()).ok());
  ListPage page;
  ListOptions options;
  ASSERT_TRUE(Ask(self_, db, &page, atom::list_v, options, testing::Later()).ok());
  EXPECT_EQ(page.keys, (std::vector<std::string>{"/c", "/d"}));
  DatabaseStats stats;
  ASSERT_TRUE(Ask(self_, db, &stats, atom::stats_v, testing::Later()).ok());
  EXPECT_EQ(stats.key_count, 2u);
  EXPECT_EQ(stats.used_bytes, 6u);
  EXPECT_EQ(stats.limit_bytes, 100u);
  EXPECT_EQ(stats.path, "/db");
  ASSERT_TRUE(
      Ask(self_, db, &ok, atom::erase_v, std::string("/never-there"), testing::Later()).ok());
  self_->send_exit(db, caf::exit_reason::user_shutdown);
}

// A stand-in supervisor that forwards idle reports to the test and, like the real one, answers
// them with passivate; it opens every path as `opens` (if set).
matcher_supervisor_actor::behavior_type FakeSupervisor(matcher_supervisor_actor::pointer self,
                                                       caf::actor observer,
                                                       database_client_actor opens) {
  return {
      [opens](atom::open, const std::string&) -> caf::result<database_client_actor> {
        if (opens) return opens;
        return ToError(Status::Internal("not used"));
      },
      [](atom::replica, const std::string&, uint64_t) -> caf::result<database_peer_actor> {
        return ToError(Status::Unavailable("no cluster in this test"));
      },
      [](atom::members, std::vector<MemberView>&) {},
      [](atom::dropped, const std::string&, const database_actor&) {},
      [](atom::databases) { return std::vector<DatabaseInfo>{}; },
      [](atom::backup, const std::string&) { return std::string(); },
      [](atom::instances, const std::string&, const InstanceOptions&) { return InstancePage{}; },
      [](atom::active) { return uint64_t{0}; },
      [](atom::status) { return std::vector<ReplicationStatus>{}; },
      [](atom::passivate) { return uint64_t{0}; },
      [](atom::configs) { return std::vector<ConfigInfo>{}; },
      [](atom::reload) { return std::string(); },
      [](atom::configs, atom::put, const std::string&, const ConfigApplyOptions&) {
        return ConfigApplyResult{};
      },
      [](atom::configs, atom::erase, const std::string&, const std::string&) {
        return ConfigApplyResult{};
      },
      [](atom::configs, atom::get, const std::string&) {
        return std::vector<ConfigHistoryEntry>{};
      },
      [](atom::configs, atom::changed) {},
      [=](atom::idle, const std::string& path, const database_actor& who) {
        caf::anon_send(observer, path, who);
        self->send(who, atom::passivate_v);
      },
      [](atom::drain, uint64_t, bool, const std::string&) { return std::string(); },
      [](atom::rebalance) {},
      [](atom::summary, uint64_t, const std::vector<std::string>&) {},
      [](atom::full_sync, uint64_t) {},
  };
}

TEST_F(DatabaseActorTest, ReportsIdlenessAndStopsOnPassivate) {
  auto supervisor = system_.spawn(FakeSupervisor, caf::actor{self_}, database_client_actor{});
  auto db = Spawn(1000, std::chrono::duration_cast<caf::timespan>(20ms), supervisor);
  self_->monitor(db);
  // Only the supervisor may passivate a database (other nodes hold its handle, and may name
  // other actors of this node as the sender): if this one counted, the actor would stop before
  // its idle report.
  self_->send(db, atom::passivate_v);
  bool reported = false;
  self_->receive(
      [&](const std::string& path, const database_actor& who) {
        EXPECT_EQ(path, "/db");
        EXPECT_EQ(who, db);
        reported = true;
      },
      caf::after(10s) >> [] {});
  ASSERT_TRUE(reported) << "no idle report within 10 s";
  bool down = false;
  self_->receive([&](caf::down_msg& msg) { down = msg.source == db.address(); },
                 caf::after(10s) >> [] {});
  EXPECT_TRUE(down);
  self_->send_exit(supervisor, caf::exit_reason::user_shutdown);
}

// Issue 13: a request the database actor gets only after its deadline (it waited in a mailbox or a
// socket buffer) is refused unapplied, with an error that says so.
TEST_F(DatabaseActorTest, RequestsPastTheirDeadlineAreRefusedUnapplied) {
  auto db = Spawn(1000, caf::timespan{0}, matcher_supervisor_actor{});
  atom::ok ok;
  ASSERT_TRUE(
      Ask(self_, db, &ok, atom::put_v, std::string("/k"), std::string("first"), testing::Later())
          .ok());
  const Deadline soon = Deadline::In(20ms);
  // Bounded: the deadline is 20 ms away.
  ASSERT_TRUE(testing::Eventually(10s, [&] { return soon.Passed(); }));
  WriteBatch batch;
  batch.Put("/k", "batched").Put("/other", "x");
  const std::vector<Status> refused = {
      Ask(self_, db, &ok, atom::put_v, std::string("/k"), std::string("late"), soon),
      Ask(self_, db, &ok, atom::erase_v, std::string("/k"), soon),
      Ask(self_, db, &ok, atom::batch_v, batch, soon),
  };
  for (const Status& s : refused) {
    EXPECT_EQ(s.code(), Code::kTimeout) << s;
    EXPECT_NE(s.message().find("deadline exceeded"), std::string::npos) << s;
    EXPECT_NE(s.message().find("not applied"), std::string::npos) << s;
  }
  std::string value;
  ASSERT_TRUE(Ask(self_, db, &value, atom::get_v, std::string("/k"), testing::Later()).ok());
  EXPECT_EQ(value, "first");
  EXPECT_EQ(Ask(self_, db, &value, atom::get_v, std::string("/other"), testing::Later()).code(),
            Code::kNotFound);
  self_->send_exit(db, caf::exit_reason::user_shutdown);
}

// Requests to a local database actor keep their deadline without a CAF request timeout (see
// LocalDeadlines): an attempt still unanswered at its deadline fails with request_timeout, a
// late answer is dropped, and answers in time are delivered.
TEST_F(DatabaseActorTest, LocalDeadlinesExpireUnansweredRequestsOnly) {
  // Answers a put with key "answer" at once; holds every other put unanswered.
  auto stub = system_.spawn([](caf::event_based_actor* self) -> caf::behavior {
    auto held = std::make_shared<std::vector<caf::response_promise>>();
    return {[self, held](atom::put, const std::string& key, const std::string&,
                         Deadline) -> caf::result<atom::ok> {
      if (key == "answer") return atom::ok_v;
      held->push_back(self->make_response_promise());
      return caf::delegated<atom::ok>();
    }};
  });
  auto target = caf::actor_cast<database_client_actor>(stub);
  std::promise<std::vector<std::string>> results;
  auto requester = system_.spawn([&, target](caf::event_based_actor* self) {
    auto route = std::make_shared<DatabaseRoute>();
    route->timeout = std::chrono::milliseconds(50);
    auto deadlines = std::make_shared<LocalDeadlines>();
    deadlines->set_schedule_check([self, deadlines](caf::timespan period) {
      self->delayed_send(self, period, atom::tick_v);
    });
    route->local_deadlines = deadlines;
    auto got = std::make_shared<std::vector<std::string>>();
    auto record = [&results, got](caf::expected<atom::ok> reply) {
      got->push_back(reply ? "ok" : to_string(reply.error()));
      if (got->size() == 2) results.set_value(*got);
    };
    SendToDatabase<atom::ok>(self, *route, target, record, atom::put_v, std::string("answer"),
                             std::string("v"), testing::Later());
    SendToDatabase<atom::ok>(self, *route, target, record, atom::put_v, std::string("held"),
                             std::string("v"), testing::Later());
    return caf::behavior{[deadlines](atom::tick) { deadlines->ExpireDue(); }};
  });
  auto future = results.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  const std::vector<std::string> expected = {"ok",
                                             to_string(caf::make_error(caf::sec::request_timeout))};
  EXPECT_EQ(future.get(), expected);
  caf::anon_send_exit(requester, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(stub, caf::exit_reason::user_shutdown);
}

// RequestWithin (the deadlines of a replica's requests to its peers, and of the embedded API's):
// a reply in time is delivered once, an unanswered request fails once with request_timeout, and
// its reply arriving after that is dropped.
TEST_F(DatabaseActorTest, RequestWithinDeliversOnceAndDropsALateReply) {
  // Answers puts at once, except one of key "late": that one when told (atom::commit).
  auto stub = system_.spawn([](caf::event_based_actor* self) -> caf::behavior {
    auto held = std::make_shared<std::vector<caf::response_promise>>();
    return {
        [self, held](atom::put, const std::string& key, const std::string&,
                     Deadline) -> caf::result<atom::ok> {
          if (key != "late") return atom::ok_v;
          held->push_back(self->make_response_promise());
          return caf::delegated<atom::ok>();
        },
        [held](atom::commit) {
          for (auto& promise : *held) promise.deliver(atom::ok_v);
          held->clear();
        },
    };
  });
  auto target = caf::actor_cast<database_client_actor>(stub);
  std::promise<std::vector<std::string>> results;
  auto requester = system_.spawn([&, target, stub](caf::event_based_actor* self) {
    auto deadlines = std::make_shared<LocalDeadlines>();
    deadlines->set_schedule_check(
        [self](caf::timespan period) { self->delayed_send(self, period, atom::tick_v); });
    auto got = std::make_shared<std::vector<std::string>>();
    auto ask = [self, deadlines, target, got](const std::string& key, caf::timespan timeout,
                                              std::function<void()> on_answer,
                                              std::function<void()> on_error) {
      RequestWithin(
          self, deadlines, timeout, target,
          [got, key, on_answer](atom::ok) {
            got->push_back(key + ": ok");
            on_answer();
          },
          [got, key, on_error](caf::error& err) {
            got->push_back(key + ": " + to_string(err));
            on_error();
          },
          atom::put_v, key, std::string("v"), testing::Later());
    };
    auto nothing = [] {};
    ask("now", std::chrono::seconds(10), nothing, nothing);
    ask("late", std::chrono::milliseconds(20), nothing, [self, stub, ask, got, &results] {
      // The stub answers "late" now, after its deadline, and then "last": the replies arrive
      // in that order, so "late"'s was handled before "last"'s.
      self->send(stub, atom::commit_v);
      ask(
          "last", std::chrono::seconds(10), [got, &results] { results.set_value(*got); }, [] {});
    });
    return caf::behavior{[deadlines](atom::tick) { deadlines->ExpireDue(); }};
  });
  auto future = results.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  std::vector<std::string> got = future.get();
  std::sort(got.begin(), got.end());
  const std::vector<std::string> expected = {
      "last: ok", "late: " + to_string(caf::make_error(caf::sec::request_timeout)), "now: ok"};
  EXPECT_EQ(got, expected);
  caf::anon_send_exit(requester, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(stub, caf::exit_reason::user_shutdown);
}

TEST_F(DatabaseActorTest, RequestsPendingWhenTheRequesterStopsAreDroppedAtOnce) {
  // Holds every put unanswered.
  auto stub = system_.spawn([](caf::event_based_actor* self) -> caf::behavior {
    auto held = std::make_shared<std::vector<caf::response_promise>>();
    return {[self, held](atom::put, const std::string&, const std::string&,
                         Deadline) -> caf::result<atom::ok> {
      held->push_back(self->make_response_promise());
      return caf::delegated<atom::ok>();
    }};
  });
  auto target = caf::actor_cast<database_client_actor>(stub);
  // The route outlives the requester, as a handle's route does in the embedded API.
  auto route = std::make_shared<DatabaseRoute>();
  route->timeout = std::chrono::hours(1);
  auto deadlines = std::make_shared<LocalDeadlines>();
  route->local_deadlines = deadlines;
  // Destroyed with the last copy of the request's callback: what makes a Completion answer.
  auto dropped = std::make_shared<std::promise<void>>();
  auto sentinel = std::shared_ptr<void>(nullptr, [dropped](void*) { dropped->set_value(); });
  std::promise<void> sent;
  auto requester = system_.spawn([&, target, sentinel](caf::event_based_actor* self) mutable {
    deadlines->set_schedule_check(
        [self](caf::timespan period) { self->delayed_send(self, period, atom::tick_v); });
    DropPendingOnExit(self, deadlines);
    SendToDatabase<atom::ok>(
        self, *route, target, [sentinel](caf::expected<atom::ok>) {}, atom::put_v,
        std::string("held"), std::string("v"), testing::Later());
    sentinel.reset();
    sent.set_value();
    return caf::behavior{[d = deadlines.get()](atom::tick) { d->ExpireDue(); }};
  });
  sent.get_future().wait();
  sentinel.reset();
  auto future = dropped->get_future();
  EXPECT_EQ(future.wait_for(100ms), std::future_status::timeout) << "still pending";
  caf::anon_send_exit(requester, caf::exit_reason::user_shutdown);
  EXPECT_EQ(future.wait_for(10s), std::future_status::ready)
      << "the pending request's callback outlived its requester";
  EXPECT_EQ(deadlines->pending(), 0u);
  caf::anon_send_exit(stub, caf::exit_reason::user_shutdown);
}

// Group commit (SyncMode::kAlways): writes waiting in the actor's mailbox together share one
// sync of the log, and each is acknowledged after it and stored. The writes are made to queue up
// deterministically: the system has one worker thread, held by another actor while they are sent.
// Group commit: the writes a database actor finds queued together are applied as one. The
// scheduler has one worker, which a holder actor blocks while the test queues messages, so they
// all wait in the mailbox together and the actor then runs them in one go.
class DatabaseActorGroupCommitTest : public ::testing::Test {
 protected:
  void Start(SyncMode sync, uint64_t limit) {
    storage::StoreOptions options;
    options.path = dir_ / "data";
    options.sync = sync;
    ASSERT_TRUE(storage::Store::Open(options, &store_).ok());
    std::unique_ptr<storage::DatabaseStore> handle;
    ASSERT_TRUE(store_->OpenDatabase("/db", "cfg", limit, &handle).ok());
    config_.set("scheduler.max-threads", size_t{1});
    system_ = std::make_unique<caf::actor_system>(config_);
    self_ = std::make_unique<caf::scoped_actor>(*system_);
    auto replication = std::make_shared<ReplicationOptions>();
    replication->node_id = store_->node_id();
    db_ = system_->spawn(
        database_actor_impl, std::shared_ptr<storage::DatabaseStore>(std::move(handle)),
        matcher_supervisor_actor{}, caf::timespan{0},
        std::shared_ptr<const ReplicationOptions>(replication),
        ReplicaSet{{store_->node_id()}, {}, 1, 1, 1}, std::shared_ptr<DirectReadTarget>());
    DatabaseStats stats;
    ASSERT_TRUE(Ask(*self_, db_, &stats, atom::stats_v, Deadline{}).ok());  // started and idle
  }

  /// Blocks the only worker until Release(): messages sent meanwhile queue up.
  void Hold() {
    std::promise<void> holding;
    std::shared_future<void> released = release_.get_future().share();
    holder_ = system_->spawn([&holding, released](caf::event_based_actor*) -> caf::behavior {
      return {[&holding, released](int) {
        holding.set_value();
        released.wait_for(30s);
      }};
    });
    caf::anon_send(holder_, 1);
    ASSERT_EQ(holding.get_future().wait_for(30s), std::future_status::ready);
  }
  void Release() { release_.set_value(); }

  /// The next reply to the test's actor: "ok", the value of a get, or the error's code name.
  std::string NextReply() {
    std::string out = "(none)";
    (*self_)->receive([&](atom::ok) { out = "ok"; }, [&](std::string& value) { out = value; },
                      [&](caf::error& err) { out = CodeName(ToStatus(err).code()); },
                      caf::after(30s) >> [&] { out = "no reply within 30 s"; });
    return out;
  }

  void TearDown() override {
    if (!system_) return;
    (*self_)->send_exit(db_, caf::exit_reason::user_shutdown);
    (*self_)->send_exit(holder_, caf::exit_reason::user_shutdown);
  }

  kvmesh::testing::TempDir dir_;
  std::shared_ptr<storage::Store> store_;
  kvmesh::testing::TestSystemConfig config_;
  std::unique_ptr<caf::actor_system> system_;
  std::unique_ptr<caf::scoped_actor> self_;
  database_actor db_;
  caf::actor holder_;
  std::promise<void> release_;
};

TEST_F(DatabaseActorGroupCommitTest, WritesQueuedTogetherShareOneSync) {
  Start(SyncMode::kAlways, 1u << 20);
  Hold();
  constexpr int kWrites = 20;
  const uint64_t syncs_before = store_->log_syncs();
  for (int i = 0; i < kWrites; ++i) {
    (*self_)->send(db_, atom::put_v, "/k" + std::to_string(i), "v" + std::to_string(i), Deadline{});
  }
  Release();
  for (int i = 0; i < kWrites; ++i) EXPECT_EQ(NextReply(), "ok") << i;
  EXPECT_EQ(store_->log_syncs() - syncs_before, 1u) << "syncs for " << kWrites << " queued writes";
  for (int i = 0; i < kWrites; ++i) {
    std::string value;
    ASSERT_TRUE(Ask(*self_, db_, &value, atom::get_v, "/k" + std::to_string(i), Deadline{}).ok())
        << i;
    EXPECT_EQ(value, "v" + std::to_string(i));
  }
}

// A group is bounded in bytes (one RocksDB write and one delta of at most 16 MiB of keys and
// values; a larger write alone): a peer takes at most 64 MiB of pushes, so many large writes
// arriving together must not become one delta no peer accepts.
TEST_F(DatabaseActorGroupCommitTest, LargeWritesQueuedTogetherAreCommittedInBoundedParts) {
  Start(SyncMode::kAlways, 1ull << 30);
  Hold();
  const uint64_t syncs_before = store_->log_syncs();
  for (int i = 0; i < 5; ++i) {
    (*self_)->send(db_, atom::put_v, "/big" + std::to_string(i), std::string(6u << 20, 'x'),
                   Deadline{});
  }
  Release();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(NextReply(), "ok") << i;
  // 6 + 6 MiB, 6 + 6 MiB, 6 MiB.
  EXPECT_EQ(store_->log_syncs() - syncs_before, 3u);
}

// A write of the group that would fail alone fails alone: its writer gets the error, the others
// are applied; a read queued behind the writes sees them.
TEST_F(DatabaseActorGroupCommitTest, EachWriterOfAGroupGetsTheAnswerItWouldGetAlone) {
  Start(SyncMode::kNone, 100);
  Hold();
  (*self_)->send(db_, atom::put_v, std::string("/x"), std::string(48, 'x'), Deadline{});  // 50 B
  (*self_)->send(db_, atom::put_v, std::string("/y"), std::string(58, 'y'), Deadline{});  // +60
  (*self_)->send(db_, atom::put_v, std::string("/z"), std::string("1"), Deadline{});      // +3
  WriteBatch checked;
  checked.Check("/z", {}).Put("/w", "never");  // /z exists by then
  (*self_)->send(db_, atom::batch_v, checked, Deadline{});
  (*self_)->send(db_, atom::get_v, std::string("/z"), Deadline{});
  Release();
  EXPECT_EQ(NextReply(), "ok");
  EXPECT_EQ(NextReply(), "size_limit_exceeded");
  EXPECT_EQ(NextReply(), "ok");
  EXPECT_EQ(NextReply(), "condition_failed");
  EXPECT_EQ(NextReply(), "1") << "the get must see the writes queued before it";
  DatabaseStats stats;
  ASSERT_TRUE(Ask(*self_, db_, &stats, atom::stats_v, Deadline{}).ok());
  EXPECT_EQ(stats.used_bytes, 53u);
  EXPECT_EQ(stats.key_count, 2u);
}

TEST(LocalDeadlinesTest, SettledAttemptsNeverExpire) {
  std::vector<caf::timespan> scheduled;
  LocalDeadlines deadlines;
  deadlines.set_schedule_check([&](caf::timespan period) { scheduled.push_back(period); });
  int expired = 0;
  auto count = [&](caf::error why) {
    EXPECT_EQ(why, caf::sec::request_timeout);
    ++expired;
  };
  const uint64_t a = deadlines.Add(std::chrono::milliseconds(0), count);
  const uint64_t b = deadlines.Add(std::chrono::hours(1), count);
  ASSERT_EQ(scheduled.size(), 1u);  // one check covers both
  EXPECT_EQ(scheduled[0], std::chrono::milliseconds(1));
  deadlines.ExpireDue();
  EXPECT_EQ(expired, 1);
  EXPECT_FALSE(deadlines.Settle(a));  // expired: its late answer is dropped
  EXPECT_EQ(scheduled.size(), 2u);    // b is still pending
  EXPECT_TRUE(deadlines.Settle(b));
  EXPECT_EQ(deadlines.pending(), 0u);
  deadlines.ExpireDue();
  EXPECT_EQ(expired, 1);
  EXPECT_EQ(scheduled.size(), 2u);  // nothing pending: no further check
}

// Checks come every tenth of the shortest timeout pending, and a check does not start a second
// chain while another is still to come in time (each chain went on for as long as anything was
// pending, at the shortest period ever seen: a read near its deadline among longer requests made
// a replica wake every millisecond, once per chain).
TEST(LocalDeadlinesTest, ChecksFollowTheShortestTimeoutPendingWithoutMultiplying) {
  std::vector<caf::timespan> scheduled;
  LocalDeadlines deadlines;
  deadlines.set_schedule_check([&](caf::timespan period) { scheduled.push_back(period); });
  int expired = 0;
  auto count = [&](caf::error) { ++expired; };
  deadlines.Add(std::chrono::hours(1), count);
  ASSERT_EQ(scheduled.size(), 1u);
  EXPECT_GT(scheduled[0], std::chrono::seconds(359)) << "a tenth of the timeout";
  deadlines.Add(std::chrono::milliseconds(0), count);
  deadlines.Add(std::chrono::milliseconds(0), count);
  ASSERT_EQ(scheduled.size(), 2u) << "one earlier check serves both short attempts";
  EXPECT_LE(scheduled[1], std::chrono::milliseconds(1));
  deadlines.ExpireDue();  // the early check
  EXPECT_EQ(expired, 2);
  EXPECT_EQ(scheduled.size(), 2u) << "the hour's check is still to come: no second chain";
  EXPECT_EQ(deadlines.pending(), 1u);
  deadlines.ExpireDue();  // the hour's check (nothing due): the chain goes on, once
  EXPECT_EQ(expired, 2);
  EXPECT_EQ(scheduled.size(), 3u);
  EXPECT_EQ(deadlines.pending(), 1u);
}

// The client's connection ends every request in flight at once when its node is lost.
TEST(LocalDeadlinesTest, EndAllEndsEveryPendingAttemptWithItsReason) {
  LocalDeadlines deadlines;
  deadlines.set_schedule_check([](caf::timespan) {});
  std::vector<caf::error> ended;
  auto record = [&](caf::error why) { ended.push_back(std::move(why)); };
  deadlines.Add(std::chrono::hours(1), record);
  const uint64_t settled = deadlines.Add(std::chrono::hours(1), record);
  deadlines.Add(std::chrono::hours(1), record);
  EXPECT_TRUE(deadlines.Settle(settled));
  const caf::error lost = ToError(Status::Unavailable("lost the connection"));
  deadlines.EndAll(lost);
  ASSERT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended[0], lost);
  EXPECT_EQ(ended[1], lost);
  EXPECT_EQ(deadlines.pending(), 0u);
  deadlines.ExpireDue();
  EXPECT_EQ(ended.size(), 2u);
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

// Stands in for a database actor whose puts take `delay` (a blocked worker, as a slow disk).
database_client_actor::behavior_type SlowDatabase(database_client_actor::pointer,
                                                  caf::timespan delay) {
  return testing::StubDatabase([delay] { std::this_thread::sleep_for(delay); }, "");
}

// One put through SendToDatabase from a fresh actor; the Status it ends with.
Status PutThrough(caf::actor_system& system, std::shared_ptr<DatabaseRoute> route,
                  database_client_actor target) {
  auto result = std::make_shared<std::promise<Status>>();
  auto future = result->get_future();
  system.spawn([=](caf::event_based_actor* self) {
    std::function<void(caf::expected<atom::ok>)> done = [=](caf::expected<atom::ok> reply) {
      result->set_value(reply ? Status::OK() : ToStatus(reply.error()));
      self->quit();
    };
    SendToDatabase<atom::ok>(self, *route, target, done, atom::put_v, std::string("/k"),
                             std::string("v"), testing::Later());
  });
  return future.get();
}

// The gateway's routes leave the deadline to its clients: a slow local database is waited for,
// where a route with a deadline gives up.
TEST(DatabaseRequestTest, NoLocalDeadlineWaitsForASlowLocalDatabase) {
  testing::TestSystemConfig config;
  caf::actor_system system{config};
  auto slow = system.spawn(SlowDatabase, caf::timespan{300ms});
  auto route = std::make_shared<DatabaseRoute>();
  route->path = "/slow";
  route->timeout = 50ms;
  Status bounded = PutThrough(system, route, slow);
  EXPECT_EQ(bounded.code(), Code::kTimeout) << bounded;
  route->no_local_deadline = true;
  Status unbounded = PutThrough(system, route, slow);
  EXPECT_TRUE(unbounded.ok()) << unbounded;
  caf::anon_send_exit(slow, caf::exit_reason::user_shutdown);
}

// A write's operations go to the database actor shared with the route that keeps them for a
// resend, not copied into each attempt's message: the attempt after a bounce (the database
// stopped before it ran the write) carries the very batch the first one did, whole.
TEST(DatabaseRequestTest, ABouncedBatchIsSentAgainWholeAndUncopied) {
  testing::TestSystemConfig config;
  caf::actor_system system{config};
  // Each batch seen is kept, so that a copy made for the second attempt could not take the
  // first one's address.
  struct Seen {
    std::mutex mutex;
    std::vector<std::shared_ptr<const WriteBatch>> batches;
    std::vector<size_t> ops;
  };
  auto seen = std::make_shared<Seen>();
  auto note = [seen](const SharedWriteBatch& batch) {
    std::lock_guard<std::mutex> lock(seen->mutex);
    seen->batches.push_back(batch.batch);
    seen->ops.push_back(batch.batch ? batch.batch->ops.size() : 0);
  };
  // The first database bounces the write, as a stopped one does; the one opened next applies it.
  auto stopped = system.spawn([=] {
    return testing::StubDatabase(nullptr, "", [=](const SharedWriteBatch& batch) {
      note(batch);
      return caf::result<atom::ok>(caf::make_error(caf::sec::request_receiver_down));
    });
  });
  auto reopened = system.spawn([=] {
    return testing::StubDatabase(nullptr, "", [=](const SharedWriteBatch& batch) {
      note(batch);
      return caf::result<atom::ok>(atom::ok_v);
    });
  });
  caf::scoped_actor observer{system};
  auto supervisor = system.spawn(FakeSupervisor, caf::actor{observer},
                                 caf::actor_cast<database_client_actor>(reopened));
  auto route = std::make_shared<DatabaseRoute>();
  route->path = "/db";
  route->timeout = 10s;
  route->supervisor = supervisor;
  auto result = std::make_shared<std::promise<Status>>();
  auto future = result->get_future();
  system.spawn([=](caf::event_based_actor* self) {
    auto ordered =
        std::make_shared<OrderedRoute>(route, caf::actor_cast<database_client_actor>(stopped));
    WriteBatch batch;
    batch.Put("/a", "1");
    batch.Put("/b", "2");
    batch.Erase("/c");
    ordered->Request<atom::ok>(
        self,
        [=](caf::expected<atom::ok> reply) {
          result->set_value(reply ? Status::OK() : ToStatus(reply.error()));
          self->quit();
        },
        testing::Later(), atom::batch_v, std::move(batch));
  });
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  Status s = future.get();
  EXPECT_TRUE(s.ok()) << s;
  std::lock_guard<std::mutex> lock(seen->mutex);
  ASSERT_EQ(seen->batches.size(), 2u);
  EXPECT_NE(seen->batches[0], nullptr);
  EXPECT_EQ(seen->batches[0].get(), seen->batches[1].get());
  EXPECT_EQ(seen->ops, (std::vector<size_t>{3, 3}));
  for (const auto& actor :
       {caf::actor_cast<caf::actor>(stopped), caf::actor_cast<caf::actor>(reopened),
        caf::actor_cast<caf::actor>(supervisor)}) {
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  }
}

// The shared writes go only to a database actor of the route's own node: to another node a
// batch goes as a WriteBatch and writes made together as a vector of them, the messages every
// version of kvmesh reads (a node of an older version drops a type it does not know unread, and
// the writes would wait out their timeout).
TEST(DatabaseRequestTest, WritesGoSharedOnlyToADatabaseOfTheirOwnNode) {
  // Two nodes of one process, each with a middleman.
  testing::RawPeerConfig config_a;
  testing::RawPeerConfig config_b;
  caf::actor_system a{config_a};
  caf::actor_system b{config_b};
  struct Seen {
    std::mutex mutex;
    std::map<std::string, int> kinds;
  };
  auto record = [](std::shared_ptr<Seen> seen) {
    return [seen](const char* kind) {
      std::lock_guard<std::mutex> lock(seen->mutex);
      ++seen->kinds[kind];
    };
  };
  // Three writes to `target` through one route: a batch alone, then two taken together.
  auto write_through = [&](const database_client_actor& target) {
    auto route = std::make_shared<DatabaseRoute>();
    route->path = "/db";
    route->timeout = 10s;
    auto answered = std::make_shared<std::promise<int>>();
    auto future = answered->get_future();
    a.spawn([=](caf::event_based_actor* self) {
      auto ordered = std::make_shared<OrderedRoute>(route, target);
      auto left = std::make_shared<int>(3);
      auto oks = std::make_shared<int>(0);
      auto done = [=](caf::expected<atom::ok> reply) {
        if (reply) ++*oks;
        if (--*left == 0) {
          answered->set_value(*oks);
          self->quit();
        }
      };
      WriteBatch alone;
      alone.Put("/a", "1").Put("/b", "2");
      ordered->Request<atom::ok>(self, done, testing::Later(), atom::batch_v, std::move(alone));
      for (const char* key : {"/c", "/d"}) {
        CoalescedWrite w;
        w.made = CoalescedWrite::Made::kBatch;
        w.batch.Put(key, "v");
        w.deadline = testing::Later();
        w.done = done;
        ordered->TakeWrite(std::move(w));
      }
      ordered->FlushWrites(self);
    });
    EXPECT_EQ(future.wait_for(30s), std::future_status::ready);
    return future.get();
  };

  auto remote_seen = std::make_shared<Seen>();
  auto remote =
      b.spawn([=] { return testing::StubDatabase(nullptr, "", nullptr, record(remote_seen)); });
  auto port = b.middleman().publish(remote, 0, "127.0.0.1");
  ASSERT_TRUE(port) << caf::to_string(port.error());
  auto proxy = a.middleman().remote_actor<database_client_actor>("127.0.0.1", *port);
  ASSERT_TRUE(proxy) << caf::to_string(proxy.error());
  EXPECT_EQ(write_through(*proxy), 3);
  {
    std::lock_guard<std::mutex> lock(remote_seen->mutex);
    EXPECT_EQ(remote_seen->kinds,
              (std::map<std::string, int>{{"WriteBatch", 1}, {"vector<WriteBatch>", 1}}));
  }

  auto local_seen = std::make_shared<Seen>();
  auto local =
      a.spawn([=] { return testing::StubDatabase(nullptr, "", nullptr, record(local_seen)); });
  EXPECT_EQ(write_through(local), 3);
  {
    std::lock_guard<std::mutex> lock(local_seen->mutex);
    EXPECT_EQ(local_seen->kinds,
              (std::map<std::string, int>{{"SharedWriteBatch", 1}, {"SharedWriteBatches", 1}}));
  }
  caf::anon_send_exit(remote, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(local, caf::exit_reason::user_shutdown);
}

// Watches cost the node a bounded number of held pulls, not queues of events: past
// WatchHub::kMaxHeld the next pull is refused at once, and one commit answers every held one.
// How long a pull is held is the client's to ask (wait_ms, its deadline), but a node holds one
// at most WatchHub::kMaxHold: held pulls keep a database active and take its slots.
TEST_F(DatabaseActorTest, AWatchPullIsHeldNoLongerThanTheNodesMaximumWhateverItAsks) {
  auto db = Spawn(1 << 20, caf::timespan{0}, matcher_supervisor_actor{});
  WatchRequest pull;
  pull.wait_ms = std::numeric_limits<uint32_t>::max();  // 49 days
  const auto start = std::chrono::steady_clock::now();
  bool answered = false;
  self_->send(db, atom::watch_v, pull, Deadline::In(std::chrono::hours(24)));
  self_->receive([&](WatchUpdate& update) { answered = update.events.empty(); },
                 [&](caf::error& err) { ADD_FAILURE() << system_.render(err); },
                 caf::after(WatchHub::kMaxHold + std::chrono::seconds(5)) >>
                     [&] { ADD_FAILURE() << "still held after kMaxHold + 5 s"; });
  EXPECT_TRUE(answered);
  EXPECT_LT(std::chrono::steady_clock::now() - start, WatchHub::kMaxHold + std::chrono::seconds(5));
  self_->send_exit(db, caf::exit_reason::user_shutdown);
}

TEST_F(DatabaseActorTest, HeldWatchPullsAreBoundedAndACommitAnswersThemAll) {
  auto db = Spawn(1 << 20, caf::timespan{0}, matcher_supervisor_actor{});
  WatchRequest pull;
  pull.wait_ms = 60000;  // held until a commit (the test ends long before)
  for (size_t i = 0; i < WatchHub::kMaxHeld; ++i) {
    self_->send(db, atom::watch_v, pull, testing::Later());
  }
  WatchUpdate update;
  Status refused = Ask(self_, db, &update, atom::watch_v, pull, testing::Later());
  EXPECT_EQ(refused.code(), Code::kUnavailable) << refused;
  EXPECT_NE(refused.message().find(std::to_string(WatchHub::kMaxHeld) + " watch pulls"),
            std::string::npos)
      << refused;
  atom::ok ok;
  ASSERT_TRUE(
      Ask(self_, db, &ok, atom::put_v, std::string("/k"), std::string("v"), testing::Later()).ok());
  size_t answered = 0;
  bool timed_out = false;
  for (size_t i = 0; i < WatchHub::kMaxHeld && !timed_out; ++i) {
    self_->receive(
        [&](WatchUpdate& u) {
          if (u.events.size() == 1 && u.events[0].key == "/k") ++answered;
        },
        caf::after(std::chrono::seconds(10)) >> [&] { timed_out = true; });
  }
  EXPECT_EQ(answered, WatchHub::kMaxHeld);
  // Room again: the next pull is held, not refused (answered empty when its wait ends).
  pull.wait_ms = 10;
  pull.position.clear();
  EXPECT_TRUE(Ask(self_, db, &update, atom::watch_v, pull, testing::Later()).ok());
  EXPECT_TRUE(update.events.empty());
  self_->send_exit(db, caf::exit_reason::user_shutdown);
}

// One commit wakes held pulls of different prefixes; those held at the same place share one
// read (WatchHub::OnWake), and each still gets exactly its own answer: its prefix's events, with
// values only if it asked, and none for a prefix the commit did not touch (that pull stays held).
TEST_F(DatabaseActorTest, HeldWatchPullsOfDifferentPrefixesEachGetTheirOwnAnswer) {
  auto db = Spawn(1 << 20, caf::timespan{0}, matcher_supervisor_actor{});
  auto pull = [](const std::string& prefix, bool values, uint32_t wait_ms) {
    WatchRequest r;
    r.prefix = prefix;
    r.with_values = values;
    r.wait_ms = wait_ms;
    return r;
  };
  constexpr int kEach = 10;
  for (int i = 0; i < kEach; ++i) {
    self_->send(db, atom::watch_v, pull("/a", false, 60000), testing::Later());
    self_->send(db, atom::watch_v, pull("", true, 60000), testing::Later());
    self_->send(db, atom::watch_v, pull("/b", false, 1000), testing::Later());
  }
  atom::ok ok;
  ASSERT_TRUE(
      Ask(self_, db, &ok, atom::put_v, std::string("/a/1"), std::string("x"), testing::Later())
          .ok());
  std::map<std::string, int> answers;
  bool timed_out = false;
  for (int i = 0; i < 3 * kEach && !timed_out; ++i) {
    self_->receive(
        [&](WatchUpdate& u) {
          std::string line;
          for (const WatchEvent& e : u.events) line += e.key + "=" + e.value + ";";
          ++answers[line];
        },
        [&](caf::error& err) { ADD_FAILURE() << system_.render(err); },
        caf::after(std::chrono::seconds(10)) >> [&] { timed_out = true; });
  }
  // /a: the key without its value; "": with it; /b: nothing (answered when its wait ended).
  EXPECT_EQ(answers,
            (std::map<std::string, int>{{"/a/1=;", kEach}, {"/a/1=x;", kEach}, {"", kEach}}));
  self_->send_exit(db, caf::exit_reason::user_shutdown);
}

// Found in review: a running database whose replicas are in sync (here it has no peers) stopped
// its rounds, so while it ran its expired keys were never removed and kept counting in stats and
// the size limit. Its rounds slow down instead (every 30 sync intervals) and still remove them.
TEST_F(DatabaseActorTest, ExpiredKeysOfARunningDatabaseInSyncAreStillRemoved) {
  auto db = Spawn(1 << 20, caf::timespan{0}, matcher_supervisor_actor{},
                  std::chrono::duration_cast<caf::timespan>(10ms));
  WriteBatch batch;
  batch.Put("/short", "v", /*ttl_ms=*/50).Put("/kept", "v");
  atom::ok ok;
  ASSERT_TRUE(Ask(self_, db, &ok, atom::batch_v, batch, testing::Later()).ok());
  uint64_t keys = 0;
  const bool removed = testing::Eventually(10s, [&] {
    DatabaseStats stats;
    if (!Ask(self_, db, &stats, atom::stats_v, testing::Later()).ok()) return false;
    keys = stats.key_count;
    return keys == 1;
  });
  EXPECT_TRUE(removed) << "still " << keys << " keys counted 10 s after one expired";
  self_->send_exit(db, caf::exit_reason::user_shutdown);
}

}  // namespace
}  // namespace kvmesh
