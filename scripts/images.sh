#!/usr/bin/env bash
# Container images of metastore-node and metastore-operator, tagged $IMAGE_TAG (default 0.2.0).
#
# With a Docker daemon: `docker build` of deploy/docker/*.Dockerfile, which build from source and
# start from registry images (needs internet access).
#
# Without one (or with --buildah): buildah, which needs neither a daemon nor a registry. A base
# image made from this machine's own Debian files stands in for distroless/cc-debian12:nonroot
# (glibc and libgcc as the binaries link them, the CA bundle, the nonroot user 65532, /tmp), and
# each image is built from its Dockerfile's own final stage, rewritten only to start from that
# base and to copy the binary from $CARGO_TARGET_DIR/$PROFILE instead of the build stage: the
# user, paths, ports and entrypoint are the Dockerfile's. No RUN step, so no container runtime.
# The images stay in buildah's storage (vfs) and are written as OCI archives to
# $CARGO_TARGET_DIR/images/<name>-<tag>.tar.
#
# Env: IMAGE_TAG, PROFILE (release, or debug to reuse the test build), CARGO_TARGET_DIR, CARGO;
# NODE_BIN: package this member binary (e.g. the previous version's, for the e2e's upgrade) as
# the node image only, without building.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${IMAGE_TAG:-0.2.0}"
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}"
CARGO="${CARGO:-cargo}"
BASE=localhost/metastore-base:debian12
log() { echo "images: $*" >&2; }

if [ "${1:-}" != "--buildah" ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker build -f deploy/docker/node.Dockerfile -t "metastore-node:$TAG" .
  docker build -f deploy/docker/operator.Dockerfile -t "metastore-operator:$TAG" .
  exit 0
fi

source scripts/buildah-env.sh

NAMES=(metastore-node metastore-operator)
if [ -n "${NODE_BIN:-}" ]; then
  NAMES=(metastore-node)
  BINDIR=$(mktemp -d)
  trap 'rm -rf "$BINDIR"' EXIT
  cp "$NODE_BIN" "$BINDIR/metastore-node"
else
  profile_flag=(); [ "$PROFILE" = release ] && profile_flag=(--release)
  log "building the binaries ($PROFILE)"
  $CARGO build -q "${profile_flag[@]}" -p metastore-node -p metastore-operator --bin metastore-node \
    --bin metastore-operator
  BINDIR="$TARGET/$PROFILE"
fi

# The base: what the binaries load (from ldd), the CA bundle and the nonroot user.
log "base image $BASE from this machine's files"
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true; [ -z "${NODE_BIN:-}" ] || rm -rf "$BINDIR"' EXIT
root=$(buildah mount "$ctr")
for lib in $(ldd "${NAMES[@]/#/$BINDIR/}" |
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u); do
  cp -L --parents "$lib" "$root/"
done
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"
buildah umount "$ctr" >/dev/null
buildah commit -q "$ctr" "$BASE" >/dev/null

mkdir -p "$TARGET/images"
for name in "${NAMES[@]}"; do
  dockerfile="deploy/docker/${name#metastore-}.Dockerfile"
  ctx=$(mktemp -d)
  cp "$BINDIR/$name" "$ctx/"
  # The final stage, from its FROM on: FROM becomes the base, `COPY --from=<stage> /x dest`
  # copies x from the context.
  awk '/^FROM /{stage=""} {stage=stage $0 "\n"} END{printf "%s", stage}' "$dockerfile" |
    sed -E "s#^FROM .*#FROM $BASE#; s#^COPY --from=[^ ]+ /([^ ]+) #COPY \\1 #" >"$ctx/Containerfile"
  log "$name:$TAG from the final stage of $dockerfile"
  buildah bud -q -f "$ctx/Containerfile" -t "$name:$TAG" "$ctx" >/dev/null
  rm -f "$TARGET/images/$name-$TAG.tar"
  buildah push -q "$name:$TAG" "oci-archive:$TARGET/images/$name-$TAG.tar:$name:$TAG"
  rm -rf "$ctx"
done
log "built ${NAMES[*]/%/:$TAG}; archives in $TARGET/images"
# Earlier builds' images, now untagged, would otherwise pile up in vfs storage (full copies).
buildah rmi --prune >/dev/null 2>&1 || true
