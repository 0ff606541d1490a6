// Runs kvmeshd as a real child process for tests: start, read its start-up line, signal, wait.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <regex>
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
        // Keep draining output so the child never blocks on a full pipe.
        drainer_ = std::thread([f = stdout_] {
          char buf[4096];
          while (std::fgets(buf, sizeof(buf), f) != nullptr) {
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

  int port() const { return port_; }
  /// The cluster port from the ready line; 0 if the node is not clustered.
  int cluster_port() const { return cluster_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& output() const { return output_; }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int cluster_port_ = 0;
  int exit_code_ = -1;
  FILE* stdout_ = nullptr;
  std::thread drainer_;
  std::string output_;
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

}  // namespace kvmesh::testing
