// One handle type, two backends: the same function body runs against a database handle of a node
// embedded in this process and one of a node reached over the network, and must see the same
// results, errors (with their messages) included.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "kvmesh/client.hpp"
#include "kvmesh/database.hpp"
#include "kvmesh/node.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::TempDir;

/// A database of 100 bytes, next to the seed's /example/kv.
constexpr const char* kTinyConfig = "matcher: /tiny/*\nsize: 100B\n";

/// What a call returned, as text: "OK", "<code>: <message>", or the value.
std::string Show(const Status& s) {
  return s.ToString();
}
std::string Show(const Result<std::string>& r) {
  return r.ok() ? "value " + *r : r.status().ToString();
}
std::string Show(const Result<ListPage>& r) {
  if (!r.ok()) return r.status().ToString();
  std::string out = "page";
  for (size_t i = 0; i < r->keys.size(); ++i) {
    out += " " + r->keys[i];
    if (i < r->values.size()) out += "=" + r->values[i];
  }
  return out + (r->has_more() ? " (more)" : " (last)");
}
std::string Show(const Result<std::vector<std::string>>& r) {
  if (!r.ok()) return r.status().ToString();
  std::string out = "keys";
  for (const auto& k : *r) out += " " + k;
  return out;
}
std::string Show(const Result<DatabaseStats>& r) {
  if (!r.ok()) return r.status().ToString();
  return "stats " + r->path + " " + r->config_id + " keys=" + std::to_string(r->key_count) +
         " used=" + std::to_string(r->used_bytes) + " limit=" + std::to_string(r->limit_bytes);
}

/// Waits for a future with a bound: a hang fails the test instead of blocking it.
template <class T>
T Get(std::future<T> future) {
  if (future.wait_for(30s) != std::future_status::ready) {
    ADD_FAILURE() << "no answer within 30 s";
    return Status::Timeout("test bound");
  }
  return future.get();
}

/// Runs a callback variant: `start(done)` must call `done` exactly once, on another thread than
/// the caller's (the handle is usable). Returns what `done` got.
template <class T, class Start>
T ViaCallback(Start start) {
  auto promise = std::make_shared<std::promise<T>>();
  auto caller = std::this_thread::get_id();
  auto other_thread = std::make_shared<bool>(false);
  start([promise, caller, other_thread](T value) {
    *other_thread = std::this_thread::get_id() != caller;
    promise->set_value(std::move(value));
  });
  T value = Get(promise->get_future());
  EXPECT_TRUE(*other_thread) << "the callback ran on the calling thread";
  return value;
}

