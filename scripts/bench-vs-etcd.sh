#!/usr/bin/env bash
# MetaStore and a real etcd 3.5.1 side by side in one run: the same metastore-bench workloads, the
# same cluster layout on loopback, the same timers and fsync, alternating system per workload so
# machine drift hits both. Prints a Markdown table of MetaStore/etcd ratios with the absolute
# numbers, and each member's resident memory after the runs.
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
  if [ "$sys" = metastore ]; then start_cluster "$n"; else start_etcd_cluster "$n"; fi
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
      # Alternate which system goes first.
      if [ $(( (c + ${#w}) % 2 )) -eq 0 ]; then order="metastore etcd"; else order="etcd metastore"; fi
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
print(f"| members | workload | clients | MetaStore ops/s | etcd ops/s | ratio | MetaStore p50/p99 ms | etcd p50/p99 ms | errors M/E |")
print("|---|---|---|---|---|---|---|---|---|")
for (n, w, c), v in sorted(rows.items()):
    m, e = v.get("metastore"), v.get("etcd")
    if not m or not e:
        continue
    ratio = m["ops_per_sec"] / e["ops_per_sec"] if e["ops_per_sec"] else float("inf")
    ms = lambda r: f'{r["p50_us"]/1000:.2f}/{r["p99_us"]/1000:.2f}'
    print(f'| {n} | {w} | {c} | {m["ops_per_sec"]:.0f} | {e["ops_per_sec"]:.0f} | **{ratio:.2f}×** | {ms(m)} | {ms(e)} | {m["errors"]}/{e["errors"]} |')
print()
print("| members | MetaStore RSS per member (MiB, max) | etcd RSS per member (MiB, max) |")
print("|---|---|---|")
for n in sorted({k[1] for k in rss}):
    print(f'| {n} | {max(rss[("metastore", n)] or [0])} | {max(rss[("etcd", n)] or [0])} |')
PY
rm -f "$RESULTS"
