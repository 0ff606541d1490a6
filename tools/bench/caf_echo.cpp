// kvmesh-bench's caf-echo target: the floor that CAF 0.17's network layer (BASP over TCP on
// 127.0.0.1) puts under kvmesh's remote path, measured in the same run as the remote rows.
//
// The server is this executable re-run with --caf-echo-server and EchoServerArgs: an actor system
// set up as a kvmeshd's (NodeActorSystemSettings: its scheduler, its workers and their polling as
// kvmesh-bench's --worker-threads and --busy-poll-us give a started kvmeshd, the network on)
// publishing, with CAF's own middleman, one actor that answers the messages the client library
// sends to a node's gateway (put: path, key, value, deadline; get: path, key, deadline; a batch
// for the load before reads) at once and does nothing else. A get is answered with a value of the
// size last written, so replies are as large as a node's.
//
// A session is set up as the client library is (client/client.cpp: its actor system settings,
// one connection, the same requests): a blocking call (one in flight) is a request from a reused
// scoped actor that waits on the caller's thread; with several in flight each request is a job
// sent to one connection actor, which sends it and completes the callback on the reply, its
// deadline kept in LocalDeadlines as the client library keeps it. The difference between the
// remote rows and these is what kvmesh adds: the gateway and database actors, storage, its
// guarded transport (transport/connection_guard.hpp) and its client bookkeeping.
//
// The only benchmark file that includes CAF.
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>

#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "messages/local_deadlines.hpp"
#include "messages/system_config.hpp"
#include "messages/type_ids.hpp"
#include "tools/bench/targets.hpp"

namespace kvmesh::bench {
namespace {

/// Work for a session's connection actor, from the session's thread. Local only.
using EchoJob = std::function<void(caf::event_based_actor*)>;

}  // namespace
}  // namespace kvmesh::bench

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvmesh::bench::EchoJob)

namespace kvmesh::bench {
namespace {

// -- server ---------------------------------------------------------------------------------------

// Answers put, get and batch as a node's gateway would be answered, doing no work: no lookup,
// no storage, no forwarding to another actor.
caf::behavior EchoActor(caf::event_based_actor*) {
  auto value = std::make_shared<std::string>(100, 'v');
  // Gets return a value of the size last written (the workload's: the load before reads
  // writes every key with it).
  auto remember = [value](size_t size) {
    if (value->size() != size) value->assign(size, 'v');
  };
  return {
      [remember](atom::put, const std::string&, const std::string&, const std::string& v,
                 const Deadline&) {
        remember(v.size());
        return atom::ok_v;
      },
      [value](atom::get, const std::string&, const std::string&, const Deadline&) {
        return *value;
      },
      [remember](atom::batch, const std::string&, const WriteBatch& batch, const Deadline&) {
        if (!batch.ops.empty()) remember(batch.ops.front().value.size());
        return atom::ok_v;
      },
  };
}

// -- session --------------------------------------------------------------------------------------

struct connection_state {
  static inline const char* name = "kvmesh.bench.caf_echo_connection";
  caf::actor server;
  LocalDeadlines deadlines;
};

// The client library's connection actor, reduced to what a request needs: it runs each job
// (which sends one request), checks deadlines, and fails every request in flight when the server
// is lost.
caf::behavior ConnectionActor(caf::stateful_actor<connection_state>* self, caf::actor server) {
  self->state.server = server;
  self->monitor(server);
  self->state.deadlines.set_schedule_check(
      [self](caf::timespan period) { self->delayed_send(self, period, atom::tick_v); });
  self->set_down_handler([self](caf::down_msg&) {
    self->state.deadlines.EndAll(
        ToError(Status::Unavailable("caf-echo: lost the connection to the server")));
  });
  return {
      [self](EchoJob& job) { job(self); },
      [self](atom::tick) { self->state.deadlines.ExpireDue(); },
  };
}

class CafEchoSession : public Session {
 public:
  ~CafEchoSession() override {
    if (!system_) return;
    caller_.reset();
    caf::anon_send_exit(connection_, caf::exit_reason::user_shutdown);
    connection_ = nullptr;
    server_ = nullptr;
    system_->await_all_actors_done();
    system_.reset();
  }

  Status Connect(uint16_t port, const std::string& scheduler) {
    const client::ClientOptions defaults;
    ActorSystemSettings settings;
    settings.scheduler_policy = scheduler;
    settings.network = true;
    settings.peer_timeout = std::chrono::duration_cast<caf::timespan>(defaults.peer_timeout);
    settings.deserialize_in_multiplexer = true;
    cfg_ = std::make_unique<caf::actor_system_config>();
    if (Status s = ConfigureActorSystem(settings, cfg_.get()); !s.ok()) return s;
    system_ = std::make_unique<caf::actor_system>(*cfg_);
    timeout_ = std::chrono::duration_cast<caf::timespan>(defaults.request_timeout);
    auto server = system_->middleman().remote_actor("127.0.0.1", port);
    if (!server) {
      return Status::Unavailable("caf-echo: cannot reach the server at 127.0.0.1:" +
                                 std::to_string(port) + ": " + system_->render(server.error()));
    }
    server_ = std::move(*server);
    connection_ = system_->spawn(ConnectionActor, server_);
    caller_ = std::make_unique<caf::scoped_actor>(*system_);
    return Status::OK();
  }

