// DatabaseBackend: what a kvmesh::Database handle talks to. One implementation serves a node in
// this process (bootstrap/node.cpp), one a node over the network (client/client.cpp). What both
// share lives in the handle (common/database.cpp): the unusable-handle rule, paging, futures made
// from callbacks and the blocking calls made from those. Internal: not installed.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "kvmesh/database.hpp"

namespace kvmesh {

class DatabaseBackend {
 public:
  using StatusCallback = Database::StatusCallback;
  template <class T>
  using ResultCallback = Database::ResultCallback<T>;

  virtual ~DatabaseBackend() = default;

  /// A usable handle served by `backend` for the database at `path` (normalised).
  static Database MakeHandle(std::shared_ptr<DatabaseBackend> backend, std::string path);
  /// An unusable handle: every call answers `why` (not OK).
  static Database MakeUnusable(Status why, std::string path);

  // -- Asynchronous requests. `done` runs exactly once, on a thread as Database documents; the
  // backend keeps the handle's ordering guarantee and answers kUnavailable when it is stopped.
  virtual void PutAsync(std::string key, std::string value, StatusCallback done) = 0;
  virtual void GetAsync(std::string key, ResultCallback<std::string> done) = 0;
  virtual void EraseAsync(std::string key, StatusCallback done) = 0;
  virtual void WriteAsync(WriteBatch batch, StatusCallback done) = 0;
  virtual void ListAsync(ListOptions options, ResultCallback<ListPage> done) = 0;
  virtual void StatsAsync(ResultCallback<DatabaseStats> done) = 0;
  virtual void ReplicationAsync(ResultCallback<ReplicationStatus> done) = 0;
  /// One pull of a watch (WatchRequest): answered at once with changes, or after up to its
  /// wait with none. Database::watch pulls again and again.
  virtual void WatchAsync(WatchRequest request, ResultCallback<WatchUpdate> done) = 0;
  /// A get at a read level other than eventual (README "Read levels").
  virtual void ReadAsync(ReadRequest request, ResultCallback<VersionedValue> done) = 0;
  /// A write of a handle with a session: answered with the write's dot (SessionToken text).
  virtual void SessionWriteAsync(WriteBatch batch, ResultCallback<std::string> done) = 0;

  // -- Blocking requests. The defaults wait on the calling thread for the asynchronous form, at
  // most MaxWait(); a backend overrides one where answering on the caller's thread is faster.
  virtual Status Put(std::string_view key, std::string_view value);
  virtual Result<std::string> Get(std::string_view key);
  virtual Status Erase(std::string_view key);
  virtual Status Write(const WriteBatch& batch);
  /// The same, taking the batch over (no copy of its keys and values).
  virtual Status Write(WriteBatch&& batch);
  virtual Result<kvmesh::ListPage> List(const ListOptions& options);
  virtual Result<DatabaseStats> Stats();
  virtual Result<kvmesh::ReplicationStatus> Replication();
  virtual Result<VersionedValue> Read(const ReadRequest& request);
  virtual Result<std::string> SessionWrite(const WriteBatch& batch);
  /// One pull of a watch, waiting on the calling thread (not overridden: watches are rare).
  Result<WatchUpdate> PullWatch(const WatchRequest& request);

  /// True once this backend can never answer again (an embedded node that stopped: a node that
  /// starts again is a new one). A watch retries `unavailable` from its position only while this
  /// is false; otherwise it would retry for ever.
  virtual bool Closed() const { return false; }

 protected:
  /// How long a default blocking call waits before it answers kTimeout. Every request has its
  /// own deadline, so the answer comes before this unless it cannot (a blocking call made from a
  /// callback that holds the thread the answer needs).
  virtual std::chrono::nanoseconds MaxWait() const = 0;
};

}  // namespace kvmesh
