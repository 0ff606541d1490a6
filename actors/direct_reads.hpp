// Direct reads: the embedded API's Get, and the client gateway's plain gets, read a running
// database's store on the caller's thread (the gateway shard's) instead of asking its actor (two
// or more thread wake-ups saved per read), when that gives what the actor would.
// bootstrap/node.cpp and actors/client_gateway.cpp decide when a read may go this way: the
// handle's or route's actor runs on this node and still serves, and no earlier request of the
// handle, or of the gateway shard's route to that database, is in flight. On a clustered node too:
// a local copy answers a plain (eventual) get from its store whatever its state (catching up,
// being handed over), as its actor would; a copy that is dropped retires its target first
// (DirectReadTarget::Retire), so no read finds it half deleted, and its route re-opens the
// database on a replica that holds it. A change made of many writes (a drop, a restore) pauses
// direct reads meanwhile (DirectReadTarget::Pause): they wait behind it in the actor's mailbox,
// as gets sent to the actor do. Reads at a read level always go to the actor.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "messages/type_ids.hpp"
#include "storage/database_store.hpp"

namespace kvmesh {

/// What a running database actor shares with readers on other threads.
struct DirectReadTarget {
  explicit DirectReadTarget(std::shared_ptr<storage::DatabaseStore> s) : store(std::move(s)) {}

  /// The actor's store. DatabaseStore::Get reads only RocksDB (thread-safe) and fields fixed when
  /// the store is opened, so it may run on any thread while the actor uses the store.
  const std::shared_ptr<storage::DatabaseStore> store;
  /// Set when the actor stops serving (passivated, stopped, dropped): readers then take the actor
  /// path, which re-opens the database and picks up the new actor's target.
  std::atomic<bool> retired{false};
  /// Set by direct reads, cleared by the actor's idle check: a direct read counts as use.
  std::atomic<bool> used{false};

  void MarkUsed() {
    // Mostly read only: the cache line stays shared between readers.
    if (!used.load(std::memory_order_relaxed)) used.store(true, std::memory_order_relaxed);
  }

  /// Runs `read(*store)` unless the actor retired the target or paused its direct reads; false
  /// then (take the actor path). A reader registers, then checks the flags; Retire and Pause set
  /// theirs, then wait for the registered readers: all sequentially consistent, so a read runs
  /// wholly before they return or not at all.
  template <class Read>
  bool TryRead(Read&& read) {
    readers_.fetch_add(1);
    const bool serving = !retired.load() && !paused_.load();
    if (serving) read(static_cast<const storage::DatabaseStore&>(*store));
    readers_.fetch_sub(1);
    return serving;
  }

  /// Ends direct reads: readers from now on take the actor path, and it returns once every read
  /// in progress has ended (within microseconds: a read is a RocksDB lookup). Before the store's
  /// data goes (a copy handed over to the new replicas and dropped): no reader may find it half
  /// deleted. Not from inside a read (it would wait for itself).
  void Retire() {
    retired.store(true);
    WaitForReaders();
  }

  /// Sends readers to the actor path (behind the change, in its mailbox) while the actor makes a
  /// change of several writes that no reader may see half done (a restore: every key deleted,
  /// then the backup's written back), once the reads in progress have ended; Resume ends it.
  void Pause() {
    paused_.store(true);
    WaitForReaders();
  }
  void Resume() { paused_.store(false); }

  /// Pause for the life of the scope (no target: nothing).
  class PauseScope {
   public:
    explicit PauseScope(DirectReadTarget* target) : target_(target) {
      if (target_) target_->Pause();
    }
    ~PauseScope() {
      if (target_) target_->Resume();
    }
    PauseScope(const PauseScope&) = delete;
    PauseScope& operator=(const PauseScope&) = delete;

   private:
    DirectReadTarget* target_;
  };

 private:
  void WaitForReaders() const {
    while (readers_.load() != 0) std::this_thread::yield();
  }

