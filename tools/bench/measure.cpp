#include "tools/bench/measure.hpp"

#include "tools/cluster/proc_net.hpp"

#include <dirent.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>

namespace kvmesh::bench {

// -- LatencyHistogram ---------------------------------------------------------------------------

size_t LatencyHistogram::BucketOf(uint64_t nanos) {
  if (nanos < (1u << kSubBits)) return nanos;
  const size_t msb = 63 - __builtin_clzll(nanos);
  const size_t sub = (nanos >> (msb - kSubBits)) & ((1u << kSubBits) - 1);
  return ((msb - kSubBits + 1) << kSubBits) + sub;
}

uint64_t LatencyHistogram::BucketFloor(size_t bucket) {
  if (bucket < (1u << kSubBits)) return bucket;
  const size_t msb = (bucket >> kSubBits) + kSubBits - 1;
  const uint64_t sub = bucket & ((1u << kSubBits) - 1);
  return (uint64_t{1} << msb) | (sub << (msb - kSubBits));
}

void LatencyHistogram::Record(uint64_t nanos) {
  counts_[BucketOf(nanos)].fetch_add(1, std::memory_order_relaxed);
}

uint64_t LatencyHistogram::count() const {
  uint64_t total = 0;
  for (const auto& c : counts_) total += c.load(std::memory_order_relaxed);
  return total;
}

double LatencyHistogram::QuantileMicros(double q) const {
  const uint64_t total = count();
  if (total == 0) return 0;
  // The rank of the quantile sample (1-based), as in "the smallest value with at least q of the
  // samples at or below it".
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * total)));
  uint64_t seen = 0;
  for (size_t b = 0; b < kBuckets; ++b) {
    seen += counts_[b].load(std::memory_order_relaxed);
    if (seen >= rank) {
      // The middle of the bucket.
      const uint64_t lo = BucketFloor(b);
      const uint64_t hi = b + 1 < kBuckets ? BucketFloor(b + 1) : lo;
      return (lo + (hi - lo) / 2.0) / 1000.0;
    }
  }
  return 0;
}

// -- KeyChooser ---------------------------------------------------------------------------------

double Zeta(uint64_t n, double theta) {
  // Cached: every connection's chooser needs the same sum, and for 10M keys it takes a while.
  static std::mutex mutex;
  static std::map<std::pair<uint64_t, double>, double> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({n, theta});
  if (it != cache.end()) return it->second;
  double sum = 0;
  for (uint64_t i = 1; i <= n; ++i) sum += 1.0 / std::pow(static_cast<double>(i), theta);
  cache[{n, theta}] = sum;
  return sum;
}

KeyChooser::KeyChooser(std::string distribution, uint64_t n, uint64_t seed, double theta)
    : zipfian_(distribution == "zipfian"),
      sequential_(distribution == "sequential"),
      n_(std::max<uint64_t>(1, n)),
      theta_(theta),
      alpha_(0),
      zetan_(0),
      eta_(0),
      multiplier_(0x9E3779B97F4A7C15ull % n_),
      random_(seed) {
  if (multiplier_ == 0) multiplier_ = 1;
  next_ = random_() % n_;
  while (std::gcd(multiplier_, n_) != 1) ++multiplier_;
  if (zipfian_) {
    alpha_ = 1.0 / (1.0 - theta_);
    zetan_ = Zeta(n_, theta_);
    const double zeta2 = Zeta(2, theta_);
    eta_ = (1 - std::pow(2.0 / n_, 1 - theta_)) / (1 - zeta2 / zetan_);
  }
}

uint64_t KeyChooser::Next() {
  if (sequential_) {
    const uint64_t index = next_;
    next_ = next_ + 1 == n_ ? 0 : next_ + 1;
    return index;
  }
  if (!zipfian_) return std::uniform_int_distribution<uint64_t>(0, n_ - 1)(random_);
  const double u = unit_(random_);
  const double uz = u * zetan_;
  uint64_t rank;
  if (uz < 1.0) {
    rank = 0;
  } else if (uz < 1.0 + std::pow(0.5, theta_)) {
    rank = 1;
  } else {
    rank = static_cast<uint64_t>(n_ * std::pow(eta_ * u - eta_ + 1, alpha_));
  }
  rank = std::min(rank, n_ - 1);
  // Scramble the rank with a bijection of [0, n): multiplying by a number coprime to n.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(rank) * multiplier_ + 12345) % n_);
}

// -- Keys ---------------------------------------------------------------------------------------

