#!/usr/bin/env bash
# Data scale, side by side: 3 members of MetaStore, of etcd 3.5.1 and of the newest etcd (v3.7.3,
# built from the Go module), the same flags, each loaded with KEYS keys of VALUE bytes (default
# 1 Mi keys of 1 KiB: 1 GiB) by metastore-bench's `load` workload over all members. Reports the
# load rate and latency (p99 apart for puts during snapshots), elections during the load, the largest RSS and data dir seen (sampled
# every second), how long a restarted follower takes to serve its data again, and how long a new
# learner takes to catch up (etcdctl member add --learner, then its own copy of the last key).
# Usage: scripts/bench-data.sh [keys=1048576] [value bytes=1024] [clients=64]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
KEYS=${1:-1048576}; VALUE=${2:-1024}; CLIENTS=${3:-64}
SYSTEMS=${SYSTEMS:-"metastore etcd etcd37"}
# Same on every system: timers, snapshot cadence, a quota the load fits in.
COMMON=(--heartbeat-interval 100 --election-timeout 1000 --snapshot-count 10000
  --quota-backend-bytes 4294967296)
bench_build
RESULTS=$(mktemp)
LAST_KEY=$(printf 'bench/%08d' $((KEYS - 1)))

# start_member SYSTEM I INITIAL_CLUSTER STATE: starts member I in $WORK, appending its PID.
start_member() {
  local sys=$1 i=$2 ic=$3 state=$4 bin
  local urls=(--listen-client-urls "http://$NET.$i:2379" --advertise-client-urls "http://$NET.$i:2379"
    --listen-peer-urls "http://$NET.$i:2380" --initial-advertise-peer-urls "http://$NET.$i:2380"
    --listen-metrics-urls "http://$NET.$i:2381" --initial-cluster "$ic"
    --initial-cluster-state "$state")
  if [ "$sys" = metastore ]; then
    "$NODE" --name "m$i" --data-dir "$WORK/m$i" "${urls[@]}" "${COMMON[@]}" --log-level "${METASTORE_LOG_LEVEL:-warn}" \
      2>>"$WORK/m$i.log" &
  else
    bin=$(etcd_bin "$sys")
    "$bin" --name "m$i" --data-dir "$WORK/m$i" "${urls[@]}" "${COMMON[@]}" --log-level error \
      2>>"$WORK/m$i.log" &
  fi
  PIDS[$i]=$!
}

# Seconds (fractional) until member I answers a serializable get of the last key with its value.
wait_serving() {
  local i=$1 t0 v
  t0=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    v=$(etcdctl --endpoints "http://$NET.$i:2379" --command-timeout=2s get --consistency=s \
      --print-value-only "$LAST_KEY" 2>/dev/null | head -c 8 || true)
    [ -n "$v" ] && break
    sleep 0.05
  done
  awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}'
}

# The client URL of the leader (MetaStore or etcd metrics).
data_leader() {
  local i
  for _ in $(seq 1 100); do
    for i in 1 2 3; do
      # Not piped into grep -q: under pipefail, curl's SIGPIPE would fail the test.
      if curl -sf "http://$NET.$i:2381/metrics" 2>/dev/null |
        grep -Ec '^(metastore_raft_is_leader|etcd_server_is_leader) 1' >/dev/null; then
        echo "http://$NET.$i:2379"; return
      fi
    done
    sleep 0.05
  done
  echo "no leader" >&2; return 1
}

metric_sum() { # name: sum over members of a Prometheus counter
  local name=$1 i s=0 v
  for i in 1 2 3; do
    v=$(curl -sf "http://$NET.$i:2381/metrics" | awk -v n="$name" '$1==n {print $2}' | head -1)
    s=$(awk -v a="$s" -v b="${v:-0}" 'BEGIN {print a + b}')
  done
  echo "$s"
}

# snapshot_split SAMPLES PUTS: "p99_steady_ms/p99_during_ms/puts_during" — put latency p99 over
# the puts that completed in seconds with no snapshot saved, and in seconds during which (or just
# after which) one was, on any member.
snapshot_split() {
  python3 - "$1" "$2" <<'PY'
import sys
during, last = set(), None
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 4:
        continue
    sec, n = int(f[2]), float(f[3])
    if last is not None and n > last:
        during.update((sec - 1, sec))
    last = n
steady, busy = [], []
for line in open(sys.argv[2]):
    ms, us = line.split()
    (busy if int(ms) // 1000 in during else steady).append(int(us))
def p99(xs):
    xs.sort()
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] / 1000 if xs else float("nan")
print(f"{p99(steady):.1f}/{p99(busy):.1f}/{len(busy)}")
PY
}

