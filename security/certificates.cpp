#include "security/certificates.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>

#include "common/path.hpp"
#include "security/identity.hpp"

namespace kvmesh::security {
namespace {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using X509ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;
using EkuPtr =
    std::unique_ptr<EXTENDED_KEY_USAGE, Deleter<EXTENDED_KEY_USAGE, EXTENDED_KEY_USAGE_free>>;
void FreeBio(BIO* b) {
  BIO_free_all(b);
}
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, FreeBio>>;

/// The oldest error OpenSSL queued (and clears the queue), for messages.
std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

Status Crypto(const std::string& what) {
  return Status::Internal(what + ": " + OpenSslError());
}

std::string Join(const std::string& dir, const std::string& file) {
  if (dir.empty()) return file;
  return dir.back() == '/' ? dir + file : dir + "/" + file;
}

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

Status CheckDays(int days) {
  // 100 years: far beyond any sensible certificate, and safely inside time_t arithmetic.
  if (days < 0 || days > 36500) {
    return Status::InvalidArgument("--days must be 1 to 36500, not " + std::to_string(days));
  }
  return Status::OK();
}

PkeyPtr NewKey() {
  // ECDSA on P-256: small keys and fast handshakes, supported by every TLS 1.2/1.3 stack.
  return PkeyPtr(EVP_EC_gen("P-256"));
}

Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Crypto(std::string("cannot add extension ") + OBJ_nid2sn(nid) + "=" + value);
  }
  return Status::OK();
}

/// A certificate for `key` with subject CN (and OU unless empty), serial, validity and the
/// subject key identifier; the caller adds the rest and signs.
Result<X509Ptr> NewCertificate(EVP_PKEY* key, const std::string& cn, const std::string& ou,
                               int days) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return Crypto("X509_new");
  // A random 128-bit serial: RFC 5280 wants serials unique per CA; with no CA database to count
  // from, 127 random bits (the top one cleared so it stays positive in every decoder) are.
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return Crypto("RAND_bytes");
  serial[0] &= 0x7f;
  serial[0] |= 0x40;  // never zero, and always 16 bytes long
  BignumPtr bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) {
    return Crypto("serial number");
  }
  // An hour back: a peer whose clock is a little behind still accepts a certificate made now.
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr)) {
    return Crypto("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  auto add = [&](const char* field, const std::string& value) {
    return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.c_str()),
                                      static_cast<int>(value.size()), -1, 0) == 1;
  };
  if (!ou.empty() && !add("OU", ou)) return Crypto("subject OU");
  if (!add("CN", cn)) return Crypto("subject CN");
  if (X509_set_pubkey(cert.get(), key) != 1) return Crypto("X509_set_pubkey");
  return cert;
}

std::string Pem(int (*write)(BIO*, void*), void* object) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get(), object) != 1) return {};
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string CertPem(X509* cert) {
  return Pem([](BIO* b, void* o) { return PEM_write_bio_X509(b, static_cast<X509*>(o)); }, cert);
}

std::string KeyPem(EVP_PKEY* key) {
  return Pem(
      [](BIO* b, void* o) {
        // PKCS#8, unencrypted: the node reads it unattended at start.
        return PEM_write_bio_PrivateKey(b, static_cast<EVP_PKEY*>(o), nullptr, nullptr, 0, nullptr,
                                        nullptr);
      },
      key);
}

/// A file written under a temporary name in its final directory, not yet in place.
struct StagedFile {
  std::string path;
  std::string temp;
};

/// Writes `contents` to a new temporary file beside `path`, created with `mode` (so a key is
/// never readable by others, not even between open and chmod), synced to disk.
Status Stage(const std::string& path, const std::string& contents, mode_t mode, StagedFile* out) {
  std::string temp;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    unsigned char r[6];
    if (RAND_bytes(r, sizeof(r)) != 1) return Crypto("RAND_bytes");
    char suffix[16];
    std::snprintf(suffix, sizeof(suffix), "%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4],
                  r[5]);
    temp = path + ".tmp-" + suffix;
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST) {
      return Status::IOError("cannot create " + temp + ": " + std::strerror(errno));
    }
  }
  if (fd < 0) return Status::IOError("cannot create a temporary file beside " + path);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status s = Status::IOError("cannot write " + temp + ": " + std::strerror(errno));
      ::close(fd);
      ::unlink(temp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    Status s = Status::IOError("cannot write " + temp + ": " + std::strerror(errno));
    ::unlink(temp.c_str());
    return s;
  }
  out->path = path;
  out->temp = temp;
  return Status::OK();
}

