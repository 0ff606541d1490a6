// The HTTP API (http/server.hpp) and the reference app (examples/kv-app), through cpp-httplib's
// client and raw sockets.
#include "http/server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "process_util.hpp"
#include "security/acl.hpp"
#include "test_util.hpp"
#include "testing/test_pki.hpp"
#include "tools/base64.hpp"

namespace kvmesh {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kConfigs = R"(
- id: kv
  matcher: /example/kv
  replication: {min: 1, max: 1}
  size: 10MB
- id: other
  matcher: /other/kv
  replication: {min: 1, max: 1}
  size: 10MB
- id: tiny
  matcher: /tiny
  replication: {min: 1, max: 1}
  size: 200B
- id: many
  matcher: /many/*
  size: 1MB
)";

constexpr size_t kMaxValue = 4096;

class HttpTest : public ::testing::Test {
 protected:
  /// Starts a node and its HTTP API; with `tls`, both use node certificate "n1".
  void Start(bool tls = false, const std::string& acl_yaml = "") {
    NodeOptions o;
    o.data_dir = temp_ / "node";
    o.config_yaml = kConfigs;
    o.max_value_bytes = kMaxValue;
    if (tls) o.tls = testing::SharedTestPki().Node("n1");
    if (!acl_yaml.empty()) o.acl_file = temp_.Write("acl.yaml", acl_yaml);
    Status s = Node::Start(o, &node_);
    ASSERT_TRUE(s.ok()) << s;
    http::HttpOptions h;
    h.port = 0;
    h.tls = o.tls;
    h.max_value_bytes = o.max_value_bytes;
    h.idle_timeout_s = 2;
    s = http::HttpServer::Start(*node_, h, &http_);
    ASSERT_TRUE(s.ok()) << s;
  }

  httplib::Client Client() {
    httplib::Client c("127.0.0.1", http_->port());
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    return c;
  }

  static json Body(const httplib::Result& r) {
    return json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  }

  /// A TCP connection to the HTTP API whose receives give up after `receive_timeout_s`; sets
  /// `*connected` (may be null) to whether connect succeeded.
  int Connect(int receive_timeout_s = 5, bool* connected = nullptr) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(http_->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (connected != nullptr) *connected = ok;
    timeval tv{receive_timeout_s, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }

  /// Sends `request` on a fresh TCP connection and reads what comes back until `responses`
  /// status lines arrived, the server closed, or 5 s passed.
  std::string Raw(const std::string& request, int responses = 1) {
    bool connected = false;
    int fd = Connect(5, &connected);
    EXPECT_TRUE(connected);
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    std::string got;
    char buf[4096];
    for (int i = 0; i < 1000; ++i) {  // bounded by the count and the 5 s receive timeout
      size_t seen = 0;
      for (size_t p = got.find("HTTP/1.1 "); p != std::string::npos;
           p = got.find("HTTP/1.1 ", p + 1)) {
        ++seen;
      }
      if (static_cast<int>(seen) >= responses && got.size() > 4 &&
          got.compare(got.size() - 1, 1, "}") == 0) {
        break;
      }
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return got;
  }

  /// The value of /example/kv's key /k as the node holds it, "?" when it has none.
  std::string StoredK() {
    Result<std::string> r = node_->open("/example/kv").get("/k");
    return r.ok() ? *r : "?";
  }

  testing::TempDir temp_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<http::HttpServer> http_;
};

const std::string kKv = "/v1/databases/example/kv";

TEST_F(HttpTest, PutGetDeleteRoundTripsBinaryValues) {
  Start();
  auto c = Client();
  std::string value;
  for (int i = 0; i < 256; ++i) value.push_back(static_cast<char>(i));  // NUL and 0xFF included
  auto put = c.Put((kKv + "/keys/users/123/profile").c_str(), value, "application/octet-stream");
  ASSERT_TRUE(put) << httplib::to_string(put.error());
  EXPECT_EQ(put->status, 200) << put->body;
  // The same key through the embedded API: the HTTP path maps to the key "/users/123/profile".
  auto direct = node_->open("/example/kv").get("/users/123/profile");
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(*direct, value);
  auto get = c.Get((kKv + "/keys/users/123/profile").c_str());
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, value);
  // A key holding "/keys/" and a byte that needs escaping, percent-encoded.
  auto odd = c.Put((kKv + "/keys/a%2Fkeys%2Fb%00c").c_str(), "x", "text/plain");
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->status, 200) << odd->body;
  EXPECT_TRUE(node_->open("/example/kv").get(std::string("/a/keys/b\0c", 11)).ok());

  auto del = c.Delete((kKv + "/keys/users/123/profile").c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  auto gone = c.Get((kKv + "/keys/users/123/profile").c_str());
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
  EXPECT_EQ(Body(gone)["code"], "not_found") << gone->body;
  // Deleting a missing key succeeds, as in the reference system.
  auto again = c.Delete((kKv + "/keys/users/123/profile").c_str());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
}

TEST_F(HttpTest, TtlETagsAndConditionalWrites) {
  Start();
  auto c = Client();
  const std::string key = kKv + "/keys/k";
  ASSERT_EQ(c.Put(key.c_str(), "v1", "text/plain")->status, 200);
  auto get = c.Get(key.c_str());
  ASSERT_TRUE(get);
  const std::string etag = get->get_header_value("ETag");
  ASSERT_GT(etag.size(), 2u);
  httplib::Headers if_match = {{"If-Match", etag}};
  auto swap = c.Put(key.c_str(), if_match, "v2", "text/plain");
  ASSERT_TRUE(swap);
  EXPECT_EQ(swap->status, 200) << swap->body;
  auto stale = c.Put(key.c_str(), if_match, "v3", "text/plain");
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, 412) << stale->body;
  EXPECT_EQ(Body(stale)["code"], "condition_failed");
  auto stale_delete = c.Delete(key.c_str(), if_match);
  ASSERT_TRUE(stale_delete);
  EXPECT_EQ(stale_delete->status, 412);
  httplib::Headers absent = {{"If-None-Match", "*"}};
  EXPECT_EQ(c.Put(key.c_str(), absent, "v4", "text/plain")->status, 412);
  EXPECT_EQ(c.Get(key.c_str())->body, "v2");

  const std::string short_key = kKv + "/keys/short?ttl=300ms";
  ASSERT_EQ(c.Put(short_key.c_str(), "x", "text/plain")->status, 200);
  EXPECT_TRUE(kvmesh::testing::Eventually(std::chrono::seconds(10), [&] {
    auto r = c.Get((kKv + "/keys/short").c_str());
    return r && r->status == 404;
  }));
  EXPECT_EQ(c.Put(short_key.c_str(), absent, "y", "text/plain")->status, 200);
  auto bad = c.Put((kKv + "/keys/k?ttl=soon").c_str(), "x", "text/plain");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(HttpTest, ReadLevelsAndSessionTokens) {
  Start();
  auto c = Client();
  const std::string key = kKv + "/keys/k";
  // A write in a session answers with the session's token; a read in it sees the write.
  auto put = c.Put((key + "?session=").c_str(), "v1", "text/plain");
  ASSERT_TRUE(put);
  ASSERT_EQ(put->status, 200) << put->body;
  const std::string token = put->get_header_value("Kvmesh-Session");
  EXPECT_FALSE(token.empty());
  for (const std::string& level :
       std::vector<std::string>{"eventual", "quorum", "read_your_writes&session=" + token}) {
    auto get = c.Get((key + "?consistency=" + level).c_str());
    ASSERT_TRUE(get);
    EXPECT_EQ(get->status, 200) << level << ": " << get->body;
    EXPECT_EQ(get->body, "v1") << level;
  }
  auto list = c.Get((kKv + "/keys?consistency=read_your_writes&session=" + token).c_str());
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200) << list->body;
  // Bad values are refused naming the parameter; a quorum list is refused.
  auto bad = c.Get((key + "?consistency=strong").c_str());
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("consistency: unknown read level \\\"strong\\\""), std::string::npos)
      << bad->body;
  auto bad_token = c.Get((key + "?consistency=read_your_writes&session=zz").c_str());
  ASSERT_TRUE(bad_token);
  EXPECT_EQ(bad_token->status, 400);
  EXPECT_NE(bad_token->body.find("session token"), std::string::npos) << bad_token->body;
  auto quorum_list = c.Get((kKv + "/keys?consistency=quorum").c_str());
  ASSERT_TRUE(quorum_list);
  EXPECT_EQ(quorum_list->status, 400);
  EXPECT_NE(quorum_list->body.find("quorum"), std::string::npos) << quorum_list->body;
}

TEST_F(HttpTest, ErrorsMapToStatusesWithJsonBodies) {
  Start();
  auto c = Client();
  struct Case {
    std::string method, target, body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"GET", "/v1/databases/nowhere/keys/a", "", 404, "no_matching_config"},
      {"GET", kKv + "/keys/a/%2E%2E/b", "", 400, "invalid_key"},
      {"GET", kKv + "/keys/a%zz", "", 400, "invalid_argument"},
      {"GET", kKv + "/keys?limit=lots", "", 400, "invalid_argument"},
      {"GET", kKv + "/keys?cursor=xyz", "", 400, "invalid_argument"},
      {"GET", kKv + "/keys?prefix=/u&start=/v", "", 400, "invalid_argument"},
      {"GET", kKv + "/keys?start=/b&end=/a", "", 400, "invalid_argument"},
      {"GET", kKv + "/keys?reverse=maybe", "", 400, "invalid_argument"},
      {"POST", kKv + "/keys/a", "", 400, "invalid_argument"},
      {"GET", kKv + "/nothing", "", 404, "not_found"},
      {"GET", "/v2/anything", "", 404, "not_found"},
      {"PUT", kKv + "/keys/big", std::string(kMaxValue + 1, 'v'), 413, "value_too_large"},
      {"PUT", "/v1/databases/tiny/keys/k", std::string(300, 'v'), 413, "size_limit_exceeded"},
  };
  for (const Case& k : cases) {
    httplib::Request req;
    req.method = k.method;
    req.path = k.target;
    req.body = k.body;
    auto r = c.send(req);
    ASSERT_TRUE(r) << k.method << " " << k.target << ": " << httplib::to_string(r.error());
    EXPECT_EQ(r->status, k.status) << k.method << " " << k.target << ": " << r->body;
    json body = Body(r);
    EXPECT_EQ(body["code"], k.code) << k.method << " " << k.target << ": " << r->body;
    EXPECT_TRUE(body["message"].is_string() && !body["message"].get<std::string>().empty())
        << r->body;
  }
  auto stats = node_->open("/example/kv").stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->key_count, 0u) << "a refused request stored something";
}

TEST_F(HttpTest, AnOversizedBodyIsRefusedAndNothingIsStored) {
  Start();
  // Beyond the request body bound (4/3 of the value bound plus 64 KiB): refused on its
  // Content-Length; httplib reads the body into a fixed buffer and discards it, never holding it.
  const size_t over = kMaxValue / 3 * 4 + (64u << 10) + 1;
  std::string got =
      Raw("PUT /v1/databases/example/kv/keys/huge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
          "Content-Length: " +
          std::to_string(over) + "\r\n\r\n" + std::string(over, 'x'));
  EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got;
  EXPECT_NE(got.find("\"code\":\"value_too_large\""), std::string::npos) << got;
  EXPECT_NE(got.find("request body larger than the HTTP API's bound of " +
                     std::to_string(over - 1) + " bytes"),
            std::string::npos)
      << got;
  // A body just over the value bound but within the request bound: read, and refused by the
  // database.
  auto c = Client();
  auto r = c.Put((kKv + "/keys/huge").c_str(), std::string(kMaxValue * 5 / 4, 'x'),
                 "application/octet-stream");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(Body(r)["code"], "value_too_large") << r->body;
  EXPECT_EQ(node_->open("/example/kv").get("/huge").status().code(), Code::kNotFound);
  auto health = c.Get("/v1/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(HttpTest, ListingsPageWithCursorsAndBase64Values) {
  Start();
  Database db = node_->open("/example/kv");
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(db.put("/u/" + std::to_string(i), "v" + std::to_string(i)).ok());
  ASSERT_TRUE(db.put("/users/x", "not under /u").ok());
  auto c = Client();
  std::vector<std::string> keys, values;
  std::string cursor;
  int pages = 0;
  for (; pages < 10; ++pages) {  // bounded
    std::string target = kKv + "/keys?prefix=/u&limit=2&values=1";
    if (!cursor.empty()) target += "&cursor=" + cursor;
    auto r = c.Get(target.c_str());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json page = Body(r);
    EXPECT_LE(page["keys"].size(), 2u);
    for (const json& item : page["keys"]) {
      keys.push_back(item["key"]);
      std::string v;
      ASSERT_TRUE(tools::Base64Decode(item["value_base64"].get<std::string>(), &v));
      values.push_back(v);
    }
    if (!page.contains("next_cursor")) break;
    cursor = page["next_cursor"];
  }
  EXPECT_EQ(pages, 2);  // 2 + 2 + 1
  EXPECT_EQ(keys, (std::vector<std::string>{"/u/0", "/u/1", "/u/2", "/u/3", "/u/4"}));
  EXPECT_EQ(values, (std::vector<std::string>{"v0", "v1", "v2", "v3", "v4"}));
  // A range from the top down, paged with the same cursors: [/u/1, /u/4) reversed.
  keys.clear();
  cursor.clear();
  for (pages = 0; pages < 10; ++pages) {  // bounded
    std::string target = kKv + "/keys?prefix=/u&start=u/1&end=%2Fu%2F4&reverse=1&limit=2";
    if (!cursor.empty()) target += "&cursor=" + cursor;
    auto r = c.Get(target.c_str());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json page = Body(r);
    for (const json& item : page["keys"]) keys.push_back(item["key"]);
    if (!page.contains("next_cursor")) break;
    cursor = page["next_cursor"];
  }
  EXPECT_EQ(pages, 1);  // 2 + 1
  EXPECT_EQ(keys, (std::vector<std::string>{"/u/3", "/u/2", "/u/1"}));
  // Without values=1 there are none.
  auto plain = c.Get((kKv + "/keys").c_str());
  ASSERT_TRUE(plain);
  EXPECT_FALSE(Body(plain)["keys"][0].contains("value_base64")) << plain->body;
}

TEST_F(HttpTest, BatchesAreAtomic) {
  Start();
  auto c = Client();
  Database db = node_->open("/example/kv");
  ASSERT_TRUE(db.put("/old", "x").ok());
  json ops = json::array({{{"op", "put"},
                           {"key", "/a"},
                           {"value_base64", tools::Base64Encode(std::string("\0\1", 2))}},
                          {{"op", "erase"}, {"key", "/old"}}});
  auto r = c.Post((kKv + "/batch").c_str(), ops.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(*db.get("/a"), std::string("\0\1", 2));
  EXPECT_EQ(db.get("/old").status().code(), Code::kNotFound);

  // An invalid key in the second op refuses the whole batch: the first op is not applied.
  json bad = json::array({{{"op", "put"}, {"key", "/b"}, {"value_base64", "eQ=="}},
                          {{"op", "put"}, {"key", "/x/../y"}, {"value_base64", "eQ=="}}});
  r = c.Post((kKv + "/batch").c_str(), bad.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_EQ(Body(r)["code"], "invalid_key") << r->body;
  EXPECT_EQ(db.get("/b").status().code(), Code::kNotFound);

  for (const std::string& body :
       {std::string("{not json"), std::string("[{\"op\":\"swap\",\"key\":\"/k\"}]"),
        std::string("[{\"op\":\"put\",\"key\":\"/k\",\"value_base64\":\"*\"}]")}) {
    r = c.Post((kKv + "/batch").c_str(), body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << body << ": " << r->body;
    EXPECT_EQ(Body(r)["code"], "invalid_argument") << r->body;
  }
  EXPECT_EQ(db.get("/k").status().code(), Code::kNotFound);
}

TEST_F(HttpTest, DatabaseAndClusterEndpointsDescribeTheNode) {
  Start();
  auto c = Client();
  ASSERT_EQ(c.Put((kKv + "/keys/k").c_str(), "value", "text/plain")->status, 200);
  auto stats = c.Get((kKv + "/stats").c_str());
  ASSERT_TRUE(stats);
  ASSERT_EQ(stats->status, 200) << stats->body;
  EXPECT_EQ(Body(stats)["path"], "/example/kv");
  EXPECT_EQ(Body(stats)["config"], "kv");
  EXPECT_EQ(Body(stats)["keys"], 1);
  auto status = c.Get((kKv + "/status").c_str());
  ASSERT_TRUE(status);
  ASSERT_EQ(status->status, 200) << status->body;
  EXPECT_EQ(Body(status)["keys"], 1);
  EXPECT_EQ(Body(status)["replicas"].size(), 1u) << status->body;
  auto dbs = c.Get("/v1/databases");
  ASSERT_TRUE(dbs);
  ASSERT_EQ(dbs->status, 200);
  ASSERT_EQ(Body(dbs).size(), 1u) << dbs->body;
  EXPECT_EQ(Body(dbs)[0]["path"], "/example/kv");
  auto configs = c.Get("/v1/configs");
  ASSERT_TRUE(configs);
  ASSERT_EQ(configs->status, 200);
  EXPECT_EQ(Body(configs).size(), 4u) << configs->body;
  EXPECT_EQ(Body(configs)[0]["id"], "kv") << configs->body;
  auto one = c.Get("/v1/configs/other");
  ASSERT_TRUE(one);
  ASSERT_EQ(one->status, 200) << one->body;
  EXPECT_EQ(Body(one)["matcher"], "/other/kv") << one->body;
  auto unknown = c.Get("/v1/configs/nope");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(Body(unknown)["code"], "not_found") << unknown->body;
  auto members = c.Get("/v1/members");
  ASSERT_TRUE(members);
  ASSERT_EQ(members->status, 200);
  ASSERT_EQ(Body(members).size(), 1u);
  EXPECT_EQ(Body(members)[0]["self"], true);
  auto health = c.Get("/v1/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Body(health)["status"], "ok");
  // Prometheus text of the node's metrics (tests/metrics_scrape_test.cpp parses it in full).
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  ASSERT_EQ(metrics->status, 200) << metrics->body;
  EXPECT_EQ(metrics->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  EXPECT_NE(metrics->body.find("kvmesh_requests_total{"), std::string::npos) << metrics->body;
}

TEST_F(HttpTest, InstancesOfAConfigPageWithCursors) {
  Start();
  auto c = Client();
  for (const char* name : {"c", "a", "b"}) {
    const std::string target = std::string("/v1/databases/many/") + name + "/keys/k";
    ASSERT_EQ(c.Put(target.c_str(), "12345", "text/plain")->status, 200);
  }
  std::vector<std::string> paths;
  std::string cursor;
  for (int pages = 0; pages < 10; ++pages) {  // 3 instances, 2 per page: 2 pages
    std::string target = "/v1/configs/many/instances?limit=2";
    if (!cursor.empty()) target += "&cursor=" + cursor;
    auto page = c.Get(target.c_str());
    ASSERT_TRUE(page);
    ASSERT_EQ(page->status, 200) << page->body;
    json body = Body(page);
    for (const auto& i : body["instances"]) {
      paths.push_back(i["path"]);
      EXPECT_EQ(i["keys"], 1) << page->body;
      EXPECT_EQ(i["used_bytes"], 7) << page->body;
      EXPECT_EQ(i["config"], "many") << page->body;
      EXPECT_EQ(i["active"], true) << page->body;
      EXPECT_EQ(i["replicas"].size(), 1u) << page->body;
    }
    if (!body.contains("next_cursor")) break;
    cursor = body["next_cursor"];
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"/many/a", "/many/b", "/many/c"}));
  auto bad = c.Get("/v1/configs/many/instances?limit=5000");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(Body(bad)["message"].get<std::string>().find("limit: expected a number from 0 to 1000"),
            std::string::npos)
      << bad->body;
  auto none = c.Get("/v1/configs/nope/instances");
  ASSERT_TRUE(none);
  ASSERT_EQ(none->status, 200) << none->body;
  EXPECT_TRUE(Body(none)["instances"].empty()) << none->body;
}

TEST_F(HttpTest, KeepAliveServesManyRequestsOnOneConnection) {
  Start();
  bool connected = false;
  int fd = Connect(5, &connected);
  ASSERT_TRUE(connected);
  const std::string req = "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  // Ten requests one after the other on one TCP connection, each answered before the next.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()))
        << "request " << i << ": the server closed the connection";
    std::string got;
    char buf[4096];
    for (int reads = 0; reads < 100 && (got.empty() || got.back() != '}'); ++reads) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    ASSERT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << "request " << i << ": " << got;
    EXPECT_EQ(got.find("Connection: close"), std::string::npos) << got;
  }
  ::close(fd);
}

TEST_F(HttpTest, MalformedRequestsAndAConnectionFloodLeaveTheNodeServing) {
  Start();
  std::string got = Raw("BLAH\r\n\r\n");
  EXPECT_NE(got.find("HTTP/1.1 400"), std::string::npos) << got;
  // A flood: 200 connections, half of them sending a partial request, then all closed.
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) {
    bool connected = false;
    int fd = Connect(5, &connected);
    if (connected && i % 2 == 0) {
      ::send(fd, "PUT /v1/data", 12, MSG_NOSIGNAL);
    }
    fds.push_back(fd);
  }
  for (int fd : fds) ::close(fd);
  auto c = Client();
  auto put = c.Put((kKv + "/keys/after").c_str(), "still here", "text/plain");
  ASSERT_TRUE(put) << httplib::to_string(put.error());
  EXPECT_EQ(put->status, 200);
  EXPECT_EQ(*node_->open("/example/kv").get("/after"), "still here");
  // A burst is accepted at once: the listen backlog (ss's Send-Q of a listening socket) is not
  // httplib's 5, which left connects of a burst waiting a second or more in SYN retries.
  if (::access("/usr/bin/ss", X_OK) == 0) {
    auto ss = testing::RunCommand(
        "/usr/bin/ss", {"-Hltn", "sport = :" + std::to_string(http_->port())}, "", temp_.path());
    std::smatch m;
    ASSERT_TRUE(std::regex_search(ss.out, m, std::regex("LISTEN +[0-9]+ +([0-9]+)"))) << ss.out;
    EXPECT_GE(std::stoi(m[1]), 128) << ss.out;
  }
}

TEST_F(HttpTest, AClientThatStallsMidBodyIsCutAndStoresNothingWhileOthersAreServed) {
  Start();  // idle timeout 2 s
  bool connected = false;
  int fd = Connect(10, &connected);
  ASSERT_TRUE(connected);
  const std::string partial =
      "PUT /v1/databases/example/kv/keys/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
      "100\r\n\r\n"
      "only part of the body";
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(partial.size()));
  // Meanwhile other clients are served at once.
  auto c = Client();
  auto put = c.Put((kKv + "/keys/fast").c_str(), "v", "text/plain");
  ASSERT_TRUE(put) << httplib::to_string(put.error());
  EXPECT_EQ(put->status, 200);
  // The stalled connection is closed by the server within its idle timeout (plus slack), and
  // the partial value was never stored.
  const auto start = std::chrono::steady_clock::now();
  char buf[512];
  ssize_t n = 0;
  for (int i = 0; i < 100; ++i) {  // bounded by the count and the 10 s receive timeout
    n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_LE(n, 0) << "the server never closed a connection stalled mid-body";
  EXPECT_LT(waited, 8s);
  EXPECT_TRUE(node_->open("/example/kv").get("/slow").status().IsNotFound());
}

TEST_F(HttpTest, OtherSitesPagesCannotWriteThroughABrowser) {
  Start();
  const std::string body = R"([{"op":"put","key":"/csrf","value_base64":"eA=="}])";
  auto post = [&](const std::string& host, const std::string& origin) {
    return Raw("POST /v1/databases/example/kv/batch HTTP/1.1\r\nHost: " + host + "\r\n" +
               (origin.empty() ? "" : "Origin: " + origin + "\r\n") +
               "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\nConnection: close\r\n\r\n" + body);
  };
  const std::string self = "127.0.0.1:" + std::to_string(http_->port());
  // A page of another site posting a "simple" request (no preflight).
  std::string got = post(self, "http://evil.example");
  EXPECT_EQ(got.rfind("HTTP/1.1 403", 0), 0u) << got;
  EXPECT_NE(got.find("cross-site request from origin"), std::string::npos) << got;
  // DNS rebinding: another site's name pointing at this node.
  got = post("evil.example:" + std::to_string(http_->port()),
             "http://evil.example:" + std::to_string(http_->port()));
  EXPECT_EQ(got.rfind("HTTP/1.1 403", 0), 0u) << got;
  EXPECT_TRUE(node_->open("/example/kv").get("/csrf").IsNotFound()) << "a cross-site write landed";
  // The API's own pages (the console) and programs (no Origin) are served.
  got = post(self, "http://" + self);
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
  got = post("localhost:" + std::to_string(http_->port()), "");
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
}

TEST(HttpOptionsTest, PlaintextBeyondLoopbackNeedsInsecurePlaintext) {
  testing::TempDir temp;
  NodeOptions o;
  o.data_dir = temp / "node";
  o.config_yaml = kConfigs;
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(o, &node).ok());
  http::HttpOptions h;
  h.host = "0.0.0.0";
  std::unique_ptr<http::HttpServer> server;
  Status s = http::HttpServer::Start(*node, h, &server);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("without TLS"), std::string::npos) << s;
  EXPECT_EQ(server, nullptr);
}

TEST(KvmeshdHttp, ServesTheApiWithHttpPortAndRefusesPlaintextBeyondLoopback) {
  testing::TempDir temp;
  temp.Write("config/kv.yaml", kConfigs);
  testing::DaemonProcess node;
  ASSERT_TRUE(node.Start(KVMESHD_PATH, {"--data-dir", temp / "data", "--config-dir",
                                        temp / "config", "--port", "0", "--http-port", "0"}))
      << node.output();
  std::smatch m;
  const std::string out = node.output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("HTTP API http://127.0.0.1:([0-9]+)"))) << out;
  httplib::Client c("127.0.0.1", std::stoi(m[1]));
  c.set_read_timeout(10);
  auto put = c.Put("/v1/databases/example/kv/keys/k", "v", "text/plain");
  ASSERT_TRUE(put) << httplib::to_string(put.error());
  EXPECT_EQ(put->status, 200) << put->body;
  EXPECT_EQ(c.Get("/v1/databases/example/kv/keys/k")->body, "v");
  node.Kill(SIGTERM);
  EXPECT_EQ(node.Wait(), 0);

  // The settings file's http_listen beyond loopback, without TLS: refused at start, with why.
  const std::string settings =
      temp.Write("node.yaml", "http_port: 0\nhttp_listen: 0.0.0.0\nport: 0\n");
  // DaemonProcess returns at the ready line, or when the process exits without one: a kvmeshd
  // that started anyway is killed, not left running.
  testing::DaemonProcess refused;
  const bool started = refused.Start(
      KVMESHD_PATH,
      {"--config", settings, "--data-dir", temp / "data2", "--config-dir", temp / "config"});
  if (started) refused.Kill(SIGKILL);
  EXPECT_FALSE(started) << refused.output();
  EXPECT_EQ(refused.Wait(), 1) << refused.output();
  EXPECT_NE(
      refused.output().find("the HTTP API would listen on 0.0.0.0:0, beyond loopback, without TLS"),
      std::string::npos)
      << refused.output();
}

TEST_F(HttpTest, TheConsoleIsServedFromTheBinary) {
  Start();
  auto c = Client();
  auto index = c.Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_EQ(index->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(index->body.find("/console/app.js"), std::string::npos);
  auto js = c.Get("/console/app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_EQ(js->get_header_value("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_NE(js->body.find("/v1/whoami"), std::string::npos);
  EXPECT_EQ(c.Get("/console/style.css")->get_header_value("Content-Type"),
            "text/css; charset=utf-8");
  auto missing = c.Get("/console/nothing.js");
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Body(missing)["code"], "not_found");
  EXPECT_EQ(c.Get("/console/../CMakeLists.txt")->status, 404);
  // Plaintext: nothing to log in with; whoami says every right.
  auto me = c.Get("/v1/whoami?database=/example/kv");
  ASSERT_EQ(me->status, 200) << me->body;
  EXPECT_EQ(Body(me)["by"], "none");
  EXPECT_EQ(Body(me)["admin"], true);
  EXPECT_EQ(Body(me)["database"]["write"], true);
}

// -- HTTPS and the ACL --

std::unique_ptr<httplib::SSLClient> TlsClient(uint16_t port, const TlsOptions& tls) {
  auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port, tls.cert_file, tls.key_file);
  c->set_ca_cert_path(tls.ca_file.c_str());
  c->enable_server_certificate_verification(true);
  c->set_connection_timeout(5);
  c->set_read_timeout(10);
  return c;
}

TEST_F(HttpTest, HttpsNeedsAClientCertificateOfTheClusterCa) {
  Start(/*tls=*/true);
  ASSERT_TRUE(http_->tls());
  auto alice = TlsClient(http_->port(), testing::SharedTestPki().Client("alice"));
  auto r = alice->Put((kKv + "/keys/k").c_str(), "v", "text/plain");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;

  // No client certificate (and no token): 401, nothing is served or stored.
  httplib::SSLClient anonymous("127.0.0.1", http_->port());
  anonymous.set_ca_cert_path(testing::SharedTestPki().ca_file().c_str());
  anonymous.set_connection_timeout(5);
  for (const char* path : {"/v1/health", "/v1/members", "/v1/configs", "/v1/whoami", "/metrics"}) {
    auto r401 = anonymous.Get(path);
    ASSERT_TRUE(r401) << path << ": " << httplib::to_string(r401.error());
    EXPECT_EQ(r401->status, 401) << path << ": " << r401->body;
  }
  auto refused = anonymous.Put((kKv + "/keys/k").c_str(), "x", "text/plain");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401) << refused->body;
  EXPECT_EQ(refused->get_header_value("WWW-Authenticate"), "Bearer realm=\"kvmesh\"");
  EXPECT_EQ(StoredK(), "v");
  // Without an ACL there are no tokens: a bearer header gets 401 too.
  httplib::Headers bearer{{"Authorization", "Bearer kvmesh_0000"}};
  auto no_acl = anonymous.Get((kKv + "/keys/k").c_str(), bearer);
  ASSERT_TRUE(no_acl);
  EXPECT_EQ(no_acl->status, 401) << no_acl->body;
  // The console's files are public (a login page); they hold no data.
  auto page = anonymous.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("kvmesh console"), std::string::npos);

  // A certificate of another CA: refused too.
  TlsOptions stranger = testing::SharedOtherTestPki().Client("alice");
  stranger.ca_file = testing::SharedTestPki().ca_file();
  auto foreign = TlsClient(http_->port(), stranger)->Get((kKv + "/keys/k").c_str());
  EXPECT_FALSE(foreign) << "served a foreign certificate: " << foreign->status;

  // Plain HTTP on the HTTPS port gets nothing either.
  httplib::Client plain("127.0.0.1", http_->port());
  plain.set_connection_timeout(5);
  plain.set_read_timeout(5);
  auto p = plain.Get("/v1/health");
  EXPECT_TRUE(!p || p->status != 200);
}

