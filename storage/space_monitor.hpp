// SpaceMonitor: the node's low-space state (like etcd's NOSPACE alarm), internal to storage/.
//
// A thread checks the free space of the data dir's file system (statvfs, cheap) every
// check_interval, and at once when RocksDB reports a background error. Below the threshold
// (SpaceOptions::low_bytes or low_percent of the file system, whichever is larger) the node is
// low on space: writes that add data (puts, batches holding a put, replicated deltas holding a
// value) are refused with Code::kNoSpace, while deletes, drops and RocksDB's flushes and
// compactions go on in the space left below the threshold. Once enough is free again (a quarter
// above the threshold, so the state does not flap) puts are accepted again. Entering and leaving
// are logged with the figures.
//
// Disk space taken by something else can still fill the disk completely. For that the node
// keeps a reserve file in the data dir (SpaceOptions::reserve_bytes) and deletes it when free
// space falls below its size, so that deletes and RocksDB's recovery still find room; it is
// made again once space is back. Until twice its size is free the disk is critically full:
// RocksDB's automatic compactions stop (a compaction needs room for its output before it frees
// its input, and would take the room deletes need), so the room goes to the write-ahead log.
// Only the monitor's own flush and compaction after deletes run then (see below): when the
// node's own data filled the disk they are the only way out.
//
// A compaction of RocksDB's own can need room for its whole input, more than the threshold keeps:
// through RocksDB's SstFileManager one starts only if its input plus half the threshold fits in
// what is free (otherwise it waits and is tried again). A write-ahead log write that fails for lack
// of space is what must not happen: RocksDB 7.8 cannot write to that log again
// (facebook/rocksdb#12448). RocksDB stops all writes after it failed to write for lack of space (a
// "hard" background error) and on its own retries only every few seconds; the monitor switches that
// off and calls DB::Resume() itself as soon as there is room, within one check.
//
// While low, the space a delete frees is held by RocksDB's write-ahead log and older files until
// the memtable is flushed and the files compacted: after deletes or drops the monitor does both
// (on a thread of its own, at most once a second). Its compaction mostly drops what deletes
// replaced, so it is not held to the input-size rule above: it is watched instead (free space read
// every 10 ms) and stopped if only a quarter of the threshold is left (then tried again a second
// later while the node is low). The memtable is kept to a quarter of low_bytes (at most RocksDB's
// usual 64 MiB, see RocksOptions), so a flush always fits in the room the state keeps.
//
// Writes that add data also trigger a check (on the writer's thread, a statvfs call) every
// sixteenth of the threshold they write, so a fast writer cannot run far past it between checks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kvmesh/status.hpp"

namespace rocksdb {
class DB;
class EventListener;
class SstFileManager;
}  // namespace rocksdb

namespace kvmesh::storage {

/// Thresholds of the low-space state (see above and NodeOptions, which documents the defaults
/// users see).
struct SpaceOptions {
  /// Low on space below this many free bytes (or below low_percent, if that is more). Default
  /// 256 MiB: room for flushes of the memtables (64 MiB each) and the compactions of the deletes
  /// that free space.
  uint64_t low_bytes = 256u << 20;
  /// Low on space below this percentage of the file system's size (or below low_bytes, if that
  /// is more). Default 1.
  double low_percent = 1.0;
  /// Size of the reserve file kept in the data dir for a disk filled by something else; 0: none.
  /// Default 64 MiB.
  uint64_t reserve_bytes = 64u << 20;
  /// How often free space is checked. Default 250 ms.
  std::chrono::milliseconds check_interval{250};
};

/// What the monitor saw at its last check.
struct SpaceStatus {
  bool low = false;
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
  /// Low below this.
  uint64_t threshold_bytes = 0;
};

class SpaceMonitor {
 public:
  /// Watches the file system of `dir` (the data dir). Does nothing until Start.
  SpaceMonitor(std::string dir, SpaceOptions options);
  ~SpaceMonitor();
  SpaceMonitor(const SpaceMonitor&) = delete;
  SpaceMonitor& operator=(const SpaceMonitor&) = delete;

