// Certificates as `kvmesh cert` makes them (security/certificates.hpp): they verify against
// their CA and only against it, carry the role and names of the convention in
// security/identity.hpp, and their keys are private from the moment they exist.
#include "security/certificates.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "test_util.hpp"
#include "testing/test_pki.hpp"

namespace kvmesh::security {
namespace {

using kvmesh::testing::TempDir;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr Load(const std::string& file) {
  FILE* f = std::fopen(file.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return X509Ptr(x);
}

std::string ReadFile(const std::string& file) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// X509_verify_cert of `leaf` against a store holding only `ca`, for TLS `purpose`
/// (X509_PURPOSE_SSL_SERVER / _CLIENT, or 0 for none). Returns the verify error (X509_V_OK
/// when the chain verifies) and its text in `why`.
int Verify(const std::string& leaf_file, const std::string& ca_file, int purpose,
           std::string* why = nullptr) {
  X509Ptr leaf = Load(leaf_file), ca = Load(ca_file);
  if (!leaf || !ca) return -1;
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr);
  if (purpose != 0) X509_STORE_CTX_set_purpose(ctx, purpose);
  int rc = X509_verify_cert(ctx);
  int err = rc == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  if (why != nullptr) *why = X509_verify_cert_error_string(err);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  ERR_clear_error();
  return err;
}

/// Seconds from now to `t` (negative: in the past).
double SecondsFromNow(const ASN1_TIME* t) {
  int days = 0, secs = 0;
  ASN1_TIME_diff(&days, &secs, nullptr, t);
  return days * 86400.0 + secs;
}

class CertificatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.dir = dir_.path();
    auto ca = MakeCa(options_);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = ca->cert_file;
    auto other = MakeCa(OptionsIn(other_dir_.path()), "another CA");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ca_ = other->cert_file;
  }

  static CertificateOptions OptionsIn(const std::string& dir) {
    CertificateOptions o;
    o.dir = dir;
    return o;
  }

  TempDir dir_, other_dir_;
  CertificateOptions options_;
  std::string ca_, other_ca_;
};

TEST_F(CertificatesTest, NodeAndClientCertificatesVerifyAgainstTheirCaOnly) {
  auto node = MakeNodeCertificate(options_, "n1", {"127.0.0.1"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto client = MakeClientCertificate(options_, "alice");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(node->cert_file, dir_ / "node-n1.crt");
  EXPECT_EQ(node->key_file, dir_ / "node-n1.key");
  EXPECT_EQ(client->cert_file, dir_ / "client-alice.crt");
  EXPECT_EQ(client->key_file, dir_ / "client-alice.key");

  std::string why;
  EXPECT_EQ(Verify(node->cert_file, ca_, X509_PURPOSE_SSL_SERVER, &why), X509_V_OK) << why;
  EXPECT_EQ(Verify(node->cert_file, ca_, X509_PURPOSE_SSL_CLIENT, &why), X509_V_OK) << why;
  EXPECT_EQ(Verify(client->cert_file, ca_, X509_PURPOSE_SSL_CLIENT, &why), X509_V_OK) << why;
  // The CA verifies itself (a self-signed root).
  EXPECT_EQ(Verify(ca_, ca_, 0, &why), X509_V_OK) << why;

  // Against an unrelated CA nothing verifies.
  EXPECT_EQ(Verify(node->cert_file, other_ca_, 0, &why),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
      << why;
  EXPECT_EQ(Verify(client->cert_file, other_ca_, 0, &why),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
      << why;

  // The key written beside each certificate is that certificate's key.
  for (const auto& files : {*node, *client}) {
    X509Ptr cert = Load(files.cert_file);
    FILE* f = std::fopen(files.key_file.c_str(), "r");
    ASSERT_NE(f, nullptr) << files.key_file;
    EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    ASSERT_NE(key, nullptr) << files.key_file;
    EXPECT_EQ(X509_check_private_key(cert.get(), key), 1) << files.key_file;
    EVP_PKEY_free(key);
  }
}

TEST_F(CertificatesTest, ClientCertificateCannotServe) {
  auto client = MakeClientCertificate(options_, "alice");
  ASSERT_TRUE(client.ok()) << client.status();
  std::string why;
  EXPECT_EQ(Verify(client->cert_file, ca_, X509_PURPOSE_SSL_SERVER, &why),
            X509_V_ERR_INVALID_PURPOSE)
      << why;
}

TEST_F(CertificatesTest, CaIsAConstrainedSelfSignedRootWithTenYears) {
  X509Ptr ca = Load(ca_);
  ASSERT_TRUE(ca);
  auto info = ReadCertificateInfo(ca_);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "kvmesh cluster CA");
  EXPECT_EQ(info->unit, "");
  EXPECT_EQ(info->role, "CA");
  EXPECT_EQ(info->issuer, info->subject);

  int crit = -1;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(ca.get(), NID_basic_constraints, &crit, nullptr));
  ASSERT_NE(bc, nullptr);
  EXPECT_EQ(crit, 1);
  EXPECT_TRUE(bc->ca);
  ASSERT_NE(bc->pathlen, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(bc->pathlen), 0);
  BASIC_CONSTRAINTS_free(bc);
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));

  // Ten years, starting an hour ago.
  EXPECT_NEAR(SecondsFromNow(X509_get0_notAfter(ca.get())), 3650 * 86400.0, 120);
  EXPECT_NEAR(SecondsFromNow(X509_get0_notBefore(ca.get())), -3600, 120);

  auto named = MakeCa(OptionsIn((dir_ / "")), "");
  EXPECT_FALSE(named.ok()) << "a second CA in the same directory must be refused";
  TempDir other;
  auto custom = MakeCa(OptionsIn(other.path()), "acme prod CA");
  ASSERT_TRUE(custom.ok()) << custom.status();
  EXPECT_EQ(ReadCertificateInfo(custom->cert_file)->common_name, "acme prod CA");
}

