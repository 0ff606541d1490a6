#include "tools/cluster/process_cluster.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "common/address.hpp"
#include "kvmesh/client.hpp"
#include "security/certificates.hpp"

namespace kvmesh::cluster {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

std::string StatePath(const std::string& dir) {
  return dir + "/cluster.json";
}

/// /proc/PID/stat: state letter and start time; false if there is no such process.
bool ReadProcStat(pid_t pid, char* state, uint64_t* start_ticks) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return false;
  // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  std::vector<std::string> fields;
  while (rest >> field) fields.push_back(field);
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  if (fields.size() < 20) return false;
  *state = fields[0].empty() ? '?' : fields[0][0];
  *start_ticks = std::stoull(fields[19]);
  return true;
}

/// Node `index`'s name (kvmeshd --name, and its certificate's CN).
std::string NodeName(int index) {
  return "node-" + std::to_string(index);
}

/// The client certificate the tools' own clients use (an ACL grants it what they need).
constexpr const char* kClientName = "admin";

std::string TlsDir(const std::string& dir) {
  return dir + "/tls";
}

std::string SelfDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

/// Size of the file at `path` (0 if missing).
uint64_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string ReadFrom(const std::string& path, uint64_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The last few lines of `text`, for error messages.
std::string Tail(const std::string& text, size_t lines = 5) {
  size_t pos = text.size();
  while (lines-- > 0 && pos > 0) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

}  // namespace

const char* ProcessStateName(ProcessState state) {
  switch (state) {
    case ProcessState::kDown:
      return "down";
    case ProcessState::kRunning:
      return "up";
    case ProcessState::kPaused:
      return "paused";
  }
  return "?";
}

uint64_t ProcessStartTicks(pid_t pid) {
  char state = 0;
  uint64_t start = 0;
  if (pid <= 0 || !ReadProcStat(pid, &state, &start) || state == 'Z' || state == 'X') return 0;
  return start;
}

Status PickFreePorts(int count, std::vector<int>* ports) {
  int ephemeral_low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low;
  const int low = 10000, high = std::max(low + 1000, ephemeral_low) - 1;
  std::mt19937 rng(static_cast<uint32_t>(::getpid() ^ Clock::now().time_since_epoch().count()));
  std::vector<int> fds;
  // Random candidates below the ephemeral range; each is held bound until all are picked.
  for (int attempt = 0; attempt < 1000 && static_cast<int>(ports->size()) < count; ++attempt) {
    const int candidate = low + static_cast<int>(rng() % (high - low + 1));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(candidate));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      ports->push_back(candidate);
      fds.push_back(fd);
    } else {
      ::close(fd);
    }
  }
  for (int fd : fds) ::close(fd);
  if (static_cast<int>(ports->size()) < count) {
    return Status::IOError("cannot find " + std::to_string(count) + " free ports between " +
                           std::to_string(low) + " and " + std::to_string(high));
  }
  return Status::OK();
}

ClusterLock::ClusterLock(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = dir + "/cluster.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) {
    status_ = Status::IOError("cannot lock " + path + ": " + std::strerror(errno));
  }
}

ClusterLock::~ClusterLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

std::string ProcessCluster::client_address(int index) const {
  return "127.0.0.1:" + std::to_string(nodes_[index].client_port);
}

std::vector<std::string> ProcessCluster::seeds() const {
  std::vector<std::string> out;
  for (const auto& n : nodes_) out.push_back(n.advertise);
  return out;
}

bool ProcessCluster::Ours(int index) const {
  const NodeRecord& n = nodes_[index];
  if (n.pid <= 0) return false;
  if (options_.tie_to_caller) {
    // Our own child: reap it if it exited, so a dead node is not mistaken for a zombie.
    int status = 0;
    ::waitpid(n.pid, &status, WNOHANG);
  }
  return n.start_ticks != 0 && ProcessStartTicks(n.pid) == n.start_ticks;
}

ProcessState ProcessCluster::State(int index) const {
  if (!Ours(index)) return ProcessState::kDown;
  char state = 0;
  uint64_t start = 0;
  if (!ReadProcStat(nodes_[index].pid, &state, &start)) return ProcessState::kDown;
  return state == 'T' || state == 't' ? ProcessState::kPaused : ProcessState::kRunning;
}