/// The one body both backends run. `db` is "/example/kv" (empty), `tiny` a "/tiny/..." database,
/// `unknown` the handle of a path no config matches. Checks what a user relies on and returns
/// every answer as text, for comparing the two backends.
std::vector<std::string> Exercise(Database db, Database tiny, Database unknown) {
  std::vector<std::string> out;
  auto record = [&](std::string line) { out.push_back(std::move(line)); };
  EXPECT_TRUE(db.ok()) << db.status();
  record("path " + db.path());

  // Blocking calls.
  EXPECT_TRUE(db.put("/users/1", std::string("a\0b", 3)).ok());
  Result<std::string> value = db.get("/users/1");
  EXPECT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value.ok() ? *value : "", std::string("a\0b", 3));
  record(Show(value));
  Result<std::string> missing = db.get("/users/404");
  EXPECT_TRUE(missing.IsNotFound()) << missing.status();
  record(Show(missing));
  EXPECT_TRUE(db.erase("/users/1").ok());
  EXPECT_TRUE(db.get("/users/1").IsNotFound());
  record(Show(db.erase("/users/1")));  // erasing a missing key succeeds
  Status invalid = db.put("/a/../b", "v");
  EXPECT_EQ(invalid.code(), Code::kInvalidKey) << invalid;
  record(Show(invalid));
  Status too_big = tiny.put("/k", std::string(200, 'x'));
  EXPECT_EQ(too_big.code(), Code::kSizeLimitExceeded) << too_big;
  record(Show(too_big));

  // Paging: 25 keys under /p, 10 per page; list() pages transparently.
  WriteBatch batch;
  for (int i = 0; i < 25; ++i) {
    batch.Put("/p/" + std::string(i < 10 ? "0" : "") + std::to_string(i), std::to_string(i));
  }
  batch.Put("/p1", "not under /p");
  EXPECT_TRUE(db.write(batch).ok());
  ListOptions options;
  options.prefix = "/p";
  options.limit = 10;
  options.with_values = true;
  int pages = 0;
  for (; pages < 10; ++pages) {
    Result<ListPage> page = db.list_page(options);
    EXPECT_TRUE(page.ok()) << page.status();
    record(Show(page));
    if (!page.ok() || !page->has_more()) break;
    options.start_after = page->next_token;
  }
  EXPECT_EQ(pages, 2) << "three pages of 10, 10 and 5 keys";
  Result<std::vector<std::string>> keys = db.list("/p");
  EXPECT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys.ok() ? keys->size() : 0u, 25u);

  // A batch handed over (write(WriteBatch&&), no copy) is applied as a copied one: atomically,
  // and refused whole.
  WriteBatch moved;
  moved.Put("/m/1", "one").Put("/m/2", "two");
  EXPECT_TRUE(db.write(std::move(moved)).ok());
  record("moved: " + Show(db.get("/m/2")));
  WriteBatch bad;
  bad.Put("/m/3", "three").Put("/a/../b", "v");
  Status refused_moved = db.write(std::move(bad));
  EXPECT_EQ(refused_moved.code(), Code::kInvalidKey) << refused_moved;
  EXPECT_TRUE(db.get("/m/3").IsNotFound()) << "nothing of a refused batch is written";
  record(Show(refused_moved));
  WriteBatch over;
  over.Put("/k", std::string(200, 'x'));
  Status too_big_moved = tiny.write(std::move(over));
  EXPECT_EQ(too_big_moved.code(), Code::kSizeLimitExceeded) << too_big_moved;
  EXPECT_TRUE(db.write(std::move(WriteBatch().Erase("/m/1").Erase("/m/2"))).ok());
  record(Show(keys));

  // Ranges and reverse, paged: [/p/05, /p/20) from the top down, 4 keys a page, with values
  // and versions; the options travel whole to the node and back.
  ListOptions range;
  range.prefix = "/p";
  range.start = "p/05";  // normalised like a key
  range.end = "/p/20";
  range.reverse = true;
  range.limit = 4;
  range.with_values = true;
  range.with_versions = true;
  std::vector<std::string> ranged;
  int range_pages = 0;
  for (; range_pages < 10; ++range_pages) {
    Result<ListPage> page = db.list_page(range);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    record(Show(page));
    EXPECT_EQ(page->versions.size(), page->keys.size());
    ranged.insert(ranged.end(), page->keys.begin(), page->keys.end());
    if (!page->has_more()) break;
    range.start_after = page->next_token;
  }
  std::vector<std::string> want_range;
  for (int i = 19; i >= 5; --i) {
    want_range.push_back("/p/" + std::string(i < 10 ? "0" : "") + std::to_string(i));
  }
  EXPECT_EQ(ranged, want_range);
  EXPECT_EQ(range_pages, 3) << "four pages of 4, 4, 4 and 3 keys";
  ListOptions outside;
  outside.prefix = "/p";
  outside.start = "/q";
  Result<ListPage> refused = db.list_page(outside);
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument) << refused.status();
  record(Show(refused));

  // Batches: atomic and in order (the erase after the put wins).
  EXPECT_TRUE(db.batch().put("/b/1", "1").put("/b/2", "2").erase("/b/1").commit().ok());
  record(Show(db.list("/b")));
  Status rejected = tiny.batch().put("/x", "small").put("/y", std::string(200, 'y')).commit();
  EXPECT_EQ(rejected.code(), Code::kSizeLimitExceeded) << rejected;
  record(Show(rejected));
  EXPECT_TRUE(tiny.get("/x").IsNotFound()) << "a failed batch writes nothing";

  Result<DatabaseStats> stats = db.stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats.ok() ? stats->key_count : 0u, 27u);
  record(Show(stats));

  // Futures.
  record(Show(Get(db.put_async("/f/1", "one"))));
  record(Show(Get(db.get_async("/f/1"))));
  record(Show(Get(db.get_async("/f/404"))));
  record(Show(Get(db.erase_async("/f/1"))));
  record(Show(Get(db.write_async(WriteBatch().Put("/f/2", "two").Put("/f/3", "three")))));
  ListOptions f_options;
  f_options.prefix = "/f";
  record(Show(Get(db.list_page_async(f_options))));
  record(Show(Get(db.stats_async())));
  record(Show(Get(tiny.put_async("/k", std::string(200, 'x')))));

  // Callbacks.
  using S = Database::StatusCallback;
  record(Show(ViaCallback<Status>([&](S done) { db.put_async("/c/1", "one", done); })));
  record(Show(ViaCallback<Result<std::string>>(
      [&](Database::ResultCallback<std::string> done) { db.get_async("/c/1", done); })));
  record(Show(ViaCallback<Result<std::string>>(
      [&](Database::ResultCallback<std::string> done) { db.get_async("/c/404", done); })));
  record(Show(ViaCallback<Status>([&](S done) { db.erase_async("/c/1", done); })));
  record(Show(ViaCallback<Status>(
      [&](S done) { db.write_async(WriteBatch().Put("/c/2", "two").Erase("/f/2"), done); })));
  ListOptions c_options;
  c_options.prefix = "/c";
  record(Show(ViaCallback<Result<ListPage>>(
      [&](Database::ResultCallback<ListPage> done) { db.list_page_async(c_options, done); })));
  record(Show(ViaCallback<Result<DatabaseStats>>(
      [&](Database::ResultCallback<DatabaseStats> done) { db.stats_async(done); })));

  // Requests of one handle from one thread apply in order, asynchronous ones included.
  std::vector<std::future<Status>> writes;
  for (int i = 0; i < 20; ++i) writes.push_back(db.put_async("/order", std::to_string(i)));
  for (auto& w : writes) EXPECT_TRUE(Get(std::move(w)).ok());
  record(Show(db.get("/order")));

  Result<ReplicationStatus> replication = db.replication_status();
  EXPECT_TRUE(replication.ok()) << replication.status();
  if (replication.ok()) {
    record("replication " + replication->path + " min=" + std::to_string(replication->min) +
           " max=" + std::to_string(replication->max) +
           " replicas=" + std::to_string(replication->replicas.size()) +
           " keys=" + std::to_string(replication->key_count));
  }

  // The unusable handle: every call answers its status at once, callbacks before returning.
  EXPECT_EQ(unknown.status().code(), Code::kNoMatchingConfig);
  record("unknown " + unknown.path() + ": " + Show(unknown.status()));
  EXPECT_EQ(unknown.put("/k", "v"), unknown.status());
  EXPECT_EQ(unknown.get("/k").status(), unknown.status());
  EXPECT_EQ(unknown.list("/").status(), unknown.status());
  EXPECT_EQ(unknown.batch().put("/k", "v").commit(), unknown.status());
  EXPECT_EQ(Get(unknown.stats_async()).status(), unknown.status());
  bool answered = false;
  unknown.get_async("/k", [&](Result<std::string> r) {
    answered = true;
    EXPECT_EQ(r.status(), unknown.status());
  });
  EXPECT_TRUE(answered) << "an unusable handle answers before the call returns";

  // close() ends this handle only.
  Database copy = db;
  copy.close();
  EXPECT_EQ(copy.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(copy.get("/order").status(), copy.status());
  record("closed: " + Show(copy.status()));
  EXPECT_TRUE(db.get("/order").ok()) << "other copies stay usable";
  return out;
}

