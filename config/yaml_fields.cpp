#include "config/yaml_fields.hpp"

#include <algorithm>

#include "common/path.hpp"

namespace kvmesh::config {

/// Edits (insertions, deletions, substitutions) that turn `a` into `b`.
namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string UnknownField(const std::string& name, const std::vector<std::string>& known) {
  std::string message = "unknown field " + Quote(name) + " (";
  const std::string* nearest = nullptr;
  size_t best = 3;
  for (const auto& k : known) {
    const size_t d = EditDistance(name, k);
    if (d < best) {
      best = d;
      nearest = &k;
    }
  }
  if (nearest != nullptr) message += "did you mean " + Quote(*nearest) + "? ";
  message += "known:";
  for (size_t i = 0; i < known.size(); ++i) message += (i == 0 ? " " : ", ") + known[i];
  return message + ")";
}

int LineOf(const YAML::Node& node, int fallback) {
  YAML::Mark mark = node.Mark();
  return mark.is_null() ? fallback : mark.line + 1;
}

const char* KindOf(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return "a string";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

}  // namespace kvmesh::config
