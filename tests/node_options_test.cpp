// Node::Start checks every option before it touches the disk, and takes database configs as
// YAML text (NodeOptions::config_yaml), the way a program using the installed library gives them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvmesh/node.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using kvmesh::testing::TempDir;

class NodeStartTest : public ::testing::Test {
 protected:
  NodeStartTest() { dir_.Write("config/example.yaml", kvmesh::testing::kSeedExampleConfig); }

  NodeOptions Options(const std::string& data) {
    NodeOptions options;
    options.data_dir = dir_ / data;
    options.config_dir = dir_ / "config";
    return options;
  }

  TempDir dir_;
};

/// One invalid option: what it breaks, and a part of the error that names it.
struct BadOption {
  const char* what;
  std::function<void(NodeOptions&)> change;
  Code code;
  const char* message;
};

std::vector<BadOption> BadOptions() {
  return {
      {"unknown scheduler", [](NodeOptions& o) { o.scheduler_policy = "fifo"; },
       Code::kInvalidArgument, "scheduler_policy"},
      {"network workers out of range", [](NodeOptions& o) { o.network_workers = -2; },
       Code::kInvalidArgument, "network_workers is -2"},
      {"listen port out of range", [](NodeOptions& o) { o.listen_port = 70000; },
       Code::kInvalidArgument, "listen_port is 70000"},
      {"negative listen port", [](NodeOptions& o) { o.listen_port = -2; }, Code::kInvalidArgument,
       "listen_port is -2"},
      {"empty listen host",
       [](NodeOptions& o) {
         o.listen_port = 0;
         o.listen_host.clear();
       },
       Code::kInvalidArgument, "listen_host is empty"},
      {"cluster port out of range", [](NodeOptions& o) { o.cluster_port = 65536; },
       Code::kInvalidArgument, "cluster_port is 65536"},
      {"empty cluster host",
       [](NodeOptions& o) {
         o.cluster_port = 0;
         o.cluster_host.clear();
       },
       Code::kInvalidArgument, "cluster_host is empty"},
      {"advertise without port",
       [](NodeOptions& o) {
         o.cluster_port = 0;
         o.cluster_advertise = "127.0.0.1";
       },
       Code::kInvalidArgument, "cluster_advertise: bad address \"127.0.0.1\""},
      {"advertise without cluster port",
       [](NodeOptions& o) { o.cluster_advertise = "127.0.0.1:7380"; }, Code::kInvalidArgument,
       "no cluster_port"},
      {"seed without port",
       [](NodeOptions& o) {
         o.cluster_port = 0;
         o.seeds = {"127.0.0.1:7380", "node-b"};
       },
       Code::kInvalidArgument, "seeds: bad address \"node-b\""},
      {"seed port zero",
       [](NodeOptions& o) {
         o.cluster_port = 0;
         o.seeds = {"127.0.0.1:0"};
       },
       Code::kInvalidArgument, "port out of range"},
      {"seeds without cluster port", [](NodeOptions& o) { o.seeds = {"127.0.0.1:7380"}; },
       Code::kInvalidArgument, "no cluster_port"},
      {"zero request timeout", [](NodeOptions& o) { o.request_timeout = 0ms; },
       Code::kInvalidArgument, "request_timeout must be positive"},
      {"zero peer timeout", [](NodeOptions& o) { o.peer_timeout = 0ms; }, Code::kInvalidArgument,
       "peer_timeout"},
      {"negative failure timeout", [](NodeOptions& o) { o.failure_timeout = -1ms; },
       Code::kInvalidArgument, "failure_timeout"},
      {"zero sync interval", [](NodeOptions& o) { o.sync_interval = 0ms; }, Code::kInvalidArgument,
       "sync_interval"},
      {"zero sync period", [](NodeOptions& o) { o.sync_period = 0ms; }, Code::kInvalidArgument,
       "sync_period must be between 1 ms and 60000 ms, got 0 ms"},
      {"busy poll over 100 ms", [](NodeOptions& o) { o.busy_poll = 100001us; },
       Code::kInvalidArgument, "busy_poll must be between 0 and 100000 us, got 100001 us"},
      {"negative busy poll", [](NodeOptions& o) { o.busy_poll = -1us; }, Code::kInvalidArgument,
       "busy_poll"},
      {"unknown sync mode", [](NodeOptions& o) { o.sync = static_cast<SyncMode>(7); },
       Code::kInvalidArgument, "sync is 7; expected none, periodic or always"},
      {"zero heartbeat", [](NodeOptions& o) { o.heartbeat_interval = 0ms; }, Code::kInvalidArgument,
       "heartbeat_interval"},
      {"zero replication timeout", [](NodeOptions& o) { o.replication_timeout = 0ms; },
       Code::kInvalidArgument, "replication_timeout"},
      {"negative idle timeout", [](NodeOptions& o) { o.idle_timeout = -5ms; },
       Code::kInvalidArgument, "idle_timeout must be zero or more"},
      {"negative tombstone grace", [](NodeOptions& o) { o.tombstone_grace = -1ms; },
       Code::kInvalidArgument, "tombstone_grace"},
      {"zero max value", [](NodeOptions& o) { o.max_value_bytes = 0; }, Code::kInvalidArgument,
       "max_value_bytes"},
      {"max value over what a request carries",
       [](NodeOptions& o) { o.max_value_bytes = kMaxBatchBytes + 1; }, Code::kInvalidArgument,
       "max_value_bytes is 67108865 B (64 MiB); the maximum is 67108864 B (64 MiB)"},
      {"zero max connections", [](NodeOptions& o) { o.max_connections = 0; },
       Code::kInvalidArgument, "max_connections must be positive"},
      {"zero max connections per address",
       [](NodeOptions& o) { o.max_connections_per_address = 0; }, Code::kInvalidArgument,
       "max_connections_per_address must be positive"},
      {"low space percent over 50", [](NodeOptions& o) { o.low_space_percent = 60; },
       Code::kInvalidArgument, "low_space_percent must be between 0 and 50"},
      {"low space percent not a number", [](NodeOptions& o) { o.low_space_percent = NAN; },
       Code::kInvalidArgument, "low_space_percent"},
      {"zero space check interval", [](NodeOptions& o) { o.space_check_interval = 0ms; },
       Code::kInvalidArgument, "space_check_interval"},
      {"no config source", [](NodeOptions& o) { o.config_dir.clear(); }, Code::kInvalidArgument,
       "config source"},
      {"two config sources", [](NodeOptions& o) { o.config_yaml = "matcher: /a\nsize: 1KB\n"; },
       Code::kInvalidArgument, "give one config source"},
      {"ACL without TLS", [](NodeOptions& o) { o.acl_file = "/etc/kvmesh/acl.yaml"; },
       Code::kInvalidArgument, "acl_file \"/etc/kvmesh/acl.yaml\" needs TLS"},
      {"missing config dir", [](NodeOptions& o) { o.config_dir += "-missing"; },
       Code::kInvalidConfig, "-missing"},
      {"invalid config text",
       [](NodeOptions& o) {
         o.config_dir.clear();
         o.config_yaml = "matcher: /a\nsize: 10XB\n";
       },
       Code::kInvalidConfig, "<memory>:2"},
  };
}

