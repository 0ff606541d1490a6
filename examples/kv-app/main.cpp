// kv-app: the reference system's example key-value service (its setValue/getValue functions on
// the database /example/kv), as a small C++ HTTP service on the kvmesh client library.
//
//   kv-app --node 127.0.0.1:7370 --port 8080 [--listen 127.0.0.1] [--tls-ca ... --tls-cert ...
//          --tls-key ...]
//   curl -X POST http://127.0.0.1:8080/api/kv -d '{"key":"message","value":"hello world"}'
//   curl 'http://127.0.0.1:8080/api/kv?key=message'
//
// POST /api/kv {"key": string, "value": string} stores value under key: 200 "Value stored
// successfully", 400 on bad JSON, 500 with the error text when the store fails. GET
// /api/kv?key=K answers the value's bytes: 400 without key, 404 when it is missing, 500 with the
// error text on any other failure (the reference answers 404 for every failure; kvmesh tells
// them apart). Requests run on cpp-httplib's threads; the client library's calls are
// thread-safe and block only that thread.
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "kvmesh/client.hpp"

namespace {

constexpr const char* kDatabase = "/example/kv";

/// The database handle, opened on first use and again after a failed open (node down at start).
class Store {
 public:
  explicit Store(kvmesh::client::Client client) : client_(std::move(client)) {}

  kvmesh::Database Get() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!db_.ok()) db_ = client_.open(kDatabase);
    return db_;
  }

 private:
  kvmesh::client::Client client_;
  std::mutex mutex_;
  kvmesh::Database db_;  // default: not ok
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kv-app: the reference key-value example service on a kvmesh node"};
  std::string node = "127.0.0.1:7370";
  std::string listen = "127.0.0.1";
  int port = 8080;
  kvmesh::client::ClientOptions options;
  app.add_option("--node", node, "kvmesh node (its client port) as HOST:PORT")
      ->capture_default_str();
  app.add_option("--port", port, "HTTP port to serve on; 0 picks a free one")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--listen", listen, "address to serve on")->capture_default_str();
  app.add_option("--tls-ca", options.tls.ca_file, "cluster CA (PEM), when the node uses TLS");
  app.add_option("--tls-cert", options.tls.cert_file, "client certificate (PEM)");
  app.add_option("--tls-key", options.tls.key_file, "client key (PEM)");
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGPIPE, SIG_IGN);
  kvmesh::client::Client client = kvmesh::client::connect(node, options);
  if (!client.ok()) {
    std::cerr << "kv-app: " << client.status().ToString() << "\n";
    return 1;
  }
  Store store(client);
  httplib::Server server;
  // Responses go out at once (httplib writes headers and body separately; Nagle would hold the
  // body for the client's delayed ACK).
  server.set_tcp_nodelay(true);

  // setValue
  server.Post("/api/kv", [&](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !body.contains("key") || !body["key"].is_string() ||
        !body.contains("value") || !body["value"].is_string()) {
      res.status = 400;
      res.set_content("bad request: expected JSON {\"key\": string, \"value\": string}",
                      "text/plain");
      return;
    }
    kvmesh::Database db = store.Get();
    kvmesh::Status s =
        db.ok() ? db.put(body["key"].get<std::string>(), body["value"].get<std::string>())
                : db.status();
    if (!s.ok()) {
      res.status = 500;
      res.set_content(s.ToString(), "text/plain");
      return;
    }
    res.set_content("Value stored successfully", "text/plain");
  });

  // getValue
  server.Get("/api/kv", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string key = req.get_param_value("key");
    if (key.empty()) {
      res.status = 400;
      res.set_content("Key parameter is required", "text/plain");
      return;
    }
    kvmesh::Database db = store.Get();
    if (!db.ok()) {
      res.status = 500;
      res.set_content(db.status().ToString(), "text/plain");
      return;
    }
    kvmesh::Result<std::string> value = db.get(key);
    if (!value.ok()) {
      const bool missing = value.status().code() == kvmesh::Code::kNotFound;
      res.status = missing ? 404 : 500;
      res.set_content(missing ? "Key not found" : value.status().ToString(), "text/plain");
      return;
    }
    res.set_content(*value, "application/octet-stream");
  });

  const int bound =
      port == 0 ? server.bind_to_any_port(listen) : (server.bind_to_port(listen, port) ? port : -1);
  if (bound <= 0) {
    std::cerr << "kv-app: cannot listen on " << listen << ":" << port << "\n";
    return 1;
  }
  std::cout << "kv-app listening on " << listen << ":" << bound << " (database " << kDatabase
            << " on " << node << ")" << std::endl;
  server.listen_after_bind();
  return 0;
}
