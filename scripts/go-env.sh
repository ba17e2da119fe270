# Sourced by the scripts that build Go programs from the module proxy (k8s-binaries.sh,
# etcd-latest.sh): the machine's own toolchain, module and build caches under $CACHE (shared, so
# re-runs and the other script are fast), static binaries. Needs CACHE and a log function.
command -v go >/dev/null || { log "go not found"; exit 1; }
export GOTOOLCHAIN=local
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/pkg/mod"
export GOCACHE="$CACHE/go-build"
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0
