#include "kvmesh/database.hpp"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <optional>
#include <utility>

#include "common/database_backend.hpp"
#include "common/path.hpp"
#include "common/read_levels.hpp"

namespace kvmesh {

namespace {

/// A future that is already satisfied (calls on an unusable handle).
template <class T>
std::future<T> Ready(T value) {
  std::promise<T> promise;
  promise.set_value(std::move(value));
  return promise.get_future();
}

/// The one place a future is made from a callback: `start` gets the callback that satisfies it.
template <class T, class Start>
std::future<T> FromCallback(Start start) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> future = promise->get_future();
  start([promise](T value) { promise->set_value(std::move(value)); });
  return future;
}

/// Waits at most `bound` for `future`; kTimeout when the answer does not come (see MaxWait).
template <class T>
T WaitAtMost(std::future<T> future, std::chrono::nanoseconds bound) {
  if (future.wait_for(bound) != std::future_status::ready) {
    return Status::Timeout(
        "no answer within " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(bound).count()) +
        " ms; is the call made from a callback (one of kvmesh's threads)?");
  }
  return future.get();
}

}  // namespace

// -- DatabaseBackend ---------------------------------------------------------------------------

Database DatabaseBackend::MakeHandle(std::shared_ptr<DatabaseBackend> backend, std::string path) {
  Database db;
  db.backend_ = std::move(backend);
  db.path_ = std::move(path);
  db.status_ = Status::OK();
  return db;
}

Database DatabaseBackend::MakeUnusable(Status why, std::string path) {
  Database db;
  db.path_ = std::move(path);
  db.status_ = std::move(why);
  return db;
}

Status DatabaseBackend::Put(std::string_view key, std::string_view value) {
  return WaitAtMost(FromCallback<Status>([&](StatusCallback done) {
                      PutAsync(std::string(key), std::string(value), std::move(done));
                    }),
                    MaxWait());
}

Result<std::string> DatabaseBackend::Get(std::string_view key) {
  return WaitAtMost(FromCallback<Result<std::string>>([&](ResultCallback<std::string> done) {
                      GetAsync(std::string(key), std::move(done));
                    }),
                    MaxWait());
}

Status DatabaseBackend::Erase(std::string_view key) {
  return WaitAtMost(FromCallback<Status>([&](StatusCallback done) {
                      EraseAsync(std::string(key), std::move(done));
                    }),
                    MaxWait());
}

Status DatabaseBackend::Write(const WriteBatch& batch) {
  return Write(WriteBatch(batch));
}

Status DatabaseBackend::Write(WriteBatch&& batch) {
  return WaitAtMost(FromCallback<Status>([&](StatusCallback done) {
                      WriteAsync(std::move(batch), std::move(done));
                    }),
                    MaxWait());
}

Result<ListPage> DatabaseBackend::List(const ListOptions& options) {
  return WaitAtMost(
      FromCallback<Result<kvmesh::ListPage>>(
          [&](ResultCallback<kvmesh::ListPage> done) { ListAsync(options, std::move(done)); }),
      MaxWait());
}

Result<DatabaseStats> DatabaseBackend::Stats() {
  return WaitAtMost(FromCallback<Result<DatabaseStats>>(
                        [&](ResultCallback<DatabaseStats> done) { StatsAsync(std::move(done)); }),
                    MaxWait());
}

Result<ReplicationStatus> DatabaseBackend::Replication() {
  return WaitAtMost(FromCallback<Result<kvmesh::ReplicationStatus>>(
                        [&](ResultCallback<kvmesh::ReplicationStatus> done) {
                          ReplicationAsync(std::move(done));
                        }),
                    MaxWait());
}

Result<VersionedValue> DatabaseBackend::Read(const ReadRequest& request) {
  return WaitAtMost(FromCallback<Result<VersionedValue>>([&](ResultCallback<VersionedValue> done) {
                      ReadAsync(request, std::move(done));
                    }),
                    MaxWait());
}

Result<std::string> DatabaseBackend::SessionWrite(const WriteBatch& batch) {
  return WaitAtMost(FromCallback<Result<std::string>>([&](ResultCallback<std::string> done) {
                      SessionWriteAsync(batch, std::move(done));
                    }),
                    MaxWait());
}

Result<WatchUpdate> DatabaseBackend::PullWatch(const WatchRequest& request) {
  return WaitAtMost(FromCallback<Result<WatchUpdate>>([&](ResultCallback<WatchUpdate> done) {
                      WatchAsync(request, std::move(done));
                    }),
                    MaxWait());
}

