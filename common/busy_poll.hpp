// How long a thread that waits for work keeps polling for it before it sleeps: the node's client
// port thread between requests, a client's blocking call waiting for its reply, and the node's
// CAF workers waiting for an actor to run (messages/polling_scheduler.hpp).
//
// Why: a thread that sleeps in epoll_wait or poll is woken by the sender, inline in its send():
// in a virtual machine whose idle CPUs halt (guest halt polling off, as on this development
// machine: haltpoll.guest_halt_poll_ns=0), that wake-up is an inter-processor interrupt through
// the hypervisor. Measured with one request at a time (kvmesh-bench, remote, 1 in flight): waking
// the client was a quarter of the node's CPU per get, the round trip 75-110 us for 40-50 us of
// CPU on each side, and a node's CPU per put 100-107 us. A thread still polling when its message
// comes needs no wake-up, and the one sending to it none either: both sides polling made gets
// 5x as fast and puts 3-3.5x, at less CPU per request on both sides (README "Performance").
//
// How (the rule of Linux's haltpoll cpuidle governor, applied to one thread): the thread polls
// for up to a window, then sleeps. The window grows when a wait ended after it but within the
// bound (work came soon, so polling longer would have caught it), and shrinks when a wait went
// past the bound (the thread was idle: polling would have been wasted). So a thread serving
// requests that come one after another polls between them; an idle node or client polls at most
// a few windows after its last request, and then not at all. Between polls it offers the CPU to
// other threads (sched_yield: a hint the scheduler may take, so that a thread ready to run on the
// same CPU is not kept waiting long).
//
// Polling takes a CPU that a busy machine needs: with 64 databases behind 4 connections and 50
// gets in flight each, the port's thread polled after the requests that came alone, found the
// next one in about half of them, and gets ran 0.85-0.93x. A machine that busy shows while
// polling: the thread, yielding, gets less than half of the time it polled, as threads waiting
// for its CPU run. Then it does not poll for the next 8 waits that would, doubling to 1024 while
// it keeps finding the CPU wanted, and back to none once it polls undisturbed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace kvmesh {

class BusyPoll {
 public:
  /// Polls at most `max_ns` before sleeping; 0: never polls.
  explicit BusyPoll(int64_t max_ns = 0) : max_ns_(max_ns > 0 ? max_ns : 0) {}
  BusyPoll(const BusyPoll&) = delete;
  BusyPoll& operator=(const BusyPoll&) = delete;

  /// What the waits through Run did so far (metrics: an operator weighs the CPU polling takes
  /// against the wake-ups it saves).
  struct Stats {
    /// Waits that found something while polling (for the port: a request, a heartbeat, a
    /// writer's or Close's wake-up): no sleep, no wake-up.
    uint64_t found_polling = 0;
    /// Waits that slept: polling off, not tried, or too short; timeouts included. (A wait that
    /// polled until the caller's timeout, or failed, counts in neither.)
    uint64_t slept = 0;
    /// Time from the start of each polling to its end, found or not: an upper bound of the CPU
    /// it took (other threads may have run meanwhile).
    int64_t polling_ns = 0;
  };
  /// Thread-safe (the counters of one thread's waits, read from any).
  Stats stats() const;

  /// How long the next wait polls before it sleeps: 0 (sleeps at once) to the bound.
  int64_t window_ns() const { return window_ns_; }

  /// Records how a wait ended: work came `waited_ns` after the wait began, or none came
  /// (`waited_ns` past the bound, or any negative value).
  ///   - within the window: caught by polling; the window stays;
  ///   - after the window but within the bound: the window doubles (at least a quarter of the
  ///     bound, at most the bound);
  ///   - past the bound: the window halves, and is 0 below a quarter of the bound.
  void Waited(int64_t waited_ns);

  /// Waits as `wait(timeout_ms)` does (a poll or epoll_wait on the caller's descriptors returning
  /// how many are ready, 0 on timeout, negative on error; `timeout_ms` > 0), polling first:
  /// `wait(0)` until one is ready or the window ends, then `wait` for what is left of
  /// `timeout_ms` (whole milliseconds: the wait ends less than 1 ms past the caller's timeout; a
  /// window longer than the timeout polls for the timeout only). `timeout_ms` 0 is one `wait(0)`,
  /// neither polled nor recorded (the caller had work waiting). With `poll` false it sleeps at
  /// once, but records how the wait ended all the same. Returns what the last `wait` returned.
  template <class Wait>
  int Run(Wait&& wait, int timeout_ms, bool poll = true) {
    if (timeout_ms <= 0 || max_ns_ == 0) {
      if (timeout_ms != 0) Add(slept_, 1);
      return wait(timeout_ms);
    }
    const int64_t start = NowNs();
    const int64_t timeout_ns = int64_t{timeout_ms} * 1000000;
    int n = 0;
    int64_t now = start;
    if (poll && window_ns_ > 0 && ShouldPoll()) {
      const int64_t until = start + std::min(window_ns_, timeout_ns);
      const int64_t cpu_start = ThreadCpuNs();
      for (;;) {
        n = wait(0);
        now = NowNs();
        if (n != 0 || now >= until) {
          Add(polling_ns_, now - start);
          Polled(now - start, ThreadCpuNs() - cpu_start);
        }
        if (n > 0) {
          Add(found_polling_, 1);
          Waited(now - start);
        }
        if (n != 0) return n;
        if (now >= until) break;
        Yield();
      }
      if (now - start >= timeout_ns) {
        // The caller's whole timeout passed without work; it says the thread was idle only if
        // the window was polled out (a timeout shorter than the window says nothing about it).
        if (timeout_ns >= window_ns_) Waited(-1);
        return 0;
      }
    }
    Add(slept_, 1);
    n = wait(timeout_ms - static_cast<int>((now - start) / 1000000));
    if (n < 0) return n;
    Waited(n > 0 ? NowNs() - start : -1);
    return n;
  }

 private:
  static int64_t NowNs();
  /// CPU time of the calling thread.
  static int64_t ThreadCpuNs();
  static void Yield();
  /// Whether this wait may poll: false while backing off after a contended polling.
  bool ShouldPoll();
  /// After polling for `wall_ns`, of which the thread ran `cpu_ns`: less than half means other
  /// threads wanted the CPU meanwhile, so polling backs off (see the top of this file).
  void Polled(int64_t wall_ns, int64_t cpu_ns);
  /// One thread adds; others only read.
  template <class T, class N>
  static void Add(std::atomic<T>& counter, N n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  int64_t max_ns_;
  int64_t window_ns_ = 0;
  static constexpr uint32_t kMinBackoff = 8;
  static constexpr uint32_t kMaxBackoff = 1024;
  /// Waits left that do not poll, and how many the last back-off skipped.
  uint32_t skip_ = 0;
  uint32_t backoff_ = 0;
  std::atomic<uint64_t> found_polling_{0};
  std::atomic<uint64_t> slept_{0};
  std::atomic<int64_t> polling_ns_{0};
};

}  // namespace kvmesh
