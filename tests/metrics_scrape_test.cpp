// A node's metrics (Node::metrics) after real requests, read back through the reference
// Prometheus text parser (tests/parse_metrics.py, python3-prometheus-client).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "config/config_set.hpp"
#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "test_util.hpp"
#include "testing/local_cluster.hpp"

namespace kvmesh {
namespace {

using testing::TempDir;

/// Runs the parser over `text`; the samples by "name|labels" (labels sorted, "k=v,k=v"), or
/// fails the test with what the parser printed.
std::map<std::string, double> Parse(const TempDir& dir, const std::string& text) {
  const std::string file = dir.Write("metrics.txt", text);
  const std::string out = dir / "parsed.txt";
  const std::string err = dir / "parser-errors.txt";
  const std::string command = std::string(KVMESH_PYTHON3) + " " + KVMESH_METRICS_PARSER + " " +
                              file + " > " + out + " 2> " + err;
  const int rc = std::system(command.c_str());
  std::ifstream errors(err);
  std::stringstream message;
  message << errors.rdbuf();
  EXPECT_EQ(rc, 0) << "the parser refused the metrics: " << message.str() << "\n" << text;
  std::map<std::string, double> samples;
  std::ifstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    const size_t bar = line.rfind('|');
    samples[line.substr(0, bar)] = std::stod(line.substr(bar + 1));
  }
  return samples;
}

TEST(MetricsScrape, CountsEmbeddedAndNetworkRequestsOnceAndParses) {
  TempDir dir;
  NodeOptions options;
  options.data_dir = dir / "data";
  options.config_yaml = "id: kv\nmatcher: /m/*\nsize: 1MB\n";
  options.max_value_bytes = 1024;
  options.listen_port = 0;
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(options, &node).ok());

  Database db = node->open("/m/a");
  ASSERT_TRUE(db.status().ok()) << db.status().ToString();
  ASSERT_TRUE(db.put("k1", "v1").ok());
  ASSERT_TRUE(db.put("k2", "v2").ok());
  ASSERT_TRUE(db.get("k1").ok());
  EXPECT_EQ(db.get("missing").status().code(), Code::kNotFound);
  EXPECT_EQ(db.put("big", std::string(2048, 'x')).code(), Code::kValueTooLarge);

  // Over the client port: counted by the gateway, once (not again by the database).
  client::Client client = client::connect("127.0.0.1:" + std::to_string(node->port()));
  Database remote = client.open("/m/a");
  ASSERT_TRUE(remote.status().ok()) << remote.status().ToString();
  ASSERT_TRUE(remote.put("k3", "v3").ok());
  EXPECT_EQ(remote.get("k3").value(), "v3");
  ASSERT_TRUE(remote.erase("k3").ok());

  Result<std::string> text = node->metrics();
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  std::map<std::string, double> m = Parse(dir, *text);
  ASSERT_FALSE(m.empty());

  EXPECT_EQ(m["kvmesh_requests_total|code=ok,op=put"], 3) << *text;
  EXPECT_EQ(m["kvmesh_requests_total|code=value_too_large,op=put"], 1);
  EXPECT_EQ(m["kvmesh_requests_total|code=ok,op=get"], 2);
  EXPECT_EQ(m["kvmesh_requests_total|code=not_found,op=get"], 1);
  EXPECT_EQ(m["kvmesh_requests_total|code=ok,op=erase"], 1);
  EXPECT_EQ(m["kvmesh_request_duration_seconds_count|op=put"], 4);
  EXPECT_EQ(m["kvmesh_request_duration_seconds_bucket|le=+Inf,op=get"], 3);
  EXPECT_GT(m["kvmesh_request_duration_seconds_sum|op=put"], 0);

