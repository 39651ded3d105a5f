"""Checks the Helm chart with real Helm code (driven by scripts/lint-helm).

Helm itself runs in-process through helm-sdkpy, which ships libhelm (the Helm v4 Go library, via a
cgo shim) inside its wheel:

  lint    helm's action.Lint on the chart, strict: any message of WARNING severity or worse fails,
          as `helm lint --strict` does, and so does a template `fail` (which lint mode only logs).
          The shim's Lint takes no values, so each values file is linted by coalescing it over
          the chart's values.yaml in a temporary copy of the chart.
  render  helm's action.Install (the code path of `helm install`: values coalescing, the
          values.schema.json check, template rendering, manifest parsing and REST mapping) against
          a throw-away stub of the Kubernetes API on 127.0.0.1 that only answers discovery and
          accepts creates. Its manifest is what `helm template` would print.

On top of what Helm checks, for every values file:
  schema    the values coalesced over the chart's, against values.schema.json (jsonschema), so
            errors are shown by field path;
  manifest  the rendered objects keep the chart's promises (non-root, read-only root FS,
            probes, grace period, checksum annotations — checksum/secret is the Secret's data —,
            a PDB whenever two pods run, pods spread over nodes, every optional object of
            "everything on");
  validate  the rendered ConfigMap's config.yaml passes `callbridge validate`, with the
            environment the pod would get from the chart's Secret; so does the local stack's
            deploy/callbridge.compose.yaml, with the environment docker-compose.yml gives it, and
            every examples/configs/*.yaml (variables without a default get placeholders).
  examples  examples/helm/NAME-values.yaml's configOverride is examples/configs/NAME.yaml.
  metrics   every callbridge_* series the dashboard and the PrometheusRule query is one that
            src/metrics.rs registers.
  refusals  values the chart must refuse (REFUSALS: no sinks, no image, a required file sink or
            the spool on any emptyDir, a spool with the HPA or on a shared claim, a ReadWriteOnce
            claim with more than one pod, a ${VAR} nothing provides, a memory limit below the
            ledger + in-flight + Kafka sum, a non-loopback admin listener without admin.tokens, a
            ServiceMonitor with /metrics on loopback) fail to render with a message saying so, and values
            close to them (ACCEPTED) render; a configOverride given as file text (--set-file)
            reaches the ConfigMap verbatim.
  admin     the ServiceMonitor scrapes the admin port with no credential (https with
            server.tls.admin); `callbridge validate` refuses the chart's config without
            admin.tokens as the chart does, and passes it with them.
  key       the Secret and checksum/secret are the same on every render and change with the key
            (no key generated at render time).
  plain     every examples/helm file installs on a cluster without the Prometheus Operator's API
            (no ServiceMonitor, no PrometheusRule; NOTES says so).
  logs      no shipped config sets a log.level that drops the bridge's default lapin=off,
            async_nats=off.
  outcomes  every outcome the code counts in callbridge_sink_publish_total is classified as a
            success or a failure, and CallbridgeSinkPublishFailing fires on exactly the failures.

Usage: python lint_helm.py CHART CALLBRIDGE_BIN [VALUES_FILE...]
(the chart's defaults, the refusals, the compose config and the examples are always checked).
Exits non-zero when anything fails.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import yaml

# Example values files whose sinks the callbridge binary of this branch cannot know yet (the broker
# sinks are merged separately). Their config is still rendered and schema-checked; `callbridge
# validate` is expected to fail on them only with "unknown variant" errors. Once the binary
# accepts one, this script fails until its entry is removed here, so the check cannot silently
# stay off.
VALIDATE_PENDING: dict = {}

# The local stack's callbridge config is checked too, with the environment compose gives it.
COMPOSE_FILE = "deploy/docker-compose.yml"
COMPOSE_CONFIG = "deploy/callbridge.compose.yaml"
# Complete callbridge configs for the common setups, and a Helm values file for each.
EXAMPLE_CONFIGS = "examples/configs"
EXAMPLE_VALUES = "examples/helm"
METRICS_SOURCE = "src/metrics.rs"
# Modules that register metrics of their own into the same registry.
MORE_METRICS_SOURCES = ["src/delivery/metrics.rs"]

# What a user passes with --set on top of any values file: the image they built and pushed (the
# chart has no default; the refusals below check it says so).
USER_IMAGE = {"image": {"repository": "registry.example.com/platform/callbridge", "tag": "0.1.0"}}

SPOOL_NULL = {"auth": {"mode": "none"}, "spool": {"path": "/var/lib/callbridge/spool.redb"},
              "sinks": [{"name": "bus", "type": "null", "on_unavailable": "spool"}]}
PV = {"persistentVolume": {"enabled": True}}
# The chart's config references both: the webhook key and the admin listener's token.
KEY = {"secret": {"env": {"CALLBRIDGE_API_KEY": "k-0123456789", "CALLBRIDGE_ADMIN_TOKEN": "admin-token-0123456789abcdef"}}}
API_KEY_ONLY = {"secret": {"env": {"CALLBRIDGE_API_KEY": "k-0123456789"}}}
NULL_SINK = [{"name": "bus", "type": "null"}]


def file_sink(path: str) -> dict:
    return {"configOverride": {"auth": {"mode": "none"}, "sinks": [{"name": "a", "type": "file", "path": path}]}}


# Values the chart must refuse to render, and a part of the message it must give. USER_IMAGE is
# merged under each (as a user's --set), except where the image itself is what is missing.
REFUSALS = [
    ("no sinks (the chart's defaults)", {}, "config has no sinks"),
    ("no image.repository (there is no public image)", {"image": {"repository": ""}, **KEY, "config": {"sinks": NULL_SINK}},
     "image.repository is not set"),
    (
        "a required file sink on the emptyDir",
        {"config": {"sinks": [{"name": "archive", "type": "file", "path": "/var/lib/callbridge/events.jsonl"}]}},
        "vanish with the pod",
    ),
    (
        "a required file sink at a relative path (the emptyDir is the working directory)",
        {"configOverride": {"auth": {"mode": "none"}, "sinks": [{"name": "a", "type": "file", "path": "data/e.jsonl", "required": True}]}},
        "vanish with the pod",
    ),
    ("a required file sink under /tmp (an emptyDir), even with a claim on the data volume",
     {**file_sink("/tmp/events.jsonl"), "data": PV}, "required file sink on an emptyDir (/tmp/events.jsonl)"),
    ("a required file sink on an emptyDir from extraVolumes",
     {**file_sink("/scratch/out/e.jsonl"), "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
      "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
     "required file sink on an emptyDir (/scratch/out/e.jsonl)"),
    (
        "a spool on the emptyDir",
        {"configOverride": SPOOL_NULL},
        "would vanish with the pod",
    ),
    ("a spool under /tmp (an emptyDir) although the data volume is a claim per pod",
     {"data": PV, "configOverride": {**SPOOL_NULL, "spool": {"path": "/tmp/spool.redb"}}}, "is on an emptyDir"),
    (
        "a spool on one ReadWriteMany claim shared by two pods",
        {"replicaCount": 2, "data": {"existingClaim": "shared", "existingClaimAccessMode": "ReadWriteMany"},
         "configOverride": SPOOL_NULL},
        "would share one spool file",
    ),
    ("a spool with the HorizontalPodAutoscaler", {"data": PV, "autoscaling": {"enabled": True}, "configOverride": SPOOL_NULL},
     "a spool with autoscaling.enabled"),
    ("a ReadWriteOnce existingClaim with two replicas",
     {"replicaCount": 2, "data": {"existingClaim": "archive"}, **file_sink("/var/lib/callbridge/e.jsonl")},
     "Multi-Attach"),
    ("a ReadWriteOnce existingClaim with one replica and a rollout surge (maxSurge 1)",
     {"replicaCount": 1, "data": {"existingClaim": "archive"}, **file_sink("/var/lib/callbridge/e.jsonl")},
     "up to 2 pods may run at once"),
    ("a ReadWriteOnce existingClaim with the HorizontalPodAutoscaler",
     {"replicaCount": 1, "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}, "autoscaling": {"enabled": True},
      "data": {"existingClaim": "archive"}, **file_sink("/var/lib/callbridge/e.jsonl")},
     "Multi-Attach"),
    ("the default config's ${CALLBRIDGE_API_KEY} and ${CALLBRIDGE_ADMIN_TOKEN} with no Secret giving them (no key generated)",
     {"config": {"sinks": NULL_SINK}},
     # (in the order of the rendered config, whose keys are sorted: admin before auth)
     "references ${CALLBRIDGE_ADMIN_TOKEN}, ${CALLBRIDGE_API_KEY} but nothing gives the pod"),
    ("the default config with the API key but no CALLBRIDGE_ADMIN_TOKEN",
     {**API_KEY_ONLY, "config": {"sinks": NULL_SINK}}, "references ${CALLBRIDGE_ADMIN_TOKEN} but nothing gives the pod"),
    ("the chart's non-loopback admin listener with its tokens removed (the bridge would refuse to start)",
     {**KEY, "config": {"sinks": NULL_SINK, "admin": None}},
     "server.admin_listen 0.0.0.0:9090 is not a loopback address but admin.tokens is empty"),
    ("an admin listener on [::] without tokens (configOverride)",
     {"configOverride": {"auth": {"mode": "none"}, "server": {"admin_listen": "[::]:9090"}, "sinks": NULL_SINK}},
     "server.admin_listen [::]:9090 is not a loopback address but admin.tokens is empty"),
    ("a ServiceMonitor while /metrics is on a loopback admin listener (the bridge's default)",
     {"metrics": {"serviceMonitor": {"enabled": True}}, "configOverride": {"auth": {"mode": "none"}, "sinks": NULL_SINK}},
     "Prometheus could not scrape it"),
    ("a memory limit below the ledger the config keeps (README: 1 800 000 ids ≈ 690 MiB)",
     {**KEY, "config": {"sinks": NULL_SINK, "idempotency": {"max_entries": 1800000}}},
     "Raise resources.limits.memory to at least 966Mi"),
    ("a memory limit below the bodies being parsed and two Kafka sinks",
     {**KEY, "config": {"server": {"max_processing_bytes": 4194304},
                        "sinks": [{"name": "k1", "type": "kafka", "brokers": "k:9092", "topic": "t"},
                                  {"name": "k2", "type": "kafka", "brokers": "k:9092", "topic": "u"}]}},
     "+ 280 MiB parsing (server.max_processing_bytes 4194304 × 70) + 32 MiB arriving (server.max_in_flight_bytes 33554432) + 128 MiB for 2 Kafka sink(s)"),
]

# Values that look close to a refusal but are fine: they must render.
ACCEPTED = [
    ("one pod on a ReadWriteOnce existingClaim, rolled without surge",
     {"replicaCount": 1, "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}, "data": {"existingClaim": "archive"},
      **file_sink("/var/lib/callbridge/e.jsonl")}),
    ("a required file sink on a claim mounted from extraVolumes under /tmp",
     {**file_sink("/tmp/archive/e.jsonl"), "extraVolumes": [{"name": "archive", "persistentVolumeClaim": {"claimName": "a"}}],
      "extraVolumeMounts": [{"name": "archive", "mountPath": "/tmp/archive"}]}),
    ("a loopback admin listener without tokens (the bridge's default; `kubectl exec` reaches it)",
     {"configOverride": {"auth": {"mode": "none"}, "server": {"admin_listen": "127.0.0.1:9191"}, "sinks": NULL_SINK}}),
    ("the ledger of 1 800 000 ids with the memory it needs",
     {**KEY, "config": {"sinks": NULL_SINK, "idempotency": {"max_entries": 1800000}},
      "resources": {"limits": {"memory": "966Mi"}}}),
]

# helm's support.Severity: UnknownSev, InfoSev, WarningSev, ErrorSev.
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
STRICT_FAILURE = 2

RESULTS: list[tuple[str, bool]] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}", flush=True)


# ---- values -----------------------------------------------------------------------------------


def coalesce(base: dict, override: dict) -> dict:
    """Helm's values coalescing: maps merge key by key, anything else replaces, null deletes."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = coalesce(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def effective_config(values: dict) -> dict:
    """The config the chart renders: configOverride (an object or file text) replaces config."""
    override = values.get("configOverride")
    if isinstance(override, str) and override:
        return yaml.safe_load(override) or {}
    if override:
        return override
    return values.get("config") or {}


