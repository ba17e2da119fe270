#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e) against a real Kubernetes control plane.
#
# The control-plane binaries (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet)
# come from scripts/k8s-binaries.sh (built once from the pinned module, cached by version).
#
# METASTORE_E2E_KUBELET=real (the default, and what CI runs): pods are real containers. The
# images are built from this build's binaries (scripts/images.sh, buildah), and the suite runs
# in private network and mount namespaces (scripts/e2e-node.sh) where containerd and runc (from
# Debian) run them for the real kubelet, pods get addresses on a CNI bridge, dnsmasq serves their
# DNS names and the scheduler places them.
#
# METASTORE_E2E_KUBELET=test: a fast mode for local iteration. A test kubelet runs pods as local
# processes on loopback addresses and writes their DNS names to a scratch /etc/hosts,
# bind-mounted in a private mount namespace. Needs root (unshare) either way.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${METASTORE_E2E_KUBELET:-real}"
TAG="${IMAGE_TAG:-0.2.0}"
PREVIOUS_TAG="${METASTORE_PREVIOUS_VERSION:-0.1.0}"
TARGET="${CARGO_TARGET_DIR:-target}"

BIN=$(bash scripts/k8s-binaries.sh | tail -1)
export METASTORE_K8S_TOOLS=$(bash scripts/k8s-tools.sh | tail -1)
export PATH="$METASTORE_K8S_TOOLS:$PATH"
export METASTORE_K8S_BIN="$BIN"
# SeaweedFS, the S3-compatible store backups go to (built once, cached by version).
export METASTORE_WEED=$(bash scripts/seaweedfs.sh | tail -1)
# Prometheus with Kubernetes service discovery (built once, cached by version).
export METASTORE_PROMETHEUS=$(bash scripts/prometheus.sh | tail -1)
CARGO="${CARGO:-cargo}"
# Build first, outside the namespace, so the test run below only runs. The previous minor
# version's member build is the upgrade's starting point.
export METASTORE_NODE_PREVIOUS=$(CARGO="$CARGO" bash scripts/node-previous.sh | tail -1)
$CARGO build -p metastore-node -p metastore-operator
$CARGO test -p metastore-e2e --no-run
TEST=($CARGO test -p metastore-e2e -- --test-threads=1 --nocapture)

case "$MODE" in
real)
  export PAUSE_TAR=$(bash scripts/container-runtime.sh | tail -1)
  PROFILE=debug IMAGE_TAG="$TAG" CARGO="$CARGO" bash scripts/images.sh --buildah
  NODE_BIN="$METASTORE_NODE_PREVIOUS" IMAGE_TAG="$PREVIOUS_TAG" bash scripts/images.sh --buildah
  export IMAGES="$TARGET/images/metastore-node-$TAG.tar $TARGET/images/metastore-operator-$TAG.tar \
$TARGET/images/metastore-node-$PREVIOUS_TAG.tar"
  unshare --net --mount --propagation private bash scripts/e2e-node.sh "${TEST[@]}"
  ;;
test)
  HOSTS=$(mktemp /tmp/metastore-e2e-hosts.XXXXXX)
  trap 'rm -f "$HOSTS"' EXIT
  cp /etc/hosts "$HOSTS"
  unshare --mount --propagation private bash -c '
    set -euo pipefail
    mount --bind "$1" /etc/hosts
    shift
    METASTORE_E2E_KUBELET=test METASTORE_E2E_HOSTS=/etc/hosts "$@"
  ' _ "$HOSTS" "${TEST[@]}"
  ;;
*) echo "METASTORE_E2E_KUBELET must be real or test, not $MODE" >&2; exit 2 ;;
esac
