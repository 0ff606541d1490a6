// Which process holds a TCP socket on 127.0.0.1, from /proc: the socket's inode in /proc/net/tcp,
// then the processes' open files (/proc/PID/fd). Needs permission to read the processes' fd
// directories (the same user, or root).
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace kvmesh::cluster {

/// Inode of the connected socket with local port `port` and remote port `peer_port` on
/// 127.0.0.1, or 0 if there is none.
uint64_t ConnectedSocketInode(int port, int peer_port);
/// Inode of the socket listening on 127.0.0.1:port or 0.0.0.0:port, or 0 if there is none.
uint64_t ListeningSocketInode(int port);
/// True if process `pid` has the socket with this inode open.
bool ProcessHoldsSocket(pid_t pid, uint64_t inode);

}  // namespace kvmesh::cluster