  EXPECT_EQ(m["kvmesh_databases_running|"], 1);
  EXPECT_EQ(m["kvmesh_client_connections|"], 1) << "the client above";
  EXPECT_EQ(m["kvmesh_databases_instantiated|config=kv"], 1);
  // /k1 and /k2 (keys are normalised with a leading slash): three bytes of key, two of value.
  EXPECT_EQ(m["kvmesh_config_used_bytes|config=kv"], 10);
  EXPECT_EQ(m["kvmesh_config_limit_bytes|config=kv"], 1000 * 1000);
  EXPECT_EQ(m["kvmesh_members|state=up"], 1);
  EXPECT_EQ(m["kvmesh_members|state=down"], 0);
  EXPECT_EQ(m.count("kvmesh_rocksdb_memtable_bytes|"), 1u);
  EXPECT_EQ(m.count("kvmesh_memtable_spare_key_table_bytes|"), 1u);
  EXPECT_EQ(m.count("kvmesh_rocksdb_sst_bytes|"), 1u);
  EXPECT_EQ(m.count("kvmesh_rocksdb_pending_compaction_bytes|"), 1u);
  EXPECT_GT(m["process_resident_memory_bytes|"], 1e6);
  EXPECT_GT(m["process_cpu_seconds_total|"], 0);
}

// The client port's and the workers' busy polling (NodeOptions::busy_poll) show in the metrics:
// requests made one at a time find them polling, and with the option at 0 they never poll. The
// bound is the longest allowed (100 ms: windows of 25 ms and more), so that a slow machine makes
// few requests miss the window (polling that finds the CPU wanted backs off, so a loaded machine
// polls fewer times, but some always).
TEST(MetricsScrape, TheClientPortsBusyPollingIsCountedAndZeroTurnsItOff) {
  for (const bool on : {true, false}) {
    SCOPED_TRACE(on ? "busy_poll 100 ms" : "busy_poll 0");
    TempDir dir;
    NodeOptions options;
    options.data_dir = dir / "data";
    options.config_yaml = "id: kv\nmatcher: /m/*\nsize: 1MB\n";
    options.listen_port = 0;
    options.busy_poll = on ? kMaxBusyPoll : std::chrono::microseconds(0);
    std::unique_ptr<Node> node;
    ASSERT_TRUE(Node::Start(options, &node).ok());
    {
      client::Client client = client::connect("127.0.0.1:" + std::to_string(node->port()));
      Database remote = client.open("/m/a");
      ASSERT_TRUE(remote.status().ok()) << remote.status().ToString();
      ASSERT_TRUE(remote.put("k", "v").ok());
      for (int i = 0; i < 30; ++i) ASSERT_TRUE(remote.get("k").ok());
    }
    // Writes from a program's own thread: each is a hop to a worker (the port's requests may run
    // on its own thread). Polling that finds the CPU wanted backs off (8, 16, ... up to 1024
    // waits), so on a loaded machine (ctest -j2 beside a build) 100 writes may leave it a single
    // poll: batches of 100 go on until the workers found two (at most 30 batches or 20 s).
    Database local = node->open("/m/a");
    Result<std::string> text = Status::Internal("not scraped");
    std::map<std::string, double> m;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int batch = 0; batch < 30; ++batch) {
      for (int i = 0; i < 100; ++i) ASSERT_TRUE(local.put("k", "v").ok());
      text = node->metrics();
      ASSERT_TRUE(text.ok()) << text.status().ToString();
      m = Parse(dir, *text);
      if (!on || m["kvmesh_worker_waits_total|outcome=found_polling"] >= 2 ||
          std::chrono::steady_clock::now() > give_up) {
        break;
      }
    }
    const double found = m["kvmesh_client_port_waits_total|outcome=found_polling"];
    // The node's workers poll by the same option (their hops between actors).
    const double workers_found = m["kvmesh_worker_waits_total|outcome=found_polling"];
    if (on) {
      EXPECT_GE(found, 2) << *text;
      EXPECT_GT(m["kvmesh_client_port_polling_seconds_total|"], 0);
      EXPECT_GE(workers_found, 2) << *text;
      EXPECT_GT(m["kvmesh_worker_polling_seconds_total|"], 0);
    } else {
      EXPECT_EQ(found, 0) << *text;
      EXPECT_EQ(m["kvmesh_client_port_polling_seconds_total|"], 0);
      EXPECT_GE(m["kvmesh_client_port_waits_total|outcome=slept"], 30);
      EXPECT_EQ(workers_found, 0) << *text;
      EXPECT_EQ(m["kvmesh_worker_polling_seconds_total|"], 0);
    }
  }
}

