#!/usr/bin/env bash
# Provides a Prometheus server with Kubernetes service discovery (Debian's build leaves it out),
# built from the Go module github.com/prometheus/prometheus (default v0.316.0, Prometheus 3.16)
# with the machine's own Go, for the e2e suite's monitoring step. Built without the web UI's
# assets (the HTTP API is all the suite uses), and with only the service discoveries the suite
# needs compiled in (Kubernetes, file), as Prometheus' own `remove_all_sd` build tag allows. Cached
# under ~/.cache/metastore/prometheus/<version>/, keyed by version; warm runs return at once.
# The LAST line of stdout is the binary's path:  PROM=$(scripts/prometheus.sh | tail -1)
set -euo pipefail
VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
ROOT="$CACHE/prometheus/$VERSION"
BIN="$ROOT/bin/prometheus"
log() { echo "prometheus: $*" >&2; }

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/go-env.sh"

mod="$ROOT/mod"
mkdir -p "$mod" "$ROOT/bin"
if ! [ -f "$mod/go.mod" ]; then
  (cd "$mod" && go mod init metastore.local/prometheusbin >&2)
fi
cat >"$mod/tools.go" <<'GO'
//go:build tools

// Pins the Prometheus server's main package as a dependency of this module.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
GO
log "building github.com/prometheus/prometheus@$VERSION (cold: a few minutes)"
(cd "$mod" && go get "github.com/prometheus/prometheus@$VERSION" >&2 && go mod tidy >&2)
start=$SECONDS
# Module v0.MNN.P is Prometheus M.NN.P.
release=$(echo "$VERSION" | sed -E 's/^v0\.([0-9])([0-9]+)\.([0-9]+)$/\1.\2.\3/')
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
(cd "$mod" && nice -n 10 go build -trimpath -ldflags "$ldflags" -tags "remove_all_sd,enable_kubernetes_sd,enable_file_sd" \
  -o "$BIN.tmp" github.com/prometheus/prometheus/cmd/prometheus >&2)
mv "$BIN.tmp" "$BIN"
log "built in $((SECONDS - start))s"
echo "$BIN"
