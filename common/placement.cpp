#include "common/placement.hpp"

#include <algorithm>

namespace kvmesh {
namespace {

// FNV-1a over the path, then splitmix64's finaliser over (path hash ^ mixed node id): fixed
// algorithms, so placement never depends on the standard library's std::hash.
uint64_t Fnv1a(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t PlacementScore(std::string_view path, uint64_t node) {
  return Mix(Fnv1a(path) ^ Mix(node));
}

std::vector<uint64_t> PlaceReplicas(std::string_view path, std::vector<uint64_t> candidates,
                                    size_t max) {
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  std::vector<std::pair<uint64_t, uint64_t>> scored;  // (score, node)
  scored.reserve(candidates.size());
  for (uint64_t node : candidates) scored.emplace_back(PlacementScore(path, node), node);
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<uint64_t> out;
  for (size_t i = 0; i < scored.size() && i < max; ++i) out.push_back(scored[i].second);
  return out;
}

}  // namespace kvmesh
