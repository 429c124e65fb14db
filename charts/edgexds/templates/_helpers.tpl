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