# ---- helm, in a subprocess so its Go-side stderr is captured and each run starts clean --------

LINT_CHILD = r"""
import asyncio, json, sys
from helm_sdkpy import Configuration
from helm_sdkpy.chart import Lint
print(json.dumps(asyncio.run(Lint(Configuration(namespace="callbridge")).run(sys.argv[1]))))
"""

INSTALL_CHILD = r"""
import asyncio, json, sys
from helm_sdkpy import Configuration, Install
cfg = Configuration(namespace="callbridge", kubeconfig=sys.argv[1])
values = json.loads(open(sys.argv[3]).read())
try:
    rel = asyncio.run(Install(cfg).run("callbridge", sys.argv[2], values=values or None,
                                       wait=False, timeout=60))
except Exception as e:
    print(json.dumps({"error": str(e)}))
else:
    print(json.dumps({"manifest": rel.get("manifest", ""),
                      "notes": (rel.get("info") or {}).get("notes", "")}))
"""


def run_child(code: str, *args: str, env: dict | None = None) -> tuple[dict | None, str]:
    p = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    out = None
    if p.returncode == 0 and p.stdout.strip():
        out = json.loads(p.stdout.strip().splitlines()[-1])
    return out, p.stderr + ("" if p.returncode == 0 else f"\n(exit {p.returncode})")