  /// The reserve file's path.
  std::string reserve_path() const;
  /// Deletes the reserve file if free space is below its size: before RocksDB opens, since
  /// replaying its log needs room.
  void ReleaseReserveIfTight();
  /// A listener to add to the RocksDB options: notes background errors, and turns RocksDB's own
  /// slow recovery from a full disk off (the monitor resumes).
  std::shared_ptr<rocksdb::EventListener> listener();
  /// The SstFileManager to set in the RocksDB options: the monitor keeps RocksDB's compactions
  /// from starting when their input would not fit above half the threshold.
  std::shared_ptr<rocksdb::SstFileManager> sst_file_manager() const;

  /// Checks once, then starts the thread. `db` must outlive Stop(); `node_id` names the node in
  /// logs and errors.
  void Start(rocksdb::DB* db, uint64_t node_id);
  /// Stops the thread (before RocksDB closes).
  void Stop();

  /// OK, or kNoSpace saying the node is low on space (for writes that add data).
  Status CheckRoomForData() const;
  bool low() const { return low_.load(std::memory_order_relaxed); }
  SpaceStatus status() const;

  /// A delete, drop or tombstone collection was written: worth a flush while low.
  void NoteFreeingWrite() { freeing_writes_.fetch_add(1, std::memory_order_relaxed); }
  /// A write added about `bytes`: checks at once every sixteenth of the threshold.
  void NoteDataWritten(uint64_t bytes);
  /// RocksDB reported a background error (it may have stopped writes): check now.
  void NoteBackgroundError();

 private:
  class Listener;
  void Run();
  /// One check: free space, state changes, releasing the reserve; with `full` (the monitor
  /// thread only) also flush and compaction, resume and making the reserve.
  void Check(bool full);
  /// The state from `free_bytes` (check_mutex_ held).
  void UpdateState(uint64_t free_bytes, uint64_t total);
  /// Flushes and compacts on maintenance_ (monitor thread).
  void StartMaintenance();
  bool ReadSpace(uint64_t* free_bytes, uint64_t* total_bytes) const;
  void Wake();

  const std::string dir_;
  const SpaceOptions options_;
  const std::shared_ptr<rocksdb::SstFileManager> sst_files_;
  uint64_t node_id_ = 0;
  rocksdb::DB* db_ = nullptr;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool wake_ = false;

  std::atomic<bool> low_{false};
  std::atomic<uint64_t> free_bytes_{0};
  std::atomic<uint64_t> total_bytes_{0};
  std::atomic<uint64_t> threshold_bytes_{0};
  std::atomic<uint64_t> leave_bytes_{0};
  std::atomic<uint64_t> freeing_writes_{0};
  /// Set by the listener; cleared once DB::Resume() succeeded.
  std::atomic<bool> background_error_{false};
  std::atomic<uint64_t> written_since_check_{0};
  /// Serialises checks (monitor thread and writers).
  std::mutex check_mutex_;
  std::thread maintenance_;
  std::atomic<bool> maintenance_running_{false};
  /// The reserve was given up for lack of space: compactions are off until space is back.
  std::atomic<bool> critical_{false};
  /// DisableManualCompaction() was called for a running maintenance; it enables them again.
  std::atomic<bool> manual_paused_{false};

  // Under check_mutex_.
  bool reserve_present_ = false;
  /// Set when the reserve was just released (the critical state starts).
  bool reserve_released_ = false;
  uint64_t freeing_writes_flushed_ = 0;
  /// The monitor's last compaction was stopped for lack of room: tried again (once a second).
  bool compaction_stopped_ = false;
  std::chrono::steady_clock::time_point last_flush_{};
  std::chrono::steady_clock::time_point last_resume_{};
  uint64_t free_at_last_resume_ = 0;
  bool warned_unreadable_ = false;
  /// The reserve could not be made (no fallocate, or no room): not tried again.
  bool reserve_failed_ = false;
};

}  // namespace kvmesh::storage
