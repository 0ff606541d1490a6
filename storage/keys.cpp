#include "storage/keys.hpp"

namespace kvmesh::storage::keys {
void AppendBigEndian64(uint64_t n, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((n >> (56 - 8 * i)) & 0xff));
}

namespace {

std::string DatabaseKey(uint64_t id, char tag) {
  std::string out;
  out.reserve(kIndexKeySize);
  out.push_back('d');
  AppendBigEndian64(id, &out);
  out.push_back(tag);
  return out;
}

std::string IndexPrefix(uint64_t id, char tag, uint64_t origin) {
  std::string out = DatabaseKey(id, tag);
  AppendBigEndian64(origin, &out);
  return out;
}

std::string IndexKey(uint64_t id, char tag, uint64_t origin, uint64_t counter) {
  std::string out = IndexPrefix(id, tag, origin);
  AppendBigEndian64(counter, &out);
  return out;
}

}  // namespace

std::string NodeInUseKey() {
  return "a";
}

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

std::string DatabasePrefix(uint64_t id) {
  std::string out = "d";
  AppendBigEndian64(id, &out);
  return out;
}
std::string DatabasePrefixEnd(uint64_t id) {
  return PrefixSuccessor(DatabasePrefix(id));
}

std::string DotIndexKey(uint64_t id, uint64_t origin, uint64_t counter) {
  return IndexKey(id, 'o', origin, counter);
}
std::string DotIndexPrefix(uint64_t id, uint64_t origin) {
  return IndexPrefix(id, 'o', origin);
}

std::string DotRangeKey(uint64_t id, uint64_t origin, uint64_t first_counter) {
  return IndexKey(id, 'p', origin, first_counter);
}
std::string DotRangePrefix(uint64_t id, uint64_t origin) {
  return IndexPrefix(id, 'p', origin);
}
std::string DotRangePrefix(uint64_t id) {
  return DatabaseKey(id, 'p');
}

std::string TombstoneIndexKey(uint64_t id, uint64_t origin, uint64_t counter) {
  return IndexKey(id, 't', origin, counter);
}
std::string TombstoneIndexPrefix(uint64_t id) {
  return DatabaseKey(id, 't');
}
std::string TombstoneIndexPrefix(uint64_t id, uint64_t origin) {
  return IndexPrefix(id, 't', origin);
}

std::string ExpiryIndexKey(uint64_t id, uint64_t expires, uint64_t origin, uint64_t counter) {
  std::string out = DatabaseKey(id, 'x');
  AppendBigEndian64(expires, &out);
  AppendBigEndian64(origin, &out);
  AppendBigEndian64(counter, &out);
  return out;
}
std::string ExpiryIndexPrefix(uint64_t id) {
  return DatabaseKey(id, 'x');
}

uint64_t DecodeBigEndian64(const char* bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return n;
}

std::string PrefixSuccessor(std::string_view prefix) {
  std::string out(prefix);
  while (!out.empty()) {
    unsigned char last = static_cast<unsigned char>(out.back());
    if (last != 0xff) {
      out.back() = static_cast<char>(last + 1);
      return out;
    }
    out.pop_back();
  }
  return out;
}

}  // namespace kvmesh::storage::keys
