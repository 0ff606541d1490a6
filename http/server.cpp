// The HTTP API (http/server.hpp). The only translation unit of the node that includes httplib.h.
#include "http/server.hpp"

#include <httplib.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include "bootstrap/node_internal.hpp"
#include "common/address.hpp"
#include "common/hex.hpp"
#include "common/path.hpp"
#include "common/read_levels.hpp"
#include "common/request_limits.hpp"
#include "http/console.hpp"
#include "security/acl.hpp"
#include "security/tls.hpp"
#include "tools/base64.hpp"

namespace kvmesh::http {
namespace {

using json = nlohmann::json;

/// The HTTP status of a kvmesh error (README "HTTP API").
int HttpStatus(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kNotFound:
    case Code::kNoMatchingConfig:
      return 404;
    case Code::kSizeLimitExceeded:
    case Code::kValueTooLarge:
      return 413;
    case Code::kInvalidKey:
    case Code::kInvalidArgument:
    case Code::kInvalidConfig:
      return 400;
    case Code::kPermissionDenied:
      return 403;
    case Code::kConditionFailed:
      return 412;
    case Code::kTooManyInstances:
      return 409;
    case Code::kUnavailable:
    case Code::kNoSpace:
      return 503;
    case Code::kTimeout:
      return 504;
    default:
      return 500;
  }
}

/// Keys and paths are bytes; JSON text must be UTF-8, so bytes that are not become U+FFFD.
std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

/// Requests without credentials are refused with this prefix; they get 401 (with
/// WWW-Authenticate, so clients know to log in) rather than 403.
constexpr std::string_view kUnauthenticated = "unauthenticated: ";

Status Unauthenticated(const std::string& why) {
  return Status::PermissionDenied(std::string(kUnauthenticated) + why + "; nothing was done");
}

void ReplyError(httplib::Response& res, const Status& s) {
  int status = HttpStatus(s.code());
  if (s.code() == Code::kPermissionDenied && s.message().rfind(kUnauthenticated, 0) == 0) {
    status = 401;
    res.set_header("WWW-Authenticate", "Bearer realm=\"kvmesh\"");
  }
  Reply(res, status, json{{"code", CodeName(s.code())}, {"message", s.message()}});
}

void ReplyError(httplib::Response& res, Code code, const std::string& message) {
  ReplyError(res, Status(code, message));
}

/// Percent-decodes `in` ("+" stays "+"); false on a bad escape.
bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    int hi = i + 1 < in.size() ? HexDigit(in[i + 1]) : -1;
    int lo = i + 2 < in.size() ? HexDigit(in[i + 2]) : -1;
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

/// The `limit` (0 to `max`) and `cursor` (hex, as this API returns it) query parameters of a
/// paginated listing, if given.
Status ReadPageParams(const httplib::Request& req, uint32_t max, uint32_t* limit,
                      std::string* cursor) {
  if (req.has_param("limit")) {
    const std::string text = req.get_param_value("limit");
    char* end = nullptr;
    unsigned long v = std::strtoul(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || v > max) {
      return Status::InvalidArgument("limit: expected a number from 0 to " + std::to_string(max) +
                                     ", got " + Quote(text));
    }
    *limit = static_cast<uint32_t>(v);
  }
  if (req.has_param("cursor") && !HexDecode(req.get_param_value("cursor"), cursor)) {
    return Status::InvalidArgument("cursor: not a cursor this API returned (hex digits expected)");
  }
  return Status::OK();
}

/// The database request a target names: /v1/databases/{path}[/keys[/{key}] | /batch | /stats |
/// /status | /watch].
struct Target {
  std::string path;  // as given (percent-decoded, with a leading "/")
  std::string what;  // "keys", "key", "batch", "stats", "status" or "watch"
  std::string key;   // for "key"
};

/// Splits the raw target (no query) after "/v1/databases"; see http/server.hpp.
Status ParseTarget(std::string_view raw, Target* out) {
  static constexpr std::string_view kPrefix = "/v1/databases/";
  raw = raw.substr(kPrefix.size());
  std::string_view path_part, rest;
  size_t keys = raw.find("/keys/");
  if (keys != std::string_view::npos) {
    path_part = raw.substr(0, keys);
    rest = raw.substr(keys + 6);
    out->what = "key";
  } else {
    for (std::string_view tail : {"/keys", "/batch", "/stats", "/status", "/watch"}) {
      if (raw.size() > tail.size() && raw.substr(raw.size() - tail.size()) == tail) {
        path_part = raw.substr(0, raw.size() - tail.size());
        out->what = std::string(tail.substr(1));
        break;
      }
    }
    if (out->what.empty()) {
      return Status::NotFound(
          "no such endpoint: a database request ends in /keys, /keys/{key}, /batch, /stats, "
          "/status or /watch");
    }
  }
  std::string decoded;
  if (!PercentDecode(path_part, &decoded)) {
    return Status::InvalidArgument("bad percent-escape in the database path");
  }
  out->path = "/" + decoded;
  if (out->what == "key") {
    if (!PercentDecode(rest, &decoded)) {
      return Status::InvalidArgument("bad percent-escape in the key");
    }
    out->key = "/" + decoded;
  }
  return Status::OK();
}

/// The largest request body: a value, or a batch of values in base64 JSON (http/server.hpp).
size_t MaxBodyBytes(size_t max_value_bytes) {
  return max_value_bytes / 3 * 4 + (64u << 10);
}

/// The host part of a Host header value ("127.0.0.1:7371" -> "127.0.0.1", "[::1]:1" -> "::1").
std::string HostOf(const std::string& header) {
  if (!header.empty() && header[0] == '[') {
    const size_t close = header.find(']');
    return close == std::string::npos ? header : header.substr(1, close - 1);
  }
  return header.substr(0, header.find(':'));
}

/// Refuses what a web browser sends on behalf of another site: a request whose Origin is not the
/// API's own (a page elsewhere posting to the node: plaintext loopback requests carry no
/// credentials, so nothing else would stop it), and, without TLS, one addressed by a Host name
/// other than an IP address, "localhost" or the listen host (DNS rebinding: another site's name
/// resolving to this node, which would make its pages same-origin). Programs such as curl send
/// no Origin and an IP or the listen host; the console is same-origin.
Status CheckBrowserRequest(const httplib::Request& req, bool tls, const std::string& listen_host) {
  const std::string host_header = req.get_header_value("Host");
  if (!tls && !host_header.empty()) {
    const std::string host = HostOf(host_header);
    in6_addr v6{};
    in_addr v4{};
    const bool literal = ::inet_pton(AF_INET, host.c_str(), &v4) == 1 ||
                         ::inet_pton(AF_INET6, host.c_str(), &v6) == 1;
    if (!literal && host != "localhost" && host != listen_host) {
      return Status::PermissionDenied(
          "request addressed to host " + Quote(host) +
          ": without TLS the HTTP API answers only requests addressed to an IP address, "
          "localhost or its listen host (a browser tricked by DNS rebinding would use another "
          "name)");
    }
  }
  const std::string origin = req.get_header_value("Origin");
  if (!origin.empty() && origin != "http://" + host_header && origin != "https://" + host_header) {
    return Status::PermissionDenied("cross-site request from origin " + Quote(origin) +
                                    " refused: the HTTP API takes requests from its own pages "
                                    "and from programs, not from other sites' pages");
  }
  return Status::OK();
}

/// Who sent a request, as access control sees it.
struct Caller {
  /// Null: nothing is checked (TLS off, no ACL, or a node certificate).
  std::shared_ptr<const security::Acl> acl;
  std::string principal;
  /// "none" (plaintext), "certificate" or "token".
  std::string by = "none";

