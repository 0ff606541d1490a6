// kvmesh-bench: its measuring parts (histogram, key choice, /proc readings) and the tool end to
// end on small runs (the figures themselves are not asserted: speed is measured, not tested).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "process_util.hpp"
#include "test_util.hpp"
#include "tools/bench/measure.hpp"

namespace kvmesh::bench {
namespace {

using Json = nlohmann::json;
using kvmesh::testing::RunCommand;
using kvmesh::testing::TempDir;

TEST(LatencyHistogramTest, BucketsCoverEveryValueWithinThreePercent) {
  std::mt19937_64 random(1);
  for (int i = 0; i < 100000; ++i) {
    // Up to 2^62 ns (146 years): the top bucket's end does not fit in 64 bits.
    const uint64_t v = random() >> (2 + random() % 62);
    const size_t b = LatencyHistogram::BucketOf(v);
    ASSERT_LE(LatencyHistogram::BucketFloor(b), v);
    ASSERT_GT(LatencyHistogram::BucketFloor(b + 1), v);
    ASSERT_LE(LatencyHistogram::BucketFloor(b + 1) - LatencyHistogram::BucketFloor(b),
              std::max<uint64_t>(1, v / 32));
  }
}

TEST(LatencyHistogramTest, QuantilesOfAKnownDistribution) {
  LatencyHistogram h;
  EXPECT_EQ(h.QuantileMicros(0.5), 0);
  // 1 us .. 10,000 us, once each.
  for (uint64_t us = 1; us <= 10000; ++us) h.Record(us * 1000);
  EXPECT_EQ(h.count(), 10000u);
  EXPECT_NEAR(h.QuantileMicros(0.5), 5000, 5000 * 0.03);
  EXPECT_NEAR(h.QuantileMicros(0.99), 9900, 9900 * 0.03);
  EXPECT_NEAR(h.QuantileMicros(0.999), 9990, 9990 * 0.03);
  // A slow tail shows in p99.9 but not in p50.
  LatencyHistogram tail;
  for (int i = 0; i < 9990; ++i) tail.Record(10000);
  for (int i = 0; i < 10; ++i) tail.Record(50000000);
  EXPECT_NEAR(tail.QuantileMicros(0.5), 10, 0.5);
  EXPECT_NEAR(tail.QuantileMicros(0.9995), 50000, 50000 * 0.03);
}

TEST(KeyChooserTest, UniformCoversTheRangeEvenly) {
  KeyChooser chooser("uniform", 10, 7);
  std::map<uint64_t, int> seen;
  for (int i = 0; i < 100000; ++i) ++seen[chooser.Next()];
  ASSERT_EQ(seen.size(), 10u);
  for (const auto& [key, n] : seen) EXPECT_NEAR(n, 10000, 600) << key;
}

TEST(KeyChooserTest, ZipfianIsSkewedAndItsHotKeysAreSpread) {
  const uint64_t n = 100000;
  KeyChooser chooser("zipfian", n, 7);
  std::map<uint64_t, int> seen;
  const int draws = 200000;
  for (int i = 0; i < draws; ++i) {
    const uint64_t k = chooser.Next();
    ASSERT_LT(k, n);
    ++seen[k];
  }
  std::vector<std::pair<int, uint64_t>> by_count;
  for (const auto& [key, count] : seen) by_count.push_back({count, key});
  std::sort(by_count.rbegin(), by_count.rend());
  // With theta 0.99 the hottest key takes about 1/zeta(n) = 8% of the draws; a uniform choice
  // would give it 0.001%.
  EXPECT_GT(by_count[0].first, draws / 20);
  // The ten hottest keys are not the ten lowest indexes: ranks are scrambled.
  int low = 0;
  for (int i = 0; i < 10; ++i) low += by_count[i].second < 10;
  EXPECT_LT(low, 10);
  // Every key is still reachable: most keys were drawn at most a few times, but many were drawn.
  EXPECT_GT(seen.size(), n / 10);
}

TEST(KeyChooserTest, SequentialCountsUpAndWraps) {
  KeyChooser chooser("sequential", 5, 7);
  const uint64_t first = chooser.Next();
  for (uint64_t i = 1; i < 12; ++i) EXPECT_EQ(chooser.Next(), (first + i) % 5);
}

TEST(BenchKeysTest, AGroupPrefixListsItsKeys) {
  EXPECT_EQ(KeyOf(12345, 100), "/k/00000123/0045");
  EXPECT_EQ(GroupPrefix(123), "/k/00000123");
  EXPECT_EQ(KeyOf(12345, 100).rfind(GroupPrefix(123) + "/", 0), 0u);
  // Numbers wider than their field keep every digit, as printf's "%08llu" would.
  EXPECT_EQ(KeyOf(0, 100), "/k/00000000/0000");
  EXPECT_EQ(KeyOf(123456789012, 10), "/k/12345678901/0002");
  EXPECT_EQ(KeyOf(99999, 100000), "/k/00000000/99999");
  EXPECT_EQ(GroupPrefix(18446744073709551615ull), "/k/18446744073709551615");
}

TEST(ProcessSampleTest, ReadsThisProcessAndRefusesAMissingOne) {
  ProcessSample self = SampleProcess(::getpid());
  ASSERT_TRUE(self.ok);
  EXPECT_GT(self.rss_bytes, 1u << 20);
  EXPECT_GE(self.cpu_seconds, 0);
  EXPECT_FALSE(SampleProcess(0x3fffffff).ok);
}

TEST(ProcessSampleTest, FindsTheProcessListeningOnAPort) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  EXPECT_EQ(PidListeningOn(port), ::getpid());
  ::close(fd);
  EXPECT_EQ(PidListeningOn(port), 0);
}

class BenchToolTest : public ::testing::Test {
 protected:
  /// Runs kvmesh-bench with `args` plus --json --quiet and a scratch dir; parses its output.
  Json Bench(std::vector<std::string> args, int expected_exit = 0) {
    args.insert(args.end(), {"--json", "--quiet", "--dir", dir_ / "scratch"});
    auto r = RunCommand(KVMESH_BENCH_PATH, args, "", dir_.path());
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    try {
      return Json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "no JSON: " << e.what() << "\n" << r.out << r.err;
      return Json();
    }
  }
  TempDir dir_;
};

TEST_F(BenchToolTest, EveryWorkloadOnRocksDbAndAnEmbeddedNode) {
  Json out = Bench({"--targets", "rocksdb,embedded", "--workloads", "put,get,list,mixed,batch",
                    "--value-sizes", "100", "--inflight", "1,8", "--keys", "6000", "--ops", "300",
                    "--scan-length", "50", "--batch-size", "20", "--databases", "3"});
  ASSERT_TRUE(out.contains("results"));
  std::map<std::string, int> rows;
  for (const Json& r : out["results"]) {
    const std::string target = r["target"];
    const std::string workload = r["workload"];
    SCOPED_TRACE(target + " " + workload + " i" + std::to_string(r["inflight"].get<int>()));
    ++rows[target];
    EXPECT_EQ(r["failures"], 0);
    EXPECT_EQ(r["ops"], 300);
    EXPECT_EQ(r["databases"], 3);
    EXPECT_GT(r["ops_per_second"].get<double>(), 0);
    EXPECT_GT(r["p99_us"].get<double>(), 0);
    EXPECT_GE(r["p999_us"].get<double>(), r["p50_us"].get<double>());
    EXPECT_GT(r["rss_peak_mib"].get<double>(), 1);
    if (workload == "list") EXPECT_EQ(r["keys"], 300 * 50) << "every scan returns a full group";
    if (workload == "batch") EXPECT_EQ(r["keys"], 300 * 20);
    if (workload == "get" || workload == "put") EXPECT_EQ(r["keys"], 300);
    if (target == "embedded") EXPECT_TRUE(r.contains("vs_rocksdb"));
  }
  // RocksDB is synchronous: requests in flight do not apply, so it runs once per workload.
  EXPECT_EQ(rows["rocksdb"], 5);
  EXPECT_EQ(rows["embedded"], 10);
  ASSERT_EQ(out["instantiation"].size(), 1u);
  EXPECT_EQ(out["instantiation"][0]["databases"], 3);
}

// put-ttl, cas-put and watch need the kvmesh API: raw RocksDB skips them, an embedded node runs
// them; every conditional put passes (fresh keys) and every write's event reaches the watcher.
TEST_F(BenchToolTest, TtlConditionalPutAndWatchRowsOnAnEmbeddedNode) {
  Json out = Bench({"--targets", "rocksdb,embedded", "--workloads", "put-ttl,cas-put,watch",
                    "--value-sizes", "100", "--inflight", "1,8", "--keys", "1000", "--ops", "200"});
  ASSERT_TRUE(out.contains("results"));
  std::map<std::string, int> rows;
  for (const Json& r : out["results"]) {
    const std::string workload = r["workload"];
    SCOPED_TRACE(workload + " i" + std::to_string(r["inflight"].get<int>()));
    EXPECT_EQ(r["target"], "embedded");
    ++rows[workload];
    EXPECT_EQ(r["failures"], 0);
    EXPECT_EQ(r["ops"], 200);  // watch: events matched to their writes
    EXPECT_EQ(r["keys"], 200);
    EXPECT_GT(r["ops_per_second"].get<double>(), 0);
    if (workload != "watch") EXPECT_GT(r["p50_us"].get<double>(), 0);
    EXPECT_GE(r["p99_us"].get<double>(), r["p50_us"].get<double>());
  }
  EXPECT_EQ(rows, (std::map<std::string, int>{{"cas-put", 2}, {"put-ttl", 2}, {"watch", 2}}));
}

TEST_F(BenchToolTest, AClusterReportsReplicationLagAndACatchUpOfOnlyWhatWasMissed) {
  Json out =
      Bench({"--targets", "cluster", "--workloads", "put", "--value-sizes", "100", "--inflight",
             "4", "--ops", "200", "--lag-samples", "20", "--catchup-keys", "1500"});
  ASSERT_TRUE(out.contains("extras"));
  ASSERT_EQ(out["results"].size(), 1u);
  EXPECT_EQ(out["results"][0]["target"], "cluster3");
  EXPECT_EQ(out["results"][0]["failures"], 0);
  // The CPU per operation of each node, the writer first, adding up to the servers' total (a
  // node's own figure may be 0 in a run this short: the kernel counts CPU in ticks).
  const Json& row = out["results"][0];
  ASSERT_TRUE(row.contains("server_cpu_us_per_op_each"));
  ASSERT_EQ(row["server_cpu_us_per_op_each"].size(), 3u);
  double sum = 0;
  for (const Json& us : row["server_cpu_us_per_op_each"]) {
    EXPECT_GE(us.get<double>(), 0);
    sum += us.get<double>();
  }
  EXPECT_NEAR(sum, row["server_cpu_us_per_op"].get<double>(), 1e-6 * (1 + sum));
  std::map<std::string, Json> extras;
  for (const Json& e : out["extras"]) extras[e["what"]] = e["figures"];
  ASSERT_TRUE(extras.count("replication_lag"));
  EXPECT_EQ(extras["replication_lag"]["samples"], 20);
  EXPECT_EQ(extras["replication_lag"]["not_visible_after_10s"], 0);
  ASSERT_TRUE(extras.count("catch_up"));
  EXPECT_EQ(extras["catch_up"]["converged"], true);
  EXPECT_EQ(extras["catch_up"]["entries_applied"], 1500);
}

TEST_F(BenchToolTest, RedisIsMeasuredInTheSameRunAndEveryRowHasItsCpuPerOperation) {
  // CI installs redis-server (scripts/install-deps.sh); only a machine without it skips.
  if (std::system("command -v redis-server >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "redis-server is not installed";
  }
  Json out =
      Bench({"--targets", "embedded,redis", "--workloads", "put,get,list", "--value-sizes", "100",
             "--inflight", "1,8", "--keys", "2000", "--ops", "300", "--scan-length", "50"});
  ASSERT_TRUE(out.contains("results"));
  std::map<std::string, int> rows;
  for (const Json& r : out["results"]) {
    const std::string target = r["target"];
    const std::string workload = r["workload"];
    const int inflight = r["inflight"];
    SCOPED_TRACE(target + " " + workload + " i" + std::to_string(inflight));
    ++rows[target + " " + workload];
    // Every get found its key: the load wrote through the same sessions.
    EXPECT_EQ(r["failures"], 0);
    EXPECT_TRUE(r["errors"].empty());
    EXPECT_EQ(r["ops"], 300);
    EXPECT_GT(r["bench_cpu_us_per_op"].get<double>(), 0);
    if (target == "redis") {
      // redis-server is its own process: its CPU is counted apart.
      ASSERT_TRUE(r.contains("server_cpu_us_per_op"));
      EXPECT_GT(r["server_cpu_us_per_op"].get<double>(), 0);
      EXPECT_FALSE(r.contains("vs_redis"));
    } else {
      EXPECT_FALSE(r.contains("server_cpu_us_per_op")) << "the embedded node is this process";
      // Compared with Redis at the same requests in flight.
      if (workload != "list") {
        ASSERT_TRUE(r.contains("vs_redis"));
        EXPECT_GT(r["vs_redis"].get<double>(), 0);
      }
    }
  }
  EXPECT_EQ(rows["redis put"], 2);
  EXPECT_EQ(rows["redis get"], 2);
  EXPECT_EQ(rows["redis list"], 0) << "Redis has no ordered listing: skipped, not failed";
  EXPECT_EQ(rows["embedded list"], 2);
}

TEST_F(BenchToolTest, CafEchoAnswersTheClientLibrarysRequestsFromAProcessOfItsOwn) {
  Json out = Bench({"--targets", "caf-echo", "--workloads", "put,get,list", "--value-sizes", "100",
                    "--inflight", "1,8", "--keys", "2000", "--ops", "300"});
  ASSERT_TRUE(out.contains("results"));
  std::map<std::string, int> rows;
  for (const Json& r : out["results"]) {
    const std::string workload = r["workload"];
    SCOPED_TRACE(workload + " i" + std::to_string(r["inflight"].get<int>()));
    ++rows[workload];
    EXPECT_EQ(r["target"], "caf-echo");
    // Every request got the reply the client library expects (ok for a put, a value for a
    // get), blocking (1 in flight) and through callbacks (8).
    EXPECT_EQ(r["failures"], 0) << r["errors"].dump();
    EXPECT_EQ(r["ops"], 300);
    // The server is a process of its own: its CPU is counted apart.
    ASSERT_TRUE(r.contains("server_cpu_us_per_op"));
    EXPECT_GT(r["server_cpu_us_per_op"].get<double>(), 0);
  }
  EXPECT_EQ(rows["put"], 2);
  EXPECT_EQ(rows["get"], 2);
  EXPECT_EQ(rows["list"], 0) << "the echo server answers put and get only: skipped, not failed";
}

// The echo servers run a node's actor system as kvmesh-bench would start a kvmeshd: what it
// writes on a server's command line (EchoServerArgs) comes back as the node's options
// (EchoServerNode), -1 and 0 meaning the node's defaults; what a node would refuse is refused.
TEST(EchoServerArgsTest, ANodesSchedulerWorkersAndPollingReachTheServer) {
  auto args = EchoServerArgs("stealing", 3, 5);
  ASSERT_EQ(args.size(), 3u);
  auto node = EchoServerNode(args[0], args[1], args[2]);
  ASSERT_TRUE(node.has_value());
  EXPECT_EQ(node->scheduler_policy, "stealing");
  EXPECT_EQ(node->worker_threads, 3u);
  EXPECT_EQ(node->busy_poll, std::chrono::microseconds(5));
  args = EchoServerArgs("sharing", 0, -1);
  node = EchoServerNode(args[0], args[1], args[2]);
  ASSERT_TRUE(node.has_value());
  EXPECT_EQ(node->worker_threads, NodeOptions().worker_threads);
  EXPECT_EQ(node->busy_poll, NodeOptions().busy_poll);
  args = EchoServerArgs("sharing", 2, 0);
  node = EchoServerNode(args[0], args[1], args[2]);
  ASSERT_TRUE(node.has_value());
  EXPECT_EQ(node->busy_poll.count(), 0) << "0 turns polling off, as for a node";
  args = EchoServerArgs("sharing", kMaxWorkerThreads, static_cast<int>(kMaxBusyPoll.count()));
  node = EchoServerNode(args[0], args[1], args[2]);
  ASSERT_TRUE(node.has_value()) << "the bounds themselves are accepted";
  EXPECT_EQ(node->worker_threads, static_cast<size_t>(kMaxWorkerThreads));
  EXPECT_EQ(node->busy_poll, kMaxBusyPoll);
  for (const auto& [workers, poll] :
       std::vector<std::pair<std::string, std::string>>{{"2", "100001"},
                                                        {"2", "-2"},
                                                        {"2", ""},
                                                        {"2", "5x"},
                                                        {"257", "5"},
                                                        {"-1", "5"},
                                                        {"", "5"},
                                                        {"99999999999999999999", "5"},
                                                        {"2", "99999999999999999999"}}) {
    EXPECT_FALSE(EchoServerNode("sharing", workers, poll).has_value()) << workers << " " << poll;
  }
}

// A server given what kvmesh-bench would not pass says so and does not start. (Both cases are bad
// polling bounds: a server that accepted one would serve until killed, so the worker bound is
// checked by the test above, which cannot hang.)
TEST_F(BenchToolTest, EchoServersRefuseWhatTheBenchWouldNotPass) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--caf-echo-server", "sharing", "0", "100001"},
        std::vector<std::string>{"--loop-echo-server", "actor", "sharing", "2", "-2"}}) {
    SCOPED_TRACE(args[0]);
    auto r = RunCommand(KVMESH_BENCH_PATH, args, "", dir_.path());
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("worker threads must be 0 to 256 and busy polling -1 to 100000 us"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.out, "") << "no port: the server did not start";
  }
}