// -- Watch -------------------------------------------------------------------------------------

// What the watch's thread, its handle and the callbacks of its pulls share. It holds neither
// the backend nor the thread: a pull's callback may hold the last reference, on a node's or the
// client's thread, and must not tear those down there.
struct Watch::Shared {
  mutable std::mutex mutex;
  std::condition_variable cv;
  bool stopped = false;
  bool ended = false;
  /// The answer of the pull in flight, once it came.
  std::optional<Result<WatchUpdate>> answer;
  std::string position;

  /// Waits until an answer comes or the watch is stopped; the answer, or nothing if stopped.
  std::optional<Result<WatchUpdate>> Await() {
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [this] { return stopped || answer.has_value(); });
    if (stopped) return std::nullopt;
    std::optional<Result<WatchUpdate>> out = std::move(answer);
    answer.reset();
    return out;
  }
  /// Waits `pause` unless stopped first; false if stopped.
  bool Pause(std::chrono::milliseconds pause) {
    std::unique_lock<std::mutex> lock(mutex);
    return !cv.wait_for(lock, pause, [this] { return stopped; });
  }
};

void Watch::stop() {
  if (shared_) {
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->stopped = true;
    }
    shared_->cv.notify_all();
  }
  if (thread_.joinable()) {
    // From the callback itself the thread cannot wait for itself: it ends after the callback.
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }
}

std::string Watch::position() const {
  if (!shared_) return "";
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->position;
}

bool Watch::active() const {
  if (!shared_) return false;
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return !shared_->stopped && !shared_->ended;
}

namespace {

/// Errors a watch retries from its position: the node or connection may come back.
bool Transient(const Status& s) {
  return s.code() == Code::kUnavailable || s.code() == Code::kTimeout;
}

}  // namespace

Status Database::watch(const WatchOptions& options, WatchCallback on_update, Watch* out) const {
  out->stop();
  *out = Watch();
  if (!backend_) return status_;
  if (!on_update) return Status::InvalidArgument("watch needs a callback");
  if (options.poll_wait.count() < 0 || options.retry_interval.count() <= 0) {
    return Status::InvalidArgument(
        "watch poll_wait must not be negative and retry_interval must "
        "be positive");
  }
  WatchRequest request;
  request.prefix = options.prefix;
  request.position = options.from;
  request.with_values = options.with_values;
  // The first pull is answered at once: it fixes the start ("now") and checks the arguments.
  request.wait_ms = 0;
  Result<WatchUpdate> first = backend_->PullWatch(request);
  if (!first.ok()) return first.status();
  request.wait_ms = static_cast<uint32_t>(
      std::min<int64_t>(options.poll_wait.count(), std::numeric_limits<uint32_t>::max()));
  auto shared = std::make_shared<Watch::Shared>();
  // Until the callback has the first update's events, the position stays where they start.
  shared->position = first->events.empty() ? first->position : options.from;
  out->shared_ = shared;
  out->thread_ = std::thread([shared, backend = backend_, request, on_update = std::move(on_update),
                              retry = options.retry_interval, next = std::move(first)]() mutable {
    while (true) {
      if (next.ok()) {
        std::string position = next->position;
        // The position moves only once the callback has handled the events before it.
        if (!next->events.empty()) on_update(std::move(next));
        {
          std::lock_guard<std::mutex> lock(shared->mutex);
          shared->position = position;
          if (shared->stopped) return;
        }
        request.position = std::move(position);
      } else if (Transient(next.status()) && !backend->Closed()) {
        if (!shared->Pause(retry)) return;
      } else {
        if (Transient(next.status())) {
          // Whatever the last pull said (dropped, timed out), the reason it ends is this.
          next = Status::Unavailable("the watch ended: its node was stopped (" +
                                     next.status().message() + ")");
        }
        on_update(std::move(next));
        std::lock_guard<std::mutex> lock(shared->mutex);
        shared->ended = true;
        return;
      }
      backend->WatchAsync(request, [shared](Result<WatchUpdate> answer) {
        {
          std::lock_guard<std::mutex> lock(shared->mutex);
          shared->answer.emplace(std::move(answer));
        }
        shared->cv.notify_all();
      });
      std::optional<Result<WatchUpdate>> answer = shared->Await();
      if (!answer) return;
      next = std::move(*answer);
    }
  });
  return Status::OK();
}

// -- Database ----------------------------------------------------------------------------------

