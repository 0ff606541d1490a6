#include "common/busy_poll.hpp"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <chrono>

namespace kvmesh {

void BusyPoll::Waited(int64_t waited_ns) {
  if (max_ns_ == 0) return;
  const int64_t start = max_ns_ / 4;
  if (waited_ns >= 0 && waited_ns <= window_ns_) return;
  if (waited_ns >= 0 && waited_ns <= max_ns_) {
    window_ns_ = std::min(max_ns_, std::max(2 * window_ns_, start));
  } else {
    window_ns_ /= 2;
    if (window_ns_ < start) window_ns_ = 0;
  }
}

BusyPoll::Stats BusyPoll::stats() const {
  Stats stats;
  stats.found_polling = found_polling_.load(std::memory_order_relaxed);
  stats.slept = slept_.load(std::memory_order_relaxed);
  stats.polling_ns = polling_ns_.load(std::memory_order_relaxed);
  return stats;
}

int64_t BusyPoll::NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t BusyPoll::ThreadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void BusyPoll::Yield() {
  sched_yield();
}

bool BusyPoll::ShouldPoll() {
  if (skip_ == 0) return true;
  --skip_;
  return false;
}

void BusyPoll::Polled(int64_t wall_ns, int64_t cpu_ns) {
  if (2 * cpu_ns >= wall_ns) {
    backoff_ = 0;
    return;
  }
  backoff_ = std::min<uint32_t>(kMaxBackoff, std::max<uint32_t>(kMinBackoff, 2 * backoff_));
  skip_ = backoff_;
}

}  // namespace kvmesh
