#include "tools/cluster/fault_proxy.hpp"

#include "tools/cluster/proc_net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>

namespace kvmesh::cluster {
namespace {

int Listen(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  // Loopback: connect completes or is refused at once (a paused node's kernel still accepts),
  // unless the node's backlog is full: then it gives up after 300 ms rather than hold up every
  // other link of this thread.
  timeval timeout{0, 300 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

constexpr size_t kBufferLimit = 1 << 20;

}  // namespace

pid_t FindSocketOwner(int port, int peer_port, const std::vector<pid_t>& candidates) {
  uint64_t inode = ConnectedSocketInode(port, peer_port);
  if (inode == 0) return 0;
  for (pid_t pid : candidates) {
    if (pid > 0 && ProcessHoldsSocket(pid, inode)) return pid;
  }
  return 0;
}

struct FaultNetwork::Impl {
  struct Link {
    int from_node = -1;          // opener, -1 if unknown
    int from_port = 0;           // the opener's local port (to look it up again)
    int to_node = 0;             // the node behind the proxy
    int down = -1;               // accepted socket (the opener's side)
    int up = -1;                 // socket to the node's real port
    std::string to_up, to_down;  // bytes read and not yet written
    bool closed = false;
  };
  std::function<std::vector<pid_t>()> pids;
  std::vector<int> listeners, proxy_ports, targets;
  mutable std::mutex mutex;  // guards groups, mode, targets, stats
  std::vector<int> groups;   // empty: healed
  PartitionMode mode = PartitionMode::kCut;
  FaultNetworkStats stats;
  /// Partition/Heal calls made and applied by the proxy thread: the calls wait for theirs.
  uint64_t requested = 0, applied = 0;
  std::condition_variable applied_cv;
  std::list<Link> links;  // proxy thread only
  std::atomic<bool> stop{false};
  std::thread thread;

  /// Which node (index into `node_pids`) holds the socket 127.0.0.1:from_port connected to
  /// node `to_node`'s proxy; -1 if none.
  int Identify(int from_port, int to_node, const std::vector<pid_t>& node_pids) const {
    pid_t owner = FindSocketOwner(from_port, proxy_ports[to_node], node_pids);
    for (size_t i = 0; i < node_pids.size(); ++i) {
      if (owner != 0 && node_pids[i] == owner) return static_cast<int>(i);
    }
    return -1;
  }

  bool Crossing(const Link& l) const {
    if (groups.empty() || l.from_node < 0) return false;
    return groups[l.from_node] != groups[l.to_node];
  }

  void Accept(int index) {
    while (true) {
      sockaddr_in peer{};
      socklen_t len = sizeof(peer);
      int fd = ::accept4(listeners[index], reinterpret_cast<sockaddr*>(&peer), &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      Link l;
      l.to_node = index;
      l.down = fd;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      l.from_port = ntohs(peer.sin_port);
      l.from_node = Identify(l.from_port, index, pids());
      int target = 0;
      bool refuse = false;
      {
        std::lock_guard<std::mutex> lock(mutex);
        ++stats.connections;
        if (l.from_node < 0) ++stats.unidentified;
        target = targets[index];
        refuse = Crossing(l) && mode == PartitionMode::kCut;
        if (refuse) ++stats.cut;
      }
      if (refuse || target == 0 || (l.up = Connect(target)) < 0) {
        ::close(fd);
        continue;
      }
      links.push_back(std::move(l));
    }
  }

  /// Moves bytes from `from` into `buffer` and from `buffer` to `to`; false on EOF or error.
  bool Pump(int from, std::string& buffer, int to, short from_events) {
    // A hung-up side whose bytes cannot be taken (the buffer is full) ends the link; polling
    // it again would only spin.
    if ((from_events & (POLLHUP | POLLERR)) && buffer.size() >= kBufferLimit) return false;
    if ((from_events & (POLLIN | POLLHUP | POLLERR)) && buffer.size() < kBufferLimit) {
      char chunk[65536];
      ssize_t n = ::read(from, chunk, sizeof(chunk));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
      if (n > 0) buffer.append(chunk, static_cast<size_t>(n));
    }
    if (!buffer.empty()) {  // non-blocking: sends what fits
      ssize_t n = ::send(to, buffer.data(), buffer.size(), MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (n > 0) {
        buffer.erase(0, static_cast<size_t>(n));
        std::lock_guard<std::mutex> lock(mutex);
        stats.bytes += static_cast<uint64_t>(n);
      }
    }
    return true;
  }

  void Loop() {
    std::vector<pollfd> fds;
    std::vector<Link*> order;
    while (!stop) {
      // Apply the current partition to existing links. A new partition first looks up the
      // openers not identified on accept once more.
      bool changed = false;
      {
        std::lock_guard<std::mutex> lock(mutex);
        changed = applied != requested;
      }
      std::vector<pid_t> node_pids;
      if (changed) node_pids = pids();
      uint64_t still_unknown = 0;
      for (auto& l : links) {
        if (changed && l.from_node < 0) l.from_node = Identify(l.from_port, l.to_node, node_pids);
        // A link whose opener's socket is gone (the opener closed it or was killed since the
        // accept; its EOF is on the way) carries nothing from any node: it cannot escape the
        // partition, so it does not make the run prove less.
        if (changed && l.from_node < 0 && !l.closed &&
            ConnectedSocketInode(l.from_port, proxy_ports[l.to_node]) != 0) {
          ++still_unknown;
        }
      }
      {
        std::lock_guard<std::mutex> lock(mutex);
        stats.unidentified_at_partition += still_unknown;
        for (auto& l : links) {
          if (Crossing(l) && mode == PartitionMode::kCut && !l.closed) {
            l.closed = true;
            ++stats.cut;
          }
        }
        // Links are failed (below) or left out of the poll set from here on.
        applied = requested;
      }
      applied_cv.notify_all();
      for (auto it = links.begin(); it != links.end();) {
        if (it->closed) {
          ::close(it->down);
          ::close(it->up);
          it = links.erase(it);
        } else {
          ++it;
        }
      }
      fds.clear();
      order.clear();
      for (size_t i = 0; i < listeners.size(); ++i) fds.push_back({listeners[i], POLLIN, 0});
      {
        std::lock_guard<std::mutex> lock(mutex);
        for (auto& l : links) {
          if (Crossing(l)) continue;  // stalled: nothing moves
          short down_events = 0, up_events = 0;
          if (l.to_up.size() < kBufferLimit) down_events |= POLLIN;
          if (l.to_down.size() < kBufferLimit) up_events |= POLLIN;
          if (!l.to_down.empty()) down_events |= POLLOUT;
          if (!l.to_up.empty()) up_events |= POLLOUT;
          fds.push_back({l.down, down_events, 0});
          fds.push_back({l.up, up_events, 0});
          order.push_back(&l);
        }
      }
      // A bounded wait, so partition changes and stop take effect within 20 ms.
      if (::poll(fds.data(), fds.size(), 20) < 0 && errno != EINTR) break;
      for (size_t i = 0; i < listeners.size(); ++i) {
        if (fds[i].revents & POLLIN) Accept(static_cast<int>(i));
      }
      for (size_t k = 0; k < order.size(); ++k) {
        Link& l = *order[k];
        const pollfd& d = fds[listeners.size() + 2 * k];
        const pollfd& u = fds[listeners.size() + 2 * k + 1];
        if (!Pump(l.down, l.to_up, l.up, d.revents) || !Pump(l.up, l.to_down, l.down, u.revents)) {
          l.closed = true;
        }
      }
    }
    for (auto& l : links) {
      ::close(l.down);
      ::close(l.up);
    }
    links.clear();
  }
};

FaultNetwork::FaultNetwork(int nodes, std::function<std::vector<pid_t>()> pids)
    : impl_(std::make_unique<Impl>()) {
  impl_->pids = std::move(pids);
  impl_->targets.assign(nodes, 0);
  for (int i = 0; i < nodes; ++i) {
    int port = 0;
    int fd = Listen(&port);
    if (fd < 0 && status_.ok()) {
      status_ = Status::IOError(std::string("fault proxy cannot listen: ") + std::strerror(errno));
    }
    impl_->listeners.push_back(fd);
    impl_->proxy_ports.push_back(port);
  }
}

FaultNetwork::~FaultNetwork() {
  impl_->stop = true;
  if (impl_->thread.joinable()) impl_->thread.join();
  for (int fd : impl_->listeners) {
    if (fd >= 0) ::close(fd);
  }
}

std::string FaultNetwork::address(int index) const {
  return "127.0.0.1:" + std::to_string(impl_->proxy_ports[index]);
}

void FaultNetwork::SetTarget(int index, int port) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->targets[index] = port;
}

void FaultNetwork::Start() {
  if (!impl_->thread.joinable()) impl_->thread = std::thread([this] { impl_->Loop(); });
}

bool FaultNetwork::Partition(std::vector<int> group, PartitionMode mode) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  group.resize(impl_->targets.size(), 0);
  impl_->groups = std::move(group);
  impl_->mode = mode;
  return WaitApplied(lock);
}

bool FaultNetwork::Heal() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  impl_->groups.clear();
  return WaitApplied(lock);
}

bool FaultNetwork::WaitApplied(std::unique_lock<std::mutex>& lock) {
  const uint64_t mine = ++impl_->requested;
  if (!impl_->thread.joinable()) return true;  // not started: applied when it starts
  // The proxy thread loops every 20 ms at most; the bound only guards against a stuck thread.
  return impl_->applied_cv.wait_for(lock, std::chrono::seconds(5),
                                    [&] { return impl_->applied >= mine; });
}

FaultNetworkStats FaultNetwork::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->stats;
}

}  // namespace kvmesh::cluster
