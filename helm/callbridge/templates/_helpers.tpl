{{/* Chart name, truncated to the 63 characters Kubernetes allows in a name. */}}
{{- define "callbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-<chart> unless the release name already contains it. */}}
{{- define "callbridge.fullname" -}}
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

{{- define "callbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "callbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "callbridge.labels" -}}
helm.sh/chart: {{ include "callbridge.chart" . }}
{{ include "callbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "callbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "callbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret whose keys become environment variables: the user's, or the one the chart creates. */}}
{{- define "callbridge.secretName" -}}
{{- default (include "callbridge.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Whether the chart creates a Secret at all. */}}
{{- define "callbridge.createSecret" -}}
{{- if and (not .Values.secret.existingSecret) (or .Values.secret.env .Values.secret.generateApiKey) }}true{{- end }}
{{- end }}

{{/*
The effective callbridge configuration, as YAML text. `configOverride`, when set, replaces
`config` whole (an object, or the text of a config file: `--set-file configOverride=FILE`);
otherwise `config` is used, which Helm deep-merges with the chart's defaults.
*/}}
{{- define "callbridge.configYaml" -}}
{{- $o := .Values.configOverride }}
{{- if and $o (kindIs "string" $o) }}
{{- $parsed := fromYaml $o }}
{{- if hasKey $parsed "Error" }}
{{- fail (printf "configOverride is not valid YAML: %v" (get $parsed "Error")) }}
{{- end }}
{{- $o }}
{{- else if $o }}
{{- toYaml $o }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{/* The effective configuration's `server` block (a dict, possibly empty), as YAML. */}}
{{- define "callbridge.serverYaml" -}}
{{- $cfg := fromYaml (include "callbridge.configYaml" .) }}
{{- toYaml ($cfg.server | default dict) }}
{{- end }}

{{/* The container port: the port of server.listen (default 8080). */}}
{{- define "callbridge.port" -}}
{{- $server := fromYaml (include "callbridge.serverYaml" .) }}
{{- $listen := $server.listen | default "0.0.0.0:8080" | toString }}
{{- $port := splitList ":" $listen | last }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "config: server.listen must be host:port with a numeric port, got %q" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The admin listener's port (server.admin_listen), or "" when the probes and /metrics are on
the webhook listener. */}}
{{- define "callbridge.adminPort" -}}
{{- $server := fromYaml (include "callbridge.serverYaml" .) }}
{{- with $server.admin_listen }}
{{- $port := splitList ":" (toString .) | last }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "config: server.admin_listen must be host:port with a numeric port, got %q" (toString .)) }}
{{- end }}
{{- $port }}
{{- end }}
{{- end }}

{{/* A probe from values, pointed at the listener that serves the probes: the admin port when
server.admin_listen is set (the webhook listener answers 404 there), HTTPS when the webhook
listener has TLS and no admin listener is set. A probe naming another port is left alone. */}}
{{- define "callbridge.probe" -}}
{{- $probe := deepCopy .probe }}
{{- $server := fromYaml (include "callbridge.serverYaml" .root) }}
{{- with $probe.httpGet }}
{{- if eq (toString .port) "http" }}
{{- if (include "callbridge.adminPort" $.root) }}
{{- $_ := set . "port" "admin" }}
{{- else if $server.tls }}
{{- $_ := set . "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/* The webhook path given to the sender: server.path (default /callback). */}}
{{- define "callbridge.webhookPath" -}}
{{- $server := fromYaml (include "callbridge.serverYaml" .) }}
{{- $server.path | default "/callback" }}
{{- end }}

{{/* server.deadline_ms (default 8000). */}}
{{- define "callbridge.deadlineMs" -}}
{{- $server := fromYaml (include "callbridge.serverYaml" .) }}
{{- $server.deadline_ms | default 8000 | int }}
{{- end }}

{{/*
Refuses configurations that would answer 200 for events that are not kept:
  - no sink at all (the chart ships none: the brokers are yours to name);
  - a required file sink on the pod's emptyDir (events vanish with the pod), unless
    data.existingClaim is set or data.allowEphemeralFileSinks says it is wanted.
*/}}
{{- define "callbridge.checkConfig" -}}
{{- $cfg := fromYaml (include "callbridge.configYaml" .) }}
{{- $sinks := $cfg.sinks | default list }}
{{- if not $sinks }}
{{- fail "config has no sinks: callbridge must be told where events go. Set config.sinks (or configOverride) to your Kafka, RabbitMQ or NATS sinks; ready-made values files: examples/helm/*-values.yaml, see docs/kubernetes.md" }}
{{- end }}
{{- $spool := $cfg.spool | default dict }}
{{- if $spool.path }}
{{- if and .Values.data.existingClaim (not .Values.data.persistentVolume.enabled) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "spool on data.existingClaim with more than one pod: the pods would share one spool file (it is locked by one process; a replaced pod's events would wait for nobody). Set data.persistentVolume.enabled: true (a StatefulSet: one volume per pod)" }}
{{- end }}
{{- if not (or .Values.data.existingClaim .Values.data.persistentVolume.enabled .Values.data.allowEphemeralSpool) }}
{{- fail (printf "spool at %s is on the pod's emptyDir: events answered 200 as spooled would vanish with the pod. Set data.persistentVolume.enabled: true (one volume per pod), or data.allowEphemeralSpool: true for a drill" (toString $spool.path)) }}
{{- end }}
{{- end }}
{{- if not (or .Values.data.existingClaim .Values.data.persistentVolume.enabled .Values.data.allowEphemeralFileSinks) }}
{{- range $sinks }}
{{- if and (eq (toString .type) "file") (ne (toString .required) "false") }}
{{- $path := toString .path }}
{{- if or (hasPrefix "/var/lib/callbridge" $path) (not (hasPrefix "/" $path)) }}
{{- fail (printf "sink %q is a required file sink on the pod's emptyDir (%s): its events would vanish with the pod, yet be answered 200. Set data.existingClaim to a PersistentVolumeClaim, make the sink required: false, or set data.allowEphemeralFileSinks: true if that is what you want" (toString .name) $path) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
