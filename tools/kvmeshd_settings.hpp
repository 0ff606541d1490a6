// kvmeshd's own settings: an optional YAML file, overridden by command-line flags.
//
//   name: node-a              # default: the host name
//   data_dir: /var/lib/kvmesh # default: ./kvmesh-data
//   config_dir: /etc/kvmesh/databases   # default: ./databases
//   listen: 127.0.0.1         # default 127.0.0.1 (loopback): expose a node deliberately
//   port: 7370                # default kDefaultPort; 0 picks a free port
//   log_level: info           # trace, debug, info, warn, error, critical, off
//   idle_timeout: 600         # seconds before an unused database is passivated
//   sync: periodic            # none, periodic or always (README "Durability"); true and false,
//                             # from older versions, mean always and none
//   sync_period_ms: 100       # period of the syncs of `sync: periodic`, 1 to 60000
//   busy_poll_us: 200         # the client port polls this long before it sleeps (0: never)
//   low_space: 256MiB         # low on disk space below this free (puts refused, deletes work)
//   low_space_percent: 1      # ... or below this percentage of the file system, if more
//   space_reserve: 192MiB     # reserve file given up when the disk fills anyway; 0: none
//   http_port: 7375           # HTTP API (README "HTTP API"); default -1: off; 0 picks a port
//   http_listen: 127.0.0.1    # address of the HTTP API; default 127.0.0.1
#pragma once

#include <string>

#include "kvmesh/node.hpp"
#include "kvmesh/status.hpp"

namespace kvmesh {

struct DaemonConfig {
  std::string name;
  std::string log_level = "info";
  NodeOptions node;
  /// The HTTP API (http/server.hpp): port, -1 (default) for none, 0 for a free one.
  int http_port = -1;
  /// Address of the HTTP API. Loopback by default, like the other ports.
  std::string http_host = "127.0.0.1";
};

/// Defaults for kvmeshd: data in ./kvmesh-data, configs in ./databases, 127.0.0.1:kDefaultPort.
DaemonConfig DefaultDaemonConfig();

/// Reads the YAML file at `path` over `*config`. Errors (Code::kInvalidConfig) name the file,
/// line and field; unknown fields are errors too, since a misspelt setting must not go unnoticed.
Status LoadDaemonConfig(const std::string& path, DaemonConfig* config);

}  // namespace kvmesh