namespace {

/// Appends `n` in decimal, zero-padded to at least `width` digits (printf's "%0*llu"), without
/// printf: snprintf made a 1000-key batch's keys in 150 us, 28% of the benchmark's CPU in the
/// remote batch row, on the path of every batch.
void AppendPadded(uint64_t n, int width, std::string* out) {
  char digits[20];
  int length = 0;
  do {
    digits[length++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  out->append(width > length ? width - length : 0, '0');
  while (length > 0) out->push_back(digits[--length]);
}

}  // namespace

std::string KeyOf(uint64_t index, uint64_t group_size) {
  std::string key = GroupPrefix(index / group_size);
  key.push_back('/');
  AppendPadded(index % group_size, 4, &key);
  return key;
}

std::string GroupPrefix(uint64_t group) {
  std::string prefix;
  prefix.reserve(24);
  prefix = "/k/";
  AppendPadded(group, 8, &prefix);
  return prefix;
}

// -- /proc --------------------------------------------------------------------------------------

namespace {

/// User plus system CPU seconds from a /proc .../stat file (10 ms ticks); false if unreadable.
bool StatCpuSeconds(const std::string& path, double* seconds) {
  std::ifstream stat(path);
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // The command name may contain spaces and parentheses: fields count from the last ')'.
  const size_t close = content.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(content.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  *seconds = static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
  return true;
}

}  // namespace

ProcessSample SampleProcess(pid_t pid) {
  ProcessSample sample;
  const std::string base = "/proc/" + std::to_string(pid);
  std::ifstream status(base + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      sample.rss_bytes = std::stoull(line.substr(6)) * 1024;
      sample.ok = true;
    }
  }
  if (!StatCpuSeconds(base + "/stat", &sample.cpu_seconds)) return ProcessSample{};
  // The same sum in nanoseconds from the process's CPU clock (stat counts 10 ms ticks, too
  // coarse for a short run's CPU per operation).
  clockid_t clock;
  timespec cpu{};
  if (::clock_getcpuclockid(pid, &clock) == 0 && ::clock_gettime(clock, &cpu) == 0) {
    sample.cpu_seconds = cpu.tv_sec + cpu.tv_nsec / 1e9;
  }
  return sample;
}

std::map<pid_t, ThreadSample> SampleThreads(pid_t pid) {
  std::map<pid_t, ThreadSample> out;
  const std::string base = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(base.c_str());
  if (dir == nullptr) return out;
  while (dirent* d = ::readdir(dir)) {
    if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
    const std::string task = base + "/" + d->d_name;
    ThreadSample t;
    std::ifstream comm(task + "/comm");
    if (!std::getline(comm, t.name)) continue;  // the thread ended meanwhile
    unsigned long long ns = 0;
    if (std::ifstream schedstat(task + "/schedstat"); schedstat >> ns) {
      t.cpu_seconds = ns / 1e9;
    } else if (!StatCpuSeconds(task + "/stat", &t.cpu_seconds)) {
      continue;
    }
    out.emplace(static_cast<pid_t>(std::stol(d->d_name)), std::move(t));
  }
  ::closedir(dir);
  return out;
}

std::vector<ThreadGroupCpu> ThreadCpuBetween(const std::map<pid_t, ThreadSample>& before,
                                             const std::map<pid_t, ThreadSample>& after,
                                             double seconds) {
  std::map<std::string, ThreadGroupCpu> groups;
  for (const auto& [tid, t] : after) {
    auto was = before.find(tid);
    // A thread started during the run counts from zero.
    const double used = t.cpu_seconds - (was == before.end() ? 0 : was->second.cpu_seconds);
    if (used <= 0 || seconds <= 0) continue;
    ThreadGroupCpu& g = groups[t.name];
    g.name = t.name;
    ++g.threads;
    g.cores += used / seconds;
    g.busiest = std::max(g.busiest, used / seconds);
  }
  std::vector<ThreadGroupCpu> out;
  for (auto& [name, g] : groups) out.push_back(std::move(g));
  std::sort(out.begin(), out.end(),
            [](const ThreadGroupCpu& a, const ThreadGroupCpu& b) { return a.cores > b.cores; });
  return out;
}

pid_t PidListeningOn(int port) {
  const uint64_t inode = cluster::ListeningSocketInode(port);
  if (inode == 0) return 0;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  pid_t found = 0;
  while (dirent* p = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atol(p->d_name));
    if (pid > 0 && cluster::ProcessHoldsSocket(pid, inode)) {
      found = pid;
      break;
    }
  }
  ::closedir(proc);
  return found;
}

std::string MachineDescription() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  uint64_t mem_kib = 0;
  std::ifstream meminfo("/proc/meminfo");
  while (std::getline(meminfo, line)) {
    if (line.rfind("MemTotal:", 0) == 0) mem_kib = std::stoull(line.substr(9));
  }
  utsname uts{};
  ::uname(&uts);
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%s, %u cores, %.0f GiB, Linux %s", model.c_str(),
                std::thread::hardware_concurrency(), mem_kib / 1048576.0, uts.release);
  return buf;
}

std::vector<std::string> EchoServerArgs(const std::string& scheduler, size_t worker_threads,
                                        int busy_poll_us) {
  return {scheduler, std::to_string(worker_threads), std::to_string(busy_poll_us)};
}

namespace {

/// `text` as a whole number from `low` to `high`, or nullopt.
std::optional<long> WholeNumber(const std::string& text, long low, long high) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || n < low || n > high) return std::nullopt;
  return n;
}

}  // namespace

std::optional<NodeOptions> EchoServerNode(const std::string& scheduler,
                                          const std::string& worker_threads,
                                          const std::string& busy_poll_us) {
  const auto workers = WholeNumber(worker_threads, 0, kMaxWorkerThreads);
  const auto poll = WholeNumber(busy_poll_us, -1, static_cast<long>(kMaxBusyPoll.count()));
  if (!workers || !poll) return std::nullopt;
  NodeOptions node;
  node.scheduler_policy = scheduler;
  node.worker_threads = static_cast<size_t>(*workers);
  if (*poll >= 0) node.busy_poll = std::chrono::microseconds(*poll);
  return node;
}

}  // namespace kvmesh::bench
