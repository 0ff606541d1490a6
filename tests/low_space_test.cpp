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

  /// Incompressible values, so the disk fills as the data grows.
  std::string MakeValue() {
    std::string value(32 * 1024, '\0');
    for (char& c : value) c = static_cast<char>(random_());
    return value;
  }

  /// Puts new keys until one is refused (and returns why); bounded by 4000 * 32 KiB, twice the
  /// disk.
  Status Fill(const Database& db) {
    Status refused;
    for (int i = 0; i < 4000 && refused.ok(); ++i) {
      const std::string key = "/k" + std::to_string(next_key_++);
      std::string value = MakeValue();
      refused = db.put(key, value);
      if (refused.ok()) acked_[key] = std::move(value);
    }
    return refused;
  }

  /// Every acknowledged write, and no deleted key, is there after a restart.
  void RestartAndCheck(Database* db, const std::vector<std::string>& deleted) {
    *db = Database();
    node_.reset();
    ASSERT_NO_FATAL_FAILURE(StartNode());
    *db = node_->open("/t/kv");
    ASSERT_TRUE(db->ok()) << db->status();
    for (const auto& [key, value] : acked_) {
      Result<std::string> got = db->get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status();
      EXPECT_EQ(*got, value) << key;
    }
    for (const std::string& key : deleted) EXPECT_TRUE(db->get(key).IsNotFound()) << key;
  }

  std::mt19937_64 random_{42};
  /// Every acknowledged put not deleted since.
  std::map<std::string, std::string> acked_;
  int next_key_ = 0;
};

/// Writes up to `bytes` of a plain file, stopping early when the disk is full.
void WriteFile(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  const std::string chunk(64 * 1024, 'f');
  for (uint64_t done = 0; done < bytes; done += chunk.size()) {
    if (::write(fd, chunk.data(), chunk.size()) < static_cast<ssize_t>(chunk.size())) break;
  }
  ::close(fd);
}

/// Polls until `db` takes a put (bounded), and says how long that took.
Status PutWhenBack(const Database& db, const std::string& key, std::chrono::milliseconds* took) {
  const auto start = std::chrono::steady_clock::now();
  Status put;
  testing::Eventually(2s, [&] { return (put = db.put(key, "back")).ok(); });
  *took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                start);
  return put;
}

