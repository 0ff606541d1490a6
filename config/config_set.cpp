#include "config/config_set.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <unordered_set>
#include <utility>

#include "common/path.hpp"
#include "config/size.hpp"
#include "config/yaml_fields.hpp"

namespace kvmesh::config {

Status SummariseDiagnostics(const std::vector<ConfigDiagnostic>& found, const std::string& what) {
  // The first few errors go into the returned Status; all of them are in the diagnostics.
  constexpr size_t kErrorsInStatus = 3;
  size_t errors = 0;
  std::string first;
  for (const ConfigDiagnostic& d : found) {
    if (!d.is_error) continue;
    if (errors < kErrorsInStatus) first += (errors == 0 ? "" : "; ") + d.ToString();
    ++errors;
  }
  if (errors == 0) return Status::OK();
  if (errors > kErrorsInStatus) first += "; ...";
  return Status::InvalidConfig(std::to_string(errors) + (errors == 1 ? " error" : " errors") +
                               " in " + what + ": " + first);
}

std::string ConfigDiagnostic::ToString() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  if (!out.empty()) out += ": ";
  out += is_error ? "error: " : "warning: ";
  if (!field.empty()) out += field + ": ";
  return out + message;
}

namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxSlugBytes = 40;

// Fields whose error was already reported while parsing, so that the value checks do not add a
// second, misleading error (a missing size is not also "size must be greater than 0").
enum FieldBit : unsigned { kMatcherBit = 1, kSizeBit = 2, kMinBit = 4, kMaxBit = 8 };

// 1-based lines of the parts of one config; 0 when unknown (configs built in memory).
struct Lines {
  int config = 0;
  int id = 0;
  int matcher = 0;
  int min = 0;
  int max = 0;
  int size = 0;
};

// One config on its way through validation.
struct Entry {
  DatabaseConfig config;
  std::string file;  // For diagnostics.
  Lines lines;
  size_t index = 0;       // Position in file order.
  unsigned reported = 0;  // FieldBits that already have an error.
};

void AddDiagnostic(std::vector<ConfigDiagnostic>* found, bool is_error, std::string file, int line,
                   std::string field, std::string message) {
  found->push_back({is_error, std::move(file), line, std::move(field), std::move(message)});
}

// How messages point at a config: its source, or its position when it was built in memory.
std::string Where(const Entry& e) {
  return e.config.source.empty() ? "config #" + std::to_string(e.index + 1) : e.config.source;
}

std::string Describe(const Entry& e) {
  return "config " + Quote(e.config.id) + " (" + Where(e) + ")";
}

