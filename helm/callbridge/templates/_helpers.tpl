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
{{- if and (not .Values.secret.existingSecret) .Values.secret.env }}true{{- end }}
{{- end }}

{{/*
The checksum of the key material the pods get from a Secret, so they roll when it changes: the
chart's own Secret's data, or the data of secret.existingSecret as the cluster has it (looked up
at install and upgrade; `helm template` sees no cluster and gives "", and then the pods roll
only with `kubectl rollout restart`).
*/}}
{{- define "callbridge.secretChecksum" -}}
{{- if include "callbridge.createSecret" . }}
{{- $data := dict }}
{{- range $k, $v := .Values.secret.env }}
{{- $_ := set $data $k (toString $v) }}
{{- end }}
{{- toJson $data | sha256sum }}
{{- else if .Values.secret.existingSecret }}
{{- $s := lookup "v1" "Secret" .Release.Namespace .Values.secret.existingSecret }}
{{- if and $s $s.data }}
{{- toJson $s.data | sha256sum }}
{{- end }}
{{- end }}
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

{{/* The admin listener (server.admin_listen, default 127.0.0.1:9090) as "port|loopback": its
port, and "true" when it listens on a loopback address (127.0.0.0/8, [::1]), where nothing outside
the pod reaches it. */}}
{{- define "callbridge.adminListen" -}}
{{- $server := fromYaml (include "callbridge.serverYaml" .) }}
{{- $listen := $server.admin_listen | default "127.0.0.1:9090" | toString }}
{{- $port := splitList ":" $listen | last }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "config: server.admin_listen must be host:port with a numeric port, got %q" $listen) }}
{{- end }}
{{- $host := trimSuffix (printf ":%s" $port) $listen }}
{{- $loopback := or (regexMatch "^127\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $host) (eq $host "[::1]") }}
{{- printf "%s|%t" $port $loopback }}
{{- end }}

{{/* The admin listener's port when the pod network reaches it (server.admin_listen not on
loopback): the container and Service port `admin`, for /metrics and `kubectl port-forward`;
else "". */}}
{{- define "callbridge.adminPort" -}}
{{- $a := splitList "|" (include "callbridge.adminListen" .) }}
{{- if eq (index $a 1) "false" }}
{{- index $a 0 }}
{{- end }}
{{- end }}

{{/* A probe from values, on the webhook listener (port `http`), which serves /healthz and
/readyz (so does the admin listener): the kubelet then checks the listener the Service sends
webhooks to. HTTPS when that listener has TLS. A probe naming another port is left alone. */}}
{{- define "callbridge.probe" -}}
{{- $probe := deepCopy .probe }}
{{- $server := fromYaml (include "callbridge.serverYaml" .root) }}
{{- with $probe.httpGet }}
{{- if and (eq (toString .port) "http") $server.tls }}
{{- $_ := set . "scheme" "HTTPS" }}
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
What backs a path inside the container: "emptyDir", "volume" (a PersistentVolumeClaim or another
volume that outlives the pod), "configMap", or "" (the read-only root filesystem). The longest
mount containing the path wins; a relative path is under the working directory
/var/lib/callbridge. Call with (dict "path" P "root" $).
*/}}
{{- define "callbridge.pathBacking" -}}
{{- $v := .root.Values }}
{{- $path := toString .path }}
{{- if not (hasPrefix "/" $path) }}
{{- $path = printf "/var/lib/callbridge/%s" (trimPrefix "./" $path) }}
{{- end }}
{{- $data := "emptyDir" }}
{{- if or $v.data.existingClaim $v.data.persistentVolume.enabled }}
{{- $data = "volume" }}
{{- end }}
{{- $mounts := list (dict "path" "/var/lib/callbridge" "kind" $data) (dict "path" "/tmp" "kind" "emptyDir") (dict "path" "/etc/callbridge" "kind" "configMap") }}
{{- range $m := $v.extraVolumeMounts }}
{{- $kind := "volume" }}
{{- range $vol := $v.extraVolumes }}
{{- if and (eq (toString $vol.name) (toString $m.name)) (hasKey $vol "emptyDir") }}
{{- $kind = "emptyDir" }}
{{- end }}
{{- end }}
{{- $mounts = append $mounts (dict "path" (trimSuffix "/" (toString $m.mountPath)) "kind" $kind) }}
{{- end }}
{{- $best := "" }}
{{- $kind := "" }}
{{- range $mounts }}
{{- if or (eq $path .path) (hasPrefix (printf "%s/" .path) $path) }}
{{- if gt (len .path) (len $best) }}
{{- $best = .path }}
{{- $kind = .kind }}
{{- end }}
{{- end }}
{{- end }}
{{- $kind }}
{{- end }}

{{/* How many pods can run at once: the replicas (or the HPA's maximum), plus the rollout's
surge for a Deployment. */}}
{{- define "callbridge.maxPods" -}}
{{- $n := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}
{{- $n = int .Values.autoscaling.maxReplicas }}
{{- end }}
{{- if not .Values.data.persistentVolume.enabled }}
{{- $surge := .Values.rollingUpdate.maxSurge | toString }}
{{- if ne $surge "0" }}
{{- $n = add $n 1 }}
{{- end }}
{{- end }}
{{- $n }}
{{- end }}

{{/* The fewest pods that run in steady state: the replicas, or the HPA's minimum. */}}
{{- define "callbridge.minPods" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* A Kubernetes memory quantity (256Mi, 1Gi, 500M, 268435456) in MiB, rounded down; fails on
what it cannot read. */}}
{{- define "callbridge.quantityMi" -}}
{{- $q := toString . }}
{{- $m := regexFindAll "^([0-9]+(\\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$" $q -1 }}
{{- if not $m }}
{{- fail (printf "resources.limits.memory %q: expected a quantity such as 512Mi or 1Gi" $q) }}
{{- end }}
{{- $num := regexReplaceAll "(Ki|Mi|Gi|Ti|k|K|M|G|T)$" $q "" | float64 }}
{{- $unit := regexReplaceAll "^[0-9.]+" $q "" }}
{{- $factor := get (dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "K" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0) $unit }}
{{- div (mulf $num $factor | int64) 1048576 }}
{{- end }}

{{/*
What the configuration can hold in memory at its limits, in MiB, as the sizing in
docs/kubernetes.md ("Memory") adds it up:
  base        48 MiB: the process with its clients, idle, before the ledger (measured ~21 MiB idle
              plus the binary's pages, docs/benchmarks.md);
  ledger      idempotency.max_entries (100 000) × 400 bytes per id (LEDGER_BYTES_PER_ENTRY);
  parsing     server.max_processing_bytes (default server.max_body_bytes, 1 MiB) × 70: a hostile
              body of tiny JSON values costs about 70 times its size once parsed, normalised and
              serialised;
  arriving    server.max_in_flight_bytes (32 MiB): bodies still being received cost their size;
  kafka       per Kafka sink, librdkafka's local queue cap, queue.buffering.max.kbytes (64 MiB);
  spool       16 MiB of page cache when a spool is configured;
  deliveries  the delivery index: deliveries.max_events (100 000) × 1 350 bytes per event
              (measured 1 303–1 333 at the cap, docs/deliveries.md).
Returns "total|detail".
*/}}
{{- define "callbridge.memoryNeeded" -}}
{{- $cfg := fromYaml (include "callbridge.configYaml" .) }}
{{- $idem := $cfg.idempotency | default dict }}
{{- $server := $cfg.server | default dict }}
{{- $entries := $idem.max_entries | default 100000 | int64 }}
{{- $ledger := div (add (mul $entries 400) 1048575) 1048576 }}
{{- $bodyBytes := $server.max_body_bytes | default 1048576 | int64 }}
{{- $procBytes := $server.max_processing_bytes | default $bodyBytes | int64 }}
{{- $parsing := div (add (mul $procBytes 70) 1048575) 1048576 }}
{{- $inflightBytes := $server.max_in_flight_bytes | default 33554432 | int64 }}
{{- $arriving := div (add $inflightBytes 1048575) 1048576 }}
{{- $kafka := 0 }}
{{- $nKafka := 0 }}
{{- range ($cfg.sinks | default list) }}
{{- if eq (toString .type) "kafka" }}
{{- $nKafka = add $nKafka 1 }}
{{- $lk := .librdkafka | default dict }}
{{- $kb := index $lk "queue.buffering.max.kbytes" | default 65536 | int64 }}
{{- $kafka = add $kafka (div (add $kb 1023) 1024) }}
{{- end }}
{{- end }}
{{- $spool := 0 }}
{{- if ($cfg.spool | default dict).path }}
{{- $spool = 16 }}
{{- end }}
{{- $events := ($cfg.deliveries | default dict).max_events | default 100000 | int64 }}
{{- $index := div (add (mul $events 1350) 1048575) 1048576 }}
{{- $total := add 48 $ledger $parsing $arriving $kafka $spool $index }}
{{- printf "%d|48 MiB base + %d MiB ledger (idempotency.max_entries %d × 400 bytes) + %d MiB parsing (server.max_processing_bytes %d × 70) + %d MiB arriving (server.max_in_flight_bytes %d) + %d MiB for %d Kafka sink(s) (librdkafka queue.buffering.max.kbytes) + %d MiB spool cache + %d MiB delivery index (deliveries.max_events %d × 1350 bytes) = %d MiB" $total $ledger $entries $parsing $procBytes $arriving $inflightBytes $kafka $nKafka $spool $index $events $total }}
{{- end }}

{{/*
Refuses configurations that would answer 200 for events that are not kept, or that cannot run
as configured:
  - no sink at all (the chart ships none: the brokers are yours to name);
  - no image.repository (there is no public image: build deploy/Dockerfile and push it);
  - a required file sink, or the spool, on any emptyDir (the data volume without a claim, /tmp,
    an emptyDir in extraVolumes): events answered 200 vanish with the pod;
  - a spool with the HorizontalPodAutoscaler (a scale-down strands spooled events in a volume no
    pod drains) or on one claim several pods would share;
  - data.existingClaim that is ReadWriteOnce while more than one pod may run (replicas, the HPA,
    or a rollout's surge): the second pod on another node cannot attach it;
  - a ${VAR} in the config that nothing gives the pod (no Secret key, no extraEnv);
  - a non-loopback server.admin_listen without admin.tokens (the bridge would refuse to start);
  - a ServiceMonitor while the admin listener, the only one serving /metrics, is on loopback;
  - a memory limit below what the ledger, the in-flight bytes and the sinks can hold.
*/}}
{{- define "callbridge.checkConfig" -}}
{{- $cfg := fromYaml (include "callbridge.configYaml" .) }}
{{- $sinks := $cfg.sinks | default list }}
{{- if not $sinks }}
{{- fail "config has no sinks: callbridge must be told where events go. Set config.sinks (or configOverride) to your Kafka, RabbitMQ or NATS sinks; ready-made values files: examples/helm/*-values.yaml, see docs/kubernetes.md" }}
{{- end }}
{{- if not .Values.image.repository }}
{{- fail "image.repository is not set: there is no public callbridge image. Build deploy/Dockerfile, push it to your registry and set image.repository (and image.tag), e.g. --set image.repository=registry.example.com/platform/callbridge; see docs/kubernetes.md, The image" }}
{{- end }}
{{- $admin := splitList "|" (include "callbridge.adminListen" .) }}
{{- if and (eq (index $admin 1) "false") (not (($cfg.admin | default dict).tokens)) }}
{{- fail (printf "config: server.admin_listen %s is not a loopback address but admin.tokens is empty: the bridge refuses to start (anyone on the pod network could use the operator routes). Add admin: {tokens: [\"${CALLBRIDGE_ADMIN_TOKEN}\"]} and CALLBRIDGE_ADMIN_TOKEN to the Secret (e.g. --set secret.env.CALLBRIDGE_ADMIN_TOKEN=$(openssl rand -hex 32)), or listen on 127.0.0.1" (toString ($cfg.server | default dict).admin_listen)) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (eq (index $admin 1) "true") }}
{{- fail (printf "metrics.serviceMonitor.enabled but the admin listener (server.admin_listen %s), the only one serving /metrics, is on loopback: Prometheus could not scrape it. Set server.admin_listen: \"0.0.0.0:9090\" with admin: {tokens: [\"${CALLBRIDGE_ADMIN_TOKEN}\"]} (docs/kubernetes.md, Monitoring), or turn the ServiceMonitor off" (toString (($cfg.server | default dict).admin_listen | default "127.0.0.1:9090"))) }}
{{- end }}
{{- $maxPods := include "callbridge.maxPods" . | int }}
{{- $claimShared := and .Values.data.existingClaim (not .Values.data.persistentVolume.enabled) }}
{{- if and $claimShared (ne .Values.data.existingClaimAccessMode "ReadWriteMany") (gt $maxPods 1) }}
{{- fail (printf "data.existingClaim %s is %s but up to %d pods may run at once (replicaCount or autoscaling, plus rollingUpdate.maxSurge): a pod scheduled on another node cannot attach it (Multi-Attach error) and a rollout hangs. Use a ReadWriteMany claim and say so with data.existingClaimAccessMode: ReadWriteMany, or run one pod with rollingUpdate {maxSurge: 0, maxUnavailable: 1}, or use data.persistentVolume.enabled (one claim per pod)" .Values.data.existingClaim .Values.data.existingClaimAccessMode $maxPods) }}
{{- end }}
{{- $spool := $cfg.spool | default dict }}
{{- if $spool.path }}
{{- if .Values.autoscaling.enabled }}
{{- fail "a spool with autoscaling.enabled: a scale-down removes pods whose spools still hold events answered 200, and nothing drains an orphaned volume. Turn autoscaling off and size replicaCount (a StatefulSet with data.persistentVolume), or drop the spool (on_unavailable: fail)" }}
{{- end }}
{{- if and $claimShared (gt (int .Values.replicaCount) 1) }}
{{- fail "spool on data.existingClaim with more than one pod: the pods would share one spool file (it is locked by one process; a replaced pod's events would wait for nobody). Set data.persistentVolume.enabled: true (a StatefulSet: one volume per pod)" }}
{{- end }}
{{- if and (eq (include "callbridge.pathBacking" (dict "path" $spool.path "root" $)) "emptyDir") (not .Values.data.allowEphemeralSpool) }}
{{- fail (printf "spool at %s is on an emptyDir: events answered 200 as spooled would vanish with the pod. Set data.persistentVolume.enabled: true (one volume per pod) and put the spool under /var/lib/callbridge, or data.allowEphemeralSpool: true for a drill" (toString $spool.path)) }}
{{- end }}
{{- end }}
{{- if not .Values.data.allowEphemeralFileSinks }}
{{- range $sinks }}
{{- if and (eq (toString .type) "file") (ne (toString .required) "false") }}
{{- if eq (include "callbridge.pathBacking" (dict "path" .path "root" $)) "emptyDir" }}
{{- fail (printf "sink %q is a required file sink on an emptyDir (%s): its events would vanish with the pod, yet be answered 200. Put it on a PersistentVolumeClaim (data.existingClaim, data.persistentVolume, or a claim in extraVolumes), make the sink required: false, or set data.allowEphemeralFileSinks: true if that is what you want" (toString .name) (toString .path)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (or .Values.secret.existingSecret .Values.extraEnvFrom) }}
{{- $given := keys (.Values.secret.env | default dict) }}
{{- range .Values.extraEnv }}
{{- $given = append $given (toString .name) }}
{{- end }}
{{- $missing := list }}
{{- range (regexFindAll "\\$?\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" (include "callbridge.configYaml" .) -1) }}
{{- if not (hasPrefix "$$" .) }}
{{- $name := trimSuffix "}" (trimPrefix "${" .) }}
{{- if not (has $name $given) }}
{{- $missing = append $missing $name | uniq }}
{{- end }}
{{- end }}
{{- end }}
{{- if $missing }}
{{- fail (printf "the config references ${%s} but nothing gives the pod %s: the chart generates no keys (a random one would change on every helm template). Set secret.env (e.g. --set secret.env.%s=$(openssl rand -hex 24)) or secret.existingSecret to a Secret you manage" (join "}, ${" $missing) (join ", " $missing) (index $missing 0)) }}
{{- end }}
{{- end }}
{{- with .Values.resources.limits }}
{{- with .memory }}
{{- $limit := include "callbridge.quantityMi" . | int }}
{{- $need := splitList "|" (include "callbridge.memoryNeeded" $) }}
{{- if lt $limit (index $need 0 | int) }}
{{- fail (printf "resources.limits.memory %s (%d MiB) is below what this configuration can hold: %s. Raise resources.limits.memory to at least %sMi, or lower those settings (docs/kubernetes.md, Memory)" (toString .) $limit (index $need 1) (index $need 0)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The outcomes of callbridge_sink_publish_total that are not failures (src/metrics.rs names
every outcome): confirmed now or by an earlier delivery (acked, replayed, spool_already_acked),
not wanted (skipped), durably spooled (spooled), left to another delivery's publish still in
flight (in_progress). scripts/lint-helm checks the list against the code. */}}
{{- define "callbridge.okOutcomes" -}}
acked|skipped|spooled|replayed|spool_already_acked|in_progress
{{- end }}