// Scrapes ask every running database for its replication status; that must not count as use, or
// a node scraped more often than its idle timeout would never passivate a database.
TEST(MetricsScrape, ScrapesDoNotKeepDatabasesRunning) {
  TempDir dir;
  NodeOptions options;
  options.data_dir = dir / "data";
  options.config_yaml = "id: kv\nmatcher: /m/*\nsize: 1MB\n";
  options.idle_timeout = std::chrono::milliseconds(100);
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(options, &node).ok());
  ASSERT_TRUE(node->open("/m/a").put("k", "v").ok());
  int scrapes = 0;
  // Passivation comes one to two idle periods after the last request; scraped every 10 ms.
  const bool passivated = testing::Eventually(std::chrono::seconds(5), [&] {
    Result<std::string> text = node->metrics();
    EXPECT_TRUE(text.ok()) << text.status().ToString();
    ++scrapes;
    Result<uint64_t> running = node->active_databases();
    return running.ok() && *running == 0;
  });
  EXPECT_TRUE(passivated) << "still running after " << scrapes << " scrapes";
}

// Replication and membership as node 0 of two sees them, before and after node 1 stops.
TEST(MetricsScrape, ShowsPeersAndMembersOfACluster) {
  TempDir dir;
  auto configs = std::make_shared<config::ConfigSet>();
  ASSERT_TRUE(config::ConfigSet::LoadString(
                  "id: r2\nmatcher: /r/*\nsize: 1MB\nreplication:\n  min: 1\n  max: 2\n",
                  "metrics.yaml", configs.get(), nullptr)
                  .ok());
  LocalClusterOptions options;
  options.nodes = 2;
  options.dir = dir.path();
  options.configs = configs;
  std::unique_ptr<LocalCluster> cluster;
  ASSERT_TRUE(LocalCluster::Start(options, &cluster).ok());
  const std::string peer = FormatNodeId(cluster->node_id(1));
  Database db = cluster->node(0)->open("/r/a");
  ASSERT_TRUE(db.put("k", "v").ok());

  std::map<std::string, double> m;
  std::string text;
  auto scrape = [&] {
    Result<std::string> r = cluster->node(0)->metrics();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    text = r.ok() ? *r : "";
    m = Parse(dir, text);
  };
  EXPECT_TRUE(testing::Eventually(std::chrono::seconds(10), [&] {
    scrape();
    return m["kvmesh_replication_peer_reachable|peer=" + peer] == 1 &&
           m["kvmesh_replication_pending_deltas|peer=" + peer] == 0;
  })) << text;
  EXPECT_EQ(m["kvmesh_members|state=up"], 2) << text;
  EXPECT_EQ(m["kvmesh_member_up|node=" + peer], 1);

  cluster->Stop(1);
  ASSERT_TRUE(db.put("k2", "v2").ok());  // min 1: accepted while node 1 is away
  EXPECT_TRUE(testing::Eventually(std::chrono::seconds(10), [&] {
    scrape();
    return m["kvmesh_members|state=down"] == 1;
  })) << text;
  EXPECT_EQ(m["kvmesh_member_up|node=" + peer], 0) << text;
  EXPECT_EQ(m["kvmesh_replication_peer_reachable|peer=" + peer], 0) << text;
  // Nothing is queued for an unreachable peer (anti-entropy repairs it when it is back).
  EXPECT_EQ(m["kvmesh_replication_pending_deltas|peer=" + peer], 0) << text;
}

}  // namespace
}  // namespace kvmesh
