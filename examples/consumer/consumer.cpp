// A user's program built against the installed kvmesh package (see CMakeLists.txt here): it runs
// a node inside the process with its database configs given in memory, writes and reads a key
// through the embedded API, then reaches the same node through the network client.
//
//   kvmesh-consumer DATA_DIR
//
// Prints "consumer: OK" and exits 0 when every step gave what it should; otherwise names the
// step that failed and exits 1.
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "kvmesh/status.hpp"

namespace {

int Fail(const std::string& step, const kvmesh::Status& status) {
  std::cerr << "consumer: " << step << ": " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: kvmesh-consumer DATA_DIR\n";
    return 2;
  }
  kvmesh::NodeOptions options;
  options.data_dir = argv[1];
  options.config_yaml =
      "matcher: /example/kv\n"
      "size: 1MiB\n";
  options.listen_port = 0;  // any free port on 127.0.0.1, for the network client below
  std::unique_ptr<kvmesh::Node> node;
  kvmesh::Status s = kvmesh::Node::Start(options, &node);
  if (!s.ok()) return Fail("start node", s);

  // Embedded: the node in this process.
  kvmesh::Database local = node->open("/example/kv");
  if (!local.ok()) return Fail("open embedded", local.status());
  s = local.put("/users/1", "ada");
  if (!s.ok()) return Fail("embedded put", s);
  kvmesh::Result<std::string> value = local.get("/users/1");
  if (!value.ok() || *value != "ada") return Fail("embedded get", value.status());

  // Network client: the same node through its client port.
  auto remote =
      kvmesh::client::connect("127.0.0.1:" + std::to_string(node->port())).open("/example/kv");
  if (!remote.ok()) return Fail("connect and open", remote.status());
  kvmesh::Result<std::string> read = remote.get("/users/1");
  if (!read.ok() || *read != "ada") return Fail("client get", read.status());
  s = remote.put("/users/2", "grace");
  if (!s.ok()) return Fail("client put", s);
  kvmesh::Result<std::vector<std::string>> keys = remote.list("/users");
  if (!keys.ok()) return Fail("client list", keys.status());
  if (keys->size() != 2) {
    return Fail("client list",
                kvmesh::Status::Internal(std::to_string(keys->size()) + " keys instead of 2"));
  }
  if (remote.get("/users/3").status().code() != kvmesh::Code::kNotFound) {
    return Fail("client get of a missing key", remote.get("/users/3").status());
  }

  std::cout << "consumer: OK\n";
  return 0;
}
