// The chaos check's history of client operations and the checker run on it after the cluster
// has healed and converged.
//
// The workload keeps one writer per key, so a key's writes are ordered by their op ids, and it
// keeps writing a key after an indeterminate write of it. An op is acknowledged (ok), or failed
// with an outcome that leaves it unknown whether it applied (unavailable, timeout):
// "indeterminate".
//
// Why an indeterminate write can be checked at all: every request carries its deadline to the
// node, and no node applies it after that (common/deadline.hpp). A write that is applied gets its
// last-writer-wins timestamp then, from the node's wall clock. So an indeterminate write W either
// never applied, or applied (and was stamped) before its deadline; an acknowledged write A made
// after W's deadline is stamped later and wins over W. W can be what a key ends with only if it
// was applied after A was, which needs W's deadline to fall after A's start. (Processes of the
// check share one machine, so its clock and the nodes' agree.)
//
// The checker's rule for each key, given the value the converged replicas hold, with A the last
// acknowledged write of the key:
//   - allowed: A's effect; or the effect of an indeterminate write W issued after A, or issued
//     before A with W.deadline_us after A.start_us (it may have applied after A);
//   - a violation: anything else, including an indeterminate write whose deadline passed before A
//     started winning (applied past its deadline, or A lost), or a key never written;
//   - an indeterminate batch applied to some of its keys and not others (batches are atomic);
//   - any error other than unavailable/timeout (not_found for reads is an answer, not an error).
//
// Conditional writes (kCas) go to a few keys shared by every worker (so they race): each reads
// the key's version, then puts expecting it (or expecting the key absent). Their rule: of the
// conditional writes of one key expecting one version, at most one is acknowledged
// (condition_failed is an answer, not an error). The per-key rules above skip these keys.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh::cluster {

struct OpRecord {
  enum class Kind : uint8_t { kPut, kErase, kBatch, kGet, kCas };
  uint64_t id = 0;
  int worker = 0;
  /// Node whose client port it went to.
  int node = 0;
  std::string db;
  Kind kind = Kind::kPut;
  /// kPut/kErase/kCas: one op; kBatch: its ops (distinct keys); kGet: the key in ops[0].key.
  std::vector<WriteOp> ops;
  /// kCas: the version the put expected ("" : the key absent).
  std::string expected_version;
  /// Microseconds since the run started.
  int64_t start_us = 0;
  int64_t end_us = 0;
  /// For an indeterminate op: no node applies it after this (microseconds since the run started;
  /// no later than its client's own deadline). Zero: before anything else started.
  int64_t deadline_us = 0;
  Code code = Code::kOk;
  std::string error;
};

/// Whether `code` says the write may or may not have been applied.
bool Indeterminate(Code code);

/// The keys of conditional writes start with this (they are shared by every worker).
inline constexpr char kCasKeyPrefix[] = "/cas/";

/// Thread-safe append-only log of operations.
class History {
 public:
  void Add(OpRecord op);
  std::vector<OpRecord> Snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::vector<OpRecord> ops_;
};

/// The converged contents: database path -> key -> value.
using FinalState = std::map<std::string, std::map<std::string, std::string>>;

struct CheckResult {
  bool pass = true;
  uint64_t ops = 0, acknowledged = 0, indeterminate = 0, unexpected_errors = 0, keys = 0;
  /// Conditional writes acknowledged and refused (condition_failed).
  uint64_t cas_acknowledged = 0, cas_refused = 0;
  /// The first violation and the history of its key, when !pass.
  std::string violation;
};

/// Checks `ops` (any order) against `final_state` by the rules above.
CheckResult CheckHistory(std::vector<OpRecord> ops, const FinalState& final_state);

/// One line describing `op`, for reports.
std::string Describe(const OpRecord& op);

}  // namespace kvmesh::cluster