/// Moves staged files into place: with `force` by rename (replacing), else by link, which fails
/// when the name exists (so two runs racing cannot replace each other's files). On failure
/// nothing this call placed stays, and the temporaries are gone.
Status Commit(const std::vector<StagedFile>& files, bool force, const std::string& dir) {
  Status result;
  size_t placed = 0;
  for (; placed < files.size(); ++placed) {
    const StagedFile& f = files[placed];
    int rc =
        force ? ::rename(f.temp.c_str(), f.path.c_str()) : ::link(f.temp.c_str(), f.path.c_str());
    if (rc != 0) {
      result = errno == EEXIST
                   ? Status::InvalidArgument(f.path + " exists; not replacing it (use --force)")
                   : Status::IOError("cannot create " + f.path + ": " + std::strerror(errno));
      break;
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (!force || i >= placed) ::unlink(files[i].temp.c_str());
    if (!result.ok() && i < placed && !force) ::unlink(files[i].path.c_str());
  }
  if (!result.ok()) return result;
  // The renames themselves are durable only once the directory is synced.
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::OK();
}

Status RefuseExisting(const std::vector<std::string>& paths, bool force) {
  if (force) return Status::OK();
  for (const auto& p : paths) {
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0) {
      return Status::InvalidArgument(p + " exists; not replacing it (use --force)");
    }
  }
  return Status::OK();
}

Status CheckDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return Status::NotFound("directory " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(dir + " is not a directory");
  return Status::OK();
}

/// Signs `cert` with `key` and writes it and `cert_key` as stem.crt and stem.key in dir.
Result<CertificateFiles> SignAndWrite(X509* cert, EVP_PKEY* signer, EVP_PKEY* cert_key,
                                      const CertificateOptions& options, const std::string& stem) {
  if (X509_sign(cert, signer, EVP_sha256()) <= 0) return Crypto("signing the certificate");
  CertificateFiles files{Join(options.dir, stem + ".crt"), Join(options.dir, stem + ".key")};
  const std::string cert_pem = CertPem(cert), key_pem = KeyPem(cert_key);
  if (cert_pem.empty() || key_pem.empty()) return Crypto("PEM encoding");
  std::vector<StagedFile> staged(2);
  Status s = Stage(files.key_file, key_pem, 0600, &staged[0]);
  if (!s.ok()) return s;
  s = Stage(files.cert_file, cert_pem, 0644, &staged[1]);
  if (!s.ok()) {
    ::unlink(staged[0].temp.c_str());
    return s;
  }
  s = Commit(staged, options.force, options.dir);
  if (!s.ok()) return s;
  return files;
}

/// The CA in options.dir, checked to be a CA whose key matches.
Status LoadCa(const CertificateOptions& options, X509Ptr* cert, PkeyPtr* key) {
  const std::string cert_file = Join(options.dir, "ca.crt"), key_file = Join(options.dir, "ca.key");
  const std::string hint = "; make one with: kvmesh cert ca --dir " + options.dir;
  {
    BioPtr bio(BIO_new_file(cert_file.c_str(), "r"));
    if (!bio) {
      ERR_clear_error();
      return Status::NotFound("cannot read the CA certificate " + cert_file + ": " +
                              std::strerror(errno) + hint);
    }
    cert->reset(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!*cert) {
      return Status::InvalidArgument(cert_file + " holds no PEM certificate: " + OpenSslError());
    }
  }
  {
    BioPtr bio(BIO_new_file(key_file.c_str(), "r"));
    if (!bio) {
      ERR_clear_error();
      return Status::NotFound("cannot read the CA key " + key_file + ": " + std::strerror(errno) +
                              hint);
    }
    key->reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!*key) {
      return Status::InvalidArgument(key_file +
                                     " holds no unencrypted PEM private key: " + OpenSslError());
    }
  }
  if (X509_check_ca(cert->get()) == 0) {
    return Status::InvalidArgument(cert_file + " is not a CA certificate");
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument(key_file + " is not the key of " + cert_file);
  }
  return Status::OK();
}

