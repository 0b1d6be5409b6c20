{{- define "baldurd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "baldurd.headless" -}}
{{ include "baldurd.fullname" . }}-headless
{{- end -}}

{{- define "baldurd.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "baldurd.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The DNS name of pod i: <fullname>-<i>.<headless>.<namespace>.svc.<domain> */}}
{{- define "baldurd.podHost" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "baldurd.fullname" $ctx) (index . 1) (include "baldurd.headless" $ctx) $ctx.Release.Namespace $ctx.Values.clusterDomain -}}
{{- end -}}

{{/* --peers: the first replicaCount pods, by their stable names. */}}
{{- define "baldurd.peers" -}}
{{- $ctx := . -}}
{{- $out := list -}}
{{- range $i := until (int .Values.replicaCount) -}}
{{- $out = append $out (printf "%s-%d=%s:%d" (include "baldurd.fullname" $ctx) $i (include "baldurd.podHost" (list $ctx $i)) (int $ctx.Values.ports.raft)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{- define "baldurd.auditSecret" -}}
{{- default (printf "%s-audit" (include "baldurd.fullname" .)) .Values.auditKey.existingSecret -}}
{{- end -}}

{{- define "baldurd.tlsSecret" -}}
{{- default (printf "%s-tls" (include "baldurd.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}
