// kvmesh-bench's redis target: a redis-server started by the benchmark (no persistence, a free
// 127.0.0.1 port, its own scratch directory) so that kvmesh's rows can be read next to Redis's in
// the same run. hiredis (Debian's libhiredis-dev) formats the commands and parses the replies; the
// socket is the session's own, so that a session keeps requests in flight the way the client
// library does: its thread writes each request as it is issued (pipelining on one connection),
// and a reader thread completes them in order as replies arrive. With one request in flight a
// session writes and reads on the caller's thread, as a blocking client does. The only benchmark
// file that includes hiredis.
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include "tools/bench/targets.hpp"
#include "tools/cluster/proc_net.hpp"
#include "tools/cluster/process_cluster.hpp"

namespace kvmesh::bench {
namespace {

/// What a reply must be for the request to have succeeded.
enum class Expect { kOk, kValue };

/// Sends `len` bytes, retrying short writes; false (errno set) on failure.
bool WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    const ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

/// The request's outcome from its reply: a Redis error reply keeps Redis's text.
Status StatusOfReply(const redisReply* reply, Expect expect) {
  switch (reply->type) {
    case REDIS_REPLY_ERROR:
      return Status::Internal("redis replied: " + std::string(reply->str, reply->len));
    case REDIS_REPLY_NIL:
      return Status::NotFound("redis: key not found");
    case REDIS_REPLY_STRING:
      if (expect == Expect::kValue) return Status::OK();
      break;
    case REDIS_REPLY_STATUS:
      if (expect == Expect::kOk) return Status::OK();
      break;
  }
  return Status::Internal("redis: unexpected reply of type " + std::to_string(reply->type));
}

/// How long a session waits for a reply before it fails every request in flight.
constexpr int kReplyTimeoutSeconds = 10;

std::string NoReplyReason() {
  return "no reply within " + std::to_string(kReplyTimeoutSeconds) + " s";
}

class RedisSession : public Session {
 public:
  RedisSession() : reader_(redisReaderCreate()) {}
  ~RedisSession() override {
    StopReader();
    if (fd_ >= 0) ::close(fd_);
    if (wake_ >= 0) ::close(wake_);
    redisReaderFree(reader_);
  }

  Status Connect(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    wake_ = ::eventfd(0, EFD_CLOEXEC);
    if (fd_ < 0 || wake_ < 0) return Status::IOError(std::string("socket: ") + strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return Status::Unavailable("cannot reach redis-server at 127.0.0.1:" + std::to_string(port) +
                                 ": " + strerror(errno));
    }
    // Requests are small and latency matters (as in hiredis's own clients).
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    // A server that stops answering fails the blocking call rather than hanging the benchmark.
    timeval timeout{kReplyTimeoutSeconds, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    return Status::OK();
  }

  // Each benchmark database is a key prefix, as for raw RocksDB.
  Status Open(const std::vector<std::string>& paths) override {
    prefixes_.clear();
    for (const std::string& path : paths) prefixes_.push_back(path + "\x01");
    return Status::OK();
  }
  void Put(size_t db, std::string key, std::string value, Done done) override {
    Send({"SET", prefixes_[db] + key, std::move(value)}, Expect::kOk, 1, std::move(done));
  }
  void Get(size_t db, std::string key, Done done) override {
    Send({"GET", prefixes_[db] + key}, Expect::kValue, 1, std::move(done));
  }
  void List(size_t, std::string, uint32_t, Done done) override {
    done(Status::InvalidArgument("redis has no ordered listing of keys by prefix"), 0);
  }
  // An atomic batch of puts is one MSET.
  void Write(size_t db, WriteBatch batch, Done done) override {
    std::vector<std::string> args = {"MSET"};
    for (WriteOp& op : batch.ops) {
      if (op.kind != WriteOp::Kind::kPut) {
        return done(Status::InvalidArgument("the redis target writes batches of puts only"), 0);
      }
      args.push_back(prefixes_[db] + op.key);
      args.push_back(std::move(op.value));
    }
    Send(std::move(args), Expect::kOk, batch.size(), std::move(done));
  }

 private:
  struct Pending {
    Expect expect;
    uint64_t keys;
    Done done;
    /// When it was queued: it fails kReplyTimeoutSeconds later without its reply.
    std::chrono::steady_clock::time_point sent;
  };

  void Send(std::vector<std::string> args, Expect expect, uint64_t keys, Done done) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    char* command = nullptr;
    const int len =
        redisFormatCommandArgv(&command, static_cast<int>(argv.size()), argv.data(), lens.data());
    if (len < 0) return done(Status::Internal("redis: cannot format the command"), 0);
    std::unique_ptr<char, void (*)(char*)> owned(command, redisFreeCommand);
    if (blocking_) {
      StopReader();
      if (broken_) return done(Status::Unavailable("redis: " + broken_reason_), 0);
      if (!WriteAll(fd_, command, static_cast<size_t>(len))) {
        Break(std::string("write: ") + strerror(errno));
        return done(Status::Unavailable("redis: " + broken_reason_), 0);
      }
      redisReply* reply = nullptr;
      Status s = ReadReply(&reply);
      if (!s.ok()) return done(s, 0);
      Status result = StatusOfReply(reply, expect);
      freeReplyObject(reply);
      return done(result, keys);
    }
    StartReader();
    std::unique_lock<std::mutex> write_lock(write_mutex_);
    {
      std::lock_guard<std::mutex> lock(pending_mutex_);
      if (broken_) {
        const Status s = Status::Unavailable("redis: " + broken_reason_);
        write_lock.unlock();
        return done(s, 0);
      }
      // Queued before the write: the reply may come before send returns.
      pending_.push_back({expect, keys, std::move(done), std::chrono::steady_clock::now()});
    }
    if (!WriteAll(fd_, command, static_cast<size_t>(len))) {
      // The reader sees the connection end and fails everything queued, this request included.
      const int error = errno;
      {
        std::lock_guard<std::mutex> lock(pending_mutex_);
        broken_ = true;  // later requests fail at once; the reader fails those queued
        if (broken_reason_.empty()) broken_reason_ = std::string("write: ") + strerror(error);
      }
      ::shutdown(fd_, SHUT_RDWR);
    }
  }

