// The skip list under kvmesh's RocksDB memtable (storage/memtable.hpp), apart from RocksDB's types
// so that tests can drive it step by step.
//
// A sorted set of entries: nodes of height 1 to kMaxHeight (a quarter of the nodes one level
// higher), each made by the caller in memory it allocates (NodeBytes, MakeNode) with its links in
// front of the entry. Nodes are never removed. Readers never lock and may run with any inserts;
// an insert links its node bottom-up with a compare-and-swap per level, so several may run at
// once, and one that finds a node linked meanwhile between its neighbours on a level searches
// that level again from its predecessor. Keys are unique: an insert that finds an equal entry
// (before linking, or linked meanwhile by another insert) links nothing and returns that one.
// An insert made `alone` (no other insert runs meanwhile;
// RocksDB says which) starts its search from where the previous such insert went when its key
// comes after that one's: a sorted run inserts each entry a few comparisons from the last instead
// of searching from the top. Concurrent inserts forget that finger.
//
// `Compare` has `using Key`, `int operator()(const char* entry, const Key& key) const` (<0, 0, >0
// as the entry orders before, with or after `key`) and `Key Decode(const char* entry) const`.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <thread>

namespace kvmesh::storage {

template <typename Compare>
class SkipList {
 public:
  using Key = typename Compare::Key;
  static constexpr int kMaxHeight = 12;

  /// A node: its links (level 0 here, level i the i-th slot before it) and, right after it, its
  /// entry. Until it is linked, level 0's slot holds the node's height.
  struct Node {
    std::atomic<Node*> next0;

    std::atomic<Node*>& Link(int level) { return (&next0)[-level]; }
    Node* Next(int level) { return Link(level).load(std::memory_order_acquire); }
    const char* Entry() const { return reinterpret_cast<const char*>(this + 1); }
  };
  static_assert(sizeof(Node) == sizeof(std::atomic<Node*>), "the entry follows the links");

  /// Where an insert goes on each level below `top` (the height of the lists when it was
  /// located): between prev and next. Its node has `height` levels.
  struct Splice {
    int height = 0;
    int top = 0;
    std::array<Node*, kMaxHeight> prev;
    std::array<Node*, kMaxHeight> next;
  };

  explicit SkipList(Compare compare) : compare_(std::move(compare)) {
    head_ = reinterpret_cast<Node*>(&head_links_[kMaxHeight - 1]);
    finger_.fill(head_);
  }
  SkipList(const SkipList&) = delete;
  SkipList& operator=(const SkipList&) = delete;

  /// A random height, 1 to kMaxHeight, with P(height > h) = 4^-h; per thread.
  static int RandomHeight() {
    thread_local uint64_t state =
        0x9E3779B97F4A7C15ull ^ std::hash<std::thread::id>{}(std::this_thread::get_id());
    int height = 1;
    while (height < kMaxHeight) {
      state ^= state >> 12;  // xorshift64*
      state ^= state << 25;
      state ^= state >> 27;
      if (((state * 0x2545F4914F6CDD1Dull) >> 32) % 4 != 0) break;
      ++height;
    }
    return height;
  }

  /// Bytes to allocate (at any address) for a node of `height` with an entry of `entry_bytes`.
  static size_t NodeBytes(int height, size_t entry_bytes) {
    return sizeof(std::atomic<Node*>) * height + entry_bytes + alignof(std::atomic<Node*>) - 1;
  }

  /// Makes a node of `height` in `memory` (NodeBytes of it); returns where its entry goes, which
  /// the caller fills before Insert.
  static char* MakeNode(char* memory, int height) {
    constexpr uintptr_t kAlign = alignof(std::atomic<Node*>);
    auto* links = reinterpret_cast<std::atomic<Node*>*>(
        (reinterpret_cast<uintptr_t>(memory) + kAlign - 1) & ~(kAlign - 1));
    for (int i = 0; i < height; ++i) new (links + i) std::atomic<Node*>(nullptr);
    Node* node = reinterpret_cast<Node*>(links + height - 1);
    node->next0.store(reinterpret_cast<Node*>(static_cast<uintptr_t>(height)),
                      std::memory_order_relaxed);
    return const_cast<char*>(node->Entry());
  }