def helm_lint(chart: Path, values: dict, label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / chart.name  # helm wants the directory named like the chart
        shutil.copytree(chart, copy_dir)
        with open(copy_dir / "values.yaml", "w") as f:
            yaml.safe_dump(values, f, sort_keys=False)
        result, stderr = run_child(LINT_CHILD, str(copy_dir))
    if result is None:
        return report(f"helm lint --strict [{label}]", False, f"lint did not run:\n{stderr}")
    problems = []
    for m in result.get("Messages") or []:
        sev = m.get("Severity", 0)
        if sev >= STRICT_FAILURE:
            # The shim serialises Go errors as {}: the path and severity are all that survive;
            # the render step below repeats the failure with Helm's own message.
            err = m.get("Err") or {}
            problems.append(
                f"{SEVERITY.get(sev, sev)} in {m.get('Path')}"
                + (f" {err.get('Message') or json.dumps(err)}" if err else "")
            )
    if result.get("Errors"):
        problems.append(f"{len(result['Errors'])} error(s)")
    # Lint mode downgrades a template `fail` to a log line; strict lint must not.
    for line in stderr.splitlines():
        if "funcMap fail" in line or "funcMap required" in line:
            problems.append(line.strip())
    charts = result.get("TotalChartsLinted", 0)
    if charts != 1:
        problems.append(f"linted {charts} charts, expected 1")
    report(f"helm lint --strict [{label}]", not problems, "; ".join(problems))


# ---- a stub Kubernetes API: discovery and creates only, loopback only -----------------------

CORE = [
    ("configmaps", "ConfigMap", True),
    ("secrets", "Secret", True),
    ("services", "Service", True),
    ("serviceaccounts", "ServiceAccount", True),
    ("pods", "Pod", True),
    ("namespaces", "Namespace", False),
]
GROUPS = {
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [
        ("ingresses", "Ingress", True),
        ("networkpolicies", "NetworkPolicy", True),
    ],
    "monitoring.coreos.com/v1": [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
}


class StubApi(BaseHTTPRequestHandler):
    # The API groups this cluster serves (a plain cluster: without the Prometheus Operator's).
    groups = GROUPS

    def log_message(self, *args):
        pass

    def send_json(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @staticmethod
    def resource_list(gv: str, items) -> dict:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": [
                {
                    "name": name,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
                for name, kind, namespaced in items
            ],
        }

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.send_json(
                200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
            )
        if path == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = [
                {
                    "name": gv.split("/")[0],
                    "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                    "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
                }
                for gv in self.groups
            ]
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return self.send_json(200, self.resource_list("v1", CORE))
        if path.startswith("/apis/") and path[6:] in self.groups:
            return self.send_json(200, self.resource_list(path[6:], self.groups[path[6:]]))
        # Nothing exists yet: lookups, release history and conflict checks all find nothing.
        return self.send_json(
            404,
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404},
        )

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))  # protobuf or JSON; unused
        parts = self.path.split("?")[0].strip("/").split("/")
        gv = "v1" if parts[0] == "api" else f"{parts[1]}/{parts[2]}"
        kinds = {name: kind for name, kind, _ in (CORE if gv == "v1" else self.groups.get(gv, []))}
        kind = kinds.get(parts[-1])
        if kind is None:
            return self.send_json(404, {"kind": "Status", "apiVersion": "v1", "code": 404})
        meta = {"name": "created", "namespace": "callbridge", "uid": f"uid-{time.monotonic_ns()}", "resourceVersion": "1"}
        return self.send_json(201, {"kind": kind, "apiVersion": gv, "metadata": meta})


class PlainStubApi(StubApi):
    groups = {gv: r for gv, r in GROUPS.items() if not gv.startswith("monitoring.coreos.com/")}


