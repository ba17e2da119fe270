#!/usr/bin/env bash
# The e2e's node, inside the private network and mount namespaces `make e2e` makes (never run it
# outside one: it rewrites /etc/hosts and takes addresses). It brings up:
#  - loopback, the node's address 10.77.0.1 and the `kubernetes` Service's 10.0.0.1 on it;
#  - containerd with the bridge CNI (pods get 10.88.0.0/16 on cni0, the namespace routes to
#    them), the images imported (pause, the node image of this build and of the previous minor
#    version, the operator image);
#  - dnsmasq on 10.77.0.1, the cluster DNS the kubelet gives pods, answering from the hosts file
#    the test writes as $METASTORE_E2E_DNS_DIR/pods (and nothing else: no upstream);
#  - a scratch /etc/hosts (bind-mounted) that the test writes the same records to;
# then runs its arguments (the test) and stops everything it started, by PID.
# Env in: PAUSE_TAR, IMAGES (OCI archives, space separated). Env out (to the test):
# METASTORE_E2E_KUBELET=real, METASTORE_E2E_CONTAINERD, METASTORE_E2E_DNS_DIR,
# METASTORE_E2E_DNS_PID, METASTORE_E2E_NODE_IP, METASTORE_E2E_HOSTS.
set -euo pipefail
NODE_IP=10.77.0.1
W=$(mktemp -d /tmp/metastore-e2e-node.XXXXXX)
CPID="" DPID=""
CTR=(ctr --address "$W/containerd.sock" -n k8s.io)
cleanup() {
  set +e
  if [ -n "$CPID" ]; then
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    sleep 1
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete "$t" >/dev/null 2>&1; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1; done
    kill "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null
    # Shims of this containerd (its socket is under $W) that outlived their tasks.
    for pid in $(pgrep -f -- "-address $W/containerd.sock" || true); do kill -KILL "$pid" 2>/dev/null; done
  fi
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null
  for m in $(mount | awk '$3 ~ /^\/(tmp\/metastore-e2e-node|run\/netns|var\/run\/netns)/ {print $3}' | sort -r); do
    umount "$m" 2>/dev/null
  done
  rm -rf "$W"
}
trap cleanup EXIT

ip link set lo up
ip addr add "$NODE_IP/32" dev lo
ip addr add 10.0.0.1/32 dev lo

mkdir -p "$W/cni" "$W/dns"
cat >"$W/cni/10-pods.conflist" <<CONF
{"cniVersion": "0.4.0", "name": "pods", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$W/cni-ipam",
            "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
CONF
cat >"$W/containerd.toml" <<CONF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$W/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  # No CAP_SYS_RESOURCE in this machine's container.
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    # overlayfs cannot nest in this machine's overlay root.
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/cni"
CONF
containerd --config "$W/containerd.toml" >"$W/containerd.log" 2>&1 &
CPID=$!
for _ in $(seq 1 50); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
for archive in "$PAUSE_TAR" $IMAGES; do
  "${CTR[@]}" images import --snapshotter native "$archive" >/dev/null
done
# The kubelet asks for images by their normalized names.
for ref in $("${CTR[@]}" images ls -q | grep '^metastore-'); do
  "${CTR[@]}" images tag --force "$ref" "docker.io/library/$ref" >/dev/null
done

: >"$W/dns/pods"
# Records from one hosts file, reread (and the cache cleared) on SIGHUP, which the test sends
# after each change: a re-created pod's old address must be gone at once.
dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$W/dns/pods" --user=root \
  --listen-address="$NODE_IP" --bind-interfaces --local=/cluster.local/ --local=/svc/ \
  --pid-file="$W/dnsmasq.pid" --log-facility="$W/dnsmasq.log" &
DPID=$!

cp /etc/hosts "$W/hosts"
mount --bind "$W/hosts" /etc/hosts

export METASTORE_E2E_KUBELET=real METASTORE_E2E_CONTAINERD="$W/containerd.sock" \
  METASTORE_E2E_DNS_DIR="$W/dns" METASTORE_E2E_DNS_PID="$DPID" METASTORE_E2E_NODE_IP="$NODE_IP" METASTORE_E2E_HOSTS=/etc/hosts
"$@"
