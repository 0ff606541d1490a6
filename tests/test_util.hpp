// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kvmesh/database.hpp"
#include "kvmesh/node.hpp"

namespace kvmesh::testing {

/// The seed's example database config, verbatim.
inline constexpr char kSeedExampleConfig[] = R"(id: ""
description: Key-value storage for application data
tags: []
matcher: /example/kv
replication:
  min: 1
  max: 2
size: 100MB
)";

/// A fresh directory under the test temp dir, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "kvmesh-test-XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// `path()/name`.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

  /// Writes `text` to `path()/name` (creating parent directories) and returns the full path.
  /// Replaces the file atomically (a temporary file renamed over it), as config management
  /// does: a node reloading its configs meanwhile (SIGHUP is asynchronous) reads the old text or
  /// the new one, never an empty file (which would remove the file's databases for that reload).
  std::string Write(const std::string& name, const std::string& text) const {
    std::string full = *this / name;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    const std::string temporary = full + ".tmp";  // not .yaml: config dirs ignore it
    std::ofstream(temporary, std::ios::binary) << text;
    std::filesystem::rename(temporary, full);
    return full;
  }

 private:
  std::string path_;
};

/// A fixture for tests that start kvmeshd processes: `dir_/config` is the config directory they
/// start their nodes with, holding the seed's example database (/example/kv) and /data/*
/// (10 MB); tests add their own.
class ProcessTest : public ::testing::Test {
 protected:
  ProcessTest() {
    dir_.Write("config/kv.yaml", kSeedExampleConfig);
    dir_.Write("config/more.yaml", "- matcher: /data/*\n  size: 10MB\n");
  }

  TempDir dir_;
};

/// Polls `check` every 10 ms until it returns true (then true) or `timeout` has passed (then
/// false). For waiting on another process or thread with a bound, not for ordering actors.
template <class Check>
bool Eventually(std::chrono::milliseconds timeout, Check check) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!check()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

/// Eight writes made together through `db` (empty, with a size limit of `budget` bytes, a
/// multiple of 10 of at least 100): ok, over the limit, ok, an erase, ok now, a failed check,
/// ok, an erase of a missing key. Under load they travel as one message (OrderedRoute::
/// TakeWrite); each must still get exactly the answer it would get alone, in order, and the
/// database must end as if they were applied one after another. Returns the first difference,
/// or an empty string. Every wait is bounded (30 s).
inline std::string WritesMadeTogetherEachGetTheirOwnAnswer(const Database& db, size_t budget) {
  const size_t a = budget * 4 / 10 - 2;  // with its key "/a": 40% of the budget
  const size_t b = budget * 7 / 10 - 2;  // 70%: over the limit while /a is there
  WriteBatch c_absent;
  c_absent.Check("/c", {}).Put("/d", "never");
  std::vector<std::future<Status>> acks;
  acks.push_back(db.put_async("/a", std::string(a, 'a')));
  acks.push_back(db.put_async("/b", std::string(b, 'b')));  // over
  acks.push_back(db.put_async("/c", "x"));
  acks.push_back(db.erase_async("/a"));
  acks.push_back(db.put_async("/b", std::string(b, 'b')));  // fits now
  acks.push_back(db.write_async(c_absent));                 // /c exists
  acks.push_back(db.put_async("/c", "y"));
  acks.push_back(db.erase_async("/missing"));
  const std::vector<Code> expected = {Code::kOk, Code::kSizeLimitExceeded, Code::kOk, Code::kOk,
                                      Code::kOk, Code::kConditionFailed,   Code::kOk, Code::kOk};
  for (size_t i = 0; i < acks.size(); ++i) {
    if (acks[i].wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      return "write " + std::to_string(i) + ": no answer in 30 s";
    }
    Status s = acks[i].get();
    if (s.code() != expected[i]) return "write " + std::to_string(i) + ": " + s.ToString();
  }
  Result<std::string> c = db.get("/c");
  if (!c.ok() || *c != "y") return "/c reads " + (c.ok() ? *c : c.status().ToString());
  if (!db.get("/d").status().IsNotFound()) return "/d was written by a failed check";
  Result<DatabaseStats> stats = db.stats();
  if (!stats.ok()) return stats.status().ToString();
  if (stats->used_bytes != b + 2 + 3 || stats->key_count != 2) {
    return "usage " + std::to_string(stats->used_bytes) + " bytes in " +
           std::to_string(stats->key_count) + " keys, expected " + std::to_string(b + 5) + " in 2";
  }
  return "";
}

/// Streams `rounds` rounds of `writes` asynchronous puts of one key through `db`, with a read
/// after every fifth, and passivates `node`'s databases in the middle of each round, while the
/// earlier puts of the round are still in flight. Every request must succeed, every read must see
/// exactly the last put made before it, and the key must end with the round's last put. Returns
/// the first difference, or an empty string. Every wait is bounded (30 s).
inline std::string WriteInOrderAcrossPassivations(const Database& db, Node& node, int rounds,
                                                  int writes) {
  using namespace std::chrono_literals;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::future<Status>> puts;
    std::vector<std::pair<std::string, std::future<Result<std::string>>>> reads;
    std::string last;
    for (int i = 0; i < writes; ++i) {
      last = std::to_string(round) + "." + std::to_string(i);
      puts.push_back(db.put_async("/ordered", last));
      if (i % 5 == 4) reads.emplace_back(last, db.get_async("/ordered"));
      if (i == writes / 2) {
        Result<uint64_t> passivated = node.passivate_all();
        if (!passivated.ok()) return "passivate_all: " + passivated.status().ToString();
      }
    }
    for (auto& put : puts) {
      if (put.wait_for(30s) != std::future_status::ready) return "a put did not end within 30 s";
      Status s = put.get();
      if (!s.ok()) return "round " + std::to_string(round) + ": a put failed: " + s.ToString();
    }
    for (auto& [expected, read] : reads) {
      if (read.wait_for(30s) != std::future_status::ready) return "a read did not end within 30 s";
      Result<std::string> value = read.get();
      if (!value.ok()) return "round " + std::to_string(round) + ": " + value.status().ToString();
      if (*value != expected) {
        return "round " + std::to_string(round) + ": a read made after put " + expected + " saw " +
               *value;
      }
    }
    Result<std::string> final_value = db.get("/ordered");
    if (!final_value.ok()) return "final read: " + final_value.status().ToString();
    if (*final_value != last) {
      return "round " + std::to_string(round) + ": the key ends with " + *final_value +
             ", not the last put " + last;
    }
  }
  return "";
}

/// The sample of metric `name` (with `labels` as written, e.g. `{kind="ping"}`) that
/// `node->metrics()` reports; -1 if absent (or the metrics cannot be read).
inline double NodeMetric(Node* node, const std::string& name, const std::string& labels = "") {
  Result<std::string> text = node->metrics();
  if (!text.ok()) return -1;
  const std::string prefix = name + labels + " ";
  size_t at = 0;
  while (at < text->size()) {
    size_t end = text->find('\n', at);
    if (end == std::string::npos) end = text->size();
    if (text->compare(at, prefix.size(), prefix) == 0) {
      return std::stod(text->substr(at + prefix.size(), end - at - prefix.size()));
    }
    at = end + 1;
  }
  return -1;
}

}  // namespace kvmesh::testing
