// The metrics library and its Prometheus text rendering (common/metrics.hpp).
#include "common/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace kvmesh::metrics {
namespace {

TEST(MetricsText, EscapesHelpAndLabelValues) {
  TextWriter w;
  w.Family("m_total", "a \\ back\nslash", "counter");
  w.Sample("m_total", {{"path", "a\"b\\c\nd"}, {"x", "y"}}, 3);
  EXPECT_EQ(w.text(),
            "# HELP m_total a \\\\ back\\nslash\n"
            "# TYPE m_total counter\n"
            "m_total{path=\"a\\\"b\\\\c\\nd\",x=\"y\"} 3\n");
}

TEST(MetricsText, FormatsSpecialAndFractionalValues) {
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatValue(NAN), "NaN");
  EXPECT_EQ(FormatValue(12345678901), "12345678901");
  EXPECT_EQ(FormatValue(0.0001), "0.0001");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
}

TEST(MetricsText, HistogramBucketsAreCumulativeWithInf) {
  Histogram h({10, 100}, 0.5);  // rendered in halves of a unit
  h.Observe(5);
  h.Observe(10);  // bounds are inclusive (le)
  h.Observe(50);
  h.Observe(1000);
  TextWriter w;
  w.Histogram("lat", {{"op", "put"}}, h.Snapshot());
  EXPECT_EQ(w.text(),
            "lat_bucket{op=\"put\",le=\"5\"} 2\n"
            "lat_bucket{op=\"put\",le=\"50\"} 3\n"
            "lat_bucket{op=\"put\",le=\"+Inf\"} 4\n"
            "lat_sum{op=\"put\"} 532.5\n"
            "lat_count{op=\"put\"} 4\n");
}

TEST(MetricsText, RequestsCountByOpAndCode) {
  RequestMetrics r;
  r.Record(Op::kGet, Code::kNotFound, std::chrono::microseconds(20));
  r.Record(Op::kGet, Code::kOk, std::chrono::microseconds(20));
  r.Record(Op::kGet, Code::kOk, std::chrono::seconds(100));
  EXPECT_EQ(r.count(Op::kGet, Code::kOk), 2u);
  EXPECT_EQ(r.count(Op::kGet, Code::kNotFound), 1u);
  TextWriter w;
  r.Render(&w);
  const std::string& t = w.text();
  EXPECT_NE(t.find("kvmesh_requests_total{op=\"get\",code=\"ok\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("kvmesh_requests_total{op=\"get\",code=\"not_found\"} 1\n"), std::string::npos);
  // Every op has its ok series (so rates exist from the start); other codes once seen.
  EXPECT_NE(t.find("kvmesh_requests_total{op=\"status\",code=\"ok\"} 0\n"), std::string::npos);
  EXPECT_EQ(t.find("kvmesh_requests_total{op=\"put\",code=\"not_found\"}"), std::string::npos);
  EXPECT_NE(t.find("kvmesh_request_duration_seconds_bucket{op=\"get\",le=\"2.5e-05\"} 2\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("kvmesh_request_duration_seconds_bucket{op=\"get\",le=\"10\"} 2\n"),
            std::string::npos);
  EXPECT_NE(t.find("kvmesh_request_duration_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n"),
            std::string::npos);
  EXPECT_NE(t.find("kvmesh_request_duration_seconds_count{op=\"get\"} 3\n"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::metrics