def with_image(values: dict) -> dict:
    """The values as a user installs them: with the image they pushed (--set image.repository)."""
    return coalesce(USER_IMAGE, values)


def helm_install(chart: Path, user_values: dict, kubeconfig: Path) -> tuple[dict | None, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(user_values, f)
        values_path = f.name
    try:
        return run_child(INSTALL_CHILD, str(kubeconfig), str(chart), values_path, env={"HELM_DRIVER": "memory"})
    finally:
        os.unlink(values_path)


def check_refusal(chart: Path, user_values: dict, label: str, expected: str, kubeconfig: Path) -> None:
    result, stderr = helm_install(chart, with_image(user_values), kubeconfig)
    name = f"the chart refuses to render [{label}]"
    if result is None:
        return report(name, False, f"install did not run:\n{stderr}")
    if "error" not in result:
        return report(name, False, "it rendered")
    report(name, expected in result["error"], result["error"])


def helm_render(chart: Path, user_values: dict, label: str, kubeconfig: Path) -> list[dict] | None:
    result, stderr = helm_install(chart, user_values, kubeconfig)
    if result is None or "error" in result:
        detail = result["error"] if result else f"install did not run:\n{stderr}"
        report(f"helm render (install) [{label}]", False, detail)
        return None
    docs = [d for d in yaml.safe_load_all(result["manifest"]) if d]
    kinds = ", ".join(sorted(f"{d['kind']}" for d in docs))
    report(f"helm render (install) [{label}]", True, kinds)
    # NOTES.txt must tell the user the webhook URL to give the sender.
    server = effective_config(coalesce(load_yaml(chart / "values.yaml"), user_values)).get("server") or {}
    path = server.get("path", "/callback")
    urls = [l.strip() for l in result["notes"].splitlines() if l.strip().split(" ")[0].endswith(path)]
    report(f"NOTES.txt gives the webhook URL [{label}]", bool(urls), urls[0] if urls else result["notes"])
    return docs


# ---- checks on the rendered objects -----------------------------------------------------------


def check_manifest(docs: list[dict], values: dict, label: str, everything_on: bool) -> None:
    problems = []
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    # The workload: a Deployment, or a StatefulSet when each pod needs its own volume (a spool).
    workload_kind = "StatefulSet" if (values.get("data") or {}).get("persistentVolume", {}).get("enabled") else "Deployment"
    for kind in (workload_kind, "Service"):
        if len(by_kind.get(kind, [])) != 1:
            problems.append(f"expected one {kind}, got {len(by_kind.get(kind, []))}")
    if workload_kind == "StatefulSet" and by_kind.get("StatefulSet"):
        sts = by_kind["StatefulSet"][0]["spec"]
        claims = [t["metadata"]["name"] for t in sts.get("volumeClaimTemplates", [])]
        if claims != ["data"]:
            problems.append(f"StatefulSet without one 'data' volumeClaimTemplate: {claims}")
        if any(v["name"] == "data" for v in sts["template"]["spec"].get("volumes", [])):
            problems.append("StatefulSet also declares a 'data' pod volume (it must come from the claim)")
        by_kind["Deployment"] = by_kind["StatefulSet"]
    configs = [d for d in by_kind.get("ConfigMap", []) if "config.yaml" in (d.get("data") or {})]
    if len(configs) != 1:
        problems.append(f"expected one ConfigMap with config.yaml, got {len(configs)}")
    if everything_on:
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "Ingress", "NetworkPolicy", "Secret", "PrometheusRule"):
            if kind not in by_kind:
                problems.append(f"'everything on' rendered no {kind}")
        if not any("callbridge.json" in (d.get("data") or {}) for d in by_kind.get("ConfigMap", [])):
            problems.append("'everything on' rendered no dashboard ConfigMap")
    if by_kind.get("Deployment"):
        pod = by_kind["Deployment"][0]["spec"]["template"]
        spec = pod["spec"]
        c = spec["containers"][0]
        sc = c.get("securityContext", {})
        psc = spec.get("securityContext", {})
        if not sc.get("readOnlyRootFilesystem"):
            problems.append("container root filesystem is not read-only")
        if not (psc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
            problems.append("pod does not require a non-root user")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append("privilege escalation not disabled")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append("liveness probe is not /healthz")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append("readiness probe is not /readyz")
        if "checksum/config" not in pod["metadata"].get("annotations", {}):
            problems.append("no checksum/config annotation on the pod template")
        if not c.get("lifecycle", {}).get("preStop"):
            problems.append("no preStop pause")
        # A node drain must not take every pod at once: a PDB whenever two pods or more run,
        # and the pods spread over nodes unless the values give their own constraints.
        min_pods = (values.get("autoscaling") or {}).get("minReplicas", 1) if (values.get("autoscaling") or {}).get("enabled") else values.get("replicaCount", 1)
        if (values.get("podDisruptionBudget") or {}).get("enabled") and min_pods >= 2 and "PodDisruptionBudget" not in by_kind:
            problems.append(f"no PodDisruptionBudget although {min_pods} pods run")
        if "PodDisruptionBudget" in by_kind and min_pods < 2:
            problems.append("a PodDisruptionBudget with a single pod (it blocks every drain)")
        spread = spec.get("topologySpreadConstraints") or []
        selector = by_kind["Deployment"][0]["spec"]["selector"]["matchLabels"]
        if (values.get("topologySpread") or {}).get("enabled") and not values.get("topologySpreadConstraints"):
            keys = [t.get("topologyKey") for t in spread]
            if "kubernetes.io/hostname" not in keys:
                problems.append(f"pods not spread over nodes: {keys}")
            if any((t.get("labelSelector") or {}).get("matchLabels") != selector for t in spread):
                problems.append("a spread constraint does not select the release's pods")
        # The pods roll when the key material they get changes: the checksum is the Secret's.
        secrets = [d for d in by_kind.get("Secret", [])]
        annotations = pod["metadata"].get("annotations", {})
        if secrets:
            # As Helm's toJson writes it (Go's encoding/json: sorted keys, compact, <>& escaped).
            data = json.dumps(secrets[0].get("stringData") or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            want = hashlib.sha256(data.encode()).hexdigest()
            if annotations.get("checksum/secret") != want:
                problems.append(f"checksum/secret {annotations.get('checksum/secret')} is not the Secret's data ({want})")
        if c.get("readinessProbe", {}).get("timeoutSeconds", 1) < 3:
            problems.append("readiness probe timeout below 3 s (a spool probe write may take 2 s)")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "/etc/callbridge" not in mounts or "/var/lib/callbridge" not in mounts:
            problems.append("config or data volume not mounted")
        server = effective_config(values).get("server") or {}
        deadline = server.get("deadline_ms", 8000)
        if spec.get("terminationGracePeriodSeconds", 30) <= deadline / 1000:
            problems.append("terminationGracePeriodSeconds does not exceed the deadline")
        listen = server.get("listen", "0.0.0.0:8080")
        if c["ports"][0]["containerPort"] != int(str(listen).rsplit(":", 1)[1]):
            problems.append("containerPort differs from config.server.listen")
        # The probes stay on the webhook listener (it serves /healthz and /readyz, and it is what
        # the Service sends webhooks to), over HTTPS when it has TLS. The admin listener gets the
        # `admin` ports when the pod network reaches it; the ServiceMonitor scrapes it there,
        # without any credential (/metrics needs none: Prometheus never holds the admin token).
        admin = str(server.get("admin_listen", "127.0.0.1:9090"))
        admin_host = admin.rsplit(":", 1)[0]
        routable = not (admin_host.startswith("127.") or admin_host == "[::1]")
        probes = [c.get(p, {}).get("httpGet", {}) for p in ("startupProbe", "livenessProbe", "readinessProbe")]
        if any(p.get("port") != "http" for p in probes):
            problems.append(f"probes not on the webhook port 'http': {[p.get('port') for p in probes]}")
        if server.get("tls") and any(p.get("scheme") != "HTTPS" for p in probes):
            problems.append("probes are plain HTTP although the listener has TLS")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        svc_ports = [p["name"] for p in by_kind["Service"][0]["spec"]["ports"]] if by_kind.get("Service") else []
        if routable:
            if ports.get("admin") != int(admin.rsplit(":", 1)[1]):
                problems.append("no container port 'admin' for config.server.admin_listen")
            if "admin" not in svc_ports:
                problems.append("the Service has no 'admin' port for /metrics")
            if not (effective_config(values).get("admin") or {}).get("tokens"):
                problems.append("a non-loopback admin listener without admin.tokens rendered")
        elif "admin" in ports or "admin" in svc_ports:
            problems.append(f"an 'admin' port for a loopback admin listener ({admin}) nothing outside the pod reaches")
        for sm in by_kind.get("ServiceMonitor", []):
            ep = sm["spec"]["endpoints"][0]
            if ep.get("port") != "admin":
                problems.append("the ServiceMonitor does not scrape the admin port")
            if "authorization" in ep or "bearerTokenSecret" in ep:
                problems.append("the ServiceMonitor carries a credential (/metrics needs none)")
            if (server.get("tls") or {}).get("admin") and ep.get("scheme") != "https":
                problems.append("the ServiceMonitor scrapes a TLS admin listener over http")
    report(f"rendered objects keep the chart's promises [{label}]", not problems, "; ".join(problems))


VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z0-9_]+)(:-[^}]*)?\}")


