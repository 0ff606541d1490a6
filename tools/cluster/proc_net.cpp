#include "tools/cluster/proc_net.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace kvmesh::cluster {
namespace {

/// The inode of the first /proc/net/tcp line whose local address is one of `locals` and, unless
/// `remote` is empty, whose remote address is `remote`; `listening` asks for state LISTEN (0A).
uint64_t FindInode(const std::string& local_a, const std::string& local_b,
                   const std::string& remote, bool listening) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, peer, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> peer >> state >> queues >> timer >> retransmits >> uid >> timeout >>
        inode;
    if (local != local_a && local != local_b) continue;
    if (listening ? state != "0A" : peer != remote) continue;
    return std::stoull(inode);
  }
  return 0;
}

std::string Loopback(int port) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0100007F:%04X", port);
  return buf;
}

}  // namespace

uint64_t ConnectedSocketInode(int port, int peer_port) {
  return FindInode(Loopback(port), Loopback(port), Loopback(peer_port), false);
}

uint64_t ListeningSocketInode(int port) {
  char any[32];
  std::snprintf(any, sizeof(any), "00000000:%04X", port);
  return FindInode(Loopback(port), any, "", true);
}

bool ProcessHoldsSocket(pid_t pid, uint64_t inode) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  const std::string wanted = "socket:[" + std::to_string(inode) + "]";
  bool found = false;
  char target[128];
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof(target) - 1);
    if (n > 0 && wanted.compare(0, std::string::npos, target, n) == 0) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace kvmesh::cluster
