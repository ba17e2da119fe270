#!/usr/bin/env bash
# Provides the SeaweedFS `weed` binary (an S3-compatible object store) for tests that need a real
# S3 endpoint on loopback, built from the Go module github.com/seaweedfs/seaweedfs (main package
# ./weed) with the machine's own Go toolchain. SeaweedFS tags its releases "4.53" etc., which are
# not semver, so the Go module proxy serves it only under pseudo-versions; the default pins the
# newest one it serves (commit 7506e5f91cd6 of 2026-11-09, `weed version` says 4.53).
#
# Cached under ${METASTORE_CACHE:-$HOME/.cache/metastore}/seaweedfs/<version>/bin/weed, keyed by
# version; warm runs return at once. Module and build caches are the shared ones of go-env.sh.
# The LAST line of stdout is the binary's path (progress goes to stderr):
#   WEED=$(scripts/seaweedfs.sh | tail -1)
# `scripts/seaweedfs.sh --smoke` additionally starts `weed server` with S3 on loopback using the
# flag set recorded at the bottom of this file, does a signed create-bucket/put/list/get/delete
# round trip with curl --aws-sigv4, and stops the server again.
#
# Knobs: SEAWEEDFS_VERSION (a module version the proxy serves), SEAWEEDFS_BUILD_P (go build -p).
set -euo pipefail

VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
MODULE=github.com/seaweedfs/seaweedfs
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
ROOT="$CACHE/seaweedfs/$VERSION"
BIN="$ROOT/bin/weed"
log() { echo "seaweedfs: $*" >&2; }

SMOKE=0
case "${1:-}" in
  --smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

if [ -x "$BIN" ] && [ "$SMOKE" = 0 ]; then
  echo "$BIN"
  exit 0
fi

# ---------------------------------------------------------------- Go build --
build_weed() {
  [ -x "$BIN" ] && return 0
  source "$(dirname "${BASH_SOURCE[0]}")/go-env.sh"
  mkdir -p "$ROOT/bin"

  # Build in the module's own (read-only) source tree from the module cache, with its own go.mod
  # and go.sum: exactly upstream's dependency versions and its replace directive (go-bip39), which
  # `go install module@version` would refuse.
  log "fetching $MODULE@$VERSION"
  local src
  src="$(cd "$ROOT" && go mod download -json "$MODULE@$VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -f "$src/go.mod" ] || { log "cannot fetch $MODULE@$VERSION"; exit 1; }

  local need_go have_go
  need_go="$(awk '$1=="go"{print $2; exit}' "$src/go.mod")"
  have_go="$(go env GOVERSION)"; have_go="${have_go#go}"
  if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -1)" != "$need_go" ]; then
    log "$MODULE@$VERSION needs go $need_go, machine has go $have_go; pick an older SEAWEEDFS_VERSION"
    exit 1
  fi

  local commit="${VERSION##*-}" p_flag=()
  [ -n "${SEAWEEDFS_BUILD_P:-}" ] && p_flag=(-p "$SEAWEEDFS_BUILD_P")
  local start=$SECONDS tmp="$BIN.tmp.$$"
  log "building weed from $MODULE@$VERSION (cold: about 10 minutes on 2 cores)"
  # -C: cwd of the build is the module root; -mod=readonly: the cached tree is not writable.
  nice -n 10 go build -C "$src" "${p_flag[@]}" -mod=readonly -trimpath \
    -ldflags "-s -w -X $MODULE/weed/util/version.COMMIT=$commit" -o "$tmp" ./weed >&2
  mv -f "$tmp" "$BIN"
  log "built in $((SECONDS - start))s: $("$BIN" version 2>&1 | head -1)"
}

build_weed
[ "$SMOKE" = 1 ] && smoke
echo "$BIN"
