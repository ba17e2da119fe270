#!/usr/bin/env bash
# A member in a real pod: the real kubelet (v1.37.2, scripts/k8s-binaries.sh) runs the
# metastore-node image that `make images` builds without a daemon, through containerd and runc
# from Debian, as a static pod with the securityContext the operator gives its pods (uid 65532,
# read-only root, no capabilities, no privilege escalation, RuntimeDefault seccomp) and its data
# on a volume. Then, each time checked with etcdctl (the key written first must still be there):
#  - the container is killed (SIGKILL): the kubelet restarts it, on the same volume;
#  - the kubelet itself is restarted: the pod keeps serving and the new kubelet adopts it.
# The pod uses the host network (loopback); containerd, its sockets and state live in a temp
# dir. Every wait is bounded; everything started here is stopped here, by PID.
# Needs root (containerd, runc, mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${IMAGE_TAG:-0.2.0}"
log() { echo "kubelet-smoke: $*" >&2; }

K8S_BIN=$(bash scripts/k8s-binaries.sh | tail -1)
TARGET="${CARGO_TARGET_DIR:-target}"
PROFILE="${PROFILE:-debug}" IMAGE_TAG="$TAG" bash scripts/images.sh --buildah
# containerd, runc and the pause image (compiled from the pinned module's pause.c, cached).
PAUSE_TAR=$(bash scripts/container-runtime.sh | tail -1)

W=$(mktemp -d /tmp/kubelet-smoke.XXXXXX)
CPID="" KPID=""
CTR=(ctr --address "$W/containerd.sock" -n k8s.io)
cleanup() {
  set +e
  [ -n "$KPID" ] && kill "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null
  if [ -n "$CPID" ]; then
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    sleep 1
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete "$t" >/dev/null 2>&1; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1; done
    kill "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null
  fi
  for m in $(mount | awk -v w="$W" 'index($3, w) == 1 {print $3}' | sort -r); do umount "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

cat >"$W/containerd.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$W/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  # No CAP_SYS_RESOURCE in this machine's container.
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    # overlayfs cannot nest in this machine's overlay root.
    snapshotter = "native"
EOF
containerd --config "$W/containerd.toml" >"$W/containerd.log" 2>&1 &
CPID=$!
for _ in $(seq 1 50); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
"${CTR[@]}" images import --snapshotter native "$PAUSE_TAR" >/dev/null
"${CTR[@]}" images import --snapshotter native "$TARGET/images/metastore-node-$TAG.tar" >/dev/null
# The kubelet asks for the image by its normalized name.
"${CTR[@]}" images tag "metastore-node:$TAG" "docker.io/library/metastore-node:$TAG" >/dev/null

PORT=$((32000 + RANDOM % 500))
EP="http://127.0.0.1:$PORT"
mkdir -p "$W/manifests" "$W/data"
cat >"$W/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine runs cgroup v1; containerd 1.6 predates the CRI RuntimeConfig call.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$W/containerd.sock
staticPodPath: $W/manifests
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
failSwapOn: false
address: 127.0.0.1
port: $((PORT + 10))
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $((PORT + 11))
enforceNodeAllocatable: []
EOF
cat >"$W/manifests/member.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: member, namespace: default}
spec:
  hostNetwork: true
  securityContext:
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: metastore
    image: metastore-node:$TAG
    imagePullPolicy: Never
    args: [--name=member, --data-dir=/var/lib/metastore/data,
      --listen-client-urls=$EP, --advertise-client-urls=$EP,
      --listen-peer-urls=http://127.0.0.1:$((PORT + 1)), --initial-advertise-peer-urls=http://127.0.0.1:$((PORT + 1)),
      --listen-metrics-urls=http://127.0.0.1:$((PORT + 2)), --initial-cluster=member=http://127.0.0.1:$((PORT + 1))]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts: [{name: data, mountPath: /var/lib/metastore}]
  volumes:
  - name: data
    hostPath: {path: $W/data, type: Directory}
EOF
chown 65532:65532 "$W/data"

start_kubelet() {
  "$K8S_BIN/kubelet" --config "$W/kubelet.yaml" --root-dir "$W/kubelet" --cert-dir "$W/pki" \
    --hostname-override kubelet-smoke >>"$W/kubelet.log" 2>&1 &
  KPID=$!
}

# Waits (90 s at most) until the member answers; with a key argument, that the key reads "v".
serving() {
  local want=${1:-}
  for _ in $(seq 1 450); do
    if [ -z "$want" ]; then
      etcdctl --endpoints "$EP" --command-timeout=1s put smoke v >/dev/null 2>&1 && return 0
    else
      [ "$(etcdctl --endpoints "$EP" --command-timeout=1s get --print-value-only "$want" 2>/dev/null)" = v ] && return 0
    fi
    sleep 0.2
  done
  log "the member in the pod does not serve; kubelet log:"; grep -E '^E' "$W/kubelet.log" | tail -15 >&2
  exit 1
}

member_pid() { pgrep -u 65532 -f -- "--data-dir=/var/lib/metastore/data --listen-client-urls=$EP" | head -1; }

start_kubelet
serving
pid=$(member_pid)
user=$(ps -o user= -p "$pid")
[ "$user" = 65532 ] || { log "the member runs as $user, not 65532"; exit 1; }
log "the kubelet runs the member's image in a pod as uid 65532; etcdctl put"

kill -KILL "$pid"
for _ in $(seq 1 450); do
  new=$(member_pid || true)
  [ -n "$new" ] && [ "$new" != "$pid" ] && break
  sleep 0.2
done
[ -n "${new:-}" ] && [ "$new" != "$pid" ] || { log "the killed container was not restarted"; exit 1; }
serving smoke
log "container killed: restarted by the kubelet, the key is still there"

kill "$KPID"; wait "$KPID" 2>/dev/null || true; KPID=""
serving smoke
start_kubelet
sleep 5
serving smoke
[ "$(member_pid)" = "$new" ] || { log "the new kubelet replaced the running container"; exit 1; }
log "kubelet restarted: the pod kept serving and was adopted"
log "ok"
