#!/usr/bin/env bash
# Builds the images without a Docker daemon (scripts/images.sh --buildah, from the test build's
# binaries unless PROFILE says otherwise) and checks them as the cluster will use them:
#  - each image's configuration (user, entrypoint, ports) is what its Dockerfile's final stage
#    declares;
#  - the node image's own files run a member as the operator's pods do: uid 65532, read-only
#    root, the data volume at /var/lib/metastore, nothing else from the host but /proc; etcdctl
#    puts and gets a key through it;
#  - the operator image's binary starts as uid 65532 (its libraries are all in the image).
# Bounded: the member runs at most 60 s and is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${IMAGE_TAG:-0.2.0}"
export PROFILE="${PROFILE:-debug}"
log() { echo "images-check: $*" >&2; }
IMAGE_TAG="$TAG" bash scripts/images.sh --buildah
source scripts/buildah-env.sh

ctrs=() dirs=()
cleanup() {
  for c in "${ctrs[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "${dirs[@]}"
}
trap cleanup EXIT

for name in metastore-node metastore-operator; do
  dockerfile="deploy/docker/${name#metastore-}.Dockerfile"
  IMAGE_JSON=$(buildah inspect --type image "$name:$TAG") python3 - "$dockerfile" "$name" <<'PY'
import json, os, sys
cfg = json.loads(os.environ["IMAGE_JSON"])["OCIv1"]["config"]
lines = open(sys.argv[1]).read().splitlines()
final = lines[max(i for i, l in enumerate(lines) if l.startswith("FROM ")):]
want = {}
for l in final:
    if l.startswith("USER "):
        want["User"] = l.split(None, 1)[1]
    elif l.startswith("ENTRYPOINT "):
        want["Entrypoint"] = json.loads(l.split(None, 1)[1])
    elif l.startswith("EXPOSE "):
        want["ExposedPorts"] = sorted(p if "/" in p else p + "/tcp" for p in l.split()[1:])
got = {"User": cfg.get("User"), "Entrypoint": cfg.get("Entrypoint"),
       "ExposedPorts": sorted(cfg.get("ExposedPorts") or {})}
if got != want:
    sys.exit(f"{sys.argv[2]}: image config {got} is not the Dockerfile's {want}")
print(f"{sys.argv[2]}: user {got['User']}, entrypoint {got['Entrypoint']}, ports {got['ExposedPorts']}")
PY
done

# Runs the entrypoint of image $1 with args $2..., as its user, root read-only, a fresh data
# volume at /var/lib/metastore, in its own mount namespace, output to $RUN_LOG; sets RUN_PID.
run_image() {
  local image=$1; shift
  local ctr root data entry user
  ctr=$(buildah from -q "$image")
  ctrs+=("$ctr")
  root=$(buildah mount "$ctr")
  data=$(mktemp -d)
  dirs+=("$data")
  chown 65532:65532 "$data"
  mkdir -p "$root/proc" "$root/var/lib/metastore"
  entry=$(buildah inspect --type image --format '{{index .OCIv1.Config.Entrypoint 0}}' "$image")
  user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  unshare --mount --propagation private --fork bash -c '
    set -e
    root=$1 data=$2 user=$3 entry=$4; shift 4
    mount --bind "$root" "$root"
    mount -o remount,bind,ro "$root"
    mount --bind "$data" "$root/var/lib/metastore"
    mount -t proc proc "$root/proc"
    exec chroot --userspec="$user" "$root" "$entry" "$@"
  ' _ "$root" "$data" "$user" "$entry" "$@" >"$RUN_LOG" 2>&1 &
  RUN_PID=$!
}
RUN_LOG=$(mktemp)
dirs+=("$RUN_LOG")
# Stops what run_image started: unshare ignores SIGTERM while it waits, so its child (the
# image's process, by PID) is the one told to stop.
stop_run() {
  local child
  for child in $(pgrep -P "$1" || true); do kill "$child" 2>/dev/null || true; done
  wait "$1" 2>/dev/null || true
}

log "metastore-node image: a member from the image's files"
ip=127.0.0.1
port=$((30000 + RANDOM % 2000))
run_image "metastore-node:$TAG" --name image-check --data-dir /var/lib/metastore/data \
  --listen-client-urls "http://$ip:$port" --advertise-client-urls "http://$ip:$port" \
  --listen-peer-urls "http://$ip:$((port + 1))" --initial-advertise-peer-urls "http://$ip:$((port + 1))" \
  --listen-metrics-urls "http://$ip:$((port + 2))" --initial-cluster "image-check=http://$ip:$((port + 1))"
pid=$RUN_PID
( sleep 60; stop_run "$pid" ) >/dev/null 2>&1 &
watchdog=$!
ok=""
for _ in $(seq 1 100); do
  if etcdctl --endpoints "http://$ip:$port" --command-timeout=1s put image-check works >/dev/null 2>&1; then
    ok=$(etcdctl --endpoints "http://$ip:$port" get --print-value-only image-check)
    break
  fi
  sleep 0.2
done
stop_run "$pid"
kill "$watchdog" 2>/dev/null || true
[ "$ok" = works ] || { log "the member in the image did not serve a put and get:"; cat "$RUN_LOG" >&2; exit 1; }
log "metastore-node image: put and get through the member as uid 65532 on a read-only root"

log "metastore-operator image: the binary starts from the image's files"
run_image "metastore-operator:$TAG" --help
wait "$RUN_PID" || { log "metastore-operator --help failed in its image:"; cat "$RUN_LOG" >&2; exit 1; }
log "ok"