TEST_F(HttpTest, TheAclLimitsAPrincipalToItsPatterns) {
  Start(/*tls=*/true, R"(
principals:
  alice:
    - role: readwrite
      databases: ["/example/kv"]
  reader: [{role: readonly}]
)");
  testing::TestPki& pki = testing::SharedTestPki();
  auto alice = TlsClient(http_->port(), pki.Client("alice"));
  auto ok = alice->Put((kKv + "/keys/k").c_str(), "v", "text/plain");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200) << ok->body;
  auto denied = alice->Put("/v1/databases/other/kv/keys/k", "v", "text/plain");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403) << denied->body;
  EXPECT_EQ(Body(denied)["code"], "permission_denied");
  EXPECT_NE(Body(denied)["message"].get<std::string>().find("alice"), std::string::npos);
  EXPECT_EQ(alice->Get("/v1/databases/other/kv/keys/k")->status, 403);

  // Listings show alice only what she may read.
  ASSERT_TRUE(node_->open("/other/kv").put("/k", "v").ok());
  auto dbs = alice->Get("/v1/databases");
  ASSERT_TRUE(dbs);
  ASSERT_EQ(dbs->status, 200);
  ASSERT_EQ(Body(dbs).size(), 1u) << dbs->body;
  EXPECT_EQ(Body(dbs)[0]["path"], "/example/kv");
  auto configs = alice->Get("/v1/configs");
  ASSERT_TRUE(configs);
  EXPECT_EQ(Body(configs).size(), 1u) << configs->body;

  // readonly: reads anywhere, writes nowhere.
  auto reader = TlsClient(http_->port(), pki.Client("reader"));
  EXPECT_EQ(reader->Get((kKv + "/keys/k").c_str())->status, 200);
  EXPECT_EQ(reader->Delete((kKv + "/keys/k").c_str())->status, 403);
  EXPECT_EQ(reader->Post((kKv + "/batch").c_str(), "[]", "application/json")->status, 403);

  // Not in the file: nothing, not even the member list.
  auto mallory = TlsClient(http_->port(), pki.Client("mallory"));
  EXPECT_EQ(mallory->Get("/v1/members")->status, 403);
  EXPECT_EQ(mallory->Get((kKv + "/keys/k").c_str())->status, 403);

  // A node certificate may do everything.
  auto node = TlsClient(http_->port(), pki.Node("n2"));
  EXPECT_EQ(node->Put("/v1/databases/other/kv/keys/k2", "v", "text/plain")->status, 200);
}