Result<CertificateFiles> MakeLeaf(const CertificateOptions& options, const std::string& name,
                                  PeerRole role, const std::vector<std::string>& hosts) {
  if (Status s = CheckPrincipalName(name); !s.ok()) return s;
  if (Status s = CheckDays(options.days); !s.ok()) return s;
  if (role == PeerRole::kNode) {
    if (hosts.empty()) {
      return Status::InvalidArgument("node " + name +
                                     " needs at least one --host (an IP address or DNS name "
                                     "its peers and clients reach it by)");
    }
    for (const auto& h : hosts) {
      if (Status s = CheckHost(h); !s.ok()) return s;
    }
  }
  if (Status s = CheckDir(options.dir); !s.ok()) return s;
  const std::string stem = std::string(RoleName(role)) + "-" + name;
  if (Status s = RefuseExisting(
          {Join(options.dir, stem + ".crt"), Join(options.dir, stem + ".key")}, options.force);
      !s.ok()) {
    return s;
  }
  X509Ptr ca;
  PkeyPtr ca_key;
  if (Status s = LoadCa(options, &ca, &ca_key); !s.ok()) return s;

  PkeyPtr key = NewKey();
  if (!key) return Crypto("generating a P-256 key");
  auto cert = NewCertificate(key.get(), name, RoleUnit(role),
                             options.days > 0 ? options.days : kDefaultLeafDays);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(ca.get())) != 1) return Crypto("issuer");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), c, nullptr, nullptr, 0);
  for (auto [nid, value] : std::vector<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, role == PeerRole::kNode ? "serverAuth,clientAuth" : "clientAuth"},
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"}}) {
    if (Status s = AddExtension(c, &ctx, nid, value); !s.ok()) return s;
  }
  if (!hosts.empty()) {
    GeneralNamesPtr names(GENERAL_NAMES_new());
    for (const auto& h : hosts) {
      GENERAL_NAME* gen = GENERAL_NAME_new();
      if (gen == nullptr) return Crypto("subjectAltName");
      // An address goes in as an IP entry (what TLS clients compare a numeric host against);
      // anything else CheckHost let through is a DNS name.
      if (ASN1_OCTET_STRING* ip = a2i_IPADDRESS(h.c_str())) {
        GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
      } else {
        ERR_clear_error();
        ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
        if (dns == nullptr || ASN1_STRING_set(dns, h.data(), static_cast<int>(h.size())) != 1) {
          ASN1_IA5STRING_free(dns);
          GENERAL_NAME_free(gen);
          return Crypto("subjectAltName " + h);
        }
        GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
      }
      sk_GENERAL_NAME_push(names.get(), gen);
    }
    if (X509_add1_ext_i2d(c, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
      return Crypto("subjectAltName");
    }
  }
  return SignAndWrite(c, ca_key.get(), key.get(), options, stem);
}

std::string TimeText(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string NameText(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string NameEntry(const X509_NAME* name, int nid) {
  int index = X509_NAME_get_index_by_NID(name, nid, -1);
  if (index < 0) return {};
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return {};
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::string Hex(const unsigned char* data, size_t size, const char* separator) {
  static const char kDigits[] = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    if (i > 0) out += separator;
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 15];
  }
  return out;
}

std::string KeyType(EVP_PKEY* key) {
  if (key == nullptr) return "?";
  const int bits = EVP_PKEY_get_bits(key);
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &len) == 1) {
      std::string g = group;
      if (g == "prime256v1") g = "P-256";
      if (g == "secp384r1") g = "P-384";
      return "ECDSA " + g;
    }
    return "ECDSA " + std::to_string(bits) + " bits";
  }
  return std::string(EVP_PKEY_get0_type_name(key)) + " " + std::to_string(bits);
}

}  // namespace