/// Expiry and conditional writes through `db`, as a transcript (codes, not messages: the
/// messages hold version tokens, which differ between nodes).
std::vector<std::string> ExerciseTtlAndConditions(const Database& db) {
  std::vector<std::string> out;
  auto code = [](const Status& s) { return std::string(CodeName(s.code())); };
  WriteOptions ttl;
  ttl.ttl = 300ms;
  EXPECT_TRUE(db.put("/ttl/short", "v", ttl).ok());
  EXPECT_TRUE(db.put("/ttl/cleared", "v", ttl).ok());
  EXPECT_TRUE(db.put("/ttl/cleared", "kept").ok());  // a put without ttl clears it
  out.push_back("fresh: " + Show(db.get("/ttl/short")));
  // Expired keys read as missing, are not listed, and leave the size accounting.
  const bool expired = testing::Eventually(10s, [&] { return db.get("/ttl/short").IsNotFound(); });
  EXPECT_TRUE(expired);
  out.push_back("list: " + Show(db.list("/ttl")));
  const bool removed = testing::Eventually(10s, [&] {
    Result<DatabaseStats> st = db.stats();
    return st.ok() && st->key_count == 1;
  });
  EXPECT_TRUE(removed) << "the expired key is removed in the background";
  ttl.ttl = -1ms;
  out.push_back("negative ttl: " + code(db.put("/ttl/x", "v", ttl)));

  // Versions and conditional writes.
  Result<VersionedValue> v1 = db.get_versioned("/ttl/cleared");
  EXPECT_TRUE(v1.ok()) << v1.status();
  if (!v1.ok()) return out;
  out.push_back("versioned: " + v1->value);
  WriteOptions if_v1;
  if_v1.if_version = v1->version;
  out.push_back("put if v1: " + code(db.put("/ttl/cleared", "2", if_v1)));
  out.push_back("put if v1 again: " + code(db.put("/ttl/cleared", "3", if_v1)));
  out.push_back("erase if v1: " + code(db.erase("/ttl/cleared", if_v1)));
  out.push_back("after: " + Show(db.get("/ttl/cleared")));
  WriteOptions absent;
  absent.if_absent = true;
  out.push_back("if absent (new): " + code(db.put("/cas/new", "1", absent)));
  out.push_back("if absent (exists): " + code(db.put("/cas/new", "2", absent)));
  out.push_back("if absent (expired): " + code(db.put("/ttl/short", "back", absent)));
  Result<VersionedValue> v2 = db.get_versioned("/ttl/cleared");
  EXPECT_TRUE(v2.ok());
  if (!v2.ok()) return out;
  WriteOptions if_v2;
  if_v2.if_version = v2->version;
  out.push_back("erase if v2: " + code(db.erase("/ttl/cleared", if_v2)));
  out.push_back("versioned missing: " + code(db.get_versioned("/ttl/cleared").status()));
  Status failed = db.batch().check_absent("/ttl/short").put("/cas/b", "1").commit();
  out.push_back("batch: " + code(failed) + " names /ttl/short: " +
                (failed.message().find("\"/ttl/short\"") != std::string::npos ? "yes" : "no"));
  out.push_back("batch wrote nothing: " + Show(db.get("/cas/b")));
  std::promise<Status> async;
  db.put_async("/cas/new", "3", absent, [&](Status s) { async.set_value(s); });
  out.push_back("async if absent: " + code(Get(async.get_future())));
  return out;
}

class DatabaseApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.Write("config/example.yaml", kvmesh::testing::kSeedExampleConfig);
    dir_.Write("config/tiny.yaml", kTinyConfig);
    embedded_ = Start("embedded", -1);
    remote_ = Start("remote", 0);
    ASSERT_TRUE(embedded_ && remote_);
    client_ = client::connect("127.0.0.1:" + std::to_string(remote_->port()));
    ASSERT_TRUE(client_.ok()) << client_.status();
  }

  std::unique_ptr<Node> Start(const std::string& name, int listen_port) {
    NodeOptions options;
    options.data_dir = dir_ / name;
    options.config_dir = dir_ / "config";
    options.listen_port = listen_port;
    std::unique_ptr<Node> node;
    Status s = Node::Start(options, &node);
    EXPECT_TRUE(s.ok()) << s;
    return node;
  }

  TempDir dir_;
  std::unique_ptr<Node> embedded_;  // used in this process
  std::unique_ptr<Node> remote_;    // used over the network only
  client::Client client_;
};

TEST_F(DatabaseApiTest, EmbeddedAndNetworkHandlesGiveIdenticalResults) {
  std::vector<std::string> embedded = Exercise(
      embedded_->open("/example/kv"), embedded_->open("/tiny/t"), embedded_->open("/unknown"));
  std::vector<std::string> network =
      Exercise(client_.open("/example/kv"), client_.open("/tiny/t"), client_.open("/unknown"));
  ASSERT_EQ(embedded.size(), network.size());
  for (size_t i = 0; i < embedded.size(); ++i) {
    EXPECT_EQ(embedded[i], network[i]) << "answer " << i;
  }
  // Spot checks that the transcript says what it should (both sides agree, so one suffices).
  EXPECT_EQ(embedded.front(), "path /example/kv");
  EXPECT_EQ(embedded.back(),
            "closed: invalid_argument: database handle \"/example/kv\" was closed");
}

