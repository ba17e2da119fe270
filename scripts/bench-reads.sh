#!/usr/bin/env bash
# Linearizable reads by lease vs by ReadIndex vs serializable reads, at 1, 3 and 5 members and
# 1 and 64 clients, all against the leader (lease reads are the leader's; followers always use
# ReadIndex). ReadIndex is measured on a cluster started with --lease-read=false; runs alternate
# so machine drift hits both. Prints a markdown table.
# Usage: scripts/bench-reads.sh [seconds=5] [sizes="1 3 5"] [clients="1 64"]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
SECS=${1:-5}; SIZES=${2:-"1 3 5"}; CLIENTS=${3:-"1 64"}
bench_build
run() { # name workload clients
  "$BENCH" --endpoints "$LEADER" --workload "$2" --clients "$3" --duration "$SECS" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("| %s | %s | %s | %.0f | %.2f | %.2f | %d |" % (sys.argv[1], sys.argv[2], sys.argv[3], r["ops_per_sec"], r["p50_us"]/1000, r["p99_us"]/1000, r["errors"]))' "$1" "$MEMBERS" "$3"
}
echo "| path | members | clients | ops/s | p50 ms | p99 ms | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for MEMBERS in $SIZES; do
  for c in $CLIENTS; do
    start_cluster "$MEMBERS" --lease-read=true; LEADER=$(leader_endpoint)
    run lease range "$c"
    run serializable range-serializable "$c"
    stop_cluster
    start_cluster "$MEMBERS" --lease-read=false; LEADER=$(leader_endpoint)
    run read_index range "$c"
    stop_cluster
  done
done