TEST_F(HttpTest, BearerTokensSpeakForTheirPrincipalOverHttps) {
  std::string writer_token, reader_token;
  ASSERT_TRUE(security::NewBearerToken(&writer_token).ok());
  ASSERT_TRUE(security::NewBearerToken(&reader_token).ok());
  Start(/*tls=*/true, R"(
principals:
  alice:
    - role: readwrite
      databases: ["/example/kv"]
  reader: [{role: readonly}]
tokens:
  - {principal: alice, sha256: )" +
                          security::TokenSha256Hex(writer_token) + R"(}
  - {principal: reader, sha256: )" +
                          security::TokenSha256Hex(reader_token) + R"(}
)");
  // A browser has no client certificate: the token alone identifies it.
  httplib::SSLClient c("127.0.0.1", http_->port());
  c.set_ca_cert_path(testing::SharedTestPki().ca_file().c_str());
  c.enable_server_certificate_verification(true);
  c.set_connection_timeout(5);
  c.set_read_timeout(10);
  const httplib::Headers alice{{"Authorization", "Bearer " + writer_token}};
  const httplib::Headers reader{{"Authorization", "Bearer " + reader_token}};
  auto put = c.Put((kKv + "/keys/k").c_str(), alice, "v", "text/plain");
  ASSERT_TRUE(put) << httplib::to_string(put.error());
  EXPECT_EQ(put->status, 200) << put->body;
  // The same rights as the principal's certificate: alice may not write elsewhere.
  auto other = c.Put("/v1/databases/other/kv/keys/k", alice, "v", "text/plain");
  EXPECT_EQ(other->status, 403) << other->body;
  EXPECT_NE(Body(other)["message"].get<std::string>().find("alice"), std::string::npos);
  EXPECT_EQ(c.Get((kKv + "/keys/k").c_str(), reader)->body, "v");
  auto denied = c.Delete((kKv + "/keys/k").c_str(), reader);
  EXPECT_EQ(denied->status, 403) << denied->body;
  EXPECT_EQ(StoredK(), "v");

  // whoami tells the console what to show.
  auto me = c.Get("/v1/whoami?database=/example/kv", reader);
  ASSERT_EQ(me->status, 200) << me->body;
  EXPECT_EQ(Body(me)["principal"], "reader");
  EXPECT_EQ(Body(me)["by"], "token");
  EXPECT_EQ(Body(me)["admin"], false);
  EXPECT_EQ(Body(me)["database"]["read"], true);
  EXPECT_EQ(Body(me)["database"]["write"], false);
  EXPECT_EQ(Body(c.Get("/v1/whoami?database=/example/kv", alice))["database"]["write"], true);

  // A wrong token, a token without "Bearer ", the digest in its place: 401, nothing done.
  for (const std::string& header :
       {"Bearer " + writer_token + "x", writer_token,
        "Bearer " + security::TokenSha256Hex(writer_token), std::string("Bearer ")}) {
    auto bad = c.Put((kKv + "/keys/k").c_str(), {{"Authorization", header}}, "bad", "text/plain");
    ASSERT_TRUE(bad);
    EXPECT_EQ(bad->status, 401) << header << ": " << bad->body;
  }
  EXPECT_EQ(StoredK(), "v");

  // A token is revoked by removing its line and reloading.
  std::ofstream(temp_ / "acl.yaml") << "principals:\n  reader: [{role: readonly}]\n";
  ASSERT_TRUE(node_->reload_configs().ok());
  EXPECT_EQ(c.Get((kKv + "/keys/k").c_str(), reader)->status, 401);

  // A client certificate still works next to tokens.
  auto cert = TlsClient(http_->port(), testing::SharedTestPki().Client("reader"));
  EXPECT_EQ(cert->Get((kKv + "/keys/k").c_str())->status, 200);
}