def run_validate(name: str, text: str, env: dict, binary: Path, pending: str | None, note: str = "") -> None:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE")}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(text)
        p = subprocess.run(
            [str(binary), "--config", str(cfg), "validate"],
            capture_output=True,
            text=True,
            env={**clean_env, **env},
            timeout=60,
        )
    output = (p.stdout + p.stderr).strip()
    if pending is None:
        return report(name, p.returncode == 0, (output if p.returncode else "ok") + note)
    errors = [l for l in output.splitlines() if l.startswith("sinks") or "unknown variant" in l]
    if p.returncode == 0:
        return report(name, False, f"passes now: remove it from VALIDATE_PENDING in {__file__}")
    if errors and all("unknown variant" in l for l in errors):
        print(f"SKIP {name}: pending ({pending}); this binary says: {errors[0]}", flush=True)
        return
    report(name, False, output)


def check_compose(repo: Path, binary: Path) -> None:
    compose = load_yaml(repo / COMPOSE_FILE)
    env = compose["services"]["callbridge"].get("environment") or {}
    env = {k: str(v) for k, v in env.items() if k != "CALLBRIDGE_CONFIG"}
    run_validate(
        f"callbridge validate [{COMPOSE_CONFIG} with {COMPOSE_FILE}'s environment]",
        (repo / COMPOSE_CONFIG).read_text(),
        env,
        binary,
        VALIDATE_PENDING.get(COMPOSE_CONFIG),
    )


def check_validate(docs: list[dict], values: dict, label: str, binary: Path, pending: str | None) -> None:
    name = f"callbridge validate on the rendered ConfigMap [{label}]"
    cms = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in (d.get("data") or {})]
    if len(cms) != 1 or "config.yaml" not in (cms[0].get("data") or {}):
        return report(name, False, "no ConfigMap with config.yaml")
    text = cms[0]["data"]["config.yaml"]
    # The pod's environment: the Secret the chart created (exact keys) and extraEnv.
    env = {e["name"]: str(e.get("value", "")) for e in values.get("extraEnv") or []}
    for s in (d for d in docs if d["kind"] == "Secret"):
        env.update({k: str(v) for k, v in (s.get("stringData") or {}).items()})
    referenced = {m.group(1) for m in VAR_RE.finditer(text) if not m.group(2)}
    unresolved = sorted(referenced - set(env))
    existing = (values.get("secret") or {}).get("existingSecret")
    note = ""
    if unresolved and existing:
        # Keys of a Secret the chart does not manage cannot be known here.
        env.update({v: f"placeholder-{v.lower()}" for v in unresolved})
        note = f" (placeholders for existingSecret {existing}: {', '.join(unresolved)})"
    run_validate(name, text, env, binary, pending, note)