TEST_F(LowSpaceTest, PutsAreRefusedBeforeTheDiskIsFullAndDeletesFreeIt) {
  LogCapture log;
  ASSERT_NO_FATAL_FAILURE(StartNode());
  Database db = node_->open("/t/kv");
  ASSERT_TRUE(db.ok()) << db.status();

  // Low because of another file: freeing it lets puts in again within a few checks.
  const std::string other = dir_ / "disk/other";
  WriteFile(other, 16 * kMiB);
  Status refused = Fill(db);
  ASSERT_EQ(refused.code(), Code::kNoSpace) << refused;
  ASSERT_EQ(::unlink(other.c_str()), 0);
  std::chrono::milliseconds took{};
  Status put = PutWhenBack(db, "/back", &took);
  ASSERT_TRUE(put.ok()) << put;
  acked_["/back"] = "back";
  std::cout << "puts accepted again " << took.count() << " ms after 16 MiB were freed\n";
  EXPECT_TRUE(testing::Eventually(5s, [&] { return log.Contains("has disk space again"); }));

  refused = Fill(db);
  // Refused by the low-space state, before RocksDB ever ran out of room.
  ASSERT_EQ(refused.code(), Code::kNoSpace) << refused;
  EXPECT_NE(refused.message().find("is low on disk space"), std::string::npos) << refused;
  EXPECT_NE(refused.message().find("deletes still work"), std::string::npos) << refused;
  EXPECT_GT(acked_.size(), 500u) << "refused long before the threshold: " << refused;
  EXPECT_GE(FreeBytes(disk_), 8 * kMiB) << "the room below the threshold was used up";
  EXPECT_TRUE(testing::Eventually(5s, [&] { return log.Contains("is low on disk space"); }));
  Result<std::vector<MemberStatus>> members = node_->members();
  ASSERT_TRUE(members.ok()) << members.status();
  EXPECT_TRUE(members->at(0).low_space);
  EXPECT_LT(members->at(0).free_disk_bytes, 24 * kMiB);
  // A batch that only deletes is a delete; one with a put is refused whole.
  WriteBatch erase_only;
  erase_only.Erase(acked_.begin()->first);
  Status s = db.write(erase_only);
  ASSERT_TRUE(s.ok()) << s;
  std::vector<std::string> deleted{acked_.begin()->first};
  acked_.erase(acked_.begin());
  WriteBatch with_put;
  with_put.Erase(acked_.begin()->first);
  with_put.Put("/new", "x");
  EXPECT_EQ(db.write(with_put).code(), Code::kNoSpace);

  // Deleting everything frees the disk (the node flushes and compacts while low): puts go on.
  for (int i = 0; i < 4000 && !acked_.empty(); ++i) {
    const std::string key = acked_.begin()->first;
    s = db.erase(key);
    ASSERT_TRUE(s.ok()) << "delete of " << key << " while low on space: " << s;
    acked_.erase(acked_.begin());
    deleted.push_back(key);
  }
  EXPECT_TRUE(testing::Eventually(10s,
                                  [&] {
                                    Result<std::vector<MemberStatus>> m = node_->members();
                                    return m.ok() && !m->at(0).low_space;
                                  }))
      << "free: " << FreeBytes(disk_) << "; log:\n"
      << log.Text();
  for (int i = 0; i < 20; ++i) {
    const std::string key = "/again" + std::to_string(i);
    std::string value = MakeValue();
    // A compaction of what was deleted may need room for a moment: a put may wait a little.
    Status again;
    ASSERT_TRUE(testing::Eventually(5s, [&] { return (again = db.put(key, value)).ok(); }))
        << again;
    acked_[key] = std::move(value);
  }
  ASSERT_NO_FATAL_FAILURE(RestartAndCheck(&db, deleted));
}

// Another program takes the rest of the disk: the reserve is given up so that deletes still
// find room, and puts come back as soon as the space does. Disabled: about one run in ten a
// flush or compaction RocksDB is running at that moment takes the room first, and RocksDB 7.8
// then fails the deletes until space comes back, or (a write-ahead log write that failed) cannot
// write its log again (facebook/rocksdb#12448) and, built with assertions as Debian's package
// is, aborts. Run it with --gtest_also_run_disabled_tests.
TEST_F(LowSpaceTest, DISABLED_DeletesWorkWhenAnotherProgramFillsTheDisk) {
  LogCapture log;
  ASSERT_NO_FATAL_FAILURE(StartNode());
  Database db = node_->open("/t/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_EQ(Fill(db).code(), Code::kNoSpace);

  // One allocation of all but 1 MiB: a program that goes on writing takes the reserve too.
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
  std::vector<std::string> deleted;
  for (int i = 0; i < 4000 && !acked_.empty(); ++i) {
    const std::string key = acked_.begin()->first;
    Status s = db.erase(key);
    ASSERT_TRUE(s.ok()) << "delete of " << key << " on a full disk: " << s;
    acked_.erase(acked_.begin());
    deleted.push_back(key);
  }
  ASSERT_EQ(::unlink(filler.c_str()), 0);
  std::chrono::milliseconds took{};
  Status put = PutWhenBack(db, "/after", &took);
  ASSERT_TRUE(put.ok()) << put;
  acked_["/after"] = "back";
  std::cout << "puts accepted again " << took.count() << " ms after the filler went\n";
  ASSERT_NO_FATAL_FAILURE(RestartAndCheck(&db, deleted));
}

}  // namespace
}  // namespace kvmesh