Status ProcessCluster::Save() const {
  json nodes = json::array();
  for (const auto& n : nodes_) {
    nodes.push_back({{"index", n.index},
                     {"pid", n.pid},
                     {"start_ticks", n.start_ticks},
                     {"client_port", n.client_port},
                     {"cluster_port", n.cluster_port},
                     {"advertise", n.advertise},
                     {"data_dir", n.data_dir},
                     {"log", n.log}});
  }
  json state = {{"kvmeshd", options_.kvmeshd},
                {"config_dir", options_.config_dir},
                {"extra_args", options_.extra_args},
                {"tls", options_.tls},
                {"tie_to_caller", options_.tie_to_caller},
                {"ready_timeout_ms", options_.ready_timeout.count()},
                {"stop_timeout_ms", options_.stop_timeout.count()},
                {"nodes", nodes}};
  // Written aside and renamed, so a reader never sees half a file.
  const std::string path = StatePath(options_.dir), temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << state.dump(2) << "\n";
    if (!out) return Status::IOError("cannot write " + temp);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return Status::IOError("cannot replace " + path + ": " + std::strerror(errno));
  }
  return Status::OK();
}

Status ProcessCluster::Load(const std::string& dir, ProcessCluster* out) {
  std::ifstream in(StatePath(dir));
  if (!in)
    return Status::NotFound("no cluster in " + dir + " (no cluster.json); start one with up");
  try {
    json state = json::parse(in);
    ProcessCluster c;
    c.options_.dir = dir;
    c.options_.kvmeshd = state.at("kvmeshd").get<std::string>();
    c.options_.config_dir = state.at("config_dir").get<std::string>();
    c.options_.extra_args = state.at("extra_args").get<std::vector<std::string>>();
    c.options_.tie_to_caller = state.at("tie_to_caller").get<bool>();
    c.options_.tls = state.value("tls", false);  // absent in files from before TLS: plaintext
    c.options_.ready_timeout =
        std::chrono::milliseconds(state.at("ready_timeout_ms").get<int64_t>());
    c.options_.stop_timeout = std::chrono::milliseconds(state.at("stop_timeout_ms").get<int64_t>());
    for (const auto& n : state.at("nodes")) {
      NodeRecord r;
      r.index = n.at("index").get<int>();
      r.pid = n.at("pid").get<pid_t>();
      r.start_ticks = n.at("start_ticks").get<uint64_t>();
      r.client_port = n.at("client_port").get<int>();
      r.cluster_port = n.at("cluster_port").get<int>();
      r.advertise = n.at("advertise").get<std::string>();
      r.data_dir = n.at("data_dir").get<std::string>();
      r.log = n.at("log").get<std::string>();
      c.options_.advertise.push_back(r.advertise);
      c.nodes_.push_back(std::move(r));
    }
    *out = std::move(c);
    return Status::OK();
  } catch (const std::exception& e) {
    return Status::Corruption(StatePath(dir) + " is not a cluster state file: " + e.what());
  }
}