/// A session (README "Read levels"): the dots of the writes acknowledged through the handles
/// that share it. Any thread may add to it.
struct Database::Session {
  mutable std::mutex mutex;
  SessionToken token;

  /// Adds the dot a session write was acknowledged with (SessionToken text from the node).
  void Add(const std::string& dot) {
    SessionToken parsed;
    std::string error;
    if (!SessionToken::Parse(dot, &parsed, &error)) return;  // a node's own text: never bad
    std::lock_guard<std::mutex> lock(mutex);
    token.Merge(parsed);
  }
  std::string Text() const {
    std::lock_guard<std::mutex> lock(mutex);
    return token.ToString();
  }
};

Database::Database() : status_(Status::InvalidArgument("database handle is not open")) {}

Database Database::with_session() const {
  Database copy = *this;
  copy.session_ = std::make_shared<Session>();
  return copy;
}

std::string Database::session_token() const {
  return session_ ? session_->Text() : std::string();
}

Status Database::set_session_token(std::string_view token) {
  SessionToken parsed;
  std::string error;
  if (!SessionToken::Parse(token, &parsed, &error)) return Status::InvalidArgument(error);
  if (!session_) session_ = std::make_shared<Session>();
  std::lock_guard<std::mutex> lock(session_->mutex);
  session_->token.Merge(parsed);
  return Status::OK();
}

void Database::WriteThrough(WriteBatch batch, StatusCallback done) const {
  backend_->SessionWriteAsync(
      std::move(batch), [session = session_, done = std::move(done)](Result<std::string> dot) {
        if (dot.ok()) session->Add(*dot);
        done(dot.status());
      });
}

Status Database::put(std::string_view key, std::string_view value) const {
  if (!backend_) return status_;
  if (session_) {
    WriteBatch batch;
    batch.Put(std::string(key), std::string(value));
    return write(batch);
  }
  return backend_->Put(key, value);
}

Result<std::string> Database::get(std::string_view key) const {
  if (!backend_) return status_;
  return backend_->Get(key);
}

namespace {

/// The request of a get at a level; invalid_argument when read_your_writes has no session.
Status MakeReadRequest(std::string_view key, const ReadOptions& options, const std::string* token,
                       ReadRequest* out) {
  if (options.consistency == ReadConsistency::kReadYourWrites && token == nullptr) {
    return Status::InvalidArgument(
        "read level read_your_writes needs a session: use Database::with_session() or "
        "set_session_token()");
  }
  out->key = std::string(key);
  out->consistency = options.consistency;
  if (token != nullptr) out->session_token = *token;
  return Status::OK();
}

}  // namespace

Result<VersionedValue> Database::get_versioned(std::string_view key,
                                               const ReadOptions& options) const {
  if (options.consistency == ReadConsistency::kEventual) return get_versioned(key);
  if (!backend_) return status_;
  const std::string token = session_token();
  ReadRequest request;
  Status s = MakeReadRequest(key, options, session_ ? &token : nullptr, &request);
  if (!s.ok()) return s;
  return backend_->Read(request);
}

Result<std::string> Database::get(std::string_view key, const ReadOptions& options) const {
  if (options.consistency == ReadConsistency::kEventual) return get(key);
  Result<VersionedValue> read = get_versioned(key, options);
  if (!read.ok()) return read.status();
  return std::move(read->value);
}

void Database::get_async(std::string key, ReadOptions options,
                         ResultCallback<std::string> done) const {
  if (options.consistency == ReadConsistency::kEventual) {
    return get_async(std::move(key), std::move(done));
  }
  if (!backend_) return done(status_);
  const std::string token = session_token();
  ReadRequest request;
  Status s = MakeReadRequest(key, options, session_ ? &token : nullptr, &request);
  if (!s.ok()) return done(s);
  backend_->ReadAsync(std::move(request), [done = std::move(done)](Result<VersionedValue> read) {
    if (!read.ok()) return done(read.status());
    done(std::move(read->value));
  });
}

Status Database::erase(std::string_view key) const {
  if (!backend_) return status_;
  if (session_) {
    WriteBatch batch;
    batch.Erase(std::string(key));
    return write(batch);
  }
  return backend_->Erase(key);
}

