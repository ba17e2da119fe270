#!/usr/bin/env bash
# Reproduce the engine evaluation. Usage: scripts/engine-eval/run.sh [N]   (default 1000000)
# Runs each engine one after the other (never concurrently), then a kill -9 test per engine.
set -euo pipefail
N=${1:-1000000}
here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/metastore/engine-eval-target}
(cd "$here" && nice -n 10 cargo build --release)
BIN=$CARGO_TARGET_DIR/release/engine-eval
OUT=${OUT:-/tmp/engine-eval-out}; mkdir -p "$OUT"

run() { # name args...
  local name=$1; shift
  local dir=/tmp/engine-eval-$name
  rm -rf "$dir"
  nice -n 10 "$BIN" --dir "$dir" --values "$N" "$@" | tee "$OUT/$name.txt" | grep -v '^DURABLE'
  rm -rf "$dir"
}

crash() { # name delay args...  : load, kill -9 <delay>s after >= N/2 values are durable, reopen+verify
  local name=crash-$1 delay=$2; shift 2
  local dir=/tmp/engine-eval-$name
  rm -rf "$dir"
  nice -n 10 "$BIN" --dir "$dir" --values "$N" --mode load "$@" > "$OUT/$name.load.txt" &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do
    last=$(grep '^DURABLE' "$OUT/$name.load.txt" | tail -1 | cut -d' ' -f2 || true)
    if [ -n "${last:-}" ] && [ "$last" -ge $((N/2)) ]; then sleep "$delay"; break; fi
    sleep 0.05
  done
  kill -9 $pid 2>/dev/null || { echo "load finished before kill"; }
  wait $pid 2>/dev/null || true
  last=$(grep '^DURABLE' "$OUT/$name.load.txt" | tail -1 | cut -d' ' -f2)
  echo "killed $name; last durable main=$last"
  nice -n 10 "$BIN" --dir "$dir" --values "$N" --mode verify --expect-durable "$last" "$@" | tee "$OUT/$name.verify.txt"
  rm -rf "$dir"
}

[ -z "${ONLY_EXTRA:-}" ] && run redb  --engine redb
[ -z "${ONLY_EXTRA:-}" ] && run fjall --engine fjall
run redb-qr    --engine redb --redb-quick-repair
run fjall-kvsep --engine fjall --fjall-kv-sep
# kill 0.3 s after a durable commit (usually lands inside the next durable commit's fsync)
crash redb     0.3 --engine redb
crash redb-qr  0.3 --engine redb --redb-quick-repair
crash fjall    0.3 --engine fjall
# kill 0.1 s after a durable commit (lands between durable commits: only non-durable batches in flight)
crash redb-early    0.1 --engine redb
crash redb-qr-early 0.1 --engine redb --redb-quick-repair
crash fjall-early   0.1 --engine fjall
# does the engine reclaim space after deletes without an explicit compaction?
run redb-nocompact  --engine redb  --no-compact
run fjall-nocompact --engine fjall --no-compact
# repeat of the main runs, to gauge noise
run redb-2  --engine redb
run fjall-2 --engine fjall
