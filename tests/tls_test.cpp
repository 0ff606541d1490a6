// Mutual TLS (issue 14): who may connect to a node, and what a connected peer may claim.
// Real nodes over real TLS connections on 127.0.0.1, certificates from testing/test_pki.hpp.
#include <gtest/gtest.h>

#include <signal.h>

#include <caf/all.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp/header.hpp>

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "kvmesh/client.hpp"
#include "kvmesh/node.hpp"
#include "messages/cluster.pb.h"
#include "messages/system_config.hpp"
#include "messages/type_ids.hpp"
#include "process_util.hpp"
#include "security/certificates.hpp"
#include "security/tls.hpp"
#include "test_util.hpp"
#include "testing/local_cluster.hpp"
#include "testing/test_pki.hpp"
#include "transport/connection_guard.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using testing::Eventually;
using testing::SharedOtherTestPki;
using testing::SharedTestPki;

constexpr const char* kConfigs = R"(
- id: kv
  matcher: /example/kv
  replication: {min: 1, max: 3}
  size: 10MB
)";

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = temp_.path(); }

  /// A single node serving clients with node certificate `name`.
  std::unique_ptr<Node> StartNode(const std::string& name, bool cluster = false) {
    NodeOptions o;
    o.data_dir = dir_ + "/" + name;
    o.config_yaml = kConfigs;
    o.listen_port = 0;
    if (cluster) o.cluster_port = 0;
    o.tls = SharedTestPki().Node(name);
    std::unique_ptr<Node> node;
    Status s = Node::Start(o, &node);
    EXPECT_TRUE(s.ok()) << s;
    return node;
  }

  static client::Client Connect(const Node& node, const TlsOptions& tls) {
    client::ClientOptions o;
    o.tls = tls;
    o.request_timeout = 5s;
    return client::connect("127.0.0.1:" + std::to_string(node.port()), o);
  }

  testing::TempDir temp_;
  std::string dir_;
};

TEST_F(TlsTest, AClientWithACertificateOfTheClusterCaReadsAndWrites) {
  auto node = StartNode("n0");
  ASSERT_TRUE(node);
  auto client = Connect(*node, SharedTestPki().Client("alice"));
  ASSERT_TRUE(client.ok()) << client.status();
  auto db = client.open("/example/kv");
  ASSERT_TRUE(db.put("/k", std::string("v\0w", 3)).ok());
  auto got = db.get("/k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string("v\0w", 3));
}

TEST_F(TlsTest, APlaintextClientIsRefused) {
  auto node = StartNode("n0");
  ASSERT_TRUE(node);
  auto client = Connect(*node, TlsOptions{});
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), Code::kUnavailable) << client.status();
  // The node never took it for a kvmesh peer: a TLS client still gets in.
  EXPECT_TRUE(Connect(*node, SharedTestPki().Client("alice")).ok());
}

/// A TLS client in plain OpenSSL (without kvmesh's check that our own certificate fits our CA):
/// connects to 127.0.0.1:`port` presenting `presented`, trusting `trusted.ca_file`, sends
/// `payload_bytes` bytes of junk if the handshake lets it, and reads one byte. Empty if the node
/// took the certificate (it sends its client port welcome at once), else why not.
std::string RawTls(uint16_t port, const TlsOptions& presented, const TlsOptions& trusted,
                   size_t payload_bytes = 0) {
  // OpenSSL writes with write(2): a node that refused us and closed must not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, trusted.ca_file.c_str(), nullptr);
  SSL_CTX_use_certificate_file(ctx, presented.cert_file.c_str(), SSL_FILETYPE_PEM);
  SSL_CTX_use_PrivateKey_file(ctx, presented.key_file.c_str(), SSL_FILETYPE_PEM);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  const int fd = testing::Connect(port);
  timeval five_seconds{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &five_seconds, sizeof(five_seconds));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &five_seconds, sizeof(five_seconds));
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  std::string why;
  // With TLS 1.3 the client's handshake ends before the server has checked the client's
  // certificate: its verdict (data, or an alert) comes with the next read or write.
  bool ok = SSL_connect(ssl) == 1;
  const std::string chunk(1 << 20, 'x');
  for (size_t sent = 0; ok && sent < payload_bytes; sent += chunk.size()) {
    ok = SSL_write(ssl, chunk.data(), static_cast<int>(chunk.size())) > 0;
  }
  char byte = 0;
  if (!ok || SSL_read(ssl, &byte, 1) != 1) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    why = buf;
    if (why.find(":00000000:") != std::string::npos) why = "closed";
  }
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(ctx);
  return why;
}