namespace {

/// The batch a put or erase with `options` becomes: the check the options ask for, then the
/// write. Errors: invalid_argument for options that contradict each other.
Status ConditionalBatch(WriteOp::Kind kind, std::string_view key, std::string_view value,
                        const WriteOptions& options, WriteBatch* batch) {
  if (!options.if_version.empty() && options.if_absent) {
    return Status::InvalidArgument(
        "if_version and if_absent exclude each other; nothing was written");
  }
  if (options.ttl.count() < 0) {
    return Status::InvalidArgument("ttl is negative (" + std::to_string(options.ttl.count()) +
                                   " ms); nothing was written");
  }
  if (kind == WriteOp::Kind::kErase && options.ttl.count() != 0) {
    return Status::InvalidArgument("ttl applies to put only; nothing was erased");
  }
  if (!options.if_version.empty() || options.if_absent) {
    batch->Check(std::string(key), options.if_version);
  }
  if (kind == WriteOp::Kind::kPut) {
    batch->Put(std::string(key), std::string(value), static_cast<uint64_t>(options.ttl.count()));
  } else {
    batch->Erase(std::string(key));
  }
  return Status::OK();
}

bool Plain(const WriteOptions& options) {
  return options.ttl.count() == 0 && options.if_version.empty() && !options.if_absent;
}

}  // namespace

Status Database::put(std::string_view key, std::string_view value,
                     const WriteOptions& options) const {
  if (Plain(options)) return put(key, value);
  WriteBatch batch;
  Status s = ConditionalBatch(WriteOp::Kind::kPut, key, value, options, &batch);
  return s.ok() ? write(batch) : s;
}

Status Database::erase(std::string_view key, const WriteOptions& options) const {
  if (Plain(options)) return erase(key);
  WriteBatch batch;
  Status s = ConditionalBatch(WriteOp::Kind::kErase, key, {}, options, &batch);
  return s.ok() ? write(batch) : s;
}

void Database::put_async(std::string key, std::string value, WriteOptions options,
                         StatusCallback done) const {
  if (Plain(options)) return put_async(std::move(key), std::move(value), std::move(done));
  WriteBatch batch;
  Status s = ConditionalBatch(WriteOp::Kind::kPut, key, value, options, &batch);
  if (!s.ok()) return done(s);
  write_async(std::move(batch), std::move(done));
}

void Database::erase_async(std::string key, WriteOptions options, StatusCallback done) const {
  if (Plain(options)) return erase_async(std::move(key), std::move(done));
  WriteBatch batch;
  Status s = ConditionalBatch(WriteOp::Kind::kErase, key, {}, options, &batch);
  if (!s.ok()) return done(s);
  write_async(std::move(batch), std::move(done));
}

// The one-key page of a list: a list under prefix K reads the key K itself first, so the first
// key of the page is K when it exists. One read path serves versions for get and list alike.
Result<VersionedValue> Database::get_versioned(std::string_view key) const {
  if (!backend_) return status_;
  std::string normal;
  Status s = NormalizeKey(key, &normal);
  if (!s.ok()) return Status(s.code(), s.message() + ": " + Quote(key));
  ListOptions options;
  options.prefix = normal;
  options.limit = 1;
  options.with_values = true;
  options.with_versions = true;
  Result<ListPage> page = backend_->List(options);
  if (!page.ok()) return page.status();
  if (page->keys.empty() || page->keys[0] != normal || page->versions.empty()) {
    return Status::NotFound("key " + Quote(normal) + " not found in database " + Quote(path_));
  }
  VersionedValue out;
  out.value = std::move(page->values[0]);
  out.version = std::move(page->versions[0]);
  return out;
}

Result<std::vector<std::string>> Database::list(std::string_view prefix) const {
  return list(prefix, ReadOptions());
}

Result<std::vector<std::string>> Database::list(std::string_view prefix,
                                                const ReadOptions& read) const {
  std::vector<std::string> keys;
  ListOptions options;
  options.prefix = std::string(prefix);
  options.consistency = read.consistency;
  while (true) {
    Result<ListPage> page = list_page(options);
    if (!page.ok()) return page.status();
    keys.insert(keys.end(), std::make_move_iterator(page->keys.begin()),
                std::make_move_iterator(page->keys.end()));
    if (!page->has_more()) return keys;
    options.start_after = std::move(page->next_token);
  }
}

namespace {

/// `options` with the session token a list at read_your_writes needs; invalid_argument without
/// a session.
Status WithToken(const ListOptions& options, const std::string* token, ListOptions* out) {
  *out = options;
  if (options.consistency != ReadConsistency::kReadYourWrites) return Status::OK();
  if (token == nullptr) {
    return Status::InvalidArgument(
        "read level read_your_writes needs a session: use Database::with_session() or "
        "set_session_token()");
  }
  out->session_token = *token;
  return Status::OK();
}

}  // namespace

