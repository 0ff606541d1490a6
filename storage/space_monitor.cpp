#include "storage/space_monitor.hpp"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/listener.h>
#include <rocksdb/sst_file_manager.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/path.hpp"

namespace kvmesh::storage {
namespace {

/// The reserve file, next to RocksDB's files (RocksDB ignores names it does not know).
constexpr const char* kReserveName = "kvmesh-space-reserve";
/// Flushes (while low) and resume attempts (while the disk stays full) at most this often.
constexpr auto kRetryPeriod = std::chrono::seconds(1);
/// How often free space is read while the monitor's own compaction runs: it is stopped before it
/// takes the room deletes need, and a compaction can write tens of MiB in a default interval.
constexpr auto kMaintenanceCheck = std::chrono::milliseconds(10);

}  // namespace

class SpaceMonitor::Listener : public rocksdb::EventListener {
 public:
  explicit Listener(SpaceMonitor* monitor) : monitor_(monitor) {}

  void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* error) override {
    if (error != nullptr && !error->ok()) monitor_->NoteBackgroundError();
  }

  // RocksDB's own recovery from a full disk polls every few seconds (writes fail meanwhile);
  // the monitor calls DB::Resume() as soon as there is room instead.
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status error,
                            bool* auto_recovery) override {
    if (error.IsNoSpace() && auto_recovery != nullptr) *auto_recovery = false;
    error.PermitUncheckedError();
  }

 private:
  SpaceMonitor* monitor_;
};

SpaceMonitor::SpaceMonitor(std::string dir, SpaceOptions options)
    : dir_(std::move(dir)),
      options_(options),
      sst_files_(rocksdb::NewSstFileManager(rocksdb::Env::Default())) {}

SpaceMonitor::~SpaceMonitor() {
  Stop();
}

std::string SpaceMonitor::reserve_path() const {
  return dir_ + "/" + kReserveName;
}

std::shared_ptr<rocksdb::EventListener> SpaceMonitor::listener() {
  return std::make_shared<Listener>(this);
}

std::shared_ptr<rocksdb::SstFileManager> SpaceMonitor::sst_file_manager() const {
  return sst_files_;
}

bool SpaceMonitor::ReadSpace(uint64_t* free_bytes, uint64_t* total_bytes) const {
  struct statvfs st {};
  if (::statvfs(dir_.c_str(), &st) != 0) return false;
  // f_bavail: what an unprivileged process may still use (root's reserved blocks excluded).
  *free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  *total_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
  return true;
}

void SpaceMonitor::ReleaseReserveIfTight() {
  uint64_t free_bytes = 0, total = 0;
  if (!ReadSpace(&free_bytes, &total)) return;
  if (free_bytes < options_.reserve_bytes || options_.reserve_bytes == 0) {
    if (::unlink(reserve_path().c_str()) == 0) {
      spdlog::warn("deleted the disk space reserve {} ({} free in {}) so that the store can open",
                   Quote(reserve_path()), FormatSize(free_bytes), Quote(dir_));
    }
  }
}

void SpaceMonitor::Start(rocksdb::DB* db, uint64_t node_id) {
  db_ = db;
  node_id_ = node_id;
  struct stat st {};
  if (::stat(reserve_path().c_str(), &st) == 0) {
    // A reserve of another size (the option changed) is made again at the new size.
    if (static_cast<uint64_t>(st.st_size) == options_.reserve_bytes) {
      reserve_present_ = true;
    } else {
      ::unlink(reserve_path().c_str());
    }
  }
  Check(/*full=*/true);
  thread_ = std::thread([this] { Run(); });
}

void SpaceMonitor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (maintenance_.joinable()) {
    // A manual compaction in progress stops early.
    db_->DisableManualCompaction();
    maintenance_.join();
    db_->EnableManualCompaction();
  }
}

void SpaceMonitor::Wake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_ = true;
  }
  cv_.notify_all();
}

void SpaceMonitor::NoteBackgroundError() {
  background_error_.store(true);
  Wake();
}

void SpaceMonitor::NoteDataWritten(uint64_t bytes) {
  const uint64_t quantum = std::max<uint64_t>(threshold_bytes_.load() / 16, 64u << 10);
  if (written_since_check_.fetch_add(bytes) + bytes < quantum) return;
  // A check in progress (the monitor's) will do.
  std::unique_lock<std::mutex> lock(check_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  lock.unlock();
  Check(/*full=*/false);
}

void SpaceMonitor::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    const auto interval =
        maintenance_running_.load()
            ? std::min<std::chrono::milliseconds>(options_.check_interval, kMaintenanceCheck)
            : options_.check_interval;
    cv_.wait_for(lock, interval, [this] { return stop_ || wake_; });
    if (stop_) break;
    wake_ = false;
    lock.unlock();
    Check(/*full=*/true);
    lock.lock();
  }
}

SpaceStatus SpaceMonitor::status() const {
  SpaceStatus s;
  s.low = low_.load();
  s.free_bytes = free_bytes_.load();
  s.total_bytes = total_bytes_.load();
  s.threshold_bytes = threshold_bytes_.load();
  return s;
}