  /// Who to record as having asked (config histories): the principal, or "anonymous".
  std::string Who() const { return principal.empty() ? "anonymous" : principal; }
};

}  // namespace

struct HttpServer::Impl {
  Node* node = nullptr;
  HttpOptions options;
  std::unique_ptr<httplib::Server> server;
  std::shared_ptr<security::AclStore> acl_store;
  std::thread thread;
  int port = 0;
  /// Set when the server stops: watch streams end (each holds a thread of the pool).
  std::atomic<bool> stopping{false};
  /// Watch streams open now, at most half the threads (the rest serve other requests).
  std::atomic<size_t> watch_streams{0};

  // Database handles by normalised path: opening goes through the node's supervisor, a handle
  // is thread-safe and reusable. Bounded: cleared when full.
  std::mutex handles_mutex;
  std::unordered_map<std::string, Database> handles;

  /// Identifies the sender by its bearer token when it sends one, else by its client
  /// certificate (verified by the handshake). With TLS every request needs one of the two.
  Status Identify(const httplib::Request& req, Caller* out) const {
    if (!options.tls.enabled()) return Status::OK();
    if (req.has_header("Authorization")) return IdentifyByToken(req, out);
    X509* cert = req.ssl ? SSL_get1_peer_certificate(req.ssl) : nullptr;
    if (!cert) {
      return Unauthenticated(
          "no client certificate and no Authorization: Bearer token (kvmesh token new)");
    }
    out->by = "certificate";
    security::PeerIdentity identity;
    Status s = security::IdentityOfCertificate(cert, &identity);
    X509_free(cert);
    if (!s.ok()) return Status::PermissionDenied("client certificate: " + s.message());
    out->principal = identity.name;
    // Node certificates are the cluster's own machinery, as at the client port.
    if (identity.role == security::PeerRole::kNode) return Status::OK();
    if (!acl_store || !acl_store->configured()) return Status::OK();
    out->acl = acl_store->current();
    if (!out->acl) {
      return Status::PermissionDenied("principal " + Quote(identity.name) +
                                      " may not do anything: no ACL is loaded yet");
    }
    return Status::OK();
  }

