// Measuring tools of kvmesh-bench that need no node: a lock-free latency histogram, key choice
// (uniform or zipfian), the benchmark's key layout, what /proc says about a process (resident
// memory, CPU time, which process listens on a port), and the command line that gives an echo
// server a node's settings.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "kvmesh/node.hpp"

namespace kvmesh::bench {

/// Latencies in nanoseconds, recorded from any thread without locks. Buckets are log-linear (32
/// per power of two), so a reported quantile is within about 3% of the true one.
class LatencyHistogram {
 public:
  void Record(uint64_t nanos);
  uint64_t count() const;
  /// The latency at quantile q (0..1) in microseconds; 0 when nothing was recorded.
  double QuantileMicros(double q) const;

  /// Bucket of `nanos`, and the smallest value of a bucket (exposed for tests).
  static size_t BucketOf(uint64_t nanos);
  static uint64_t BucketFloor(size_t bucket);

 private:
  static constexpr size_t kSubBits = 5;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
};

/// Picks indexes in [0, n): uniformly; zipfian with constant theta (YCSB's generator, with the
/// ranks scrambled by a bijection so the hot indexes are spread over the key space rather than
/// being the first ones); or sequentially from a start that depends on the seed (a bulk load).
/// Not thread-safe: one per thread.
class KeyChooser {
 public:
  /// `distribution` is "uniform", "zipfian" or "sequential"; theta is used for zipfian (YCSB:
  /// 0.99).
  KeyChooser(std::string distribution, uint64_t n, uint64_t seed, double theta = 0.99);
  uint64_t Next();
  bool zipfian() const { return zipfian_; }

 private:
  bool zipfian_;
  bool sequential_;
  uint64_t n_;
  /// The next index of a sequential chooser.
  uint64_t next_ = 0;
  double theta_, alpha_, zetan_, eta_;
  /// Coprime to n: rank * multiplier_ mod n scrambles ranks without collisions.
  uint64_t multiplier_;
  std::mt19937_64 random_;
  std::uniform_real_distribution<double> unit_{0.0, 1.0};
};

/// Zeta(n, theta) = sum over i in 1..n of 1 / i^theta (precomputed once per chooser).
double Zeta(uint64_t n, double theta);

/// The benchmark's key layout: key `index` of a database is "/k/GGGGGGGG/IIII", group = index /
/// group_size, so that listing the group's prefix returns group_size keys.
std::string KeyOf(uint64_t index, uint64_t group_size);
/// The prefix of a group: "/k/GGGGGGGG".
std::string GroupPrefix(uint64_t group);

/// What /proc says about a process at one moment.
struct ProcessSample {
  bool ok = false;
  /// Resident set size in bytes (VmRSS).
  uint64_t rss_bytes = 0;
  /// User plus system CPU time used so far by all its threads, in seconds (the process's CPU
  /// clock, nanosecond resolution; /proc/PID/stat's 10 ms ticks where that clock is refused).
  double cpu_seconds = 0;
};
ProcessSample SampleProcess(pid_t pid);

/// One thread of a process at one moment: its name (/proc/PID/task/TID/comm; CAF names its
/// threads caf.worker, caf.multiplexer, caf.clock, ...) and the CPU it used so far, in seconds
/// (schedstat's nanoseconds; stat's 10 ms ticks where schedstat is missing).
struct ThreadSample {
  std::string name;
  double cpu_seconds = 0;
};
/// Every thread of process `pid` by thread id; empty if /proc cannot be read.
std::map<pid_t, ThreadSample> SampleThreads(pid_t pid);

/// The CPU each group of equally named threads used between two samples: `threads` of them
/// ran, using `cores` together (CPU seconds per second of `seconds`), the busiest one `busiest`.
/// Threads that used nothing are left out; sorted by cores, most first.
struct ThreadGroupCpu {
  std::string name;
  int threads = 0;
  double cores = 0;
  double busiest = 0;
};
std::vector<ThreadGroupCpu> ThreadCpuBetween(const std::map<pid_t, ThreadSample>& before,
                                             const std::map<pid_t, ThreadSample>& after,
                                             double seconds);

/// The pid of the process listening on 127.0.0.1:port (or 0.0.0.0:port), found through the
/// socket's inode in /proc/net/tcp and the processes' /proc/PID/fd; 0 if none is visible (another
/// user's process, or another host).
pid_t PidListeningOn(int port);

/// A line describing this machine: CPU model, core count, memory, kernel.
std::string MachineDescription();

/// The echo servers (caf-echo, loop-echo) run a node's actor system (NodeActorSystemSettings) as
/// kvmesh-bench starts a kvmeshd: its scheduler, `worker_threads` (0: the node's default) and
/// `busy_poll_us` (-1: the node's default). EchoServerArgs writes that on a server's command line
/// (three arguments); EchoServerNode reads them back in the server: nullopt unless the worker
/// threads are 0 to kMaxWorkerThreads and the polling -1 to kMaxBusyPoll us (the scheduler is
/// checked where the server configures its actor system).
std::vector<std::string> EchoServerArgs(const std::string& scheduler, size_t worker_threads,
                                        int busy_poll_us);
std::optional<NodeOptions> EchoServerNode(const std::string& scheduler,
                                          const std::string& worker_threads,
                                          const std::string& busy_poll_us);

}  // namespace kvmesh::bench