Status SpaceMonitor::CheckRoomForData() const {
  if (!low_.load(std::memory_order_relaxed)) return Status::OK();
  return Status::NoSpace("node " + FormatNodeId(node_id_) + " is low on disk space: " +
                         FormatSize(free_bytes_.load()) + " free in " + Quote(dir_) +
                         " (writes that add data resume at " + FormatSize(leave_bytes_.load()) +
                         " free); deletes still work. Nothing was written");
}

void SpaceMonitor::UpdateState(uint64_t free_bytes, uint64_t total) {
  const uint64_t threshold = std::max<uint64_t>(
      options_.low_bytes,
      static_cast<uint64_t>(static_cast<double>(total) * options_.low_percent / 100.0));
  const uint64_t leave = threshold + threshold / 4;
  threshold_bytes_.store(threshold);
  leave_bytes_.store(leave);
  free_bytes_.store(free_bytes);
  total_bytes_.store(total);
  const bool was_low = low_.load();
  if (!was_low && free_bytes < threshold) {
    low_.store(true);
    spdlog::warn(
        "node {} is low on disk space: {} free of {} in {}, below the threshold of {}: puts are "
        "refused until {} are free; deletes, drops and compaction go on",
        FormatNodeId(node_id_), FormatSize(free_bytes), FormatSize(total), Quote(dir_),
        FormatSize(threshold), FormatSize(leave));
  } else if (was_low && free_bytes >= leave) {
    low_.store(false);
    spdlog::info("node {} has disk space again: {} free of {} in {}; puts are accepted again",
                 FormatNodeId(node_id_), FormatSize(free_bytes), FormatSize(total), Quote(dir_));
  }
}

void SpaceMonitor::StartMaintenance() {
  if (maintenance_running_.load()) return;
  if (maintenance_.joinable()) maintenance_.join();
  // Paused after the last one had ended.
  if (manual_paused_.exchange(false)) db_->EnableManualCompaction();
  maintenance_running_.store(true);
  maintenance_ = std::thread([this] {
    // A flush that does not fit would stop RocksDB's writes (a hard error): only when the
    // memtables fit in what is free.
    uint64_t memtables = 0;
    if (db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &memtables) &&
        memtables < free_bytes_.load()) {
      rocksdb::FlushOptions flush;
      flush.allow_write_stall = true;
      rocksdb::Status rs = db_->Flush(flush);
      if (!rs.ok()) spdlog::debug("flush while low on space failed: {}", rs.ToString());
    }
    // Drops the records deletes replaced from the files on disk. Lack of room here is a soft
    // error for RocksDB: writes go on. Not held to the SstFileManager's input-size rule (see
    // Check): watched instead. After the flush, whose compactions were checked as usual; the
    // compaction is exclusive (CompactRangeOptions' default), so none of RocksDB's starts while
    // it runs. Check sets the rule again once it has ended.
    sst_files_->SetMaxAllowedSpaceUsage(0);
    rocksdb::CompactRangeOptions compact;
    compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    rocksdb::Status rs = db_->CompactRange(compact, nullptr, nullptr);
    if (!rs.ok()) spdlog::debug("compaction while low on space failed: {}", rs.ToString());
    maintenance_running_.store(false);
    // Manual compactions were paused when the disk became critically full during this one.
    if (manual_paused_.exchange(false)) db_->EnableManualCompaction();
    Wake();
  });
}