TEST_F(HttpTest, ConfigsAreCreatedValidatedAndDeletedClusterWide) {
  Start();
  auto c = Client();
  // A YAML body without an id takes the one in the path.
  auto put = c.Put("/v1/configs/orders", "matcher: /orders/*\nsize: 1MB\n", "application/yaml");
  ASSERT_TRUE(put);
  ASSERT_EQ(put->status, 200) << put->body;
  EXPECT_EQ(Body(put)["config"]["id"], "orders");
  EXPECT_EQ(Body(put)["config"]["origin"], "api");
  EXPECT_EQ(Body(put)["config"]["matcher_kind"], "wildcard");
  EXPECT_EQ(c.Put("/v1/databases/orders/1/keys/k", "v", "text/plain")->status, 200);
  // JSON bodies too; raising the size is in force at once.
  auto json_put =
      c.Put("/v1/configs/orders", R"({"matcher": "/orders/*", "size": "2MB"})", "application/json");
  ASSERT_EQ(json_put->status, 200) << json_put->body;
  EXPECT_EQ(Body(c.Get("/v1/configs/orders"))["size_bytes"], 2000000);
  // Invalid: 400 with the line and field; nothing is created. Validation changes nothing.
  auto bad = c.Post("/v1/configs/validate", "matcher: /x\nsize: 1MB\nreplication: {min: 3}\n",
                    "application/yaml");
  ASSERT_EQ(bad->status, 400) << bad->body;
  EXPECT_EQ(Body(bad)["code"], "invalid_config");
  EXPECT_NE(Body(bad)["message"].get<std::string>().find(
                "request body:3: error: replication.max: must be >= min (3)"),
            std::string::npos)
      << bad->body;
  auto valid = c.Post("/v1/configs/validate", "id: v\nmatcher: /v\nsize: 1MB\n", "text/plain");
  ASSERT_EQ(valid->status, 200) << valid->body;
  EXPECT_EQ(Body(valid)["ok"], true);
  EXPECT_EQ(c.Get("/v1/configs/v")->status, 404) << "validate applied it";
  auto regex = c.Put("/v1/configs/r", "matcher: /r/[a\nsize: 1MB\n", "application/yaml");
  EXPECT_EQ(regex->status, 400);
  EXPECT_EQ(c.Get("/v1/configs/r")->status, 404);
  EXPECT_EQ(
      c.Put("/v1/configs/orders", "id: other\nmatcher: /o\nsize: 1MB\n", "text/plain")->status,
      400);
  // Several at once with POST.
  auto many = c.Post("/v1/configs",
                     "- {id: a, matcher: /a, size: 1MB}\n- {id: b, matcher: /b, size: 1MB}\n",
                     "application/yaml");
  ASSERT_EQ(many->status, 200) << many->body;
  EXPECT_EQ(Body(many)["configs"].size(), 2u);
  // History, then delete: 404 after, 400 for a config of the node's own.
  auto history = c.Get("/v1/configs/orders/history");
  ASSERT_EQ(history->status, 200) << history->body;
  ASSERT_EQ(Body(history).size(), 2u);
  EXPECT_EQ(Body(history)[1]["in_force"], true);
  EXPECT_EQ(Body(history)[0]["config"]["size_bytes"], 1000000);
  EXPECT_EQ(Body(history)[0]["applied_by"], "anonymous");
  auto del = c.Delete("/v1/configs/orders");
  ASSERT_EQ(del->status, 200) << del->body;
  EXPECT_EQ(Body(del)["deleted"], "orders");
  EXPECT_EQ(c.Delete("/v1/configs/orders")->status, 404);
  EXPECT_EQ(c.Get("/v1/databases/orders/1/keys/k")->status, 404);
  auto own = c.Delete("/v1/configs/kv");
  EXPECT_EQ(own->status, 400) << own->body;
  EXPECT_EQ(Body(c.Get("/v1/configs/kv"))["origin"], "file");
}

TEST_F(HttpTest, ConfigWritesNeedTheAdminRightAndRecordWhoAsked) {
  Start(/*tls=*/true, R"(
principals:
  alice: [{role: readwrite}]
  ops: [{role: admin}]
  tenant: [{role: readwrite, databases: ["/example/kv"]}]
)");
  testing::TestPki& pki = testing::SharedTestPki();
  const std::string body = "matcher: /orders/*\nsize: 1MB\n";
  auto alice = TlsClient(http_->port(), pki.Client("alice"));
  auto denied = alice->Put("/v1/configs/orders", body, "application/yaml");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403) << denied->body;
  EXPECT_EQ(alice->Post("/v1/configs/validate", body, "application/yaml")->status, 403);
  auto ops = TlsClient(http_->port(), pki.Client("ops"));
  auto put = ops->Put("/v1/configs/orders", body, "application/yaml");
  ASSERT_EQ(put->status, 200) << put->body;
  EXPECT_EQ(alice->Delete("/v1/configs/orders")->status, 403);
  auto history = alice->Get("/v1/configs/orders/history");
  ASSERT_EQ(history->status, 200) << history->body;
  EXPECT_EQ(Body(history)[0]["applied_by"], "ops");
  EXPECT_EQ(Body(history)[0]["node"], "n1");
  // A principal sees the history only of configs it may read databases of, as in the listing.
  auto tenant = TlsClient(http_->port(), pki.Client("tenant"));
  auto hidden = tenant->Get("/v1/configs/orders/history");
  ASSERT_TRUE(hidden);
  EXPECT_EQ(hidden->status, 404) << hidden->body;
  EXPECT_EQ(tenant->Get("/v1/configs/orders")->status, 404);

  // Draining a node moves data cluster-wide: admin only, like config writes. (This node has no
  // cluster port, so the admin's drain is refused for that reason, after the ACL check.)
  const std::string self = "/v1/members/" + FormatNodeId(node_->node_id());
  auto drain_denied = alice->Post((self + "/drain").c_str(), "", "text/plain");
  ASSERT_TRUE(drain_denied);
  EXPECT_EQ(drain_denied->status, 403) << drain_denied->body;
  EXPECT_EQ(alice->Post((self + "/undrain").c_str(), "", "text/plain")->status, 403);
  auto alone = ops->Post((self + "/drain").c_str(), "", "text/plain");
  ASSERT_TRUE(alone);
  EXPECT_EQ(alone->status, 400) << alone->body;
  EXPECT_NE(Body(alone)["message"].get<std::string>().find("not in a cluster"), std::string::npos)
      << alone->body;
  auto bad = ops->Post("/v1/members/nothex/drain", "", "text/plain");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
  EXPECT_NE(Body(bad)["message"].get<std::string>().find("\"nothex\" is not a node id"),
            std::string::npos)
      << bad->body;
  auto members = ops->Get("/v1/members");
  ASSERT_EQ(members->status, 200) << members->body;
  EXPECT_EQ(Body(members)[0]["placement"], "active") << members->body;
  EXPECT_EQ(Body(members)[0]["rebalance_pending"], 0) << members->body;
}

