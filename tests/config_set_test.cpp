// Database configs: YAML parsing, validation with precise diagnostics, and path resolution.
#include "config/config_set.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <algorithm>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace kvmesh::config {
namespace {

namespace fs = std::filesystem;

using kvmesh::testing::kSeedExampleConfig;
constexpr const char* kSeedExample = kSeedExampleConfig;

struct Loaded {
  Status status;
  ConfigSet set;
  std::vector<ConfigDiagnostic> diagnostics;

  std::string AllDiagnostics() const {
    std::string out;
    for (const ConfigDiagnostic& d : diagnostics) out += "\n  " + d.ToString();
    return out;
  }
  std::vector<ConfigDiagnostic> Filter(bool errors) const {
    std::vector<ConfigDiagnostic> out;
    for (const ConfigDiagnostic& d : diagnostics) {
      if (d.is_error == errors) out.push_back(d);
    }
    return out;
  }
};

Loaded Load(std::string_view yaml, const std::string& source = "test.yaml") {
  Loaded l;
  l.status = ConfigSet::LoadString(yaml, source, &l.set, &l.diagnostics);
  return l;
}

// Loads `yaml` expecting success; returns the set.
ConfigSet LoadOk(std::string_view yaml) {
  Loaded l = Load(yaml);
  EXPECT_TRUE(l.status.ok()) << l.status << l.AllDiagnostics();
  return l.set;
}

bool Contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// The single error that `yaml` must produce (the load must fail because of it).
ConfigDiagnostic OnlyError(std::string_view yaml) {
  Loaded l = Load(yaml);
  EXPECT_EQ(l.status.code(), Code::kInvalidConfig) << l.AllDiagnostics();
  std::vector<ConfigDiagnostic> errors = l.Filter(/*errors=*/true);
  EXPECT_EQ(errors.size(), 1u) << l.AllDiagnostics();
  return errors.empty() ? ConfigDiagnostic{} : errors.front();
}

// Asserts the single error of `yaml`: its file, line, field, and a phrase of its message.
void ExpectError(std::string_view yaml, int line, const std::string& field,
                 std::string_view phrase) {
  ConfigDiagnostic d = OnlyError(yaml);
  EXPECT_EQ(d.file, "test.yaml") << d.ToString();
  EXPECT_EQ(d.line, line) << d.ToString();
  EXPECT_EQ(d.field, field) << d.ToString();
  EXPECT_TRUE(Contains(d.message, phrase)) << d.ToString() << "\n  lacks: " << phrase;
}

DatabaseConfig InMemory(std::string id, std::string_view pattern, uint64_t size = 1000) {
  DatabaseConfig c;
  c.id = std::move(id);
  EXPECT_TRUE(Matcher::Compile(pattern, &c.matcher).ok()) << pattern;
  c.size_bytes = size;
  return c;
}

// ----- The seed example and the shape of files -----

TEST(ConfigSetTest, SeedExampleParsesToExpectedConfig) {
  ConfigSet set = LoadOk(kSeedExample);
  ASSERT_EQ(set.configs().size(), 1u);
  const DatabaseConfig& c = set.configs()[0];
  // Derived ids must never change between releases: they name databases on every node.
  EXPECT_EQ(c.id, "example-kv-007bb2f5");
  EXPECT_EQ(c.description, "Key-value storage for application data");
  EXPECT_TRUE(c.tags.empty());
  EXPECT_EQ(c.matcher.kind(), MatcherKind::kLiteral);
  EXPECT_EQ(c.matcher.pattern(), "/example/kv");
  EXPECT_EQ(c.replication.min, 1u);
  EXPECT_EQ(c.replication.max, 2u);
  EXPECT_EQ(c.size_bytes, 100'000'000u);
  EXPECT_EQ(c.source, "test.yaml:1");
}

TEST(ConfigSetTest, SeedExampleLoadsWithoutDiagnostics) {
  Loaded l = Load(kSeedExample);
  EXPECT_TRUE(l.status.ok());
  EXPECT_TRUE(l.diagnostics.empty()) << l.AllDiagnostics();
}

TEST(ConfigSetTest, AllFieldsAndDefaults) {
  ConfigSet set = LoadOk(R"(
id: users
description: User profiles
tags: [hot, "eu"]
matcher: /users/*
size: 1024
)");
  ASSERT_EQ(set.configs().size(), 1u);
  const DatabaseConfig& c = set.configs()[0];
  EXPECT_EQ(c.id, "users");
  EXPECT_EQ(c.tags, (std::vector<std::string>{"hot", "eu"}));
  EXPECT_EQ(c.matcher.kind(), MatcherKind::kWildcard);
  EXPECT_EQ(c.size_bytes, 1024u);    // An integer size is bytes.
  EXPECT_EQ(c.replication.min, 1u);  // Replication defaults.
  EXPECT_EQ(c.replication.max, 1u);
  EXPECT_EQ(c.max_instances, 0u);  // no bound
  EXPECT_EQ(c.source, "test.yaml:2");
}

TEST(ConfigSetTest, MaxInstancesIsAPositiveCount) {
  ConfigSet set = LoadOk("matcher: /t/[^/]+\nsize: 1KB\nmax_instances: 500\n");
  ASSERT_EQ(set.configs().size(), 1u);
  EXPECT_EQ(set.configs()[0].max_instances, 500u);
  ExpectError("matcher: /a\nsize: 1KB\nmax_instances: 0\n", 3, "max_instances", "at least 1");
  ExpectError("matcher: /a\nsize: 1KB\nmax_instances: -3\n", 3, "max_instances",
              "non-negative integer");
  ExpectError("matcher: /a\nsize: 1KB\nmax_instances: [1]\n", 3, "max_instances", "got a list");
  ExpectError("matcher: /a\nsize: 1KB\nmax_instances: 99999999999\n", 3, "max_instances",
              "too large");
}

TEST(ConfigSetTest, ListFileHoldsSeveralConfigsInOrder) {
  ConfigSet set = LoadOk(R"(
- id: a
  matcher: /a
  size: 1KB
- id: b
  matcher: /b
  size: 2KB
)");
  ASSERT_EQ(set.configs().size(), 2u);
  EXPECT_EQ(set.configs()[0].id, "a");
  EXPECT_EQ(set.configs()[1].id, "b");
  EXPECT_EQ(set.configs()[1].source, "test.yaml:5");
}

TEST(ConfigSetTest, MultiDocumentFile) {
  ConfigSet set = LoadOk(R"(id: a
matcher: /a
size: 1KB
---
- id: b
  matcher: /b
  size: 1KB
- id: c
  matcher: /c
  size: 1KB
---
)");
  ASSERT_EQ(set.configs().size(), 3u);
  EXPECT_EQ(set.configs()[0].id, "a");
  EXPECT_EQ(set.configs()[1].id, "b");
  EXPECT_EQ(set.configs()[2].id, "c");
  EXPECT_EQ(set.configs()[1].source, "test.yaml:5");
}

TEST(ConfigSetTest, ErrorsAreReportedInLineOrder) {
  // The value check of document 1 (line 4) runs after the parse of document 2 (line 8).
  Loaded l = Load(
      "matcher: /x\nreplication:\n  min: 2\n  max: 1\nsize: 1MB\n---\nmatcher: /y\n"
      "matcher: /z\nsize: 1MB\n");
  ASSERT_EQ(l.status.code(), Code::kInvalidConfig);
  std::vector<int> lines;
  for (const ConfigDiagnostic& d : l.diagnostics) lines.push_back(d.line);
  EXPECT_TRUE(std::is_sorted(lines.begin(), lines.end())) << l.status;
  EXPECT_LT(l.status.message().find(":4:"), l.status.message().find(":8:")) << l.status;
}

TEST(ConfigSetTest, EmptyTextLoadsNothing) {
  ConfigSet set = LoadOk("# only a comment\n");
  EXPECT_TRUE(set.configs().empty());
}

// ----- Validation errors: file, line and field -----

TEST(ConfigSetTest, MissingMatcher) {
  ExpectError("\nid: a\nsize: 1KB\n", 2, "matcher", "missing");
}

TEST(ConfigSetTest, MatcherWithoutValue) {
  ExpectError("id: a\nmatcher:\nsize: 1KB\n", 2, "matcher", "must be a pattern string");
}

TEST(ConfigSetTest, MissingSize) {
  ExpectError("- matcher: /a\n- matcher: /b\n  size: 1KB\n", 1, "size", "missing");
}

TEST(ConfigSetTest, ZeroSize) {
  ExpectError("matcher: /a\nsize: 0\n", 2, "size", "greater than 0");
  ExpectError("matcher: /a\nsize: 0MB\n", 2, "size", "greater than 0");
}

TEST(ConfigSetTest, UnparsableSize) {
  ExpectError("matcher: /a\nsize: 12XB\n", 2, "size", "unknown unit");
  ExpectError("matcher: /a\nsize: -1\n", 2, "size", "\"-1\"");
}

TEST(ConfigSetTest, SizeOfWrongType) {
  ExpectError("matcher: /a\nsize: [1]\n", 2, "size", "got a list");
}

TEST(ConfigSetTest, ReplicationMinBelowOne) {
  ExpectError("matcher: /a\nsize: 1KB\nreplication:\n  min: 0\n  max: 2\n", 4, "replication.min",
              "at least 1");
}

TEST(ConfigSetTest, ReplicationMaxBelowMin) {
  ConfigDiagnostic d = OnlyError("matcher: /a\nsize: 1KB\nreplication:\n  min: 3\n  max: 2\n");
  EXPECT_EQ(d.line, 5);
  EXPECT_EQ(d.field, "replication.max");
  EXPECT_EQ(d.message, "must be >= min (3), got 2");
}

TEST(ConfigSetTest, ReplicationMaxDefaultsToOne) {
  ExpectError("matcher: /a\nsize: 1KB\nreplication: {min: 2}\n", 3, "replication.max",
              "got 1 (the default)");
}

TEST(ConfigSetTest, ReplicationCountsMustBeNonNegativeIntegers) {
  ExpectError("matcher: /a\nsize: 1KB\nreplication:\n  min: two\n", 4, "replication.min",
              "non-negative integer");
  ExpectError("matcher: /a\nsize: 1KB\nreplication:\n  min: 1\n  max: -2\n", 5, "replication.max",
              "non-negative integer");
  ExpectError("matcher: /a\nsize: 1KB\nreplication:\n  max: 1.5\n", 4, "replication.max",
              "\"1.5\"");
  ExpectError("matcher: /a\nsize: 1KB\nreplication:\n  max: 99999999999\n", 4, "replication.max",
              "too large");
}

TEST(ConfigSetTest, ReplicationMustBeAMapping) {
  ExpectError("matcher: /a\nsize: 1KB\nreplication: 3\n", 3, "replication", "mapping");
}

TEST(ConfigSetTest, TagsMustBeAListOfStrings) {
  ExpectError("matcher: /a\nsize: 1KB\ntags: hot\n", 3, "tags", "list of strings");
  ExpectError("matcher: /a\nsize: 1KB\ntags:\n  - hot\n  - {x: 1}\n", 5, "tags", "element 2");
}

TEST(ConfigSetTest, IdAndDescriptionMustBeStrings) {
  ExpectError("id: [a]\nmatcher: /a\nsize: 1KB\n", 1, "id", "must be a string");
  ExpectError("matcher: /a\nsize: 1KB\ndescription: {a: b}\n", 3, "description",
              "must be a string");
}

TEST(ConfigSetTest, InvalidRegexIncludesRe2Message) {
  ConfigDiagnostic d = OnlyError("id: a\nsize: 1KB\nmatcher: /a/(b\n");
  EXPECT_EQ(d.line, 3);
  EXPECT_EQ(d.field, "matcher");
  EXPECT_TRUE(Contains(d.message, "invalid regex")) << d.message;
  EXPECT_TRUE(Contains(d.message, "missing )")) << d.message;
}

TEST(ConfigSetTest, MatcherBreakingPathRules) {
  ExpectError("matcher: /a/../b\nsize: 1KB\n", 1, "matcher", "'..'");
}

TEST(ConfigSetTest, MatcherOfWrongType) {
  ExpectError("size: 1KB\nmatcher:\n  path: /a\n", 3, "matcher", "got a mapping");
}

TEST(ConfigSetTest, FieldGivenTwice) {
  ExpectError("matcher: /a\nsize: 1KB\nsize: 2KB\n", 3, "size", "more than once");
}

TEST(ConfigSetTest, DuplicateIdNamesBothSources) {
  ConfigDiagnostic d = OnlyError(R"(- id: same
  matcher: /a
  size: 1KB
- id: same
  matcher: /b
  size: 1KB
)");
  EXPECT_EQ(d.line, 4);
  EXPECT_EQ(d.field, "id");
  EXPECT_TRUE(Contains(d.message, "\"same\"")) << d.message;
  EXPECT_TRUE(Contains(d.message, "test.yaml:1")) << d.message;
  EXPECT_TRUE(Contains(d.message, "test.yaml:4")) << d.message;
}

TEST(ConfigSetTest, DuplicateMatcherNamesBothSources) {
  // Spelled differently, equal after normalisation.
  ConfigDiagnostic d = OnlyError(R"(- id: a
  matcher: /data/*
  size: 1KB
- id: b
  matcher: data//*/
  size: 1KB
)");
  EXPECT_EQ(d.line, 5);
  EXPECT_EQ(d.field, "matcher");
  EXPECT_TRUE(Contains(d.message, "\"/data/*\"")) << d.message;
  EXPECT_TRUE(Contains(d.message, "test.yaml:1")) << d.message;
  EXPECT_TRUE(Contains(d.message, "test.yaml:4")) << d.message;
}

TEST(ConfigSetTest, DuplicateDerivedIdIsReportedOnlyAsDuplicateMatcher) {
  ConfigDiagnostic d = OnlyError("- {matcher: /a, size: 1}\n- {matcher: /a, size: 2}\n");
  EXPECT_EQ(d.field, "matcher");
}

TEST(ConfigSetTest, YamlSyntaxErrorHasLine) {
  ConfigDiagnostic d = OnlyError("matcher: /a\nsize: 1KB\ntags: [a, b\n");
  EXPECT_GT(d.line, 2);
  EXPECT_TRUE(Contains(d.message, "invalid YAML")) << d.message;
}

TEST(ConfigSetTest, DocumentMustBeAMappingOrList) {
  ExpectError("just text\n", 1, "", "expected a database config");
  ExpectError("- matcher: /a\n  size: 1\n- 42\n", 3, "", "got a string");
}

TEST(ConfigSetTest, ReportsEveryErrorNotJustTheFirst) {
  Loaded l = Load(R"(- matcher: /a
  size: 0
  replication: {min: 0}
- tags: x
)");
  EXPECT_FALSE(l.status.ok());
  // size, replication.min; then tags, missing matcher, missing size.
  EXPECT_EQ(l.Filter(true).size(), 5u) << l.AllDiagnostics();
  EXPECT_TRUE(Contains(l.status.message(), "5 errors in config: ")) << l.status;
  EXPECT_TRUE(Contains(l.status.message(), "; ...")) << l.status;
}

TEST(ConfigSetTest, StatusSummarisesFirstErrors) {
  Loaded l = Load("matcher: /a\nsize: 0\n");
  EXPECT_EQ(l.status.code(), Code::kInvalidConfig);
  EXPECT_EQ(l.status.message(),
            "1 error in config: test.yaml:2: error: size: must be greater than 0");
}

TEST(ConfigSetTest, FailedLoadLeavesOutputUntouched) {
  ConfigSet set = LoadOk("{id: keep, matcher: /keep, size: 1}");
  EXPECT_FALSE(ConfigSet::LoadString("matcher: /a\n", "bad.yaml", &set, nullptr).ok());
  ASSERT_EQ(set.configs().size(), 1u);
  EXPECT_EQ(set.configs()[0].id, "keep");
}

// ----- Warnings -----

TEST(ConfigSetTest, UnknownFieldsAreErrorsNamingTheLineAndTheLikelyTypo) {
  // A misspelt field must not silently leave its default in force (replication 1..1 here).
  // The typo's own value spans lines; the error names the key's line.
  Loaded l =
      Load("matcher: /a\nsize: 1KB\nreplicaton:\n  min: 2\nreplication:\n  min: 1\n  mx: 2\n");
  EXPECT_EQ(l.status.code(), Code::kInvalidConfig) << l.status;
  std::vector<ConfigDiagnostic> errors = l.Filter(/*errors=*/true);
  ASSERT_EQ(errors.size(), 2u) << l.AllDiagnostics();
  EXPECT_EQ(errors[0].line, 3);
  EXPECT_EQ(errors[0].field, "replicaton");
  EXPECT_EQ(errors[0].message,
            "unknown field \"replicaton\" (did you mean \"replication\"? known: id, description, "
            "tags, matcher, replication, size, max_instances)");
  EXPECT_EQ(errors[1].line, 7);
  EXPECT_EQ(errors[1].field, "replication.mx");
  EXPECT_TRUE(Contains(errors[1].message, "did you mean \"max\"?")) << errors[1].message;
  EXPECT_TRUE(l.set.configs().empty());
  // A name far from every known one gets no guess.
  Loaded far = Load("matcher: /a\nsize: 1KB\ncolour: blue\n");
  ASSERT_EQ(far.Filter(/*errors=*/true).size(), 1u) << far.AllDiagnostics();
  EXPECT_FALSE(Contains(far.Filter(/*errors=*/true)[0].message, "did you mean"));
}

TEST(ConfigSetTest, AmbiguousOverlapWarnsAndNamesTheWinner) {
  Loaded l = Load(R"(- id: by-app
  matcher: /app/*/data
  size: 1KB
- id: app-tree
  matcher: /app/**
  size: 1KB
)");
  ASSERT_TRUE(l.status.ok()) << l.status;
  std::vector<ConfigDiagnostic> warnings = l.Filter(false);
  ASSERT_EQ(warnings.size(), 1u) << l.AllDiagnostics();
  const ConfigDiagnostic& w = warnings[0];
  EXPECT_EQ(w.line, 5);
  EXPECT_EQ(w.field, "matcher");
  EXPECT_TRUE(Contains(w.message, "\"by-app\" (test.yaml:1)")) << w.message;
  EXPECT_TRUE(Contains(w.message, "\"app-tree\" (test.yaml:4)")) << w.message;
  EXPECT_TRUE(Contains(w.message, "resolve to \"by-app\"")) << w.message;
  // And that is what Resolve does.
  EXPECT_EQ(l.set.Resolve("/app/alice/data")->id, "by-app");
}

TEST(ConfigSetTest, NoOverlapWarningWhenPrecedenceDecides) {
  Loaded l = Load(R"(- {matcher: /app/*, size: 1}
- {matcher: /app/x/**, size: 1}
- {matcher: /app/x, size: 1}
- {matcher: /app/.*, size: 1}
- {matcher: /other/*, size: 1}
)");
  ASSERT_TRUE(l.status.ok()) << l.status;
  EXPECT_TRUE(l.diagnostics.empty()) << l.AllDiagnostics();
}

// ----- Derived ids -----

TEST(ConfigSetTest, DerivedIdIsStableAndDependsOnlyOnThePattern) {
  std::string first = LoadOk("{matcher: /Example/KV_store, size: 1}").configs()[0].id;
  std::string again = LoadOk("{id: '', matcher: Example//KV_store/, size: 2}").configs()[0].id;
  std::string other = LoadOk("{matcher: /example/kv-store, size: 1}").configs()[0].id;
  EXPECT_EQ(first, again);
  EXPECT_EQ(first.substr(0, first.size() - 8), "example-kv-store-");
  EXPECT_EQ(other.substr(0, other.size() - 8), "example-kv-store-");
  EXPECT_NE(first, other);  // Same slug, different pattern: the hash keeps them apart.
}

TEST(ConfigSetTest, DerivedIdSlugIsShortAndClean) {
  std::string id =
      LoadOk("{matcher: '/profile/history/[^/]+/very-long-name-here/x', size: 1}").configs()[0].id;
  ASSERT_GT(id.size(), 9u);
  std::string slug = id.substr(0, id.size() - 9);
  EXPECT_LE(slug.size(), 40u);
  EXPECT_EQ(slug, "profile-history-very-long-name-here-x");
  EXPECT_EQ(id[id.size() - 9], '-');
  for (char c : id.substr(id.size() - 8)) EXPECT_TRUE(isxdigit(c) && !isupper(c)) << id;

  std::string truncated =
      LoadOk("{matcher: /" + std::string(39, 'a') + "/bbbb, size: 1}").configs()[0].id;
  // 39 'a', '-' and 'b' fill 41 characters; the cut at 40 must not leave a trailing '-'.
  EXPECT_EQ(truncated.substr(0, truncated.size() - 9), std::string(39, 'a'));
}

TEST(ConfigSetTest, PatternWithoutLettersGetsGenericId) {
  std::string id = LoadOk("{matcher: /**, size: 1}").configs()[0].id;
  EXPECT_EQ(id.substr(0, 3), "db-");
  EXPECT_EQ(id.size(), 11u);
}

// ----- Resolution -----

TEST(ConfigSetTest, ResolveFollowsPrecedence) {
  ConfigSet set = LoadOk(R"(
- {id: any-regex, matcher: '/app/.*', size: 1}
- {id: deep-regex, matcher: '/app/users/[a-z]+', size: 1}
- {id: any-wild, matcher: '/app/**', size: 1}
- {id: users-wild, matcher: '/app/users/*', size: 1}
- {id: alice, matcher: /app/users/alice, size: 1}
)");
  auto resolved = [&](std::string_view path) -> std::string {
    const DatabaseConfig* c = set.Resolve(path);
    return c == nullptr ? "<none>" : c->id;
  };
  EXPECT_EQ(resolved("/app/users/alice"), "alice");     // Literal beats all.
  EXPECT_EQ(resolved("/app/users/bob"), "users-wild");  // Longer wildcard prefix.
  EXPECT_EQ(resolved("/app/other"), "any-wild");        // Wildcard beats regex.
  EXPECT_EQ(resolved("/app"), "<none>");                // "/app/.*" needs the "/".
  EXPECT_EQ(resolved("/elsewhere"), "<none>");
}

TEST(ConfigSetTest, ResolveRegexByPrefixThenFileOrder) {
  ConfigSet set = LoadOk(R"(
- {id: short, matcher: '/a/.+', size: 1}
- {id: long, matcher: '/a/b/.+', size: 1}
- {id: tie-first, matcher: '/x/[0-9]+', size: 1}
- {id: tie-second, matcher: '/x/[0-9a-f]+', size: 1}
)");
  EXPECT_EQ(set.Resolve("/a/b/c")->id, "long");
  EXPECT_EQ(set.Resolve("/a/c")->id, "short");
  EXPECT_EQ(set.Resolve("/x/12")->id, "tie-first");
  EXPECT_EQ(set.Resolve("/x/ab")->id, "tie-second");
}

TEST(ConfigSetTest, FindById) {
  ConfigSet set = LoadOk("- {id: a, matcher: /a, size: 1}\n- {matcher: /b, size: 1}\n");
  ASSERT_NE(set.FindById("a"), nullptr);
  EXPECT_EQ(set.FindById("a")->matcher.pattern(), "/a");
  const std::string derived = set.configs()[1].id;
  ASSERT_NE(set.FindById(derived), nullptr);
  EXPECT_EQ(set.FindById(derived)->matcher.pattern(), "/b");
  EXPECT_EQ(set.FindById("missing"), nullptr);
}

TEST(ConfigSetTest, CopiedSetResolvesIndependently) {
  ConfigSet copy;
  {
    ConfigSet original =
        LoadOk("- {id: a, matcher: /a, size: 1}\n- {id: w, matcher: /w/*, size: 1}\n");
    copy = original;
  }
  EXPECT_EQ(copy.Resolve("/a")->id, "a");
  EXPECT_EQ(copy.Resolve("/w/x")->id, "w");
  EXPECT_EQ(copy.FindById("w")->matcher.pattern(), "/w/*");
}

// ----- FromConfigs -----

TEST(ConfigSetTest, FromConfigsBuildsAndDerivesIds) {
  std::vector<DatabaseConfig> configs = {InMemory("", "/example/kv"), InMemory("w", "/w/*")};
  ConfigSet set;
  std::vector<ConfigDiagnostic> diagnostics;
  ASSERT_TRUE(ConfigSet::FromConfigs(configs, &set, &diagnostics).ok());
  EXPECT_TRUE(diagnostics.empty());
  EXPECT_EQ(set.configs()[0].id, "example-kv-007bb2f5");  // Same as from YAML.
  EXPECT_EQ(set.Resolve("/w/1")->id, "w");
}

TEST(ConfigSetTest, FromConfigsValidatesLikeYaml) {
  DatabaseConfig no_matcher;
  no_matcher.id = "m";
  no_matcher.size_bytes = 1;
  DatabaseConfig bad_replication = InMemory("r", "/r");
  bad_replication.replication = {2, 1};
  bad_replication.source = "mem:7";
  std::vector<DatabaseConfig> configs = {no_matcher, bad_replication, InMemory("z", "/z", 0),
                                         InMemory("r", "/other")};
  ConfigSet set;
  std::vector<ConfigDiagnostic> diagnostics;
  Status s = ConfigSet::FromConfigs(configs, &set, &diagnostics);
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  std::vector<std::string> fields;
  for (const ConfigDiagnostic& d : diagnostics) fields.push_back(d.field);
  EXPECT_EQ(fields, (std::vector<std::string>{"matcher", "replication.max", "size", "id"}));
  EXPECT_EQ(diagnostics[1].file, "mem:7");
  // The duplicate id names both configs, by source or by position when there is none.
  EXPECT_TRUE(Contains(diagnostics[3].message, "mem:7")) << diagnostics[3].message;
  EXPECT_TRUE(Contains(diagnostics[3].message, "config #4")) << diagnostics[3].message;
  EXPECT_TRUE(set.configs().empty());
}

// ----- ToString -----

TEST(ConfigSetTest, DiagnosticToString) {
  ConfigDiagnostic d{true, "dir/a.yaml", 12, "replication.min", "must be at least 1, got 0"};
  EXPECT_EQ(d.ToString(), "dir/a.yaml:12: error: replication.min: must be at least 1, got 0");
  d.is_error = false;
  d.line = 0;
  d.field.clear();
  EXPECT_EQ(d.ToString(), "dir/a.yaml: warning: must be at least 1, got 0");
  d.file.clear();
  EXPECT_EQ(d.ToString(), "warning: must be at least 1, got 0");
}

// ----- Directories -----

class ConfigDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "kvmesh_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Write(const std::string& name, std::string_view text) {
    std::ofstream(fs::path(dir_) / name) << text;
  }

  Loaded LoadDir() const {
    Loaded l;
    l.status = ConfigSet::LoadDirectory(dir_, &l.set, &l.diagnostics);
    return l;
  }

  std::string File(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string dir_;
};

TEST_F(ConfigDirTest, LoadsYamlFilesInNameOrderAndIgnoresOthers) {
  Write("b.yml", "{id: b, matcher: /b, size: 1}");
  Write("a.yaml", "- {id: a1, matcher: /a1, size: 1}\n- {id: a2, matcher: /a2, size: 1}\n");
  Write("c.txt", "not: [yaml");
  Write("d.yaml.bak", "{id: d, matcher: /d, size: 1}");
  fs::create_directory(fs::path(dir_) / "sub.yaml");  // Directories are not read.
  Write("sub.yaml/e.yaml", "{id: e, matcher: /e, size: 1}");

  Loaded l = LoadDir();
  ASSERT_TRUE(l.status.ok()) << l.status << l.AllDiagnostics();
  EXPECT_TRUE(l.diagnostics.empty()) << l.AllDiagnostics();
  std::vector<std::string> ids;
  for (const DatabaseConfig& c : l.set.configs()) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a1", "a2", "b"}));
  EXPECT_EQ(l.set.configs()[2].source, File("b.yml") + ":1");
}

TEST_F(ConfigDirTest, FileOrderBreaksTiesAcrossFiles) {
  Write("2-second.yaml", "{id: second, matcher: '/x/[a-z]+', size: 1}");
  Write("1-first.yaml", "{id: first, matcher: '/x/.+', size: 1}");
  Loaded l = LoadDir();
  ASSERT_TRUE(l.status.ok()) << l.status;
  EXPECT_EQ(l.set.Resolve("/x/abc")->id, "first");
}

TEST_F(ConfigDirTest, DuplicateAcrossFilesNamesBothFiles) {
  Write("a.yaml", "{id: same, matcher: /a, size: 1}");
  Write("b.yaml", "\n{id: same, matcher: /b, size: 1}");
  Loaded l = LoadDir();
  EXPECT_EQ(l.status.code(), Code::kInvalidConfig);
  std::vector<ConfigDiagnostic> errors = l.Filter(true);
  ASSERT_EQ(errors.size(), 1u) << l.AllDiagnostics();
  EXPECT_EQ(errors[0].file, File("b.yaml"));
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_TRUE(Contains(errors[0].message, File("a.yaml") + ":1")) << errors[0].message;
  EXPECT_TRUE(Contains(errors[0].message, File("b.yaml") + ":2")) << errors[0].message;
  EXPECT_TRUE(Contains(l.status.message(), File("b.yaml") + ":2: error: id: ")) << l.status;
}

TEST_F(ConfigDirTest, ErrorsInSeveralFilesAreAllReported) {
  Write("a.yaml", "{matcher: /a}");
  Write("b.yaml", "{size: 1}");
  Loaded l = LoadDir();
  std::vector<ConfigDiagnostic> errors = l.Filter(true);
  ASSERT_EQ(errors.size(), 2u) << l.AllDiagnostics();
  EXPECT_EQ(errors[0].file, File("a.yaml"));
  EXPECT_EQ(errors[1].file, File("b.yaml"));
}

TEST_F(ConfigDirTest, EmptyDirectoryLoadsWithWarning) {
  Loaded l = LoadDir();
  ASSERT_TRUE(l.status.ok()) << l.status;
  EXPECT_TRUE(l.set.configs().empty());
  ASSERT_EQ(l.diagnostics.size(), 1u);
  EXPECT_FALSE(l.diagnostics[0].is_error);
  EXPECT_EQ(l.diagnostics[0].message, "no database configs in " + dir_);
}

TEST_F(ConfigDirTest, MissingDirectoryIsAnErrorNamingIt) {
  const std::string missing = dir_ + "/does-not-exist";
  ConfigSet set;
  std::vector<ConfigDiagnostic> diagnostics;
  Status s = ConfigSet::LoadDirectory(missing, &set, &diagnostics);
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_TRUE(Contains(s.message(), missing)) << s;
  ASSERT_EQ(diagnostics.size(), 1u);
  EXPECT_TRUE(diagnostics[0].is_error);
}

TEST_F(ConfigDirTest, FileInsteadOfDirectoryIsAnError) {
  Write("plain.yaml", "{matcher: /a, size: 1}");
  ConfigSet set;
  Status s = ConfigSet::LoadDirectory(File("plain.yaml"), &set, nullptr);
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_TRUE(Contains(s.message(), "not a directory")) << s;
}

}  // namespace
}  // namespace kvmesh::config
