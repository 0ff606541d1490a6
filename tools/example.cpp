// kvmesh-example: embeds a node and walks through the seed's operations on /example/kv.
#include <CLI/CLI.hpp>

#include <iostream>

#include "kvmesh/node.hpp"

namespace {

int Fail(const std::string& what, const kvmesh::Status& s) {
  std::cerr << "kvmesh-example: " << what << ": " << s << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Embeds a kvmesh node and uses the example database /example/kv"};
  kvmesh::NodeOptions options;
  options.data_dir = "kvmesh-data";
  options.config_dir = "examples/config";
  app.add_option("--data-dir", options.data_dir, "node storage directory")->capture_default_str();
  app.add_option("--config-dir", options.config_dir, "directory of database YAML configs")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<kvmesh::Node> node;
  kvmesh::Status s = kvmesh::Node::Start(options, &node);
  if (!s.ok()) return Fail("cannot start node", s);
  std::cout << "node " << std::hex << node->node_id() << std::dec << " started; data in "
            << options.data_dir << "\n";

  // The same handle a remote program gets from kvmesh::client::connect(address).open(path).
  kvmesh::Database db = node->open("/example/kv");
  if (!db.ok()) return Fail("open /example/kv", db.status());
  static const char kProfile[] = "{\"name\":\"Ada\",\"bytes\":\"\0\xff\"}";
  const std::string profile(kProfile, sizeof(kProfile) - 1);  // keeps the NUL byte
  if (!(s = db.put("/users/123/profile", profile)).ok()) return Fail("put", s);
  if (!(s = db.put("/users/123/sessions/456", "active")).ok()) return Fail("put", s);
  if (!(s = db.put("/users/124/profile", "{\"name\":\"Bob\"}")).ok()) return Fail("put", s);
  std::cout << "put /users/123/profile, /users/123/sessions/456, /users/124/profile\n";

  kvmesh::Result<std::string> value = db.get("/users/123/profile");
  if (!value.ok()) return Fail("get", value.status());
  std::cout << "get /users/123/profile -> " << value->size() << " bytes, "
            << (*value == profile ? "identical (NUL and 0xFF bytes included)" : "DIFFERENT")
            << "\n";

  kvmesh::Result<std::vector<std::string>> keys = db.list("/users/123");
  if (!keys.ok()) return Fail("list", keys.status());
  std::cout << "list /users/123 ->";
  for (const auto& k : *keys) std::cout << " " << k;
  std::cout << "\n";

  if (!(s = db.erase("/users/123/sessions/456")).ok()) return Fail("erase", s);
  std::cout << "after erase, get /users/123/sessions/456 -> "
            << db.get("/users/123/sessions/456").status() << "\n";

  kvmesh::Database missing = node->open("/no/such/db");
  std::cout << "open /no/such/db -> " << missing.status() << "\n";

  kvmesh::Result<kvmesh::DatabaseStats> stats = db.stats();
  if (!stats.ok()) return Fail("stats", stats.status());
  std::cout << "stats " << stats->path << ": " << stats->key_count << " keys, " << stats->used_bytes
            << " of " << stats->limit_bytes << " bytes used\n";
  return 0;
}
