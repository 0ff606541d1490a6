// Access control in the client gateway: requests checked against the ACL by the sender's
// certificate identity, in-process. The test binds its own actor system's node in the
// PeerDirectory, as the TLS transport binds a connected peer's node, so its requests arrive as
// that identity's. End-to-end over TLS connections is tested with the transport.
#include <gtest/gtest.h>

#include <caf/all.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "actor_test_util.hpp"
#include "actors/client_gateway.hpp"
#include "actors/matcher_supervisor.hpp"
#include "security/acl.hpp"
#include "security/identity.hpp"
#include "test_util.hpp"

namespace kvmesh {
namespace {

using kvmesh::testing::Ask;
using kvmesh::testing::Later;
using security::PeerIdentity;
using security::PeerRole;

constexpr const char* kConfigs = R"(
- matcher: /tenants/*/*
  size: 1MB
- matcher: /shared/kv
  size: 1MB
)";

constexpr const char* kAcl = R"(principals:
  alice: [{role: readwrite, databases: ["/tenants/alice/*"]}]
  dashboard: [{role: readonly}]
  ops: [{role: admin}]
)";

class AclGatewayTest : public ::testing::Test {
 protected:
  AclGatewayTest() : system_(config_), self_(system_) {
    config_dir_ = dir_ / "configs";
    dir_.Write("configs/databases.yaml", kConfigs);
    acl_file_ = dir_.Write("acl.yaml", kAcl);
    auto configs = std::make_shared<config::ConfigSet>();
    Status s = config::ConfigSet::LoadDirectory(config_dir_, configs.get(), nullptr);
    EXPECT_TRUE(s.ok()) << s;
    storage::StoreOptions options;
    options.path = dir_ / "data";
    EXPECT_TRUE(storage::Store::Open(options, &store_).ok());
    acl_ = std::make_shared<security::AclStore>(acl_file_);
    s = acl_->Load();
    EXPECT_TRUE(s.ok()) << s;
    auto replication = std::make_shared<ReplicationOptions>();
    replication->node_id = store_->node_id();
    supervisor_ = system_.spawn(
        matcher_supervisor_impl, std::shared_ptr<const config::ConfigSet>(configs), config_dir_,
        store_, caf::timespan{0}, std::shared_ptr<const ReplicationOptions>(replication), acl_,
        std::string("n1"));
    gateway_ = SpawnGateway(GatewaySecurity{directory_, acl_});
  }

  ~AclGatewayTest() override {
    for (auto& g : gateways_) self_->send_exit(g, caf::exit_reason::user_shutdown);
    self_->send_exit(supervisor_, caf::exit_reason::user_shutdown);
  }

  gateway_actor SpawnGateway(GatewaySecurity security) {
    auto g = system_.spawn(client_gateway_impl, supervisor_, caf::timespan{std::chrono::seconds(5)},
                           store_->node_id(), peer_actor{}, std::string("none"),
                           LocalStatusFiller{}, std::move(security), nullptr, nullptr,
                           std::vector<caf::actor>{}, GatewayDirectReads{});
    gateways_.push_back(g);
    return g;
  }

  /// From now on the test's requests come from a peer with this certificate.
  void Become(const std::string& name, PeerRole role = PeerRole::kClient) {
    directory_->Unbind(self_->node());
    ASSERT_TRUE(directory_->Bind(self_->node(), PeerIdentity{name, role}));
  }

  Status Put(const std::string& path, const std::string& key, const std::string& value) {
    atom::ok ok;
    return Ask(self_, gateway_, &ok, atom::put_v, path, key, value, Later());
  }
  Status Get(const std::string& path, const std::string& key, std::string* value = nullptr) {
    std::string got;
    Status s = Ask(self_, gateway_, &got, atom::get_v, path, key, Later());
    if (value != nullptr) *value = got;
    return s;
  }
  Status Reload(const matcher_supervisor_actor& to, std::string* summary = nullptr) {
    std::string got;
    Status s = Ask(self_, to, &got, atom::reload_v);
    if (summary != nullptr) *summary = got;
    return s;
  }

  kvmesh::testing::TempDir dir_;
  std::string config_dir_;
  std::string acl_file_;
  std::shared_ptr<storage::Store> store_;
  std::shared_ptr<security::AclStore> acl_;
  std::shared_ptr<security::PeerDirectory> directory_ =
      std::make_shared<security::PeerDirectory>(true);
  kvmesh::testing::TestSystemConfig config_;
  caf::actor_system system_;
  caf::scoped_actor self_;
  matcher_supervisor_actor supervisor_;
  gateway_actor gateway_;
  std::vector<gateway_actor> gateways_;
};

TEST_F(AclGatewayTest, PrincipalWritesItsOwnDatabasesAndNothingElse) {
  Become("alice");
  EXPECT_TRUE(Put("/tenants/alice/kv", "k", "mine").ok());
  std::string value;
  EXPECT_TRUE(Get("/tenants/alice/kv", "k", &value).ok());
  EXPECT_EQ(value, "mine");

  Status denied = Put("/tenants/bob/kv", "k", "not yours");
  EXPECT_EQ(denied.code(), Code::kPermissionDenied) << denied;
  EXPECT_EQ(denied.message(),
            "principal \"alice\" may not write database \"/tenants/bob/kv\" (alice has readwrite "
            "on /tenants/alice/*)");
  // Another spelling of the path is normalised before the check.
  EXPECT_EQ(Put("//tenants/bob/kv/", "k", "v").code(), Code::kPermissionDenied);
  EXPECT_EQ(Get("/tenants/bob/kv", "k").code(), Code::kPermissionDenied);
  atom::ok ok;
  EXPECT_EQ(
      Ask(self_, gateway_, &ok, atom::erase_v, std::string("/shared/kv"), std::string("k"), Later())
          .code(),
      Code::kPermissionDenied);
  std::string summary;
  Status reload = Ask(self_, gateway_, &summary, atom::reload_v);
  EXPECT_EQ(reload.code(), Code::kPermissionDenied);
  EXPECT_NE(reload.message().find("principal \"alice\" may not reload configs"), std::string::npos)
      << reload;

  // The denied put stored nothing: an admin finds no key there.
  Become("ops");
  EXPECT_EQ(Get("/tenants/bob/kv", "k").code(), Code::kNotFound);
  EXPECT_TRUE(Put("/tenants/bob/kv", "k", "bob's").ok());
  EXPECT_TRUE(Ask(self_, gateway_, &summary, atom::reload_v).ok());

  // Readonly reads anything and writes nothing.
  Become("dashboard");
  EXPECT_TRUE(Get("/tenants/bob/kv", "k", &value).ok());
  EXPECT_EQ(value, "bob's");
  EXPECT_EQ(Put("/tenants/bob/kv", "k", "x").code(), Code::kPermissionDenied);
}

// A client's puts to one database sent as one message (client/client.cpp TakePut) are each
// judged as if they came alone, and the message is answered with one outcome per put, in order.
TEST_F(AclGatewayTest, PutsSentTogetherAreEachJudgedAndAnsweredAlone) {
  Become("alice");
  auto puts = [&](const std::string& path, std::vector<std::string> keys,
                  std::vector<std::string> values, std::vector<caf::error>* outcomes) {
    WriteBatch batch;
    for (size_t i = 0; i < keys.size(); ++i) batch.Put(keys[i], values[i]);
    return Ask(self_, gateway_, outcomes, atom::put_v, path, std::move(batch), Later());
  };
  // The database holds 1MB: the second put alone is over it, the others fit.
  const std::string over((1u << 20) + 1, 'o');
  std::vector<caf::error> outcomes;
  ASSERT_TRUE(puts("/tenants/alice/kv", {"/a", "/big", "/c"}, {"1", over, "3"}, &outcomes).ok());
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_FALSE(outcomes[0]) << ToStatus(outcomes[0]);
  EXPECT_EQ(ToStatus(outcomes[1]).code(), Code::kSizeLimitExceeded) << ToStatus(outcomes[1]);
  EXPECT_FALSE(outcomes[2]) << ToStatus(outcomes[2]);
  std::string value;
  EXPECT_TRUE(Get("/tenants/alice/kv", "/a", &value).ok());
  EXPECT_EQ(value, "1");
  EXPECT_TRUE(Get("/tenants/alice/kv", "/c", &value).ok());
  EXPECT_EQ(value, "3");
  EXPECT_EQ(Get("/tenants/alice/kv", "/big").code(), Code::kNotFound);
  // Later puts of the same key win, in order.
  ASSERT_TRUE(puts("/tenants/alice/kv", {"/a", "/a"}, {"first", "second"}, &outcomes).ok());
  EXPECT_TRUE(Get("/tenants/alice/kv", "/a", &value).ok());
  EXPECT_EQ(value, "second");

  // Checked against the ACL as one put would be: denied (the client gives each put the
  // answer), nothing stored.
  Status denied = puts("/tenants/bob/kv", {"/x", "/y"}, {"1", "2"}, &outcomes);
  EXPECT_EQ(denied.code(), Code::kPermissionDenied) << denied;
  Become("ops");
  EXPECT_EQ(Get("/tenants/bob/kv", "/x").code(), Code::kNotFound);
  Become("alice");

  // A malformed message is refused whole, naming the problem.
  WriteBatch mixed;
  mixed.Put("/p", "1").Erase("/a");
  Status not_puts = Ask(self_, gateway_, &outcomes, atom::put_v, std::string("/tenants/alice/kv"),
                        mixed, Later());
  EXPECT_EQ(not_puts.code(), Code::kInvalidArgument) << not_puts;
  EXPECT_NE(not_puts.message().find("plain puts only"), std::string::npos) << not_puts;
  EXPECT_EQ(puts("/tenants/alice/kv", {}, {}, &outcomes).code(), Code::kInvalidArgument);
  std::vector<std::string> many(kMaxPutsPerMessage + 1, "/k");
  Status too_many = puts("/tenants/alice/kv", many, many, &outcomes);
  EXPECT_EQ(too_many.code(), Code::kInvalidArgument) << too_many;
  EXPECT_EQ(Get("/tenants/alice/kv", "/p").code(), Code::kNotFound);
}

// A client's gets of one database sent as one message (client/client.cpp TakeGet) are admitted
// together, read in one go and answered each on its own; a reply stops taking values past
// kMaxGetsReplyBytes, leaving the later keys for the client to send alone.
TEST_F(AclGatewayTest, GetsSentTogetherAreEachAnsweredAlone) {
  Become("alice");
  auto gets = [&](const std::string& path, std::vector<std::string> keys, GetManyReply* reply) {
    PackedKeys packed;
    for (const auto& key : keys) packed.Add(key);
    return Ask(self_, gateway_, reply, atom::get_v, path, std::move(packed), Later());
  };
  ASSERT_TRUE(Put("/tenants/alice/kv", "/a", "1").ok());
  ASSERT_TRUE(Put("/tenants/alice/kv", "/c", "3").ok());
  GetManyReply reply;
  ASSERT_TRUE(gets("/tenants/alice/kv", {"/a", "/b", "/a/../b", "/c"}, &reply).ok());
  ASSERT_EQ(reply.errors.size(), 4u);
  ASSERT_EQ(reply.values.size(), 4u);
  EXPECT_FALSE(reply.errors[0]) << ToStatus(reply.errors[0]);
  EXPECT_EQ(reply.values[0], "1");
  EXPECT_EQ(ToStatus(reply.errors[1]).code(), Code::kNotFound) << ToStatus(reply.errors[1]);
  EXPECT_EQ(ToStatus(reply.errors[2]).code(), Code::kInvalidKey) << ToStatus(reply.errors[2]);
  EXPECT_FALSE(reply.errors[3]) << ToStatus(reply.errors[3]);
  EXPECT_EQ(reply.values[3], "3");

  // Checked against the ACL as one get would be; a path that cannot be a database fails whole.
  Status denied = gets("/tenants/bob/kv", {"/x", "/y"}, &reply);
  EXPECT_EQ(denied.code(), Code::kPermissionDenied) << denied;
  Status bad_path = gets("/tenants/../kv", {"/x", "/y"}, &reply);
  EXPECT_EQ(bad_path.code(), Code::kInvalidKey) << bad_path;

  // Past the budget the reply answers no further key (the first always): 3 x 600 KB.
  const std::string big(600 * 1000, 'b');
  ASSERT_TRUE(Put("/tenants/alice/kv", "/big", big).ok());
  ASSERT_TRUE(gets("/tenants/alice/kv", {"/big", "/big", "/a"}, &reply).ok());
  ASSERT_EQ(reply.errors.size(), 1u);
  ASSERT_EQ(reply.values.size(), 1u);
  EXPECT_TRUE(reply.values[0] == big);

  // A malformed message is refused whole, naming the problem.
  Status empty = gets("/tenants/alice/kv", {}, &reply);
  EXPECT_EQ(empty.code(), Code::kInvalidArgument) << empty;
  EXPECT_NE(empty.message().find("not 0"), std::string::npos) << empty;
  std::vector<std::string> many(kMaxGetsPerMessage + 1, "/a");
  Status too_many = gets("/tenants/alice/kv", many, &reply);
  EXPECT_EQ(too_many.code(), Code::kInvalidArgument) << too_many;
  EXPECT_NE(too_many.message().find("not more"), std::string::npos) << too_many;
  PackedKeys cut;
  cut.Add("/a");
  cut.bytes.pop_back();
  Status malformed =
      Ask(self_, gateway_, &reply, atom::get_v, std::string("/tenants/alice/kv"), cut, Later());
  EXPECT_EQ(malformed.code(), Code::kInvalidArgument) << malformed;
  EXPECT_NE(malformed.message().find("malformed"), std::string::npos) << malformed;

  // A database that cannot be opened fails them all (a node certificate may do everything: the
  // open itself fails).
  Become("n2", PeerRole::kNode);
  Status no_database = gets("/nowhere/kv", {"/x", "/y"}, &reply);
  EXPECT_EQ(no_database.code(), Code::kNoMatchingConfig) << no_database;
  EXPECT_NE(no_database.message().find("/nowhere/kv"), std::string::npos) << no_database;
}

TEST_F(AclGatewayTest, UnknownAndUnauthenticatedSendersAreRefusedAtHello) {
  uint32_t version = 0;
  uint64_t node = 0;
  auto hello = [&] {
    Status result;
    self_->request(gateway_, std::chrono::seconds(5), atom::hello_v, kClientProtocolVersion)
        .receive(
            [&](uint32_t v, uint64_t n) {
              version = v;
              node = n;
            },
            [&](caf::error& err) { result = ToStatus(err); });
    return result;
  };
  // No directory entry while TLS is on.
  Status s = hello();
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_EQ(s.message().rfind("unauthenticated: ", 0), 0u) << s;
  EXPECT_EQ(Put("/shared/kv", "k", "v").code(), Code::kPermissionDenied);

  Become("mallory");
  s = hello();
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "principal \"mallory\" has no rights on this node (mallory is not in the "
            "ACL file " +
                acl_file_ + ")");
  EXPECT_EQ(Get("/shared/kv", "k").code(), Code::kPermissionDenied);

  Become("alice");
  EXPECT_TRUE(hello().ok());
  EXPECT_EQ(version, kClientProtocolVersion);
  // A node certificate may do everything, ACL or not.
  Become("n2", PeerRole::kNode);
  EXPECT_TRUE(Put("/shared/kv", "k", "v").ok());
}

// The gateway keeps the directory's answers per sender (one mutex less per request): a sender
// whose last connection closed is unauthenticated at once, and one that comes back with another
// certificate is judged by it.
TEST_F(AclGatewayTest, ClosedConnectionsAndNewCertificatesCountFromTheNextRequest) {
  Become("alice");
  ASSERT_TRUE(Put("/tenants/alice/kv", "k", "v").ok());
  directory_->Unbind(self_->node());
  Status s = Put("/tenants/alice/kv", "k", "w");
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s;
  EXPECT_EQ(s.message().rfind("unauthenticated: ", 0), 0u) << s;
  ASSERT_TRUE(directory_->Bind(self_->node(), PeerIdentity{"dashboard", PeerRole::kClient}));
  EXPECT_EQ(Put("/tenants/alice/kv", "k", "w").code(), Code::kPermissionDenied);
  std::string value;
  EXPECT_TRUE(Get("/tenants/alice/kv", "k", &value).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(AclGatewayTest, ListingsShowOnlyWhatThePrincipalMayRead) {
  Become("ops");
  ASSERT_TRUE(Put("/tenants/alice/kv", "k", "v").ok());
  ASSERT_TRUE(Put("/tenants/bob/kv", "k", "v").ok());
  ASSERT_TRUE(Put("/shared/kv", "k", "v").ok());
  auto databases = [&] {
    std::vector<DatabaseInfo> infos;
    EXPECT_TRUE(Ask(self_, gateway_, &infos, atom::databases_v).ok());
    std::vector<std::string> paths;
    for (const auto& i : infos) paths.push_back(i.path);
    std::sort(paths.begin(), paths.end());
    return paths;
  };
  auto configs = [&] {
    std::vector<ConfigInfo> infos;
    EXPECT_TRUE(Ask(self_, gateway_, &infos, atom::configs_v).ok());
    std::vector<std::string> matchers;
    for (const auto& i : infos) matchers.push_back(i.matcher);
    return matchers;
  };
  EXPECT_EQ(databases(),
            (std::vector<std::string>{"/shared/kv", "/tenants/alice/kv", "/tenants/bob/kv"}));
  EXPECT_EQ(configs().size(), 2u);
  Become("alice");
  EXPECT_EQ(databases(), std::vector<std::string>{"/tenants/alice/kv"});
  EXPECT_EQ(configs(), std::vector<std::string>{"/tenants/*/*"});
}

// Dropping a database is an operator's act (admin right, even for a principal who may write it);
// an instances listing shows a principal only the databases it may read.
TEST_F(AclGatewayTest, DropNeedsTheAdminRightAndInstancesShowOnlyWhatThePrincipalMayRead) {
  Become("ops");
  ASSERT_TRUE(Put("/tenants/alice/kv", "k", "v").ok());
  ASSERT_TRUE(Put("/tenants/bob/kv", "k", "v").ok());
  std::vector<ConfigInfo> configs;
  ASSERT_TRUE(Ask(self_, gateway_, &configs, atom::configs_v).ok());
  std::string tenants;
  for (const auto& c : configs) {
    if (c.matcher == "/tenants/*/*") tenants = c.id;
  }
  auto instances = [&] {
    InstancePage page;
    Status s = Ask(self_, gateway_, &page, atom::instances_v, tenants, InstanceOptions{});
    EXPECT_TRUE(s.ok()) << s;
    std::vector<std::string> paths;
    for (const auto& i : page.instances) paths.push_back(i.path);
    return paths;
  };
  EXPECT_EQ(instances(), (std::vector<std::string>{"/tenants/alice/kv", "/tenants/bob/kv"}));

  Become("alice");
  EXPECT_EQ(instances(), std::vector<std::string>{"/tenants/alice/kv"});
  atom::ok ok;
  Status denied =
      Ask(self_, gateway_, &ok, atom::drop_v, std::string("/tenants/alice/kv"), Later());
  EXPECT_EQ(denied.code(), Code::kPermissionDenied) << denied;
  EXPECT_NE(denied.message().find("may not admin database \"/tenants/alice/kv\""),
            std::string::npos)
      << denied;
  EXPECT_TRUE(Get("/tenants/alice/kv", "k").ok());  // nothing was dropped
  // Backups and restores read and write the node's files: admin too.
  std::string summary;
  const std::string backup_dir = dir_ / "backup";
  EXPECT_EQ(Ask(self_, gateway_, &summary, atom::backup_v, std::string("/tenants/alice/kv"),
                backup_dir, Later())
                .code(),
            Code::kPermissionDenied);
  EXPECT_EQ(Ask(self_, gateway_, &summary, atom::restore_v, std::string("/tenants/alice/kv"),
                backup_dir, Later())
                .code(),
            Code::kPermissionDenied);
  EXPECT_EQ(Ask(self_, gateway_, &summary, atom::backup_v, backup_dir).code(),
            Code::kPermissionDenied);

  Become("ops");
  Status backed = Ask(self_, gateway_, &summary, atom::backup_v, std::string("/tenants/alice/kv"),
                      backup_dir, Later());
  EXPECT_TRUE(backed.ok()) << backed;
  Status dropped =
      Ask(self_, gateway_, &ok, atom::drop_v, std::string("/tenants/alice/kv"), Later());
  EXPECT_TRUE(dropped.ok()) << dropped;
  EXPECT_EQ(Get("/tenants/alice/kv", "k").code(), Code::kNotFound);
  EXPECT_TRUE(Get("/tenants/bob/kv", "k").ok());
}

TEST_F(AclGatewayTest, WithoutTlsOrWithoutAnAclNothingIsDenied) {
  // TLS off: the directory is disabled and nobody is looked up.
  auto plaintext = std::make_shared<security::PeerDirectory>(false);
  gateway_ = SpawnGateway(GatewaySecurity{plaintext, acl_});
  EXPECT_TRUE(Put("/tenants/bob/kv", "k", "v").ok());
  // TLS on, no ACL file: any authenticated client may do everything; unauthenticated still not.
  gateway_ = SpawnGateway(GatewaySecurity{directory_, std::make_shared<security::AclStore>("")});
  EXPECT_EQ(Put("/tenants/bob/kv", "k", "v").code(), Code::kPermissionDenied);
  Become("mallory");
  EXPECT_TRUE(Put("/tenants/bob/kv", "k", "v").ok());
}

TEST_F(AclGatewayTest, ReloadRevokesAtOnceAndAnInvalidAclChangesNothing) {
  Become("alice");
  ASSERT_TRUE(Put("/tenants/alice/kv", "k", "v").ok());

  // An invalid ACL, together with a valid new config: the reload is rejected as a whole.
  dir_.Write("acl.yaml", "principals:\n  ops: [{role: admin}]\n  dashboard: {role: reader}\n");
  dir_.Write("configs/extra.yaml", "matcher: /extra/kv\nsize: 1MB\n");
  std::string summary;
  Status s = Reload(supervisor_, &summary);
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_NE(s.message().find("the previous configs and ACL stay active"), std::string::npos) << s;
  EXPECT_NE(s.message().find(acl_file_ + ":3: error: principals.dashboard.role"), std::string::npos)
      << s;
  EXPECT_TRUE(Put("/tenants/alice/kv", "k", "still mine").ok());
  Become("ops");
  EXPECT_EQ(Put("/extra/kv", "k", "v").code(), Code::kNoMatchingConfig);

  // alice leaves the file: her next request is denied, without restarting anything.
  dir_.Write("acl.yaml", "principals:\n  ops: [{role: admin}]\n");
  ASSERT_TRUE(Reload(supervisor_, &summary).ok());
  EXPECT_NE(summary.find("loaded the ACL: 1 principals from " + acl_file_), std::string::npos)
      << summary;
  EXPECT_TRUE(Put("/extra/kv", "k", "v").ok());
  Become("alice");
  s = Put("/tenants/alice/kv", "k", "v");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("alice is not in the ACL file"), std::string::npos) << s;
  std::string value;
  Become("ops");
  EXPECT_TRUE(Get("/tenants/alice/kv", "k", &value).ok());
  EXPECT_EQ(value, "still mine");
}

}  // namespace
}  // namespace kvmesh