void SpaceMonitor::Check(bool full) {
  std::unique_lock<std::mutex> lock(check_mutex_);
  written_since_check_.store(0);
  uint64_t free_bytes = 0, total = 0;
  if (!ReadSpace(&free_bytes, &total)) {
    if (!warned_unreadable_) {
      spdlog::warn("cannot read the free space of {}: {}; the low-space state is not checked",
                   Quote(dir_), std::strerror(errno));
      warned_unreadable_ = true;
    }
    return;
  }
  // The disk filled up past the reserve: give its room to deletes and RocksDB's recovery.
  if (reserve_present_ && free_bytes < options_.reserve_bytes) {
    if (::unlink(reserve_path().c_str()) == 0 || errno == ENOENT) {
      reserve_present_ = false;
      reserve_released_ = true;
      spdlog::warn(
          "node {}: the disk of {} is nearly full ({} free); deleted the {} space reserve so that "
          "deletes can still be written",
          FormatNodeId(node_id_), Quote(dir_), FormatSize(free_bytes),
          FormatSize(options_.reserve_bytes));
      ReadSpace(&free_bytes, &total);
    }
  }
  UpdateState(free_bytes, total);
  if (!full) return;

  // The room below the threshold is kept for deletes and flushes. RocksDB's own compactions may
  // need room for their whole input (a compaction writes its output before it deletes its
  // input), which can be more than that room: the SstFileManager does not start one unless its
  // input plus half the threshold fits in what is free (checked just before the compaction
  // starts; one that does not fit waits and is tried again). It expresses that as a cap on the
  // total size of the files: the cap is set `slack` (the file system's size) above what the check
  // needs so that its other use, failing flushes and compactions whose files reach the cap, never
  // triggers (the files cannot grow by more than the file system holds).
  const uint64_t threshold = threshold_bytes_.load();
  const uint64_t kept_room = threshold / 2;
  const uint64_t slack = total;
  if (!maintenance_running_.load()) {
    sst_files_->SetCompactionBufferSize(kept_room + slack);
    sst_files_->SetMaxAllowedSpaceUsage(sst_files_->GetTotalSize() + free_bytes + slack);
  } else if (free_bytes < threshold / 4 && !manual_paused_.exchange(true)) {
    // The monitor's own compaction (see below) took the room flushes and deletes need: stopped
    // (RocksDB deletes what it wrote); tried again after more deletes.
    db_->DisableManualCompaction();
    compaction_stopped_ = true;
    spdlog::info("node {}: stopped a compaction that left only {} free in {}",
                 FormatNodeId(node_id_), FormatSize(free_bytes), Quote(dir_));
  }

  // Critically full: stop compactions (RocksDB's and the monitor's) until there is room again.
  // It starts when the reserve goes and ends once twice its size is free again (room for the
  // compactions that free what deletes left; waiting for the end of the low state instead could
  // wait for ever, since the compactions are what ends it).
  const bool critical =
      reserve_released_ || (critical_.load() && free_bytes < 2 * options_.reserve_bytes);
  reserve_released_ = false;
  if (critical != critical_.load()) {
    critical_.store(critical);
    if (critical && maintenance_running_.load() && !manual_paused_.exchange(true)) {
      db_->DisableManualCompaction();
    }
    rocksdb::Status rs =
        db_->SetOptions({{"disable_auto_compactions", critical ? "true" : "false"}});
    if (!rs.ok()) spdlog::warn("cannot switch compactions: {}", rs.ToString());
    if (critical) {
      spdlog::warn("node {}: compactions stop while the disk of {} is critically full",
                   FormatNodeId(node_id_), Quote(dir_));
    } else {
      spdlog::info("node {}: compactions go on again ({} free in {})", FormatNodeId(node_id_),
                   FormatSize(free_bytes), Quote(dir_));
    }
  }

  const auto now = std::chrono::steady_clock::now();
  // What deletes free stays in RocksDB's log and older files until a flush and a compaction.
  // Also while critically full: the compaction is the only way out of it when the node's own data
  // filled the disk. Its input is what deletes replaced, so its output is usually far smaller
  // than its input: it runs without the SstFileManager's worst-case estimate, watched every
  // kMaintenanceCheck and stopped when a quarter of the threshold is left (see above).
  const uint64_t freeing = freeing_writes_.load();
  if (low_.load() && (freeing != freeing_writes_flushed_ || compaction_stopped_) &&
      now - last_flush_ >= kRetryPeriod && !background_error_.load() &&
      !maintenance_running_.load() && free_bytes >= threshold / 4) {
    freeing_writes_flushed_ = freeing;
    compaction_stopped_ = false;
    last_flush_ = now;
    StartMaintenance();
  }

  // RocksDB stopped writing after a failure (a full disk): resume as soon as there is room, and
  // retry while the disk stays full (at most once a second unless space grew). Not with less free
  // than the reserve: resuming flushes the memtable and starts a new write-ahead log, and without
  // room for both the next delete would fail in a way RocksDB 7.8 cannot resume from.
  if (background_error_.load() &&
      free_bytes >= std::min(options_.reserve_bytes, leave_bytes_.load()) &&
      (free_bytes > free_at_last_resume_ || now - last_resume_ >= kRetryPeriod)) {
    last_resume_ = now;
    free_at_last_resume_ = free_bytes;
    rocksdb::Status rs = db_->Resume();
    if (rs.ok()) {
      background_error_.store(false);
      spdlog::info("node {}: the store writes again after a write error ({} free in {})",
                   FormatNodeId(node_id_), FormatSize(free_bytes), Quote(dir_));
    } else {
      spdlog::debug("node {}: the store cannot resume writing yet: {}", FormatNodeId(node_id_),
                    rs.ToString());
    }
  }

  // Space is back: make the reserve again, leaving enough free that it does not set the state
  // or its own release off.
  if (!reserve_present_ && !reserve_failed_ && options_.reserve_bytes > 0 && !low_.load() &&
      free_bytes >= leave_bytes_.load() + 2 * options_.reserve_bytes) {
    const std::string path = reserve_path();
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(options_.reserve_bytes));
      ::close(fd);
      if (err == 0) {
        reserve_present_ = true;
      } else {
        ::unlink(path.c_str());
        reserve_failed_ = true;
        spdlog::warn("cannot make the disk space reserve {}: {}", Quote(path), std::strerror(err));
      }
    }
  }
}

}  // namespace kvmesh::storage