// -- The reference app --

TEST(KvApp, AnswersTheReferenceCurlLines) {
  testing::TempDir temp;
  NodeOptions o;
  o.data_dir = temp / "node";
  o.config_yaml = kConfigs;
  o.listen_port = 0;
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(o, &node).ok());
  testing::DaemonProcess app;
  ASSERT_TRUE(app.Start(KV_APP_PATH,
                        {"--node", "127.0.0.1:" + std::to_string(node->port()), "--port", "0"}))
      << app.output();
  const std::string base = "http://127.0.0.1:" + std::to_string(app.port());
  // The two lines of the reference docs, with curl when it is installed.
  const bool curl = ::access("/usr/bin/curl", X_OK) == 0;
  std::string stored, fetched;
  if (curl) {
    auto post = testing::RunCommand(
        "/usr/bin/curl",
        {"-s", "-X", "POST", base + "/api/kv", "-d", R"({"key":"message","value":"hello world"})"},
        "", temp.path());
    stored = post.out;
    auto get =
        testing::RunCommand("/usr/bin/curl", {"-s", base + "/api/kv?key=message"}, "", temp.path());
    fetched = get.out;
  } else {
    httplib::Client c("127.0.0.1", app.port());
    stored = c.Post("/api/kv", R"({"key":"message","value":"hello world"})",
                    "application/x-www-form-urlencoded")
                 ->body;
    fetched = c.Get("/api/kv?key=message")->body;
  }
  EXPECT_EQ(stored, "Value stored successfully");
  EXPECT_EQ(fetched, "hello world");
  EXPECT_EQ(*node->open("/example/kv").get("/message"), "hello world");

  httplib::Client c("127.0.0.1", app.port());
  c.set_read_timeout(10);
  EXPECT_EQ(c.Get("/api/kv?key=missing")->status, 404);
  EXPECT_EQ(c.Get("/api/kv")->status, 400);
  EXPECT_EQ(c.Post("/api/kv", "{bad json", "application/json")->status, 400);
  EXPECT_EQ(c.Post("/api/kv", R"({"key":"only"})", "application/json")->status, 400);
  // A failure of the store is a 500 with its text: an invalid key.
  auto bad = c.Post("/api/kv", R"({"key":"/a/../b","value":"v"})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 500);
  EXPECT_NE(bad->body.find("invalid_key"), std::string::npos) << bad->body;
  app.Kill(SIGTERM);
  app.Wait();
}