METRIC_RE = re.compile(r"\bcallbridge_[a-z_]+")


def registered_metrics(repo: Path) -> set[str]:
    """Series names src/metrics.rs registers (a histogram also has _bucket, _sum and _count)."""
    text = "\n".join(
        (repo / f).read_text() for f in [METRICS_SOURCE, *MORE_METRICS_SOURCES]
    )
    names = set()
    for m in re.finditer(r'"(callbridge_[a-z_]+)"', text):
        names.add(m.group(1))
        if m.group(1).endswith("_seconds"):
            names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def check_metrics(docs: list[dict], repo: Path, label: str) -> None:
    known = registered_metrics(repo)
    queried: set[str] = set()
    for d in docs:
        if d["kind"] == "PrometheusRule":
            for g in d["spec"]["groups"]:
                for r in g["rules"]:
                    queried.update(METRIC_RE.findall(str(r["expr"])))
        if d["kind"] == "ConfigMap" and "callbridge.json" in (d.get("data") or {}):
            try:
                dash = json.loads(d["data"]["callbridge.json"])
            except json.JSONDecodeError as e:
                return report(f"dashboard is JSON [{label}]", False, str(e))
            exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
            if not exprs:
                return report(f"dashboard has queries [{label}]", False, "no panel targets")
            for e in exprs:
                queried.update(METRIC_RE.findall(e))
    if not queried:
        return
    unknown = sorted(queried - known)
    report(
        f"dashboard and alerts query only metrics {METRICS_SOURCE} registers [{label}]",
        not unknown,
        f"unknown: {', '.join(unknown)}" if unknown else ", ".join(sorted(queried)),
    )


def check_example_configs(repo: Path, binary: Path) -> None:
    """Every example config validates; every example values file carries its config verbatim."""
    configs = sorted((repo / EXAMPLE_CONFIGS).glob("*.yaml"))
    report(f"{EXAMPLE_CONFIGS} has example configs", bool(configs), f"{len(configs)} files")
    for cfg in configs:
        text = cfg.read_text()
        live = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        referenced = sorted({m.group(1) for m in VAR_RE.finditer(live) if not m.group(2)})
        env = {v: f"placeholder-{v.lower()}" for v in referenced}
        note = f" (placeholders: {', '.join(referenced)})" if referenced else ""
        run_validate(f"callbridge validate [{cfg.relative_to(repo)}]", text, env, binary, None, note)
    for values_file in sorted((repo / EXAMPLE_VALUES).glob("*-values.yaml")):
        name = values_file.name[: -len("-values.yaml")]
        cfg = repo / EXAMPLE_CONFIGS / f"{name}.yaml"
        label = f"{values_file.relative_to(repo)} carries {cfg.relative_to(repo)}"
        if not cfg.exists():
            report(label, False, "no such example config")
            continue
        same = load_yaml(values_file).get("configOverride") == load_yaml(cfg)
        report(label, same, "" if same else "configOverride differs from the example config")


def check_refusals_and_set_file(chart: Path, repo: Path, kubeconfig: Path) -> None:
    for label, values, expected in REFUSALS:
        check_refusal(chart, values, label, expected, kubeconfig)
    # `--set-file configOverride=FILE` gives the file's text: it must reach the pods verbatim.
    cfg = repo / EXAMPLE_CONFIGS / "kafka.yaml"
    if not cfg.exists():
        return
    text = cfg.read_text()
    label = f"configOverride as file text ({cfg.relative_to(repo)})"
    docs = helm_render(chart, with_image({"configOverride": text, **KEY}), label, kubeconfig)
    if docs is None:
        return
    cms = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in (d.get("data") or {})]
    got = cms[0]["data"]["config.yaml"] if cms else ""
    report(f"the ConfigMap holds the file verbatim [{label}]", got.strip() == text.strip(), "" if cms else "no ConfigMap")


def check_plain_cluster(chart: Path, repo: Path, kubeconfig: Path) -> None:
    """Every example installs on a cluster without the Prometheus Operator: its ServiceMonitor and
    PrometheusRule are left out (and NOTES says so) instead of failing the install."""
    for values_file in sorted((repo / EXAMPLE_VALUES).glob("*-values.yaml")):
        label = f"{values_file.relative_to(repo)} on a plain cluster"
        user = load_yaml(values_file)
        result, stderr = helm_install(chart, with_image(user), kubeconfig)
        if result is None or "error" in result:
            report(f"helm install [{label}]", False, result["error"] if result else stderr)
            continue
        kinds = sorted({d["kind"] for d in yaml.safe_load_all(result["manifest"]) if d})
        operator = [k for k in kinds if k in ("ServiceMonitor", "PrometheusRule")]
        report(f"helm install [{label}]", not operator, f"rendered {operator}" if operator else ", ".join(kinds))
        wanted = (user.get("metrics") or {})
        if (wanted.get("serviceMonitor") or {}).get("enabled") or (wanted.get("prometheusRule") or {}).get("enabled"):
            said = "were not installed" in result["notes"]
            report(f"NOTES says the monitoring objects were skipped [{label}]", said, "" if said else result["notes"])


