// The HTTP API of a node (README "HTTP API"): keys, listings, batches, stats, status, instances,
// configs (read-only), members, health and whoami over HTTP/1.1, HTTPS with client certificates
// or bearer tokens (security/acl.hpp) when the node has TLS; and the web console's static files
// (http/console.hpp) at "/". Built on cpp-httplib (Debian's libcpp-httplib-dev); it serves through
// the public embedded API (kvmesh::Node, kvmesh::Database), so every request runs on httplib's own
// thread pool and waits there, never on an actor worker thread.
//
// Addressing: /v1/databases/{path}/keys/{key}. The request target is split, before any
// percent-decoding, at its first "/keys/" segment (or a final "/keys" for listings): what comes
// before is the database path, what comes after is the key, each then percent-decoded on its own
// ("+" stays "+"). A database path with a segment named "keys" writes it "%6Beys"; a key may hold
// any bytes percent-encoded, "/keys/" included. A leading "/" is added to both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kvmesh/node.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/tls.hpp"

namespace kvmesh::http {

struct HttpOptions {
  /// Address to listen on. Loopback by default: expose the API deliberately.
  std::string host = "127.0.0.1";
  /// Port; 0 picks a free one (see HttpServer::port()). Required (>= 0).
  int port = 0;
  /// The node's TLS files (NodeOptions::tls): when given, the API is HTTPS with the node's
  /// certificate, and every API request needs a client certificate signed by the CA or an
  /// ACL bearer token (else 401); requests are checked against the node's ACL by the token's
  /// principal or the certificate's name. Default off.
  TlsOptions tls;
  /// Without TLS, listening beyond loopback is refused unless this is true (as for the node's
  /// other ports). Default false.
  bool insecure_plaintext = false;
  /// Largest value a PUT accepts (the node's NodeOptions::max_value_bytes). A request body may
  /// be at most 4/3 of it plus 64 KiB (a batch's base64 JSON); larger bodies get 413 and are
  /// read into a fixed buffer and discarded, never kept.
  size_t max_value_bytes = 16u << 20;
  /// Threads serving connections: httplib gives each connection a thread for as long as it is
  /// open (an idle keep-alive connection holds one up to idle_timeout_s), so this bounds the
  /// connections served at once; more wait in the queue. Default 32.
  size_t threads = 32;
  /// An idle keep-alive connection, or a client sending nothing, is closed after this many
  /// seconds. Default 5.
  int idle_timeout_s = 5;
};

class HttpServer {
 public:
  /// Checks the options, binds and starts serving `node` (which must outlive the server) on
  /// a thread of its own. Errors: kInvalidArgument (bad option, plaintext beyond loopback,
  /// unusable TLS files), kUnavailable (the port cannot be bound).
  static Status Start(Node& node, HttpOptions options, std::unique_ptr<HttpServer>* out);

  /// Stops listening, finishes the requests in flight and joins the threads.
  ~HttpServer();

  /// The port it listens on.
  uint16_t port() const;
  /// True when serving HTTPS.
  bool tls() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::http
