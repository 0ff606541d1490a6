// The ACL file and its checks (security/acl.hpp), without actors. The gateway's enforcement is
// in acl_gateway_test.cpp.
#include "security/acl.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.hpp"

namespace kvmesh::security {
namespace {

constexpr const char* kAcl = R"(principals:
  alice:
    - role: readwrite
      databases: ["/tenants/alice/*"]
  bob: [{role: readonly, databases: [/shared/kv, "/reports/[0-9]+"]}, {role: readwrite, databases: ["/tenants/bob/**"]}]
  dashboard: [{role: readonly}]
  ops: {role: admin}
)";

Acl Load(const std::string& text) {
  Acl acl;
  Status s = Acl::LoadString(text, "acl.yaml", &acl, nullptr);
  EXPECT_TRUE(s.ok()) << s;
  return acl;
}

/// The errors of loading `text`, one "file:line: error: field: message" per entry.
std::vector<std::string> Errors(const std::string& text) {
  Acl acl;
  std::vector<config::ConfigDiagnostic> found;
  Status s = Acl::LoadString(text, "acl.yaml", &acl, &found);
  EXPECT_FALSE(s.ok()) << "expected errors in:\n" << text;
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_EQ(acl.size(), 0u) << "an invalid file must load nothing";
  std::vector<std::string> out;
  for (const auto& d : found) out.push_back(d.ToString());
  return out;
}

TEST(AclTest, RolesGiveTheirRightsOnTheirDatabasesOnly) {
  Acl acl = Load(kAcl);
  EXPECT_EQ(acl.size(), 4u);
  // Wildcard: one segment under the tenant's prefix.
  EXPECT_TRUE(acl.Allows("alice", Right::kRead, "/tenants/alice/kv"));
  EXPECT_TRUE(acl.Allows("alice", Right::kWrite, "/tenants/alice/kv"));
  EXPECT_FALSE(acl.Allows("alice", Right::kWrite, "/tenants/bob/kv"));
  EXPECT_FALSE(acl.Allows("alice", Right::kRead, "/tenants/alice"));
  EXPECT_FALSE(acl.Allows("alice", Right::kRead, "/tenants/alice/a/b"));
  EXPECT_FALSE(acl.Allows("alice", Right::kAdmin, ""));
  // Literal and anchored regex; readonly gives no write; grants add up.
  EXPECT_TRUE(acl.Allows("bob", Right::kRead, "/shared/kv"));
  EXPECT_FALSE(acl.Allows("bob", Right::kWrite, "/shared/kv"));
  EXPECT_FALSE(acl.Allows("bob", Right::kRead, "/shared/kv2"));
  EXPECT_TRUE(acl.Allows("bob", Right::kRead, "/reports/2026"));
  EXPECT_FALSE(acl.Allows("bob", Right::kRead, "/reports/2026/x"));
  EXPECT_FALSE(acl.Allows("bob", Right::kRead, "/reports/june"));
  EXPECT_TRUE(acl.Allows("bob", Right::kWrite, "/tenants/bob/a/b"));
  // Unlimited readonly: every database, read only, no admin.
  EXPECT_TRUE(acl.Allows("dashboard", Right::kRead, "/anything/at/all"));
  EXPECT_FALSE(acl.Allows("dashboard", Right::kWrite, "/anything"));
  EXPECT_FALSE(acl.Allows("dashboard", Right::kAdmin, ""));
  // Admin: everything.
  EXPECT_TRUE(acl.Allows("ops", Right::kAdmin, ""));
  EXPECT_TRUE(acl.Allows("ops", Right::kWrite, "/tenants/bob/kv"));
  // Absent: nothing.
  EXPECT_FALSE(acl.Allows("mallory", Right::kRead, "/shared/kv"));
  EXPECT_FALSE(acl.CheckKnown("mallory").ok());
  EXPECT_TRUE(acl.CheckKnown("alice").ok());
}

TEST(AclTest, DenialsNamePrincipalDatabaseRightAndWhatItHas) {
  Acl acl = Load(kAcl);
  Status s = acl.Check("alice", Right::kWrite, "/tenants/bob/kv");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "principal \"alice\" may not write database \"/tenants/bob/kv\" (alice has readwrite "
            "on /tenants/alice/*)");
  EXPECT_EQ(acl.Check("dashboard", Right::kAdmin, "", "reload configs").message(),
            "principal \"dashboard\" may not reload configs (dashboard has readonly on every "
            "database)");
  EXPECT_EQ(acl.Check("mallory", Right::kRead, "/shared/kv").message(),
            "principal \"mallory\" may not read database \"/shared/kv\" (mallory is not in the "
            "ACL file acl.yaml)");
  EXPECT_TRUE(acl.Check("alice", Right::kRead, "/tenants/alice/kv").ok());
}