// The first non-zero line: the most precise location that is known.
int FirstLine(std::initializer_list<int> lines) {
  for (int line : lines) {
    if (line > 0) return line;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// YAML parsing: shape and types of each field. Value ranges are checked later, by CheckValues,
// which also serves FromConfigs.

/// The fields of a database config.
const std::vector<std::string> kConfigFields = {"id",      "description", "tags",
                                                "matcher", "replication", "size"};

bool IsAllDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses the YAML text of one file into entries; problems go into `found`.
class FileParser {
 public:
  FileParser(std::string file, std::vector<Entry>* entries, std::vector<ConfigDiagnostic>* found)
      : file_(std::move(file)), entries_(entries), found_(found) {}

  void Parse(const std::string& text) {
    // yaml-cpp reports syntax errors (and misuse of nodes) by throwing; none may leave the module.
    try {
      for (const YAML::Node& document : YAML::LoadAll(text)) ParseDocument(document);
    } catch (const YAML::Exception& e) {
      Error(e.mark.is_null() ? 0 : e.mark.line + 1, "", "invalid YAML: " + e.msg);
    } catch (const std::exception& e) {
      Error(0, "", std::string("cannot parse: ") + e.what());
    }
  }

 private:
  void Error(int line, std::string field, std::string message) {
    AddDiagnostic(found_, true, file_, line, std::move(field), std::move(message));
  }
  void Warning(int line, std::string field, std::string message) {
    AddDiagnostic(found_, false, file_, line, std::move(field), std::move(message));
  }

  // A document is one config (a mapping), a list of them, or empty.
  void ParseDocument(const YAML::Node& document) {
    if (document.IsNull()) return;
    if (document.IsMap()) return ParseConfig(document);
    if (!document.IsSequence()) {
      Error(LineOf(document, 0), "",
            std::string("expected a database config (a mapping) or a list of them, got ") +
                KindOf(document));
      return;
    }
    for (const YAML::Node& item : document) {
      if (item.IsMap()) {
        ParseConfig(item);
      } else {
        Error(LineOf(item, LineOf(document, 0)), "",
              std::string("expected a database config (a mapping), got ") + KindOf(item));
      }
    }
  }

  void ParseConfig(const YAML::Node& map) {
    Entry e;
    e.file = file_;
    e.lines.config = LineOf(map, 0);
    e.config.source = file_ + ":" + std::to_string(e.lines.config);
    std::unordered_set<std::string> seen;
    for (const auto& field : map) {
      int key_line = LineOf(field.first, e.lines.config);
      // A null value ("size:") has no useful position of its own; point at its key.
      int line = field.second.IsNull() ? key_line : LineOf(field.second, key_line);
      if (!field.first.IsScalar()) {
        Error(key_line, "", "field names must be strings");
        continue;
      }
      const std::string& name = field.first.Scalar();
      if (!seen.insert(name).second) {
        Error(key_line, name, "field is given more than once");
        continue;
      }
      if (std::find(kConfigFields.begin(), kConfigFields.end(), name) == kConfigFields.end()) {
        // An error, not a warning: a misspelt field ("replicaton") would otherwise silently give
        // its default (replication 1..1), and kvmeshd's own settings file refuses unknown keys
        // too.
        Error(key_line, name, UnknownField(name, kConfigFields));
        continue;
      }
      ParseField(name, field.second, line, &e);
    }
    RequireField(seen, "matcher", kMatcherBit, &e);
    RequireField(seen, "size", kSizeBit, &e);
    entries_->push_back(std::move(e));
  }

  void RequireField(const std::unordered_set<std::string>& seen, const char* name, FieldBit bit,
                    Entry* e) {
    if (seen.count(name) != 0) return;
    Error(e->lines.config, name, "required field is missing");
    e->reported |= bit;
  }

  void ParseField(const std::string& name, const YAML::Node& value, int line, Entry* e) {
    if (name == "id") {
      e->lines.id = line;
      ReadString(value, line, name, &e->config.id);
    } else if (name == "description") {
      ReadString(value, line, name, &e->config.description);
    } else if (name == "tags") {
      ReadTags(value, line, &e->config.tags);
    } else if (name == "matcher") {
      e->lines.matcher = line;
      if (!ReadMatcher(value, line, &e->config.matcher)) e->reported |= kMatcherBit;
    } else if (name == "replication") {
      ReadReplication(value, line, e);
    } else if (name == "size") {
      e->lines.size = line;
      if (!ReadSize(value, line, &e->config.size_bytes)) e->reported |= kSizeBit;
    }
  }

  // Optional string fields: absent or null leaves `*out` empty.
  void ReadString(const YAML::Node& value, int line, const std::string& field, std::string* out) {
    if (value.IsNull()) return;
    if (!value.IsScalar()) {
      Error(line, field, std::string("must be a string, got ") + KindOf(value));
      return;
    }
    *out = value.Scalar();
  }

  void ReadTags(const YAML::Node& value, int line, std::vector<std::string>* tags) {
    if (value.IsNull()) return;
    if (!value.IsSequence()) {
      Error(line, "tags", std::string("must be a list of strings, got ") + KindOf(value));
      return;
    }
    size_t position = 0;
    for (const YAML::Node& tag : value) {
      ++position;
      if (tag.IsScalar()) {
        tags->push_back(tag.Scalar());
      } else {
        Error(LineOf(tag, line), "tags",
              "element " + std::to_string(position) + " must be a string, got " + KindOf(tag));
      }
    }
  }

  bool ReadMatcher(const YAML::Node& value, int line, Matcher* matcher) {
    if (!value.IsScalar()) {
      Error(line, "matcher",
            std::string("must be a pattern string (literal, wildcard or regex), got ") +
                KindOf(value));
      return false;
    }
    Status s = Matcher::Compile(value.Scalar(), matcher);
    if (!s.ok()) Error(line, "matcher", s.message());
    return s.ok();
  }

  void ReadReplication(const YAML::Node& value, int line, Entry* e) {
    if (value.IsNull()) return;  // "replication:" alone keeps the defaults.
    if (!value.IsMap()) {
      Error(line, "replication",
            std::string("must be a mapping with min and max, got ") + KindOf(value));
      e->reported |= kMinBit | kMaxBit;
      return;
    }
    for (const auto& field : value) {
      int key_line = LineOf(field.first, line);
      int value_line = field.second.IsNull() ? key_line : LineOf(field.second, key_line);
      std::string name = field.first.IsScalar() ? field.first.Scalar() : "";
      if (name == "min" || name == "max") {
        bool is_min = name == "min";
        (is_min ? e->lines.min : e->lines.max) = value_line;
        uint32_t* target = is_min ? &e->config.replication.min : &e->config.replication.max;
        if (!ReadCount(field.second, value_line, "replication." + name, target)) {
          e->reported |= is_min ? kMinBit : kMaxBit;
        }
      } else {
        Error(key_line, name.empty() ? "replication" : "replication." + name,
              UnknownField(name, {"min", "max"}));
      }
    }
  }

  // A non-negative integer that fits 32 bits; quoted digits are accepted too.
  bool ReadCount(const YAML::Node& value, int line, const std::string& field, uint32_t* out) {
    if (!value.IsScalar() || !IsAllDigits(value.Scalar())) {
      std::string got = value.IsScalar() ? Quote(value.Scalar()) : KindOf(value);
      Error(line, field, "must be a non-negative integer, got " + got);
      return false;
    }
    const std::string& digits = value.Scalar();
    // More than 10 digits cannot fit; checking the length first keeps stoull from throwing.
    uint64_t v = digits.size() <= 10 ? std::stoull(digits) : UINT64_MAX;
    if (v > UINT32_MAX) {
      Error(line, field, "is too large: " + digits);
      return false;
    }
    *out = static_cast<uint32_t>(v);
    return true;
  }

  // A size string ("100MB") or a plain integer, which means bytes.
  bool ReadSize(const YAML::Node& value, int line, uint64_t* bytes) {
    if (!value.IsScalar()) {
      Error(line, "size",
            std::string("must be a size such as 100MB or a number of bytes, got ") + KindOf(value));
      return false;
    }
    Status s = ParseSize(value.Scalar(), bytes);
    if (!s.ok()) Error(line, "size", s.message());
    return s.ok();
  }

  std::string file_;
  std::vector<Entry>* entries_;
  std::vector<ConfigDiagnostic>* found_;
};

// ---------------------------------------------------------------------------------------------
// Validation shared by every way of loading.

// Ranges of the values of one config. Fields that already have a parse error are skipped.
void CheckValues(const Entry& e, std::vector<ConfigDiagnostic>* found) {
  auto error = [&](int line, const char* field, std::string message) {
    AddDiagnostic(found, true, e.file, FirstLine({line, e.lines.config}), field,
                  std::move(message));
  };
  const DatabaseConfig& c = e.config;
  if (!(e.reported & kMatcherBit) && c.matcher.pattern().empty()) {
    error(e.lines.matcher, "matcher", "required field is missing");
  }
  if (!(e.reported & kSizeBit) && c.size_bytes == 0) {
    error(e.lines.size, "size", "must be greater than 0");
  }
  if (!(e.reported & kMinBit) && c.replication.min < 1) {
    error(e.lines.min, "replication.min", "must be at least 1, got 0");
  } else if (!(e.reported & (kMinBit | kMaxBit)) && c.replication.max < c.replication.min) {
    // "min: 3" alone fails because max defaults to 1; say so, or the error looks wrong.
    bool max_defaulted = e.lines.max == 0 && e.lines.min > 0;
    error(FirstLine({e.lines.max, e.lines.min}), "replication.max",
          "must be >= min (" + std::to_string(c.replication.min) + "), got " +
              std::to_string(c.replication.max) + (max_defaulted ? " (the default)" : ""));
  }
}

// FNV-1a 64 of `text`, xor-folded to 32 bits (the folding its authors recommend), as 8 hex digits.
std::string ShortHash(std::string_view text) {
  uint64_t hash = 14695981039346656037ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  uint32_t folded = static_cast<uint32_t>(hash >> 32) ^ static_cast<uint32_t>(hash);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 7; i >= 0; --i, folded >>= 4) out[i] = kHex[folded & 0xf];
  return out;
}

// "example-kv-1a2b3c4d" for "/example/kv": readable, and stable across runs and machines because
// it depends only on the (normalised) pattern text. The hash keeps patterns that slug alike
// ("/a/b" and "/a-b") apart. A pattern with no letters or digits gets "db-<hash>".
std::string DeriveId(const std::string& pattern) {
  std::string slug;
  for (char c : pattern) {
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (alnum) {
      slug += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    } else if (!slug.empty() && slug.back() != '-') {
      slug += '-';
    }
  }
  if (slug.size() > kMaxSlugBytes) slug.resize(kMaxSlugBytes);
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  return (slug.empty() ? "db" : slug) + "-" + ShortHash(pattern);
}

bool HasMatcher(const Entry& e) {
  return !e.config.matcher.pattern().empty();
}

// Ids and matcher patterns must be unique: each names exactly one config.
void CheckDuplicates(const std::vector<Entry>& entries, std::vector<ConfigDiagnostic>* found) {
  std::unordered_map<std::string, size_t> ids;
  std::unordered_map<std::string, size_t> patterns;
  for (const Entry& e : entries) {
    bool same_pattern = false;
    if (HasMatcher(e)) {
      auto [it, inserted] = patterns.emplace(e.config.matcher.pattern(), e.index);
      same_pattern = !inserted;
      if (!inserted) {
        const Entry& first = entries[it->second];
        AddDiagnostic(found, true, e.file, FirstLine({e.lines.matcher, e.lines.config}), "matcher",
                      "duplicate matcher pattern " + Quote(e.config.matcher.pattern()) + ": " +
                          Describe(first) + " and " + Describe(e));
      }
    }
    if (e.config.id.empty()) continue;
    auto [it, inserted] = ids.emplace(e.config.id, e.index);
    const Entry& first = entries[it->second];
    // Two ids derived from one pattern collide by construction; the pattern error says it all.
    if (inserted || (same_pattern && e.config.id_derived && first.config.id_derived)) continue;
    AddDiagnostic(found, true, e.file, FirstLine({e.lines.id, e.lines.config}), "id",
                  "duplicate id " + Quote(e.config.id) + ": defined by " + Where(first) +
                      " and by " + Where(e));
  }
}

// Indexes of the wildcard and regex matchers, most specific first and ties in file order: the
// order in which Resolve tries them. Literal matchers are looked up by hash instead.
template <typename MatcherAt>
std::vector<size_t> PrecedenceOrder(size_t count, MatcherAt matcher_at) {
  std::vector<size_t> order;
  for (size_t i = 0; i < count; ++i) {
    if (matcher_at(i).kind() != MatcherKind::kLiteral) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ComparePrecedence(matcher_at(a), matcher_at(b)) < 0;
  });
  return order;
}

