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

{{/* The container port: the port of config.server.listen (default 8080). */}}
{{- define "callbridge.port" -}}
{{- $server := .Values.config.server | default dict }}
{{- $listen := $server.listen | default "0.0.0.0:8080" | toString }}
{{- $port := splitList ":" $listen | last }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "config.server.listen must be host:port with a numeric port, got %q" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The webhook path given to the sender: config.server.path (default /callback). */}}
{{- define "callbridge.webhookPath" -}}
{{- $server := .Values.config.server | default dict }}
{{- $server.path | default "/callback" }}
{{- end }}

{{/* config.server.deadline_ms (default 8000). */}}
{{- define "callbridge.deadlineMs" -}}
{{- $server := .Values.config.server | default dict }}
{{- $server.deadline_ms | default 8000 | int }}
{{- end }}
