// PackedKeys: many keys in one string, the form several gets travel in (the client's gets to one
// database waiting together under load; see the gateway's get handler taking PackedKeys).
//
// Not a vector<string>: CAF decodes a message before anyone checks it, and a vector of strings
// costs up to ~32 bytes of memory per byte on the wire (a string header per tiny key). One string
// costs what it carries.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvmesh/status.hpp"

namespace kvmesh {

/// Keys one after another, each as its length (4 bytes, little endian) then its bytes.
struct PackedKeys {
  std::string bytes;

  /// Appends `key`.
  void Add(std::string_view key) {
    const auto n = static_cast<uint32_t>(key.size());
    for (int shift = 0; shift < 32; shift += 8) bytes.push_back(static_cast<char>(n >> shift));
    bytes.append(key);
  }

  /// Views of the keys into `bytes` (valid while it is unchanged), in order. Fails
  /// (kInvalidArgument, naming the problem) unless there are 1 to `max_keys` keys and every
  /// length fits what follows it.
  Status Unpack(size_t max_keys, std::vector<std::string_view>* out) const {
    out->clear();
    size_t at = 0;
    while (at < bytes.size()) {
      if (out->size() == max_keys) {
        return Status::InvalidArgument("a message of several gets holds 1 to " +
                                       std::to_string(max_keys) + " keys, not more");
      }
      if (bytes.size() - at < 4) {
        return Status::InvalidArgument(
            "a message of several gets is malformed: a key's length is cut short");
      }
      uint32_t n = 0;
      for (int i = 0; i < 4; ++i)
        n |= uint32_t{static_cast<unsigned char>(bytes[at + i])} << (8 * i);
      at += 4;
      if (bytes.size() - at < n) {
        return Status::InvalidArgument(
            "a message of several gets is malformed: a key is longer than what follows it");
      }
      out->emplace_back(bytes.data() + at, n);
      at += n;
    }
    if (out->empty()) {
      return Status::InvalidArgument("a message of several gets holds 1 to " +
                                     std::to_string(max_keys) + " keys, not 0");
    }
    return Status::OK();
  }
};

}  // namespace kvmesh