  std::atomic<bool> paused_{false};
  /// On a line of its own: every direct read of the database changes it, and `retired` and
  /// `used`, which readers only read (mostly), stay shared.
  alignas(64) std::atomic<uint64_t> readers_{0};
};

/// The targets of a node's running database actors, by actor id. Thread-safe.
class DirectReads {
 public:
  void Add(uint64_t actor_id, std::shared_ptr<DirectReadTarget> target) {
    std::lock_guard<std::mutex> lock(mutex_);
    targets_[actor_id] = std::move(target);
  }
  void Remove(uint64_t actor_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    targets_.erase(actor_id);
  }
  /// The target of the running actor `actor_id`, or null.
  std::shared_ptr<DirectReadTarget> Find(uint64_t actor_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = targets_.find(actor_id);
    return it == targets_.end() ? nullptr : it->second;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<DirectReadTarget>> targets_;
};

/// Reads several keys of `store` for one message of gets (the database actor's, or a direct
/// read's): answered in order until the values pass kMaxGetsReplyBytes; the keys after the last
/// answered one are the asker's to send alone (GetManyReply), and are not read. The first is
/// always answered, so every reply makes progress.
inline GetManyReply ReadMany(const storage::DatabaseStore& store,
                             const std::vector<std::string_view>& keys) {
  std::vector<Status> statuses;
  std::vector<std::string> values;
  const size_t answered = store.GetMany(keys, kMaxGetsReplyBytes, &statuses, &values);
  GetManyReply reply;
  reply.errors.reserve(answered);
  reply.values.reserve(answered);
  for (size_t i = 0; i < answered; ++i) {
    reply.errors.push_back(statuses[i].ok() ? caf::error{} : ToError(statuses[i]));
    reply.values.push_back(std::move(values[i]));
  }
  return reply;
}

/// Where direct readers and the node's shutdown meet. Direct reads take no lock the shutdown
/// takes: a steady stream of them (shared holders, back to back on several threads) would starve
/// it. A reader registers (DirectReadScope), then checks `closing`; the shutdown sets `closing`
/// (Close), then waits for the readers to drain (WaitForReaders) before closing RocksDB. Both
/// sequentially consistent, so one of them sees the other. One per node, shared by its embedded
/// handles, its gateway shards and its watchdog.
class DirectReadGate {
 public:
  /// The node is stopping: readers from now on take the actor path or answer unavailable.
  void Close() { closing_.store(true); }
  bool closing() const { return closing_.load(); }
  /// Returns once every reader that entered before Close has left (within microseconds: a read
  /// is one RocksDB lookup).
  void WaitForReaders() const {
    for (const Shard& shard : shards_) {
      while (shard.readers.load() != 0) std::this_thread::yield();
    }
  }

 private:
  friend class DirectReadScope;
  /// Readers count themselves in their thread's shard: one counter every direct read of every
  /// database changed was a cache line all the node's cores took turns at. (A reader stays in
  /// the shard it entered; a shard is zero once all its readers left.)
  static constexpr size_t kShards = 16;
  struct alignas(64) Shard {
    std::atomic<uint64_t> readers{0};
  };
  std::atomic<uint64_t>& ReadersOfThisThread() {
    static std::atomic<size_t> next{0};
    thread_local const size_t index = next.fetch_add(1, std::memory_order_relaxed) % kShards;
    return shards_[index].readers;
  }
  std::atomic<bool> closing_{false};
  std::array<Shard, kShards> shards_{};
};

/// A direct read in progress (see DirectReadGate).
class DirectReadScope {
 public:
  explicit DirectReadScope(DirectReadGate& gate) : readers_(gate.ReadersOfThisThread()) {
    readers_.fetch_add(1);
    open_ = !gate.closing_.load();
  }
  ~DirectReadScope() { readers_.fetch_sub(1); }
  DirectReadScope(const DirectReadScope&) = delete;
  DirectReadScope& operator=(const DirectReadScope&) = delete;
  /// False once the node is stopping: the store may be closed before the read ends.
  bool node_open() const { return open_; }

 private:
  std::atomic<uint64_t>& readers_;
  bool open_ = false;
};

}  // namespace kvmesh