TEST_F(CertificatesTest, NodeCertificateCarriesRoleNamesAndUsage) {
  auto node = MakeNodeCertificate(options_, "db-1.example",
                                  {"10.0.0.7", "fd00::7", "db1.example.com", "localhost"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto info = ReadCertificateInfo(node->cert_file);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "db-1.example");
  EXPECT_EQ(info->unit, "kvmesh node");
  EXPECT_EQ(info->role, "node");
  EXPECT_EQ(info->alt_names, (std::vector<std::string>{"IP:10.0.0.7", "IP:fd00::7",
                                                       "DNS:db1.example.com", "DNS:localhost"}));
  EXPECT_EQ(info->extended_key_usage, (std::vector<std::string>{"serverAuth", "clientAuth"}));
  EXPECT_EQ(info->issuer, "CN=kvmesh cluster CA");
  EXPECT_EQ(info->key_type, "ECDSA P-256");

  X509Ptr cert = Load(node->cert_file);
  EXPECT_EQ(X509_get_key_usage(cert.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_signature_nid(cert.get()), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  // TLS host checks pass for the names and addresses given, and fail for others.
  EXPECT_EQ(X509_check_host(cert.get(), "db1.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.0.0.7", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "fd00::7", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.0.0.8", 0), 0);
  // 825 days from now; an hour's slack for clock skew at the start.
  EXPECT_NEAR(SecondsFromNow(X509_get0_notAfter(cert.get())), 825 * 86400.0, 120);
  EXPECT_NEAR(SecondsFromNow(X509_get0_notBefore(cert.get())), -3600, 120);
}

TEST_F(CertificatesTest, ClientCertificateIsForClientsOnly) {
  auto client = MakeClientCertificate(options_, "tenant-a@acme");
  ASSERT_TRUE(client.ok()) << client.status();
  auto info = ReadCertificateInfo(client->cert_file);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "tenant-a@acme");
  EXPECT_EQ(info->unit, "kvmesh client");
  EXPECT_EQ(info->role, "client");
  EXPECT_TRUE(info->alt_names.empty());
  EXPECT_EQ(info->extended_key_usage, std::vector<std::string>{"clientAuth"});
}

TEST_F(CertificatesTest, SerialsAreRandom128BitAndDaysIsHonoured) {
  CertificateOptions thirty = options_;
  thirty.days = 30;
  auto a = MakeClientCertificate(thirty, "a");
  auto b = MakeClientCertificate(thirty, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  X509Ptr ca = Load(a->cert_file), cb = Load(b->cert_file);
  EXPECT_NEAR(SecondsFromNow(X509_get0_notAfter(ca.get())), 30 * 86400.0, 120);
  const ASN1_INTEGER* sa = X509_get0_serialNumber(ca.get());
  const ASN1_INTEGER* sb = X509_get0_serialNumber(cb.get());
  EXPECT_EQ(ASN1_STRING_length(sa), 16);
  EXPECT_EQ(ASN1_STRING_length(sb), 16);
  EXPECT_NE(ASN1_INTEGER_cmp(sa, sb), 0);

  thirty.days = -1;
  auto bad = MakeClientCertificate(thirty, "c");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--days"), std::string::npos) << bad.status();
}

TEST_F(CertificatesTest, KeysAre0600AndCertificates0644WithNoLeftovers) {
  ::umask(022);
  auto node = MakeNodeCertificate(options_, "n1", {"127.0.0.1"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto mode = [](const std::string& f) {
    struct stat st;
    EXPECT_EQ(::stat(f.c_str(), &st), 0) << f;
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode(dir_ / "ca.key"), 0600u);
  EXPECT_EQ(mode(dir_ / "ca.crt"), 0644u);
  EXPECT_EQ(mode(node->key_file), 0600u);
  EXPECT_EQ(mode(node->cert_file), 0644u);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ca.crt", "ca.key", "node-n1.crt", "node-n1.key"}));
}

TEST_F(CertificatesTest, ExistingFilesAreNotReplacedUnlessForced) {
  const std::string ca_before = ReadFile(dir_ / "ca.crt"), key_before = ReadFile(dir_ / "ca.key");
  auto again = MakeCa(options_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().message(), dir_ / "ca.crt" + " exists; not replacing it (use --force)");
  EXPECT_EQ(ReadFile(dir_ / "ca.crt"), ca_before);
  EXPECT_EQ(ReadFile(dir_ / "ca.key"), key_before);

  ASSERT_TRUE(MakeNodeCertificate(options_, "n1", {"127.0.0.1"}).ok());
  const std::string node_before = ReadFile(dir_ / "node-n1.crt");
  // Only the key is in the way: still refused, and the certificate is not replaced either.
  std::filesystem::remove(dir_ / "node-n1.crt");
  auto node_again = MakeNodeCertificate(options_, "n1", {"127.0.0.1"});
  ASSERT_FALSE(node_again.ok());
  EXPECT_NE(node_again.status().message().find(dir_ / "node-n1.key"), std::string::npos)
      << node_again.status();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "node-n1.crt"));

  CertificateOptions force = options_;
  force.force = true;
  auto replaced = MakeNodeCertificate(force, "n1", {"127.0.0.1"});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_NE(ReadFile(dir_ / "node-n1.crt"), node_before);
  EXPECT_TRUE(MakeCa(force).ok());
  EXPECT_NE(ReadFile(dir_ / "ca.crt"), ca_before);
}

TEST_F(CertificatesTest, BadNamesAndHostsAreRefusedSayingWhy) {
  const std::string rule =
      "names are 1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit";
  struct Case {
    std::string name, message;
  };
  for (const auto& c : std::vector<Case>{
           {"", "the name is empty; " + rule},
           {"a/b", "the name \"a/b\" contains \"/\"; " + rule},
           {"a,OU=kvmesh node", "the name \"a,OU=kvmesh node\" contains \",\"; " + rule},
           {"-rf", "the name \"-rf\" does not start with a letter or digit; " + rule},
           {"..", "the name \"..\" does not start with a letter or digit; " + rule},
           {std::string(65, 'a'), "the name is 65 characters long; " + rule},
           {"tab\there", "the name \"tab\\x09here\" contains \"\\x09\"; " + rule},
       }) {
    auto node = MakeNodeCertificate(options_, c.name, {"127.0.0.1"});
    ASSERT_FALSE(node.ok()) << c.name;
    EXPECT_EQ(node.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(node.status().message(), c.message);
    auto client = MakeClientCertificate(options_, c.name);
    ASSERT_FALSE(client.ok()) << c.name;
    EXPECT_EQ(client.status().message(), c.message);
  }
  EXPECT_TRUE(CheckPrincipalName(std::string(64, 'a')).ok());

  for (const std::string host : {"a b", "under_score.example", "-lead.example", "a..b", ""}) {
    auto node = MakeNodeCertificate(options_, "n1", {"127.0.0.1", host});
    ASSERT_FALSE(node.ok()) << host;
    EXPECT_NE(node.status().message().find("host \"" + host + "\""), std::string::npos)
        << node.status();
  }
  auto no_host = MakeNodeCertificate(options_, "n1", {});
  ASSERT_FALSE(no_host.ok());
  EXPECT_NE(no_host.status().message().find("needs at least one --host"), std::string::npos)
      << no_host.status();
  // Nothing was written by any refused call.
  EXPECT_FALSE(std::filesystem::exists(dir_ / "node-n1.crt"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "node-n1.key"));
}

TEST_F(CertificatesTest, MissingOrWrongCaIsNamed) {
  TempDir empty;
  auto node = MakeNodeCertificate(OptionsIn(empty.path()), "n1", {"127.0.0.1"});
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.status().code(), Code::kNotFound);
  EXPECT_NE(node.status().message().find("cannot read the CA certificate " + empty / "ca.crt"),
            std::string::npos)
      << node.status();
  EXPECT_NE(node.status().message().find("kvmesh cert ca --dir " + empty.path()), std::string::npos)
      << node.status();

  // A CA certificate with another CA's key.
  std::filesystem::copy_file(other_dir_ / "ca.key", dir_ / "ca.key",
                             std::filesystem::copy_options::overwrite_existing);
  auto mismatched = MakeClientCertificate(options_, "alice");
  ASSERT_FALSE(mismatched.ok());
  EXPECT_EQ(mismatched.status().message(),
            dir_ / "ca.key" + " is not the key of " + dir_ / "ca.crt");
}

TEST_F(CertificatesTest, ShowDescribesSubjectRoleNamesValidityAndIssuer) {
  auto node = MakeNodeCertificate(options_, "n1", {"127.0.0.1", "db1.example.com"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto info = ReadCertificateInfo(node->cert_file);
  ASSERT_TRUE(info.ok()) << info.status();
  const std::string text = FormatCertificateInfo(node->cert_file, *info);
  for (const std::string& expected : std::vector<std::string>{
           node->cert_file + "\n", "subject:     CN=n1,OU=kvmesh node\n",
           "role:        node n1 (may join the cluster as n1",
           "names:       IP:127.0.0.1, DNS:db1.example.com\n",
           "usage:       serverAuth, clientAuth\n", " to " + info->not_after + "\n",
           "issuer:      CN=kvmesh cluster CA\n", "key:         ECDSA P-256\n"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << "missing " << expected << " in\n" << text;
  }
  // not_after is a date 825 days out, as people read it.
  std::time_t later = std::time(nullptr) + 825 * 86400;
  char year[8];
  std::strftime(year, sizeof(year), "%Y", std::gmtime(&later));
  EXPECT_EQ(info->not_after.substr(0, 4), year);

  auto client = MakeClientCertificate(options_, "alice");
  ASSERT_TRUE(client.ok());
  EXPECT_NE(FormatCertificateInfo(client->cert_file, *ReadCertificateInfo(client->cert_file))
                .find("client alice (client port only"),
            std::string::npos);

  auto missing = ReadCertificateInfo(dir_ / "nope.crt");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ / "nope.crt"), std::string::npos);
  auto key = ReadCertificateInfo(node->key_file);
  EXPECT_EQ(key.status().code(), Code::kInvalidArgument);
  EXPECT_NE(key.status().message().find(node->key_file + " holds no PEM certificate"),
            std::string::npos)
      << key.status();
}

TEST(TestPkiTest, SharedCertificatesVerifyAgainstTheSharedCaAndNotTheOther) {
  auto& pki = kvmesh::testing::SharedTestPki();
  auto& other = kvmesh::testing::SharedOtherTestPki();
  TlsOptions n1 = pki.Node("n1");
  TlsOptions alice = pki.Client("alice");
  TlsOptions stranger = other.Node("n1");
  EXPECT_EQ(n1.ca_file, pki.ca_file());
  EXPECT_EQ(stranger.ca_file, other.ca_file());
  EXPECT_NE(pki.dir(), other.dir());
  EXPECT_EQ(pki.Node("n1").cert_file, n1.cert_file);  // made once, reused
  EXPECT_EQ(Verify(n1.cert_file, pki.ca_file(), X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_EQ(Verify(alice.cert_file, pki.ca_file(), X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(Verify(stranger.cert_file, pki.ca_file(), 0),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_EQ(Verify(n1.cert_file, other.ca_file(), 0), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_EQ(ReadCertificateInfo(alice.cert_file)->role, "client");
  EXPECT_EQ(ReadCertificateInfo(n1.cert_file)->alt_names,
            (std::vector<std::string>{"IP:127.0.0.1", "IP:::1", "DNS:localhost"}));
  EXPECT_TRUE(std::filesystem::exists(n1.key_file));
}

}  // namespace
}  // namespace kvmesh::security