  /// Blocking mode: reads until one reply is complete.
  Status ReadReply(redisReply** reply) {
    char buf[16384];
    while (true) {
      void* r = nullptr;
      if (redisReaderGetReply(reader_, &r) != REDIS_OK) {
        Break(std::string("protocol error: ") + reader_->errstr);
        return Status::Corruption("redis: " + broken_reason_);
      }
      if (r != nullptr) {
        *reply = static_cast<redisReply*>(r);
        return Status::OK();
      }
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Break(n == 0 ? "the server closed the connection"
              : (errno == EAGAIN || errno == EWOULDBLOCK)
                  ? NoReplyReason()
                  : std::string("read: ") + strerror(errno));
        return Status::Unavailable("redis: " + broken_reason_);
      }
      redisReaderFeed(reader_, buf, static_cast<size_t>(n));
    }
  }

  void Break(std::string reason) {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    broken_ = true;
    if (broken_reason_.empty()) broken_reason_ = std::move(reason);
  }

  // The reader runs while requests are pipelined; the driver switches modes only between runs,
  // when nothing is in flight.
  void StartReader() {
    if (reader_thread_.joinable()) return;
    reader_thread_ = std::thread([this] { ReaderLoop(); });
  }
  void StopReader() {
    if (!reader_thread_.joinable()) return;
    const uint64_t one = 1;
    (void)!::write(wake_, &one, sizeof(one));
    reader_thread_.join();
    uint64_t drained;
    (void)!::read(wake_, &drained, sizeof(drained));
  }

