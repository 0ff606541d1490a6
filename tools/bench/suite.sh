#!/usr/bin/env bash
# The figures of the README's Performance section, in one go (about 15 minutes on 2 cores):
#
#   tools/bench/suite.sh [BUILD_DIR] [OUT_DIR]      # default: build, /tmp/kvmesh-bench-suite
#
# Each step prints its table and keeps its JSON in OUT_DIR/<step>.json. Nothing else should run
# on the machine meanwhile; ratios against raw RocksDB come from the same run either way.
set -euo pipefail
build="${1:-build}"
out="${2:-/tmp/kvmesh-bench-suite}"
bench="$build/kvmesh-bench"
[ -x "$bench" ] || { echo "suite: no kvmesh-bench in $build (build first)" >&2; exit 2; }
mkdir -p "$out"
step() {
  local name="$1"
  shift
  echo "== $name: kvmesh-bench $*"
  "$bench" "$@" --quiet --json-file "$out/$name.json"
}
step single --targets rocksdb,embedded,remote --workloads put,get,list,mixed,batch \
  --value-sizes 100,1024 --inflight 1,50 --ops 100000 --duration 10
# Redis (when installed) next to the client library: x_redis, and CPU per operation of each side;
# caf-echo is the floor CAF's network layer alone puts under the remote rows; loop-echo what a
# client port of kvmesh's own would put there.
step redis --targets remote,caf-echo,loop-echo,loop-echo-inline,redis --workloads put,get \
  --value-sizes 100 --inflight 1,50 \
  --ops 100000 --duration 10
step connections --targets remote --workloads put,get --value-sizes 100 --connections 1,4 \
  --inflight 1,50 --ops 100000 --duration 10
step zipfian --targets rocksdb,embedded --workloads get,mixed --value-sizes 100 \
  --distribution zipfian --inflight 1,50 --ops 100000 --duration 10
step bulk --targets rocksdb,embedded --workloads batch --value-sizes 100 --batch-size 1000 \
  --distribution sequential --keys 1000000 --inflight 1,8 --ops 2000 --duration 10
step databases --targets embedded --databases 100000 --keys 100000 --workloads get,put \
  --value-sizes 100 --inflight 50 --ops 100000 --duration 10
# Issue 18's operations next to plain put: put with a ttl, a conditional put, watch delivery.
step operations --targets embedded,remote,cluster --workloads put,put-ttl,cas-put,watch \
  --value-sizes 100 --inflight 1,50 --ops 100000 --duration 10 --lag-samples 0 --catchup-keys 0
step cluster --targets cluster --workloads put,get --value-sizes 100 --inflight 1,50 \
  --ops 100000 --duration 10 --catchup-keys 100000
