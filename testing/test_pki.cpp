#include "testing/test_pki.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "security/certificates.hpp"

namespace kvmesh::testing {
namespace {

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "TestPki: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::abort();
}

}  // namespace

TestPki::TestPki(const std::string& ca_name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/kvmesh-test-pki-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    Die("cannot create " + pattern, Status::IOError("mkdtemp failed"));
  }
  dir_ = pattern;
  security::CertificateOptions options;
  options.dir = dir_;
  auto ca = security::MakeCa(options, ca_name);
  if (!ca.ok()) Die("cannot make the test CA in " + dir_, ca.status());
}

TestPki::~TestPki() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string TestPki::ca_file() const {
  return dir_ + "/ca.crt";
}

TlsOptions TestPki::Node(const std::string& name) {
  return Get(name, true);
}

TlsOptions TestPki::Client(const std::string& name) {
  return Get(name, false);
}

TlsOptions TestPki::Get(const std::string& name, bool node) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string stem = dir_ + "/" + (node ? "node-" : "client-") + name;
  TlsOptions tls{ca_file(), stem + ".crt", stem + ".key"};
  struct stat st;
  if (::stat(tls.cert_file.c_str(), &st) == 0) return tls;
  security::CertificateOptions options;
  options.dir = dir_;
  auto made = node ? security::MakeNodeCertificate(options, name, {"127.0.0.1", "::1", "localhost"})
                   : security::MakeClientCertificate(options, name);
  if (!made.ok()) Die("cannot make the certificate of " + name, made.status());
  return tls;
}

TestPki& SharedTestPki() {
  static TestPki pki("kvmesh test CA");
  return pki;
}

TestPki& SharedOtherTestPki() {
  static TestPki pki("kvmesh unrelated test CA");
  return pki;
}

}  // namespace kvmesh::testing