Status ProcessCluster::Up(const ProcessClusterOptions& options, int nodes, ProcessCluster* out) {
  if (nodes < 1 || nodes > 100) {
    return Status::InvalidArgument("a local cluster has 1 to 100 nodes, not " +
                                   std::to_string(nodes));
  }
  if (options.dir.empty() || options.config_dir.empty()) {
    return Status::InvalidArgument("a cluster needs a directory and a config directory");
  }
  if (!options.advertise.empty() && options.advertise.size() != static_cast<size_t>(nodes)) {
    return Status::InvalidArgument("advertise addresses must be given for every node or none");
  }
  ProcessCluster existing;
  if (Load(options.dir, &existing).ok()) {
    std::string live;
    for (int i = 0; i < existing.size(); ++i) {
      if (existing.State(i) != ProcessState::kDown) {
        live += (live.empty() ? "" : ", ") + std::string("node ") + std::to_string(i) + " (pid " +
                std::to_string(existing.node(i).pid) + ")";
      }
    }
    if (!live.empty()) {
      return Status::InvalidArgument("a cluster is already running in " + options.dir + ": " +
                                     live + "; stop it first with: kvmesh-cluster down --dir " +
                                     options.dir);
    }
  }
  ProcessCluster c;
  c.options_ = options;
  std::error_code ec;
  c.options_.dir = fs::absolute(options.dir, ec).string();
  c.options_.config_dir = fs::absolute(options.config_dir, ec).string();
  if (c.options_.kvmeshd.empty()) c.options_.kvmeshd = SelfDir() + "/kvmeshd";
  if (::access(c.options_.kvmeshd.c_str(), X_OK) != 0) {
    return Status::InvalidArgument("kvmeshd binary " + c.options_.kvmeshd + " is not executable");
  }
  std::vector<int> ports;
  if (options.base_port > 0) {
    if (options.base_port + 2 * nodes > 65536) {
      return Status::InvalidArgument("base port " + std::to_string(options.base_port) +
                                     " leaves no room for " + std::to_string(nodes) + " nodes");
    }
    for (int i = 0; i < 2 * nodes; ++i) ports.push_back(options.base_port + i);
  } else {
    Status s = PickFreePorts(2 * nodes, &ports);
    if (!s.ok()) return s;
  }
  for (int i = 0; i < nodes; ++i) {
    NodeRecord r;
    r.index = i;
    r.client_port = ports[2 * i];
    r.cluster_port = ports[2 * i + 1];
    r.advertise = options.advertise.empty() || options.advertise[i].empty()
                      ? "127.0.0.1:" + std::to_string(r.cluster_port)
                      : options.advertise[i];
    const std::string node_dir = c.options_.dir + "/node-" + std::to_string(i);
    fs::create_directories(node_dir, ec);
    if (ec) return Status::IOError("cannot create " + node_dir + ": " + ec.message());
    r.data_dir = node_dir + "/data";
    r.log = node_dir + "/kvmeshd.log";
    c.nodes_.push_back(std::move(r));
  }
  Status s = c.MakeCertificates();
  if (s.ok()) s = c.Save();
  for (int i = 0; i < nodes && s.ok(); ++i) s = c.Start(i);
  if (!s.ok()) {
    c.Down();
    return s;
  }
  *out = std::move(c);
  return Status::OK();
}

TlsOptions ProcessCluster::node_tls(int index) const {
  if (!options_.tls) return {};
  const std::string d = TlsDir(options_.dir);
  return {d + "/ca.crt", d + "/node-" + NodeName(index) + ".crt",
          d + "/node-" + NodeName(index) + ".key"};
}

TlsOptions ProcessCluster::client_tls() const {
  if (!options_.tls) return {};
  const std::string d = TlsDir(options_.dir);
  return {d + "/ca.crt", d + "/client-" + std::string(kClientName) + ".crt",
          d + "/client-" + std::string(kClientName) + ".key"};
}

Status ProcessCluster::MakeCertificates() const {
  if (!options_.tls) return Status::OK();
  security::CertificateOptions cert_options;
  cert_options.dir = TlsDir(options_.dir);
  std::error_code ec;
  fs::create_directories(cert_options.dir, ec);
  if (ec) return Status::IOError("cannot create " + cert_options.dir + ": " + ec.message());
  // The CA outlives down and up (certificates handed out stay valid); the others are made
  // afresh, so they always name the nodes' current advertise hosts.
  if (!fs::exists(cert_options.dir + "/ca.key", ec)) {
    auto ca = security::MakeCa(cert_options, "kvmesh-cluster CA");
    if (!ca.ok()) return ca.status();
  }
  cert_options.force = true;
  for (const auto& n : nodes_) {
    std::vector<std::string> hosts = {"127.0.0.1"};
    std::string host;
    uint16_t port = 0;
    if (ParseHostPort(n.advertise, &host, &port).ok() && host != "127.0.0.1") {
      hosts.push_back(host);
    }
    auto made = security::MakeNodeCertificate(cert_options, NodeName(n.index), hosts);
    if (!made.ok()) return made.status();
  }
  auto client = security::MakeClientCertificate(cert_options, kClientName);
  return client.ok() ? Status::OK() : client.status();
}