TEST_F(BenchToolTest, LoopEchoServersAnswerRedisProtocolThroughAnActorOrOnTheLoop) {
  Json out = Bench({"--targets", "loop-echo,loop-echo-inline", "--workloads", "put,get,list",
                    "--value-sizes", "100", "--inflight", "1,8", "--keys", "2000", "--ops", "300"});
  ASSERT_TRUE(out.contains("results"));
  std::map<std::string, int> rows;
  for (const Json& r : out["results"]) {
    const std::string target = r["target"];
    const std::string workload = r["workload"];
    SCOPED_TRACE(target + " " + workload + " i" + std::to_string(r["inflight"].get<int>()));
    ++rows[target + " " + workload];
    // Every request got the answer a Redis server gives (OK for SET, a value for GET), in order
    // on its connection, blocking (1 in flight) and pipelined (8): the actor hands each answer
    // back to the loop (loop-echo) or the loop answers at once (loop-echo-inline).
    EXPECT_EQ(r["failures"], 0) << r["errors"].dump();
    EXPECT_EQ(r["ops"], 300);
    ASSERT_TRUE(r.contains("server_cpu_us_per_op")) << "the server is a process of its own";
    EXPECT_GT(r["server_cpu_us_per_op"].get<double>(), 0);
  }
  for (const char* target : {"loop-echo", "loop-echo-inline"}) {
    EXPECT_EQ(rows[std::string(target) + " put"], 2) << target;
    EXPECT_EQ(rows[std::string(target) + " get"], 2) << target;
    EXPECT_EQ(rows[std::string(target) + " list"], 0) << target << ": no listing, skipped";
  }
}

