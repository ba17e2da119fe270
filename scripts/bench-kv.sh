#!/usr/bin/env bash
# KV throughput of an N-member cluster: put, linearizable get and serializable get at several
# client counts, clients spread round-robin over all members.
# Usage: scripts/bench-kv.sh [members=3] [seconds=5] [clients="1 16 64"]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
MEMBERS=${1:-3}; SECS=${2:-5}; CLIENTS=${3:-"1 16 64"}
bench_build
start_cluster "$MEMBERS"
echo "# MetaStore KV, $MEMBERS members on loopback, clients over all members, ${SECS}s per run, $(nproc) cores"
for c in $CLIENTS; do
  for w in put range range-serializable; do
    "$BENCH" --endpoints "$(all_endpoints)" --workload "$w" --clients "$c" --duration "$SECS"
  done
done