TEST_F(TlsTest, ACertificateOfAnotherCaIsRefusedDuringTheHandshake) {
  auto node = StartNode("n0");
  ASSERT_TRUE(node);
  const TlsOptions ours = SharedTestPki().Client("alice");
  EXPECT_EQ(RawTls(node->port(), ours, ours), "");
  // Same name, another CA: the node refuses it before CAF reads a byte.
  const std::string why = RawTls(node->port(), SharedOtherTestPki().Client("alice"), ours);
  EXPECT_NE(why.find("unknown ca"), std::string::npos) << why;
  // A client that trusts only the other CA refuses the node.
  auto trusting_other = Connect(*node, SharedOtherTestPki().Client("alice"));
  ASSERT_FALSE(trusting_other.ok());
  EXPECT_NE(trusting_other.status().message().find("certificate verify failed"), std::string::npos)
      << trusting_other.status();
}

TEST_F(TlsTest, ANodeWhoseCertificateDoesNotNameTheDialledAddressIsRefused) {
  // A node certificate for 10.9.9.9 only, served on 127.0.0.1: a client dialling 127.0.0.1 must
  // not accept it (another node of the cluster could otherwise stand in for the one dialled).
  security::CertificateOptions options;
  options.dir = SharedTestPki().dir();
  options.force = true;  // the shared PKI outlives one test run in --gtest_repeat
  auto made = security::MakeNodeCertificate(options, "elsewhere", {"10.9.9.9"});
  ASSERT_TRUE(made.ok()) << made.status();
  NodeOptions o;
  o.data_dir = dir_ + "/elsewhere";
  o.config_yaml = kConfigs;
  o.listen_port = 0;
  o.tls = TlsOptions{SharedTestPki().ca_file(), made->cert_file, made->key_file};
  std::unique_ptr<Node> node;
  ASSERT_TRUE(Node::Start(o, &node).ok());
  auto client = Connect(*node, SharedTestPki().Client("alice"));
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("IP address mismatch"), std::string::npos)
      << client.status();
}

TEST_F(TlsTest, ANodeNeedsANodeCertificate) {
  NodeOptions o;
  o.data_dir = dir_ + "/as-client";
  o.config_yaml = kConfigs;
  o.listen_port = 0;
  o.tls = SharedTestPki().Client("alice");
  std::unique_ptr<Node> node;
  Status s = Node::Start(o, &node);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("client certificate of \"alice\"; a node needs a node certificate"),
            std::string::npos)
      << s;
  o.tls.key_file = SharedTestPki().Node("n0").key_file;
  s = Node::Start(o, &node);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is not the key of the certificate"), std::string::npos) << s;
}

TEST_F(TlsTest, AThreeNodeClusterReplicatesOverTls) {
  LocalClusterOptions options;
  options.dir = dir_ + "/cluster";
  options.node.config_yaml = kConfigs;
  for (int i = 0; i < 3; ++i)
    options.node_tls.push_back(SharedTestPki().Node("n" + std::to_string(i)));
  std::unique_ptr<LocalCluster> cluster;
  Status s = LocalCluster::Start(options, &cluster);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(cluster->node(0)->open("/example/kv").put("/k", "v").ok());
  ASSERT_TRUE(cluster->WaitForConvergence("/example/kv", 20s).ok());
  auto got = cluster->node(2)->open("/example/kv").get("/k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v");
}

