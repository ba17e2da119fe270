#!/usr/bin/env bash
# Provides the newest etcd (default v3.7.3), built from the Go module go.etcd.io/etcd/server/v3
# through its etcdmain package (a three-line main) with the machine's own Go toolchain, as the
# second anchor beside 3.5.1 in the benchmarks. Cached under ~/.cache/metastore/etcd/<version>/,
# keyed by version; warm runs return at once.
# The LAST line of stdout is the binary's path:  ETCD37=$(scripts/etcd-latest.sh | tail -1)
set -euo pipefail
VERSION="${ETCD_LATEST_VERSION:-v3.7.3}"
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
ROOT="$CACHE/etcd/$VERSION"
BIN="$ROOT/bin/etcd"
log() { echo "etcd-latest: $*" >&2; }

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/go-env.sh"

mod="$ROOT/mod"
mkdir -p "$mod" "$ROOT/bin"
cat >"$mod/main.go" <<'GO'
// The etcd server, as upstream's main package builds it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
if ! [ -f "$mod/go.mod" ]; then
  (cd "$mod" && go mod init metastore.local/etcdbin >&2)
fi
log "building go.etcd.io/etcd/server/v3@$VERSION (cold: a few minutes)"
(cd "$mod" && go get "go.etcd.io/etcd/server/v3@$VERSION" >&2 && go mod tidy >&2)
(cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" . >&2)
mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2
echo "$BIN"
