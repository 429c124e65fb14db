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
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes, grpcroutes]
  verbs: [list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes/status, grpcroutes/status]
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

{{/* Refuses injection where it cannot work, with what to do instead. */}}
{{- define "edgexds.checkInjection" -}}
{{- if .Values.injection.enabled }}
{{- if not (semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "injection needs Kubernetes 1.29 or newer, for native sidecars (init containers with restartPolicy Always); this cluster is %s: set injection.enabled=false" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if eq (include "edgexds.tlsSource" .) "none" }}
{{- fail "injection needs xds.tls: the API server calls webhooks over HTTPS only, and the webhook serves the xDS certificate; set xds.tls.source, or injection.enabled=false" }}
{{- end }}
{{- if not (has .Values.injection.failurePolicy (list "Fail" "Ignore")) }}
{{- fail "injection.failurePolicy is Fail or Ignore" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The xDS address injected sidecars dial: the Service's name its certificate carries. */}}
{{- define "edgexds.xdsAddress" -}}
{{- printf "%s.%s.svc:%v" (include "edgexds.fullname" .) .Release.Namespace .Values.service.xdsPort }}
{{- end }}

{{/* The MutatingWebhookConfiguration; `caBundle` is the CA when the chart knows it (base64),
     else cert-manager's CA injector fills it in. Two webhooks: namespaces that opt in, and
     pods that opt in elsewhere; the system namespaces and the release's own never reach it. */}}
{{- define "edgexds.injectionWebhook" -}}
{{- $root := .root }}
{{- $fullname := include "edgexds.fullname" $root }}
{{- $excluded := list "kube-system" "kube-public" "kube-node-lease" $root.Release.Namespace }}
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ $fullname }}-{{ $root.Release.Namespace }}-inject
  labels:
    {{- include "edgexds.labels" $root | nindent 4 }}
  {{- if eq (include "edgexds.tlsSource" $root) "certManager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ $root.Release.Namespace }}/{{ $fullname }}-xds
  {{- end }}
webhooks:
{{- range $webhook := list (dict "name" "namespace" "namespaceOp" "In" "podOp" "NotIn" "podValue" "false") (dict "name" "pod" "namespaceOp" "NotIn" "podOp" "In" "podValue" "true") }}
  - name: {{ $webhook.name }}.inject.edgexds.io
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: {{ $root.Values.injection.failurePolicy }}
    timeoutSeconds: {{ $root.Values.injection.timeoutSeconds }}
    reinvocationPolicy: IfNeeded
    matchPolicy: Equivalent
    clientConfig:
      service:
        name: {{ $fullname }}
        namespace: {{ $root.Release.Namespace }}
        path: /inject
        port: 443
      {{- with $.caBundle }}
      caBundle: {{ . }}
      {{- end }}
    rules:
      - operations: [CREATE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [pods]
        scope: Namespaced
    namespaceSelector:
      matchExpressions:
        - { key: edgexds.io/inject, operator: {{ $webhook.namespaceOp }}, values: [enabled] }
        - { key: kubernetes.io/metadata.name, operator: NotIn, values: {{ $excluded | toJson }} }
    objectSelector:
      matchExpressions:
        - { key: edgexds.io/inject, operator: {{ $webhook.podOp }}, values: [{{ $webhook.podValue | quote }}] }
{{- end }}
{{- end }}