  /// Links the node whose entry is `entry` (from MakeNode) and returns `entry`; if the set holds
  /// an equal entry already, links nothing and returns that one. `alone`: no other insert runs
  /// meanwhile.
  const char* Insert(char* entry, bool alone) {
    Splice splice = Locate(entry, alone);
    return Link(entry, &splice, alone);
  }

  /// Insert's two steps, for tests: where the entry goes now, then linking it there (or, where
  /// another insert linked a node meanwhile, next to it).
  Splice Locate(const char* entry, bool alone) {
    Node* node = NodeOf(entry);
    Splice splice;
    splice.height =
        static_cast<int>(reinterpret_cast<uintptr_t>(node->next0.load(std::memory_order_relaxed)));
    const Key key = compare_.Decode(entry);
    int top = MaxHeight();
    while (splice.height > top && !max_height_.compare_exchange_weak(top, splice.height)) {
    }
    top = std::max(top, splice.height);
    splice.top = top;
    Node** prev = splice.prev.data();
    Node** next = splice.next.data();
    Node* last = alone ? finger_node_.load(std::memory_order_relaxed) : nullptr;
    if (!alone) {
      // The finger's levels would no longer be in order (below).
      finger_node_.store(nullptr, std::memory_order_relaxed);
    }
    if (last == nullptr || !After(key, last)) {
      FindSplice(key, top, head_, nullptr, prev, next);
      return splice;
    }
    // Every finger node is before the last insert's key, so before this one. While only inserts
    // made alone ran since, a level where the finger brackets `key` has every level above it do
    // so too (the next node on the level above is on this one, at or after this level's finger):
    // the levels where it brackets are the top ones, and those below are searched from the lowest
    // of them.
    int lowest = 0;
    while (lowest < top && After(key, finger_[lowest]->Next(lowest))) ++lowest;
    for (int level = lowest; level < top; ++level) {
      prev[level] = finger_[level];
      next[level] = finger_[level]->Next(level);
    }
    if (lowest == top) {
      FindSplice(key, top, head_, nullptr, prev, next);
    } else if (lowest > 0) {
      FindSplice(key, lowest, finger_[lowest], next[lowest], prev, next);
    }
    return splice;
  }

  /// Returns `entry`, or the equal entry found at its place on level 0 (the node is then not
  /// linked at all: level 0 is linked first).
  const char* Link(const char* entry, Splice* splice, bool alone) {
    Node* node = NodeOf(entry);
    const Key key = compare_.Decode(entry);
    for (int level = 0; level < splice->height; ++level) {
      while (true) {
        if (level == 0 && Equal(key, splice->next[0])) return splice->next[0]->Entry();
        node->Link(level).store(splice->next[level], std::memory_order_relaxed);
        Node* expected = splice->next[level];
        if (splice->prev[level]->Link(level).compare_exchange_strong(
                expected, node, std::memory_order_release, std::memory_order_relaxed)) {
          break;
        }
        // Another insert linked a node between them on this level: search the level again from
        // prev, which is still before `key` (nodes are never removed).
        FindSpliceAt(key, level, splice->prev[level], nullptr, &splice->prev[level],
                     &splice->next[level]);
      }
    }
    if (alone) {
      // The levels above `top` never had a node when it was located: their finger is head_.
      for (int level = 0; level < splice->top; ++level) {
        finger_[level] = level < splice->height ? node : splice->prev[level];
      }
      finger_node_.store(node, std::memory_order_relaxed);
    }
    return entry;
  }