/// Reads a watch stream (server-sent events) of the HTTP API on its own thread until `done`
/// says the text so far is enough, the server ends it, or 20 s passed. With `ca_file`, over
/// HTTPS trusting that CA.
class EventStream {
 public:
  EventStream(int port, const std::string& target, httplib::Headers headers,
              std::function<bool(const std::string&)> done, const std::string& ca_file = "") {
    result_ = std::async(std::launch::async, [this, port, target, headers, done, ca_file] {
      httplib::Client c((ca_file.empty() ? "http://" : "https://") + std::string("127.0.0.1:") +
                        std::to_string(port));
      if (!ca_file.empty()) {
        c.set_ca_cert_path(ca_file);
        c.enable_server_certificate_verification(true);
      }
      c.set_read_timeout(20);
      const auto until = std::chrono::steady_clock::now() + 20s;
      auto r = c.Get(target, headers, [&](const char* data, size_t size) {
        std::lock_guard<std::mutex> lock(mutex_);
        text_.append(data, size);
        return !done(text_) && std::chrono::steady_clock::now() < until;
      });
      return r ? r->status : -1;
    });
  }
  std::string text() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return text_;
  }
  /// Waits (bounded) for the stream to end.
  std::string Finish() {
    EXPECT_EQ(result_.wait_for(30s), std::future_status::ready);
    return text();
  }

 private:
  mutable std::mutex mutex_;
  std::string text_;
  std::future<int> result_;
};

