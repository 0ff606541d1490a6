// Clusters of real kvmeshd processes: membership through seeds and replication that survives
// a SIGKILLed member. (Single-process daemon behaviour is in daemon_test.cpp; in-process clusters
// are in cluster_test.cpp.)
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <string>
#include <vector>

#include "kvmesh/client.hpp"
#include "process_util.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::DaemonProcess;
using kvmesh::testing::Eventually;

// The nodes share the config directory of the daemon tests (daemon_test.cpp).
using ProcessClusterTest = kvmesh::testing::ProcessTest;

// Three kvmeshd processes form a cluster through seeds; a SIGKILLed replica loses nothing
// acknowledged and the others keep serving.
TEST_F(ProcessClusterTest, ThreeProcessesReplicateAndSurviveASigkill) {
  dir_.Write("config/strict.yaml",
             "- matcher: /strict/*\n  replication: {min: 2, max: 3}\n  size: 10MB\n");
  auto args = [&](const std::string& name, const std::string& seeds) {
    std::vector<std::string> a = {
        "--data-dir",     dir_ / name, "--config-dir",         dir_ / "config", "--port", "0",
        "--cluster-port", "0",         "--failure-timeout-ms", "1000"};
    if (!seeds.empty()) a.insert(a.end(), {"--seeds", seeds});
    return a;
  };
  DaemonProcess a, b, c;
  ASSERT_TRUE(a.Start(KVMESHD_PATH, args("a", ""))) << a.output();
  ASSERT_GT(a.cluster_port(), 0) << a.output();
  const std::string seed = "127.0.0.1:" + std::to_string(a.cluster_port());
  ASSERT_TRUE(b.Start(KVMESHD_PATH, args("b", seed))) << b.output();
  ASSERT_TRUE(c.Start(KVMESHD_PATH, args("c", seed))) << c.output();

  // c learns of b through a (the member list spreads), and every node sees two peers alive.
  auto alive_peers = [](const DaemonProcess& d) {
    auto members = client::connect(d.address()).members();
    if (!members.ok()) return -1;
    int alive = 0;
    for (const auto& m : *members) alive += (!m.self && m.alive) ? 1 : 0;
    return alive;
  };
  int seen_a = -1, seen_b = -1, seen_c = -1;
  Eventually(20s, [&] {
    seen_a = alive_peers(a);
    seen_b = alive_peers(b);
    seen_c = alive_peers(c);
    return seen_a == 2 && seen_b == 2 && seen_c == 2;
  });
  EXPECT_EQ(seen_a, 2) << "alive peers seen by a";
  EXPECT_EQ(seen_b, 2) << "alive peers seen by b";
  ASSERT_EQ(seen_c, 2) << "alive peers seen by c";

  // A config applied through a is in force on c (cluster-wide configs), and c's clients open it.
  auto applied =
      client::connect(a.address()).apply_configs("id: api\nmatcher: /api/*\nsize: 1MB\n");
  ASSERT_TRUE(applied.ok()) << applied.status();
  auto client_c = client::connect(c.address());
  EXPECT_TRUE(Eventually(10s, [&] { return client_c.open("/api/x").ok(); }))
      << client_c.open("/api/x").status();

  auto db = client::connect(a.address()).open("/strict/orders");
  ASSERT_TRUE(db.ok()) << db.status();
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(db.put("/o/" + std::to_string(i), "v" + std::to_string(i)).ok());
  }
  b.Kill(SIGKILL);
  auto via_c = client::connect(c.address()).open("/strict/orders");
  ASSERT_TRUE(via_c.ok()) << via_c.status();
  for (int i = 0; i < 100; ++i) {
    auto value = via_c.get("/o/" + std::to_string(i));
    ASSERT_TRUE(value.ok()) << i << ": " << value.status();
    EXPECT_EQ(*value, "v" + std::to_string(i));
  }
  // Two of three replicas are enough for min 2.
  EXPECT_TRUE(via_c.put("/after", "x").ok());
  auto status = via_c.replication_status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->replicas.size(), 3u);
  EXPECT_EQ(status->key_count, 101u);
}

// A node that holds no replica of a database forwards its clients' requests to one that does.
// When that replica's node dies with requests in flight, they fail at once with unavailable
// (CAF alone would let them wait out their deadline), never with a wrong success, and once
// placement has replaced the lost replica a retry through the same node succeeds.
TEST_F(ProcessClusterTest, AForwardingNodeFailsRequestsPromptlyWhenItsTargetReplicaDies) {
  dir_.Write("config/solo.yaml",
             "- matcher: /solo/*\n  replication: {min: 1, max: 1}\n  size: 10MB\n");
  auto args = [&](const std::string& name, const std::string& seeds) {
    std::vector<std::string> a = {"--data-dir",
                                  dir_ / name,
                                  "--config-dir",
                                  dir_ / "config",
                                  "--port",
                                  "0",
                                  "--cluster-port",
                                  "0",
                                  "--failure-timeout-ms",
                                  "1000",
                                  "--replica-grace-s",
                                  "1"};
    if (!seeds.empty()) a.insert(a.end(), {"--seeds", seeds});
    return a;
  };
  DaemonProcess a, b;
  ASSERT_TRUE(a.Start(KVMESHD_PATH, args("a", ""))) << a.output();
  ASSERT_TRUE(b.Start(KVMESHD_PATH, args("b", "127.0.0.1:" + std::to_string(a.cluster_port()))))
      << b.output();
  client::ClientOptions options;
  options.request_timeout = 20s;
  auto via_a = client::connect(a.address(), options);
  const uint64_t b_id = client::connect(b.address()).node_id();
  ASSERT_TRUE(Eventually(20s, [&] {
    auto members = via_a.members();
    if (!members.ok()) return false;
    for (const auto& m : *members) {
      if (m.node_id == b_id && m.alive) return true;
    }
    return false;
  })) << "a never saw b";
  // A database whose one replica is on b.
  Database db;
  for (int i = 0; i < 64 && !db.ok(); ++i) {
    Database candidate = via_a.open("/solo/" + std::to_string(i));
    ASSERT_TRUE(candidate.ok()) << candidate.status();
    auto status = candidate.replication_status();
    ASSERT_TRUE(status.ok()) << status.status();
    if (status->node_id == b_id) db = candidate;
  }
  ASSERT_TRUE(db.ok()) << "no path of 64 placed on b";
  ASSERT_TRUE(db.put("/before", "x").ok());

  // b stops answering, with requests forwarded to it in flight; then it dies.
  b.Kill(SIGSTOP);
  std::vector<std::future<Status>> writes;
  for (int i = 0; i < 20; ++i) writes.push_back(db.put_async("/k" + std::to_string(i), "v"));
  EXPECT_EQ(writes[0].wait_for(300ms), std::future_status::timeout) << "answered by a stopped node";
  const auto died = std::chrono::steady_clock::now();
  b.Kill(SIGKILL);
  for (auto& w : writes) {
    ASSERT_EQ(w.wait_until(died + 3s), std::future_status::ready)
        << "a forwarded request waited for its deadline after its replica died";
    Status s = w.get();
    EXPECT_EQ(s.code(), Code::kUnavailable) << s;
    EXPECT_NE(s.message().find("lost the replica of database \"" + db.path() + "\""),
              std::string::npos)
        << s;
  }
  // Placement replaces the lost replica (replica grace 1 s); a retry through a then succeeds.
  Status retried;
  EXPECT_TRUE(Eventually(20s, [&] { return (retried = db.put("/k0", "v")).ok(); })) << retried;
}

}  // namespace
}  // namespace kvmesh
