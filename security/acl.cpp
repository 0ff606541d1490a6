#include "security/acl.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>
#include <unordered_set>
#include <utility>

#include "common/hex.hpp"
#include "common/path.hpp"
#include "config/yaml_fields.hpp"

namespace kvmesh::security {

using config::ConfigDiagnostic;
using config::KindOf;
using config::LineOf;

const char* RightName(Right right) {
  switch (right) {
    case Right::kRead:
      return "read";
    case Right::kWrite:
      return "write";
    case Right::kAdmin:
      return "admin";
  }
  return "?";
}

const char* AclRoleName(AclRole role) {
  switch (role) {
    case AclRole::kReadonly:
      return "readonly";
    case AclRole::kReadwrite:
      return "readwrite";
    case AclRole::kAdmin:
      return "admin";
  }
  return "?";
}

bool AclGrant::Gives(Right right, std::string_view database) const {
  // Roles are ordered: each gives its own right and every right below it.
  if (static_cast<uint8_t>(role) < static_cast<uint8_t>(right)) return false;
  if (databases.empty()) return true;
  if (database.empty()) return false;  // node-wide: only an unlimited grant
  for (const config::Matcher& m : databases) {
    if (m.Matches(database)) return true;
  }
  return false;
}

namespace {

const std::vector<std::string> kTopFields = {"principals", "tokens"};
const std::vector<std::string> kGrantFields = {"role", "databases"};
const std::vector<std::string> kTokenFields = {"principal", "sha256", "note"};

/// SHA-256 of `data`, 32 raw bytes.
std::string Sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) return {};
  return std::string(reinterpret_cast<const char*>(digest), size);
}

/// 64 hex digits (either case) to 32 bytes; false otherwise.
bool DigestFromHex(const std::string& hex, std::string* out) {
  return hex.size() == 64 && HexDecode(hex, out);
}

class AclParser {
 public:
  AclParser(std::string file, std::vector<ConfigDiagnostic>* found)
      : file_(std::move(file)), found_(found) {}

  void Parse(const std::string& text,
             std::unordered_map<std::string, std::vector<AclGrant>>* principals,
             std::vector<std::pair<std::string, std::string>>* tokens) {
    principals_ = principals;
    tokens_ = tokens;
    // yaml-cpp reports syntax errors by throwing; none may leave the module.
    try {
      ParseDocument(YAML::Load(text));
    } catch (const YAML::Exception& e) {
      Error(e.mark.is_null() ? 0 : e.mark.line + 1, "", "invalid YAML: " + e.msg);
    } catch (const std::exception& e) {
      Error(0, "", std::string("cannot parse: ") + e.what());
    }
  }

 private:
  void Error(int line, std::string field, std::string message) {
    found_->push_back({true, file_, line, std::move(field), std::move(message)});
  }

  void ParseDocument(const YAML::Node& document) {
    // An empty file would deny every client: more likely a truncated file than a wish.
    if (document.IsNull()) {
      Error(0, "",
            "the ACL file is empty; it needs a \"principals\" mapping (\"principals: {}\" denies "
            "every client)");
      return;
    }
    if (!document.IsMap()) {
      Error(LineOf(document, 0), "",
            std::string("expected a mapping with \"principals\", got ") + KindOf(document));
      return;
    }
    bool has_principals = false;
    bool has_tokens = false;
    YAML::Node tokens;
    int tokens_line = 0;
    for (const auto& field : document) {
      const int line = LineOf(field.first, 0);
      const std::string name = field.first.IsScalar() ? field.first.Scalar() : "";
      if (name != "principals" && name != "tokens") {
        Error(line, name, config::UnknownField(name, kTopFields));
        continue;
      }
      bool& seen = name == "principals" ? has_principals : has_tokens;
      if (seen) {
        Error(line, name, "field is given more than once");
        continue;
      }
      seen = true;
      if (name == "principals") {
        ParsePrincipals(field.second, line);
      } else {
        tokens = field.second;
        tokens_line = line;
      }
    }
    if (!has_principals) Error(LineOf(document, 0), "principals", "required field is missing");
    // After the principals, wherever they stand in the file: a token names one of them.
    if (has_tokens) ParseTokens(tokens, tokens_line);
  }

