// kvmesh-bench's loop-echo targets: what a client port of kvmesh's own (an event loop instead of
// CAF's network layer) would put under the remote rows, measured in the same run as redis and
// caf-echo.
//
// The server is this executable re-run with --loop-echo-server MODE and EchoServerArgs: one
// thread runs an epoll loop on a free 127.0.0.1 port and speaks Redis's protocol (RESP: SET, GET,
// MSET), so the client side is the redis target's own session (NewRespSession) and the only
// difference from the redis row is the server. With MODE "actor" (target loop-echo) each request
// read by the loop is sent to an actor of an actor system set up as a kvmeshd's
// (NodeActorSystemSettings: its scheduler, its workers and their polling as kvmesh-bench's
// --worker-threads and --busy-poll-us give a started kvmeshd; the loop itself does not poll), as
// a database actor would get it, and the actor hands the answer back to the loop through a queue
// and an eventfd: one hop there and one back, which is what a write would cost. With MODE
// "inline" (target loop-echo-inline) the loop answers at once, as a read served on the loop
// thread from RocksDB could. Neither does any storage work, like caf-echo.
#include <hiredis/hiredis.h>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "messages/system_config.hpp"
#include "tools/bench/targets.hpp"

namespace kvmesh::bench {
namespace {

/// One request on its way through the answering actor: the connection it came from and its
/// answer, already encoded (the actor adds only the hop).
struct LoopRequest {
  int fd;
  uint64_t connection;
  std::string answer;
};

}  // namespace
}  // namespace kvmesh::bench

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvmesh::bench::LoopRequest)

namespace kvmesh::bench {
namespace {

/// Answers the actor hands back to the loop; the loop is woken once per batch of answers.
struct Answers {
  std::mutex mutex;
  std::vector<LoopRequest> queue;
  int wake = -1;  // eventfd the loop polls

  void Push(LoopRequest request) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mutex);
      was_empty = queue.empty();
      queue.push_back(std::move(request));
    }
    if (was_empty) {
      const uint64_t one = 1;
      (void)!::write(wake, &one, sizeof(one));
    }
  }
};

struct Connection {
  uint64_t id = 0;
  redisReader* reader = nullptr;
  std::string out;
  bool want_write = false;
};

class LoopServer {
 public:
  LoopServer(bool hop, caf::actor answerer, Answers* answers)
      : hop_(hop), answerer_(std::move(answerer)), answers_(answers) {}

  /// Listens on a free 127.0.0.1 port; 0 on failure (the reason on stderr).
  uint16_t Listen() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(listener_, 128) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::fprintf(stderr, "loop-echo server: cannot listen on 127.0.0.1: %s\n", strerror(errno));
      return 0;
    }
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    Watch(listener_, EPOLLIN);
    Watch(answers_->wake, EPOLLIN);
    return ntohs(addr.sin_port);
  }

  /// Serves until killed.
  void Run() {
    epoll_event events[64];
    while (true) {
      const int n = ::epoll_wait(epoll_, events, 64, -1);
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == listener_) {
          Accept();
        } else if (fd == answers_->wake) {
          Deliver();
        } else {
          if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) Read(fd);
          if (events[i].events & EPOLLOUT) Flush(fd);
        }
      }
    }
  }

 private:
  void Watch(int fd, uint32_t events, int op = EPOLL_CTL_ADD) {
    epoll_event e{};
    e.events = events;
    e.data.fd = fd;
    ::epoll_ctl(epoll_, op, fd, &e);
  }

  void Accept() {
    while (true) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      Connection& c = connections_[fd];
      c.id = ++next_id_;
      c.reader = redisReaderCreate();
      Watch(fd, EPOLLIN);
    }
  }

  void Close(int fd) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    redisReaderFree(it->second.reader);
    connections_.erase(it);
    ::close(fd);
  }

  void Read(int fd) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    char buf[65536];
    while (true) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) return Close(fd);
      redisReaderFeed(it->second.reader, buf, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < sizeof(buf)) break;
    }
    Connection& c = it->second;
    while (true) {
      void* r = nullptr;
      if (redisReaderGetReply(c.reader, &r) != REDIS_OK) return Close(fd);
      if (r == nullptr) break;
      std::string answer = Answer(static_cast<redisReply*>(r));
      freeReplyObject(r);
      if (hop_) {
        caf::anon_send(answerer_, LoopRequest{fd, c.id, std::move(answer)});
      } else {
        c.out += answer;
      }
    }
    if (!hop_) Flush(fd);
  }

  /// The answer a Redis server would give, with a GET's value as large as the last SET's.
  std::string Answer(const redisReply* command) {
    if (command->type != REDIS_REPLY_ARRAY || command->elements == 0 ||
        command->element[0]->type != REDIS_REPLY_STRING) {
      return "-ERR expected a command\r\n";
    }
    const std::string name(command->element[0]->str, command->element[0]->len);
    if (name == "SET" && command->elements == 3) {
      value_size_ = command->element[2]->len;
      return "+OK\r\n";
    }
    if (name == "MSET" && command->elements >= 3) {
      value_size_ = command->element[2]->len;
      return "+OK\r\n";
    }
    if (name == "GET" && command->elements == 2) {
      return "$" + std::to_string(value_size_) + "\r\n" + std::string(value_size_, 'v') + "\r\n";
    }
    return "-ERR loop-echo answers SET, GET and MSET only\r\n";
  }

  void Deliver() {
    uint64_t count;
    (void)!::read(answers_->wake, &count, sizeof(count));
    std::vector<LoopRequest> ready;
    {
      std::lock_guard<std::mutex> lock(answers_->mutex);
      ready.swap(answers_->queue);
    }
    std::vector<int> touched;
    for (LoopRequest& r : ready) {
      auto it = connections_.find(r.fd);
      // A connection closed meanwhile (its descriptor maybe reused) gets nothing.
      if (it == connections_.end() || it->second.id != r.connection) continue;
      if (it->second.out.empty()) touched.push_back(r.fd);
      it->second.out += r.answer;
    }
    for (int fd : touched) Flush(fd);
  }

  void Flush(int fd) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    Connection& c = it->second;
    while (!c.out.empty()) {
      const ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) return Close(fd);
      c.out.erase(0, static_cast<size_t>(n));
    }
    const bool want_write = !c.out.empty();
    if (want_write != c.want_write) {
      c.want_write = want_write;
      Watch(fd, want_write ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
    }
  }

  const bool hop_;
  caf::actor answerer_;
  Answers* answers_;
  int listener_ = -1;
  int epoll_ = -1;
  uint64_t next_id_ = 0;
  size_t value_size_ = 100;
  std::unordered_map<int, Connection> connections_;
};