TEST(AclTest, ListingsSeeConfigsThatMayServeAReadableDatabase) {
  Acl acl = Load(kAcl);
  config::Matcher tenants, shared;
  ASSERT_TRUE(config::Matcher::Compile("/tenants/*/*", &tenants).ok());
  ASSERT_TRUE(config::Matcher::Compile("/shared/kv", &shared).ok());
  EXPECT_TRUE(acl.MayReadSomeOf("alice", tenants));
  EXPECT_FALSE(acl.MayReadSomeOf("alice", shared));
  EXPECT_TRUE(acl.MayReadSomeOf("dashboard", shared));
  EXPECT_FALSE(acl.MayReadSomeOf("mallory", shared));
}

TEST(AclTest, ErrorsNameFileLineAndFieldAndLoadNothing) {
  EXPECT_EQ(Errors("principals:\n  alice:\n    - role: readwrit\n"),
            std::vector<std::string>{"acl.yaml:3: error: principals.alice.role: must be readonly, "
                                     "readwrite or admin, got \"readwrit\""});
  EXPECT_EQ(Errors("principals:\n  alice:\n    - role: readonly\n      databse: [/a]\n"),
            std::vector<std::string>{
                "acl.yaml:4: error: principals.alice.databse: unknown field \"databse\" (did you "
                "mean \"databases\"? known: role, databases)"});
  EXPECT_EQ(Errors("principal:\n  alice: {role: admin}\n"),
            (std::vector<std::string>{
                "acl.yaml:1: error: principal: unknown field \"principal\" (did you mean "
                "\"principals\"? known: principals, tokens)",
                "acl.yaml:1: error: principals: required field is missing"}));
  auto bad_regex = Errors(
      "principals:\n  bob:\n    - role: readonly\n      databases:\n"
      "        - /ok/*\n        - /bad/(x\n");
  ASSERT_EQ(bad_regex.size(), 1u);
  EXPECT_EQ(bad_regex[0].rfind("acl.yaml:6: error: principals.bob.databases: ", 0), 0u)
      << bad_regex[0];
  EXPECT_EQ(Errors("principals:\n  ops: {role: admin, databases: [/a]}\n").size(), 1u);
  EXPECT_EQ(Errors("principals:\n  alice: []\n").size(), 1u);
  EXPECT_EQ(Errors("principals:\n  alice: [{databases: [/a]}]\n"),
            std::vector<std::string>{"acl.yaml:2: error: principals.alice.role: required field "
                                     "is missing (readonly, readwrite or admin)"});
  EXPECT_EQ(Errors("principals:\n  alice: {role: readonly, databases: []}\n").size(), 1u);
  EXPECT_EQ(Errors("").size(), 1u);
  EXPECT_EQ(Errors("principals: [alice]\n").size(), 1u);
  EXPECT_EQ(Errors("principals:\n  alice: {role: [readonly]\n").size(), 1u);  // YAML syntax
  // Several errors are all reported, with their lines.
  EXPECT_EQ(Errors("principals:\n  a: {role: x}\n  b: {role: y}\n"),
            (std::vector<std::string>{
                "acl.yaml:2: error: principals.a.role: must be readonly, readwrite or admin, got "
                "\"x\"",
                "acl.yaml:3: error: principals.b.role: must be readonly, readwrite or admin, got "
                "\"y\""}));
}