TEST_F(DatabaseApiTest, ExpiryAndConditionalWritesBehaveAlikeEmbeddedAndOverTheNetwork) {
  std::vector<std::string> embedded = ExerciseTtlAndConditions(embedded_->open("/example/kv"));
  std::vector<std::string> network = ExerciseTtlAndConditions(client_.open("/example/kv"));
  const std::vector<std::string> expected = {
      "fresh: value v",
      "list: keys /ttl/cleared",
      "negative ttl: invalid_argument",
      "versioned: kept",
      "put if v1: ok",
      "put if v1 again: condition_failed",
      "erase if v1: condition_failed",
      "after: value 2",
      "if absent (new): ok",
      "if absent (exists): condition_failed",
      "if absent (expired): ok",
      "erase if v2: ok",
      "versioned missing: not_found",
      "batch: condition_failed names /ttl/short: yes",
      "batch wrote nothing: not_found: key \"/cas/b\" not found in database \"/example/kv\"",
      "async if absent: condition_failed",
  };
  EXPECT_EQ(embedded, expected);
  EXPECT_EQ(network, expected);
}

TEST_F(DatabaseApiTest, NodeAndClientAdminCallsAgree) {
  ASSERT_TRUE(embedded_->open("/example/kv").ok());
  ASSERT_TRUE(client_.open("/example/kv").ok());
  auto local_dbs = embedded_->databases();
  auto remote_dbs = client_.databases();
  ASSERT_TRUE(local_dbs.ok() && remote_dbs.ok());
  ASSERT_EQ(local_dbs->size(), 1u);
  ASSERT_EQ(remote_dbs->size(), 1u);
  EXPECT_EQ((*local_dbs)[0].path, (*remote_dbs)[0].path);
  auto local_configs = embedded_->configs();
  auto remote_configs = client_.configs();
  ASSERT_TRUE(local_configs.ok() && remote_configs.ok());
  ASSERT_EQ(local_configs->size(), 2u);
  ASSERT_EQ(remote_configs->size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ((*local_configs)[i].id, (*remote_configs)[i].id);
  auto local_reload = embedded_->reload_configs();
  auto remote_reload = client_.reload_configs();
  ASSERT_TRUE(local_reload.ok()) << local_reload.status();
  ASSERT_TRUE(remote_reload.ok()) << remote_reload.status();
  auto local_members = embedded_->members();
  auto remote_members = client_.members();
  ASSERT_TRUE(local_members.ok() && remote_members.ok());
  ASSERT_EQ(local_members->size(), 1u);
  ASSERT_EQ(remote_members->size(), 1u);
  EXPECT_TRUE((*local_members)[0].self);
  EXPECT_EQ((*remote_members)[0].node_id, remote_->node_id());
}

}  // namespace
}  // namespace kvmesh