TEST_F(BenchToolTest, FailedOperationsAreReportedWithTheFirstErrorOfEachKind) {
  // Values over the node's 16 MiB limit: every put fails, with the node's reason.
  std::vector<std::string> args = {"--targets",     "embedded", "--workloads", "put",
                                   "--value-sizes", "17000000", "--inflight",  "1,3",
                                   "--ops",         "3"};
  Json out = Bench(args, /*expected_exit=*/1);
  ASSERT_TRUE(out.contains("results"));
  ASSERT_EQ(out["results"].size(), 2u);
  for (const Json& r : out["results"]) {
    EXPECT_EQ(r["failures"], 3);
    ASSERT_EQ(r["errors"].size(), 1u) << r.dump();
    EXPECT_EQ(r["errors"][0]["code"], "value_too_large");
    EXPECT_EQ(r["errors"][0]["count"], 3);
    EXPECT_NE(r["errors"][0]["first_message"].get<std::string>().find("maximum value size"),
              std::string::npos)
        << r.dump();
  }
  // The table shows the reason under the row.
  args.insert(args.end(), {"--quiet", "--dir", dir_ / "scratch"});
  auto r = RunCommand(KVMESH_BENCH_PATH, args, "", dir_.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("3 failed with value_too_large, the first: value for key"),
            std::string::npos)
      << r.out;
}