Status CheckPrincipalName(const std::string& name) {
  const std::string rule =
      "names are 1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit";
  if (name.empty()) return Status::InvalidArgument("the name is empty; " + rule);
  if (name.size() > 64) {
    return Status::InvalidArgument("the name is " + std::to_string(name.size()) +
                                   " characters long; " + rule);
  }
  if (!IsAlnum(name[0])) {
    return Status::InvalidArgument("the name " + Quote(name) +
                                   " does not start with a letter or digit; " + rule);
  }
  for (char c : name) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-' && c != '@') {
      return Status::InvalidArgument("the name " + Quote(name) + " contains " +
                                     Quote(std::string(1, c)) + "; " + rule);
    }
  }
  return Status::OK();
}

Status CheckHost(const std::string& host) {
  unsigned char addr[16];
  if (::inet_pton(AF_INET, host.c_str(), addr) == 1 ||
      ::inet_pton(AF_INET6, host.c_str(), addr) == 1) {
    return Status::OK();
  }
  const std::string rule =
      "a host is an IPv4 or IPv6 address or a DNS name (labels of letters, digits and '-' "
      "separated by '.')";
  if (host.empty() || host.size() > 253) {
    return Status::InvalidArgument("host " + Quote(host) + " is empty or too long; " + rule);
  }
  size_t label = 0;
  for (size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      if (label == 0 || label > 63 || host[i - 1] == '-' || host[i - label] == '-') {
        return Status::InvalidArgument("host " + Quote(host) +
                                       " is neither an address nor a DNS name; " + rule);
      }
      label = 0;
      continue;
    }
    if (!IsAlnum(host[i]) && host[i] != '-') {
      return Status::InvalidArgument("host " + Quote(host) + " contains " +
                                     Quote(std::string(1, host[i])) + "; " + rule);
    }
    ++label;
  }
  return Status::OK();
}

Result<CertificateFiles> MakeCa(const CertificateOptions& options, const std::string& common_name) {
  const std::string cn = common_name.empty() ? kDefaultCaName : common_name;
  if (cn.size() > 64) {
    return Status::InvalidArgument("the CA name is " + std::to_string(cn.size()) +
                                   " characters long; at most 64");
  }
  for (unsigned char c : cn) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("the CA name " + Quote(cn) + " has a control character");
    }
  }
  if (Status s = CheckDays(options.days); !s.ok()) return s;
  if (Status s = CheckDir(options.dir); !s.ok()) return s;
  if (Status s =
          RefuseExisting({Join(options.dir, "ca.crt"), Join(options.dir, "ca.key")}, options.force);
      !s.ok()) {
    return s;
  }
  PkeyPtr key = NewKey();
  if (!key) return Crypto("generating a P-256 key");
  auto cert = NewCertificate(key.get(), cn, "", options.days > 0 ? options.days : kDefaultCaDays);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1) return Crypto("issuer");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, c, c, nullptr, nullptr, 0);
  // pathlen:0: the cluster CA signs node and client certificates, never another CA.
  for (auto [nid, value] : std::vector<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"}}) {
    if (Status s = AddExtension(c, &ctx, nid, value); !s.ok()) return s;
  }
  return SignAndWrite(c, key.get(), key.get(), options, "ca");
}

Result<CertificateFiles> MakeNodeCertificate(const CertificateOptions& options,
                                             const std::string& name,
                                             const std::vector<std::string>& hosts) {
  return MakeLeaf(options, name, PeerRole::kNode, hosts);
}

Result<CertificateFiles> MakeClientCertificate(const CertificateOptions& options,
                                               const std::string& name) {
  return MakeLeaf(options, name, PeerRole::kClient, {});
}

