"""Renders the Helm chart with real Helm code, as `helm install` would, and prints the chosen kinds.

Usage: python render_chart.py CHART VALUES_JSON KIND[,KIND...] [--host-network] [--secret-json FILE]
       > manifests.yaml

Helm runs through helm-sdkpy (the venv scripts/lint-helm installs) against the stub Kubernetes API
of lint_helm.py on 127.0.0.1 (a plain cluster: no Prometheus Operator), so the manifest is what a
real install would create; only the objects of the given kinds are printed, as one YAML stream
(scripts/test-image gives them to `podman kube play`). Exits non-zero with Helm's message when the
chart refuses the values.

--host-network: for `podman kube play --network host`, which takes no port mappings (the pod
shares the host's ports): each container's `ports` list is dropped and the probes' named ports
(`http`, `admin`) become the numbers it named. Nothing else changes.

--secret-json FILE: the rendered Secret goes to FILE instead of the stream, as {"name": NAME,
"data": {KEY: base64 value}} (stringData encoded like data). Podman 4.3's kube play stores a
Secret it is given as YAML but reads the Secret that envFrom names as a JSON object of base64
values (and fails on its own YAML); `podman secret create NAME` with that object gives it the
chart's Secret in the form it reads.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lint_helm  # noqa: E402


def main() -> int:
    chart = Path(sys.argv[1]).resolve()
    values = json.loads(Path(sys.argv[2]).read_text())
    kinds = set(sys.argv[3].split(","))
    host_network = "--host-network" in sys.argv[4:]
    secret_json = sys.argv[sys.argv.index("--secret-json") + 1] if "--secret-json" in sys.argv else None
    server = ThreadingHTTPServer(("127.0.0.1", 0), lint_helm.PlainStubApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
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
            result, stderr = lint_helm.helm_install(chart, values, kubeconfig)
    finally:
        server.shutdown()
    if result is None or "error" in result:
        print(result["error"] if result else stderr, file=sys.stderr)
        return 1
    docs = [d for d in yaml.safe_load_all(result["manifest"]) if d and d.get("kind") in kinds]
    found = {d["kind"] for d in docs}
    if found != kinds:
        print(f"the chart rendered {sorted(found)}, not {sorted(kinds)}", file=sys.stderr)
        return 1
    if host_network:
        for d in docs:
            if d["kind"] in ("Deployment", "StatefulSet"):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    named = {p["name"]: p["containerPort"] for p in c.pop("ports", []) if "name" in p}
                    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                        get = (c.get(probe) or {}).get("httpGet")
                        if get and get.get("port") in named:
                            get["port"] = named[get["port"]]
    if secret_json:
        import base64

        secrets = [d for d in docs if d["kind"] == "Secret"]
        docs = [d for d in docs if d["kind"] != "Secret"]
        secret = secrets[0]
        data = dict(secret.get("data") or {})
        data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in (secret.get("stringData") or {}).items()})
        Path(secret_json).write_text(json.dumps({"name": secret["metadata"]["name"], "data": data}))
    # ConfigMap and Secret first: podman kube play wants them before the pods that use them.
    docs.sort(key=lambda d: d["kind"] not in ("ConfigMap", "Secret"))
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