// Two matchers that tie on precedence and can match one path leave the choice to file order,
// which is easy to break by renaming a file: warn. Only non-literals can tie with an overlap (two
// literals that overlap are equal, a duplicate), and ties are adjacent in precedence order.
void WarnAmbiguousOverlaps(const std::vector<Entry>& entries,
                           std::vector<ConfigDiagnostic>* found) {
  std::vector<size_t> order = PrecedenceOrder(
      entries.size(), [&](size_t i) -> const Matcher& { return entries[i].config.matcher; });
  for (size_t p = 0; p < order.size(); ++p) {
    const Entry& winner = entries[order[p]];
    for (size_t q = p + 1; q < order.size(); ++q) {
      const Entry& loser = entries[order[q]];
      const Matcher& a = winner.config.matcher;
      const Matcher& b = loser.config.matcher;
      if (ComparePrecedence(a, b) != 0) break;
      if (a.pattern() == b.pattern() || !a.Overlaps(b)) continue;
      AddDiagnostic(found, false, loser.file, FirstLine({loser.lines.matcher, loser.lines.config}),
                    "matcher",
                    "matcher " + Quote(b.pattern()) + " of " + Describe(loser) + " overlaps " +
                        Quote(a.pattern()) + " of " + Describe(winner) +
                        " with equal precedence; paths matching both resolve to " +
                        Quote(winner.config.id) + " because it comes first in file order");
    }
  }
}