// A client certificate the ACL does not name never gets a connection (refused at the TLS
// handshake, before the node sends a byte of data), and removing a principal from the file
// refuses its next connection without a restart.
TEST_F(TlsTest, ClientsTheAclDoesNotNameAreRefusedAtTheHandshake) {
  const std::string acl = dir_ + "/acl.yaml";
  std::ofstream(acl) << "principals:\n  alice: [{role: readwrite}]\n  bob: [{role: readonly}]\n";
  NodeOptions o;
  o.data_dir = dir_ + "/n0";
  o.config_yaml = kConfigs;
  o.listen_port = 0;
  o.tls = SharedTestPki().Node("n0");
  o.acl_file = acl;
  std::unique_ptr<Node> node;
  Status s = Node::Start(o, &node);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(Connect(*node, SharedTestPki().Client("alice")).ok());
  auto mallory = Connect(*node, SharedTestPki().Client("mallory"));
  EXPECT_EQ(mallory.status().code(), Code::kUnavailable) << mallory.status();
  // The node sends mallory nothing: the handshake's end is the end of the connection.
  EXPECT_NE(
      RawTls(node->port(), SharedTestPki().Client("mallory"), SharedTestPki().Client("alice")), "");
  EXPECT_EQ(RawTls(node->port(), SharedTestPki().Client("bob"), SharedTestPki().Client("bob")), "");

  std::ofstream(acl, std::ios::trunc) << "principals:\n  alice: [{role: readwrite}]\n";
  ASSERT_TRUE(node->reload_configs().ok());
  EXPECT_NE(RawTls(node->port(), SharedTestPki().Client("bob"), SharedTestPki().Client("bob")), "")
      << "a principal removed from the ACL still connects";
  EXPECT_TRUE(Connect(*node, SharedTestPki().Client("alice")).ok());
}

/// Another process as a peer: its own actor system with kvmesh's message types and the
/// TLS settings `tls`, connecting with kvmesh's transport.
struct RawPeer {
  explicit RawPeer(const TlsOptions& tls) {
    ActorSystemSettings settings;
    settings.network = true;
    settings.worker_threads = 2;
    EXPECT_TRUE(ConfigureActorSystem(settings, &cfg).ok());
    system = std::make_unique<caf::actor_system>(cfg);
    Status s = security::TlsContext::Load(tls, &security.tls);
    EXPECT_TRUE(s.ok()) << s;
  }
  ~RawPeer() { system.reset(); }

  /// Connects to 127.0.0.1:`port`; the actor published there, or the error.
  caf::expected<caf::strong_actor_ptr> Connect(uint16_t port) {
    caf::scoped_actor self{*system};
    auto connector = SpawnConnector(*system, security, 64u << 20, caf::timespan{3s});
    caf::expected<caf::strong_actor_ptr> result{caf::sec::cannot_connect_to_node};
    self->request(connector, caf::timespan{5s}, caf::connect_atom_v, std::string("127.0.0.1"), port)
        .receive([&](const caf::node_id&, caf::strong_actor_ptr& actor,
                     const std::set<std::string>&) { result = std::move(actor); },
                 [&](caf::error& err) { result = std::move(err); });
    return result;
  }

  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> system;
  TransportSecurity security;
};

TEST_F(TlsTest, AClientCertificateCannotJoinTheCluster) {
  auto node = StartNode("n0", /*cluster=*/true);
  ASSERT_TRUE(node);
  RawPeer client_cert(SharedTestPki().Client("n1"));  // a client certificate named like a node
  auto refused = client_cert.Connect(node->cluster_port());
  EXPECT_FALSE(refused) << "a client certificate reached the cluster port's actor "
                        << caf::to_string(*refused);
  RawPeer node_cert(SharedTestPki().Node("n1"));
  auto accepted = node_cert.Connect(node->cluster_port());
  EXPECT_TRUE(accepted) << client_cert.system->render(accepted.error());
}

