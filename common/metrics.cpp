#include "common/metrics.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

namespace kvmesh::metrics {

uint64_t HistogramSnapshot::count() const {
  uint64_t n = 0;
  for (uint64_t c : counts) n += c;
  return n;
}

Histogram::Histogram(std::vector<uint64_t> bounds, double scale)
    : bounds_(std::move(bounds)),
      scale_(scale),
      counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot s;
  for (uint64_t b : bounds_) s.bounds.push_back(static_cast<double>(b) * scale_);
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    s.counts.push_back(counts_[i].load(std::memory_order_relaxed));
  }
  s.sum = static_cast<double>(sum_.load(std::memory_order_relaxed)) * scale_;
  return s;
}

std::vector<uint64_t> LatencyBucketsNanos() {
  const uint64_t us = 1000;
  return {10 * us,        25 * us,        50 * us,        100 * us,     250 * us,
          500 * us,       1000 * us,      2500 * us,      5000 * us,    10'000 * us,
          25'000 * us,    50'000 * us,    100'000 * us,   250'000 * us, 500'000 * us,
          1'000'000 * us, 2'500'000 * us, 10'000'000 * us};
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    // The shortest of 15 or 17 digits that reads back exactly (0.0001, not 0.00010000000000000001).
    std::snprintf(buf, sizeof buf, "%.15g", v);
    if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

namespace {

void AppendEscaped(std::string* out, std::string_view s, bool quotes) {
  for (char c : s) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (c == '"' && quotes) {
      *out += "\\\"";
    } else {
      *out += c;
    }
  }
}

void AppendLabels(std::string* out, const Labels& labels, const char* extra_name = nullptr,
                  const std::string& extra_value = {}) {
  if (labels.empty() && extra_name == nullptr) return;
  *out += '{';
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) *out += ',';
    first = false;
    *out += name;
    *out += "=\"";
    AppendEscaped(out, value, true);
    *out += '"';
  }
  if (extra_name != nullptr) {
    if (!first) *out += ',';
    *out += extra_name;
    *out += "=\"";
    AppendEscaped(out, extra_value, true);
    *out += '"';
  }
  *out += '}';
}

}  // namespace

void TextWriter::Family(std::string_view name, std::string_view help, std::string_view type) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  AppendEscaped(&out_, help, false);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void TextWriter::Sample(std::string_view name, const Labels& labels, double value) {
  out_ += name;
  AppendLabels(&out_, labels);
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void TextWriter::Histogram(std::string_view name, const Labels& labels,
                           const HistogramSnapshot& h) {
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.counts.size(); ++i) {
    cumulative += h.counts[i];
    const std::string le = i < h.bounds.size() ? FormatValue(h.bounds[i]) : FormatValue(INFINITY);
    out_ += bucket;
    AppendLabels(&out_, labels, "le", le);
    out_ += ' ';
    out_ += FormatValue(static_cast<double>(cumulative));
    out_ += '\n';
  }
  Sample(std::string(name) + "_sum", labels, h.sum);
  Sample(std::string(name) + "_count", labels, static_cast<double>(cumulative));
}

ProcessStats ReadProcessStats() {
  ProcessStats out;
  const long page = sysconf(_SC_PAGESIZE);
  const long ticks = sysconf(_SC_CLK_TCK);
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long long size = 0, resident = 0;
    if (std::fscanf(f, "%llu %llu", &size, &resident) == 2 && page > 0) {
      out.resident_bytes = resident * static_cast<uint64_t>(page);
    }
    std::fclose(f);
  }
  if (std::FILE* f = std::fopen("/proc/self/stat", "r")) {
    char buf[1024];
    const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are fields 14 and 15 of the line, the 12th and 13th after ") ".
    if (const char* p = std::strrchr(buf, ')'); p != nullptr && ticks > 0) {
      unsigned long long utime = 0, stime = 0;
      if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                      &stime) == 2) {
        out.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(ticks);
      }
    }
  }
  return out;
}

const char* OpName(Op op) {
  switch (op) {
    case Op::kPut:
      return "put";
    case Op::kGet:
      return "get";
    case Op::kErase:
      return "erase";
    case Op::kList:
      return "list";
    case Op::kBatch:
      return "batch";
    case Op::kStats:
      return "stats";
    case Op::kStatus:
      return "status";
    case Op::kWatch:
      return "watch";
  }
  return "unknown";
}

RequestMetrics::RequestMetrics() {
  for (auto& h : latency_) h = std::make_unique<metrics::Histogram>(LatencyBucketsNanos(), 1e-9);
}

void RequestMetrics::Render(TextWriter* out) const {
  out->Family("kvmesh_requests_total",
              "Database requests this node answered for its clients (embedded handles and the "
              "client port), by operation and result code.",
              "counter");
  for (size_t o = 0; o < kOpCount; ++o) {
    for (size_t c = 0; c < kCodes; ++c) {
      const uint64_t n = requests_[o][c].value();
      if (n == 0 && c != 0) continue;
      out->Sample("kvmesh_requests_total",
                  {{"op", OpName(static_cast<Op>(o))}, {"code", CodeName(static_cast<Code>(c))}},
                  static_cast<double>(n));
    }
  }
  out->Family("kvmesh_request_duration_seconds",
              "Time from a request's arrival at this node to its answer, by operation.",
              "histogram");
  for (size_t o = 0; o < kOpCount; ++o) {
    out->Histogram("kvmesh_request_duration_seconds", {{"op", OpName(static_cast<Op>(o))}},
                   latency_[o]->Snapshot());
  }
}

}  // namespace kvmesh::metrics