TEST_F(BenchToolTest, TheLoadBeforeReadsWritesEveryKeyWhateverTheDuration) {
  // The load takes longer than --duration; had it stopped there, most gets would not find
  // their key.
  Json out = Bench({"--targets", "embedded", "--workloads", "get", "--value-sizes", "100",
                    "--inflight", "8", "--keys", "60000", "--ops", "500", "--duration", "0.1"});
  ASSERT_TRUE(out.contains("results"));
  ASSERT_EQ(out["results"].size(), 1u);
  EXPECT_EQ(out["results"][0]["failures"], 0) << out["results"][0]["errors"].dump();
  EXPECT_GT(out["results"][0]["ops"], 0);
}

TEST_F(BenchToolTest, CompareAlternatesTwoRunsAndPrintsRatios) {
  const std::string run = std::string(KVMESH_BENCH_PATH) +
                          " --targets rocksdb --workloads put --value-sizes 100 --ops 500 --dir " +
                          (dir_ / "compare");
  Json out = Bench({"--compare-a", run, "--compare-b", run, "--rounds", "2"});
  ASSERT_TRUE(out.contains("rows"));
  ASSERT_EQ(out["rows"].size(), 1u);
  EXPECT_EQ(out["rows"][0]["run"], "rocksdb put 100B c1 i1 dbs 1");
  EXPECT_GT(out["rows"][0]["ratio_b_over_a"].get<double>(), 0);
}

TEST_F(BenchToolTest, BadInputIsRefusedWithAClearError) {
  auto r =
      RunCommand(KVMESH_BENCH_PATH, {"--workloads", "scan", "--dir", dir_ / "s"}, "", dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown workload \"scan\""), std::string::npos) << r.err;
  r = RunCommand(KVMESH_BENCH_PATH, {"--targets", "mongo", "--dir", dir_ / "s"}, "", dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown target \"mongo\""), std::string::npos) << r.err;
  // A directory of someone else's files is never wiped.
  const std::string precious = dir_.Write("precious/data.txt", "keep me");
  r = RunCommand(KVMESH_BENCH_PATH, {"--dir", dir_ / "precious"}, "", dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("refusing to wipe --dir"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(precious));
  r = RunCommand(KVMESH_BENCH_PATH,
                 {"--targets", "remote", "--node", "127.0.0.1:1", "--dir", dir_ / "s"}, "",
                 dir_.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("cannot reach kvmesh node at 127.0.0.1:1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kvmesh::bench
