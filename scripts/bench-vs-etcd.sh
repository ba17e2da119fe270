#!/usr/bin/env bash
# MetaStore and real etcd side by side in one run, against two anchors: etcd 3.5.1 and the newest
# etcd (v3.7.3, built from the Go module): the same metastore-bench workloads, the same cluster
# layout on loopback, the same timers and fsync, rotating which system goes first so machine
# drift hits all. Prints a Markdown table of MetaStore/etcd ratios for each anchor with the
# absolute numbers, and each member's resident memory after the runs.
# Usage: scripts/bench-vs-etcd.sh [members="1 3"] [clients="1 16 64"] [seconds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
MEMBERS=${1:-"1 3"}; CLIENTS=${2:-"1 16 64"}; SECS=${3:-3}
WORKLOADS=${WORKLOADS:-"put range range-serializable mixed txn watch"}
bench_build
RESULTS=$(mktemp)

run_one() { # system members workload clients
  local sys=$1 n=$2 w=$3 c=$4
  if [ "$sys" = metastore ]; then start_cluster "$n"; else start_etcd_cluster "$n" "$sys"; fi
  # Same key space for reads on both.
  "$BENCH" --endpoints "$(all_endpoints)" --workload put --clients 16 --duration 0.5 --json >/dev/null
  local r
  r=$("$BENCH" --endpoints "$(all_endpoints)" --workload "$w" --clients "$c" --duration "$SECS" --json)
  echo "$sys $n $(cluster_rss_mib | tr ' ' ',') $r" >> "$RESULTS"
  stop_cluster
}

for n in $MEMBERS; do
  for c in $CLIENTS; do
    for w in $WORKLOADS; do
      # Rotate which system goes first.
      case $(( (c + ${#w}) % 3 )) in
        0) order="metastore etcd etcd37" ;;
        1) order="etcd etcd37 metastore" ;;
        *) order="etcd37 metastore etcd" ;;
      esac
      for sys in $order; do run_one "$sys" "$n" "$w" "$c"; done
    done
  done
done

python3 - "$RESULTS" "$SECS" <<'PY'
import json, sys, collections
rows = collections.defaultdict(dict)
rss = collections.defaultdict(list)
for line in open(sys.argv[1]):
    sys_, n, mem, js = line.split(" ", 3)
    r = json.loads(js)
    rows[(int(n), r["workload"], r["clients"])][sys_] = r
    rss[(sys_, int(n))] += [int(x) for x in mem.split(",") if x]
print("| members | workload | clients | MetaStore ops/s | etcd 3.5.1 ops/s | ratio | etcd 3.7.3 ops/s | ratio | p50/p99 ms M / 3.5.1 / 3.7.3 | errors M/3.5/3.7 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (n, w, c), v in sorted(rows.items()):
    m, e, e7 = v.get("metastore"), v.get("etcd"), v.get("etcd37")
    if not m or not e or not e7:
        continue
    ratio = lambda a, b: a["ops_per_sec"] / b["ops_per_sec"] if b["ops_per_sec"] else float("inf")
    ms = lambda r: f'{r["p50_us"]/1000:.2f}/{r["p99_us"]/1000:.2f}'
    print(f'| {n} | {w} | {c} | {m["ops_per_sec"]:.0f} | {e["ops_per_sec"]:.0f} | **{ratio(m, e):.2f}×** | {e7["ops_per_sec"]:.0f} | **{ratio(m, e7):.2f}×** | {ms(m)} / {ms(e)} / {ms(e7)} | {m["errors"]}/{e["errors"]}/{e7["errors"]} |')
print()
print("| members | MetaStore RSS per member (MiB, max) | etcd 3.5.1 (MiB, max) | etcd 3.7.3 (MiB, max) |")
print("|---|---|---|---|")
for n in sorted({k[1] for k in rss}):
    print(f'| {n} | {max(rss[("metastore", n)] or [0])} | {max(rss[("etcd", n)] or [0])} | {max(rss[("etcd37", n)] or [0])} |')
PY
rm -f "$RESULTS"
