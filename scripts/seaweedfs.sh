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
# `scripts/seaweedfs.sh --smoke` additionally starts `weed mini` (master + volume + filer + S3 in
# one process) on loopback with the flag set recorded at the bottom of this file, does a signed
# create-bucket / multipart put / list / get / delete round trip with curl --aws-sigv4, and stops
# it again (about 7 s in all).
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
  log "building weed from $MODULE@$VERSION (cold: ~8 min on 2 cores, ~4.5 min when the module cache is warm)"
  # -C: cwd of the build is the module root; -mod=readonly: the cached tree is not writable.
  nice -n 10 go build -C "$src" "${p_flag[@]}" -mod=readonly -trimpath \
    -ldflags "-s -w -X $MODULE/weed/util/version.COMMIT=$commit" -o "$tmp" ./weed >&2
  mv -f "$tmp" "$BIN"
  log "built in $((SECONDS - start))s: $("$BIN" version 2>&1 | head -1)"
}

# ------------------------------------------------------------------- smoke --
# Starts a throwaway single-node SeaweedFS with S3 on loopback the way tests should (flag set
# explained at the bottom of this file). Sets SW_PID and SW_ENDPOINT. Ports: SW_MASTER_PORT,
# SW_VOLUME_PORT, SW_FILER_PORT, SW_S3_PORT, SW_ADMIN_PORT; each also takes port+10000 for its
# gRPC listener, so keep them below 22768 (gRPC below the 32768 ephemeral-port floor).
SW_ACCESS_KEY=metastore-test
SW_SECRET_KEY=metastore-test-secret
sw_ports() {
  echo "${SW_MASTER_PORT:-19333} ${SW_VOLUME_PORT:-18080} ${SW_FILER_PORT:-18888} ${SW_S3_PORT:-18333} ${SW_ADMIN_PORT:-18535}"
}
start_weed() {
  local t="$1" mp vp fp sp ap i code ready=0
  read -r mp vp fp sp ap < <(sw_ports)
  mkdir -p "$t/data" "$t/conf"
  cat >"$t/conf/s3.json" <<JSON
{
  "identities": [
    {
      "name": "metastore",
      "credentials": [{"accessKey": "$SW_ACCESS_KEY", "secretKey": "$SW_SECRET_KEY"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
  local start=$SECONDS
  "$BIN" -logtostderr -config_dir="$t/conf" mini \
    -dir="$t/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$mp" -volume.port="$vp" -filer.port="$fp" -s3.port="$sp" \
    -admin.port="$ap" -admin.port.legacy=0 -admin.ui=false -webdav=false \
    -s3.config="$t/conf/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.telemetry=false -master.volumeSizeLimitMB=64 -volume.max=100 \
    -filer.localSocket="$t/filer.sock" -s3.localSocket="$t/s3.sock" \
    >"$t/weed.log" 2>&1 &
  SW_PID=$!
  SW_ENDPOINT="http://127.0.0.1:$sp"
  # Ready = a signed ListBuckets answers 200 (mini starts S3 after master, volume and filer).
  for i in $(seq 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$SW_ACCESS_KEY:$SW_SECRET_KEY" "$SW_ENDPOINT/" 2>/dev/null || true)"
    [ "$code" = 200 ] && { ready=1; break; }
    kill -0 "$SW_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$ready" = 0 ]; then log "S3 not ready (last status $code)"; tail -30 "$t/weed.log" >&2; return 1; fi
  log "S3 ready at $SW_ENDPOINT after $((SECONDS - start))s"
}

# SIGTERM (mini stops gracefully in ~3 s), SIGKILL after 15 s. The gRPC listeners also bind
# /tmp/seaweedfs-<svc>-grpc-<grpc port>.sock (hard-coded paths); a graceful stop removes them,
# after a SIGKILL we do.
stop_weed() {
  local pid="$1" p i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
    for p in $(sw_ports); do rm -f /tmp/seaweedfs-*-grpc-$((p + 10000)).sock; done
  fi
  wait "$pid" 2>/dev/null || true
}

# Signed S3 round trip with curl's own SigV4 (path-style URLs, region us-east-1): create bucket,
# 7 MiB multipart upload in two parts, list, get back and compare, delete object and bucket.
smoke() {
  local t b="metastore-smoke" k="snap/0001.bin" upload_id etag1 etag2
  t="$(mktemp -d "${TMPDIR:-/tmp}/seaweedfs-smoke.XXXXXX")"
  SW_DIR="$t"; SW_PID=""
  trap '[ -n "$SW_PID" ] && stop_weed "$SW_PID"; rm -rf "$SW_DIR"' EXIT
  start_weed "$t"
  local s3=(curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$SW_ACCESS_KEY:$SW_SECRET_KEY")
  local u="$SW_ENDPOINT/$b"
  "${s3[@]}" -X PUT "$u" >&2
  head -c $((5 << 20)) /dev/urandom >"$t/part1"
  head -c $((2 << 20 | 123)) /dev/urandom >"$t/part2"
  cat "$t/part1" "$t/part2" >"$t/object"
  upload_id="$("${s3[@]}" -X POST "$u/$k?uploads=" | sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p')"
  [ -n "$upload_id" ] || { log "CreateMultipartUpload returned no UploadId"; return 1; }
  etag1="$("${s3[@]}" -T "$t/part1" -D - -o /dev/null "$u/$k?partNumber=1&uploadId=$upload_id" |
    tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')"
  etag2="$("${s3[@]}" -T "$t/part2" -D - -o /dev/null "$u/$k?partNumber=2&uploadId=$upload_id" |
    tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')"
  printf '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%s</ETag></Part><Part><PartNumber>2</PartNumber><ETag>%s</ETag></Part></CompleteMultipartUpload>' \
    "$etag1" "$etag2" >"$t/complete.xml"
  "${s3[@]}" -X POST -H "Content-Type: application/xml" \
    -H "x-amz-content-sha256: $(sha256sum "$t/complete.xml" | cut -d" " -f1)" --data-binary "@$t/complete.xml" \
    "$u/$k?uploadId=$upload_id" >/dev/null
  "${s3[@]}" "$u?list-type=2" | grep -q "<Key>$k</Key>" || { log "object not listed"; return 1; }
  "${s3[@]}" -o "$t/back" "$u/$k"
  cmp "$t/object" "$t/back" || { log "object read back differs"; return 1; }
  "${s3[@]}" -X DELETE "$u/$k"
  "${s3[@]}" -X DELETE "$u"
  log "smoke ok: multipart put of $(stat -c %s "$t/object") bytes, list, get (equal bytes), delete"
}

build_weed
if [ "$SMOKE" = 1 ]; then smoke; fi
echo "$BIN"

# ------------------------------------------------------------------------------
# Working flag set (weed 4.53, proved by --smoke and by a boto3 round trip). $T is a fresh temp
# dir holding data/ and conf/s3.json:
#   {"identities": [{"name": "metastore",
#     "credentials": [{"accessKey": "metastore-test", "secretKey": "metastore-test-secret"}],
#     "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
#
# weed -logtostderr -config_dir=$T/conf mini
#   -dir=$T/data -ip=127.0.0.1 -ip.bind=127.0.0.1     (every listener on loopback)
#   -master.port=19333 -volume.port=18080 -filer.port=18888 -s3.port=18333 -admin.port=18535
#                                  (gRPC on each port+10000; keep that under 32768, the ephemeral
#                                   floor, or an outbound connection can take it first)
#   -admin.port.legacy=0 -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0
#                                  (mini still runs its admin server and a maintenance worker on
#                                   -admin.port; the rest are off)
#   -s3.config=$T/conf/s3.json -master.telemetry=false
#   -master.volumeSizeLimitMB=64 -volume.max=100   (volumes are sparse files, nothing preallocated)
#   -filer.localSocket=$T/filer.sock -s3.localSocket=$T/s3.sock   (default: /tmp/seaweedfs-*.sock)
#
# -logtostderr: otherwise glog writes weed.* files into /tmp. -config_dir: only our conf dir (and
# ./, ~/.seaweedfs, /etc/seaweedfs) is searched for *.toml. Ready about 4 s after start (a signed
# GET / answers 200); a graceful SIGTERM stop takes about 3 s.
# Clients: endpoint http://127.0.0.1:18333, path-style addressing, region us-east-1 (any region
# name is accepted), SigV4. curl --aws-sigv4 needs an explicit x-amz-content-sha256 header on a
# POST with a body (CompleteMultipartUpload), else SignatureDoesNotMatch.
#
# Why mini rather than `weed server -filer -s3`: server's S3 answers after ~2 s, but a fresh master
# holds volume-id allocation ~5 s (master.toml [master.volume_growth] allocation_deferral = "0s"
# lifts that) and its filer joins the lock ring only ~9 s after start, so the first
# CompleteMultipartUpload blocks ~7 s; its graceful stop takes 15-20 s. It also grows 7 volumes per
# bucket, so the default -volume.max=8 leaves room for one bucket only. mini skips both holds
# for a single master, grows one volume per bucket and stops in ~3 s.
