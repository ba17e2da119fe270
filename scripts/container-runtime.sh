#!/usr/bin/env bash
# What the real kubelet needs on this machine to run pods: containerd and runc, the CNI plugins
# (bridge, host-local, loopback) and dnsmasq for pod DNS, from Debian; and the pod sandbox's
# pause image, compiled from the pinned Kubernetes module's pause.c and cached by version.
# Idempotent. The LAST line of stdout is the pause image's OCI archive.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
log() { echo "container-runtime: $*" >&2; }

K8S_BIN=$(bash scripts/k8s-binaries.sh | tail -1)
K8S_VERSION=$(basename "$(dirname "$K8S_BIN")")
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (Debian)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

PAUSE_DIR="$CACHE/pause/3.10"
if ! [ -f "$PAUSE_DIR/pause.tar" ]; then
  source scripts/buildah-env.sh
  mkdir -p "$PAUSE_DIR"
  gcc -Os -static -DVERSION=3.10 -o "$PAUSE_DIR/pause" \
    "$CACHE/go/pkg/mod/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  ctr_id=$(buildah from scratch)
  buildah copy "$ctr_id" "$PAUSE_DIR/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr_id"
  buildah commit -q "$ctr_id" registry.k8s.io/pause:3.10 >/dev/null
  buildah rm "$ctr_id" >/dev/null
  buildah push -q registry.k8s.io/pause:3.10 "oci-archive:$PAUSE_DIR/pause.tar:registry.k8s.io/pause:3.10"
fi
echo "$PAUSE_DIR/pause.tar"
