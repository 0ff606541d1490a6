// TLS for kvmesh connections: one loaded context per node or client, and one session per
// connection that CAF's stream drives (transport/connection_guard.cpp).
//
// Not libcaf_openssl: it builds an SSL_CTX (reading the PEM files again) for every connection,
// gives no access to the peer's certificate, checks no host names, and makes its scribes
// impossible to combine with the connection limits and message checks kvmesh needs. Verification
// here: TLS 1.2 or later, the peer must present a certificate that chains to the cluster CA
// (both directions), follows the naming convention of security/identity.hpp, and, when this side
// opened the connection, names the host it dialled in its subjectAltName.
#pragma once

#include <caf/io/network/native_socket.hpp>
#include <caf/io/network/rw_state.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "kvmesh/status.hpp"
#include "kvmesh/tls.hpp"
#include "security/identity.hpp"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct x509_st X509;

namespace kvmesh::security {

/// What `cert` says about its holder under the convention of security/identity.hpp, or why it
/// follows none (no CN, no known OU). Does not verify the signature.
Status IdentityOfCertificate(X509* cert, PeerIdentity* out);

/// One side's certificates, loaded once. Thread-safe after Load.
class TlsContext {
 public:
  /// Loads the three files of `options` and checks them before anything listens or connects:
  /// each file exists and parses, the certificate chains to the CA and is valid now, the key
  /// belongs to the certificate, and the certificate follows the naming convention. Errors:
  /// kInvalidArgument naming the file and the problem.
  static Status Load(const TlsOptions& options, std::shared_ptr<TlsContext>* out);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  /// Who this side is (its own certificate).
  const PeerIdentity& identity() const { return identity_; }

  SSL_CTX* native() const { return ctx_; }

 private:
  TlsContext() = default;
  SSL_CTX* ctx_ = nullptr;
  PeerIdentity identity_;
};

/// One TLS connection over a non-blocking socket: the I/O policy of caf::io::network::
/// stream_impl (read_some, write_some, must_read_more), finishing the handshake on the first
/// reads and writes. Never raises SIGPIPE (writes use MSG_NOSIGNAL).
class TlsSession {
 public:
  using rw_state = caf::io::network::rw_state;
  using native_socket = caf::io::network::native_socket;

  /// A session for an accepted socket, or nullptr (logged) if OpenSSL cannot make one. With
  /// `nodes_only`, the handshake fails unless the peer holds a node certificate.
  /// `admit` (may be empty) is asked about a client certificate once the handshake verified it;
  /// an error refuses the peer before a byte of data goes either way.
  static std::unique_ptr<TlsSession> Accept(std::shared_ptr<TlsContext> context, native_socket fd,
                                            bool nodes_only,
                                            std::function<Status(const PeerIdentity&)> admit = {});
  /// A session for a socket this side connected to `host` (a name or an IP address), which the
  /// peer's certificate must name. nullptr (logged) if OpenSSL cannot make one.
  static std::unique_ptr<TlsSession> Connect(std::shared_ptr<TlsContext> context, native_socket fd,
                                             const std::string& host);
  ~TlsSession();

  rw_state read_some(size_t& result, native_socket fd, void* buf, size_t len);
  rw_state write_some(size_t& result, native_socket fd, const void* buf, size_t len);
  bool must_read_more(native_socket fd, size_t threshold);

  /// The peer's identity once the handshake is done (checked by OpenSSL against the CA and, for
  /// connections this side opened, the host name; its role checked here before a byte of data
  /// goes either way); nullopt before, or if refused (then `failure()` says why).
  const std::optional<PeerIdentity>& peer() const { return peer_; }
  /// Why the handshake or the connection failed; empty if it did not.
  const std::string& failure() const { return failure_; }

  /// True once the handshake completed and the peer was accepted.
  bool established() const { return peer_.has_value(); }

  /// Called (once) when the session becomes established(), on the thread driving it.
  void set_on_established(std::function<void()> callback) { on_established_ = std::move(callback); }

 private:
  TlsSession(std::shared_ptr<TlsContext> context, SSL* ssl, bool nodes_only)
      : context_(std::move(context)), ssl_(ssl), nodes_only_(nodes_only) {}
  rw_state Transfer(bool reading, size_t& result, void* buf, size_t len);
  bool FinishHandshake();
  void Fail(std::string why);

  std::shared_ptr<TlsContext> context_;
  SSL* ssl_;
  const bool nodes_only_;
  bool handshake_done_ = false;
  std::function<void()> on_established_;
  std::function<Status(const PeerIdentity&)> admit_;
  std::optional<PeerIdentity> peer_;
  std::string failure_;
};

}  // namespace kvmesh::security