  /// The first entry's node at or after `key`, null if none.
  Node* Seek(const Key& key) const {
    Node* x = head_;
    int level = MaxHeight() - 1;
    Node* bigger = nullptr;  // known to be >= key: not compared again on the levels below
    while (true) {
      Node* next = x->Next(level);
      const int cmp = next == nullptr || next == bigger ? 1 : compare_(next->Entry(), key);
      if (cmp == 0 || (cmp > 0 && level == 0)) return next;
      if (cmp < 0) {
        x = next;
      } else {
        bigger = next;
        --level;
      }
    }
  }

  /// The last entry's node before `key`, null if none.
  Node* Before(const Key& key) const {
    Node* x = head_;
    int level = MaxHeight() - 1;
    Node* not_before = nullptr;
    while (true) {
      Node* next = x->Next(level);
      if (next != not_before && After(key, next)) {
        x = next;
      } else if (level == 0) {
        return x == head_ ? nullptr : x;
      } else {
        not_before = next;
        --level;
      }
    }
  }

  Node* First() const { return head_->Next(0); }

  /// The node of an entry made by MakeNode.
  static Node* NodeOf(const char* entry) {
    return reinterpret_cast<Node*>(const_cast<char*>(entry)) - 1;
  }

  /// The last entry's node, null if none.
  Node* Last() const {
    Node* x = head_;
    for (int level = MaxHeight() - 1; level >= 0; --level) {
      for (Node* next = x->Next(level); next != nullptr; next = x->Next(level)) x = next;
    }
    return x == head_ ? nullptr : x;
  }

  const Compare& compare() const { return compare_; }

  /// For tests: true if every level holds its nodes in order.
  bool Ordered() const {
    for (int level = 0; level < kMaxHeight; ++level) {
      Node* x = head_->Next(level);
      for (Node* next = x != nullptr ? x->Next(level) : nullptr; next != nullptr;
           x = next, next = x->Next(level)) {
        if (compare_(next->Entry(), compare_.Decode(x->Entry())) <= 0) return false;
      }
    }
    return true;
  }

 private:
  int MaxHeight() const { return max_height_.load(std::memory_order_relaxed); }

  /// True if `key` comes after node `n`'s entry (null: the end, after everything).
  bool After(const Key& key, Node* n) const {
    return n != nullptr && compare_(n->Entry(), key) < 0;
  }

  /// True if node `n`'s entry (null: none) equals `key`.
  bool Equal(const Key& key, Node* n) const {
    return n != nullptr && compare_(n->Entry(), key) == 0;
  }

  /// The last node before `key` on `level` from `start` (before `key`, on that level), and the
  /// one after it; `bigger` (null, or a node known to be >= key) is not compared again.
  void FindSpliceAt(const Key& key, int level, Node* start, Node* bigger, Node** prev,
                    Node** next) const {
    Node* x = start;
    Node* n = x->Next(level);
    while (true) {
      // Where the search goes down if this level's ends at x, brought in while `n` is compared:
      // the two cache misses overlap instead of coming one after the other.
      if (level > 0) __builtin_prefetch(x->Next(level - 1));
      if (n == bigger || !After(key, n)) break;
      x = n;
      n = x->Next(level);
    }
    *prev = x;
    *next = n;
  }

  /// The splice of `key` on every level below `top`, searching down from `start` (before `key`
  /// on level top - 1), with `bigger` as above.
  void FindSplice(const Key& key, int top, Node* start, Node* bigger, Node** prev,
                  Node** next) const {
    for (int level = top - 1; level >= 0; --level) {
      FindSpliceAt(key, level, level == top - 1 ? start : prev[level + 1], bigger, &prev[level],
                   &next[level]);
      bigger = next[level];
    }
  }

  const Compare compare_;
  std::array<std::atomic<Node*>, kMaxHeight> head_links_{};
  Node* head_ = nullptr;
  std::atomic<int> max_height_{1};
  /// For inserts made alone: per level, the last node before the last such insert's key (that
  /// node itself on its levels), and that node; null when there was none since a concurrent
  /// insert (RocksDB orders those groups of inserts before and after each other).
  std::array<Node*, kMaxHeight> finger_{};
  std::atomic<Node*> finger_node_{nullptr};
};

}  // namespace kvmesh::storage
