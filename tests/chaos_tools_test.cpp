// The chaos check's parts: the history checker must catch each kind of violation, and the
// fault proxy must really cut and stall connections between the processes it knows.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "process_util.hpp"
#include "tools/cluster/fault_proxy.hpp"
#include "tools/cluster/history.hpp"

namespace kvmesh::cluster {
namespace {

using kvmesh::testing::ConnectTo;
using kvmesh::testing::ListenLoopback;
using kvmesh::testing::ReadExactlyBefore;
using kvmesh::testing::ReadWithin;

OpRecord Write(uint64_t id, std::string key, std::optional<std::string> value, Code code) {
  OpRecord op;
  op.id = id;
  op.db = "/db";
  op.kind = value ? OpRecord::Kind::kPut : OpRecord::Kind::kErase;
  op.ops.push_back(
      {value ? WriteOp::Kind::kPut : WriteOp::Kind::kErase, std::move(key), value.value_or("")});
  op.code = code;
  return op;
}

OpRecord Batch(uint64_t id, std::vector<WriteOp> ops, Code code) {
  OpRecord op;
  op.id = id;
  op.db = "/db";
  op.kind = OpRecord::Kind::kBatch;
  op.ops = std::move(ops);
  op.code = code;
  return op;
}

OpRecord Cas(uint64_t id, std::string expected, Code code) {
  OpRecord op = Write(id, std::string(kCasKeyPrefix) + "0", "v" + std::to_string(id), code);
  op.kind = OpRecord::Kind::kCas;
  op.expected_version = std::move(expected);
  return op;
}

TEST(HistoryCheckTest, AtMostOneConditionalWritePerExpectedVersionIsAcknowledged) {
  std::vector<OpRecord> ops = {Cas(1, "", Code::kOk), Cas(2, "", Code::kConditionFailed),
                               Cas(3, "v1-a-1", Code::kOk), Cas(4, "v1-a-1", Code::kTimeout),
                               Cas(5, "v1-a-1", Code::kConditionFailed)};
  const FinalState state = {{"/db", {{"/cas/0", "v3"}}}};
  CheckResult ok = CheckHistory(ops, state);
  EXPECT_TRUE(ok.pass) << ok.violation;
  EXPECT_EQ(ok.cas_acknowledged, 2u);
  EXPECT_EQ(ok.cas_refused, 2u);
  EXPECT_EQ(ok.unexpected_errors, 0u);
  ops.push_back(Cas(6, "v1-a-1", Code::kOk));
  CheckResult twice = CheckHistory(ops, state);
  EXPECT_FALSE(twice.pass);
  EXPECT_NE(twice.violation.find("op 3"), std::string::npos) << twice.violation;
  EXPECT_NE(twice.violation.find("op 6"), std::string::npos) << twice.violation;
}

TEST(HistoryCheckTest, AcknowledgedWritesAndDeletesMustSurvive) {
  std::vector<OpRecord> ops = {Write(1, "/a", "1", Code::kOk), Write(2, "/a", "2", Code::kOk),
                               Write(3, "/b", "x", Code::kOk), Write(4, "/b", {}, Code::kOk)};
  EXPECT_TRUE(CheckHistory(ops, {{"/db", {{"/a", "2"}}}}).pass);
  // The last acknowledged put is lost (an older value won).
  CheckResult lost = CheckHistory(ops, {{"/db", {{"/a", "1"}}}});
  EXPECT_FALSE(lost.pass);
  EXPECT_NE(lost.violation.find("key /a of /db holds \"1\""), std::string::npos) << lost.violation;
  EXPECT_NE(lost.violation.find("op 2"), std::string::npos) << lost.violation;
  // The key is missing altogether.
  EXPECT_FALSE(CheckHistory(ops, {{"/db", {}}}).pass);
  // An acknowledged delete is undone.
  EXPECT_FALSE(CheckHistory(ops, {{"/db", {{"/a", "2"}, {"/b", "x"}}}}).pass);
  // A key nobody wrote appears.
  CheckResult junk = CheckHistory(ops, {{"/db", {{"/a", "2"}, {"/zzz", "?"}}}});
  EXPECT_FALSE(junk.pass);
  EXPECT_NE(junk.violation.find("never written"), std::string::npos) << junk.violation;
}

TEST(HistoryCheckTest, IndeterminateWritesMayApplyOnlyAfterTheLastAcknowledged) {
  std::vector<OpRecord> ops = {Write(1, "/a", "old", Code::kTimeout),
                               Write(2, "/a", "acked", Code::kOk),
                               Write(3, "/a", "maybe", Code::kUnavailable)};
  EXPECT_TRUE(CheckHistory(ops, {{"/db", {{"/a", "acked"}}}}).pass);
  EXPECT_TRUE(CheckHistory(ops, {{"/db", {{"/a", "maybe"}}}}).pass);
  // A timed-out write from before the acknowledged one won: the acknowledged write is lost.
  EXPECT_FALSE(CheckHistory(ops, {{"/db", {{"/a", "old"}}}}).pass);
  // A never-acknowledged key may hold nothing or the indeterminate value.
  std::vector<OpRecord> only = {Write(1, "/n", "maybe", Code::kTimeout)};
  EXPECT_TRUE(CheckHistory(only, {}).pass);
  EXPECT_TRUE(CheckHistory(only, {{"/db", {{"/n", "maybe"}}}}).pass);
  CheckResult counts = CheckHistory(ops, {{"/db", {{"/a", "acked"}}}});
  EXPECT_EQ(counts.acknowledged, 1u);
  EXPECT_EQ(counts.indeterminate, 2u);
}

// Issue 13: keys stay in use after an indeterminate write; its deadline says whether it may have
// applied after a later acknowledged write (it never applies after its deadline).
TEST(HistoryCheckTest, AnIndeterminateWriteMayOutliveALaterAckOnlyUntilItsDeadline) {
  OpRecord late = Write(1, "/a", "late", Code::kUnavailable);
  late.start_us = 0;
  late.end_us = 100;
  late.deadline_us = 3000;
  OpRecord acked = Write(2, "/a", "acked", Code::kOk);
  acked.start_us = 200;  // before the late write's deadline: it may apply after this one
  acked.end_us = 300;
  EXPECT_TRUE(CheckHistory({late, acked}, {{"/db", {{"/a", "acked"}}}}).pass);
  CheckResult racing = CheckHistory({late, acked}, {{"/db", {{"/a", "late"}}}});
  EXPECT_TRUE(racing.pass) << racing.violation;
  acked.start_us = 3000;  // at its deadline: the late write can no longer win
  acked.end_us = 3100;
  CheckResult past = CheckHistory({late, acked}, {{"/db", {{"/a", "late"}}}});
  EXPECT_FALSE(past.pass);
  EXPECT_NE(past.violation.find("key /a of /db holds \"late\""), std::string::npos)
      << past.violation;
}

TEST(HistoryCheckTest, BatchesAreAllOrNothingAndOtherErrorsFail) {
  std::vector<OpRecord> ops = {
      Batch(1, {{WriteOp::Kind::kPut, "/x", "b1"}, {WriteOp::Kind::kPut, "/y", "b1"}}, Code::kOk),
      Batch(2, {{WriteOp::Kind::kPut, "/x", "b2"}, {WriteOp::Kind::kErase, "/y", ""}},
            Code::kTimeout)};
  EXPECT_TRUE(CheckHistory(ops, {{"/db", {{"/x", "b1"}, {"/y", "b1"}}}}).pass);
  EXPECT_TRUE(CheckHistory(ops, {{"/db", {{"/x", "b2"}}}}).pass);
  CheckResult partial = CheckHistory(ops, {{"/db", {{"/x", "b2"}, {"/y", "b1"}}}});
  EXPECT_FALSE(partial.pass);
  EXPECT_NE(partial.violation.find("partially"), std::string::npos) << partial.violation;

  std::vector<OpRecord> errors = {Write(1, "/a", "1", Code::kOk),
                                  Write(2, "/a", "2", Code::kInternal)};
  CheckResult bad = CheckHistory(errors, {{"/db", {{"/a", "1"}}}});
  EXPECT_FALSE(bad.pass);
  EXPECT_EQ(bad.unexpected_errors, 1u);
  // not_found answers a read; it is not an error.
  OpRecord get;
  get.id = 3;
  get.db = "/db";
  get.kind = OpRecord::Kind::kGet;
  get.ops.push_back({WriteOp::Kind::kPut, "/a", ""});
  get.code = Code::kNotFound;
  EXPECT_TRUE(CheckHistory({errors[0], get}, {{"/db", {{"/a", "1"}}}}).pass);
}

// --- FaultNetwork: this test process plays node 0, an echo server stands behind node 1. ---

/// Echoes every connection's bytes back until stopped.
class EchoServer {
 public:
  EchoServer() : fd_(ListenLoopback(&port_)) {
    thread_ = std::thread([this] {
      std::vector<int> conns;
      while (!stop_) {
        std::vector<pollfd> fds = {{fd_, POLLIN, 0}};
        for (int c : conns) fds.push_back({c, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
        if (fds[0].revents & POLLIN) conns.push_back(::accept(fd_, nullptr, nullptr));
        for (size_t i = 1; i < fds.size(); ++i) {
          if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
          char buf[256];
          ssize_t n = ::recv(fds[i].fd, buf, sizeof(buf), 0);
          if (n > 0) ::send(fds[i].fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
        }
      }
      for (int c : conns) ::close(c);
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int port_ = 0;
  int fd_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(FaultNetworkTest, CutClosesAndRefusesCrossingLinksStallHoldsBytesUntilHeal) {
  EchoServer echo;
  const pid_t me = ::getpid();
  FaultNetwork net(2, [me] { return std::vector<pid_t>{me, 0}; });
  ASSERT_TRUE(net.status().ok()) << net.status();
  net.SetTarget(1, echo.port());
  net.Start();

  // Healthy: bytes go through node 1's proxy and come back.
  int a = ConnectTo(net.address(1));
  ASSERT_EQ(::send(a, "ping", 4, 0), 4);
  EXPECT_EQ(ReadWithin(a, 4, 2000), "ping");

  // Stall: nothing moves and the connection stays open; heal releases the held bytes, and only
  // heal does. A proxy that merely delays bytes by a fixed D must fail: the stall is held twice,
  // for a short and a long time, and each time the echo must come back within kAfterHeal of the
  // heal. The echo crosses the proxy twice, so such a proxy returns it after D or 2D (2D when
  // the way back is still stalled); no D brings it into both [300, 800] and [1800, 2300] ms.
  constexpr int kAfterHeal = 500;
  for (int silence_ms : {300, 1800}) {
    SCOPED_TRACE("stalled for " + std::to_string(silence_ms) + " ms");
    ASSERT_TRUE(net.Partition({0, 1}, PartitionMode::kStall));
    ASSERT_EQ(::send(a, "held", 4, 0), 4);
    EXPECT_EQ(ReadWithin(a, 4, silence_ms), "");
    const auto heal_started = std::chrono::steady_clock::now();
    ASSERT_TRUE(net.Heal());
    EXPECT_EQ(ReadExactlyBefore(a, 4, heal_started + std::chrono::milliseconds(kAfterHeal)),
              "held");
  }

  // Cut: the open connection is closed, and a new one is closed on accept.
  net.Partition({0, 1}, PartitionMode::kCut);
  EXPECT_EQ(ReadWithin(a, 4, 2000), "EOF");
  ::close(a);
  int b = ConnectTo(net.address(1));
  EXPECT_EQ(ReadWithin(b, 4, 2000), "EOF");
  ::close(b);
  EXPECT_GE(net.stats().cut, 2u);

  // Same side: not affected.
  net.Partition({1, 1}, PartitionMode::kCut);
  int c = ConnectTo(net.address(1));
  ASSERT_EQ(::send(c, "same", 4, 0), 4);
  EXPECT_EQ(ReadWithin(c, 4, 2000), "same");
  ::close(c);
  net.Heal();
  EXPECT_EQ(net.stats().unidentified, 0u);
}

TEST(FaultNetworkTest, ConnectionsFromUnknownProcessesAreNeverFailed) {
  EchoServer echo;
  // No known node pid: the opener is unidentified, so a partition does not touch it.
  FaultNetwork net(2, [] { return std::vector<pid_t>{0, 0}; });
  net.SetTarget(1, echo.port());
  net.Start();
  net.Partition({0, 1}, PartitionMode::kCut);
  int a = ConnectTo(net.address(1));
  ASSERT_EQ(::send(a, "anon", 4, 0), 4);
  EXPECT_EQ(ReadWithin(a, 4, 2000), "anon");
  ::close(a);
  EXPECT_EQ(net.stats().unidentified, 1u);
}

}  // namespace
}  // namespace kvmesh::cluster