enum class Order { kAsFound, kByFileAndLine };

// Checks `entries` as a whole and reports everything found into `*diagnostics` (if any). On
// success moves the configs, ids filled in, into `*valid`.
Status Validate(std::vector<Entry> entries, std::vector<ConfigDiagnostic> found, Order order,
                std::vector<ConfigDiagnostic>* diagnostics, std::vector<DatabaseConfig>* valid) {
  for (size_t i = 0; i < entries.size(); ++i) {
    Entry& e = entries[i];
    e.index = i;
    CheckValues(e, &found);
    if (e.config.id.empty() && HasMatcher(e)) {
      e.config.id = DeriveId(e.config.matcher.pattern());
      e.config.id_derived = true;
    }
  }
  CheckDuplicates(entries, &found);
  WarnAmbiguousOverlaps(entries, &found);

  // Parse errors and value checks are found in separate passes; report YAML findings as a reader
  // meets them: by file, then line. Files were read in name order, so the stable sort keeps that.
  if (order == Order::kByFileAndLine) {
    std::unordered_map<std::string, size_t> file_rank;
    for (const ConfigDiagnostic& d : found) file_rank.emplace(d.file, file_rank.size());
    std::stable_sort(found.begin(), found.end(),
                     [&](const ConfigDiagnostic& a, const ConfigDiagnostic& b) {
                       return std::make_pair(file_rank[a.file], a.line) <
                              std::make_pair(file_rank[b.file], b.line);
                     });
  }
  Status status = SummariseDiagnostics(found, "config");
  if (diagnostics != nullptr) {
    diagnostics->insert(diagnostics->end(), std::make_move_iterator(found.begin()),
                        std::make_move_iterator(found.end()));
  }
  if (status.ok()) {
    valid->clear();
    for (Entry& e : entries) valid->push_back(std::move(e.config));
  }
  return status;
}