TEST_F(NodeStartTest, ABadOptionLeavesAFreshDataDirUncreated) {
  for (const BadOption& bad : BadOptions()) {
    SCOPED_TRACE(bad.what);
    NodeOptions options = Options("fresh");
    bad.change(options);
    std::unique_ptr<Node> node;
    Status s = Node::Start(options, &node);
    EXPECT_EQ(s.code(), bad.code) << s;
    EXPECT_NE(s.message().find(bad.message), std::string::npos) << s;
    EXPECT_EQ(node, nullptr);
    EXPECT_FALSE(fs::exists(options.data_dir)) << "Start created " << options.data_dir;
  }
}

/// Every file under `dir` with its size and modification time.
std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> Snapshot(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      files[entry.path().string()] = {entry.file_size(), entry.last_write_time()};
    }
  }
  return files;
}

TEST_F(NodeStartTest, ABadOptionLeavesAnExistingDataDirUntouched) {
  NodeOptions good = Options("data");
  {
    std::unique_ptr<Node> node;
    ASSERT_TRUE(Node::Start(good, &node).ok());
    Database db = node->open("/example/kv");
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db.put("/k", "v").ok());
  }
  const auto before = Snapshot(good.data_dir);
  ASSERT_FALSE(before.empty());
  for (const BadOption& bad : BadOptions()) {
    SCOPED_TRACE(bad.what);
    NodeOptions options = good;
    bad.change(options);
    std::unique_ptr<Node> node;
    EXPECT_FALSE(Node::Start(options, &node).ok());
    // Opening RocksDB would at least add a log file and a manifest.
    EXPECT_EQ(Snapshot(good.data_dir), before);
  }
  // And the data is still there for a good start.
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(good, &node).ok());
  Database db = node->open("/example/kv");
  ASSERT_TRUE(db.ok());
  Result<std::string> value = db.get("/k");
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "v");
}

TEST_F(NodeStartTest, ConfigsGivenAsYamlTextServeDatabases) {
  NodeOptions options;
  options.data_dir = dir_ / "data";
  options.config_yaml =
      "- id: kv\n"
      "  matcher: /app/kv\n"
      "  size: 1KiB\n"
      "- matcher: /app/users/*\n"
      "  size: 2KiB\n";
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(options, &node).ok());
  Database db = node->open("/app/users/ada");
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(db.put("/k", "v").ok());
  Result<DatabaseStats> stats = db.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->limit_bytes, 2048u);
  Result<std::vector<ConfigInfo>> configs = node->configs();
  ASSERT_TRUE(configs.ok());
  ASSERT_EQ(configs->size(), 2u);
  EXPECT_EQ((*configs)[0].id, "kv");
  EXPECT_EQ((*configs)[0].source, "<memory>:1");
  EXPECT_EQ((*configs)[1].source, "<memory>:4");
}

// A database path is normalised once, where it enters (common/path.hpp): every spelling reaches
// one database, and a bad path fails there naming it.
TEST_F(NodeStartTest, EverySpellingOfAPathOpensOneDatabase) {
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(Options("data"), &node).ok());
  Database a = node->open("/example/kv");
  Database b = node->open("example//kv/");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b.path(), "/example/kv");
  ASSERT_TRUE(a.put("/k", "v").ok());
  Result<std::string> value = b.get("k");
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "v");
  Result<std::vector<DatabaseInfo>> databases = node->databases();
  ASSERT_TRUE(databases.ok());
  ASSERT_EQ(databases->size(), 1u);
  EXPECT_EQ((*databases)[0].path, "/example/kv");
  Status s = node->open("/example/../kv").status();
  EXPECT_EQ(s.code(), Code::kInvalidKey) << s;
  EXPECT_NE(s.message().find("\"/example/../kv\""), std::string::npos) << s;
  Result<ReplicationStatus> status = node->open("//example/kv//").replication_status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->path, "/example/kv");
  EXPECT_EQ(node->open("").status().code(), Code::kInvalidKey);
}

}  // namespace
}  // namespace kvmesh
