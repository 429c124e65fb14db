{{/* The chart name, overridable. */}}
{{- define "edgexds.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's resources. */}}
{{- define "edgexds.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version */}}
{{- define "edgexds.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels for every resource. */}}
{{- define "edgexds.labels" -}}
helm.sh/chart: {{ include "edgexds.chart" . }}
{{ include "edgexds.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: edgexds
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "edgexds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgexds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edgexds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgexds.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Exactly the access edgexds uses (a test records the verbs it sends). */}}
{{- define "edgexds.rbacRules" -}}
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [edgexds.io]
  resources: [healthprobes]
  verbs: [list, watch]
- apiGroups: [edgexds.io]
  resources: [healthprobes/status]
  verbs: [patch]
{{- end }}

{{/* Labels that select the HDS checker pods; disjoint from the control plane's, so its Service never routes to them. */}}
{{- define "edgexds.checkerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "edgexds.name" . }}-hds-checker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Where the xDS serving certificate comes from, with auto resolved against the cluster's APIs. */}}
{{- define "edgexds.tlsSource" -}}
{{- $source := .Values.xds.tls.source }}
{{- if eq $source "auto" }}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" }}certManager{{ else }}generated{{ end }}
{{- else }}{{ $source }}{{ end }}
{{- end }}

{{/* The Secret holding the xDS serving certificate (tls.crt, tls.key) and its CA (ca.crt). */}}
{{- define "edgexds.tlsSecretName" -}}
{{- if eq .Values.xds.tls.source "secret" }}{{ .Values.xds.tls.secretName }}{{ else }}{{ include "edgexds.fullname" . }}-xds-tls{{ end }}
{{- end }}

{{/* The names clients reach the xDS Service by, which its certificate must carry. */}}
{{- define "edgexds.xdsDnsNames" -}}
{{- $name := include "edgexds.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) | toJson }}
{{- end }}

{{/* The chart's HDS checker ServiceAccount. */}}
{{- define "edgexds.checkerServiceAccountName" -}}
{{- include "edgexds.fullname" . }}-checker
{{- end }}

{{/* Refuses settings that would leave the xDS port open or unusable, with what to do instead. */}}
{{- define "edgexds.checkSecurity" -}}
{{- $modes := .Values.xds.auth.modes }}
{{- $tls := include "edgexds.tlsSource" . }}
{{- if and (has "none" $modes) (gt (len $modes) 1) }}
{{- fail "xds.auth.modes: none cannot be combined with mtls or token" }}
{{- end }}
{{- if and (eq $tls "none") (not (has "none" $modes)) }}
{{- fail "xds.auth.modes mtls and token need TLS: set xds.tls.source (auto, certManager, generated or secret), or accept an open port with xds.auth.modes [none]" }}
{{- end }}
{{- if and (eq $tls "secret") (not .Values.xds.tls.secretName) }}
{{- fail "xds.tls.source secret needs xds.tls.secretName: a Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- if and (has "mtls" $modes) (not .Values.xds.auth.clientCASecret) }}
{{- fail "xds.auth.modes mtls needs xds.auth.clientCASecret: a Secret whose ca.crt client certificates chain to" }}
{{- end }}
{{- if and .Values.hdsCheckers.enabled (has "mtls" $modes) (not (has "token" $modes)) }}
{{- fail "hdsCheckers authenticate with a projected ServiceAccount token: add token to xds.auth.modes" }}
{{- end }}
{{- end }}