  void ParseTokens(const YAML::Node& list, int line) {
    if (list.IsNull()) return;
    if (!list.IsSequence()) {
      Error(LineOf(list, line), "tokens",
            std::string("must be a list of {principal, sha256} entries, got ") + KindOf(list));
      return;
    }
    std::unordered_set<std::string> digests;
    for (const YAML::Node& item : list) {
      const int item_line = LineOf(item, line);
      if (!item.IsMap()) {
        Error(item_line, "tokens",
              std::string("each token must be a mapping {principal: NAME, sha256: HEX}, got ") +
                  KindOf(item));
        continue;
      }
      std::string principal, digest;
      bool ok = true;
      std::unordered_set<std::string> seen;
      for (const auto& f : item) {
        const int key_line = LineOf(f.first, item_line);
        const std::string name = f.first.IsScalar() ? f.first.Scalar() : "";
        const std::string field = "tokens." + name;
        if (name != "principal" && name != "sha256" && name != "note") {
          Error(key_line, field, config::UnknownField(name, kTokenFields));
          ok = false;
          continue;
        }
        if (!seen.insert(name).second) {
          Error(key_line, field, "field is given more than once");
          ok = false;
          continue;
        }
        if (!f.second.IsScalar()) {
          Error(key_line, field, std::string("must be a string, got ") + KindOf(f.second));
          ok = false;
          continue;
        }
        const std::string& value = f.second.Scalar();
        if (name == "principal") {
          principal = value;
          if (principals_->count(value) == 0) {
            Error(key_line, field,
                  "principal " + Quote(value) +
                      " is not in principals: a token has the rights of a principal listed there");
            ok = false;
          }
        } else if (name == "sha256") {
          if (!DigestFromHex(value, &digest)) {
            Error(key_line, field,
                  "must be the token's SHA-256 as 64 hex digits (kvmesh token new prints it), "
                  "got " +
                      std::to_string(value.size()) + " characters");
            ok = false;
          }
        }
      }
      if (seen.count("principal") == 0 || seen.count("sha256") == 0) {
        Error(item_line, "tokens",
              std::string("required field is missing: ") +
                  (seen.count("principal") == 0 ? "principal" : "sha256"));
        continue;
      }
      if (!ok) continue;
      if (!digests.insert(digest).second) {
        Error(item_line, "tokens.sha256",
              "this token is given more than once (a token identifies exactly one principal)");
        continue;
      }
      tokens_->emplace_back(std::move(digest), std::move(principal));
    }
  }

  void ParsePrincipals(const YAML::Node& map, int line) {
    if (map.IsNull()) return;  // "principals:" alone: nobody has rights
    if (!map.IsMap()) {
      Error(LineOf(map, line), "principals",
            std::string("must be a mapping from certificate names to grants, got ") + KindOf(map));
      return;
    }
    for (const auto& entry : map) {
      const int key_line = LineOf(entry.first, line);
      if (!entry.first.IsScalar() || entry.first.Scalar().empty()) {
        Error(key_line, "principals", "a principal's name must be a non-empty string");
        continue;
      }
      const std::string& name = entry.first.Scalar();
      const std::string field = "principals." + name;
      if (principals_->count(name) > 0) {
        Error(key_line, field, "principal is given more than once");
        continue;
      }
      std::vector<AclGrant> grants;
      const YAML::Node& value = entry.second;
      const int value_line = value.IsNull() ? key_line : LineOf(value, key_line);
      if (value.IsMap()) {
        ParseGrant(value, field, value_line, &grants);  // one grant without the list brackets
      } else if (value.IsSequence() && value.size() > 0) {
        for (const YAML::Node& item : value) {
          if (item.IsMap()) {
            ParseGrant(item, field, LineOf(item, value_line), &grants);
          } else {
            Error(LineOf(item, value_line), field,
                  std::string("each grant must be a mapping with a role, got ") + KindOf(item));
          }
        }
      } else {
        // An empty or missing list would read like a grant but give nothing.
        Error(value_line, field,
              std::string("must be a grant ({role: readonly}) or a list of them, got ") +
                  (value.IsSequence() ? "an empty list" : KindOf(value)) +
                  "; remove the principal to give it no rights");
      }
      (*principals_)[name] = std::move(grants);
    }
  }