  /// A bearer token names the principal of the ACL file's tokens (security/acl.hpp).
  Status IdentifyByToken(const httplib::Request& req, Caller* out) const {
    const std::string header = req.get_header_value("Authorization");
    static constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) {
      return Unauthenticated("the Authorization header must be \"Bearer <token>\"");
    }
    if (!acl_store || !acl_store->configured()) {
      return Unauthenticated(
          "this node has no ACL file, so no bearer tokens; use a client certificate");
    }
    auto acl = acl_store->current();
    std::string principal;
    if (!acl ||
        !acl->PrincipalOfToken(std::string_view(header).substr(kBearer.size()), &principal)) {
      return Unauthenticated("the bearer token is not in the ACL file (mistyped, or revoked)");
    }
    out->acl = std::move(acl);
    out->principal = std::move(principal);
    out->by = "token";
    return Status::OK();
  }

  /// OK if the sender holds `right` on the normalised `database` (security/acl.hpp).
  /// `caller` (may be null) gets who sent it.
  Status Authorize(const httplib::Request& req, security::Right right, std::string_view database,
                   Caller* caller = nullptr) const {
    Caller local;
    Caller& c = caller != nullptr ? *caller : local;
    Status s = Identify(req, &c);
    if (!s.ok() || !c.acl) return s;
    return c.acl->Check(c.principal, right, database);
  }

  Status AuthorizeKnown(const httplib::Request& req, Caller* caller) const {
    Status s = Identify(req, caller);
    if (!s.ok() || !caller->acl) return s;
    return caller->acl->CheckKnown(caller->principal);
  }

  Database Open(const std::string& path) {
    std::lock_guard<std::mutex> lock(handles_mutex);
    auto it = handles.find(path);
    if (it != handles.end()) return it->second;
    Database db = node->open(path);
    if (!db.ok()) return db;
    if (handles.size() >= 1024) handles.clear();
    handles.emplace(path, db);
    return db;
  }

  /// `?ttl=30s` (puts only), `If-Match: "<version>"` and `If-None-Match: *` as WriteOptions.
  static Status ParseWriteOptions(const httplib::Request& req, bool put, WriteOptions* options) {
    if (req.has_param("ttl")) {
      if (!put) return Status::InvalidArgument("ttl applies to PUT only");
      Status s = ParseTtl(req.get_param_value("ttl"), &options->ttl);
      if (!s.ok()) return s;
    }
    if (req.has_header("If-Match")) {
      std::string tag = req.get_header_value("If-Match");
      if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"') {
        tag = tag.substr(1, tag.size() - 2);
      }
      if (tag.empty() || tag == "*") {
        return Status::InvalidArgument("If-Match takes one version as the ETag of a GET gives it");
      }
      options->if_version = tag;
    }
    if (req.has_header("If-None-Match")) {
      if (!put || req.get_header_value("If-None-Match") != "*") {
        return Status::InvalidArgument(
            "If-None-Match takes only * (the key must be absent), on PUT");
      }
      options->if_absent = true;
    }
    return Status::OK();
  }

  /// `?consistency=` (README "Read levels") into `*level`, and `?session=TOKEN` (a session's
  /// token): then `*db` becomes a handle of that session, whose writes extend it. Errors name
  /// the bad parameter.
  static Status ParseReadLevelAndSession(const httplib::Request& req, ReadConsistency* level,
                                         Database* db) {
    if (req.has_param("consistency")) {
      Status s = ParseReadLevel(req.get_param_value("consistency"), level);
      if (!s.ok()) return Status::InvalidArgument("consistency: " + s.message());
    }
    if (req.has_param("session") || *level == ReadConsistency::kReadYourWrites) {
      Database session = db->with_session();
      Status s = session.set_session_token(req.get_param_value("session"));
      if (!s.ok()) return s;
      *db = std::move(session);
    }
    return Status::OK();
  }

  void HandleDatabase(const httplib::Request& req, httplib::Response& res) {
    std::string_view raw = req.target;
    raw = raw.substr(0, raw.find('?'));
    Target t;
    Status s = ParseTarget(raw, &t);
    if (!s.ok()) return ReplyError(res, s);
    std::string path;
    s = NormalizeDatabasePath(t.path, &path);
    if (!s.ok()) return ReplyError(res, s);
    const std::string& m = req.method;
    bool write = (t.what == "key" && (m == "PUT" || m == "DELETE")) || t.what == "batch";
    bool allowed = (t.what == "key" && (m == "GET" || m == "PUT" || m == "DELETE")) ||
                   (t.what == "batch" && m == "POST") ||
                   (t.what != "key" && t.what != "batch" && m == "GET");
    if (!allowed) {
      return ReplyError(res, Code::kInvalidArgument,
                        "method " + m + " is not allowed on /" + t.what);
    }
    s = Authorize(req, write ? security::Right::kWrite : security::Right::kRead, path);
    if (!s.ok()) return ReplyError(res, s);
    Database db = Open(path);
    if (!db.ok()) return ReplyError(res, db.status());
    ReadConsistency level = ReadConsistency::kEventual;
    s = ParseReadLevelAndSession(req, &level, &db);
    if (!s.ok()) return ReplyError(res, s);
    // A read level on a write would be ignored: say so rather than pretend.
    if (write && req.has_param("consistency")) {
      return ReplyError(res, Code::kInvalidArgument,
                        "consistency applies to reads (GET of a key, the keys listing); " + m +
                            " /" + t.what + " takes session= only");
    }
    // A write in a session answers with the session's token, to read it back elsewhere.
    auto session_header = [&] {
      if (req.has_param("session")) res.set_header("Kvmesh-Session", db.session_token());
    };

    if (t.what == "key") {
      if (m == "GET") {
        // The version goes in the ETag, for If-Match on a later PUT or DELETE.
        Result<VersionedValue> value = db.get_versioned(t.key, {level});
        if (!value.ok()) return ReplyError(res, value.status());
        res.status = 200;
        res.set_header("ETag", "\"" + value->version + "\"");
        res.set_content(value->value, "application/octet-stream");
      } else {
        WriteOptions options;
        s = ParseWriteOptions(req, m == "PUT", &options);
        if (!s.ok()) return ReplyError(res, s);
        if (m == "PUT") {
          s = db.put(t.key, req.body, options);
          if (!s.ok()) return ReplyError(res, s);
          session_header();
          Reply(res, 200, json{{"ok", true}, {"bytes", req.body.size()}});
          return;
        }
        s = db.erase(t.key, options);
        if (!s.ok()) return ReplyError(res, s);
        session_header();
        Reply(res, 200, json{{"ok", true}});
      }
    } else if (t.what == "keys") {
      ListOptions lo;
      lo.prefix = req.get_param_value("prefix");
      if (Status bad = ReadPageParams(req, kMaxListLimit, &lo.limit, &lo.start_after); !bad.ok()) {
        return ReplyError(res, bad);
      }
      const std::string values = req.get_param_value("values");
      lo.with_values = values == "1" || values == "true";
      lo.start = req.get_param_value("start");
      lo.end = req.get_param_value("end");
      const std::string reverse = req.get_param_value("reverse");
      if (!reverse.empty() && reverse != "0" && reverse != "1" && reverse != "false" &&
          reverse != "true") {
        return ReplyError(res, Code::kInvalidArgument,
                          "reverse: expected 1, true, 0 or false, got " + Quote(reverse));
      }
      lo.reverse = reverse == "1" || reverse == "true";
      lo.consistency = level;
      Result<ListPage> page = db.list_page(lo);
      if (!page.ok()) return ReplyError(res, page.status());
      json items = json::array();
      for (size_t i = 0; i < page->keys.size(); ++i) {
        json item{{"key", page->keys[i]}};
        if (lo.with_values && i < page->values.size()) {
          item["value_base64"] = tools::Base64Encode(page->values[i]);
        }
        items.push_back(std::move(item));
      }
      json body{{"keys", std::move(items)}};
      if (page->has_more()) body["next_cursor"] = HexEncode(page->next_token);
      Reply(res, 200, body);
    } else if (t.what == "batch") {
      json ops = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (ops.is_object() && ops.contains("ops")) ops = ops["ops"];
      if (!ops.is_array()) {
        return ReplyError(res, Code::kInvalidArgument,
                          "batch: expected a JSON array of operations (or {\"ops\": [...]})");
      }
      WriteBatch batch;
      for (size_t i = 0; i < ops.size(); ++i) {
        const json& op = ops[i];
        const std::string where = "batch op " + std::to_string(i) + ": ";
        if (!op.is_object() || !op.contains("op") || !op["op"].is_string() || !op.contains("key") ||
            !op["key"].is_string()) {
          return ReplyError(res, Code::kInvalidArgument,
                            where + "expected {\"op\": \"put\"|\"erase\", \"key\": string, ...}");
        }
        const std::string kind = op["op"].get<std::string>();
        std::string key = op["key"].get<std::string>();
        if (kind == "erase" || kind == "delete") {
          batch.Erase(std::move(key));
        } else if (kind == "put") {
          std::string value;
          if (op.contains("value_base64") && op["value_base64"].is_string()) {
            if (!tools::Base64Decode(op["value_base64"].get<std::string>(), &value)) {
              return ReplyError(res, Code::kInvalidArgument, where + "value_base64 is not base64");
            }
          } else if (op.contains("value") && op["value"].is_string()) {
            value = op["value"].get<std::string>();
          } else {
            return ReplyError(res, Code::kInvalidArgument,
                              where + "a put needs value_base64 (or value, a string)");
          }
          std::chrono::milliseconds ttl{0};
          if (op.contains("ttl")) {
            if (!op["ttl"].is_string()) {
              return ReplyError(res, Code::kInvalidArgument,
                                where + "ttl must be a string (\"30s\")");
            }
            s = ParseTtl(op["ttl"].get<std::string>(), &ttl);
            if (!s.ok()) return ReplyError(res, s.code(), where + s.message());
          }
          batch.Put(std::move(key), std::move(value), static_cast<uint64_t>(ttl.count()));
        } else if (kind == "check") {
          // {"op":"check","key":K,"version":V}, or without version: K must be absent.
          std::string version;
          if (op.contains("version")) {
            // A version of another type is a mistake, not "must be absent".
            if (!op["version"].is_string() || op["version"].get<std::string>().empty()) {
              return ReplyError(res, Code::kInvalidArgument,
                                where +
                                    "\"version\" must be a version string (leave it out to "
                                    "require the key to be absent)");
            }
            version = op["version"].get<std::string>();
          }
          batch.Check(std::move(key), std::move(version));
        } else {
          return ReplyError(res, Code::kInvalidArgument,
                            where + "unknown op " + Quote(kind) + " (put, erase or check)");
        }
      }
      s = db.write(batch);
      if (!s.ok()) return ReplyError(res, s);
      session_header();
      Reply(res, 200, json{{"ok", true}, {"ops", batch.size()}});
    } else if (t.what == "watch") {
      HandleWatch(req, res, db);
    } else if (t.what == "stats") {
      Result<DatabaseStats> st = db.stats();
      if (!st.ok()) return ReplyError(res, st.status());
      Reply(res, 200,
            json{{"path", st->path},
                 {"config", st->config_id},
                 {"database_id", st->database_id},
                 {"keys", st->key_count},
                 {"used_bytes", st->used_bytes},
                 {"limit_bytes", st->limit_bytes}});
    } else {
      Result<ReplicationStatus> st = db.replication_status();
      if (!st.ok()) return ReplyError(res, st.status());
      // Node ids and digests as hex text: JSON numbers lose precision beyond 2^53 in JavaScript.
      json replicas = json::array();
      for (uint64_t r : st->replicas) replicas.push_back(FormatNodeId(r));
      json peers = json::array();
      for (const PeerReplicaStatus& p : st->peers) {
        peers.push_back(json{{"node_id", FormatNodeId(p.node_id)},
                             {"reachable", p.reachable},
                             {"version_vector", p.version_vector},
                             {"writes_seen", p.writes_seen},
                             {"pending_deltas", p.pending_deltas}});
      }
      Reply(res, 200,
            json{{"path", st->path},
                 {"node_id", FormatNodeId(st->node_id)},
                 {"replicas", replicas},
                 {"min", st->min},
                 {"max", st->max},
                 {"required_acks", st->required_acks},
                 {"keys", st->key_count},
                 {"used_bytes", st->used_bytes},
                 {"tombstones", st->tombstones},
                 {"digest", FormatNodeId(st->digest)},
                 {"version_vector", st->version_vector},
                 {"writes_seen", st->writes_seen},
                 {"entries_received", st->entries_received},
                 {"entries_applied", st->entries_applied},
                 {"peers", std::move(peers)}});
    }
  }

  /// GET /v1/databases/{path}/watch?prefix=P&from=POSITION&values=1: server-sent events (README
  /// "Watch"), one per change: "event: put" or "event: delete", data {"key", "version"
  /// [, "value_base64"]}; the last event of each update carries "id: <position>", so a browser's
  /// EventSource resumes by itself (Last-Event-ID, which wins over `from`); the stream opens with
  /// an id-only message of the position it starts from. A comment line
  /// every 2 s keeps proxies from closing the stream and tells a lost client apart. An error
  /// that ends the watch is "event: error" with {"code", "message"}, then the end.
  void HandleWatch(const httplib::Request& req, httplib::Response& res, const Database& db) {
    WatchOptions options;
    options.prefix = req.get_param_value("prefix");
    // A browser's EventSource reconnects with the same URL and the Last-Event-ID it saw last:
    // that header wins over `from`, which only says where the first connection starts.
    options.from = req.has_header("Last-Event-ID") ? req.get_header_value("Last-Event-ID")
                                                   : req.get_param_value("from");
    const std::string values = req.get_param_value("values");
    options.with_values = values == "1" || values == "true";
    const size_t max_streams = std::max<size_t>(1, this->options.threads / 2);
    if (watch_streams.fetch_add(1) >= max_streams) {
      watch_streams.fetch_sub(1);
      return ReplyError(res, Code::kUnavailable,
                        "this node's HTTP API serves " + std::to_string(max_streams) +
                            " watch streams already (half its threads); try again later");
    }
    // The watch's thread formats updates into `chunks`; the connection's thread writes them.
    // At most kMaxChunks wait: a slow client stalls the watch's callback, so the watch falls
    // behind to a position instead of filling memory.
    struct Stream {
      std::mutex mutex;
      std::condition_variable cv;
      std::deque<std::string> chunks;
      bool ended = false;  // the client went away (or the server stops)
      Watch watch;
    };
    static constexpr size_t kMaxChunks = 16;
    auto stream = std::make_shared<Stream>();
    auto on_update = [stream, with_values = options.with_values](Result<WatchUpdate> update) {
      std::string chunk;
      if (!update.ok()) {
        chunk = "event: error\ndata: " +
                Dump(json{{"code", CodeName(update.status().code())},
                          {"message", update.status().message()}}) +
                "\n\n";
      }
      for (size_t i = 0; update.ok() && i < update->events.size(); ++i) {
        const WatchEvent& e = update->events[i];
        const bool put = e.kind == WatchEvent::Kind::kPut;
        json data{{"key", e.key}, {"version", e.version}};
        if (with_values && put) data["value_base64"] = tools::Base64Encode(e.value);
        if (i + 1 == update->events.size()) chunk += "id: " + update->position + "\n";
        chunk +=
            std::string("event: ") + (put ? "put" : "delete") + "\ndata: " + Dump(data) + "\n\n";
      }
      std::unique_lock<std::mutex> lock(stream->mutex);
      stream->cv.wait(lock, [&] { return stream->ended || stream->chunks.size() < kMaxChunks; });
      if (stream->ended) return;
      stream->chunks.push_back(std::move(chunk));
      if (!update.ok()) stream->chunks.push_back("");  // the end
      stream->cv.notify_all();
    };
    Status s = db.watch(options, on_update, &stream->watch);
    if (!s.ok()) {
      watch_streams.fetch_sub(1);
      return ReplyError(res, s);
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    // The position the stream starts from, so a client that sees no event can still resume: as
    // a comment for people and as an id-only message, which sets an EventSource's Last-Event-ID
    // without firing an event. Watch::position() has not passed any event not yet handed over.
    const std::string position = stream->watch.position();
    const std::string start = ": position " + position + "\nid: " + position + "\n\n";
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, stream, start, &req, db, last_id = position, first = true](
            size_t, httplib::DataSink& sink) mutable {
          if (first) {
            first = false;
            return sink.write(start.data(), start.size());
          }
          // Read before the chunks are looked at: an update's position is set only after its
          // chunk was queued, so if no chunk is waiting below, this position passes no event
          // that was not written.
          const std::string position = stream->watch.position();
          std::unique_lock<std::mutex> lock(stream->mutex);
          stream->cv.wait_for(lock, std::chrono::seconds(2),
                              [&] { return !stream->chunks.empty() || stopping.load(); });
          if (stopping.load()) return false;
          // Rights are judged again before anything more is sent (at least every 2 s): a
          // reloaded ACL that no longer lets the caller read the database, or a revoked token,
          // ends the stream as any request of it would be refused. (`req` lives while the
          // response is written.)
          if (Status allowed = Authorize(req, security::Right::kRead, db.path()); !allowed.ok()) {
            lock.unlock();
            const std::string end =
                "event: error\ndata: " +
                Dump(json{{"code", CodeName(allowed.code())}, {"message", allowed.message()}}) +
                "\n\n";
            if (!sink.write(end.data(), end.size())) return false;
            sink.done();
            return true;
          }
          if (stream->chunks.empty()) {
            // The keep-alive carries the position when it moved (an id-only message sets an
            // EventSource's Last-Event-ID without an event): the position also records when the
            // watcher was last caught up, so one that reconnects after a long quiet time resumes
            // from a fresh one instead of being refused as expired (README "Watch").
            std::string keep_alive = ": keep-alive\n";
            if (position != last_id) keep_alive += "id: " + position + "\n";
            keep_alive += "\n";
            last_id = position;
            return sink.write(keep_alive.data(), keep_alive.size());
          }
          std::string chunk = std::move(stream->chunks.front());
          stream->chunks.pop_front();
          stream->cv.notify_all();
          lock.unlock();
          if (chunk.empty()) {
            sink.done();
            return true;
          }
          return sink.write(chunk.data(), chunk.size());
        },
        [this, stream](bool) {
          {
            std::lock_guard<std::mutex> lock(stream->mutex);
            stream->ended = true;
          }
          stream->cv.notify_all();
          stream->watch.stop();
          watch_streams.fetch_sub(1);
        });
  }

  void HandleDatabases(const httplib::Request& req, httplib::Response& res) {
    Caller caller;
    Status s = AuthorizeKnown(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    auto infos = node->databases();
    if (!infos.ok()) return ReplyError(res, infos.status());
    json out = json::array();
    for (const DatabaseInfo& d : *infos) {
      // Listings show a principal only what it may read, as at the client port.
      if (caller.acl && !caller.acl->Allows(caller.principal, security::Right::kRead, d.path)) {
        continue;
      }
      out.push_back(json{{"path", d.path},
                         {"config", d.config_id},
                         {"database_id", d.database_id},
                         {"created_ms", d.created_ms}});
    }
    Reply(res, 200, out);
  }

  /// The {id} of "/v1/configs/{id}[/...]" (empty for "/v1/configs"); false if its percent-escapes
  /// are bad.
  static bool ConfigIdOf(const httplib::Request& req, std::string* id) {
    std::string_view raw = req.target;
    raw = raw.substr(0, raw.find('?'));
    if (raw.size() <= 12) return true;  // "/v1/configs"
    raw = raw.substr(12);
    return PercentDecode(raw.substr(0, raw.find('/')), id);
  }

  static json ConfigJson(const ConfigInfo& c) {
    return json{{"id", c.id},
                {"description", c.description},
                {"tags", c.tags},
                {"matcher", c.matcher},
                {"matcher_kind", c.matcher_kind},
                {"replication", {{"min", c.replication_min}, {"max", c.replication_max}}},
                {"size_bytes", c.size_bytes},
                {"max_instances", c.max_instances},
                {"source", c.source},
                {"origin", c.origin}};
  }

  /// PUT /v1/configs/{id} (one config, which gets or must have that id), POST /v1/configs (any
  /// number, ids in the body) and POST /v1/configs/validate (`dry_run`): the body is YAML or JSON
  /// in the config-file format; cluster-wide, admin only (Node::apply_configs).
  void HandleConfigApply(const httplib::Request& req, httplib::Response& res, bool named,
                         bool dry_run) {
    std::string id;
    if (named && !ConfigIdOf(req, &id)) {
      return ReplyError(res, Code::kInvalidArgument, "bad percent-escape in the config id");
    }
    Caller caller;
    Status s = Authorize(req, security::Right::kAdmin, {}, &caller);
    if (!s.ok()) return ReplyError(res, s);
    ConfigApplyOptions options;
    options.dry_run = dry_run;
    options.id = id;
    options.source_name = "request body";
    options.applied_by = caller.Who();
    auto applied = node->apply_configs(req.body, options);
    if (!applied.ok()) return ReplyError(res, applied.status());
    json configs = json::array();
    for (const ConfigInfo& c : applied->configs) configs.push_back(ConfigJson(c));
    json out{{"configs", configs}, {"warnings", applied->warnings}};
    if (configs.size() == 1) out["config"] = configs[0];
    if (dry_run) out["ok"] = true;
    Reply(res, 200, out);
  }

  /// DELETE /v1/configs/{id}: a cluster-wide config, admin only (Node::delete_config).
  void HandleConfigDelete(const httplib::Request& req, httplib::Response& res) {
    std::string id;
    if (!ConfigIdOf(req, &id)) {
      return ReplyError(res, Code::kInvalidArgument, "bad percent-escape in the config id");
    }
    Caller caller;
    Status s = Authorize(req, security::Right::kAdmin, {}, &caller);
    if (!s.ok()) return ReplyError(res, s);
    auto deleted = node->delete_config(id, caller.Who());
    if (!deleted.ok()) return ReplyError(res, deleted.status());
    Reply(res, 200, json{{"deleted", id}, {"warnings", deleted->warnings}});
  }

  /// GET /v1/configs/{id}/history: every apply and delete of a cluster-wide config, oldest first.
  void HandleConfigHistory(const httplib::Request& req, httplib::Response& res) {
    std::string id;
    if (!ConfigIdOf(req, &id)) {
      return ReplyError(res, Code::kInvalidArgument, "bad percent-escape in the config id");
    }
    Caller caller;
    Status s = AuthorizeKnown(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    auto history = node->config_history(id);
    if (!history.ok()) return ReplyError(res, history.status());
    // As the config listing: only configs whose matcher may serve a database the caller may read.
    if (caller.acl && std::none_of(history->begin(), history->end(), [&](const auto& e) {
          return !e.deleted && caller.acl->MayReadSomeOf(caller.principal, e.config.matcher);
        })) {
      return ReplyError(res, Code::kNotFound, "no cluster-wide config " + Quote(id));
    }
    json out = json::array();
    for (const ConfigHistoryEntry& e : *history) {
      out.push_back(json{{"config", ConfigJson(e.config)},
                         {"deleted", e.deleted},
                         {"applied_by", e.applied_by},
                         {"node", e.node},
                         {"time_ms", e.time_ms},
                         {"in_force", e.in_force}});
    }
    Reply(res, 200, out);
  }

  /// GET /v1/configs/{id}/instances?limit=&cursor=: one page of the config's databases on this
  /// node (Node::instances), those the caller may read.
  void HandleInstances(const httplib::Request& req, httplib::Response& res) {
    std::string id;
    if (!PercentDecode(req.matches[1].str(), &id)) {
      return ReplyError(res, Code::kInvalidArgument, "bad percent-escape in the config id");
    }
    Caller caller;
    Status s = AuthorizeKnown(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    InstanceOptions options;
    s = ReadPageParams(req, kMaxInstanceLimit, &options.limit, &options.cursor);
    if (!s.ok()) return ReplyError(res, s);
    auto page = node->instances(id, options);
    if (!page.ok()) return ReplyError(res, page.status());
    json items = json::array();
    for (const InstanceInfo& i : page->instances) {
      if (caller.acl && !caller.acl->Allows(caller.principal, security::Right::kRead, i.path)) {
        continue;
      }
      json replicas = json::array();
      for (uint64_t r : i.replicas) replicas.push_back(FormatNodeId(r));
      items.push_back(json{{"path", i.path},
                           {"config", i.config_id},
                           {"database_id", i.database_id},
                           {"created_ms", i.created_ms},
                           {"last_access_ms", i.last_access_ms},
                           {"active", i.active},
                           {"keys", i.key_count},
                           {"used_bytes", i.used_bytes},
                           {"replicas", std::move(replicas)}});
    }
    json body{{"instances", std::move(items)}};
    if (page->has_more()) body["next_cursor"] = HexEncode(page->next_cursor);
    Reply(res, 200, body);
  }

  /// GET /v1/configs lists the configs; GET /v1/configs/{id} answers one (404 if unknown).
  void HandleConfigs(const httplib::Request& req, httplib::Response& res) {
    std::string id;
    if (!ConfigIdOf(req, &id)) {
      return ReplyError(res, Code::kInvalidArgument, "bad percent-escape in the config id");
    }
    Caller caller;
    Status s = AuthorizeKnown(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    auto infos = node->configs();
    if (!infos.ok()) return ReplyError(res, infos.status());
    json out = json::array();
    for (const ConfigInfo& c : *infos) {
      if (caller.acl && !caller.acl->MayReadSomeOf(caller.principal, c.matcher)) continue;
      if (!id.empty() && c.id != id) continue;
      out.push_back(ConfigJson(c));
    }
    if (!id.empty()) {
      if (out.empty()) return ReplyError(res, Code::kNotFound, "no database config " + Quote(id));
      return Reply(res, 200, out[0]);
    }
    Reply(res, 200, out);
  }

  /// Prometheus text (Node::metrics); like members, any principal in the ACL may read it.
  void HandleMetrics(const httplib::Request& req, httplib::Response& res) {
    Caller caller;
    Status s = AuthorizeKnown(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    auto text = node->metrics();
    if (!text.ok()) return ReplyError(res, text.status());
    res.set_content(*text, "text/plain; version=0.0.4; charset=utf-8");
  }

  void HandleMembers(const httplib::Request& req, httplib::Response& res) {
    Caller caller;
    Status s = AuthorizeKnown(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    auto members = node->members();
    if (!members.ok()) return ReplyError(res, members.status());
    json out = json::array();
    for (const MemberStatus& m : *members) {
      out.push_back(json{{"node_id", FormatNodeId(m.node_id)},
                         {"cluster_address", m.cluster_address},
                         {"client_port", m.client_port},
                         {"alive", m.alive},
                         {"self", m.self},
                         {"silent_ms", m.silent_ms},
                         {"sync", m.sync},
                         {"low_space", m.low_space},
                         {"free_disk_bytes", m.free_disk_bytes},
                         {"placement", m.placement.empty() ? "active" : m.placement},
                         {"drain_total", m.drain_total},
                         {"drain_left", m.drain_left},
                         {"rebalance_pending", m.rebalance_pending}});
    }
    Reply(res, 200, out);
  }

  /// POST /v1/members/{id}/drain or /undrain: takes a node out of placement or puts it back,
  /// admin only (Node::drain_node).
  void HandleDrain(const httplib::Request& req, httplib::Response& res, bool drain) {
    Caller caller;
    Status s = Authorize(req, security::Right::kAdmin, {}, &caller);
    if (!s.ok()) return ReplyError(res, s);
    uint64_t id = 0;
    const std::string text = req.matches[1];
    if (!ParseNodeId(text, &id)) {
      return ReplyError(res, Code::kInvalidArgument,
                        Quote(text) + " is not a node id (16 hex digits, as /v1/members shows)");
    }
    auto summary =
        drain ? node->drain_node(id, caller.Who()) : node->undrain_node(id, caller.Who());
    if (!summary.ok()) return ReplyError(res, summary.status());
    Reply(res, 200, json{{"node_id", FormatNodeId(id)}, {"summary", *summary}});
  }

  /// GET /v1/whoami[?database=PATH]: who the request speaks for and what it may do, so the
  /// console shows only the actions the server would allow (it refuses the others anyway).
  void HandleWhoami(const httplib::Request& req, httplib::Response& res) {
    Caller caller;
    Status s = Identify(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    const bool all = !caller.acl;  // plaintext, no ACL or a node certificate: every right
    json out{{"by", caller.by},
             {"principal", caller.principal.empty() ? json() : json(caller.principal)},
             {"admin", all || caller.acl->Allows(caller.principal, security::Right::kAdmin, "")},
             {"rights", all ? "every right" : caller.acl->Describe(caller.principal)}};
    if (req.has_param("database")) {
      std::string path;
      s = NormalizeDatabasePath(req.get_param_value("database"), &path);
      if (!s.ok()) return ReplyError(res, s);
      out["database"] = {
          {"path", path},
          {"read", all || caller.acl->Allows(caller.principal, security::Right::kRead, path)},
          {"write", all || caller.acl->Allows(caller.principal, security::Right::kWrite, path)}};
    }
    Reply(res, 200, out);
  }

  void HandleHealth(const httplib::Request& req, httplib::Response& res) {
    // Any verified certificate may ask (load balancers and probes hold no ACL grant).
    Caller caller;
    Status s = Identify(req, &caller);
    if (!s.ok()) return ReplyError(res, s);
    Status health = node->health();
    if (health.ok()) {
      Reply(res, 200, json{{"status", "ok"}, {"node_id", FormatNodeId(node->node_id())}});
    } else {
      Reply(res, 503,
            json{{"status", "failed"},
                 {"code", CodeName(health.code())},
                 {"message", health.message()},
                 {"node_id", FormatNodeId(node->node_id())}});
    }
  }

  void Routes() {
    httplib::Server& srv = *server;
    auto db = [this](const httplib::Request& req, httplib::Response& res) {
      HandleDatabase(req, res);
    };
    const std::string dbs = R"(/v1/databases/.+)";
    srv.Get(dbs, db);
    srv.Put(dbs, db);
    srv.Delete(dbs, db);
    srv.Post(dbs, db);
    srv.Get("/v1/databases", [this](const httplib::Request& req, httplib::Response& res) {
      HandleDatabases(req, res);
    });
    srv.Get(R"(/v1/configs(/[^/]+)?)", [this](const httplib::Request& req, httplib::Response& res) {
      HandleConfigs(req, res);
    });
    srv.Get(R"(/v1/configs/[^/]+/history)",
            [this](const httplib::Request& req, httplib::Response& res) {
              HandleConfigHistory(req, res);
            });
    srv.Post("/v1/configs/validate", [this](const httplib::Request& req, httplib::Response& res) {
      HandleConfigApply(req, res, /*named=*/false, /*dry_run=*/true);
    });
    srv.Post("/v1/configs", [this](const httplib::Request& req, httplib::Response& res) {
      HandleConfigApply(req, res, /*named=*/false, /*dry_run=*/false);
    });
    srv.Put(R"(/v1/configs/[^/]+)", [this](const httplib::Request& req, httplib::Response& res) {
      HandleConfigApply(req, res, /*named=*/true, /*dry_run=*/false);
    });
    srv.Delete(R"(/v1/configs/[^/]+)", [this](const httplib::Request& req, httplib::Response& res) {
      HandleConfigDelete(req, res);
    });
    srv.Get(
        R"(/v1/configs/([^/]+)/instances)",
        [this](const httplib::Request& req, httplib::Response& res) { HandleInstances(req, res); });
    srv.Get("/v1/members", [this](const httplib::Request& req, httplib::Response& res) {
      HandleMembers(req, res);
    });
    srv.Post(R"(/v1/members/([^/]+)/(drain|undrain))",
             [this](const httplib::Request& req, httplib::Response& res) {
               HandleDrain(req, res, req.matches[2] == "drain");
             });
    srv.Get("/v1/health", [this](const httplib::Request& req, httplib::Response& res) {
      HandleHealth(req, res);
    });
    srv.Get("/v1/whoami", [this](const httplib::Request& req, httplib::Response& res) {
      HandleWhoami(req, res);
    });
    // The web console (http/console.hpp): static files, public like any login page; everything
    // it shows comes from the API above, under the caller's credentials.
    srv.Get(R"(/|/console/[A-Za-z0-9._-]+)",
            [](const httplib::Request& req, httplib::Response& res) {
              const ConsoleAsset* asset =
                  FindConsoleAsset(req.path == "/" ? "index.html" : req.path.substr(9));
              if (asset == nullptr) {
                return ReplyError(res, Code::kNotFound, "no such console file " + req.path);
              }
              res.set_header("Cache-Control", "no-cache");
              res.set_header("X-Content-Type-Options", "nosniff");
              res.set_content(asset->data, asset->size, asset->content_type);
            });
    srv.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      HandleMetrics(req, res);
    });
    // Before any route: what another site's page would send through a browser.
    srv.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      Status s = CheckBrowserRequest(req, options.tls.enabled(), options.host);
      if (s.ok()) return httplib::Server::HandlerResponse::Unhandled;
      ReplyError(res, s);
      return httplib::Server::HandlerResponse::Handled;
    });
    // httplib's own refusals (unknown route 404, oversized body 413, malformed request 400)
    // get the same JSON error shape; handlers' replies already have a body.
    const size_t max_body = MaxBodyBytes(options.max_value_bytes);
    srv.set_error_handler([max_body](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      Code code = res.status == 404   ? Code::kNotFound
                  : res.status == 413 ? Code::kValueTooLarge
                  : res.status == 400 ? Code::kInvalidArgument
                                      : Code::kInternal;
      std::string message = res.status == 404 ? "no such endpoint"
                            : res.status == 413
                                ? "request body larger than the HTTP API's bound of " +
                                      std::to_string(max_body) + " bytes"
                                : "request refused (" + std::to_string(res.status) + ")";
      res.set_content(Dump(json{{"code", CodeName(code)}, {"message", message}}),
                      "application/json");
    });
    srv.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          ReplyError(res, Code::kInternal, "internal error while serving the request");
        });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  impl_->stopping = true;
  if (impl_->server) impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t HttpServer::port() const {
  return static_cast<uint16_t>(impl_->port);
}

bool HttpServer::tls() const {
  return impl_->options.tls.enabled();
}

Status HttpServer::Start(Node& node, HttpOptions options, std::unique_ptr<HttpServer>* out) {
  if (options.port < 0 || options.port > 65535) {
    return Status::InvalidArgument("HTTP port must be from 0 to 65535, got " +
                                   std::to_string(options.port));
  }
  if (options.threads == 0) return Status::InvalidArgument("HTTP threads must be at least 1");
  bool plaintext = false;
  Status exposure =
      CheckPlaintextListener("HTTP API", options.host, options.port, options.tls.enabled(),
                             options.insecure_plaintext, &plaintext);
  if (!exposure.ok()) return exposure;
  if (plaintext) {
    spdlog::warn(
        "the HTTP API listens on {}:{} without TLS: anyone who can reach it can read "
        "and change every database",
        options.host, options.port);
  }
  auto impl = std::make_unique<Impl>();
  impl->node = &node;
  impl->acl_store = NodeInternal::Acl(node);
  if (options.tls.enabled()) {
    const TlsOptions& t = options.tls;
    if (t.ca_file.empty() || t.cert_file.empty() || t.key_file.empty()) {
      return Status::InvalidArgument("HTTPS needs all three of the CA, certificate and key files");
    }
    // The client CA makes httplib require and verify a client certificate on every connection.
    auto ssl = std::make_unique<httplib::SSLServer>(t.cert_file.c_str(), t.key_file.c_str(),
                                                    t.ca_file.c_str());
    // The client CA makes httplib require a client certificate; make it optional so that a
    // browser can log in with a bearer token instead. One that is presented must still be
    // signed by the CA (the handshake fails otherwise), and every request needs a certificate
    // or a token (Identify).
    // With peer verification on, OpenSSL refuses to resume a session (browsers resume on
    // every further connection) unless the server names a session id context.
    if (ssl->is_valid()) {
      static constexpr unsigned char kSessionContext[] = "kvmesh-http";
      SSL_CTX_set_verify(ssl->ssl_context(), SSL_VERIFY_PEER, nullptr);
      SSL_CTX_set_session_id_context(ssl->ssl_context(), kSessionContext,
                                     sizeof kSessionContext - 1);
    }
    impl->server = std::move(ssl);
  } else {
    impl->server = std::make_unique<httplib::Server>();
  }
  if (!impl->server->is_valid()) {
    return Status::InvalidArgument("HTTPS: cannot load the certificate " + options.tls.cert_file +
                                   ", its key or the CA " + options.tls.ca_file);
  }
  const size_t threads = options.threads;
  impl->server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  impl->server->set_payload_max_length(MaxBodyBytes(options.max_value_bytes));
  impl->server->set_keep_alive_timeout(options.idle_timeout_s);
  // Responses go out at once: httplib writes headers and body separately, and Nagle's algorithm
  // would hold the body for the client's delayed ACK (about 40 ms a request on keep-alive).
  impl->server->set_tcp_nodelay(true);
  // Debian's httplib listens with a backlog of 5, which makes a burst of connections wait
  // seconds in SYN retries. The socket-options hook (run before bind; it replaces httplib's
  // default, which is called here too) remembers the socket so that a second
  // listen() below raises the backlog (Linux takes a new backlog on a listening socket).
  auto listen_fd = std::make_shared<int>(-1);
  impl->server->set_socket_options([listen_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    *listen_fd = sock;
  });
  // httplib closes a keep-alive connection after 5 requests by default; clients reuse them.
  impl->server->set_keep_alive_max_count(1000);
  impl->server->set_read_timeout(options.idle_timeout_s, 0);
  impl->server->set_write_timeout(options.idle_timeout_s, 0);
  impl->options = std::move(options);
  impl->Routes();
  const HttpOptions& o = impl->options;
  if (o.port == 0) {
    impl->port = impl->server->bind_to_any_port(o.host);
    if (impl->port <= 0) {
      return Status::Unavailable("the HTTP API cannot listen on " + o.host + " (any port)");
    }
  } else {
    if (!impl->server->bind_to_port(o.host, o.port)) {
      return Status::Unavailable("the HTTP API cannot listen on " + o.host + ":" +
                                 std::to_string(o.port) + " (in use, or not an address here)");
    }
    impl->port = o.port;
  }
  if (*listen_fd >= 0) ::listen(*listen_fd, SOMAXCONN);
  httplib::Server* srv = impl->server.get();
  impl->thread = std::thread([srv] { srv->listen_after_bind(); });
  spdlog::info("HTTP API on {}://{}:{}", o.tls.enabled() ? "https" : "http", o.host, impl->port);
  out->reset(new HttpServer(std::move(impl)));
  return Status::OK();
}

}  // namespace kvmesh::http
