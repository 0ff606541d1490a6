// kvmesh-bench's http target: a session is one keep-alive connection to a node's HTTP API
// (http/server.hpp), each call a blocking request. The only benchmark file that includes
// httplib.h.
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "tools/base64.hpp"
#include "tools/bench/targets.hpp"

namespace kvmesh::bench {
namespace {

/// Percent-encodes `text` for a URL path, keeping '/' (keys and database paths are paths).
std::string EncodePath(std::string_view text) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 15]);
    }
  }
  return out;
}

/// How a request ended: the node's error body ({"code": "not_found", "message": ...}) keeps its
/// code; a request that got no response is Unavailable.
Status StatusOf(const httplib::Result& r) {
  if (!r) return Status::Unavailable("HTTP: " + httplib::to_string(r.error()));
  if (r->status == 200) return Status::OK();
  const std::string text = "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 300);
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_object() && j.contains("code") && j["code"].is_string()) {
    for (int c = 1; c <= static_cast<int>(Code::kPermissionDenied); ++c) {
      if (j["code"] == CodeName(static_cast<Code>(c))) {
        return Status(static_cast<Code>(c), text);
      }
    }
  }
  return Status::Internal(text);
}

class HttpSession : public Session {
 public:
  HttpSession(const std::string& host, int port) : client_(host, port) {
    client_.set_keep_alive(true);
    client_.set_tcp_nodelay(true);
    client_.set_read_timeout(30);
  }

  Status Open(const std::vector<std::string>& paths) override {
    for (const std::string& path : paths) {
      prefixes_.push_back("/v1/databases" + EncodePath(path));
      // The stats call instantiates the database, as open does.
      auto r = client_.Get((prefixes_.back() + "/stats").c_str());
      if (!r) return Status::Unavailable("HTTP: " + httplib::to_string(r.error()));
      if (r->status != 200)
        return Status::Internal("HTTP " + std::to_string(r->status) + ": " + r->body);
    }
    return Status::OK();
  }
  void Put(size_t db, std::string key, std::string value, Done done) override {
    auto r = client_.Put((prefixes_[db] + "/keys" + EncodePath(key)).c_str(), value,
                         "application/octet-stream");
    done(StatusOf(r), 1);
  }
  void Get(size_t db, std::string key, Done done) override {
    auto r = client_.Get((prefixes_[db] + "/keys" + EncodePath(key)).c_str());
    done(StatusOf(r), 1);
  }
  void List(size_t db, std::string prefix, uint32_t limit, Done done) override {
    httplib::Params params{{"prefix", prefix}, {"limit", std::to_string(limit)}};
    auto r = client_.Get((prefixes_[db] + "/keys").c_str(), params, httplib::Headers{});
    if (!r || r->status != 200) return done(StatusOf(r), 0);
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (!j.is_object()) return done(Status::Corruption("HTTP list: the reply is not JSON"), 0);
    done(Status::OK(), j["keys"].size());
  }
  void Write(size_t db, WriteBatch batch, Done done) override {
    nlohmann::json ops = nlohmann::json::array();
    for (const WriteOp& op : batch.ops) {
      if (op.kind == WriteOp::Kind::kPut) {
        ops.push_back(
            {{"op", "put"}, {"key", op.key}, {"value_base64", tools::Base64Encode(op.value)}});
      } else {
        ops.push_back({{"op", "erase"}, {"key", op.key}});
      }
    }
    auto r = client_.Post((prefixes_[db] + "/batch").c_str(), ops.dump(), "application/json");
    done(StatusOf(r), batch.size());
  }

 private:
  httplib::Client client_;
  std::vector<std::string> prefixes_;
};

}  // namespace

std::unique_ptr<Session> NewHttpSession(const std::string& host, int port) {
  return std::make_unique<HttpSession>(host, port);
}

}  // namespace kvmesh::bench