Status ProcessCluster::Spawn(int index) {
  NodeRecord& n = nodes_[index];
  std::vector<std::string> args = {options_.kvmeshd,
                                   "--name",
                                   NodeName(index),
                                   "--data-dir",
                                   n.data_dir,
                                   "--config-dir",
                                   options_.config_dir,
                                   "--port",
                                   std::to_string(n.client_port),
                                   "--cluster-port",
                                   options_.single ? "-1" : std::to_string(n.cluster_port)};
  std::string seeds;
  for (const auto& seed : this->seeds()) seeds += (seeds.empty() ? "" : ",") + seed;
  if (!options_.single) args.insert(args.end(), {"--seeds", seeds});
  if (!options_.single && n.advertise != "127.0.0.1:" + std::to_string(n.cluster_port)) {
    args.insert(args.end(), {"--cluster-advertise", n.advertise});
  }
  if (options_.tls) {
    const TlsOptions tls = node_tls(index);
    args.insert(args.end(),
                {"--tls-ca", tls.ca_file, "--tls-cert", tls.cert_file, "--tls-key", tls.key_file});
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int log = ::open(n.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return Status::IOError("cannot open " + n.log + ": " + std::strerror(errno));
  int pid_pipe[2];
  if (::pipe2(pid_pipe, O_CLOEXEC) != 0) {
    ::close(log);
    return Status::IOError(std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t caller = ::getpid();
  const bool tie = options_.tie_to_caller;
  pid_t child = ::fork();
  if (child < 0) {
    ::close(log);
    ::close(pid_pipe[0]);
    ::close(pid_pipe[1]);
    return Status::IOError(std::string("fork: ") + std::strerror(errno));
  }
  if (child == 0) {
    // Only async-signal-safe calls from here on.
    auto exec_node = [&] {
      int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, STDIN_FILENO);
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    };
    if (tie) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != caller) ::_exit(1);  // the caller died before prctl took effect
      ::setpgid(0, 0);                        // a terminal's Ctrl-C goes to the caller only
      pid_t self = ::getpid();
      (void)!::write(pid_pipe[1], &self, sizeof(self));
      exec_node();
    }
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild == 0) exec_node();
    (void)!::write(pid_pipe[1], &grandchild, sizeof(grandchild));
    ::_exit(grandchild > 0 ? 0 : 1);
  }
  ::close(pid_pipe[1]);
  ::close(log);
  pid_t pid = 0;
  ssize_t got = ::read(pid_pipe[0], &pid, sizeof(pid));
  ::close(pid_pipe[0]);
  if (!tie) ::waitpid(child, nullptr, 0);  // the intermediate process exits at once
  if (got != sizeof(pid) || pid <= 0) return Status::IOError("could not start kvmeshd");
  n.pid = pid;
  n.start_ticks = ProcessStartTicks(pid);
  if (options_.on_spawn) options_.on_spawn(index, pid);
  return Status::OK();
}

