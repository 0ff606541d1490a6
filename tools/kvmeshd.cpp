// kvmeshd: a kvmesh node serving clients over the network.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <csignal>
#include <iostream>
#include <tuple>

#include "config/size.hpp"
#include "http/server.hpp"
#include "kvmesh/node.hpp"
#include "security/certificates.hpp"
#include "tools/kvmeshd_settings.hpp"
#include "tools/version.hpp"

int main(int argc, char** argv) {
  kvmesh::DaemonConfig config = kvmesh::DefaultDaemonConfig();
  std::string config_file;
  CLI::App app{"kvmeshd: a kvmesh node. Serves the databases declared in --config-dir."};
  app.set_version_flag("--version", kvmesh::tools::VersionLine("kvmeshd"));
  app.add_option("--config", config_file, "node settings in YAML (flags override it)");
  auto* name = app.add_option("--name", config.name, "node name (for logs)");
  auto* data_dir = app.add_option("--data-dir", config.node.data_dir, "storage directory");
  auto* config_dir =
      app.add_option("--config-dir", config.node.config_dir, "directory of database YAML configs");
  auto* listen = app.add_option("--listen", config.node.listen_host, "address to listen on");
  int port = config.node.listen_port;
  auto* port_opt =
      app.add_option("--port", port, "TCP port; 0 picks a free one")->check(CLI::Range(0, 65535));
  auto* log_level = app.add_option("--log-level", config.log_level,
                                   "trace, debug, info, warn, error, critical or off");
  app.add_option("--scheduler", config.node.scheduler_policy,
                 "CAF scheduler: sharing (lowest latency) or stealing")
      ->check(CLI::IsMember({"sharing", "stealing"}))
      ->capture_default_str();
  app.add_option("--worker-threads", config.node.worker_threads,
                 "actor worker threads; 0: one per core, at least 2")
      ->check(CLI::Range(0, kvmesh::kMaxWorkerThreads))
      ->capture_default_str();
  app.add_option("--network-workers", config.node.network_workers,
                 "threads decoding the cluster port's messages; 0: the network thread itself; "
                 "-1: CAF's default")
      ->check(CLI::Range(-1, 64))
      ->capture_default_str();
  int cluster_port = config.node.cluster_port;
  auto* cluster_port_opt =
      app.add_option("--cluster-port", cluster_port,
                     "port for other nodes; -1 runs a single node, 0 picks a free one")
          ->check(CLI::Range(-1, 65535));
  auto* http_port_opt =
      app.add_option("--http-port", config.http_port,
                     "port of the HTTP API (README \"HTTP API\"); -1: none, 0 picks a free one")
          ->check(CLI::Range(-1, 65535));
  auto* http_listen =
      app.add_option("--http-listen", config.http_host, "address the HTTP API listens on");
  auto* cluster_listen = app.add_option("--cluster-listen", config.node.cluster_host,
                                        "address the cluster port listens on");
  auto* cluster_advertise = app.add_option(
      "--cluster-advertise", config.node.cluster_advertise,
      "host:port other nodes reach the cluster port at, if not its own (a proxy or NAT)");
  std::string seeds;
  auto* seeds_opt = app.add_option(
      "--seeds", seeds, "comma-separated cluster addresses (host:port) of nodes to join through");
  long long failure_ms = config.node.failure_timeout.count();
  auto* failure_opt = app.add_option("--failure-timeout-ms", failure_ms,
                                     "a suspected member (its probes unanswered) that does not "
                                     "refute is down after this long")
                          ->check(CLI::Range(100LL, 3600LL * 1000));
  long long grace_s =
      std::chrono::duration_cast<std::chrono::seconds>(config.node.replica_grace).count();
  auto* grace_opt = app.add_option("--replica-grace-s", grace_s,
                                   "a member down this long has its replicas moved elsewhere")
                        ->check(CLI::Range(1LL, 365LL * 24 * 3600));
  long long tombstone_grace_s =
      std::chrono::duration_cast<std::chrono::seconds>(config.node.tombstone_grace).count();
  auto* tombstone_grace_opt =
      app.add_option("--tombstone-grace-s", tombstone_grace_s,
                     "deletes are remembered this long; a node away longer must be wiped")
          ->check(CLI::Range(0LL, 365LL * 24 * 3600));
  std::string sync = kvmesh::SyncModeName(config.node.sync);
  auto* sync_opt =
      app.add_option(
             "--sync", sync,
             "when writes reach the disk: none (a power loss can take ~30 s of acknowledged "
             "writes), periodic (at most the last --sync-period-ms), always (none lost)")
          ->check(CLI::IsMember({"none", "periodic", "always"}));
  long long sync_period_ms = config.node.sync_period.count();
  auto* sync_period_opt =
      app.add_option("--sync-period-ms", sync_period_ms, "period of the syncs of --sync periodic")
          ->check(CLI::Range(1LL, 60000LL));
  long long busy_poll_us = config.node.busy_poll.count();
  auto* busy_poll_opt =
      app.add_option("--busy-poll-us", busy_poll_us,
                     "the client port polls this long before it sleeps while requests come that "
                     "soon (lower latency one request at a time); 0: sleeps at once")
          ->check(CLI::Range(0LL, static_cast<long long>(kvmesh::kMaxBusyPoll.count())));
  auto* max_connections_opt =
      app.add_option("--max-connections", config.node.max_connections,
                     "most connections each port keeps open; more are closed at once")
          ->check(CLI::Range(size_t{1}, size_t{10'000'000}));
  auto* max_per_address_opt =
      app.add_option("--max-connections-per-address", config.node.max_connections_per_address,
                     "most connections each port keeps open from one address (loopback is one)")
          ->check(CLI::Range(size_t{1}, size_t{10'000'000}));
  bool accept_stale_data = false;
  app.add_flag("--accept-stale-data", accept_stale_data,
               "start even if the data dir was unused for longer than the tombstone grace");
  std::string low_space, space_reserve;
  auto* low_space_opt =
      app.add_option("--low-space", low_space,
                     "low on disk space below this free (e.g. 256MiB): puts refused, deletes work");
  int low_space_percent = static_cast<int>(config.node.low_space_percent);
  auto* low_space_percent_opt =
      app.add_option("--low-space-percent", low_space_percent,
                     "... or below this percentage of the file system, if that is more")
          ->check(CLI::Range(0, 50));
  auto* space_reserve_opt = app.add_option(
      "--space-reserve", space_reserve,
      "reserve file given up when the disk fills anyway, so deletes still work; 0: none");
  auto* tls_ca = app.add_option("--tls-ca", config.node.tls.ca_file,
                                "PEM file of the cluster CA; with --tls-cert and --tls-key "
                                "turns on mutual TLS on both ports");
  auto* tls_cert = app.add_option("--tls-cert", config.node.tls.cert_file,
                                  "PEM file of this node's certificate (kvmesh cert node)");
  auto* tls_key =
      app.add_option("--tls-key", config.node.tls.key_file, "PEM file of this node's key");
  bool insecure_plaintext = false;
  app.add_flag("--insecure-plaintext", insecure_plaintext,
               "allow listening beyond loopback without TLS: anyone who reaches a port can read "
               "and change every database");
  auto* acl = app.add_option("--acl", config.node.acl_file,
                             "YAML file of client rights (needs TLS); re-read with the configs");
  for (auto* opt :
       {tombstone_grace_opt, name, data_dir, config_dir, listen, port_opt, log_level,
        cluster_port_opt, cluster_listen, http_port_opt, http_listen, failure_opt, grace_opt,
        sync_opt, sync_period_opt, busy_poll_opt, max_connections_opt, max_per_address_opt}) {
    opt->capture_default_str();
  }
  CLI11_PARSE(app, argc, argv);

  if (!config_file.empty()) {
    // The file is read first; flags given on the command line win.
    kvmesh::DaemonConfig from_file = kvmesh::DefaultDaemonConfig();
    kvmesh::Status s = kvmesh::LoadDaemonConfig(config_file, &from_file);
    if (!s.ok()) {
      std::cerr << "kvmeshd: " << s << "\n";
      return 2;
    }
    if (name->count() == 0) config.name = from_file.name;
    if (data_dir->count() == 0) config.node.data_dir = from_file.node.data_dir;
    if (config_dir->count() == 0) config.node.config_dir = from_file.node.config_dir;
    if (listen->count() == 0) config.node.listen_host = from_file.node.listen_host;
    if (port_opt->count() == 0) port = from_file.node.listen_port;
    if (log_level->count() == 0) config.log_level = from_file.log_level;
    if (cluster_port_opt->count() == 0) cluster_port = from_file.node.cluster_port;
    if (cluster_listen->count() == 0) config.node.cluster_host = from_file.node.cluster_host;
    if (http_port_opt->count() == 0) config.http_port = from_file.http_port;
    if (http_listen->count() == 0) config.http_host = from_file.http_host;
    if (cluster_advertise->count() == 0) {
      config.node.cluster_advertise = from_file.node.cluster_advertise;
    }
    if (seeds_opt->count() == 0) config.node.seeds = from_file.node.seeds;
    if (failure_opt->count() == 0) failure_ms = from_file.node.failure_timeout.count();
    if (grace_opt->count() == 0) {
      grace_s =
          std::chrono::duration_cast<std::chrono::seconds>(from_file.node.replica_grace).count();
    }
    if (tombstone_grace_opt->count() == 0) {
      tombstone_grace_s =
          std::chrono::duration_cast<std::chrono::seconds>(from_file.node.tombstone_grace).count();
    }
    if (max_connections_opt->count() == 0) {
      config.node.max_connections = from_file.node.max_connections;
    }
    if (max_per_address_opt->count() == 0) {
      config.node.max_connections_per_address = from_file.node.max_connections_per_address;
    }
    if (tls_ca->count() == 0) config.node.tls.ca_file = from_file.node.tls.ca_file;
    if (tls_cert->count() == 0) config.node.tls.cert_file = from_file.node.tls.cert_file;
    if (tls_key->count() == 0) config.node.tls.key_file = from_file.node.tls.key_file;
    if (acl->count() == 0) config.node.acl_file = from_file.node.acl_file;
    config.node.insecure_plaintext = from_file.node.insecure_plaintext;
    config.node.idle_timeout = from_file.node.idle_timeout;
    config.node.rebalance_wave = from_file.node.rebalance_wave;
    config.node.accept_stale_data = from_file.node.accept_stale_data;
    if (sync_opt->count() == 0) sync = kvmesh::SyncModeName(from_file.node.sync);
    if (sync_period_opt->count() == 0) sync_period_ms = from_file.node.sync_period.count();
    if (busy_poll_opt->count() == 0) busy_poll_us = from_file.node.busy_poll.count();
    config.node.low_space_bytes = from_file.node.low_space_bytes;
    config.node.space_reserve_bytes = from_file.node.space_reserve_bytes;
    if (low_space_percent_opt->count() == 0) {
      low_space_percent = static_cast<int>(from_file.node.low_space_percent);
    }
  }
  config.node.low_space_percent = low_space_percent;
  // Sizes given as flags win over the file.
  for (auto [opt, text, out] :
       {std::make_tuple(low_space_opt, &low_space, &config.node.low_space_bytes),
        std::make_tuple(space_reserve_opt, &space_reserve, &config.node.space_reserve_bytes)}) {
    if (opt->count() == 0) continue;
    kvmesh::Status s = kvmesh::config::ParseSize(*text, out);
    if (!s.ok()) {
      std::cerr << "kvmeshd: " << opt->get_name() << ": " << s.message() << "\n";
      return 2;
    }
  }
  // With TLS the node's name is its certificate's: peers know it by that name (membership binds
  // it), so a --name that says otherwise would only mislead whoever reads the logs.
  if (config.node.tls.enabled() && !config.node.tls.cert_file.empty()) {
    auto info = kvmesh::security::ReadCertificateInfo(config.node.tls.cert_file);
    if (info.ok()) {
      if (name->count() > 0 && config.name != info->common_name) {
        std::cerr << "kvmeshd: --name " << config.name << " but the certificate "
                  << config.node.tls.cert_file << " names the node \"" << info->common_name
                  << "\"; give the same name (or leave --name out)\n";
        return 2;
      }
      config.name = info->common_name;
    }  // an unreadable certificate is reported by Node::Start
  }
  kvmesh::ParseSyncMode(sync, &config.node.sync);  // CLI11 checked it
  config.node.sync_period = std::chrono::milliseconds(sync_period_ms);
  config.node.busy_poll = std::chrono::microseconds(busy_poll_us);
  config.node.listen_port = port;
  config.node.cluster_port = cluster_port;
  config.node.failure_timeout = std::chrono::milliseconds(failure_ms);
  config.node.replica_grace = std::chrono::seconds(grace_s);
  config.node.tombstone_grace = std::chrono::seconds(tombstone_grace_s);
  config.node.accept_stale_data = config.node.accept_stale_data || accept_stale_data;
  config.node.insecure_plaintext = config.node.insecure_plaintext || insecure_plaintext;
  if (seeds_opt->count() > 0) {
    config.node.seeds.clear();
    size_t start = 0;
    while (start <= seeds.size()) {
      size_t comma = seeds.find(',', start);
      if (comma == std::string::npos) comma = seeds.size();
      if (comma > start) config.node.seeds.push_back(seeds.substr(start, comma - start));
      start = comma + 1;
    }
  }
  auto level = spdlog::level::from_str(config.log_level);
  if (level == spdlog::level::off && config.log_level != "off") {
    std::cerr << "kvmeshd: unknown log level \"" << config.log_level << "\"\n";
    return 2;
  }
  // Logs go to stderr; stdout carries only the ready line and the stop line. A closed pipe on
  // either must not kill the node before it has closed its store.
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_default_logger(spdlog::stderr_color_mt("kvmeshd"));
  spdlog::set_level(level);

  // Signals are taken synchronously by this thread: block them before any other thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  // SIGUSR1 wakes this thread when the node fails (NodeOptions::on_fatal, on a node thread).
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  config.node.on_fatal = [](const kvmesh::Status&) { ::kill(::getpid(), SIGUSR1); };

  std::unique_ptr<kvmesh::Node> node;
  kvmesh::Status s = kvmesh::Node::Start(config.node, &node);
  if (!s.ok()) {
    std::cerr << "kvmeshd: cannot start: " << s << "\n";
    return 1;
  }
  std::unique_ptr<kvmesh::http::HttpServer> http;
  if (config.http_port >= 0) {
    kvmesh::http::HttpOptions http_options;
    http_options.host = config.http_host;
    http_options.port = config.http_port;
    http_options.tls = config.node.tls;
    http_options.insecure_plaintext = config.node.insecure_plaintext;
    http_options.max_value_bytes = config.node.max_value_bytes;
    s = kvmesh::http::HttpServer::Start(*node, http_options, &http);
    if (!s.ok()) {
      std::cerr << "kvmeshd: cannot start the HTTP API: " << s << "\n";
      return 1;
    }
  }
  const auto configs = node->configs();
  size_t from_files = 0, from_api = 0;
  if (configs.ok()) {
    for (const auto& c : *configs) ++(c.origin == "api" ? from_api : from_files);
  }
  std::cout << "kvmeshd " << config.name << " (node " << std::hex << node->node_id() << std::dec
            << ") listening on " << config.node.listen_host << ":" << node->port() << " with "
            << from_files << " database configs from " << config.node.config_dir << " and "
            << from_api << " cluster-wide; data in " << config.node.data_dir << " (sync "
            << kvmesh::DescribeSync(config.node.sync, config.node.sync_period) << ")";
  if (config.node.tls.enabled()) {
    std::cout << "; mutual TLS with CA " << config.node.tls.ca_file
              << (config.node.acl_file.empty() ? "" : ", ACL " + config.node.acl_file);
  }
  if (node->cluster_port() != 0) {
    std::cout << "; cluster port " << config.node.cluster_host << ":" << node->cluster_port();
    if (!config.node.cluster_advertise.empty()) {
      std::cout << " (advertised as " << config.node.cluster_advertise << ")";
    }
  }
  if (http) {
    std::cout << "; HTTP API " << (http->tls() ? "https://" : "http://") << config.http_host << ":"
              << http->port();
  }
  std::cout << std::endl;

  while (true) {
    int signal = 0;
    if (sigwait(&signals, &signal) != 0) continue;
    if (signal == SIGUSR1) {
      const kvmesh::Status health = node->health();
      if (health.ok()) continue;  // not from the node
      spdlog::critical("exiting: {}", health.message());
      http.reset();  // it serves through the node
      node.reset();
      std::cout << "kvmeshd " << config.name << " failed: " << health.message() << std::endl;
      return 70;  // EX_SOFTWARE
    }
    if (signal == SIGHUP) {
      spdlog::info("SIGHUP: reloading database configs and the ACL");
      // Logs what it loaded, or why it kept the old configs and ACL.
      (void)node->reload_configs();
      continue;
    }
    spdlog::info("{}: shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  http.reset();  // it serves through the node: stop it first
  node.reset();  // fails in-flight requests, closes RocksDB
  std::cout << "kvmeshd " << config.name << " stopped" << std::endl;
  return 0;
}
