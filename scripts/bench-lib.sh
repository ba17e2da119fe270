#!/usr/bin/env bash
# Shared helpers for the benchmark scripts: build once, start/stop a loopback MetaStore cluster,
# find its leader. Every process started here is stopped by PID.
set -euo pipefail
TARGET=${CARGO_TARGET_DIR:-target}
NODE=$TARGET/release/metastore-node
BENCH=$TARGET/release/metastore-bench
NET=${BENCH_NET:-127.0.77}
PIDS=()
WORK=""

bench_build() { cargo build --release -q -p metastore-node -p metastore-bench; }

# start_cluster N [extra node flags...]
start_cluster() {
  local n=$1; shift
  WORK=$(mktemp -d)
  local ic="" i
  for i in $(seq 1 "$n"); do ic+="${ic:+,}m$i=http://$NET.$i:2380"; done
  for i in $(seq 1 "$n"); do
    "$NODE" --name "m$i" --data-dir "$WORK/m$i" --initial-cluster "$ic" \
      --listen-client-urls "http://$NET.$i:2379" --advertise-client-urls "http://$NET.$i:2379" \
      --listen-peer-urls "http://$NET.$i:2380" --initial-advertise-peer-urls "http://$NET.$i:2380" \
      --listen-metrics-urls "http://$NET.$i:2381" --log-level warn "$@" 2>"$WORK/m$i.log" &
    PIDS+=($!)
  done
  CLUSTER_SIZE=$n
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 400); do curl -sf "http://$NET.$i:2381/readyz" >/dev/null && break; sleep 0.05; done
  done
}

stop_cluster() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  [ -n "$WORK" ] && rm -rf "$WORK"
  WORK=""
}
trap stop_cluster EXIT

all_endpoints() {
  local eps="" i
  for i in $(seq 1 "$CLUSTER_SIZE"); do eps+="${eps:+,}http://$NET.$i:2379"; done
  echo "$eps"
}

leader_endpoint() {
  local i
  for _ in $(seq 1 100); do
    for i in $(seq 1 "$CLUSTER_SIZE"); do
      if curl -sf "http://$NET.$i:2381/metrics" | grep -q '^metastore_raft_is_leader 1'; then
        echo "http://$NET.$i:2379"; return
      fi
    done
    sleep 0.05
  done
  echo "no leader" >&2; return 1
}
