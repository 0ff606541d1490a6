// BusyPoll (common/busy_poll.hpp): when a waiting thread polls, for how long, and what it
// records. The waits are scripted: a wait function returns what the test says. Where the clock
// decides, the times are long enough (tens of milliseconds) that a loaded machine cannot change
// the outcome, and the tests that poll a window out take that long.
#include "common/busy_poll.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace kvmesh {
namespace {

constexpr int64_t kUs = 1000;
constexpr int64_t kMs = 1000 * kUs;

/// A wait that answers from a script (then 0: nothing ready), recording the timeouts asked.
struct ScriptedWait {
  std::vector<int> answers;
  std::vector<int> timeouts;
  int operator()(int timeout_ms) {
    timeouts.push_back(timeout_ms);
    const size_t i = timeouts.size() - 1;
    return i < answers.size() ? answers[i] : 0;
  }
};

/// A BusyPoll of bound `max_ns` after one quick wait: its window a quarter of the bound.
std::unique_ptr<BusyPoll> Warmed(int64_t max_ns) {
  auto poll = std::make_unique<BusyPoll>(max_ns);
  poll->Waited(1 * kUs);
  EXPECT_EQ(poll->window_ns(), max_ns / 4);
  return poll;
}

/// How long `poll.Run(wait, timeout_ms)` took; what it returned in `*n`.
std::chrono::steady_clock::duration TimedRun(BusyPoll& poll, ScriptedWait& wait, int timeout_ms,
                                             int* n) {
  const auto start = std::chrono::steady_clock::now();
  *n = poll.Run(std::ref(wait), timeout_ms);
  return std::chrono::steady_clock::now() - start;
}

// The window follows the waits: one that ended after the window but within the bound asks for
// more polling (a quarter of the bound at first, then doubling, never past the bound); one past
// the bound halves it, and below a quarter of the bound there is none. So an idle thread stops
// polling after a wait or two.
TEST(BusyPollTest, WaitsWithinTheBoundGrowTheWindowAndLongerOnesShrinkIt) {
  BusyPoll poll(400 * kUs);
  EXPECT_EQ(poll.window_ns(), 0);
  poll.Waited(300 * kUs);
  EXPECT_EQ(poll.window_ns(), 100 * kUs) << "first growth: a quarter of the bound";
  poll.Waited(150 * kUs);
  EXPECT_EQ(poll.window_ns(), 200 * kUs);
  poll.Waited(50 * kUs);
  EXPECT_EQ(poll.window_ns(), 200 * kUs) << "found while polling: the window stays";
  poll.Waited(399 * kUs);
  EXPECT_EQ(poll.window_ns(), 400 * kUs);
  poll.Waited(400 * kUs);
  EXPECT_EQ(poll.window_ns(), 400 * kUs) << "never past the bound";
  poll.Waited(401 * kUs);
  EXPECT_EQ(poll.window_ns(), 200 * kUs) << "idle past the bound: halved";
  poll.Waited(-1);
  EXPECT_EQ(poll.window_ns(), 100 * kUs) << "a wait that ended with no work counts as long";
  poll.Waited(5 * kMs);
  EXPECT_EQ(poll.window_ns(), 0) << "below a quarter of the bound: no polling";
}

// With no bound (0, the option off) a thread never polls: each wait is the caller's own, once.
TEST(BusyPollTest, OffSleepsAtOnce) {
  BusyPoll poll(0);
  poll.Waited(1 * kUs);
  EXPECT_EQ(poll.window_ns(), 0);
  ScriptedWait wait{{1}};
  EXPECT_EQ(poll.Run(std::ref(wait), 50), 1);
  EXPECT_EQ(wait.timeouts, std::vector<int>({50}));
  EXPECT_EQ(poll.stats().found_polling, 0u);
  EXPECT_EQ(poll.stats().slept, 1u);
  EXPECT_EQ(poll.stats().polling_ns, 0);
}

// Work found while polling: the caller never sleeps (no call with its timeout), the window stays,
// and the wait counts as found.
TEST(BusyPollTest, WorkFoundWhilePollingNeedsNoSleep) {
  BusyPoll poll(10 * 1000 * kMs);  // a window so long that the script decides, not the clock
  poll.Waited(1 * kUs);
  const int64_t window = poll.window_ns();
  ASSERT_GT(window, 0);
  ScriptedWait wait{{0, 0, 3}};
  EXPECT_EQ(poll.Run(std::ref(wait), 10000), 3);
  EXPECT_EQ(wait.timeouts, std::vector<int>({0, 0, 0}));
  EXPECT_EQ(poll.window_ns(), window);
  EXPECT_EQ(poll.stats().found_polling, 1u);
  EXPECT_EQ(poll.stats().slept, 0u);
  EXPECT_GT(poll.stats().polling_ns, 0);
}

// Nothing found within the window: the caller's own wait follows, once, and a wait that ends
// without work shrinks the window.
TEST(BusyPollTest, PollsAtMostTheWindowThenSleeps) {
  auto warmed = Warmed(80 * kMs);
  BusyPoll& poll = *warmed;
  ScriptedWait wait;
  int n = -1;
  EXPECT_GE(TimedRun(poll, wait, 50, &n), std::chrono::milliseconds(20));
  EXPECT_EQ(n, 0);
  ASSERT_GE(wait.timeouts.size(), 2u);
  EXPECT_GT(wait.timeouts.back(), 0) << "the caller's wait comes last";
  EXPECT_LE(wait.timeouts.back(), 30) << "for what is left of its timeout";
  for (size_t i = 0; i + 1 < wait.timeouts.size(); ++i) EXPECT_EQ(wait.timeouts[i], 0);
  EXPECT_EQ(poll.window_ns(), 0) << "a wait with no work: 20 ms halved is below a quarter of 80";
  EXPECT_EQ(poll.stats().slept, 1u);
  EXPECT_GE(poll.stats().polling_ns, 20 * kMs);
}

// A window longer than the caller's timeout polls for the timeout only, and the caller's wait
// does not follow: the wait ends when the caller said, as it would without polling.
TEST(BusyPollTest, PollingEndsWithTheCallersTimeout) {
  auto warmed = Warmed(400 * kMs);
  BusyPoll& poll = *warmed;
  ScriptedWait wait;
  int n = -1;
  const auto took = TimedRun(poll, wait, 5, &n);
  EXPECT_EQ(n, 0);
  EXPECT_GE(took, std::chrono::milliseconds(5));
  EXPECT_LT(took, std::chrono::milliseconds(100)) << "it polled the whole window";
  for (int timeout : wait.timeouts) EXPECT_EQ(timeout, 0) << "it slept after the timeout";
  EXPECT_EQ(poll.window_ns(), 100 * kMs) << "a timeout inside the window says nothing of it";
  EXPECT_EQ(poll.stats().slept, 0u);
}

// Polling while other threads want the CPU (here: a wait that sleeps 5 ms, so the thread runs
// far less than half the time it polls) backs off: the next 8 waits that would poll do not, then
// one polls, and after a second such polling 16 do not.
TEST(BusyPollTest, PollingThatOtherThreadsInterruptBacksOff) {
  auto warmed = Warmed(400 * kMs);
  BusyPoll& poll = *warmed;
  auto descheduled = [](int timeout_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return timeout_ms == 0 ? 1 : 0;
  };
  ASSERT_EQ(poll.Run(descheduled, 10000), 1);
  EXPECT_EQ(poll.stats().found_polling, 1u);
  auto ready_at_once = [](std::vector<int>* timeouts) {
    return [timeouts](int timeout_ms) {
      timeouts->push_back(timeout_ms);
      return 1;
    };
  };
  for (int i = 0; i < 8; ++i) {
    std::vector<int> timeouts;
    EXPECT_EQ(poll.Run(ready_at_once(&timeouts), 50), 1);
    EXPECT_EQ(timeouts, std::vector<int>({50})) << "wait " << i << " polled while backing off";
  }
  EXPECT_EQ(poll.stats().slept, 8u);
  ASSERT_EQ(poll.Run(descheduled, 10000), 1) << "the ninth polls again";
  EXPECT_EQ(poll.stats().found_polling, 2u);
  for (int i = 0; i < 16; ++i) {
    std::vector<int> timeouts;
    EXPECT_EQ(poll.Run(ready_at_once(&timeouts), 50), 1);
    EXPECT_EQ(timeouts, std::vector<int>({50})) << "wait " << i << " of the doubled back-off";
  }
  std::vector<int> timeouts;
  EXPECT_EQ(poll.Run(ready_at_once(&timeouts), 50), 1);
  EXPECT_EQ(timeouts, std::vector<int>({0})) << "polling resumes after the back-off";
}

// A caller with work waiting (timeout 0) and one that says not to poll wait once, at once; the
// latter's wait is still recorded, so the window is ready when polling is asked for again.
TEST(BusyPollTest, NoPollingWhenWorkWaitsOrTheCallerSaysNot) {
  auto warmed = Warmed(400 * kMs);
  BusyPoll& poll = *warmed;
  ScriptedWait ready{{2}};
  EXPECT_EQ(poll.Run(std::ref(ready), 0), 2);
  EXPECT_EQ(ready.timeouts, std::vector<int>({0}));
  ScriptedWait asked_not{{1}};
  EXPECT_EQ(poll.Run(std::ref(asked_not), 50, /*poll=*/false), 1);
  EXPECT_EQ(asked_not.timeouts, std::vector<int>({50}));
  EXPECT_EQ(poll.window_ns(), 100 * kMs) << "the quick wait without polling kept the window";
  EXPECT_EQ(poll.stats().found_polling, 0u);
  EXPECT_EQ(poll.stats().slept, 1u);
}

}  // namespace
}  // namespace kvmesh
