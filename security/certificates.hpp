// Certificates for a kvmesh cluster: a cluster CA, node certificates and client certificates,
// made with OpenSSL's library (what `kvmesh cert` runs).
//
// They follow the convention of security/identity.hpp: subject CN is the principal's name (a
// node's name or a client's name), subject OU is its role ("kvmesh node" or "kvmesh client"),
// and everything is signed by the cluster CA.
//
//   CA:      self-signed, CN given (default "kvmesh cluster CA"), basicConstraints critical
//            CA:TRUE pathlen:0 (it signs only leaf certificates), keyUsage keyCertSign+cRLSign.
//   node:    CN = node name, OU "kvmesh node", subjectAltName from the hosts (IP addresses and
//            DNS names the node is reached by), extendedKeyUsage serverAuth+clientAuth (a node
//            accepts connections and opens them to its peers).
//   client:  CN = client name, OU "kvmesh client", extendedKeyUsage clientAuth only (it cannot
//            serve, and the transport refuses it on the cluster port).
// Every key is ECDSA P-256, every signature SHA-256, every serial 128 random bits. notBefore is
// an hour in the past so that a peer whose clock is a little behind accepts a fresh certificate.
//
// Files, all in one directory D:
//   D/ca.crt, D/ca.key                   the CA (ca.key signs; keep it off the nodes)
//   D/node-NAME.crt, D/node-NAME.key     node NAME
//   D/client-NAME.crt, D/client-NAME.key client NAME
// Keys are created with mode 0600 (never wider, not even for a moment), certificates 0644. Each
// file is written under a temporary name and then renamed, so a reader never sees half a file,
// and an existing file is never replaced unless `force` is set.
#pragma once

#include <string>
#include <vector>

#include "kvmesh/status.hpp"

namespace kvmesh::security {

struct CertificateOptions {
  /// Directory the files are written to, and (for node and client certificates) where ca.crt
  /// and ca.key are read from. Default: "." (the current directory). It must exist.
  std::string dir = ".";
  /// Validity in days from now. 0 (default): 3650 for a CA, 825 for node and client
  /// certificates (825 is what browsers and most TLS stacks accept as the longest).
  int days = 0;
  /// Replace existing files. Default false: making a file that exists is an error naming it.
  bool force = false;
};

/// Default validity (CertificateOptions::days == 0).
constexpr int kDefaultCaDays = 3650;
constexpr int kDefaultLeafDays = 825;
/// The CA's subject CN when none is given.
constexpr const char* kDefaultCaName = "kvmesh cluster CA";

/// The files one call wrote.
struct CertificateFiles {
  std::string cert_file;
  std::string key_file;
};

/// OK if `name` may name a node or client certificate: 1 to 64 characters (the longest CN
/// X.509 allows), each a letter, digit, '.', '_', '-' or '@', the first a letter or digit.
/// The name becomes part of a file name and of ACL entries, so nothing that means something to
/// a shell, a path ('/'), a distinguished name (',', '=', '+') or YAML is allowed. Otherwise
/// kInvalidArgument saying which rule the name breaks.
Status CheckPrincipalName(const std::string& name);

/// OK if `host` may go in a node certificate's subjectAltName: an IPv4 or IPv6 address, or a DNS
/// name (labels of letters, digits and '-', separated by '.', at most 253 characters).
/// Otherwise kInvalidArgument naming the host.
Status CheckHost(const std::string& host);

/// Makes a new CA: writes dir/ca.crt and dir/ca.key. `common_name` is its subject CN (printable,
/// 1 to 64 characters; "" means kDefaultCaName).
/// Errors: kInvalidArgument for a bad name or days, or when a file exists and !force (naming
/// it); kIOError when a file cannot be written (naming it).
Result<CertificateFiles> MakeCa(const CertificateOptions& options,
                                const std::string& common_name = kDefaultCaName);

/// Makes the certificate of node `name` signed by the CA in options.dir: writes
/// dir/node-NAME.crt and dir/node-NAME.key. `hosts` (at least one; see CheckHost) become its
/// subjectAltNames: every address and name peers and clients use to reach the node.
/// Errors: as MakeCa; kNotFound when dir/ca.crt or dir/ca.key is missing; kInvalidArgument when
/// they are not a CA and its key.
Result<CertificateFiles> MakeNodeCertificate(const CertificateOptions& options,
                                             const std::string& name,
                                             const std::vector<std::string>& hosts);

/// Makes the certificate of client `name` signed by the CA in options.dir: writes
/// dir/client-NAME.crt and dir/client-NAME.key. Errors: as MakeNodeCertificate.
Result<CertificateFiles> MakeClientCertificate(const CertificateOptions& options,
                                               const std::string& name);

/// What a certificate file says, for `kvmesh cert show` and tests.
struct CertificateInfo {
  /// Subject CN and OU ("" when absent).
  std::string common_name;
  std::string unit;
  /// "CA", "node" or "client" as the convention reads it; "none" when the OU is neither role
  /// (such a certificate is refused on every port).
  std::string role;
  /// subjectAltNames as "IP:1.2.3.4" / "DNS:name".
  std::vector<std::string> alt_names;
  /// extendedKeyUsage as OpenSSL's short names ("serverAuth", "clientAuth").
  std::vector<std::string> extended_key_usage;
  /// Issuer and subject, one line each (RFC 2253 order, e.g. "CN=n1,OU=kvmesh node").
  std::string issuer;
  std::string subject;
  /// Validity as "YYYY-MM-DD HH:MM:SS UTC".
  std::string not_before;
  std::string not_after;
  /// Serial number in hex, and the key type ("ECDSA P-256", "RSA 2048", ...).
  std::string serial;
  std::string key_type;
  /// SHA-256 of the DER certificate in hex with ':' separators (what `openssl x509
  /// -fingerprint -sha256` prints).
  std::string sha256_fingerprint;
};

/// Reads the PEM certificate in `file`. kNotFound if it does not exist; kInvalidArgument if it
/// holds no PEM certificate (naming the file).
Result<CertificateInfo> ReadCertificateInfo(const std::string& file);

/// `info` as a few lines for people: subject, role (and what it may do), names, validity,
/// issuer, key, fingerprint. Ends with a newline.
std::string FormatCertificateInfo(const std::string& file, const CertificateInfo& info);

}  // namespace kvmesh::security