  void ReaderLoop() {
    char buf[65536];
    std::string failure;
    while (failure.empty()) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
      // Wakes at least every second to check the oldest request's age (requests are queued
      // while this thread waits, so no single wait can be timed from one of them).
      const int ready = ::poll(fds, 2, 1000);
      if (ready < 0) {
        if (errno == EINTR) continue;
        failure = std::string("poll: ") + strerror(errno);
        break;
      }
      if (ready == 0) {
        std::lock_guard<std::mutex> lock(pending_mutex_);
        if (!pending_.empty() && std::chrono::steady_clock::now() - pending_.front().sent >
                                     std::chrono::seconds(kReplyTimeoutSeconds)) {
          failure = NoReplyReason();
        }
        continue;
      }
      if (fds[1].revents != 0) return;  // StopReader: nothing is in flight
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        failure =
            n == 0 ? "the server closed the connection" : std::string("read: ") + strerror(errno);
        break;
      }
      redisReaderFeed(reader_, buf, static_cast<size_t>(n));
      while (true) {
        void* r = nullptr;
        if (redisReaderGetReply(reader_, &r) != REDIS_OK) {
          failure = std::string("protocol error: ") + reader_->errstr;
          break;
        }
        if (r == nullptr) break;
        Pending p;
        {
          std::lock_guard<std::mutex> lock(pending_mutex_);
          if (pending_.empty()) {
            failure = "a reply to no request";
          } else {
            p = std::move(pending_.front());
            pending_.pop_front();
          }
        }
        if (p.done) {
          const Status s = StatusOfReply(static_cast<redisReply*>(r), p.expect);
          p.done(s, s.ok() ? p.keys : 0);
        }
        freeReplyObject(r);
        if (!failure.empty()) break;
      }
    }
    // The connection is unusable: everything in flight fails with the first reason, and a
    // writer blocked on a server that stopped reading is released.
    ::shutdown(fd_, SHUT_RDWR);
    std::deque<Pending> failed;
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(pending_mutex_);
      broken_ = true;
      if (broken_reason_.empty()) broken_reason_ = failure;
      reason = broken_reason_;
      failed.swap(pending_);
    }
    for (Pending& p : failed) p.done(Status::Unavailable("redis: " + reason), 0);
    // Wait for StopReader, so that it always finds a thread to join.
    pollfd wake = {wake_, POLLIN, 0};
    while (::poll(&wake, 1, -1) < 0 && errno == EINTR) {
    }
  }

  int fd_ = -1;
  /// Wakes the reader thread to stop.
  int wake_ = -1;
  redisReader* reader_;
  std::vector<std::string> prefixes_;
  std::thread reader_thread_;
  /// One writer at a time (only the session's thread writes; the lock keeps that explicit).
  std::mutex write_mutex_;
  std::mutex pending_mutex_;
  /// Requests written and not yet answered, oldest first (Redis answers in order).
  std::deque<Pending> pending_;
  bool broken_ = false;
  std::string broken_reason_;
};

class RedisTarget : public Target {
 public:
  ~RedisTarget() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string name() const override { return "redis"; }
  Status NewSession(std::unique_ptr<Session>* out) override { return NewRespSession(port_, out); }
  pid_t node_pid() const override { return pid_; }
  bool supports(const std::string& workload) const override {
    return workload != "list" && !NeedsKvmeshApi(workload);
  }

  /// Starts redis-server on a free port and waits until it accepts connections (bounded).
  Status Start(const std::string& server, const std::string& dir) {
    std::filesystem::create_directories(dir);
    const std::string log = dir + "/redis-server.log";
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::vector<int> ports;
      Status s = cluster::PickFreePorts(1, &ports);
      if (!s.ok()) return s;
      port_ = ports[0];
      s = Spawn(server, dir, log);
      if (!s.ok()) return s;
      // Ready when it accepts a connection; gone if the port was taken meanwhile.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = 0;
          break;
        }
        // Listening, and on a socket of its own (not another program's that took the port).
        const uint64_t inode = cluster::ListeningSocketInode(port_);
        if (inode != 0 && cluster::ProcessHoldsSocket(pid_, inode)) return Status::OK();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling a process
      }
      if (pid_ > 0) {
        return Status::Timeout("redis-server did not accept connections within 10 s (see " + log +
                               ")");
      }
    }
    return Status::IOError("redis-server exited at start three times (see " + log + ")");
  }

 private:
  Status Spawn(const std::string& server, const std::string& dir, const std::string& log) {
    // No persistence (no RDB snapshots, no AOF): the benchmark measures serving, and the
    // scratch dir is wiped anyway. Bound to loopback only.
    std::vector<std::string> args = {server,
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--dir",
                                     dir,
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--daemonize",
                                     "no",
                                     "--protected-mode",
                                     "yes",
                                     "--logfile",
                                     log};
    return SpawnTiedChild(std::move(args), -1, &pid_);
  }

  pid_t pid_ = 0;
  int port_ = 0;
};

}  // namespace

Status NewRespSession(int port, std::unique_ptr<Session>* out) {
  auto session = std::make_unique<RedisSession>();
  Status s = session->Connect(port);
  if (!s.ok()) return s;
  *out = std::move(session);
  return Status::OK();
}

std::string RedisServerPath(const TargetOptions& options) {
  if (!options.redis_server.empty()) return options.redis_server;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + "/redis-server";
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

Status MakeRedisTarget(const TargetOptions& options, std::unique_ptr<Target>* out) {
  const std::string server = RedisServerPath(options);
  if (server.empty()) return Status::NotFound("redis-server is not installed (not on PATH)");
  if (::access(server.c_str(), X_OK) != 0) {
    return Status::InvalidArgument("cannot run redis-server " + server + ": " + strerror(errno));
  }
  auto target = std::make_unique<RedisTarget>();
  Status s = target->Start(server, std::filesystem::absolute(options.dir).string());
  if (!s.ok()) return s;
  *out = std::move(target);
  return Status::OK();
}

}  // namespace kvmesh::bench