run_system() {
  local sys=$1 ic="" i
  WORK=$(mktemp -d -p "${BENCH_DATA_DIR:-/tmp}")
  PIDS=()
  CLUSTER_SIZE=3
  for i in 1 2 3; do ic+="${ic:+,}m$i=http://$NET.$i:2380"; done
  for i in 1 2 3; do start_member "$sys" "$i" "$ic" new; done
  for i in 1 2 3; do wait_health "$i"; done
  local changes_metric=metastore_raft_leader_changes_total
  [ "$sys" != metastore ] && changes_metric=etcd_server_leader_changes_seen_total
  local changes0; changes0=$(metric_sum "$changes_metric")
  # Sample RSS and data dirs every second while loading.
  local samples="$WORK/samples"
  # Also each second: snapshots saved so far on all members (a second in which the count moved,
  # and the one before it, count as "during a snapshot" for put latency).
  local snaps_metric=metastore_snapshots_saved_total
  [ "$sys" != metastore ] && snaps_metric=etcd_debugging_snap_save_total_duration_seconds_count
  ( while :; do
      local rss=0 disk=0 p r d
      for p in "${PIDS[@]}"; do
        r=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$p/status" 2>/dev/null || echo 0)
        [ "${r:-0}" -gt "$rss" ] && rss=$r
      done
      for i in 1 2 3; do
        d=$(du -sm "$WORK/m$i" 2>/dev/null | cut -f1)
        [ "${d:-0}" -gt "$disk" ] && disk=$d
      done
      echo "$rss $disk $(date +%s) $(metric_sum "$snaps_metric")" >> "$samples"
      sleep 1
    done ) &
  local sampler=$!
  local load
  load=$("$BENCH" --endpoints "$(all_endpoints)" --workload load --key-count "$KEYS" \
    --value-size "$VALUE" --clients "$CLIENTS" --duration 7200 --json --samples "$WORK/puts")
  sleep 3 # a last snapshot or compaction after the load shows in the samples
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  local changes1; changes1=$(metric_sum "$changes_metric")
  local pause=""
  if [ "$sys" = metastore ]; then
    for i in 1 2 3; do
      pause+="$(curl -sf "http://$NET.$i:2381/metrics" |
        awk '$1=="metastore_raft_loop_longest_pause_milliseconds" {print $2}'),"
    done
  fi
  # Restart a follower: stop it, start it on its data dir, time until it serves the last key.
  local lead f
  lead=$(data_leader)
  f=3; [ "$lead" = "http://$NET.3:2379" ] && f=2
  kill "${PIDS[$f]}"; wait "${PIDS[$f]}" 2>/dev/null || true
  start_member "$sys" "$f" "$ic" new
  local restart; restart=$(wait_serving "$f")
  # A new learner catches up.
  # etcd refuses membership changes until every member has been connected for a while.
  for _ in $(seq 1 120); do
    etcdctl --endpoints "$lead" member add m4 --learner --peer-urls "http://$NET.4:2380" \
      >/dev/null 2>&1 && break
    sleep 0.5
  done
  start_member "$sys" 4 "$ic,m4=http://$NET.4:2380" existing
  local catchup; catchup=$(wait_serving 4)
  local maxima; maxima=$(awk '{ if ($1>r) r=$1; if ($2>d) d=$2 } END {print r+0, d+0}' "$samples")
  local split; split=$(snapshot_split "$samples" "$WORK/puts")
  echo "$sys $maxima $(awk -v a="$changes1" -v b="$changes0" 'BEGIN {print a - b}') $restart $catchup ${pause:-,} $split $load" >> "$RESULTS"
  # BENCH_KEEP_LOGS=DIR keeps the members' logs (e.g. with METASTORE_LOG_LEVEL=info).
  if [ -n "${BENCH_KEEP_LOGS:-}" ]; then mkdir -p "$BENCH_KEEP_LOGS/$sys" && cp "$WORK"/*.log "$BENCH_KEEP_LOGS/$sys/"; fi
  stop_cluster
}

wait_health() {
  local i=$1
  for _ in $(seq 1 600); do
    curl -sf "http://$NET.$i:2381/health" 2>/dev/null | grep -c true >/dev/null && return 0
    sleep 0.1
  done
  echo "member $i never became healthy" >&2; return 1
}

for sys in $SYSTEMS; do
  echo "bench-data: $sys, $KEYS keys of $VALUE bytes, $CLIENTS clients" >&2
  run_system "$sys"
done

python3 - "$RESULTS" "$KEYS" "$VALUE" <<'PY'
import json, sys
names = {"metastore": "MetaStore", "etcd": "etcd 3.5.1", "etcd37": "etcd 3.7.3"}
rows = {}
for line in open(sys.argv[1]):
    s, rss, disk, elections, restart, catchup, pause, split, js = line.split(" ", 8)
    rows[s] = dict(rss=int(rss), disk=int(disk), elections=float(elections), restart=float(restart),
                   catchup=float(catchup), pause=pause.strip(","), split=split, load=json.loads(js))
keys, value = int(sys.argv[2]), int(sys.argv[3])
print(f"{keys} keys of {value} B ({keys*value/2**30:.2f} GiB of values), 3 members each\n")
print("| system | load keys/s | put p50/p99/max ms | put p99 ms steady / during snapshots (puts) | elections during load | largest RSS MiB | largest data dir MiB | restarted follower serves after s | new learner caught up after s | longest Raft loop pause ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
for s in ["metastore", "etcd", "etcd37"]:
    if s not in rows:
        continue
    r = rows[s]; l = r["load"]
    st, du, n = r["split"].split("/")
    print(f'| {names[s]} | {l["ops_per_sec"]:.0f} | {l["p50_us"]/1000:.1f}/{l["p99_us"]/1000:.1f}/{l["max_us"]/1000:.0f} | {st} / {du} ({n}) | {r["elections"]:.0f} | {r["rss"]} | {r["disk"]} | {r["restart"]:.1f} | {r["catchup"]:.1f} | {r["pause"] or "–"} |')
m = rows.get("metastore")
for s in ["etcd", "etcd37"]:
    e = rows.get(s)
    if m and e:
        print(f'\nMetaStore / {names[s]}: load rate {m["load"]["ops_per_sec"]/e["load"]["ops_per_sec"]:.2f}×, '
              f'RSS {m["rss"]/max(e["rss"],1):.2f}×, data dir {m["disk"]/max(e["disk"],1):.2f}×, '
              f'restart {m["restart"]/max(e["restart"],0.01):.2f}×, learner catch-up {m["catchup"]/max(e["catchup"],0.01):.2f}×')
PY
rm -f "$RESULTS"
