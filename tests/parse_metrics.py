#!/usr/bin/env python3
"""Parses a Prometheus text exposition (file argv[1]) with the reference parser
(python3-prometheus-client), checks every histogram, and prints each sample as
`name|label=value,...|value` (labels sorted) for metrics_scrape_test.cpp to check.
Exits 1 with a message on a parse error or a broken histogram."""
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"parse error: {e!r}", file=sys.stderr)
        return 1
    for family in families:
        if family.type == "histogram":
            series = {}
            for s in family.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                entry = series.setdefault(key, {"buckets": [], "count": None})
                if s.name.endswith("_bucket"):
                    entry["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    entry["count"] = s.value
            for key, entry in series.items():
                buckets = entry["buckets"]
                les = [le for le, _ in buckets]
                if les != sorted(les) or not les or not math.isinf(les[-1]):
                    print(f"{family.name}{key}: le not increasing to +Inf: {les}", file=sys.stderr)
                    return 1
                counts = [c for _, c in buckets]
                if any(b < a for a, b in zip(counts, counts[1:])):
                    print(f"{family.name}{key}: buckets not cumulative: {counts}", file=sys.stderr)
                    return 1
                if entry["count"] != counts[-1]:
                    print(f"{family.name}{key}: _count {entry['count']} != +Inf bucket {counts[-1]}",
                          file=sys.stderr)
                    return 1
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            print(f"{s.name}|{labels}|{s.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