std::string Describe(uint64_t id, const std::string& name, uint16_t port, uint64_t incarnation) {
  proto::Member m;
  m.set_node_id(id);
  m.set_name(name);
  m.set_host("127.0.0.1");
  m.set_cluster_port(port);
  m.set_incarnation(incarnation);
  return m.SerializeAsString();
}

TEST_F(TlsTest, ANodeCannotSpeakForAnother) {
  LocalClusterOptions options;
  options.dir = dir_ + "/cluster";
  options.nodes = 2;
  options.node.config_yaml = kConfigs;
  options.node_tls = {SharedTestPki().Node("n0"), SharedTestPki().Node("n1")};
  std::unique_ptr<LocalCluster> cluster;
  Status s = LocalCluster::Start(options, &cluster);
  ASSERT_TRUE(s.ok()) << s;
  Node& n0 = *cluster->node(0);
  const uint64_t n1_id = cluster->node_id(1);

  // A third node with a valid node certificate of its own, "n2".
  RawPeer n2(SharedTestPki().Node("n2"));
  auto published = n2.Connect(n0.cluster_port());
  ASSERT_TRUE(published) << n2.system->render(published.error());
  auto membership = caf::actor_cast<peer_actor>(*published);
  caf::scoped_actor self{*n2.system};
  auto join = [&](const std::string& description) {
    Status result;
    self->request(membership, caf::timespan{5s}, atom::join_v, description)
        .receive([&](const std::string&) {}, [&](caf::error& err) { result = ToStatus(err); });
    return result;
  };
  // Claiming n1's member id, as "n1" (not its certificate) or as itself (n1's id is n1's).
  for (const char* name : {"n1", "n2"}) {
    Status claimed = join(Describe(n1_id, name, 9, uint64_t{1} << 62));
    EXPECT_EQ(claimed.code(), Code::kPermissionDenied) << name << ": " << claimed;
  }
  // Its own description, with a fresh member id, is fine.
  EXPECT_TRUE(join(Describe(0x77, "n2", 9, 1)).ok());

  // A delta that claims to come from n1.
  database_peer_actor replica;
  self->request(membership, caf::timespan{5s}, atom::replica_v, std::string("/example/kv"))
      .receive([&](database_peer_actor& db) { replica = db; },
               [&](caf::error& err) { ADD_FAILURE() << to_string(err); });
  ASSERT_TRUE(replica);
  Status pushed;
  self->request(replica, caf::timespan{5s}, atom::replicate_v, std::string(), n1_id)
      .receive([&](atom::ok) {}, [&](caf::error& err) { pushed = ToStatus(err); });
  EXPECT_EQ(pushed.code(), Code::kPermissionDenied) << pushed;

  // n0 still has n1 where it is, alive.
  auto members = n0.members();
  ASSERT_TRUE(members.ok());
  bool n1_alive = false;
  for (const auto& m : *members) {
    if (m.node_id == n1_id) {
      n1_alive = m.alive;
      EXPECT_NE(m.cluster_address, "127.0.0.1:9");
    }
  }
  EXPECT_TRUE(n1_alive);
}

/// Starts kvmeshd with TLS (node certificate "n0") on a free client port, data in `dir`.
bool StartTlsDaemon(const testing::TempDir& dir, testing::DaemonProcess* d) {
  const TlsOptions node_tls = SharedTestPki().Node("n0");
  return d->Start(KVMESHD_PATH, {"--data-dir", dir / "data", "--config-dir", KVMESH_EXAMPLE_CONFIGS,
                                 "--port", "0", "--tls-ca", node_tls.ca_file, "--tls-cert",
                                 node_tls.cert_file, "--tls-key", node_tls.key_file});
}

