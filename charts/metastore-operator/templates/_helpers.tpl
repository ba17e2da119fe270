{{- define "metastore-operator.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "metastore-operator.labels" -}}
app.kubernetes.io/name: metastore-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "metastore-operator.selector" -}}
app.kubernetes.io/name: metastore-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The namespace whose MetaStores the operator manages; empty: all namespaces (clusterWide). */}}
{{- define "metastore-operator.watchNamespace" -}}
{{- if .Values.watchNamespace -}}
{{- .Values.watchNamespace -}}
{{- else if not .Values.rbac.clusterWide -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}