Status ProcessCluster::Start(int index) {
  if (index < 0 || index >= size()) {
    return Status::InvalidArgument("no node " + std::to_string(index) + " (the cluster has " +
                                   std::to_string(size()) + ")");
  }
  if (State(index) != ProcessState::kDown) return Status::OK();
  NodeRecord& n = nodes_[index];
  const uint64_t log_offset = FileSize(n.log);
  Status s = Spawn(index);
  if (s.ok()) s = Save();
  if (!s.ok()) return s;
  // Wait for the ready line in its log (it is printed after the ports are bound).
  const auto deadline = Clock::now() + options_.ready_timeout;
  while (true) {
    std::string out = ReadFrom(n.log, log_offset);
    if (out.find(" listening on ") != std::string::npos) return Status::OK();
    if (State(index) == ProcessState::kDown) {
      return Status::Unavailable("node " + std::to_string(index) +
                                 " exited at start-up: " + Tail(out));
    }
    if (Clock::now() > deadline) {
      Kill(index);
      return Status::Timeout("node " + std::to_string(index) + " printed no ready line within " +
                             std::to_string(options_.ready_timeout.count()) + " ms (log " + n.log +
                             ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

namespace {

/// Waits until `gone()` or the deadline; true if gone.
template <class F>
bool WaitUntil(F gone, Clock::time_point deadline) {
  while (!gone()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace

Status ProcessCluster::Kill(int index) {
  if (index < 0 || index >= size())
    return Status::InvalidArgument("no node " + std::to_string(index));
  if (!Ours(index)) return Status::OK();
  ::kill(nodes_[index].pid, SIGKILL);
  if (!WaitUntil([&] { return !Ours(index); }, Clock::now() + std::chrono::seconds(10))) {
    return Status::Timeout("node " + std::to_string(index) + " survived SIGKILL for 10 s");
  }
  return Status::OK();
}

Status ProcessCluster::Stop(int index) {
  if (index < 0 || index >= size())
    return Status::InvalidArgument("no node " + std::to_string(index));
  if (!Ours(index)) return Status::OK();
  ::kill(nodes_[index].pid, SIGCONT);
  ::kill(nodes_[index].pid, SIGTERM);
  if (WaitUntil([&] { return !Ours(index); }, Clock::now() + options_.stop_timeout)) {
    return Status::OK();
  }
  Status s = Kill(index);
  if (!s.ok()) return s;
  return Status::Timeout("node " + std::to_string(index) + " did not stop within " +
                         std::to_string(options_.stop_timeout.count()) +
                         " ms of SIGTERM; killed it");
}

Status ProcessCluster::Pause(int index) {
  if (!Ours(index)) return Status::Unavailable("node " + std::to_string(index) + " is down");
  ::kill(nodes_[index].pid, SIGSTOP);
  // kill() only queues the signal: wait until the process is really stopped.
  if (!WaitUntil([&] { return State(index) != ProcessState::kRunning; },
                 Clock::now() + std::chrono::seconds(5))) {
    return Status::Timeout("node " + std::to_string(index) + " did not stop on SIGSTOP");
  }
  return Status::OK();
}

Status ProcessCluster::Resume(int index) {
  if (!Ours(index)) return Status::Unavailable("node " + std::to_string(index) + " is down");
  ::kill(nodes_[index].pid, SIGCONT);
  return Status::OK();
}

Status ProcessCluster::Down() {
  std::vector<Status> results(nodes_.size());
  std::vector<std::thread> stoppers;
  for (int i = 0; i < size(); ++i) {
    stoppers.emplace_back([this, i, &results] { results[i] = Stop(i); });
  }
  for (auto& t : stoppers) t.join();
  // A node that survived its stop stays recorded, so a later `down` still finds it.
  for (int i = 0; i < size(); ++i) {
    if (!Ours(i)) nodes_[i].pid = 0, nodes_[i].start_ticks = 0;
  }
  Status s = Save();
  for (const auto& r : results) {
    if (!r.ok()) return r;
  }
  return s;
}

Status ProcessCluster::WaitForMembership(std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  client::ClientOptions options;
  options.request_timeout = std::chrono::seconds(2);
  options.tls = client_tls();
  std::string missing;
  while (true) {
    int running = 0;
    missing.clear();
    for (int i = 0; i < size(); ++i) running += State(i) != ProcessState::kDown;
    for (int i = 0; i < size() && missing.empty(); ++i) {
      if (State(i) == ProcessState::kDown) continue;
      auto members = client::connect(client_address(i), options).members();
      int alive = 0;
      if (members.ok()) {
        for (const auto& m : *members) alive += m.alive;
      }
      if (alive < running) {
        missing = "node " + std::to_string(i) + " sees " + std::to_string(alive) + " of " +
                  std::to_string(running) + " running nodes alive" +
                  (members.ok() ? "" : " (" + members.status().ToString() + ")");
      }
    }
    if (missing.empty()) return Status::OK();
    if (Clock::now() > deadline) {
      return Status::Timeout("membership did not settle within " + std::to_string(timeout.count()) +
                             " ms: " + missing);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace kvmesh::cluster