/// The events of a stream's text as "put KEY=VALUE" / "delete KEY", and the last id.
std::vector<std::string> Events(const std::string& text, std::string* last_id) {
  std::vector<std::string> out;
  std::string event;
  size_t at = 0;
  for (size_t end; (end = text.find('\n', at)) != std::string::npos; at = end + 1) {
    const std::string line = text.substr(at, end - at);
    if (line.rfind("event: ", 0) == 0) event = line.substr(7);
    if (line.rfind("id: ", 0) == 0 && last_id != nullptr) *last_id = line.substr(4);
    if (line.rfind("data: ", 0) == 0) {
      json data = json::parse(line.substr(6), nullptr, false);
      std::string value;
      if (data.contains("value_base64")) {
        tools::Base64Decode(data["value_base64"].get<std::string>(), &value);
      }
      EXPECT_TRUE(data.contains("version")) << line;
      out.push_back(event + " " + data.value("key", "?") + (event == "put" ? "=" + value : ""));
    }
  }
  return out;
}

TEST_F(HttpTest, WatchStreamsServerSentEventsAndResumesFromTheLastEventId) {
  Start();
  Database db = node_->open("/example/kv");
  auto has = [](const std::string& what) {
    return [what](const std::string& text) { return text.find(what) != std::string::npos; };
  };
  EventStream first(http_->port(), "/v1/databases/example/kv/watch?prefix=/w&values=1", {},
                    has("event: delete"));
  // The stream opens with the position it starts from; then the writes come as events.
  ASSERT_TRUE(testing::Eventually(10s, [&] { return has(": position ")(first.text()); }))
      << first.text();
  ASSERT_TRUE(db.put("/w/a", "1").ok());
  ASSERT_TRUE(db.put("/x/b", "outside the prefix").ok());
  ASSERT_TRUE(db.erase("/w/c").ok());
  std::string last_id;
  const std::string first_text = first.Finish();
  EXPECT_EQ(Events(first_text, &last_id), (std::vector<std::string>{"put /w/a=1", "delete /w/c"}));
  ASSERT_FALSE(last_id.empty());

  // The stream opened with an id-only message of its start position (an EventSource then has a
  // Last-Event-ID before any event).
  const std::string opened = first_text.substr(0, first_text.find("\n\n"));
  const size_t id_at = opened.find("id: ");
  ASSERT_NE(id_at, std::string::npos) << opened;
  const std::string start_id = opened.substr(id_at + 4, opened.find('\n', id_at) - id_at - 4);
  ASSERT_FALSE(start_id.empty());

  // Resumed from the last id (as EventSource does, with the URL it first used): the next change,
  // nothing seen before; Last-Event-ID wins over the URL's `from`.
  ASSERT_TRUE(db.put("/w/d", "4").ok());
  EventStream resumed(http_->port(),
                      "/v1/databases/example/kv/watch?prefix=/w&values=1&from=" + start_id,
                      {{"Last-Event-ID", last_id}}, has("event: put"));
  EXPECT_EQ(Events(resumed.Finish(), nullptr), (std::vector<std::string>{"put /w/d=4"}));

  auto bad = Client().Get("/v1/databases/example/kv/watch?from=nonsense");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(Body(bad)["message"].get<std::string>().find("not a position"), std::string::npos);
}