TEST(AclTest, BearerTokensNameTheirPrincipalByHashOnly) {
  std::string alice_token, ops_token;
  ASSERT_TRUE(NewBearerToken(&alice_token).ok());
  ASSERT_TRUE(NewBearerToken(&ops_token).ok());
  EXPECT_NE(alice_token, ops_token);
  EXPECT_EQ(alice_token.size(), 7u + 64u) << alice_token;
  // SHA-256 of "abc" (FIPS 180-2's example): the file holds exactly this digest.
  EXPECT_EQ(TokenSha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Acl acl = Load(
      std::string(kAcl) + "tokens:\n  - {principal: alice, sha256: " + TokenSha256Hex(alice_token) +
      ", note: laptop}\n  - principal: ops\n    sha256: " + TokenSha256Hex(ops_token) + "\n");
  EXPECT_EQ(acl.token_count(), 2u);
  std::string who;
  ASSERT_TRUE(acl.PrincipalOfToken(alice_token, &who));
  EXPECT_EQ(who, "alice");
  ASSERT_TRUE(acl.PrincipalOfToken(ops_token, &who));
  EXPECT_EQ(who, "ops");
  // The digest itself, a prefix of a token or a token off by one character is no token.
  EXPECT_FALSE(acl.PrincipalOfToken(TokenSha256Hex(alice_token), &who));
  EXPECT_FALSE(acl.PrincipalOfToken(alice_token.substr(0, 40), &who));
  std::string flipped = alice_token;
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  EXPECT_FALSE(acl.PrincipalOfToken(flipped, &who));
  EXPECT_FALSE(acl.PrincipalOfToken("", &who));
  EXPECT_FALSE(Load(kAcl).PrincipalOfToken(alice_token, &who));
}

TEST(AclTest, TokenErrorsNameTheLine) {
  const std::string digest = TokenSha256Hex("t");
  EXPECT_EQ(Errors("principals:\n  a: {role: readonly}\ntokens:\n  - {principal: b, sha256: " +
                   digest + "}\n"),
            std::vector<std::string>{
                "acl.yaml:4: error: tokens.principal: principal \"b\" is not in principals: a "
                "token has the rights of a principal listed there"});
  EXPECT_EQ(Errors("principals:\n  a: {role: readonly}\ntokens:\n  - {principal: a, sha256: "
                   "abc}\n"),
            std::vector<std::string>{
                "acl.yaml:4: error: tokens.sha256: must be the token's SHA-256 as 64 hex digits "
                "(kvmesh token new prints it), got 3 characters"});
  EXPECT_EQ(
      Errors("principals:\n  a: {role: readonly}\ntokens:\n  - {principal: a}\n"),
      std::vector<std::string>{"acl.yaml:4: error: tokens: required field is missing: sha256"});
  EXPECT_EQ(Errors("principals:\n  a: {role: readonly}\n  b: {role: readonly}\ntokens:\n"
                   "  - {principal: a, sha256: " +
                   digest + "}\n  - {principal: b, sha256: " + digest + "}\n")
                .size(),
            1u);
  EXPECT_EQ(Errors("principals:\n  a: {role: readonly}\ntokens: {a: x}\n").size(), 1u);
  EXPECT_EQ(Errors("principals:\n  a: {role: readonly}\ntokens:\n  - {principal: a, sha256: " +
                   digest + ", secret: x}\n")
                .size(),
            1u);
  // Tokens may come before the principals they name.
  Acl acl = Load("tokens:\n  - {principal: a, sha256: " + digest +
                 "}\nprincipals:\n  a: {role: readonly}\n");
  std::string who;
  EXPECT_TRUE(acl.PrincipalOfToken("t", &who));
}

TEST(AclTest, StoreKeepsTheOldAclWhenTheFileBecomesInvalid) {
  kvmesh::testing::TempDir dir;
  const std::string file = dir.Write("acl.yaml", kAcl);
  AclStore store(file);
  ASSERT_TRUE(store.Load().ok());
  const uint64_t loaded = store.generation();
  ASSERT_NE(store.current(), nullptr);
  EXPECT_TRUE(store.current()->Allows("alice", Right::kWrite, "/tenants/alice/kv"));

  dir.Write("acl.yaml", "principals:\n  alice: {role: readwrte}\n");
  Status s = store.Load();
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_NE(s.message().find(file + ":2: error: principals.alice.role"), std::string::npos) << s;
  EXPECT_EQ(store.generation(), loaded);
  EXPECT_TRUE(store.current()->Allows("alice", Right::kWrite, "/tenants/alice/kv"));

  dir.Write("acl.yaml", "principals:\n  dashboard: {role: readonly}\n");
  ASSERT_TRUE(store.Load().ok());
  EXPECT_NE(store.generation(), loaded);
  EXPECT_FALSE(store.current()->Allows("alice", Right::kRead, "/tenants/alice/kv"));

  AclStore missing(dir / "nope.yaml");
  s = missing.Load();
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_NE(s.message().find("cannot read the ACL file"), std::string::npos) << s;
  EXPECT_EQ(missing.current(), nullptr);
}

}  // namespace
}  // namespace kvmesh::security