def check_stable_key(chart: Path, kubeconfig: Path) -> None:
    """The chart generates no key: two renders give the same Secret and checksum (helm template,
    Argo CD, --dry-run), and another key gives another checksum (the pods roll)."""
    def render(key: str) -> tuple[dict, str]:
        values = with_image({"secret": {"env": {"CALLBRIDGE_API_KEY": key, "CALLBRIDGE_ADMIN_TOKEN": "admin-token-0123456789abcdef"}},
                             "config": {"sinks": NULL_SINK}})
        result, stderr = helm_install(chart, values, kubeconfig)
        if result is None or "error" in result:
            raise RuntimeError(result["error"] if result else stderr)
        docs = [d for d in yaml.safe_load_all(result["manifest"]) if d]
        secret = next(d for d in docs if d["kind"] == "Secret")
        dep = next(d for d in docs if d["kind"] == "Deployment")
        return secret.get("stringData") or {}, dep["spec"]["template"]["metadata"]["annotations"].get("checksum/secret", "")
    try:
        a, b, c = render("key-one-0123456789"), render("key-one-0123456789"), render("key-two-0123456789")
    except RuntimeError as e:
        return report("the API key is stable across renders", False, str(e))
    report("the API key is stable across renders (same Secret, same checksum)", a == b and bool(a[1]), f"{a} / {b}")
    report("another key rolls the pods (checksum/secret changes)", a[1] != c[1], f"{a[1]} / {c[1]}")


# The log level the bridge defaults to: a `log.level` that drops these brings the AMQP and NATS
# clients' reconnect storms back.
QUIET_CLIENTS = ("lapin=off", "async_nats=off")


def check_log_levels(chart: Path, repo: Path) -> None:
    """No shipped config replaces the bridge's log default with one that lets the clients talk."""
    sources = [(f"{chart.relative_to(repo)}/values.yaml config", load_yaml(chart / "values.yaml").get("config") or {})]
    for f in sorted((repo / EXAMPLE_CONFIGS).glob("*.yaml")) + [repo / COMPOSE_CONFIG]:
        sources.append((str(f.relative_to(repo)), load_yaml(f)))
    for f in sorted((chart / "ci").glob("*-values.yaml")) + sorted((repo / EXAMPLE_VALUES).glob("*-values.yaml")):
        sources.append((str(f.relative_to(repo)), effective_config(load_yaml(f))))
    for name, cfg in sources:
        level = (cfg.get("log") or {}).get("level")
        ok = level is None or all(q in str(level) for q in QUIET_CLIENTS)
        report(f"log.level keeps the bridge's default quiet clients [{name}]", ok, f"level: {level}" if level else "default")


# Every outcome of callbridge_sink_publish_total, as the code names them, classified. A new
# outcome fails this script until it is put in one of the two sets, so the alert can never
# silently fire on a success or miss a failure.
OK_OUTCOMES = {"acked", "skipped", "spooled", "replayed", "spool_already_acked", "in_progress"}
FAILED_OUTCOMES = {"timeout", "not_connected", "rejected", "queue_full", "too_large", "io", "broker",
                   "ledger_unavailable", "in_doubt", "in_doubt_abandoned", "spool_failed", "dead_lettered"}


def code_outcomes(repo: Path) -> set[str]:
    found: set[str] = set()
    consts = {}
    for f in (repo / "src").rglob("*.rs"):
        text = f.read_text()
        consts.update(dict(re.findall(r'pub const ([A-Z_]+): &str = "([a-z_]+)";', text)))
        found.update(re.findall(r'sink_outcome\(\s*[^,]+,\s*"([a-z_]+)"\s*\)', text))
        for name in re.findall(r'sink_outcome\(\s*[^,]+,\s*([A-Z_]+)\s*\)', text):
            found.add(consts.get(name, name))
    # error.code(): the reasons of SinkError.
    sinks = (repo / "src/sinks/mod.rs").read_text()
    body = sinks[sinks.index("pub fn code(&self)"):]
    body = body[: body.index("\n    }\n")]
    found.update(re.findall(r'=> "([a-z_]+)"', body))
    return {consts.get(o, o) for o in found}


def check_outcomes_classified(repo: Path) -> None:
    outcomes = code_outcomes(repo)
    unclassified = sorted(outcomes - OK_OUTCOMES - FAILED_OUTCOMES)
    report("every publish outcome the code counts is classified (success or failure)", not unclassified,
           f"unclassified: {', '.join(unclassified)} (add them to OK_OUTCOMES or FAILED_OUTCOMES in {__file__})"
           if unclassified else ", ".join(sorted(outcomes)))


def check_alert_outcomes(docs: list[dict], repo: Path, label: str) -> None:
    for d in docs:
        if d["kind"] != "PrometheusRule":
            continue
        for g in d["spec"]["groups"]:
            for r in g["rules"]:
                if r.get("alert") != "CallbridgeSinkPublishFailing":
                    continue
                m = re.search(r'outcome!~"([^"]+)"', r["expr"])
                if not m:
                    return report(f"CallbridgeSinkPublishFailing selects failures only [{label}]", False, r["expr"])
                excluded = re.compile(f"^(?:{m.group(1)})$")
                fires_on = sorted(o for o in OK_OUTCOMES if not excluded.match(o))
                misses = sorted(o for o in FAILED_OUTCOMES if excluded.match(o))
                report(f"CallbridgeSinkPublishFailing fires on every failure and no success [{label}]",
                       not fires_on and not misses,
                       f"fires on {fires_on}, misses {misses}" if fires_on or misses else m.group(1))


