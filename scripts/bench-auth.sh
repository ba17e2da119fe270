#!/usr/bin/env bash
# Auth on vs off, MetaStore beside etcd 3.5.1 in one run: linearizable gets and puts on a
# 3-member cluster, clients over all members; with auth on the clients authenticate as a user
# whose role may read and write the benchmark's prefix (not root, so every request's permission
# is checked). Prints a Markdown table with ops/s and the on/off ratio for each system.
# Usage: scripts/bench-auth.sh [members=3] [clients="1 64"] [seconds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
MEMBERS=${1:-3}; CLIENTS=${2:-"1 64"}; SECS=${3:-3}
bench_build
ETCDCTL=${ETCDCTL:-etcdctl}
RESULTS=$(mktemp)

enable_auth() {
  local ep; ep=$(all_endpoints | cut -d, -f1)
  for args in "user add root:rootpw" "user grant-role root root" "user add bench:benchpw" \
    "role add bench" "role grant-permission bench readwrite bench/ --prefix=true" \
    "user grant-role bench bench" "auth enable"; do
    # Auth entries need the cluster version, set a moment after a MetaStore cluster starts.
    for _ in $(seq 1 50); do
      # shellcheck disable=SC2086
      "$ETCDCTL" --endpoints "$ep" $args >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
}

run_one() { # system auth workload clients
  local sys=$1 auth=$2 w=$3 c=$4 user=()
  if [ "$sys" = metastore ]; then start_cluster "$MEMBERS"; else start_etcd_cluster "$MEMBERS" etcd; fi
  if [ "$auth" = on ]; then enable_auth; user=(--user bench:benchpw); fi
  "$BENCH" --endpoints "$(all_endpoints)" "${user[@]}" --workload put --clients 16 --duration 0.5 --json >/dev/null
  local r
  r=$("$BENCH" --endpoints "$(all_endpoints)" "${user[@]}" --workload "$w" --clients "$c" --duration "$SECS" --json)
  echo "$sys $auth $r" >> "$RESULTS"
  stop_cluster
}

for c in $CLIENTS; do
  for w in range put; do
    for auth in off on; do
      for sys in metastore etcd; do run_one "$sys" "$auth" "$w" "$c"; done
    done
  done
done

python3 - "$RESULTS" "$MEMBERS" <<'PY'
import json, sys, collections
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    sys_, auth, js = line.split(" ", 2)
    r = json.loads(js)
    rows[(r["workload"], r["clients"])][(sys_, auth)] = r
print(f"| members | workload | clients | MetaStore off ops/s | on | on/off | etcd 3.5.1 off | on | on/off | MetaStore ÷ etcd, auth on | errors (M on / etcd on) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (w, c), v in sorted(rows.items()):
    try:
        mo, mn, eo, en = (v[(s, a)] for s in ("metastore", "etcd") for a in ("off", "on"))
    except KeyError:
        continue
    ops = lambda r: r["ops_per_sec"]
    ratio = lambda a, b: ops(a) / ops(b) if ops(b) else float("inf")
    print(f'| {sys.argv[2]} | {w} | {c} | {ops(mo):.0f} | {ops(mn):.0f} | {ratio(mn, mo):.2f} | {ops(eo):.0f} | {ops(en):.0f} | {ratio(en, eo):.2f} | **{ratio(mn, en):.2f}×** | {mn["errors"]}/{en["errors"]} |')
PY
rm -f "$RESULTS"
