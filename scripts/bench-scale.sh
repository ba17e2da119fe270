#!/usr/bin/env bash
# Scaling under load, MetaStore, etcd 3.5.1 and etcd 3.7.3 (scripts/etcd-latest.sh) with the same
# procedure: one member serving a mixed load (metastore-bench, 90 % linearizable gets / 10 % puts),
# then 1 -> 3 (etcdctl member add --learner, start the member, promote it as soon as the leader
# allows) and 3 -> 1 (etcdctl member remove, stop the member), timing each direction and counting
# the load's errors.
# Usage: scripts/bench-scale.sh [clients=16] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
CLIENTS=${1:-16}; ROUNDS=${2:-2}
bench_build
RESULTS=$(mktemp)

now_ms() { date +%s%3N; }

# start_member SYSTEM I INITIAL_CLUSTER STATE
start_member() {
  local sys=$1 i=$2 ic=$3 state=$4 bin extra=()
  if [ "$sys" = metastore ]; then bin=$NODE; extra=(--log-level warn); else bin=$(etcd_bin "$sys"); extra=(--log-level error); fi
  "$bin" --name "m$i" --data-dir "$WORK/m$i" --initial-cluster "$ic" --initial-cluster-state "$state" \
    --listen-client-urls "http://$NET.$i:2379" --advertise-client-urls "http://$NET.$i:2379" \
    --listen-peer-urls "http://$NET.$i:2380" --initial-advertise-peer-urls "http://$NET.$i:2380" \
    --listen-metrics-urls "http://$NET.$i:2381" --heartbeat-interval 100 --election-timeout 1000 \
    "${extra[@]}" 2>"$WORK/m$i.log" &
  PIDS+=($!)
  MEMBER_PID[$i]=$!
}

ctl() { etcdctl --endpoints "http://$NET.1:2379" --command-timeout=5s "$@"; }

# Retries a membership command the cluster may refuse for a while (etcd refuses changes until
# every member has been connected for a few seconds: "unhealthy cluster"); counts refusals.
retry() {
  local i
  for i in $(seq 1 600); do
    ctl "$@" >/dev/null 2>&1 && return 0
    REFUSED=$((REFUSED + 1))
    sleep 0.05
  done
  echo "gave up: etcdctl $*" >&2; return 1
}

member_id() { # name
  ctl member list -w json | python3 -c "
import json,sys
for m in json.load(sys.stdin)['members']:
    if m.get('name')==sys.argv[1] or ('http://$NET.'+sys.argv[1][1:]+':2380') in m.get('peerURLs',[]):
        print('%x' % m['ID'])" "$1"
}

scale_round() { # system round
  local sys=$1 r=$2 t0 up down i id ic load_out
  declare -gA MEMBER_PID=()
  REFUSED=0
  WORK=$(mktemp -d)
  start_member "$sys" 1 "m1=http://$NET.1:2380" new
  CLUSTER_SIZE=1
  for _ in $(seq 1 400); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.05; done
  load_out=$(mktemp)
  "$BENCH" --endpoints "http://$NET.1:2379" --workload mixed --clients "$CLIENTS" --duration 30 --json >"$load_out" &
  local load_pid=$!
  sleep 2
  t0=$(now_ms)
  ic="m1=http://$NET.1:2380"
  for i in 2 3; do
    retry member add "m$i" --learner --peer-urls "http://$NET.$i:2380"
    ic+=",m$i=http://$NET.$i:2380"
    start_member "$sys" "$i" "$ic" existing
    id=""
    for _ in $(seq 1 600); do
      id=$(member_id "m$i")
      [ -n "$id" ] && ctl member promote "$id" >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  up=$(( $(now_ms) - t0 ))
  sleep 2
  t0=$(now_ms)
  for i in 3 2; do
    id=$(member_id "m$i")
    retry member remove "$id"
    kill "${MEMBER_PID[$i]}" 2>/dev/null || true
  done
  down=$(( $(now_ms) - t0 ))
  # Stop the load early: the measurement is over.
  wait "$load_pid" || true
  echo "$sys $r $up $down $REFUSED $(cat "$load_out")" >>"$RESULTS"
  rm -f "$load_out"
  stop_cluster
}

for r in $(seq 1 "$ROUNDS"); do
  case $((r % 3)) in
    1) order="metastore etcd etcd37" ;;
    2) order="etcd etcd37 metastore" ;;
    *) order="etcd37 metastore etcd" ;;
  esac
  for sys in $order; do scale_round "$sys" "$r"; done
done

python3 - "$RESULTS" "$CLIENTS" <<'PY'
import json, sys
print(f"| system | round | 1→3 (ms) | 3→1 (ms) | membership commands refused, retried | load ops/s over 30 s | load errors | load p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    s, r, up, down, refused, js = line.split(" ", 5)
    j = json.loads(js)
    name = {"metastore": "MetaStore", "etcd": "etcd 3.5.1", "etcd37": "etcd 3.7.3"}[s]
    print(f'| {name} | {r} | {up} | {down} | {refused} | {j["ops_per_sec"]:.0f} | {j["errors"]} | {j["p99_us"]/1000:.2f} |')
PY
rm -f "$RESULTS"
