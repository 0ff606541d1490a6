#include "storage/keys.hpp"

namespace kvmesh::storage::keys {
namespace {

std::string DatabaseKey(uint64_t id, char tag) {
  std::string out(10, '\0');
  out[0] = 'd';
  for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>((id >> (56 - 8 * i)) & 0xff);
  out[9] = tag;
  return out;
}

}  // namespace

std::string NodeMetaKey() {
  return "n";
}

std::string CatalogKey(std::string_view path) {
  std::string out(kCatalogPrefix);
  out.append(path);
  return out;
}

std::string DatabaseMetaKey(uint64_t id) {
  return DatabaseKey(id, 'm');
}
std::string DataPrefix(uint64_t id) {
  return DatabaseKey(id, 'k');
}
std::string DataPrefixEnd(uint64_t id) {
  return DatabaseKey(id, 'k' + 1);
}

}  // namespace kvmesh::storage::keys