// The fuzz findings of issue 13, with TLS on: a peer without a valid certificate never reaches
// CAF's message layer, so whatever it announces or sends costs the node nothing. Plaintext peers
// announce and send 100 MiB; a peer with another CA's certificate sends 100 MiB; the node's
// memory stays within a few MiB, and it goes on serving.
TEST(TlsDaemonTest, PeersWithoutAValidCertificateCostTheNodeNothing) {
  testing::TempDir dir;
  const TlsOptions alice = SharedTestPki().Client("alice");
  testing::DaemonProcess d;
  ASSERT_TRUE(StartTlsDaemon(dir, &d)) << d.output();
  client::ClientOptions options;
  options.tls = alice;
  auto db = client::connect(d.address(), options).open("/example/kv");
  ASSERT_TRUE(db.put("/warm", "up").ok()) << db.status();
  const long before_kb = testing::StatusKb(d.pid(), "VmRSS");
  ASSERT_GT(before_kb, 0);

  caf::io::basp::header header{caf::io::basp::message_type::client_handshake,
                               0,
                               100u << 20,
                               0,
                               caf::invalid_actor_id,
                               caf::invalid_actor_id};
  std::vector<char> frame;
  caf::binary_serializer sink{nullptr, frame};
  ASSERT_FALSE(sink(header));
  for (int i = 0; i < 3; ++i) {
    const int fd = testing::Connect(d.port());
    ASSERT_GE(fd, 0);
    testing::SendAll(fd, std::string(frame.begin(), frame.end()));
    testing::SendAll(fd, std::string(100u << 20, 'x'));  // stops when the node closes
    EXPECT_TRUE(testing::WaitClosedByPeer(fd, 5s));
    ::close(fd);
  }
  TlsOptions stranger = SharedOtherTestPki().Client("alice");
  EXPECT_NE(RawTls(d.port(), stranger, alice, 100u << 20), "");

  const long after_kb = testing::StatusKb(d.pid(), "VmRSS");
  EXPECT_LT(after_kb - before_kb, 8 * 1024) << before_kb << " KiB before, " << after_kb << " after";
  EXPECT_TRUE(db.put("/after", "still serving").ok());
  EXPECT_EQ(RawTls(d.port(), alice, alice), "") << "the node stopped taking valid clients";
}

// A peer that starts a TLS handshake and never finishes it costs the node no CPU while its
// handshake deadline runs: the node has its BASP handshake to send from the first moment, and a
// write that must wait for the peer's handshake messages must not be retried in a loop.
TEST(TlsDaemonTest, UnfinishedHandshakesCostTheNodeNoCpu) {
  testing::TempDir dir;
  testing::DaemonProcess d;
  ASSERT_TRUE(StartTlsDaemon(dir, &d)) << d.output();
  const TlsOptions alice = SharedTestPki().Client("alice");
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_use_certificate_file(ctx, alice.cert_file.c_str(), SSL_FILETYPE_PEM);
  SSL_CTX_use_PrivateKey_file(ctx, alice.key_file.c_str(), SSL_FILETYPE_PEM);
  std::vector<std::pair<int, SSL*>> held;
  for (int i = 0; i < 4; ++i) {
    const int fd = testing::Connect(d.port());
    ASSERT_GE(fd, 0);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_connect(ssl);  // sends the ClientHello and returns (would block): never called again
    held.emplace_back(fd, ssl);
  }
  const double before = testing::CpuSeconds(d.pid());
  std::this_thread::sleep_for(2s);  // what is measured is the node's CPU over this time
  const double used = testing::CpuSeconds(d.pid()) - before;
  EXPECT_LT(used, 0.5) << "kvmeshd used " << used
                       << " s of CPU in 2 s with 4 unfinished handshakes";
  for (auto& [fd, ssl] : held) {
    SSL_free(ssl);
    ::close(fd);
  }
  SSL_CTX_free(ctx);
}

}  // namespace
}  // namespace kvmesh
