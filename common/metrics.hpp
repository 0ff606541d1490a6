// Metrics: counters, gauges and histograms cheap enough for every request, and their rendering in
// the Prometheus text exposition format 0.0.4 (what `GET /metrics` serves and Node::metrics()
// returns; README "Metrics" lists the node's metrics).
//
// Recording is lock-free and allocation-free: each metric is a few relaxed atomics fixed when it
// is made, so a request pays a handful of atomic adds. Labels are fixed when a metric is made
// (no label lookup on the hot path), which also keeps their number bounded. Values that are cheap
// to read only now and then (sizes, memberships, process figures) are not kept here: whoever
// renders gathers them at scrape time and writes them with TextWriter directly.
//
// Written by hand rather than with prometheus-cpp (Debian's prometheus-cpp-dev): the node needs
// the text format only, and the shared library and the Debian package stay free of a dependency
// for ~200 lines.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvmesh/status.hpp"

namespace kvmesh::metrics {

/// Label name/value pairs of one series, in the order they are written.
using Labels = std::vector<std::pair<std::string, std::string>>;

/// A monotonically increasing count. Thread-safe.
class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

/// A value that goes up and down. Thread-safe.
class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

/// What a Histogram holds at one moment: `counts[i]` observations fell in bucket i (not
/// cumulative; the last one is +Inf), their sum is `sum`.
struct HistogramSnapshot {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count() const;
};

/// Observations counted into buckets with fixed upper bounds (inclusive, as Prometheus's `le`)
/// plus +Inf. Values are recorded in integer units (nanoseconds for latencies) and rendered
/// times `scale` (1e-9: seconds), so recording is integer atomics only. Thread-safe; a snapshot
/// taken while others record may be off by the observations in flight.
class Histogram {
 public:
  /// `bounds` in units, strictly increasing.
  Histogram(std::vector<uint64_t> bounds, double scale);
  void Observe(uint64_t units) {
    size_t i = 0;
    while (i < bounds_.size() && units > bounds_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(units, std::memory_order_relaxed);
  }
  HistogramSnapshot Snapshot() const;

 private:
  const std::vector<uint64_t> bounds_;
  const double scale_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<uint64_t> sum_{0};
};

/// Latency buckets in nanoseconds, 10 us to 10 s (a put takes ~30 us embedded, a replicated
/// write a network round trip, a timeout 30 s).
std::vector<uint64_t> LatencyBucketsNanos();

/// Writes metric families in the Prometheus text format 0.0.4. Call Family once per metric
/// name, then its samples. Escapes HELP text (\\ and newline) and label values (\\, " and
/// newline); writes +Inf, -Inf and NaN as Prometheus spells them.
class TextWriter {
 public:
  /// `type`: "counter", "gauge", "histogram" or "untyped".
  void Family(std::string_view name, std::string_view help, std::string_view type);
  void Sample(std::string_view name, const Labels& labels, double value);
  /// A histogram's _bucket series (cumulative, with le, +Inf last), _sum and _count.
  void Histogram(std::string_view name, const Labels& labels, const HistogramSnapshot& h);
  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

/// How a float is written in the text format ("+Inf", "NaN", integers without exponent).
std::string FormatValue(double v);

/// This process's resident memory and CPU time, from /proc/self (zeros where unreadable).
struct ProcessStats {
  uint64_t resident_bytes = 0;
  double cpu_seconds = 0;  // user + system
};
ProcessStats ReadProcessStats();

/// The operations of the database API that are counted, in label order.
/// kWatch: one pull of a watch (its latency includes the time it was held waiting for changes).
enum class Op : uint8_t { kPut, kGet, kErase, kList, kBatch, kStats, kStatus, kWatch };
inline constexpr size_t kOpCount = 8;
const char* OpName(Op op);

/// Requests by operation and result code, and their latency by operation: what a node's request
/// entry points (the embedded handles and the client gateway) record, once per request.
class RequestMetrics {
 public:
  RequestMetrics();
  /// Records one request of `op` answered with `code` after `elapsed`.
  void Record(Op op, Code code, std::chrono::steady_clock::duration elapsed) {
    const auto o = static_cast<size_t>(op);
    const auto c = static_cast<size_t>(code);
    requests_[o][c < kCodes ? c : kCodes - 1].Add();
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
    latency_[o]->Observe(ns > 0 ? static_cast<uint64_t>(ns) : 0);
  }
  uint64_t count(Op op, Code code) const {
    return requests_[static_cast<size_t>(op)][static_cast<size_t>(code)].value();
  }
  /// kvmesh_requests_total (every op with code "ok", other codes once seen) and
  /// kvmesh_request_duration_seconds.
  void Render(TextWriter* out) const;

 private:
  static constexpr size_t kCodes = static_cast<size_t>(Code::kTooManyInstances) + 1;
  std::array<std::array<Counter, kCodes>, kOpCount> requests_;
  std::array<std::unique_ptr<Histogram>, kOpCount> latency_;
};

}  // namespace kvmesh::metrics
