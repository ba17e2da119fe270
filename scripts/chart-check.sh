#!/usr/bin/env bash
# Checks the Helm chart offline: helm lint (with and without the optional monitoring objects),
# the rendered manifests validated strictly against the Kubernetes schemas, the alerting rules
# with promtool, and deploy/operator.yaml up to date with the chart (`make manifests`).
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(bash scripts/k8s-tools.sh | tail -1)
CHART=charts/metastore-operator
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$T/helm" lint "$CHART" --strict
"$T/helm" lint "$CHART" --strict --set metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true
"$T/helm" template metastore-operator "$CHART" --namespace metastore-system --include-crds > "$tmp/render.yaml"
"$T/kubernetes-validate" --strict --quiet "$tmp/render.yaml"
"$T/helm" template metastore-operator "$CHART" --namespace team-a --set watchNamespace=team-a > "$tmp/ns.yaml"
"$T/kubernetes-validate" --strict --quiet "$tmp/ns.yaml"
"$T/helm" template metastore-operator "$CHART" --namespace ops --set rbac.clusterWide=true > "$tmp/wide.yaml"
"$T/kubernetes-validate" --strict --quiet "$tmp/wide.yaml"
# Namespaced by default: a Role (no ClusterRole), the operator told its namespace, and
# NetworkPolicies for members and the operator; cluster-wide only when asked.
grep -q '^kind: ClusterRole' "$tmp/render.yaml" && { echo "chart-check: ClusterRole by default" >&2; exit 1; }
grep -q -- '- --namespace=metastore-system' "$tmp/render.yaml" || { echo "chart-check: operator not namespaced" >&2; exit 1; }
[ "$(grep -c '^kind: NetworkPolicy' "$tmp/render.yaml")" = 2 ] || { echo "chart-check: NetworkPolicies missing" >&2; exit 1; }
grep -q '^kind: ClusterRole$' "$tmp/wide.yaml" || { echo "chart-check: rbac.clusterWide made no ClusterRole" >&2; exit 1; }
grep -q -- '--namespace=' "$tmp/wide.yaml" && { echo "chart-check: clusterWide still namespaced" >&2; exit 1; }
# The chart rejects bad values through values.schema.json.
if "$T/helm" template x "$CHART" --set replicas=-1 >/dev/null 2>&1; then
  echo "chart-check: replicas=-1 was accepted" >&2; exit 1
fi
{ echo "groups:"; sed 's/^/  /' "$CHART/files/alerts.yaml"; } > "$tmp/rules.yaml"
"$T/promtool" check rules "$tmp/rules.yaml"
if ! diff -u deploy/operator.yaml "$tmp/render.yaml"; then
  echo "chart-check: deploy/operator.yaml is stale: run make manifests" >&2; exit 1
fi
echo "chart-check: ok"
