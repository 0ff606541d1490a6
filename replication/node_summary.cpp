#include "replication/node_summary.hpp"

#include <algorithm>

namespace kvmesh::replication {
namespace {

/// A fixed 64-bit hash of a database's path and digest (FNV-1a, splitmix64 finaliser): nodes of
/// any build must agree on it.
uint64_t EntryHash(const std::string& path, uint64_t digest) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : path) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= digest + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace

NodeSummary::NodeSummary(uint64_t self_id) : self_id_(self_id) {}

bool NodeSummary::Shared(const Record& r, uint64_t peer) const {
  if (r.digest == 0 || peer == self_id_) return false;
  bool self = false;
  bool other = false;
  for (uint64_t id : r.nodes) {
    self = self || id == self_id_;
    other = other || id == peer;
  }
  return self && other;
}

void NodeSummary::Toggle(const std::string& path, const Record& r, bool add) const {
  if (r.digest == 0) return;
  if (std::find(r.nodes.begin(), r.nodes.end(), self_id_) == r.nodes.end()) return;
  const uint64_t h = EntryHash(path, r.digest);
  for (uint64_t peer : r.nodes) {
    if (peer == self_id_) continue;
    Totals& t = totals_[peer];
    t.hash ^= h;
    if (add) {
      ++t.count;
    } else {
      --t.count;
    }
  }
}

void NodeSummary::SetDigest(const std::string& path, uint64_t digest) {
  DigestShard& shard = shards_[std::hash<std::string>{}(path) % kDigestShards];
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    shard.pending[path] = digest;
  }
  // Read first: while it is set, the flag's cache line stays shared between the writing cores.
  if (!pending_.load(std::memory_order_relaxed)) pending_.store(true, std::memory_order_release);
}

void NodeSummary::Fold() const {
  // A digest whose flag was set after this exchange is left to the next fold.
  if (!pending_.exchange(false, std::memory_order_acq_rel)) return;
  std::unordered_map<std::string, uint64_t> pending;
  for (DigestShard& shard : shards_) {
    {
      std::lock_guard<std::mutex> lock(shard.mutex);
      if (shard.pending.empty()) continue;
      pending.swap(shard.pending);
    }
    for (const auto& [path, digest] : pending) {
      ApplyDigest(path, digest);
    }
    pending.clear();
  }
}

void NodeSummary::ApplyDigest(const std::string& path, uint64_t digest) const {
  auto it = records_.find(path);
  if (it == records_.end()) {
    if (digest == 0) return;
    it = records_.emplace(path, Record{}).first;
  }
  Record& r = it->second;
  if (r.digest == digest) return;
  Toggle(path, r, false);
  r.digest = digest;
  Toggle(path, r, true);
  if (r.digest == 0 && r.nodes.empty()) records_.erase(it);
}

bool NodeSummary::Holds(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mutex_);
  Fold();
  return records_.count(path) > 0;
}

void NodeSummary::SetPlacement(const std::string& path, std::vector<uint64_t> nodes) {
  // No fold: a digest still pending lands on whatever record this leaves (the two fields are
  // independent, and the totals follow each change of either).
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = records_.find(path);
  if (it == records_.end()) {
    if (nodes.empty()) return;
    it = records_.emplace(path, Record{}).first;
  }
  Record& r = it->second;
  if (r.nodes == nodes) return;
  Toggle(path, r, false);
  r.nodes = std::move(nodes);
  Toggle(path, r, true);
  if (r.digest == 0 && r.nodes.empty()) records_.erase(it);
}

NodeSummary::Totals NodeSummary::TotalsWith(uint64_t peer) const {
  std::lock_guard<std::mutex> lock(mutex_);
  Fold();
  auto it = totals_.find(peer);
  return it == totals_.end() ? Totals{} : it->second;
}

std::vector<NodeSummary::Entry> NodeSummary::Page(uint64_t peer, const std::string& after,
                                                  std::string* until, bool* to_end) const {
  std::lock_guard<std::mutex> lock(mutex_);
  Fold();
  if (page_hook_) page_hook_();
  std::vector<Entry> out;
  size_t scanned = 0;
  *to_end = true;
  until->clear();
  for (auto it = records_.upper_bound(after); it != records_.end(); ++it) {
    if (out.size() >= kSummaryPageEntries || scanned >= kSummaryMaxScan) {
      *to_end = false;
      break;
    }
    ++scanned;
    *until = it->first;
    if (Shared(it->second, peer)) out.push_back({it->first, it->second.digest});
  }
  return out;
}

Status NodeSummary::Compare(uint64_t peer, const std::string& after, const std::string& until,
                            bool to_end, const std::vector<Entry>& theirs,
                            std::vector<std::string>* differ, std::string* compared_until) const {
  differ->clear();
  compared_until->clear();
  if (theirs.size() > kSummaryPageEntries) {
    return Status::InvalidArgument("summary page of " + std::to_string(theirs.size()) +
                                   " entries, more than " + std::to_string(kSummaryPageEntries));
  }
  if (!to_end && until <= after) {
    return Status::InvalidArgument("summary page with an empty range");
  }
  for (size_t i = 0; i < theirs.size(); ++i) {
    const std::string& path = theirs[i].path;
    if (path <= after || (!to_end && path > until) || (i > 0 && path <= theirs[i - 1].path) ||
        theirs[i].digest == 0) {
      return Status::InvalidArgument("summary page entries out of order or out of its range");
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  Fold();
  // Merges the two sorted lists over the range; stops early (saying where) when the answer or
  // the scan reaches its bound.
  auto mine = records_.upper_bound(after);
  auto in_range = [&](const std::string& path) { return to_end || path <= until; };
  size_t i = 0;
  size_t scanned = 0;
  std::string last;
  for (;;) {
    while (mine != records_.end() && in_range(mine->first) && !Shared(mine->second, peer) &&
           scanned < kSummaryMaxScan) {
      ++scanned;
      last = mine->first;
      ++mine;
    }
    const bool mine_left = mine != records_.end() && in_range(mine->first);
    const bool theirs_left = i < theirs.size();
    if (!mine_left && !theirs_left) return Status::OK();
    if (differ->size() >= kSummaryMaxDiffer || scanned >= kSummaryMaxScan) {
      // `last` is compared; resume after it (a range never stops before its first path: the
      // bounds are far above one step).
      *compared_until = last.empty() ? after : last;
      return Status::OK();
    }
    ++scanned;
    if (mine_left && (!theirs_left || mine->first < theirs[i].path)) {
      differ->push_back(mine->first);
      last = mine->first;
      ++mine;
    } else if (!mine_left || theirs[i].path < mine->first) {
      differ->push_back(theirs[i].path);
      last = theirs[i].path;
      ++i;
    } else {
      if (mine->second.digest != theirs[i].digest) differ->push_back(mine->first);
      last = mine->first;
      ++mine;
      ++i;
    }
  }
}

size_t NodeSummary::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Fold();
  return records_.size();
}

}  // namespace kvmesh::replication
