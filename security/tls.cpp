#include "security/tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace kvmesh::security {

namespace {

using caf::io::network::rw_state;

/// OpenSSL's queued errors as one line (and the queue emptied), or `fallback` if there are none.
std::string DrainErrors(const char* fallback) {
  std::string out;
  while (unsigned long err = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? fallback : out;
}

std::string Utf8(const ASN1_STRING* text) {
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, text);
  if (length < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(length));
  OPENSSL_free(utf8);
  return out;
}

// A socket BIO that never raises SIGPIPE: OpenSSL's own socket BIO writes with write(2), which
// kills a process that does not ignore SIGPIPE when the peer has gone (and kvmesh is a library
// in other people's processes). The descriptor is the BIO's data; CAF owns and closes it.
int BioWrite(BIO* bio, const char* data, int length) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio)));
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(fd, data, static_cast<size_t>(length), MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(bio);
    return -1;
  }
  return static_cast<int>(n);
}

int BioRead(BIO* bio, char* out, int length) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio)));
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(fd, out, static_cast<size_t>(length), 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(bio);
    return -1;
  }
  return static_cast<int>(n);
}

int BioPuts(BIO* bio, const char* text) {
  return BioWrite(bio, text, static_cast<int>(strlen(text)));
}

long BioControl(BIO*, int command, long, void*) {  // NOLINT(runtime/int): OpenSSL's signature
  // Writes go straight to the socket, so there is nothing to flush; everything else is unsupported.
  return command == BIO_CTRL_FLUSH ? 1 : 0;
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* SocketMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kvmesh socket");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_puts(m, BioPuts);
    BIO_meth_set_ctrl(m, BioControl);
    BIO_meth_set_create(m, BioCreate);
    return m;
  }();
  return method;
}

/// A new SSL for `fd` over the SIGPIPE-free BIO, or nullptr.
SSL* NewSsl(SSL_CTX* ctx, int fd) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return nullptr;
  BIO* bio = BIO_new(SocketMethod());
  if (bio == nullptr) {
    SSL_free(ssl);
    return nullptr;
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
  SSL_set_bio(ssl, bio, bio);  // one BIO for both directions: SSL takes the one reference
  return ssl;
}

bool IsIpAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

Status IdentityOfCertificate(X509* cert, PeerIdentity* out) {
  if (cert == nullptr) return Status::InvalidArgument("no certificate");
  X509_NAME* subject = X509_get_subject_name(cert);
  const int cn = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (cn < 0) return Status::InvalidArgument("the certificate's subject has no CN (the name)");
  PeerIdentity identity;
  identity.name = Utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, cn)));
  if (identity.name.empty()) return Status::InvalidArgument("the certificate's CN is empty");
  bool found = false;
  for (int i = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, i)) {
    const std::string unit = Utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
    for (PeerRole role : {PeerRole::kNode, PeerRole::kClient}) {
      if (unit == RoleUnit(role)) {
        identity.role = role;
        found = true;
      }
    }
  }
  if (!found) {
    return Status::InvalidArgument("the certificate of \"" + identity.name +
                                   "\" has no OU \"kvmesh node\" or \"kvmesh client\" (make it "
                                   "with kvmesh cert)");
  }
  *out = std::move(identity);
  return Status::OK();
}