Result<CertificateInfo> ReadCertificateInfo(const std::string& file) {
  BioPtr bio(BIO_new_file(file.c_str(), "r"));
  if (!bio) {
    const int err = errno;
    ERR_clear_error();
    std::string why = std::strerror(err);
    if (err == ENOENT) return Status::NotFound("cannot read " + file + ": " + why);
    return Status::IOError("cannot read " + file + ": " + why);
  }
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return Status::InvalidArgument(file + " holds no PEM certificate (" + OpenSslError() + ")");
  }
  X509* c = cert.get();
  CertificateInfo info;
  const X509_NAME* subject = X509_get_subject_name(c);
  info.common_name = NameEntry(subject, NID_commonName);
  info.unit = NameEntry(subject, NID_organizationalUnitName);
  info.subject = NameText(subject);
  info.issuer = NameText(X509_get_issuer_name(c));
  if (X509_check_ca(c) != 0) {
    info.role = "CA";
  } else if (info.unit == RoleUnit(PeerRole::kNode)) {
    info.role = RoleName(PeerRole::kNode);
  } else if (info.unit == RoleUnit(PeerRole::kClient)) {
    info.role = RoleName(PeerRole::kClient);
  } else {
    info.role = "none";
  }
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(c, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gen = sk_GENERAL_NAME_value(names.get(), i);
    if (gen->type == GEN_DNS) {
      const ASN1_STRING* s = gen->d.dNSName;
      info.alt_names.push_back("DNS:" +
                               std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                           static_cast<size_t>(ASN1_STRING_length(s))));
    } else if (gen->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* s = gen->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {0};
      const int len = ASN1_STRING_length(s);
      const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
      if (family < 0 ||
          ::inet_ntop(family, ASN1_STRING_get0_data(s), text, sizeof(text)) == nullptr) {
        info.alt_names.push_back("IP:?");
      } else {
        info.alt_names.push_back(std::string("IP:") + text);
      }
    } else {
      info.alt_names.push_back("other");
    }
  }
  EkuPtr eku(
      static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(c, NID_ext_key_usage, nullptr, nullptr)));
  for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku.get()); ++i) {
    const int nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku.get(), i));
    info.extended_key_usage.push_back(nid == NID_undef ? "?" : OBJ_nid2sn(nid));
  }
  info.not_before = TimeText(X509_get0_notBefore(c));
  info.not_after = TimeText(X509_get0_notAfter(c));
  BignumPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), nullptr));
  if (serial) {
    char* hex = BN_bn2hex(serial.get());
    if (hex != nullptr) info.serial = hex;
    OPENSSL_free(hex);
  }
  info.key_type = KeyType(X509_get0_pubkey(c));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (X509_digest(c, EVP_sha256(), digest, &digest_len) == 1) {
    info.sha256_fingerprint = Hex(digest, digest_len, ":");
  }
  ERR_clear_error();
  return info;
}

std::string FormatCertificateInfo(const std::string& file, const CertificateInfo& info) {
  std::string role;
  if (info.role == "CA") {
    role = "cluster CA (signs node and client certificates; give its .crt as --tls-ca)";
  } else if (info.role == "node") {
    role = "node " + info.common_name + " (may join the cluster as " + info.common_name +
           " and has every right on the client port)";
  } else if (info.role == "client") {
    role = "client " + info.common_name + " (client port only, with the rights the ACL gives " +
           info.common_name + ")";
  } else {
    role = "none: OU is neither \"kvmesh node\" nor \"kvmesh client\"; refused on every port";
  }
  auto list = [](const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
    return out.empty() ? std::string("-") : out;
  };
  std::string out = file + "\n";
  out += "  subject:     " + info.subject + "\n";
  out += "  role:        " + role + "\n";
  out += "  names:       " + list(info.alt_names) + "\n";
  out += "  usage:       " + list(info.extended_key_usage) + "\n";
  out += "  valid:       " + info.not_before + " to " + info.not_after + "\n";
  out += "  issuer:      " + info.issuer + "\n";
  out += "  key:         " + info.key_type + "\n";
  out += "  serial:      " + info.serial + "\n";
  out += "  sha256:      " + info.sha256_fingerprint + "\n";
  return out;
}

}  // namespace kvmesh::security
