{{/*
Names and labels shared by every object. inferplane.deploy.release.Release defines the same ones for
`inferplane render`; tests/deploy/test_chart_parity.py holds both renderings equal.
*/}}

{{- define "inferplane.selectorLabels" -}}
app.kubernetes.io/name: inferplane
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "inferplane.labels" -}}
{{ include "inferplane.selectorLabels" . }}
app.kubernetes.io/part-of: inferplane
{{- end }}

{{/* metadata of a namespaced object: (dict "root" $ "name" NAME "component" COMPONENT) */}}
{{- define "inferplane.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "inferplane.labels" . | nindent 2 }}
{{- end }}

{{- define "inferplane.poolName" -}}
{{ .Values.pool.name | default .Release.Name }}
{{- end }}

{{- define "inferplane.pickerHost" -}}
{{ .Release.Name }}-picker.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{- define "inferplane.image" -}}
{{ .repository }}:{{ .tag }}
{{- end }}

{{/* prometheus.io scrape annotations: (dict "root" $ "port" PORT) */}}
{{- define "inferplane.scrapeAnnotations" -}}
{{- if .root.Values.monitoring.prometheusAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* A ServiceAccount: (dict "root" $ "name" NAME "component" C "account" .Values.serviceAccounts.X) */}}
{{- define "inferplane.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "inferplane.metadata" . | nindent 2 }}
  {{- with .account.gcpServiceAccount }}
  annotations:
    iam.gke.io/gcp-service-account: {{ . }}
  {{- end }}
{{- end }}

{{/* The HF_TOKEN env entry when modelServer.hfTokenSecret names a Secret (a list, possibly empty). */}}
{{- define "inferplane.hfTokenEnv" -}}
{{- if .Values.modelServer.hfTokenSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.modelServer.hfTokenSecret }}
      key: HF_TOKEN
      optional: true
{{- end }}
{{- end }}
