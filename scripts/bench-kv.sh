#!/usr/bin/env bash
# Starts a MetaStore cluster of N members (release build, fsync on) on loopback and measures
# put, linearizable get and serializable get at several client counts with metastore-bench.
# Usage: scripts/bench-kv.sh [members=3] [seconds=5] [clients="1 16 64"]
# Every process it starts is stopped by PID on exit; data lives in a temp dir that is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=${1:-3}
SECS=${2:-5}
CLIENTS=${3:-"1 16 64"}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p metastore-node -p metastore-bench
NODE=$TARGET/release/metastore-node
BENCH=$TARGET/release/metastore-bench
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

NET=127.0.77
IC=""; EPS=""
for i in $(seq 1 "$MEMBERS"); do
  IC+="${IC:+,}m$i=http://$NET.$i:2380"; EPS+="${EPS:+,}http://$NET.$i:2379"
done
for i in $(seq 1 "$MEMBERS"); do
  "$NODE" --name "m$i" --data-dir "$WORK/m$i" --initial-cluster "$IC" \
    --listen-client-urls "http://$NET.$i:2379" --advertise-client-urls "http://$NET.$i:2379" \
    --listen-peer-urls "http://$NET.$i:2380" --initial-advertise-peer-urls "http://$NET.$i:2380" \
    --listen-metrics-urls "http://$NET.$i:2381" --log-level warn 2>"$WORK/m$i.log" &
  PIDS+=($!)
done
for i in $(seq 1 "$MEMBERS"); do
  for _ in $(seq 1 200); do curl -sf "http://$NET.$i:2381/readyz" >/dev/null && break; sleep 0.05; done
done
echo "# MetaStore, $MEMBERS members on loopback, ${SECS}s per run, $(nproc) cores"
for c in $CLIENTS; do
  for w in put range range-serializable; do
    "$BENCH" --endpoints "$EPS" --workload "$w" --clients "$c" --duration "$SECS"
  done
done