  void ParseGrant(const YAML::Node& map, const std::string& field, int line,
                  std::vector<AclGrant>* grants) {
    AclGrant grant;
    grant.source = file_ + ":" + std::to_string(line);
    bool has_role = false;
    bool role_ok = true;
    bool has_databases = false;
    int databases_line = line;
    std::unordered_set<std::string> seen;
    for (const auto& f : map) {
      const int key_line = LineOf(f.first, line);
      const int value_line = f.second.IsNull() ? key_line : LineOf(f.second, key_line);
      const std::string name = f.first.IsScalar() ? f.first.Scalar() : "";
      if (name != "role" && name != "databases") {
        Error(key_line, field + "." + name, config::UnknownField(name, kGrantFields));
        continue;
      }
      if (!seen.insert(name).second) {
        Error(key_line, field + "." + name, "field is given more than once");
        continue;
      }
      if (name == "role") {
        has_role = true;
        role_ok = ReadRole(f.second, field + ".role", value_line, &grant.role);
      } else {
        has_databases = true;
        databases_line = value_line;
        ReadDatabases(f.second, field + ".databases", value_line, &grant.databases);
      }
    }
    if (!has_role) {
      Error(line, field + ".role", "required field is missing (readonly, readwrite or admin)");
      return;
    }
    if (role_ok && grant.role == AclRole::kAdmin && has_databases) {
      Error(databases_line, field + ".databases",
            "admin cannot be limited to databases: its operations (config reload) are "
            "node-wide; give readwrite on the databases instead");
      return;
    }
    if (role_ok) grants->push_back(std::move(grant));
  }

  bool ReadRole(const YAML::Node& value, const std::string& field, int line, AclRole* role) {
    const std::string text = value.IsScalar() ? value.Scalar() : "";
    if (text == "readonly") {
      *role = AclRole::kReadonly;
    } else if (text == "readwrite") {
      *role = AclRole::kReadwrite;
    } else if (text == "admin") {
      *role = AclRole::kAdmin;
    } else {
      Error(line, field,
            "must be readonly, readwrite or admin, got " +
                (value.IsScalar() ? Quote(text) : std::string(KindOf(value))));
      return false;
    }
    return true;
  }

  void ReadDatabases(const YAML::Node& value, const std::string& field, int line,
                     std::vector<config::Matcher>* out) {
    if (!value.IsSequence() || value.size() == 0) {
      // An empty list would silently mean "every database" (or nothing): neither is a safe guess.
      Error(line, field,
            std::string("must be a non-empty list of database path patterns, got ") +
                (value.IsSequence() ? "an empty list" : KindOf(value)) +
                "; omit the field for every database");
      return;
    }
    for (const YAML::Node& item : value) {
      const int item_line = LineOf(item, line);
      if (!item.IsScalar()) {
        Error(item_line, field,
              std::string("each pattern must be a string (literal, wildcard or regex), got ") +
                  KindOf(item));
        continue;
      }
      config::Matcher m;
      Status s = config::Matcher::Compile(item.Scalar(), &m);
      if (!s.ok()) {
        Error(item_line, field, s.message());
        continue;
      }
      out->push_back(std::move(m));
    }
  }

  std::string file_;
  std::vector<ConfigDiagnostic>* found_;
  std::unordered_map<std::string, std::vector<AclGrant>>* principals_ = nullptr;
  std::vector<std::pair<std::string, std::string>>* tokens_ = nullptr;
};

std::string DescribeGrant(const AclGrant& g) {
  std::string out = AclRoleName(g.role);
  if (g.databases.empty()) return out + (g.role == AclRole::kAdmin ? "" : " on every database");
  out += " on ";
  for (size_t i = 0; i < g.databases.size(); ++i) {
    out += (i == 0 ? "" : ", ") + g.databases[i].pattern();
  }
  return out;
}

}  // namespace

Status Acl::LoadString(std::string_view yaml, const std::string& source_name, Acl* out,
                       std::vector<ConfigDiagnostic>* diagnostics) {
  std::vector<ConfigDiagnostic> found;
  std::unordered_map<std::string, std::vector<AclGrant>> principals;
  std::vector<std::pair<std::string, std::string>> tokens;
  AclParser(source_name, &found).Parse(std::string(yaml), &principals, &tokens);
  Status s = config::SummariseDiagnostics(found, "ACL file");
  if (diagnostics != nullptr) diagnostics->insert(diagnostics->end(), found.begin(), found.end());
  if (!s.ok()) return s;
  out->principals_ = std::move(principals);
  out->tokens_ = std::move(tokens);
  out->source_ = source_name;
  return Status::OK();
}

