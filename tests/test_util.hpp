// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

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
  std::string Write(const std::string& name, const std::string& text) const {
    std::string full = *this / name;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    std::ofstream(full, std::ios::binary) << text;
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

}  // namespace kvmesh::testing
