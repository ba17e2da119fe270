#!/usr/bin/env bash
# Profiles every member of a loopback MetaStore cluster with `perf record -g` while one
# metastore-bench workload runs, then prints the hottest symbols.
# Usage: scripts/bench-profile.sh [members=3] [workload=watch] [clients=16]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
N=${1:-3}; W=${2:-watch}; C=${3:-16}
command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)" >&2; exit 1; }
bench_build
OUT=${PERF_OUT:-$(mktemp -d)}
start_cluster "$N"
"$BENCH" --endpoints "$(all_endpoints)" --workload "$W" --clients "$C" --duration 6 --json >"$OUT/bench.json" &
BP=$!
sleep 1.5
perf record -F 999 -g -o "$OUT/perf.data" -p "$(IFS=,; echo "${PIDS[*]}")" -- sleep 3 >/dev/null 2>&1
wait "$BP"
cat "$OUT/bench.json"
stop_cluster
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -30
echo "perf data: $OUT/perf.data"
