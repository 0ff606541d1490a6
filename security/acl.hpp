// Access control: which client certificate or bearer token (principal) may do what to which
// database.
//
// The ACL file (NodeOptions::acl_file, kvmeshd --acl) is YAML:
//
//   principals:
//     alice:                       # a client certificate's name (its subject CN)
//       - role: readwrite          # readonly | readwrite | admin
//         databases: ["/tenants/alice/*"]   # optional: matcher patterns (config/matcher.hpp)
//     dashboard: [{role: readonly}]         # no databases: every database
//     ops: [{role: admin}]
//   tokens:                        # optional: bearer tokens for the HTTP API (and its console)
//     - principal: dashboard       # must be one of the principals above
//       sha256: 5e884898da28...    # SHA-256 of the token, 64 hex digits (kvmesh token new)
//       note: laptop console       # optional free text: which token this is
//
// Tokens: `Authorization: Bearer <token>` on the HTTP API (over HTTPS) identifies the token's
// principal, with exactly that principal's rights. The file holds only the SHA-256 of each
// token, so reading it does not reveal one; `kvmesh token new --principal NAME` makes a random
// token (256 bits) and prints it with the line to paste. A principal may have several tokens;
// removing a line (and reloading) revokes that token. The lookup hashes the presented token and
// compares it with every stored hash in constant time.
//
// Rights: readonly gives `read`; readwrite gives `read` and `write`; admin gives `read`, `write`
// on every database and `admin` (node-wide operations). A grant with `databases` holds only on
// the database paths one of its patterns matches; admin cannot be limited (its operations are
// node-wide). A principal's rights are the union of its grants. A principal absent from the file
// has no rights; a node certificate has every right (security/identity.hpp).
//
// Which request needs which right (checked by the client gateway, actors/client_gateway.cpp):
//   get, list, stats, status, open           read on the database
//   put, erase, batch                        write on the database
//   reload (kvmesh config reload)            admin
//   config apply, config delete              admin (cluster-wide configs)
//   config history                           any grant
//   drop, backup, restore                    admin
//   hello, clock, members                    any grant (being in the file)
//   databases, configs, instances            any grant; the answer lists only the databases the
//                                            principal may read, and the configs whose matcher
//                                            may serve such a database
//
// Loading checks the whole file like the config loader: unknown fields, unknown roles, bad
// patterns and wrong types are errors naming the file and line; a file with errors loads nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config_set.hpp"
#include "config/matcher.hpp"
#include "kvmesh/status.hpp"

namespace kvmesh::security {

/// What a request needs.
enum class Right : uint8_t {
  kRead = 0,
  kWrite = 1,
  kAdmin = 2,
};

/// "read", "write" or "admin".
const char* RightName(Right right);

/// The roles of the ACL file, each a set of rights.
enum class AclRole : uint8_t {
  kReadonly = 0,
  kReadwrite = 1,
  kAdmin = 2,
};

/// "readonly", "readwrite" or "admin".
const char* AclRoleName(AclRole role);

/// One entry of a principal's list.
struct AclGrant {
  AclRole role = AclRole::kReadonly;
  /// Database path patterns it holds on; empty: every database.
  std::vector<config::Matcher> databases;
  /// "file:line" it was read from.
  std::string source;

  /// True if this grant gives `right` on the normalised database path `database` (empty for
  /// node-wide rights, which only unlimited grants give).
  bool Gives(Right right, std::string_view database) const;
};

/// An immutable, validated ACL.
class Acl {
 public:
  Acl() = default;

  /// Loads the ACL file `file`. Returns OK (and fills `*out`) only if there were no errors;
  /// findings go to `*diagnostics` (may be null). The Status message summarises the errors
  /// ("2 errors in ACL file: acl.yaml:3: error: ...").
  static Status LoadFile(const std::string& file, Acl* out,
                         std::vector<config::ConfigDiagnostic>* diagnostics);

  /// Loads YAML text as if it were the file `source_name` (tests). Same rules as LoadFile.
  static Status LoadString(std::string_view yaml, const std::string& source_name, Acl* out,
                           std::vector<config::ConfigDiagnostic>* diagnostics);

