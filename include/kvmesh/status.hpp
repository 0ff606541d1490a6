// Status: the result of every kvmesh operation that can fail, in the style of LevelDB's Status.
// Module boundaries (config, storage, the embedded node API, later the client) return a Status
// instead of throwing. The same `Code` enum is the CAF error category "kvmesh" used between
// actors (see messages/type_ids.hpp), so an error keeps its kind end to end.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvmesh {

/// What went wrong. Values are stable: they travel between nodes inside CAF errors.
enum class Code : uint8_t {
  kOk = 0,
  /// The key does not exist in the database (a normal result of get, not a failure).
  kNotFound = 1,
  /// No database config matches the requested database path.
  kNoMatchingConfig = 2,
  /// The write would take the database over its configured size.
  kSizeLimitExceeded = 3,
  /// The value is larger than the node's maximum value size.
  kValueTooLarge = 4,
  /// The key (or a database path) breaks the key rules in common/path.hpp.
  kInvalidKey = 5,
  /// An argument other than a key is out of range or malformed.
  kInvalidArgument = 6,
  /// A database config (YAML) is malformed or fails validation.
  kInvalidConfig = 7,
  /// The storage engine or the file system failed (disk full, permissions, ...).
  kIOError = 8,
  /// Stored data could not be decoded.
  kCorruption = 9,
  /// The request did not complete within its deadline.
  kTimeout = 10,
  /// The node (or the actor serving the request) is shutting down or unreachable.
  kUnavailable = 11,
  /// A bug: an invariant did not hold.
  kInternal = 12,
  /// The node is low on disk space (or its disk is full): writes that add data are refused,
  /// deletes still work. Retry once space is freed (README "Low disk space").
  kNoSpace = 13,
  /// The caller's credentials (its certificate's principal, see the ACL in README "Running on
  /// several machines") lack the right the request needs; nothing was changed.
  kPermissionDenied = 14,
  /// A conditional write's check failed (the key's version was not the one expected, or the
  /// key exists where it had to be absent); the message names the key. Nothing was written.
  kConditionFailed = 15,
  /// Opening a new database path would instantiate more databases of its config on this node
  /// than the config's `max_instances` allows; existing databases are unaffected.
  kTooManyInstances = 16,
};

/// A stable, lower-case name for `code` ("not_found", "size_limit_exceeded", ...).
const char* CodeName(Code code);

class Status {
 public:
  /// An OK status. Cheap: holds no message.
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status NoMatchingConfig(std::string msg) {
    return {Code::kNoMatchingConfig, std::move(msg)};
  }
  static Status SizeLimitExceeded(std::string msg) {
    return {Code::kSizeLimitExceeded, std::move(msg)};
  }
  static Status ValueTooLarge(std::string msg) { return {Code::kValueTooLarge, std::move(msg)}; }
  static Status InvalidKey(std::string msg) { return {Code::kInvalidKey, std::move(msg)}; }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, std::move(msg)};
  }
  static Status InvalidConfig(std::string msg) { return {Code::kInvalidConfig, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status Timeout(std::string msg) { return {Code::kTimeout, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }
  static Status NoSpace(std::string msg) { return {Code::kNoSpace, std::move(msg)}; }
  static Status TooManyInstances(std::string msg) {
    return {Code::kTooManyInstances, std::move(msg)};
  }
  static Status PermissionDenied(std::string msg) {
    return {Code::kPermissionDenied, std::move(msg)};
  }
  static Status ConditionFailed(std::string msg) {
    return {Code::kConditionFailed, std::move(msg)};
  }

  bool ok() const { return code_ == Code::kOk; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  Code code() const { return code_; }
  /// The human-readable detail, without the code name.
  const std::string& message() const { return message_; }
  /// "OK", or "<code name>: <message>".
  std::string ToString() const;

  bool operator==(const Status& other) const {
    return code_ == other.code_ && message_ == other.message_;
  }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

/// A value or the Status saying why there is none (LevelDB-style results for APIs that return a
/// value, such as the client's get()).
template <class T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  /// `status` must not be OK; an OK status becomes kInternal (a Result without a value is an
  /// error by definition).
  Result(Status status)  // NOLINT
      : status_(status.ok() ? Status::Internal("Result built from an OK status without a value")
                            : std::move(status)) {}
  bool ok() const { return value_.has_value(); }
  bool IsNotFound() const { return status_.IsNotFound(); }
  /// OK when there is a value.
  const Status& status() const { return status_; }
  /// The value; only call when ok().
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

/// Renders a byte count for error messages: exact bytes plus a short 1024-based form, e.g.
/// "104857600 B (100 MiB)"; below 1 KiB just "512 B".
std::string FormatSize(uint64_t bytes);

/// A node id as logs, errors and tools show it: 16 lowercase hex digits.
std::string FormatNodeId(uint64_t id);

/// Parses a node id as FormatNodeId writes it (1 to 16 hex digits, either case); false if
/// `text` is not one.
bool ParseNodeId(std::string_view text, uint64_t* id);

/// Milliseconds since the Unix epoch as UTC to the second: "2026-12-06T05:10:00Z".
std::string FormatUtcTime(int64_t time_ms);

/// Node ids as FormatNodeId shows them, separated by ", ".
std::string FormatNodeIds(const std::vector<uint64_t>& ids);

inline std::ostream& operator<<(std::ostream& os, const Status& s) {
  return os << s.ToString();
}

}  // namespace kvmesh