TEST_F(HttpTest, AWatchStreamEndsWhenTheCallerMayNoLongerRead) {
  std::string token;
  ASSERT_TRUE(security::NewBearerToken(&token).ok());
  const std::string acl_with_token = R"(
principals:
  reader: [{role: readonly, databases: ["/example/kv"]}]
tokens:
  - {principal: reader, sha256: )" + security::TokenSha256Hex(token) +
                                     "}\n";
  Start(/*tls=*/true, acl_with_token);
  Database db = node_->open("/example/kv");
  const httplib::Headers reader{{"Authorization", "Bearer " + token}};
  auto stream = [&](const std::string& until) {
    return std::make_unique<EventStream>(
        http_->port(), kKv + "/watch", reader,
        [until](const std::string& text) { return text.find(until) != std::string::npos; },
        testing::SharedTestPki().ca_file());
  };
  // The reader's rights on the database are taken away by a reload while it watches: what is
  // written afterwards is not sent; the stream ends with an error event naming why.
  for (const std::string& reloaded :
       {std::string("principals:\n  reader: [{role: readonly, databases: [\"/other/kv\"]}]\n") +
            acl_with_token.substr(acl_with_token.find("tokens:")),
        std::string("principals:\n  reader: [{role: readonly}]\n")}) {
    SCOPED_TRACE(reloaded);
    std::ofstream(temp_ / "acl.yaml") << acl_with_token;
    ASSERT_TRUE(node_->reload_configs().ok());
    auto watching = stream("event: error");
    ASSERT_TRUE(testing::Eventually(10s, [&] {
      return watching->text().find(": position ") != std::string::npos;
    })) << watching->text();
    ASSERT_TRUE(db.put("/seen", "1").ok());
    ASSERT_TRUE(testing::Eventually(10s, [&] {
      return watching->text().find("/seen") != std::string::npos;
    })) << watching->text();
    std::ofstream(temp_ / "acl.yaml") << reloaded;
    ASSERT_TRUE(node_->reload_configs().ok());
    ASSERT_TRUE(db.put("/secret", "2").ok());
    const std::string text = watching->Finish();
    EXPECT_EQ(text.find("/secret"), std::string::npos) << text;
    EXPECT_NE(text.find("event: error"), std::string::npos) << text;
    // A revoked token is unauthenticated; a principal without the right is denied.
    EXPECT_TRUE(text.find("permission_denied") != std::string::npos ||
                text.find("unauthenticated") != std::string::npos)
        << text;
  }
}

TEST_F(HttpTest, KeepAlivesCarryTheMovingPositionSoAQuietStreamResumesFromAFreshOne) {
  Start();
  Database db = node_->open("/example/kv");
  // Nothing under the prefix changes; the position still moves (writes elsewhere, and the time
  // the watcher was last caught up, which decides when a position expires).
  EventStream quiet(http_->port(), kKv + "/watch?prefix=/w", {}, [](const std::string& text) {
    return text.find(": keep-alive\nid: ") != std::string::npos;
  });
  ASSERT_TRUE(testing::Eventually(
      10s, [&] { return quiet.text().find(": position ") != std::string::npos; }));
  ASSERT_TRUE(db.put("/x/elsewhere", "1").ok());
  const std::string text = quiet.Finish();
  const size_t at = text.find(": keep-alive\nid: ");
  ASSERT_NE(at, std::string::npos) << "no keep-alive carried a position: " << text;
  const size_t from = at + std::string(": keep-alive\nid: ").size();
  const std::string moved = text.substr(from, text.find('\n', from) - from);
  const size_t opened_at = text.find("id: ") + 4;
  EXPECT_NE(moved, text.substr(opened_at, text.find('\n', opened_at) - opened_at)) << text;
  // Resuming from it: what came after, nothing before.
  ASSERT_TRUE(db.put("/w/after", "2").ok());
  EventStream resumed(
      http_->port(), kKv + "/watch?prefix=/w&values=1", {{"Last-Event-ID", moved}},
      [](const std::string& t) { return t.find("event: put") != std::string::npos; });
  EXPECT_EQ(Events(resumed.Finish(), nullptr), (std::vector<std::string>{"put /w/after=2"}));
}

}  // namespace
}  // namespace kvmesh
