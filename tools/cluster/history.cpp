#include "tools/cluster/history.hpp"

#include <algorithm>
#include <set>
#include <sstream>
#include <tuple>

namespace kvmesh::cluster {
namespace {

/// A key's value after a write: the value, or nullopt for deleted / never written.
using Value = std::optional<std::string>;

std::string Show(const Value& v) {
  if (!v) return "(absent)";
  std::string out = "\"";
  for (char c : *v) {
    if (c >= 32 && c < 127 && c != '"') {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    }
  }
  return out + "\"";
}

Value Effect(const WriteOp& op) {
  return op.kind == WriteOp::Kind::kPut ? Value(op.value) : Value(std::nullopt);
}

}  // namespace

bool Indeterminate(Code code) {
  return code == Code::kUnavailable || code == Code::kTimeout;
}

void History::Add(OpRecord op) {
  std::lock_guard<std::mutex> lock(mutex_);
  ops_.push_back(std::move(op));
}

std::vector<OpRecord> History::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ops_;
}

std::string Describe(const OpRecord& op) {
  static const char* kinds[] = {"put", "erase", "batch", "get", "cas"};
  std::ostringstream out;
  out << "op " << op.id << " worker " << op.worker << " via node " << op.node << " "
      << kinds[static_cast<int>(op.kind)] << " " << op.db;
  for (const auto& w : op.ops) {
    out << (w.kind == WriteOp::Kind::kPut ? " put " : " erase ") << w.key;
    if (w.kind == WriteOp::Kind::kPut && op.kind != OpRecord::Kind::kGet) {
      out << "=" << Show(w.value);
    }
  }
  if (op.kind == OpRecord::Kind::kCas) {
    out << " expecting " << (op.expected_version.empty() ? "absent" : op.expected_version);
  }
  out << " [" << op.start_us / 1000 << " ms .. " << op.end_us / 1000 << " ms] -> "
      << (op.code == Code::kOk ? "ok" : CodeName(op.code));
  if (!op.error.empty()) out << ": " << op.error;
  return out.str();
}

