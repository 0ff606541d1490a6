// PollingSharing: CAF's work-sharing scheduler policy (one queue all workers take actors from),
// with workers that poll the queue for a while before they sleep (common/busy_poll.hpp).
//
// Why: every hop between actors on a node (a request from the client port to the gateway, to a
// database actor, its reply) wakes a worker that sleeps on the queue's condition variable, and on
// this VM, whose idle CPUs halt, a wake-up is an interrupt through the hypervisor: with 50 puts in
// flight to an embedded node, both CPUs were idle 35% of the time while futex wake-ups were 11% of
// the workers' CPU (perf, kvmesh-bench --targets embedded --workloads put --inflight 50). A worker
// still polling when an actor is queued needs no wake-up, and its enqueuer makes none unless
// another worker sleeps (that one is woken all the same: a job must not wait behind a long one
// the polling worker may take first). A worker's BusyPoll counts a job it saw while polling as
// found even if another worker took it.
//
// The window adapts and backs off as the port's does (BusyPoll): an idle node's workers poll one
// window after their last job and then sleep until work comes. Only a node's actor system polls
// (ActorSystemSettings::busy_poll, from NodeOptions::busy_poll); a client's would take the CPU its
// program needs (measured: with client and node both polling, 64 databases x 4 connections x 50
// remote puts ran 0.84x).
//
// Otherwise as caf::policy::work_sharing in CAF 0.17.6, whose interface (the methods below, called
// by caf::scheduler::coordinator and worker) it follows; its queue is a deque, where CAF's list
// allocated a node per enqueue, and an enqueue signals only when a worker sleeps.
#pragma once

#include <caf/actor_system.hpp>
#include <caf/policy/unprofiled.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>
#include <caf/scheduler/coordinator.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "common/busy_poll.hpp"

namespace kvmesh {

class PollingSharing : public caf::policy::unprofiled {
 public:
  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {}
    std::deque<caf::resumable*> queue;
    std::mutex lock;
    std::condition_variable cv;
    /// The queue's length, for polling without the lock.
    std::atomic<size_t> size{0};
    /// Workers waiting on `cv` (under `lock`).
    int sleepers = 0;
    /// The workers' polling bound (BusyPoll's); set before the scheduler starts its workers.
    int64_t poll_ns = 0;
  };

  /// Each worker's polling. CAF copies one worker_data into every worker: each copy starts a
  /// BusyPoll of its own.
  struct worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator* coordinator);
    worker_data(const worker_data& other)
        : poll_ns(other.poll_ns), poll(std::make_unique<BusyPoll>(poll_ns)) {}
    int64_t poll_ns;
    std::unique_ptr<BusyPoll> poll;
  };

  template <class Coordinator>
  void enqueue(Coordinator* self, caf::resumable* job) {
    auto& d = self->data();
    std::lock_guard<std::mutex> guard(d.lock);
    d.queue.push_back(job);
    d.size.store(d.queue.size(), std::memory_order_release);
    if (d.sleepers > 0) d.cv.notify_one();
  }
  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    enqueue(self, job);
  }
  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }
  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }
  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  /// The next job, waiting for one as long as it takes: polling first, then asleep on `cv`.
  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& d = self->parent()->data();
    auto wait = [&d](int timeout_ms) -> int {
      if (timeout_ms == 0) return d.size.load(std::memory_order_acquire) > 0 ? 1 : 0;
      std::unique_lock<std::mutex> guard(d.lock);
      ++d.sleepers;
      const bool ready = d.cv.wait_for(guard, std::chrono::milliseconds(timeout_ms),
                                       [&d] { return !d.queue.empty(); });
      --d.sleepers;
      return ready ? 1 : 0;
    };
    while (true) {
      {
        std::lock_guard<std::mutex> guard(d.lock);
        if (!d.queue.empty()) {
          caf::resumable* job = d.queue.front();
          d.queue.pop_front();
          d.size.store(d.queue.size(), std::memory_order_release);
          return job;
        }
      }
      // Another worker may take what this wait saw: then it waits again.
      self->data().poll->Run(wait, kWaitMs);
    }
  }

  template <class Worker, class UnaryFunction>
  void foreach_resumable(Worker*, UnaryFunction) {}
  template <class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator* self, UnaryFunction f) {
    auto& d = self->data();
    std::lock_guard<std::mutex> guard(d.lock);
    while (!d.queue.empty()) {
      caf::resumable* job = d.queue.front();
      d.queue.pop_front();
      f(job);
    }
    d.size.store(0, std::memory_order_release);
  }

 private:
  /// A sleeping worker's wait (a job's enqueue ends it at once).
  static constexpr int kWaitMs = 3600 * 1000;
};

using PollingCoordinator = caf::scheduler::coordinator<PollingSharing>;

inline PollingSharing::worker_data::worker_data(caf::scheduler::abstract_coordinator* coordinator)
    : poll_ns(static_cast<PollingCoordinator*>(coordinator)->data().poll_ns),
      poll(std::make_unique<BusyPoll>(poll_ns)) {}

/// A scheduler whose workers poll up to `poll_ns` (for actor_system_config::module_factories).
caf::actor_system::module* MakePollingScheduler(caf::actor_system& system, int64_t poll_ns);

/// The polling of the workers of `system`, summed, if it runs on PollingSharing; else none.
std::optional<BusyPoll::Stats> WorkerPollingStats(caf::actor_system& system);

}  // namespace kvmesh
