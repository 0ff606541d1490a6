// The low-space state (storage/space_monitor.hpp) on a real, small file system: a tmpfs mounted
// by the test (root only; CI runs as root).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#include "kvmesh/node.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::TempDir;

constexpr uint64_t kMiB = 1u << 20;

/// Free bytes of the file system holding `path`.
uint64_t FreeBytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

/// Everything logged while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  /// Call only while no node runs, or accept a torn read of the last line.
  bool Contains(const std::string& text) {
    sink_->flush();
    std::lock_guard<std::mutex> lock(mutex_);
    return stream_.str().find(text) != std::string::npos;
  }
  std::string Text() {
    sink_->flush();
    return stream_.str();
  }

 private:
  std::mutex mutex_;
  std::ostringstream stream_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

class LowSpaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "mounting a small tmpfs needs root (CI runs as root); low-space test skipped";
    }
    disk_ = dir_ / "disk";
    std::filesystem::create_directories(disk_);
    if (::mount("tmpfs", disk_.c_str(), "tmpfs", 0, "size=64m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs on " << disk_ << ": " << std::strerror(errno);
    }
    mounted_ = true;
  }

  void TearDown() override {
    node_.reset();
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
  }

  NodeOptions Options() {
    NodeOptions options;
    options.data_dir = disk_ + "/data";
    options.config_yaml = "matcher: /t/*\nsize: 1GB\n";
    // 24 MiB of the 64 are the room deletes and compactions keep (so RocksDB's memtable is 6 MiB);
    // an 8 MiB reserve for when something else fills the disk.
    options.low_space_bytes = 24 * kMiB;
    options.low_space_percent = 0;
    options.space_reserve_bytes = 8 * kMiB;
    options.space_check_interval = 50ms;
    return options;
  }

  void StartNode() {
    Status s = Node::Start(Options(), &node_);
    ASSERT_TRUE(s.ok()) << s;
  }

  TempDir dir_;
  std::string disk_;
  bool mounted_ = false;
  std::unique_ptr<Node> node_;
};