CheckResult CheckHistory(std::vector<OpRecord> ops, const FinalState& final_state) {
  std::sort(ops.begin(), ops.end(),
            [](const OpRecord& a, const OpRecord& b) { return a.id < b.id; });
  CheckResult result;
  result.ops = ops.size();
  // (db, key) -> indexes of the writes touching it, in op id order.
  std::map<std::pair<std::string, std::string>, std::vector<size_t>> writes;
  for (size_t i = 0; i < ops.size(); ++i) {
    const OpRecord& op = ops[i];
    if (op.code == Code::kOk) {
      ++result.acknowledged;
    } else if (Indeterminate(op.code)) {
      ++result.indeterminate;
    } else if (!(op.kind == OpRecord::Kind::kGet && op.code == Code::kNotFound) &&
               !(op.kind == OpRecord::Kind::kCas && op.code == Code::kConditionFailed)) {
      ++result.unexpected_errors;
      if (result.pass) {
        result.pass = false;
        result.violation =
            "unexpected error (only unavailable and timeout are expected): " + Describe(op);
      }
    }
    if (op.kind == OpRecord::Kind::kCas) {
      if (op.code == Code::kOk) ++result.cas_acknowledged;
      if (op.code == Code::kConditionFailed) ++result.cas_refused;
      continue;
    }
    if (op.kind == OpRecord::Kind::kGet) continue;
    for (const auto& w : op.ops) writes[{op.db, w.key}].push_back(i);
  }
  // Conditional writes: at most one acknowledged per (db, key, expected version).
  {
    std::map<std::tuple<std::string, std::string, std::string>, std::vector<size_t>> winners;
    for (size_t i = 0; i < ops.size(); ++i) {
      const OpRecord& op = ops[i];
      if (op.kind != OpRecord::Kind::kCas || op.code != Code::kOk) continue;
      auto& list = winners[{op.db, op.ops[0].key, op.expected_version}];
      list.push_back(i);
      if (list.size() == 2 && result.pass) {
        result.pass = false;
        result.violation =
            "two conditional writes expecting the same version were both "
            "acknowledged:\n    " +
            Describe(ops[list[0]]) + "\n    " + Describe(ops[list[1]]);
      }
    }
  }
  result.keys = writes.size();

  auto history_of = [&](const std::string& db, const std::string& key) {
    std::string out;
    for (size_t i : writes[{db, key}]) out += "\n    " + Describe(ops[i]);
    return out;
  };
  auto final_value = [&](const std::string& db, const std::string& key) -> Value {
    auto d = final_state.find(db);
    if (d == final_state.end()) return std::nullopt;
    auto k = d->second.find(key);
    if (k == d->second.end()) return std::nullopt;
    return k->second;
  };
  auto fail = [&](std::string what) {
    if (!result.pass) return;
    result.pass = false;
    result.violation = std::move(what);
  };

  // Per key: what the replicas may hold.
  // For batches: (op index) -> per key, whether the final value shows the batch's effect.
  std::map<size_t, std::vector<std::pair<std::string, bool>>> batch_applied;
  for (const auto& [where, indexes] : writes) {
    const auto& [db, key] = where;
    Value acked;  // after the last acknowledged write
    size_t last_acked = 0;
    bool any_acked = false;
    for (size_t n = 0; n < indexes.size(); ++n) {
      const OpRecord& op = ops[indexes[n]];
      if (op.code != Code::kOk) continue;
      for (const auto& w : op.ops) {
        if (w.key == key) acked = Effect(w);
      }
      last_acked = n;
      any_acked = true;
    }
    const Value actual = final_value(db, key);
    bool allowed = actual == acked;
    // Indeterminate writes that may have applied after the last acknowledged one: issued after
    // it, or issued before it with a deadline after its start.
    std::vector<std::pair<size_t, Value>> pending;
    const int64_t acked_start = any_acked ? ops[indexes[last_acked]].start_us : 0;
    for (size_t n = 0; n < indexes.size(); ++n) {
      const OpRecord& op = ops[indexes[n]];
      if (!Indeterminate(op.code)) continue;
      if (any_acked && n < last_acked && op.deadline_us <= acked_start) continue;
      for (const auto& w : op.ops) {
        if (w.key == key) pending.emplace_back(indexes[n], Effect(w));
      }
    }
    for (const auto& [index, effect] : pending) allowed = allowed || actual == effect;
    if (!allowed) {
      fail("key " + key + " of " + db + " holds " + Show(actual) + "; allowed: " + Show(acked) +
           (any_acked ? " (last acknowledged)" : " (never acknowledged)") +
           (pending.empty() ? "" : " or an indeterminate write that may have applied after it") +
           "; its history:" + history_of(db, key));
    }
    // A batch tells only on keys where it is the last indeterminate write, issued after the last
    // acknowledged one, and no earlier indeterminate write may have applied after it (any of
    // these may have overwritten it), and where its effect differs from every other allowed value.
    if (!pending.empty()) {
      const auto& [index, effect] = pending.back();
      const OpRecord& batch = ops[index];
      const bool after_acked = !any_acked || batch.id > ops[indexes[last_acked]].id;
      const bool last_to_land = std::all_of(pending.begin(), pending.end() - 1, [&](const auto& p) {
        return ops[p.first].deadline_us <= batch.start_us;
      });
      if (batch.kind == OpRecord::Kind::kBatch && after_acked && last_to_land && effect != acked &&
          std::count_if(pending.begin(), pending.end(),
                        [&](const auto& p) { return p.second == effect; }) == 1) {
        batch_applied[index].emplace_back(key, actual == effect);
      }
    }
  }
  for (const auto& [index, keys] : batch_applied) {
    size_t applied =
        std::count_if(keys.begin(), keys.end(), [](const auto& k) { return k.second; });
    if (applied != 0 && applied != keys.size()) {
      std::string detail;
      for (const auto& [key, yes] : keys) detail += " " + key + (yes ? "=applied" : "=not applied");
      fail("batch applied partially:" + detail + "\n    " + Describe(ops[index]));
    }
  }
  // Keys nobody wrote (the conditional writes' keys are checked above).
  for (const auto& [db, keys] : final_state) {
    for (const auto& [key, value] : keys) {
      if (writes.count({db, key}) == 0 && key.rfind(kCasKeyPrefix, 0) != 0) {
        fail("key " + key + " of " + db + " holds " + Show(value) + " but was never written");
      }
    }
  }
  return result;
}

}  // namespace kvmesh::cluster