Result<ListPage> Database::list_page(const ListOptions& options) const {
  if (!backend_) return status_;
  if (options.consistency == ReadConsistency::kEventual) return backend_->List(options);
  const std::string token = session_token();
  ListOptions with_token;
  Status s = WithToken(options, session_ ? &token : nullptr, &with_token);
  if (!s.ok()) return s;
  return backend_->List(with_token);
}

Batch Database::batch() const {
  return Batch(*this);
}

Status Database::write(const WriteBatch& batch) const {
  if (!backend_) return status_;
  if (session_) {
    Result<std::string> dot = backend_->SessionWrite(batch);
    if (dot.ok()) session_->Add(*dot);
    return dot.status();
  }
  return backend_->Write(batch);
}

Status Database::write(WriteBatch&& batch) const {
  if (!backend_ || session_) return write(static_cast<const WriteBatch&>(batch));
  return backend_->Write(std::move(batch));
}

Result<DatabaseStats> Database::stats() const {
  if (!backend_) return status_;
  return backend_->Stats();
}

Result<ReplicationStatus> Database::replication_status() const {
  if (!backend_) return status_;
  return backend_->Replication();
}

void Database::close() {
  backend_.reset();
  status_ = Status::InvalidArgument("database handle \"" + path_ + "\" was closed");
}

std::future<Status> Database::put_async(std::string key, std::string value) const {
  if (!backend_) return Ready(status_);
  return FromCallback<Status>(
      [&](StatusCallback done) { put_async(std::move(key), std::move(value), std::move(done)); });
}

std::future<Result<std::string>> Database::get_async(std::string key) const {
  if (!backend_) return Ready(Result<std::string>(status_));
  return FromCallback<Result<std::string>>([&](ResultCallback<std::string> done) {
    backend_->GetAsync(std::move(key), std::move(done));
  });
}

std::future<Status> Database::erase_async(std::string key) const {
  if (!backend_) return Ready(status_);
  return FromCallback<Status>(
      [&](StatusCallback done) { erase_async(std::move(key), std::move(done)); });
}

std::future<Status> Database::write_async(WriteBatch batch) const {
  if (!backend_) return Ready(status_);
  return FromCallback<Status>(
      [&](StatusCallback done) { write_async(std::move(batch), std::move(done)); });
}

std::future<Result<ListPage>> Database::list_page_async(ListOptions options) const {
  if (!backend_) return Ready(Result<ListPage>(status_));
  return FromCallback<Result<ListPage>>(
      [&](ResultCallback<ListPage> done) { list_page_async(std::move(options), std::move(done)); });
}

std::future<Result<DatabaseStats>> Database::stats_async() const {
  if (!backend_) return Ready(Result<DatabaseStats>(status_));
  return FromCallback<Result<DatabaseStats>>(
      [&](ResultCallback<DatabaseStats> done) { backend_->StatsAsync(std::move(done)); });
}

void Database::put_async(std::string key, std::string value, StatusCallback done) const {
  if (!backend_) return done(status_);
  if (session_) {
    WriteBatch batch;
    batch.Put(std::move(key), std::move(value));
    return WriteThrough(std::move(batch), std::move(done));
  }
  backend_->PutAsync(std::move(key), std::move(value), std::move(done));
}

void Database::get_async(std::string key, ResultCallback<std::string> done) const {
  if (!backend_) return done(status_);
  backend_->GetAsync(std::move(key), std::move(done));
}

void Database::erase_async(std::string key, StatusCallback done) const {
  if (!backend_) return done(status_);
  if (session_) {
    WriteBatch batch;
    batch.Erase(std::move(key));
    return WriteThrough(std::move(batch), std::move(done));
  }
  backend_->EraseAsync(std::move(key), std::move(done));
}

void Database::write_async(WriteBatch batch, StatusCallback done) const {
  if (!backend_) return done(status_);
  if (session_) return WriteThrough(std::move(batch), std::move(done));
  backend_->WriteAsync(std::move(batch), std::move(done));
}

void Database::list_page_async(ListOptions options, ResultCallback<ListPage> done) const {
  if (!backend_) return done(status_);
  const std::string token = session_token();
  ListOptions with_token;
  Status s = WithToken(options, session_ ? &token : nullptr, &with_token);
  if (!s.ok()) return done(s);
  backend_->ListAsync(std::move(with_token), std::move(done));
}

void Database::stats_async(ResultCallback<DatabaseStats> done) const {
  if (!backend_) return done(status_);
  backend_->StatsAsync(std::move(done));
}

}  // namespace kvmesh
