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
            probes, grace period, checksum annotation, every optional object of "everything on");
  validate  the rendered ConfigMap's config.yaml passes `callbridge validate`, with the
            environment the pod would get from the chart's Secret; so does the local stack's
            deploy/callbridge.compose.yaml, with the environment docker-compose.yml gives it, and
            every examples/configs/*.yaml (variables without a default get placeholders).
  examples  examples/helm/NAME-values.yaml's configOverride is examples/configs/NAME.yaml.
  metrics   every callbridge_* series the dashboard and the PrometheusRule query is one that
            src/metrics.rs registers.
  refusals  values the chart must refuse (no sinks, a required file sink on the emptyDir) fail
            to render with a message saying so; a configOverride given as file text (--set-file)
            reaches the ConfigMap verbatim.

Usage: python lint_helm.py CHART CALLBRIDGE_BIN [VALUES_FILE...]
(the chart's defaults, the refusals, the compose config and the examples are always checked).
Exits non-zero when anything fails.
"""

from __future__ import annotations

import copy
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

# Values the chart must refuse to render, and a part of the message it must give.
REFUSALS = [
    ("no sinks (the chart's defaults)", {}, "config has no sinks"),
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
    (
        "a spool on the emptyDir",
        {"configOverride": {"auth": {"mode": "none"}, "spool": {"path": "/var/lib/callbridge/spool.redb"},
                            "sinks": [{"name": "bus", "type": "null", "on_unavailable": "spool"}]}},
        "would vanish with the pod",
    ),
    (
        "a spool on one claim shared by two pods",
        {"replicaCount": 2, "data": {"existingClaim": "shared"},
         "configOverride": {"auth": {"mode": "none"}, "spool": {"path": "/var/lib/callbridge/spool.redb"},
                            "sinks": [{"name": "bus", "type": "null", "on_unavailable": "spool"}]}},
        "would share one spool file",
    ),
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
                for gv in GROUPS
            ]
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return self.send_json(200, self.resource_list("v1", CORE))
        if path.startswith("/apis/") and path[6:] in GROUPS:
            return self.send_json(200, self.resource_list(path[6:], GROUPS[path[6:]]))
        # Nothing exists yet: lookups, release history and conflict checks all find nothing.
        return self.send_json(
            404,
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404},
        )

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))  # protobuf or JSON; unused
        parts = self.path.split("?")[0].strip("/").split("/")
        gv = "v1" if parts[0] == "api" else f"{parts[1]}/{parts[2]}"
        kinds = {name: kind for name, kind, _ in (CORE if gv == "v1" else GROUPS.get(gv, []))}
        kind = kinds.get(parts[-1])
        if kind is None:
            return self.send_json(404, {"kind": "Status", "apiVersion": "v1", "code": 404})
        meta = {"name": "created", "namespace": "callbridge", "uid": f"uid-{time.monotonic_ns()}", "resourceVersion": "1"}
        return self.send_json(201, {"kind": kind, "apiVersion": gv, "metadata": meta})


def helm_install(chart: Path, user_values: dict, kubeconfig: Path) -> tuple[dict | None, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(user_values, f)
        values_path = f.name
    try:
        return run_child(INSTALL_CHILD, str(kubeconfig), str(chart), values_path, env={"HELM_DRIVER": "memory"})
    finally:
        os.unlink(values_path)


def check_refusal(chart: Path, user_values: dict, label: str, expected: str, kubeconfig: Path) -> None:
    result, stderr = helm_install(chart, user_values, kubeconfig)
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
        # The probes go where the bridge serves them: the admin listener when there is one
        # (the webhook listener answers 404), HTTPS when the webhook listener has TLS.
        admin = server.get("admin_listen")
        probes = [c.get(p, {}).get("httpGet", {}) for p in ("startupProbe", "livenessProbe", "readinessProbe")]
        if admin:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            if ports.get("admin") != int(str(admin).rsplit(":", 1)[1]):
                problems.append("no container port 'admin' for config.server.admin_listen")
            if any(p.get("port") != "admin" for p in probes):
                problems.append("probes not on the admin port although server.admin_listen is set")
            svc_ports = [p["name"] for p in by_kind["Service"][0]["spec"]["ports"]] if by_kind.get("Service") else []
            if "admin" not in svc_ports:
                problems.append("the Service has no 'admin' port for /metrics")
            for sm in by_kind.get("ServiceMonitor", []):
                if sm["spec"]["endpoints"][0].get("port") != "admin":
                    problems.append("the ServiceMonitor does not scrape the admin port")
        elif server.get("tls") and any(p.get("scheme") != "HTTPS" for p in probes):
            problems.append("probes are plain HTTP although the listener has TLS")
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
    docs = helm_render(chart, {"configOverride": text}, label, kubeconfig)
    if docs is None:
        return
    cms = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in (d.get("data") or {})]
    got = cms[0]["data"]["config.yaml"] if cms else ""
    report(f"the ConfigMap holds the file verbatim [{label}]", got.strip() == text.strip(), "" if cms else "no ConfigMap")


# ---- main -------------------------------------------------------------------------------------


def main() -> int:
    chart = Path(sys.argv[1]).resolve()
    binary = Path(sys.argv[2]).resolve()
    repo = chart.parent.parent
    files = [Path(a).resolve() for a in sys.argv[3:]]
    defaults = load_yaml(chart / "values.yaml")
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)

    server = ThreadingHTTPServer(("127.0.0.1", 0), StubApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="lint-helm-"))
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
                "users": [{"name": "stub", "user": {"token": "stub"}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "callbridge"}}],
                "current-context": "stub",
            }
        )
    )
    try:
        # The defaults carry no sinks: they pass the schema, and the chart refuses to render them
        # (checked with the other refusals below).
        label = f"{chart.relative_to(repo)}/values.yaml (defaults)"
        errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(defaults), key=lambda e: list(e.path))
        report(f"values.schema.json [{label}]", not errs, "; ".join(e.message for e in errs))
        cases = []
        for f in files:
            rel = str(f.relative_to(repo)) if f.is_relative_to(repo) else str(f)
            cases.append((rel, load_yaml(f), "everything-on" in f.name, VALIDATE_PENDING.get(rel)))
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
            print(f"     ({label}: {time.monotonic() - started:.1f}s)", flush=True)
        check_refusals_and_set_file(chart, repo, kubeconfig)
        if (repo / COMPOSE_FILE).exists():
            check_compose(repo, binary)
        if (repo / EXAMPLE_CONFIGS).exists():
            check_example_configs(repo, binary)
    finally:
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    passed = sum(ok for _, ok in RESULTS)
    failed = len(RESULTS) - passed
    print(f"lint-helm: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