Status TlsContext::Load(const TlsOptions& options, std::shared_ptr<TlsContext>* out) {
  for (const auto& [file, flag] :
       {std::pair{options.ca_file, "--tls-ca"}, std::pair{options.cert_file, "--tls-cert"},
        std::pair{options.key_file, "--tls-key"}}) {
    if (file.empty()) {
      return Status::InvalidArgument(std::string("TLS needs ") + flag +
                                     " too (--tls-ca, --tls-cert and --tls-key go together)");
    }
  }
  ERR_clear_error();
  std::shared_ptr<TlsContext> context(new TlsContext());
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return Status::Internal("OpenSSL: " + DrainErrors("cannot make a context"));
  context->ctx_ = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // CAF closes a connection without a TLS close_notify: an end of stream is a normal close
  // (nothing is lost with it: BASP frames every message), not an attack worth a log line.
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // CAF may hand SSL_write a buffer that moved (the same bytes) when it retries a write.
  // Idle connections give their read and write buffers back (about 34 KiB each otherwise).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
    return Status::InvalidArgument("--tls-ca " + options.ca_file +
                                   ": cannot read the CA: " + DrainErrors("not a PEM certificate"));
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
    return Status::InvalidArgument(
        "--tls-cert " + options.cert_file +
        ": cannot read the certificate: " + DrainErrors("not a PEM certificate"));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
      return Status::InvalidArgument("--tls-key " + options.key_file + ": cannot read the key: " +
                                     DrainErrors("not a PEM private key"));
    }
    ERR_clear_error();
    return Status::InvalidArgument("--tls-key " + options.key_file +
                                   " is not the key of the certificate " + options.cert_file);
  }
  X509* own = SSL_CTX_get0_certificate(ctx);
  // Our own certificate must pass the check every peer will make, or nothing will connect:
  // better to say so at start.
  X509_STORE_CTX* check = X509_STORE_CTX_new();
  X509_STORE_CTX_init(check, SSL_CTX_get_cert_store(ctx), own, nullptr);
  const int verified = X509_verify_cert(check);
  const int verify_error = X509_STORE_CTX_get_error(check);
  X509_STORE_CTX_free(check);
  if (verified != 1) {
    return Status::InvalidArgument("--tls-cert " + options.cert_file +
                                   " does not verify against --tls-ca " + options.ca_file + ": " +
                                   X509_verify_cert_error_string(verify_error));
  }
  if (Status s = IdentityOfCertificate(own, &context->identity_); !s.ok()) {
    return Status::InvalidArgument("--tls-cert " + options.cert_file + ": " + s.message());
  }
  // Both directions: an accepting side asks for the client's certificate and refuses a
  // handshake without one; OpenSSL checks the chain against the CA.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  *out = std::move(context);
  return Status::OK();
}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

std::unique_ptr<TlsSession> TlsSession::Accept(std::shared_ptr<TlsContext> context,
                                               native_socket fd, bool nodes_only,
                                               std::function<Status(const PeerIdentity&)> admit) {
  ERR_clear_error();
  SSL* ssl = NewSsl(context->native(), fd);
  if (ssl == nullptr) {
    spdlog::error("TLS: cannot make a session: {}", DrainErrors("out of memory"));
    return nullptr;
  }
  SSL_set_accept_state(ssl);
  std::unique_ptr<TlsSession> session(new TlsSession(std::move(context), ssl, nodes_only));
  session->admit_ = std::move(admit);
  return session;
}

std::unique_ptr<TlsSession> TlsSession::Connect(std::shared_ptr<TlsContext> context,
                                                native_socket fd, const std::string& host) {
  ERR_clear_error();
  SSL* ssl = NewSsl(context->native(), fd);
  if (ssl == nullptr) {
    spdlog::error("TLS: cannot make a session: {}", DrainErrors("out of memory"));
    return nullptr;
  }
  SSL_set_connect_state(ssl);
  // The node we dialled must be the one its certificate names (subjectAltName).
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const bool named = IsIpAddress(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1
                                       : (SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 &&
                                          X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0) == 1);
  if (!named) {
    spdlog::error("TLS: cannot check host name {}: {}", host, DrainErrors("invalid"));
    SSL_free(ssl);
    return nullptr;
  }
  std::unique_ptr<TlsSession> session(new TlsSession(std::move(context), ssl, true));
  // The first flight (ClientHello) goes out now, on the freshly connected socket; the answers
  // arrive as reads, which drive the rest of the handshake. If this already fails (a fast peer
  // answered and its certificate is refused), the session's first read reports it.
  size_t ignored = 0;
  session->Transfer(false, ignored, nullptr, 0);
  return session;
}