  /// True if `principal` holds `right` on the normalised database path `database`; for node-wide
  /// rights (admin operations) `database` is empty.
  bool Allows(const std::string& principal, Right right, std::string_view database) const;

  /// OK if Allows; otherwise PermissionDenied naming the principal, what it tried (`right` on
  /// `database`, or `operation` when `database` is empty) and what it has, e.g.
  ///   principal "alice" may not write database "/tenants/bob/kv" (alice has readwrite on
  ///   /tenants/alice/*)
  Status Check(const std::string& principal, Right right, std::string_view database,
               std::string_view operation = {}) const;

  /// OK if `principal` has any grant (hello, members, listings); else PermissionDenied.
  Status CheckKnown(const std::string& principal) const;

  /// True if `principal` may read some database that `pattern` (a config's matcher) can serve:
  /// an unlimited grant, or a grant pattern that overlaps it (Matcher::Overlaps).
  bool MayReadSomeOf(const std::string& principal, const config::Matcher& pattern) const;
  /// The same for a matcher pattern as text (a ConfigInfo's `matcher`); false if it does not
  /// compile. What listings of configs and their histories show a principal.
  bool MayReadSomeOf(const std::string& principal, const std::string& pattern) const;

  /// "alice has readwrite on /tenants/alice/*", "ops has admin", "mallory is not in the ACL file".
  std::string Describe(const std::string& principal) const;

  /// The grants of `principal`, or nullptr when it is not in the file.
  const std::vector<AclGrant>* Find(const std::string& principal) const;

  /// The principal whose token (tokens: in the file) `token` is; false when none is. Hashes
  /// `token` and compares the digest with every stored one in constant time.
  bool PrincipalOfToken(std::string_view token, std::string* principal) const;

  /// Number of principals.
  size_t size() const { return principals_.size(); }
  /// Number of tokens.
  size_t token_count() const { return tokens_.size(); }
  /// The file it was read from.
  const std::string& source() const { return source_; }

 private:
  std::unordered_map<std::string, std::vector<AclGrant>> principals_;
  /// The SHA-256 digests (32 bytes) of the file's tokens and their principals.
  std::vector<std::pair<std::string, std::string>> tokens_;
  std::string source_;
};

/// The SHA-256 of `token` as 64 lowercase hex digits (what the ACL file's tokens hold).
std::string TokenSha256Hex(std::string_view token);

/// A new random bearer token: "kvmesh_" and 64 hex digits (256 bits from OpenSSL's RAND_bytes).
/// Errors: kInternal when the random generator fails.
Status NewBearerToken(std::string* token);

/// The node's current ACL, replaced by reloads and read by the client gateway on every request.
/// Thread-safe. Holding no ACL (no file configured) means every authenticated peer may do
/// everything.
class AclStore {
 public:
  /// `file` empty: no ACL, and Load is a no-op.
  explicit AclStore(std::string file) : file_(std::move(file)) {}

  /// True when an ACL file is configured.
  bool configured() const { return !file_.empty(); }
  const std::string& file() const { return file_; }

  /// Reads and checks the file without installing it: OK and `*out` filled, or the errors (and
  /// nothing else changes). Findings are appended to `*diagnostics` (may be null).
  Status Parse(std::shared_ptr<const Acl>* out,
               std::vector<config::ConfigDiagnostic>* diagnostics) const;

  /// Makes `acl` (from Parse) the current ACL; the next request checked sees it.
  void Install(std::shared_ptr<const Acl> acl);

  /// Parse, then Install if it succeeded.
  Status Load(std::vector<config::ConfigDiagnostic>* diagnostics = nullptr);

  /// The current ACL; null when none is configured (or none loaded yet).
  std::shared_ptr<const Acl> current() const;

  /// Bumped by every Install: a reader that cached current() re-reads it when this changed.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  const std::string file_;
  mutable std::mutex mutex_;
  std::shared_ptr<const Acl> current_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace kvmesh::security
