#include "messages/system_config.hpp"

#include <caf/atom.hpp>
#include <caf/io/middleman.hpp>
#include <caf/thread_hook.hpp>

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "common/path.hpp"
#include "kvmesh/node.hpp"
#include "messages/polling_scheduler.hpp"
#include "messages/type_ids.hpp"

namespace kvmesh {
namespace {

constexpr const char* kCafThreadName = "caf.multiplexer";

/// See NameNetworkThread: renames every thread CAF started as "caf.multiplexer" (its workers and
/// its network thread, which NameNetworkThread renames again once its event loop runs).
class WorkerThreadNames : public caf::thread_hook {
 public:
  void init(caf::actor_system&) override {}
  void thread_started() override {
    char name[16] = {};
    if (pthread_getname_np(pthread_self(), name, sizeof(name)) == 0 &&
        std::strcmp(name, kCafThreadName) == 0) {
      pthread_setname_np(pthread_self(), "caf.worker");
    }
  }
  void thread_terminates() override {}
};

}  // namespace

void NameNetworkThread(caf::actor_system& system) {
  if (!system.has_middleman()) return;
  // Runs in the event loop, so after WorkerThreadNames renamed this thread at its start.
  system.middleman().backend().post([] { pthread_setname_np(pthread_self(), "caf.network"); });
}

ActorSystemSettings NodeActorSystemSettings(const NodeOptions& opts, bool network) {
  ActorSystemSettings settings;
  settings.scheduler_policy = opts.scheduler_policy;
  // The node's workers poll as its client port's thread does (a client's do not).
  settings.busy_poll = opts.busy_poll;
  settings.worker_threads = opts.worker_threads;
  if (settings.worker_threads == 0) {
    settings.worker_threads = std::max(2u, std::thread::hardware_concurrency());
  }
  settings.peer_timeout = std::chrono::duration_cast<caf::timespan>(opts.peer_timeout);
  // Peers that die or stall are noticed: heartbeats keep live connections busy, and a
  // connection silent for peer_timeout is closed.
  settings.network = network;
  settings.deserialize_in_multiplexer = opts.network_workers == 0;
  if (opts.network_workers > 0) settings.decode_workers = opts.network_workers;
  return settings;
}

Status ValidateSchedulerPolicy(const std::string& policy) {
  if (policy == "sharing" || policy == "stealing") return Status::OK();
  return Status::InvalidArgument("scheduler_policy must be \"sharing\" or \"stealing\", not " +
                                 Quote(policy));
}

Status ValidateBusyPoll(std::chrono::microseconds busy_poll) {
  if (busy_poll >= std::chrono::microseconds(0) && busy_poll <= kMaxBusyPoll) return Status::OK();
  return Status::InvalidArgument("busy_poll must be between 0 and " +
                                 std::to_string(kMaxBusyPoll.count()) + " us, got " +
                                 std::to_string(busy_poll.count()) + " us");
}

caf::actor_system::module* MakePollingScheduler(caf::actor_system& system, int64_t poll_ns) {
  auto* scheduler = new PollingCoordinator(system);
  scheduler->data().poll_ns = poll_ns;
  return scheduler;
}

std::optional<BusyPoll::Stats> WorkerPollingStats(caf::actor_system& system) {
  auto* scheduler = dynamic_cast<PollingCoordinator*>(&system.scheduler());
  if (scheduler == nullptr) return std::nullopt;
  BusyPoll::Stats sum;
  for (size_t i = 0; i < scheduler->num_workers(); ++i) {
    const BusyPoll::Stats one = scheduler->worker_by_id(i)->data().poll->stats();
    sum.found_polling += one.found_polling;
    sum.slept += one.slept;
    sum.polling_ns += one.polling_ns;
  }
  return sum;
}

Status ConfigureActorSystem(const ActorSystemSettings& settings, caf::actor_system_config* cfg) {
  Status s = ValidateSchedulerPolicy(settings.scheduler_policy);
  if (!s.ok()) return s;
  s = ValidateBusyPoll(settings.busy_poll);
  if (!s.ok()) return s;
  RegisterMessageTypes(*cfg);
  cfg->add_thread_hook<WorkerThreadNames>();
  if (settings.scheduler_policy == "sharing" && settings.busy_poll.count() > 0) {
    // CAF takes a scheduler module a factory made in place of its own (actor_system's
    // constructor makes one only if none was loaded).
    const int64_t poll_ns = std::chrono::nanoseconds(settings.busy_poll).count();
    cfg->module_factories.push_back(
        [poll_ns](caf::actor_system& system) { return MakePollingScheduler(system, poll_ns); });
  }
  cfg->set("scheduler.policy",
           settings.scheduler_policy == "sharing" ? caf::atom("sharing") : caf::atom("stealing"));
  if (settings.worker_threads != 0) cfg->set("scheduler.max-threads", settings.worker_threads);
  if (settings.network) {
    cfg->load<caf::io::middleman>();
    cfg->set("middleman.heartbeat-interval", settings.peer_timeout / 3);
    cfg->set("middleman.connection-timeout", settings.peer_timeout);
    // A peer must name kvmesh in its handshake: a stray CAF program is turned away.
    cfg->set("middleman.app-identifiers", std::vector<std::string>{"kvmesh"});
    if (settings.deserialize_in_multiplexer) {
      cfg->set("middleman.workers", size_t{0});
    } else if (settings.decode_workers != 0) {
      cfg->set("middleman.workers", settings.decode_workers);
    }
  }
  return Status::OK();
}

}  // namespace kvmesh