def check_admin_scrape(chart: Path, kubeconfig: Path) -> None:
    """The chart's own config (admin listener 0.0.0.0:9090 with admin.tokens): Prometheus scrapes
    the admin port with no credential (/metrics needs none, the admin token stays with operators);
    with server.tls.admin, over https with the given tlsConfig."""
    for label, server, tls_config in [
        ("plain admin listener", {}, None),
        ("server.tls.admin", {"tls": {"cert_file": "/etc/tls/tls.crt", "key_file": "/etc/tls/tls.key", "admin": True}},
         {"serverName": "callbridge.callbridge.svc"}),
    ]:
        sm_values = {"enabled": True, **({"tlsConfig": tls_config} if tls_config else {})}
        values = with_image({**KEY, "metrics": {"serviceMonitor": sm_values},
                             "config": {"server": server, "sinks": NULL_SINK}})
        result, stderr = helm_install(chart, values, kubeconfig)
        name = f"the ServiceMonitor scrapes the admin port without the admin token [{label}]"
        if result is None or "error" in result:
            report(name, False, result["error"] if result else stderr)
            continue
        sm = [d for d in yaml.safe_load_all(result["manifest"]) if d and d["kind"] == "ServiceMonitor"]
        ep = sm[0]["spec"]["endpoints"][0] if sm else {}
        ok = ep.get("port") == "admin" and ep.get("path") == "/metrics" and "authorization" not in ep
        if tls_config:
            ok = ok and ep.get("scheme") == "https" and ep.get("tlsConfig") == tls_config
        else:
            ok = ok and "scheme" not in ep
        report(name, ok, json.dumps(ep))


def check_admin_listener_validate(chart: Path, binary: Path) -> None:
    """What the chart refuses, the bridge refuses too: the chart's config with a non-loopback admin
    listener and its tokens removed fails `callbridge validate`, naming the fix; with them, it
    passes (so the chart's refusal is never stricter than the bridge)."""
    cfg = copy.deepcopy(load_yaml(chart / "values.yaml")["config"])
    cfg["sinks"] = NULL_SINK
    env = {"CALLBRIDGE_API_KEY": "k-0123456789", "CALLBRIDGE_ADMIN_TOKEN": "admin-token-0123456789abcdef"}
    run_validate("callbridge validate [the chart's config: admin listener 0.0.0.0:9090 with admin.tokens]",
                 yaml.safe_dump(cfg), env, binary, None)
    cfg.pop("admin", None)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        p = subprocess.run([str(binary), "--config", str(path), "validate"], capture_output=True, text=True,
                           env={**clean_env, **env}, timeout=60)
    output = (p.stdout + p.stderr).strip()
    report("callbridge validate refuses [the chart's config with a non-loopback admin listener and no admin.tokens]",
           p.returncode != 0 and "server.admin_listen" in output and "admin.tokens" in output, output)


def check_accepted(chart: Path, kubeconfig: Path) -> None:
    for label, values in ACCEPTED:
        result, stderr = helm_install(chart, with_image(values), kubeconfig)
        ok = result is not None and "error" not in result
        report(f"the chart renders [{label}]", ok, "" if ok else (result or {}).get("error", stderr))


# ---- main -------------------------------------------------------------------------------------


def main() -> int:
    chart = Path(sys.argv[1]).resolve()
    binary = Path(sys.argv[2]).resolve()
    repo = chart.parent.parent
    files = [Path(a).resolve() for a in sys.argv[3:]]
    defaults = load_yaml(chart / "values.yaml")
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)

    # Two stub clusters: one serving the Prometheus Operator's API, and a plain one.
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubApi)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), PlainStubApi)
    for srv in (server, plain):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="lint-helm-"))

    def kubeconfig_for(srv, name: str) -> Path:
        path = tmp / name
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{srv.server_address[1]}"}}],
                    "users": [{"name": "stub", "user": {"token": "stub"}}],
                    "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "callbridge"}}],
                    "current-context": "stub",
                }
            )
        )
        return path

    kubeconfig = kubeconfig_for(server, "kubeconfig")
    plain_kubeconfig = kubeconfig_for(plain, "kubeconfig-plain")
    try:
        # The defaults carry no sinks: they pass the schema, and the chart refuses to render them
        # (checked with the other refusals below).
        label = f"{chart.relative_to(repo)}/values.yaml (defaults)"
        errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(defaults), key=lambda e: list(e.path))
        report(f"values.schema.json [{label}]", not errs, "; ".join(e.message for e in errs))
        # One node drain must not take every pod: on by default, not left to the user.
        on = [k for k in ("podDisruptionBudget", "topologySpread") if (defaults.get(k) or {}).get("enabled")]
        report(f"PodDisruptionBudget and topology spread on by default [{label}]", len(on) == 2, ", ".join(on))
        cases = []
        for f in files:
            rel = str(f.relative_to(repo)) if f.is_relative_to(repo) else str(f)
            # A values file without an image is installed as a user does: with --set image.*.
            cases.append((rel, with_image(load_yaml(f)), "everything-on" in f.name, VALIDATE_PENDING.get(rel)))
        for label, user, everything_on, pending in cases:
            started = time.monotonic()
            values = coalesce(defaults, user)
            errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=lambda e: list(e.path))
            report(
                f"values.schema.json [{label}]",
                not errs,
                "; ".join(f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errs),
            )
            helm_lint(chart, values, label)
            docs = helm_render(chart, user, label, kubeconfig)
            if docs is not None:
                check_manifest(docs, values, label, everything_on)
                check_validate(docs, values, label, binary, pending)
                check_metrics(docs, repo, label)
                check_alert_outcomes(docs, repo, label)
            print(f"     ({label}: {time.monotonic() - started:.1f}s)", flush=True)
        check_refusals_and_set_file(chart, repo, kubeconfig)
        check_accepted(chart, kubeconfig)
        check_admin_scrape(chart, kubeconfig)
        check_admin_listener_validate(chart, binary)
        check_stable_key(chart, kubeconfig)
        check_plain_cluster(chart, repo, plain_kubeconfig)
        check_log_levels(chart, repo)
        check_outcomes_classified(repo)
        if (repo / COMPOSE_FILE).exists():
            check_compose(repo, binary)
        if (repo / EXAMPLE_CONFIGS).exists():
            check_example_configs(repo, binary)
    finally:
        server.shutdown()
        plain.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    passed = sum(ok for _, ok in RESULTS)
    failed = len(RESULTS) - passed
    print(f"lint-helm: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