TlsSession::~TlsSession() {
  SSL_free(ssl_);
}

void TlsSession::Fail(std::string why) {
  if (failure_.empty()) failure_ = std::move(why);
}

bool TlsSession::FinishHandshake() {
  handshake_done_ = true;
  PeerIdentity identity;
  Status s = IdentityOfCertificate(SSL_get0_peer_certificate(ssl_), &identity);
  if (!s.ok()) {
    Fail("TLS: the peer's certificate: " + s.message());
    return false;
  }
  if (nodes_only_ && identity.role != PeerRole::kNode) {
    Fail("TLS: the peer's certificate is the " + std::string(RoleName(identity.role)) +
         " certificate of \"" + identity.name + "\", and only node certificates may connect here");
    return false;
  }
  if (admit_ && identity.role == PeerRole::kClient) {
    if (Status admitted = admit_(identity); !admitted.ok()) {
      Fail("TLS: the client certificate \"" + identity.name +
           "\" is refused: " + admitted.ToString());
      return false;
    }
  }
  peer_ = std::move(identity);
  return true;
}

caf::io::network::rw_state TlsSession::Transfer(bool reading, size_t& result, void* buf,
                                                size_t len) {
  result = 0;
  // A refused peer stays refused: OpenSSL considers the session established once its own checks
  // passed, and CAF may still try to write (its BASP handshake) after our check failed.
  if (!failure_.empty()) return rw_state::failure;
  ERR_clear_error();
  auto failed = [&](int ret, const char* what) {
    const int error = SSL_get_error(ssl_, ret);
    if (error == SSL_ERROR_WANT_READ) {
      // An empty write only asks to drive the handshake; keep polling for reads instead.
      return len == 0 && !reading ? rw_state::indeterminate : rw_state::success;
    }
    if (error == SSL_ERROR_WANT_WRITE) return rw_state::success;
    if (error == SSL_ERROR_ZERO_RETURN) return rw_state::failure;  // an orderly close
    if (error == SSL_ERROR_SYSCALL && handshake_done_) {
      // The connection broke (reset, a killed peer): as with plain TCP, CAF's connection-lost
      // handling is all it needs; not a TLS failure worth a line.
      ERR_clear_error();
      return rw_state::failure;
    }
    std::string why =
        DrainErrors(error == SSL_ERROR_SYSCALL && errno != 0 ? strerror(errno)
                                                             : "the peer closed the connection");
    const long verify = SSL_get_verify_result(ssl_);  // NOLINT(runtime/int)
    if (verify != X509_V_OK) {
      why = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    }
    Fail(std::string("TLS ") + what + ": " + why);
    return rw_state::failure;
  };
  if (!handshake_done_) {
    const int ret = SSL_do_handshake(ssl_);
    if (ret != 1) return failed(ret, "handshake");
    if (!FinishHandshake()) return rw_state::failure;
    if (on_established_) on_established_();
  }
  if (len == 0) return rw_state::indeterminate;
  const int n = static_cast<int>(std::min<size_t>(len, 1u << 30));
  const int ret = reading ? SSL_read(ssl_, buf, n) : SSL_write(ssl_, buf, n);
  if (ret > 0) {
    result = static_cast<size_t>(ret);
    return rw_state::success;
  }
  return failed(ret, reading ? "read" : "write");
}

caf::io::network::rw_state TlsSession::read_some(size_t& result, native_socket, void* buf,
                                                 size_t len) {
  return Transfer(true, result, buf, len);
}

caf::io::network::rw_state TlsSession::write_some(size_t& result, native_socket, const void* buf,
                                                  size_t len) {
  return Transfer(false, result, const_cast<void*>(buf), len);
}

bool TlsSession::must_read_more(native_socket, size_t threshold) {
  return static_cast<size_t>(SSL_pending(ssl_)) >= threshold;
}

}  // namespace kvmesh::security