TEST_F(LowSpaceTest, PutsAreRefusedBeforeTheDiskIsFullAndDeletesStillFreeIt) {
  LogCapture log;
  ASSERT_NO_FATAL_FAILURE(StartNode());
  Database db = node_->open("/t/kv");
  ASSERT_TRUE(db.ok()) << db.status();

  // Incompressible values, so the disk fills as the data grows.
  std::mt19937_64 random(42);
  auto make_value = [&] {
    std::string value(32 * 1024, '\0');
    for (char& c : value) c = static_cast<char>(random());
    return value;
  };
  std::map<std::string, std::string> acked;  // every acknowledged put not deleted since
  int next_key = 0;
  // Puts until one is refused; bounded by 4000 * 32 KiB, twice the disk.
  auto fill = [&] {
    Status refused;
    for (int i = 0; i < 4000 && refused.ok(); ++i) {
      const std::string key = "/k" + std::to_string(next_key++);
      std::string value = make_value();
      refused = db.put(key, value);
      if (refused.ok()) acked[key] = std::move(value);
    }
    return refused;
  };
  auto write_file = [](const std::string& path, uint64_t bytes) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return;
    const std::string chunk(64 * 1024, 'f');
    for (uint64_t done = 0; done < bytes; done += chunk.size()) {
      if (::write(fd, chunk.data(), chunk.size()) < static_cast<ssize_t>(chunk.size())) break;
    }
    ::close(fd);
  };

  // Low because of another file: freeing it lets puts in again within a few checks.
  const std::string other = dir_ / "disk/other";
  write_file(other, 16 * kMiB);
  Status refused = fill();
  ASSERT_EQ(refused.code(), Code::kNoSpace) << refused;
  ASSERT_EQ(::unlink(other.c_str()), 0);
  {
    const auto freed = std::chrono::steady_clock::now();
    Status put;
    EXPECT_TRUE(testing::Eventually(2s, [&] { return (put = db.put("/back", "1")).ok(); })) << put;
    acked["/back"] = "1";
    std::cout << "puts accepted again "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - freed)
                     .count()
              << " ms after 16 MiB were freed\n";
  }
  EXPECT_TRUE(testing::Eventually(5s, [&] { return log.Contains("has disk space again"); }));

  refused = fill();
  // Refused by the low-space state, before RocksDB ever ran out of room.
  ASSERT_EQ(refused.code(), Code::kNoSpace) << refused;
  EXPECT_NE(refused.message().find("is low on disk space"), std::string::npos) << refused;
  EXPECT_NE(refused.message().find("deletes still work"), std::string::npos) << refused;
  EXPECT_GT(acked.size(), 500u) << "refused long before the threshold: " << refused;
  EXPECT_GE(FreeBytes(disk_), 8 * kMiB) << "the room below the threshold was used up";
  EXPECT_TRUE(testing::Eventually(5s, [&] { return log.Contains("is low on disk space"); }));
  Result<std::vector<MemberStatus>> members = node_->members();
  ASSERT_TRUE(members.ok()) << members.status();
  EXPECT_TRUE(members->at(0).low_space);
  EXPECT_LT(members->at(0).free_disk_bytes, 24 * kMiB);
  // A batch that only deletes is a delete.
  {
    WriteBatch erase_only;
    erase_only.Erase(acked.begin()->first);
    Status s = db.write(erase_only);
    ASSERT_TRUE(s.ok()) << s;
    acked.erase(acked.begin());
    WriteBatch with_put;
    with_put.Erase(acked.begin()->first);
    with_put.Put("/new", "x");
    EXPECT_EQ(db.write(with_put).code(), Code::kNoSpace);
  }

  // Something else takes the free space at once, all but 1 MiB: deletes must still go through.
  // (One allocation: a program that goes on writing would take the reserve too. Not all of it:
  // RocksDB 7.8 cannot write its log again after one write failed for lack of space, and a
  // flush or compaction running at that moment may need a little; see the README.)
  const std::string filler = dir_ / "disk/filler";
  {
    int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    int err = ENOSPC;
    // Bounded: RocksDB may take a little meanwhile, so a few tries with less.
    for (uint64_t slack = kMiB; slack < 4 * kMiB && err == ENOSPC; slack += 256 * 1024) {
      const uint64_t free_now = FreeBytes(disk_);
      if (free_now <= slack) break;
      err = ::posix_fallocate(fd, 0, static_cast<off_t>(free_now - slack));
    }
    ::close(fd);
    ASSERT_EQ(err, 0) << "cannot fill the disk: " << std::strerror(err);
  }
  ASSERT_TRUE(testing::Eventually(5s, [&] { return log.Contains("space reserve"); }))
      << "the reserve was not released; log:\n"
      << log.Text();
  std::vector<std::string> keys;
  for (const auto& [key, value] : acked) keys.push_back(key);
  // A flush RocksDB was running when the disk filled may have failed and stopped its writes: the
  // node resumes it within a check or two, so the first delete may have to be retried once.
  Status erased;
  EXPECT_TRUE(testing::Eventually(3s, [&] { return (erased = db.erase(keys[0])).ok(); }))
      << "delete on a full disk: " << erased;
  for (const std::string& key : keys) {
    Status s = db.erase(key);
    ASSERT_TRUE(s.ok()) << "delete of " << key << " on a full disk: " << s;
    acked.erase(key);
  }
  // Space comes back: puts work again at once (within a few checks).
  ASSERT_EQ(::unlink(filler.c_str()), 0);
  const auto freed = std::chrono::steady_clock::now();
  Status put;
  EXPECT_TRUE(testing::Eventually(2s, [&] { return (put = db.put("/after", "back")).ok(); }))
      << put;
  acked["/after"] = "back";
  std::cout << "puts accepted again "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - freed)
                   .count()
            << " ms after the filler went\n";
  // The deletes freed the disk (flushed and compacted): no longer low, and puts go on. (A
  // compaction of what was deleted may need room for a moment: each put may wait a little.)
  EXPECT_TRUE(testing::Eventually(10s,
                                  [&] {
                                    Result<std::vector<MemberStatus>> m = node_->members();
                                    return m.ok() && !m->at(0).low_space &&
                                           FreeBytes(disk_) >= 30 * kMiB;
                                  }))
      << "free: " << FreeBytes(disk_) << "; log:\n"
      << log.Text();
  for (int i = 0; i < 20; ++i) {
    const std::string key = "/again" + std::to_string(i);
    std::string value = make_value();
    Status s;
    ASSERT_TRUE(testing::Eventually(5s, [&] { return (s = db.put(key, value)).ok(); })) << s;
    acked[key] = std::move(value);
  }

  // Every acknowledged write survives a restart; the deletes too.
  db = Database();
  node_.reset();
  ASSERT_NO_FATAL_FAILURE(StartNode());
  db = node_->open("/t/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  for (const auto& [key, value] : acked) {
    Result<std::string> got = db.get(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status();
    EXPECT_EQ(*got, value) << key;
  }
  for (const std::string& key : keys) EXPECT_TRUE(db.get(key).IsNotFound()) << key;
}

}  // namespace
}  // namespace kvmesh
