// Child processes and raw sockets for tests: kvmeshd as a real child process (start, read its
// start-up line, signal, wait), commands run to completion, /proc, and raw TCP on loopback.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kvmesh::testing {

/// In a forked child: replaces the process with `binary args...`, or exits 127.
[[noreturn]] inline void ExecOrDie(const std::string& binary,
                                   const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(binary.c_str(), argv.data());
  ::_exit(127);
}

class DaemonProcess {
 public:
  DaemonProcess() = default;
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess() { Kill(SIGKILL); }

  /// Starts `binary args...` and waits (at most 30 s) for its "listening on HOST:PORT" line.
  /// Returns false (with the output so far in output()) if it exits or stays silent.
  bool Start(const std::string& binary, const std::vector<std::string>& args) {
    int out[2];
    if (::pipe(out) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(out[1], STDERR_FILENO);
      ::close(out[0]);
      ExecOrDie(binary, args);
    }
    ::close(out[1]);
    stdout_ = ::fdopen(out[0], "r");
    char line[4096];
    while (std::fgets(line, sizeof(line), stdout_) != nullptr) {  // bounded by the child's life
      output_ += line;
      std::smatch m;
      std::string text(line);
      if (std::regex_search(text, m, std::regex("listening on [^ ]+:([0-9]+)"))) {
        port_ = std::stoi(m[1]);
        std::smatch cluster;
        if (std::regex_search(text, cluster, std::regex("cluster port [^ ]+:([0-9]+)"))) {
          cluster_port_ = std::stoi(cluster[1]);
        }
        // Keep draining output so the child never blocks on a full pipe (kept for
        // output_now()).
        drainer_ = std::thread([this, f = stdout_] {
          char buf[4096];
          while (std::fgets(buf, sizeof(buf), f) != nullptr) {
            std::lock_guard<std::mutex> lock(later_mutex_);
            later_output_ += buf;
          }
        });
        return true;
      }
    }
    Wait();
    return false;
  }

  /// Sends `signal` to the process (no-op once it has been reaped). SIGKILL returns once the
  /// process is reaped, SIGSTOP once it is really stopped (kill() only queues the signal).
  void Kill(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    if (signal == SIGKILL) Wait();
    if (signal == SIGSTOP) {
      int status = 0;
      ::waitpid(pid_, &status, WUNTRACED);
    }
  }

  /// Waits for the process to exit; returns its exit code, or 128+signal.
  int Wait() {
    if (pid_ <= 0) return exit_code_;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (drainer_.joinable()) drainer_.join();
    if (stdout_ != nullptr) std::fclose(stdout_);
    stdout_ = nullptr;
    return exit_code_;
  }

  /// The child's pid while it has not been reaped; -1 after Wait().
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  /// The cluster port from the ready line; 0 if the node is not clustered.
  int cluster_port() const { return cluster_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& output() const { return output_; }
  /// Everything the process wrote so far (stdout and stderr), start-up included.
  std::string output_now() {
    std::lock_guard<std::mutex> lock(later_mutex_);
    return output_ + later_output_;
  }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int cluster_port_ = 0;
  int exit_code_ = -1;
  FILE* stdout_ = nullptr;
  std::thread drainer_;
  std::string output_;
  std::mutex later_mutex_;
  std::string later_output_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs `binary args...` to completion with `input` on stdin; collects stdout, stderr and the
/// exit code. `scratch` is a directory for the temporary files.
inline CommandResult RunCommand(const std::string& binary, const std::vector<std::string>& args,
                                const std::string& input, const std::string& scratch) {
  const std::string in_path = scratch + "/cmd.in", out_path = scratch + "/cmd.out",
                    err_path = scratch + "/cmd.err";
  {
    FILE* f = std::fopen(in_path.c_str(), "wb");
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen(in_path.c_str(), "rb", stdin);
    std::freopen(out_path.c_str(), "wb", stdout);
    std::freopen(err_path.c_str(), "wb", stderr);
    ExecOrDie(binary, args);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto slurp = [](const std::string& path) {
    std::string text;
    FILE* f = std::fopen(path.c_str(), "rb");
    char buf[65536];
    size_t n;
    while (f != nullptr && (n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
    if (f != nullptr) std::fclose(f);
    return text;
  };
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Processes, from /proc.

/// True if `pid` is a running (not exited, not zombie, not dead) process.
inline bool Running(pid_t pid) {
  if (pid <= 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  // pid (comm) state ...: the command may hold ')' itself, so the state follows the last one.
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z' &&
         line[close + 2] != 'X';
}

/// A field of /proc/PID/status in kB (VmHWM: peak resident memory), or -1.
inline long StatusKb(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

/// CPU seconds (user + system) process `pid` has used so far; -1 if unknown.
inline double CpuSeconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return -1;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stol(field);  // utime, stime
  }
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------------------
// Raw TCP on 127.0.0.1.

/// A socket listening on 127.0.0.1 at a free port, which goes to `*port`.
inline int ListenLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(fd, 16);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

/// A blocking TCP connection to 127.0.0.1:port with short (200 ms) send and receive timeouts,
/// so a peer that stops reading cannot block a test; -1 on failure.
inline int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// A blocking TCP connection (no timeouts) to the port of `address` ("HOST:PORT") on
/// 127.0.0.1; the test fails (non-fatally) if it cannot be made.
inline int ConnectTo(const std::string& address) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

/// Waits at most `timeout` for the peer to close `fd` (end of stream or reset), reading and
/// dropping what it sends meanwhile. True if it closed.
inline bool WaitClosedByPeer(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (auto now = std::chrono::steady_clock::now(); now < deadline;
       now = std::chrono::steady_clock::now()) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
  }
  return false;
}

/// Sends as much of `data` as the peer takes before an error or a send timeout.
inline void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

/// Reads what arrives within `timeout` (at most `max` bytes).
inline std::string ReadSome(int fd, size_t max, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (out.size() < max) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), max - out.size()), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

/// Reads up to `n` bytes (at most 256) that arrive within `ms`: "" on timeout, "EOF" if the peer
/// closed.
inline std::string ReadWithin(int fd, size_t n, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) <= 0) return "";
  char buf[256];
  ssize_t got = ::recv(fd, buf, std::min(n, sizeof(buf)), 0);
  if (got <= 0) return "EOF";
  return std::string(buf, static_cast<size_t>(got));
}

/// Reads until `n` bytes have come or `deadline` passes; returns what came (with "EOF" appended
/// if the peer closed).
inline std::string ReadExactlyBefore(int fd, size_t n,
                                     std::chrono::steady_clock::time_point deadline) {
  std::string got;
  while (got.size() < n) {  // bounded by the deadline
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    std::string part = ReadWithin(fd, n - got.size(), static_cast<int>(left.count()));
    if (part == "EOF") return got + part;
    got += part;
  }
  return got;
}

/// Closes with a RST instead of a FIN.
inline void Abort(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

}  // namespace kvmesh::testing
