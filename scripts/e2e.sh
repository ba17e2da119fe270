#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e) against a real Kubernetes control plane.
#
# The control-plane binaries come from scripts/k8s-binaries.sh (built once, cached by version).
# The suite runs in a private mount namespace where a scratch copy of /etc/hosts is bind-mounted
# over /etc/hosts: the test kubelet writes the pods' DNS names there, so members and the operator
# resolve each other while the machine's own /etc/hosts is never touched. Needs root (unshare).
set -euo pipefail
cd "$(dirname "$0")/.."

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

HOSTS=$(mktemp /tmp/metastore-e2e-hosts.XXXXXX)
trap 'rm -f "$HOSTS"' EXIT
cp /etc/hosts "$HOSTS"
unshare --mount --propagation private bash -c '
  set -euo pipefail
  mount --bind "$1" /etc/hosts
  shift
  METASTORE_E2E_HOSTS=/etc/hosts "$@"
' _ "$HOSTS" $CARGO test -p metastore-e2e -- --test-threads=1 --nocapture
