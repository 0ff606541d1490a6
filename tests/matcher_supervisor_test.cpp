// The matcher supervisor: resolution, instantiation on first access, isolation, passivation.
#include <gtest/gtest.h>

#include <caf/all.hpp>

#include "actor_test_util.hpp"
#include "actors/matcher_supervisor.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::Ask;

constexpr const char* kConfigs = R"(
- matcher: /example/kv
  size: 1MB
- matcher: /profile/history/[^/]+
  size: 100B
- matcher: /data/*
  size: 1MB
)";

class MatcherSupervisorTest : public ::testing::Test {
 protected:
  MatcherSupervisorTest() : system_(config_), self_(system_) {
    auto configs = std::make_shared<config::ConfigSet>();
    Status s = config::ConfigSet::LoadString(kConfigs, "test.yaml", configs.get(), nullptr);
    EXPECT_TRUE(s.ok()) << s;
    storage::StoreOptions options;
    options.path = dir_ / "data";
    EXPECT_TRUE(storage::Store::Open(options, &store_).ok());
    supervisor_ =
        system_.spawn(matcher_supervisor_impl, std::shared_ptr<const config::ConfigSet>(configs),
                      std::string(), store_, caf::timespan{0}, SingleNode(),
                      std::shared_ptr<security::AclStore>(), std::string("n1"));
  }
  std::shared_ptr<const ReplicationOptions> SingleNode() {
    auto replication = std::make_shared<ReplicationOptions>();
    replication->node_id = store_->node_id();
    return replication;
  }

  ~MatcherSupervisorTest() override {
    self_->send_exit(supervisor_, caf::exit_reason::user_shutdown);
  }

  database_client_actor Open(const std::string& path) {
    database_client_actor db;
    Status s = Ask(self_, supervisor_, &db, atom::open_v, path);
    EXPECT_TRUE(s.ok()) << s;
    return db;
  }

  uint64_t Active() {
    uint64_t n = 0;
    EXPECT_TRUE(Ask(self_, supervisor_, &n, atom::active_v).ok());
    return n;
  }

  kvmesh::testing::TempDir dir_;
  std::shared_ptr<storage::Store> store_;
  kvmesh::testing::TestSystemConfig config_;
  caf::actor_system system_;
  caf::scoped_actor self_;
  matcher_supervisor_actor supervisor_;
};

TEST_F(MatcherSupervisorTest, UnknownPathIsAClearError) {
  database_client_actor db;
  Status s = Ask(self_, supervisor_, &db, atom::open_v, std::string("/nope/kv"));
  EXPECT_EQ(s.code(), Code::kNoMatchingConfig) << s;
  EXPECT_EQ(s.message(), "no database config matches \"/nope/kv\"");
  // Regex and wildcard matchers are anchored: a longer path is not theirs.
  EXPECT_EQ(Ask(self_, supervisor_, &db, atom::open_v, std::string("/profile/history/a/b")).code(),
            Code::kNoMatchingConfig);
  EXPECT_EQ(Ask(self_, supervisor_, &db, atom::open_v, std::string("/data")).code(),
            Code::kNoMatchingConfig);
  EXPECT_EQ(Active(), 0u);
}

TEST_F(MatcherSupervisorTest, InstantiatesOnFirstAccessOnce) {
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(Ask(self_, supervisor_, &catalog, atom::databases_v).ok());
  EXPECT_TRUE(catalog.empty());
  database_client_actor first = Open("/example/kv");
  database_client_actor again = Open("/example/kv");  // (other spellings: NodePathTest)
  EXPECT_EQ(first, again);
  EXPECT_EQ(Active(), 1u);
  ASSERT_TRUE(Ask(self_, supervisor_, &catalog, atom::databases_v).ok());
  ASSERT_EQ(catalog.size(), 1u);
  EXPECT_EQ(catalog[0].path, "/example/kv");
}

TEST_F(MatcherSupervisorTest, PathsOfOneRegexConfigAreIsolated) {
  database_client_actor alice = Open("/profile/history/alice");
  database_client_actor bob = Open("/profile/history/bob");
  EXPECT_NE(alice, bob);
  atom::ok ok;
  ASSERT_TRUE(
      Ask(self_, alice, &ok, atom::put_v, std::string("/k"), std::string(90, 'a'), testing::Later())
          .ok());
  // Each path has its own 100 B budget: bob is not charged for alice's 92 bytes.
  ASSERT_TRUE(
      Ask(self_, bob, &ok, atom::put_v, std::string("/k"), std::string(90, 'b'), testing::Later())
          .ok());
  std::string value;
  ASSERT_TRUE(Ask(self_, alice, &value, atom::get_v, std::string("/k"), testing::Later()).ok());
  EXPECT_EQ(value, std::string(90, 'a'));
  ASSERT_TRUE(Ask(self_, bob, &value, atom::get_v, std::string("/k"), testing::Later()).ok());
  EXPECT_EQ(value, std::string(90, 'b'));
  EXPECT_EQ(
      Ask(self_, bob, &ok, atom::put_v, std::string("/k2"), std::string(10, 'b'), testing::Later())
          .code(),
      Code::kSizeLimitExceeded);
}

TEST_F(MatcherSupervisorTest, PassivationStopsActorsAndReopenKeepsData) {
  database_client_actor db = Open("/data/one");
  atom::ok ok;
  ASSERT_TRUE(
      Ask(self_, db, &ok, atom::put_v, std::string("/k"), std::string("v"), testing::Later()).ok());
  self_->monitor(db);
  uint64_t stopped = 0;
  ASSERT_TRUE(Ask(self_, supervisor_, &stopped, atom::passivate_v).ok());
  EXPECT_EQ(stopped, 1u);
  EXPECT_EQ(Active(), 0u);
  // An open while the old actor may still be stopping waits for it, then spawns a new one.
  database_client_actor fresh = Open("/data/one");
  EXPECT_NE(fresh, db);
  bool down = false;
  self_->receive([&](caf::down_msg& msg) { down = msg.source == db.address(); },
                 caf::after(10s) >> [] {});
  EXPECT_TRUE(down);
  std::string value;
  ASSERT_TRUE(Ask(self_, fresh, &value, atom::get_v, std::string("/k"), testing::Later()).ok());
  EXPECT_EQ(value, "v");
  // A request to the passivated actor is bounced, not applied.
  EXPECT_EQ(
      Ask(self_, db, &ok, atom::put_v, std::string("/k"), std::string("lost"), testing::Later())
          .code(),
      Code::kUnavailable);
  ASSERT_TRUE(Ask(self_, fresh, &value, atom::get_v, std::string("/k"), testing::Later()).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(MatcherSupervisorTest, ShutdownAnswersOpensWaitingForAStoppingDatabase) {
  database_client_actor db = Open("/data/busy");
  // A backlog keeps the database busy (stopping, not yet down) while the supervisor works.
  for (int i = 0; i < 20000; ++i) {
    self_->send(db, atom::put_v, "/k/" + std::to_string(i), std::string(100, 'v'),
                testing::Later());
  }
  uint64_t stopped = 0;
  ASSERT_TRUE(Ask(self_, supervisor_, &stopped, atom::passivate_v).ok());
  ASSERT_EQ(stopped, 1u);
  Status open_status;
  auto pending =
      self_->request(supervisor_, std::chrono::seconds(5), atom::open_v, std::string("/data/busy"));
  self_->send_exit(supervisor_, caf::exit_reason::user_shutdown);
  pending.receive([&](database_client_actor&) { open_status = Status::Internal("got an actor"); },
                  [&](caf::error& err) { open_status = ToStatus(err); });
  // A dropped promise would let the open run into its 5 s deadline (kTimeout).
  EXPECT_EQ(open_status.code(), Code::kUnavailable) << open_status;
}

TEST_F(MatcherSupervisorTest, StaleIdleReportIsIgnored) {
  database_client_actor db = Open("/data/two");
  // An idle report naming another actor for this path must not passivate the running one.
  database_client_actor other = Open("/data/three");
  // (Database actors report with their full handle; the test holds client slices.)
  self_->send(supervisor_, atom::idle_v, std::string("/data/two"),
              caf::actor_cast<database_actor>(other));
  EXPECT_EQ(Active(), 2u);  // processed in order after the idle report
  self_->send(supervisor_, atom::idle_v, std::string("/data/two"),
              caf::actor_cast<database_actor>(db));
  EXPECT_EQ(Active(), 1u);
}

}  // namespace
}  // namespace kvmesh
