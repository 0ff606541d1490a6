// TestPki: certificates for tests, made once per test process in a temporary directory.
//
//   kvmesh::testing::TestPki& pki = kvmesh::testing::SharedTestPki();
//   kvmesh::TlsOptions n1 = pki.Node("n1");        // node certificate "n1" (+ CA and key)
//   kvmesh::TlsOptions alice = pki.Client("alice");  // client certificate "alice"
//   kvmesh::TlsOptions stranger = kvmesh::testing::SharedOtherTestPki().Client("alice");
//
// SharedTestPki() is the cluster CA every test node and client trusts; SharedOtherTestPki() is
// an unrelated CA with the same names, for "certificate from the wrong CA" tests (its
// TlsOptions trust the other CA; set ca_file to pki.ca_file() to present a foreign certificate
// to a node that trusts the shared one). Certificates are made on first use with the same code
// as `kvmesh cert` (security/certificates.hpp) and reused afterwards; node certificates name
// 127.0.0.1, ::1 and localhost. The directory is removed when the process exits. Thread-safe. A
// failure to make a certificate aborts the process with the reason (tests cannot go on).
#pragma once

#include <mutex>
#include <string>

#include "kvmesh/tls.hpp"

namespace kvmesh::testing {

class TestPki {
 public:
  /// Makes a CA with subject CN `ca_name` in a new temporary directory.
  explicit TestPki(const std::string& ca_name);
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  /// The directory holding ca.crt, node-NAME.* and client-NAME.*.
  const std::string& dir() const { return dir_; }
  /// This CA's certificate (what TlsOptions::ca_file trusts).
  std::string ca_file() const;

  /// TLS settings for node `name`: this CA, and node-NAME.crt/.key (made on first use).
  TlsOptions Node(const std::string& name);
  /// TLS settings for client `name`: this CA, and client-NAME.crt/.key (made on first use).
  TlsOptions Client(const std::string& name);

 private:
  TlsOptions Get(const std::string& name, bool node);

  std::string dir_;
  std::mutex mutex_;
};

/// The CA test nodes and clients share (one per process).
TestPki& SharedTestPki();
/// An unrelated CA (one per process), for certificates nobody in SharedTestPki trusts.
TestPki& SharedOtherTestPki();

}  // namespace kvmesh::testing
