// TLS settings shared by a node (NodeOptions::tls) and a client (ClientOptions::tls).
//
// With all three files given, every connection (client port, cluster port, and each connection a
// node or client opens) is TLS with mutual authentication against the CA: a peer without a
// certificate signed by it never reaches kvmesh's message layer. Certificates are made with
// `kvmesh cert` (README "Running on several machines"): a node certificate names its node, a
// client certificate names the principal the ACL grants rights to.
#pragma once

#include <string>

namespace kvmesh {

struct TlsOptions {
  /// PEM file with the cluster CA certificate that every peer's certificate must be signed by.
  std::string ca_file;
  /// PEM file with this side's certificate (a node certificate for kvmeshd, a client or node
  /// certificate for clients).
  std::string cert_file;
  /// PEM file with the private key of cert_file (unencrypted; keep it 0600).
  std::string key_file;

  /// True when any file is given (then all three must be; start-up says which is missing).
  bool enabled() const { return !ca_file.empty() || !cert_file.empty() || !key_file.empty(); }
};

}  // namespace kvmesh