class LoopEchoTarget : public Target {
 public:
  explicit LoopEchoTarget(bool inline_answers) : inline_(inline_answers) {}
  ~LoopEchoTarget() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string name() const override { return inline_ ? "loop-echo-inline" : "loop-echo"; }
  Status NewSession(std::unique_ptr<Session>* out) override { return NewRespSession(port_, out); }
  pid_t node_pid() const override { return pid_; }
  bool supports(const std::string& workload) const override {
    return workload != "list" && !NeedsKvmeshApi(workload);
  }
  Status Start(const TargetOptions& options) {
    return SpawnEchoServer(name(), {"--loop-echo-server", inline_ ? "inline" : "actor"}, options,
                           &pid_, &port_);
  }

 private:
  const bool inline_;
  pid_t pid_ = 0;
  uint16_t port_ = 0;
};

}  // namespace

int RunLoopEchoServer(const std::string& mode, const NodeOptions& node) {
  if (mode != "actor" && mode != "inline") {
    std::fprintf(stderr, "loop-echo server: mode must be actor or inline, not %s\n", mode.c_str());
    return 2;
  }
  // A node's actor system; the loop is the network.
  const ActorSystemSettings settings = NodeActorSystemSettings(node, false);
  caf::actor_system_config cfg;
  if (Status s = ConfigureActorSystem(settings, &cfg); !s.ok()) {
    std::fprintf(stderr, "loop-echo server: %s\n", s.ToString().c_str());
    return 2;
  }
  caf::actor_system system{cfg};
  Answers answers;
  answers.wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  caf::actor answerer = system.spawn([&answers](caf::event_based_actor*) -> caf::behavior {
    return {[&answers](LoopRequest& request) { answers.Push(std::move(request)); }};
  });
  LoopServer server(mode == "actor", answerer, &answers);
  const uint16_t port = server.Listen();
  if (port == 0) return 3;
  std::printf("%u\n", static_cast<unsigned>(port));
  std::fflush(stdout);
  const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null >= 0) ::dup2(null, STDOUT_FILENO);
  server.Run();  // until killed: by the benchmark, or by the kernel when the benchmark ends
  return 0;
}

Status MakeLoopEchoTarget(const TargetOptions& options, bool inline_answers,
                          std::unique_ptr<Target>* out) {
  if (!options.nodes.empty() || options.tls) {
    return Status::InvalidArgument("the loop-echo targets start their own plaintext server");
  }
  if (Status s = ValidateSchedulerPolicy(options.scheduler); !s.ok()) return s;
  auto target = std::make_unique<LoopEchoTarget>(inline_answers);
  Status s = target->Start(options);
  if (!s.ok()) return s;
  *out = std::move(target);
  return Status::OK();
}

}  // namespace kvmesh::bench