Status Acl::LoadFile(const std::string& file, Acl* out,
                     std::vector<ConfigDiagnostic>* diagnostics) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) {
    ConfigDiagnostic d{true, file, 0, "", "cannot read the ACL file"};
    if (diagnostics != nullptr) diagnostics->push_back(d);
    return Status::InvalidConfig("1 error in ACL file: " + d.ToString());
  }
  return LoadString(text.str(), file, out, diagnostics);
}

const std::vector<AclGrant>* Acl::Find(const std::string& principal) const {
  auto it = principals_.find(principal);
  return it == principals_.end() ? nullptr : &it->second;
}

bool Acl::Allows(const std::string& principal, Right right, std::string_view database) const {
  const std::vector<AclGrant>* grants = Find(principal);
  if (grants == nullptr) return false;
  for (const AclGrant& g : *grants) {
    if (g.Gives(right, database)) return true;
  }
  return false;
}

std::string Acl::Describe(const std::string& principal) const {
  const std::vector<AclGrant>* grants = Find(principal);
  if (grants == nullptr) return principal + " is not in the ACL file " + source_;
  std::string out = principal + " has ";
  for (size_t i = 0; i < grants->size(); ++i) {
    out += (i == 0 ? "" : "; ") + DescribeGrant((*grants)[i]);
  }
  return out;
}

Status Acl::Check(const std::string& principal, Right right, std::string_view database,
                  std::string_view operation) const {
  if (Allows(principal, right, database)) return Status::OK();
  std::string what = database.empty()
                         ? std::string(operation.empty() ? "do that" : operation)
                         : std::string(RightName(right)) + " database " + Quote(database);
  return Status::PermissionDenied("principal " + Quote(principal) + " may not " + what + " (" +
                                  Describe(principal) + ")");
}

Status Acl::CheckKnown(const std::string& principal) const {
  if (Find(principal) != nullptr) return Status::OK();
  return Status::PermissionDenied("principal " + Quote(principal) +
                                  " has no rights on this node (" + Describe(principal) + ")");
}

bool Acl::MayReadSomeOf(const std::string& principal, const std::string& pattern) const {
  config::Matcher m;
  return config::Matcher::Compile(pattern, &m).ok() && MayReadSomeOf(principal, m);
}

bool Acl::PrincipalOfToken(std::string_view token, std::string* principal) const {
  const std::string digest = Sha256(token);
  if (digest.size() != 32) return false;
  // Every stored digest is compared, each in constant time: how long this takes says nothing
  // about which (or whether a) token matched.
  const std::string* found = nullptr;
  for (const auto& [stored, name] : tokens_) {
    if (CRYPTO_memcmp(stored.data(), digest.data(), 32) == 0) found = &name;
  }
  if (found == nullptr) return false;
  *principal = *found;
  return true;
}

std::string TokenSha256Hex(std::string_view token) {
  return HexEncode(Sha256(token));
}

Status NewBearerToken(std::string* token) {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return Status::Internal("the random generator failed; no token was made");
  }
  *token =
      "kvmesh_" + HexEncode(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
  return Status::OK();
}

bool Acl::MayReadSomeOf(const std::string& principal, const config::Matcher& pattern) const {
  const std::vector<AclGrant>* grants = Find(principal);
  if (grants == nullptr) return false;
  for (const AclGrant& g : *grants) {
    if (g.databases.empty()) return true;
    for (const config::Matcher& m : g.databases) {
      if (m.Overlaps(pattern)) return true;
    }
  }
  return false;
}

Status AclStore::Parse(std::shared_ptr<const Acl>* out,
                       std::vector<ConfigDiagnostic>* diagnostics) const {
  if (file_.empty()) return Status::InvalidArgument("no ACL file is configured");
  auto acl = std::make_shared<Acl>();
  Status s = Acl::LoadFile(file_, acl.get(), diagnostics);
  if (s.ok()) *out = std::move(acl);
  return s;
}

void AclStore::Install(std::shared_ptr<const Acl> acl) {
  std::lock_guard<std::mutex> lock(mutex_);
  current_ = std::move(acl);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

Status AclStore::Load(std::vector<ConfigDiagnostic>* diagnostics) {
  if (file_.empty()) return Status::OK();
  std::shared_ptr<const Acl> acl;
  Status s = Parse(&acl, diagnostics);
  if (s.ok()) Install(std::move(acl));
  return s;
}

std::shared_ptr<const Acl> AclStore::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

}  // namespace kvmesh::security