  Status Open(const std::vector<std::string>& paths) override {
    paths_ = paths;
    return Status::OK();
  }
  void Put(size_t db, std::string key, std::string value, Done done) override {
    Request<atom::ok>(std::move(done), 1, atom::put_v, paths_[db], std::move(key),
                      std::move(value));
  }
  void Get(size_t db, std::string key, Done done) override {
    Request<std::string>(std::move(done), 1, atom::get_v, paths_[db], std::move(key));
  }
  void List(size_t, std::string, uint32_t, Done done) override {
    done(Status::InvalidArgument("the caf-echo server answers put and get only"), 0);
  }
  void Write(size_t db, WriteBatch batch, Done done) override {
    const uint64_t n = batch.size();
    Request<atom::ok>(std::move(done), n, atom::batch_v, paths_[db], std::move(batch));
  }

 private:
  // `args` and then a deadline `timeout_` from now, as the client library sends a request.
  template <class Reply, class... Ts>
  void Request(Done done, uint64_t keys, Ts... args) {
    if (blocking_) {
      auto& self = *caller_;
      auto handle =
          self->request(server_, caf::infinite, std::move(args)..., Deadline::In(timeout_));
      Status result = Status::Timeout("caf-echo: no reply within the request timeout");
      caf::blocking_actor::accept_one_cond rc;
      self->varargs_receive(
          rc, handle.id(), [&](Reply&) { result = Status::OK(); },
          [&](caf::error& err) { result = ToStatus(err); }, caf::after(timeout_) >> [] {});
      return done(result, result.ok() ? keys : 0);
    }
    EchoJob job = [done = std::move(done), keys, timeout = timeout_,
                   args...](caf::event_based_actor* base) {
      auto* self = static_cast<caf::stateful_actor<connection_state>*>(base);
      auto& st = self->state;
      auto handle = self->request(st.server, caf::infinite, args..., Deadline::In(timeout));
      // A reply after the deadline finds the request settled and is dropped.
      const uint64_t id =
          st.deadlines.Add(timeout, [done](caf::error why) { done(ToStatus(why), 0); });
      handle.then(
          [self, id, done, keys](Reply&) {
            if (self->state.deadlines.Settle(id)) done(Status::OK(), keys);
          },
          [self, id, done](caf::error& err) {
            if (self->state.deadlines.Settle(id)) done(ToStatus(err), 0);
          });
    };
    caf::anon_send(connection_, std::move(job));
  }

  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> system_;
  caf::timespan timeout_{};
  caf::actor server_;
  caf::actor connection_;
  /// The blocking calls' actor, reused as the client library reuses its callers.
  std::unique_ptr<caf::scoped_actor> caller_;
  std::vector<std::string> paths_;
};

// -- target ---------------------------------------------------------------------------------------

class CafEchoTarget : public Target {
 public:
  ~CafEchoTarget() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string name() const override { return "caf-echo"; }
  Status NewSession(std::unique_ptr<Session>* out) override {
    auto session = std::make_unique<CafEchoSession>();
    Status s = session->Connect(port_, scheduler_);
    if (!s.ok()) return s;
    *out = std::move(session);
    return Status::OK();
  }
  pid_t node_pid() const override { return pid_; }
  bool supports(const std::string& workload) const override {
    return workload != "list" && !NeedsKvmeshApi(workload);
  }

  /// Starts the server and reads the port it published on (bounded).
  Status Start(const TargetOptions& options) {
    scheduler_ = options.scheduler;
    return SpawnEchoServer("caf-echo", {"--caf-echo-server"}, options, &pid_, &port_);
  }

 private:
  pid_t pid_ = 0;
  uint16_t port_ = 0;
  std::string scheduler_;
};

}  // namespace

int RunCafEchoServer(const NodeOptions& node) {
  // A node's actor system, the network on.
  const ActorSystemSettings settings = NodeActorSystemSettings(node, true);
  caf::actor_system_config cfg;
  if (Status s = ConfigureActorSystem(settings, &cfg); !s.ok()) {
    std::fprintf(stderr, "caf-echo server: %s\n", s.ToString().c_str());
    return 2;
  }
  caf::actor_system system{cfg};
  caf::actor echo = system.spawn(EchoActor);
  // Loopback only, on a free port.
  auto port = system.middleman().publish(echo, 0, "127.0.0.1");
  if (!port) {
    std::fprintf(stderr, "caf-echo server: cannot listen on 127.0.0.1: %s\n",
                 system.render(port.error()).c_str());
    caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
    return 3;
  }
  std::printf("%u\n", static_cast<unsigned>(*port));
  std::fflush(stdout);
  // Nothing more to say: stdout was the benchmark's pipe, which it closes.
  const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null >= 0) ::dup2(null, STDOUT_FILENO);
  // Serves until killed: by the benchmark, or by the kernel when the benchmark ends.
  while (true) ::pause();
}

Status MakeCafEchoTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  if (!options.nodes.empty() || options.tls) {
    return Status::InvalidArgument("the caf-echo target starts its own plaintext server");
  }
  if (Status s = ValidateSchedulerPolicy(options.scheduler); !s.ok()) return s;
  auto target = std::make_unique<CafEchoTarget>();
  Status s = target->Start(options);
  if (!s.ok()) return s;
  *out = std::move(target);
  return Status::OK();
}

}  // namespace kvmesh::bench