// The *.yaml and *.yml files directly in `dir`, sorted by name. False (with an error) if the
// directory cannot be listed.
bool ListConfigFiles(const std::string& dir, std::vector<fs::path>* files,
                     std::vector<ConfigDiagnostic>* found) {
  std::error_code ec;
  fs::file_status status = fs::status(dir, ec);
  if (!fs::is_directory(status)) {
    std::string why = "does not exist";
    if (fs::exists(status)) {
      why = "is not a directory";
    } else if (ec && ec != std::errc::no_such_file_or_directory) {
      why = "cannot be read: " + ec.message();
    }
    AddDiagnostic(found, true, dir, 0, "", "config directory " + Quote(dir) + " " + why);
    return false;
  }
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path& path = it->path();
    std::string ext = path.extension().string();
    // A broken symlink or a vanished file is skipped, not a reason to reject the directory.
    std::error_code file_ec;
    if ((ext == ".yaml" || ext == ".yml") && it->is_regular_file(file_ec)) files->push_back(path);
  }
  if (ec) {
    AddDiagnostic(found, true, dir, 0, "",
                  "cannot read config directory " + Quote(dir) + ": " + ec.message());
    return false;
  }
  std::sort(files->begin(), files->end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();
  });
  return true;
}

bool ReadFile(const fs::path& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return !in.bad();
}

}  // namespace

