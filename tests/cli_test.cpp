// The kvmesh CLI against a real kvmeshd process.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>

#include <nlohmann/json.hpp>

#include "process_util.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using kvmesh::testing::CommandResult;
using kvmesh::testing::DaemonProcess;
using kvmesh::testing::TempDir;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.Write("config/kv.yaml", kvmesh::testing::kSeedExampleConfig);
    dir_.Write("config/tiny.yaml", "matcher: /tiny\nsize: 10B\n");
    ASSERT_TRUE(daemon_.Start(KVMESHD_PATH, {"--data-dir", dir_ / "data", "--config-dir",
                                             dir_ / "config", "--port", "0"}))
        << daemon_.output();
  }

  CommandResult Run(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {"--node", daemon_.address()});
    return kvmesh::testing::RunCommand(KVMESH_CLI_PATH, args, input, dir_.path());
  }

  TempDir dir_;
  DaemonProcess daemon_;
};

TEST_F(CliTest, BinaryValuesRoundTripThroughStdinStdoutAndFiles) {
  const std::string binary("\0\xff\n\r bytes \x01\0", 12);
  CommandResult put = Run({"put", "/example/kv", "/bin", "-"}, binary);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  CommandResult get = Run({"get", "/example/kv", "/bin"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, binary);
  std::string file = dir_.Write("value.bin", binary + binary);
  ASSERT_EQ(Run({"put", "/example/kv", "/file", "--file", file}).exit_code, 0);
  ASSERT_EQ(Run({"get", "/example/kv", "/file", "-o", dir_ / "out.bin"}).exit_code, 0);
  CommandResult check =
      kvmesh::testing::RunCommand("/bin/cat", {dir_ / "out.bin"}, "", dir_.path());
  EXPECT_EQ(check.out, binary + binary);
}

TEST_F(CliTest, TtlVersionsAndConditionalWrites) {
  ASSERT_EQ(Run({"put", "/example/kv", "/k", "v1"}).exit_code, 0);
  CommandResult get = Run({"get", "/example/kv", "/k", "--version"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v1");  // stdout stays the raw value; the version is on stderr
  ASSERT_FALSE(get.err.empty());
  const std::string version = get.err.substr(0, get.err.size() - 1);
  CommandResult swap = Run({"put", "/example/kv", "/k", "v2", "--if-version", version});
  EXPECT_EQ(swap.exit_code, 0) << swap.err;
  CommandResult stale = Run({"put", "/example/kv", "/k", "v3", "--if-version", version});
  EXPECT_EQ(stale.exit_code, 4);
  EXPECT_NE(stale.err.find("condition_failed: key \"/k\""), std::string::npos) << stale.err;
  EXPECT_EQ(Run({"del", "/example/kv", "/k", "--if-version", version}).exit_code, 4);
  EXPECT_EQ(Run({"put", "/example/kv", "/k", "v4", "--if-absent"}).exit_code, 4);
  EXPECT_EQ(Run({"get", "/example/kv", "/k"}).out, "v2");
  EXPECT_EQ(Run({"put", "/example/kv", "/new", "x", "--if-absent"}).exit_code, 0);

  ASSERT_EQ(Run({"put", "/example/kv", "/t", "x", "--ttl", "300ms"}).exit_code, 0);
  EXPECT_TRUE(kvmesh::testing::Eventually(std::chrono::seconds(10), [&] {
    return Run({"get", "/example/kv", "/t"}).exit_code == 1;
  }));
  CommandResult bad = Run({"put", "/example/kv", "/t", "x", "--ttl", "5 parsecs"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--ttl"), std::string::npos) << bad.err;
}

TEST_F(CliTest, ReadLevels) {
  ASSERT_EQ(Run({"put", "/example/kv", "/k", "v1"}).exit_code, 0);
  for (const char* level : {"eventual", "read_your_writes", "quorum"}) {
    CommandResult get = Run({"get", "/example/kv", "/k", "--consistency", level});
    EXPECT_EQ(get.exit_code, 0) << level << ": " << get.err;
    EXPECT_EQ(get.out, "v1") << level;
  }
  CommandResult versioned =
      Run({"get", "/example/kv", "/k", "--version", "--consistency", "quorum"});
  EXPECT_EQ(versioned.exit_code, 0) << versioned.err;
  EXPECT_FALSE(versioned.err.empty());
  CommandResult ls = Run({"ls", "/example/kv", "--consistency", "read_your_writes"});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(ls.out, "/k\n");
  CommandResult bad = Run({"get", "/example/kv", "/k", "--consistency", "strong"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err,
            "kvmesh: --consistency: unknown read level \"strong\": use eventual, "
            "read_your_writes or quorum\n");
  CommandResult quorum_ls = Run({"ls", "/example/kv", "--consistency", "quorum"});
  EXPECT_EQ(quorum_ls.exit_code, 3);
  EXPECT_NE(quorum_ls.err.find("invalid_argument: list does not support read level quorum"),
            std::string::npos)
      << quorum_ls.err;
  CommandResult bad_token =
      Run({"get", "/example/kv", "/k", "--consistency", "read_your_writes", "--session", "x"});
  EXPECT_EQ(bad_token.exit_code, 3);
  EXPECT_NE(bad_token.err.find("session token \"x\" is malformed"), std::string::npos)
      << bad_token.err;
  EXPECT_EQ(Run({"get", "/example/kv", "/k", "--session", "1:1"}).exit_code, 2);
}

TEST_F(CliTest, ExitCodesAndOneLineErrors) {
  CommandResult missing = Run({"get", "/example/kv", "/nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err,
            "kvmesh: not_found: key \"/nope\" not found in database \"/example/kv\"\n");
  CommandResult no_db = Run({"put", "/unknown", "/k", "v"});
  EXPECT_EQ(no_db.exit_code, 3);
  EXPECT_EQ(no_db.err, "kvmesh: no_matching_config: no database config matches \"/unknown\"\n");
  CommandResult full = Run({"put", "/tiny", "/key", "too many bytes"});
  EXPECT_EQ(full.exit_code, 3);
  EXPECT_NE(full.err.find("size_limit_exceeded"), std::string::npos) << full.err;
  EXPECT_EQ(Run({"put", "/example/kv"}).exit_code, 2);
  EXPECT_EQ(Run({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(Run({"del", "/example/kv", "/never-there"}).exit_code, 0);
  CommandResult down = kvmesh::testing::RunCommand(
      KVMESH_CLI_PATH, {"--node", "127.0.0.1:1", "get", "/example/kv", "/k"}, "", dir_.path());
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_NE(down.err.find("unavailable: cannot reach kvmesh node at 127.0.0.1:1"),
            std::string::npos)
      << down.err;
}

TEST_F(CliTest, ListImportExportAndJson) {
  for (const char* key : {"/users/1", "/users/2", "/users10", "/other"}) {
    ASSERT_EQ(Run({"put", "/example/kv", key, std::string("v") + key}).exit_code, 0);
  }
  CommandResult ls = Run({"ls", "/example/kv", "/users"});
  EXPECT_EQ(ls.out, "/users/1\n/users/2\n");
  EXPECT_EQ(Run({"ls", "/example/kv", "--limit", "1"}).out, "/other\n");
  EXPECT_EQ(Run({"--json", "ls", "/example/kv", "/users"}).out,
            "[{\"key\":\"/users/1\"},{\"key\":\"/users/2\"}]\n");
  // Ranges and reverse (`list` is `ls`).
  EXPECT_EQ(Run({"list", "/example/kv", "--reverse"}).out,
            "/users10\n/users/2\n/users/1\n/other\n");
  EXPECT_EQ(Run({"ls", "/example/kv", "/users", "--start", "users/2", "--reverse"}).out,
            "/users/2\n");
  EXPECT_EQ(Run({"ls", "/example/kv", "--start", "/p", "--end", "/users/2"}).out, "/users/1\n");
  CommandResult outside = Run({"ls", "/example/kv", "/users", "--start", "/other"});
  EXPECT_EQ(outside.exit_code, 3);
  EXPECT_EQ(outside.out, "");
  EXPECT_NE(outside.err.find("start bound \"/other\" is not under the prefix \"/users\""),
            std::string::npos)
      << outside.err;

  // A binary key and value survive export and import into another database.
  ASSERT_EQ(Run({"put", "/example/kv", std::string("/bin\xff", 5), "-"}, std::string("\0\1", 2))
                .exit_code,
            0);
  CommandResult exported = Run({"export", "/example/kv"});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  std::string file = dir_.Write("dump.jsonl", exported.out);
  dir_.Write("config/copy.yaml", "matcher: /copy\nsize: 1MB\n");
  ASSERT_EQ(Run({"config", "reload"}).exit_code, 0);
  CommandResult imported = Run({"import", "/copy", file});
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  EXPECT_EQ(imported.out, "imported 5 keys into /copy\n");
  EXPECT_EQ(Run({"export", "/copy"}).out, exported.out);
  CommandResult stats = Run({"--json", "stats", "/copy"});
  EXPECT_NE(stats.out.find("\"keys\":5"), std::string::npos) << stats.out;

  // Base64 is checked strictly: a value with trailing junk is refused, not stored corrupted.
  dir_.Write("junk.jsonl", "{\"key\":\"/j\",\"value\":\"QQ==    \"}\n");
  EXPECT_EQ(Run({"import", "/copy", dir_ / "junk.jsonl"}).exit_code, 3);
  EXPECT_EQ(Run({"get", "/copy", "/j"}).exit_code, 1);
  // Reading a directory is an error, not an empty value.
  EXPECT_EQ(Run({"put", "/copy", "/d", "--file", dir_.path()}).exit_code, 3);
  EXPECT_EQ(Run({"get", "/copy", "/d"}).exit_code, 1);

  dir_.Write("bad.jsonl", "{\"key\":\"/a\",\"value\":\"YQ==\"}\nnot json\n");
  CommandResult bad = Run({"import", "/copy", dir_ / "bad.jsonl"});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_NE(bad.err.find("bad.jsonl:2: not a JSON object"), std::string::npos) << bad.err;
}

TEST_F(CliTest, FailedOutputIsAnError) {
  ASSERT_EQ(Run({"put", "/example/kv", "/k", "v"}).exit_code, 0);
  // /dev/full accepts the open and fails every write, like a full disk.
  CommandResult full =
      kvmesh::testing::RunCommand("/bin/sh",
                                  {"-c", std::string(KVMESH_CLI_PATH) + " --node " +
                                             daemon_.address() + " export /example/kv > /dev/full"},
                                  "", dir_.path());
  EXPECT_EQ(full.exit_code, 3) << full.err;
  EXPECT_NE(full.err.find("cannot write to standard output"), std::string::npos) << full.err;
}

TEST_F(CliTest, DbsAndConfigCommands) {
  ASSERT_EQ(Run({"put", "/example/kv", "/k", "v"}).exit_code, 0);
  CommandResult dbs = Run({"dbs"});
  ASSERT_EQ(dbs.exit_code, 0) << dbs.err;
  EXPECT_NE(dbs.out.find("/example/kv (literal)"), std::string::npos) << dbs.out;
  EXPECT_NE(dbs.out.find("databases:\n  /example/kv"), std::string::npos) << dbs.out;
  EXPECT_EQ(Run({"config", "validate", dir_ / "config"}).exit_code, 0);
  dir_.Write("broken/x.yaml", "matcher: \"[\"\nsize: 1MB\n");
  CommandResult invalid = Run({"config", "validate", dir_ / "broken"});
  EXPECT_EQ(invalid.exit_code, 3);
  EXPECT_NE(invalid.err.find("x.yaml:1: error: matcher"), std::string::npos) << invalid.err;
}

TEST_F(CliTest, ClusterWideConfigsAreAppliedShownAndDeletedOverTheNetwork) {
  const std::string file = dir_.Write("orders.yaml", R"(id: orders
description: one database per order
tags: [shop]
matcher: /orders/[^/]+
replication: {min: 1, max: 2}
size: 100MB
)");
  EXPECT_EQ(Run({"put", "/orders/1", "/k", "v"}).exit_code, 3);
  CommandResult dry = Run({"config", "apply", file, "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_EQ(dry.out,
            "valid (not applied): orders  /orders/[^/]+ (regex)  size 100MB  replication 1..2\n");
  EXPECT_EQ(Run({"put", "/orders/1", "/k", "v"}).exit_code, 3) << "a dry run applies nothing";
  CommandResult applied = Run({"config", "apply", file});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_EQ(applied.out, "applied: orders  /orders/[^/]+ (regex)  size 100MB  replication 1..2\n");
  ASSERT_EQ(Run({"put", "/orders/1", "/k", "v"}).exit_code, 0);
  // `config get ID` prints YAML that `config apply` takes back.
  CommandResult yaml = Run({"config", "get", "orders"});
  ASSERT_EQ(yaml.exit_code, 0) << yaml.err;
  EXPECT_NE(yaml.out.find("matcher: \"/orders/[^/]+\"  # regex\nreplication: {min: 1, max: 2}\n"
                          "size: 100MB\n"),
            std::string::npos)
      << yaml.out;
  const std::string again = dir_.Write("again.yaml", yaml.out);
  ASSERT_EQ(Run({"config", "apply", again}).exit_code, 0);
  CommandResult history = Run({"config", "get", "orders", "--history"});
  ASSERT_EQ(history.exit_code, 0) << history.err;
  EXPECT_EQ(std::count(history.out.begin(), history.out.end(), '\n'), 2) << history.out;
  EXPECT_NE(history.out.find("by anonymous through"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("[in force]\n"), std::string::npos) << history.out;
  // Errors name the file and line, and change nothing.
  const std::string bad =
      dir_.Write("bad.yaml", "id: orders\nmatcher: /orders/[^/]+\nsize: lots\n");
  CommandResult refused = Run({"config", "apply", bad});
  EXPECT_EQ(refused.exit_code, 3);
  EXPECT_NE(refused.err.find("bad.yaml:3: error: size:"), std::string::npos) << refused.err;
  CommandResult deleted = Run({"config", "delete", "orders"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_NE(deleted.err.find("keep their data"), std::string::npos) << deleted.err;
  EXPECT_EQ(Run({"put", "/orders/1", "/k", "v"}).exit_code, 3);
  EXPECT_EQ(Run({"config", "delete", "orders"}).exit_code, 1);
}

TEST_F(CliTest, InstancesDropAndMaxInstances) {
  dir_.Write("config/users.yaml", "id: users\nmatcher: /users/*\nsize: 1MB\nmax_instances: 2\n");
  ASSERT_EQ(Run({"config", "reload"}).exit_code, 0);
  ASSERT_EQ(Run({"put", "/users/b", "/k", "v"}).exit_code, 0);
  ASSERT_EQ(Run({"put", "/users/a", "/k", "value"}).exit_code, 0);
  CommandResult third = Run({"put", "/users/c", "/k", "v"});
  EXPECT_EQ(third.exit_code, 3);
  EXPECT_NE(third.err.find("too_many_instances: cannot instantiate database \"/users/c\": config "
                           "\"users\" allows at most 2"),
            std::string::npos)
      << third.err;
  CommandResult listed = Run({"instances", "users"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out.find("/users/a  1 keys  7 B  replicas "), 0u) << listed.out;
  EXPECT_NE(listed.out.find("\n/users/b  1 keys"), std::string::npos) << listed.out;
  CommandResult json = Run({"--json", "instances", "users", "--limit", "1"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"keys\":1"), std::string::npos) << json.out;
  EXPECT_NE(json.out.find("\"path\":\"/users/a\""), std::string::npos) << json.out;
  EXPECT_EQ(json.out.find("/users/b"), std::string::npos) << json.out;  // --limit 1

  CommandResult unsure = Run({"drop", "/users/a"});
  EXPECT_EQ(unsure.exit_code, 2);
  EXPECT_NE(unsure.err.find("add --yes"), std::string::npos) << unsure.err;
  EXPECT_EQ(Run({"get", "/users/a", "/k"}).out, "value");
  CommandResult dropped = Run({"drop", "/users/a", "--yes"});
  ASSERT_EQ(dropped.exit_code, 0) << dropped.err;
  EXPECT_EQ(Run({"get", "/users/a", "/k"}).exit_code, 1);
  EXPECT_EQ(Run({"get", "/users/b", "/k"}).out, "v");
}

TEST_F(CliTest, BackupAndRestore) {
  ASSERT_EQ(Run({"put", "/example/kv", "/kept", "v1"}).exit_code, 0);
  CommandResult backed = Run({"backup", "/example/kv", dir_ / "b1"});
  ASSERT_EQ(backed.exit_code, 0) << backed.err;
  EXPECT_NE(backed.out.find("backed up \"/example/kv\": 1 keys"), std::string::npos) << backed.out;
  EXPECT_EQ(Run({"backup", "/example/kv", dir_ / "b1"}).exit_code, 3);  // never overwrites
  ASSERT_EQ(Run({"put", "/example/kv", "/kept", "v2"}).exit_code, 0);
  ASSERT_EQ(Run({"put", "/example/kv", "/later", "x"}).exit_code, 0);
  CommandResult restored = Run({"restore", "/example/kv", dir_ / "b1"});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(Run({"get", "/example/kv", "/kept"}).out, "v1");
  EXPECT_EQ(Run({"get", "/example/kv", "/later"}).exit_code, 1);
  CommandResult all = Run({"backup", "--all", dir_ / "node-checkpoint"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_TRUE(std::filesystem::exists(dir_ / "node-checkpoint/CURRENT"));
  EXPECT_EQ(Run({"backup", "/example/kv"}).exit_code, 2);
}

TEST_F(CliTest, StatusAndMembersDescribeASingleNode) {
  ASSERT_EQ(Run({"put", "/example/kv", "/a", "1"}).exit_code, 0);
  CommandResult status = Run({"status", "/example/kv"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("1 keys, 0 tombstones"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("writes need 1 acknowledgements"), std::string::npos) << status.out;
  CommandResult json = Run({"--json", "status", "/example/kv"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"writes_seen\":1"), std::string::npos) << json.out;
  CommandResult members = Run({"members"});
  ASSERT_EQ(members.exit_code, 0) << members.err;
  EXPECT_NE(members.out.find("(this node)"), std::string::npos) << members.out;
  EXPECT_EQ(Run({"status", "/unknown"}).exit_code, 3);  // no config matches
}

// `kvmesh node drain|undrain` on one node: there is nowhere to hand databases to, and an id that
// is not one is a usage error naming it.
TEST_F(CliTest, NodeDrainNeedsAClusterAndANodeId) {
  CommandResult members = Run({"--json", "members"});
  ASSERT_EQ(members.exit_code, 0) << members.err;
  const std::string id = nlohmann::json::parse(members.out)[0]["node"].get<std::string>();
  CommandResult alone = Run({"node", "drain", id});
  EXPECT_EQ(alone.exit_code, 3);
  EXPECT_NE(alone.err.find("not in a cluster"), std::string::npos) << alone.err;
  CommandResult bad = Run({"node", "drain", "not-hex"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("\"not-hex\" is not a node id"), std::string::npos) << bad.err;
  EXPECT_EQ(Run({"node"}).exit_code, 2);  // drain or undrain
}

// `kvmesh node drain ID` on a cluster of three kvmeshd processes: the node hands its databases
// over, `kvmesh members` (and `kvmesh status` without a database) shows it draining and then
// drained through any node, the data stays readable, `node undrain` puts it back, and a drain
// that would leave too few nodes for a config's replication.min is refused.
TEST(CliClusterTest, NodeDrainHandsANodesDatabasesOverAndUndrainPutsItBack) {
  TempDir dir;
  dir.Write("config/pairs.yaml",
            "- matcher: /pairs/*\n  replication: {min: 1, max: 2}\n  size: 10MB\n"
            "- matcher: /strict/*\n  replication: {min: 2, max: 2}\n  size: 10MB\n");
  auto args = [&](const std::string& name, const std::string& seeds) {
    std::vector<std::string> a = {
        "--data-dir",     dir / name, "--config-dir",         dir / "config", "--port", "0",
        "--cluster-port", "0",        "--failure-timeout-ms", "1000"};
    if (!seeds.empty()) a.insert(a.end(), {"--seeds", seeds});
    return a;
  };
  kvmesh::testing::DaemonProcess a, b, c;
  ASSERT_TRUE(a.Start(KVMESHD_PATH, args("a", ""))) << a.output();
  const std::string seed = "127.0.0.1:" + std::to_string(a.cluster_port());
  ASSERT_TRUE(b.Start(KVMESHD_PATH, args("b", seed))) << b.output();
  ASSERT_TRUE(c.Start(KVMESHD_PATH, args("c", seed))) << c.output();
  auto run = [&](const kvmesh::testing::DaemonProcess& d, std::vector<std::string> args) {
    args.insert(args.begin(), {"--node", d.address()});
    return kvmesh::testing::RunCommand(KVMESH_CLI_PATH, args, "", dir.path());
  };
  // Every node sees the other two, and c's id as `kvmesh members` shows it.
  std::string c_id;
  ASSERT_TRUE(kvmesh::testing::Eventually(std::chrono::seconds(20), [&] {
    for (const auto* d : {&a, &b, &c}) {
      CommandResult m = run(*d, {"--json", "members"});
      if (m.exit_code != 0) return false;
      int alive = 0;
      for (const auto& member : nlohmann::json::parse(m.out)) {
        alive += member["alive"].get<bool>() ? 1 : 0;
        if (d == &c && member["self"].get<bool>()) c_id = member["node"].get<std::string>();
      }
      if (alive != 3) return false;
    }
    return true;
  }));
  for (int d = 0; d < 8; ++d) {
    const std::string path = "/pairs/" + std::to_string(d);
    ASSERT_EQ(run(a, {"put", path, "/k", "v" + std::to_string(d)}).exit_code, 0) << path;
  }
  ASSERT_EQ(run(a, {"put", "/strict/x", "/k", "s"}).exit_code, 0);

  CommandResult drain = run(a, {"node", "drain", c_id});
  ASSERT_EQ(drain.exit_code, 0) << drain.err;
  EXPECT_NE(drain.out.find("node " + c_id + " is draining"), std::string::npos) << drain.out;
  // Through b, c ends drained, having handed each of its databases over.
  bool drained = kvmesh::testing::Eventually(std::chrono::seconds(30), [&] {
    CommandResult m = run(b, {"members"});
    return m.out.find(c_id) != std::string::npos && m.out.find("DRAINED (") != std::string::npos;
  });
  CommandResult shown = run(b, {"status"});
  ASSERT_TRUE(drained) << shown.out << shown.err;
  CommandResult json = run(c, {"--json", "members"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  for (const auto& member : nlohmann::json::parse(json.out)) {
    if (member["node"] != c_id) {
      EXPECT_EQ(member["placement"], "active") << json.out;
      continue;
    }
    EXPECT_EQ(member["placement"], "drained") << json.out;
    EXPECT_EQ(member["drain_left"], 0) << json.out;
    EXPECT_GT(member["drain_total"].get<int>(), 0) << json.out;
  }
  // The users' databases c holds, by its catalog.
  auto held_by_c = [&] {
    CommandResult dbs = run(c, {"--json", "dbs"});
    if (dbs.exit_code != 0) return size_t{1000};
    return nlohmann::json::parse(dbs.out)["databases"].size();
  };
  EXPECT_EQ(held_by_c(), 0u);
  for (int d = 0; d < 8; ++d) {
    const std::string path = "/pairs/" + std::to_string(d);
    EXPECT_EQ(run(c, {"get", path, "/k"}).out, "v" + std::to_string(d)) << path;
  }
  // a and b must both stay for /strict/* (min 2).
  CommandResult too_few = run(c, {"node", "drain", kvmesh::FormatNodeId(0)});
  EXPECT_EQ(too_few.exit_code, 1) << too_few.err;  // not a member
  EXPECT_NE(too_few.err.find("no member"), std::string::npos) << too_few.err;
  std::string b_id;
  for (const auto& member : nlohmann::json::parse(run(b, {"--json", "members"}).out)) {
    if (member["self"].get<bool>()) b_id = member["node"].get<std::string>();
  }
  CommandResult refused = run(a, {"node", "drain", b_id});
  EXPECT_EQ(refused.exit_code, 3);
  EXPECT_NE(refused.err.find("would leave 1 nodes"), std::string::npos) << refused.err;

  CommandResult undrain = run(b, {"node", "undrain", c_id});
  ASSERT_EQ(undrain.exit_code, 0) << undrain.err;
  EXPECT_NE(undrain.out.find("undrained"), std::string::npos) << undrain.out;
  EXPECT_TRUE(kvmesh::testing::Eventually(std::chrono::seconds(30), [&] {
    const size_t held = held_by_c();
    return held > 0 && held < 1000;
  })) << "node c took none of its share back";
  EXPECT_EQ(run(a, {"members"}).out.find("DRAIN"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

using kvmesh::testing::CommandResult;
using kvmesh::testing::TempDir;

// `kvmesh cert` needs no node: it writes the files where --dir says, prints them and how to use
// them, and refuses what would replace a file.
TEST(CliCertTest, MakesCaNodeAndClientCertificatesAndShowsThem) {
  TempDir dir;
  auto run = [&](std::vector<std::string> args) {
    return kvmesh::testing::RunCommand(KVMESH_CLI_PATH, args, "", dir.path());
  };
  const std::string d = dir / "pki";
  std::filesystem::create_directories(d);
  CommandResult ca = run({"cert", "ca", "--dir", d});
  ASSERT_EQ(ca.exit_code, 0) << ca.err;
  EXPECT_NE(ca.out.find("wrote " + d + "/ca.crt"), std::string::npos) << ca.out;
  EXPECT_NE(ca.out.find("wrote " + d + "/ca.key"), std::string::npos) << ca.out;

  CommandResult node =
      run({"cert", "node", "n1", "--host", "127.0.0.1", "--host", "db1.example", "--dir", d});
  ASSERT_EQ(node.exit_code, 0) << node.err;
  EXPECT_NE(node.out.find("kvmeshd --name n1 --tls-ca " + d + "/ca.crt --tls-cert " + d +
                          "/node-n1.crt --tls-key " + d + "/node-n1.key"),
            std::string::npos)
      << node.out;
  CommandResult client = run({"cert", "client", "alice", "--dir", d, "--days", "30"});
  ASSERT_EQ(client.exit_code, 0) << client.err;
  EXPECT_NE(client.out.find("kvmesh --tls-ca " + d + "/ca.crt --tls-cert " + d +
                            "/client-alice.crt --tls-key " + d + "/client-alice.key"),
            std::string::npos)
      << client.out;

  CommandResult show = run({"cert", "show", d + "/node-n1.crt"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("subject:     CN=n1,OU=kvmesh node"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("names:       IP:127.0.0.1, DNS:db1.example"), std::string::npos)
      << show.out;
  EXPECT_NE(show.out.find("issuer:      CN=kvmesh cluster CA"), std::string::npos) << show.out;

  CommandResult again = run({"cert", "ca", "--dir", d});
  EXPECT_EQ(again.exit_code, 3);
  EXPECT_EQ(again.err,
            "kvmesh: invalid_argument: " + d + "/ca.crt exists; not replacing it (use --force)\n");
  CommandResult no_ca = run({"cert", "client", "bob", "--dir", dir.path()});
  EXPECT_EQ(no_ca.exit_code, 1);
  EXPECT_NE(no_ca.err.find("cannot read the CA certificate " + dir.path() + "/ca.crt"),
            std::string::npos)
      << no_ca.err;
  EXPECT_EQ(run({"cert", "node", "n2", "--dir", d}).exit_code, 2);  // --host is required
}

TEST(CliCertTest, TlsNeedsAllThreeFilesFromFlagsOrVariables) {
  TempDir dir;
  CommandResult partial = kvmesh::testing::RunCommand(
      KVMESH_CLI_PATH, {"--tls-ca", "ca.crt", "--tls-key", "k.key", "ls", "/db"}, "", dir.path());
  EXPECT_EQ(partial.exit_code, 2);
  EXPECT_EQ(partial.err,
            "kvmesh: --tls-cert (or KVMESH_TLS_CERT) is missing; TLS needs the CA, a certificate "
            "and its key\n");
  // The variable fills in the missing flag: the command gets past the check (and fails only
  // to reach the node, at a port where none listens).
  ::setenv("KVMESH_TLS_KEY", "from-env.key", 1);
  CommandResult env =
      kvmesh::testing::RunCommand(KVMESH_CLI_PATH,
                                  {"--node", "127.0.0.1:1", "--timeout", "2", "--tls-ca", "ca.crt",
                                   "--tls-cert", "c.crt", "ls", "/db"},
                                  "", dir.path());
  ::unsetenv("KVMESH_TLS_KEY");
  EXPECT_EQ(env.exit_code, 3) << env.err;
  EXPECT_EQ(env.err.find("is missing"), std::string::npos) << env.err;
}

/// The last "position P" line of a watch's stderr.
std::string LastPosition(const std::string& err) {
  const std::string tag = "position ";
  const size_t at = err.rfind(tag);
  if (at == std::string::npos) return "";
  const size_t end = err.find('\n', at);
  return err.substr(at + tag.size(), end == std::string::npos ? end : end - at - tag.size());
}

TEST_F(CliTest, WatchPrintsChangesUnderAPrefixAndResumesFromAPosition) {
  // A watch from now ends after its first event; puts go on until it has seen one (bounded).
  auto first = std::async(std::launch::async, [&] {
    return Run({"watch", "/example/kv", "/w", "--count", "1"});
  });
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(Run({"put", "/example/kv", "/w/a", "1"}).exit_code, 0);
    if (first.wait_for(std::chrono::milliseconds(100)) == std::future_status::ready) break;
  }
  ASSERT_EQ(first.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  CommandResult watched = first.get();
  ASSERT_EQ(watched.exit_code, 0) << watched.err;
  EXPECT_EQ(watched.out.substr(0, 9), "put /w/a\n") << watched.out;
  const std::string position = LastPosition(watched.err);
  ASSERT_FALSE(position.empty()) << watched.err;

  // What happened since that position, outside the prefix left out, in order, as JSON lines.
  ASSERT_EQ(Run({"put", "/example/kv", "/w/b", "2"}).exit_code, 0);
  ASSERT_EQ(Run({"put", "/example/kv", "/x/c", "3"}).exit_code, 0);
  ASSERT_EQ(Run({"del", "/example/kv", "/w/a"}).exit_code, 0);
  // Bounded (--seconds): a watch that misses its events must not hang the test.
  CommandResult resumed = Run({"--json", "watch", "/example/kv", "/w", "--from", position,
                               "--count", "2", "--values", "--seconds", "20"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  std::vector<std::string> lines;
  for (size_t at = 0, end; (end = resumed.out.find('\n', at)) != std::string::npos; at = end + 1) {
    lines.push_back(resumed.out.substr(at, end - at));
  }
  ASSERT_EQ(lines.size(), 2u) << resumed.out;
  EXPECT_NE(lines[0].find(R"("event":"put")"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(R"("key":"/w/b")"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(R"("value":"Mg==")"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find(R"("position")"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find(R"("event":"delete")"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find(R"("key":"/w/a")"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find(R"("position":")"), std::string::npos) << lines[1];

  CommandResult bad = Run({"watch", "/example/kv", "--from", "nonsense"});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_NE(bad.err.find("not a position a watch gave"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kvmesh