Status ConfigSet::LoadDirectory(const std::string& dir, ConfigSet* out,
                                std::vector<ConfigDiagnostic>* diagnostics) {
  std::vector<ConfigDiagnostic> found;
  std::vector<Entry> entries;
  std::vector<fs::path> files;
  if (ListConfigFiles(dir, &files, &found)) {
    for (const fs::path& path : files) {
      std::string text;
      if (!ReadFile(path, &text)) {
        AddDiagnostic(&found, true, path.string(), 0, "", "cannot read file");
        continue;
      }
      FileParser(path.string(), &entries, &found).Parse(text);
    }
    if (entries.empty()) {
      AddDiagnostic(&found, false, dir, 0, "", "no database configs in " + dir);
    }
  }
  std::vector<DatabaseConfig> valid;
  Status s =
      Validate(std::move(entries), std::move(found), Order::kByFileAndLine, diagnostics, &valid);
  if (s.ok()) out->Adopt(std::move(valid));
  return s;
}

Status ConfigSet::LoadString(std::string_view yaml, const std::string& source_name, ConfigSet* out,
                             std::vector<ConfigDiagnostic>* diagnostics) {
  std::vector<ConfigDiagnostic> found;
  std::vector<Entry> entries;
  FileParser(source_name, &entries, &found).Parse(std::string(yaml));
  std::vector<DatabaseConfig> valid;
  Status s =
      Validate(std::move(entries), std::move(found), Order::kByFileAndLine, diagnostics, &valid);
  if (s.ok()) out->Adopt(std::move(valid));
  return s;
}

Status ConfigSet::FromConfigs(std::vector<DatabaseConfig> configs, ConfigSet* out,
                              std::vector<ConfigDiagnostic>* diagnostics) {
  std::vector<Entry> entries(configs.size());
  for (size_t i = 0; i < configs.size(); ++i) {
    entries[i].file = configs[i].source;
    entries[i].config = std::move(configs[i]);
  }
  std::vector<DatabaseConfig> valid;
  Status s = Validate(std::move(entries), {}, Order::kAsFound, diagnostics, &valid);
  if (s.ok()) out->Adopt(std::move(valid));
  return s;
}

void ConfigSet::Adopt(std::vector<DatabaseConfig> configs) {
  configs_ = std::move(configs);
  literal_index_.clear();
  id_index_.clear();
  for (size_t i = 0; i < configs_.size(); ++i) {
    const Matcher& m = configs_[i].matcher;
    if (m.kind() == MatcherKind::kLiteral) literal_index_.emplace(m.pattern(), i);
    id_index_.emplace(configs_[i].id, i);
  }
  pattern_order_ = PrecedenceOrder(configs_.size(),
                                   [&](size_t i) -> const Matcher& { return configs_[i].matcher; });
}

const DatabaseConfig* ConfigSet::Resolve(std::string_view path) const {
  // A literal match beats every wildcard and regex, so one lookup settles most requests.
  auto literal = literal_index_.find(std::string(path));
  if (literal != literal_index_.end()) return &configs_[literal->second];
  for (size_t i : pattern_order_) {
    if (configs_[i].matcher.Matches(path)) return &configs_[i];
  }
  return nullptr;
}

const DatabaseConfig* ConfigSet::FindById(std::string_view id) const {
  auto it = id_index_.find(std::string(id));
  return it == id_index_.end() ? nullptr : &configs_[it->second];
}

}  // namespace kvmesh::config
