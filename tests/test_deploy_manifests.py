"""The deploy files agree with the server: deploy/Dockerfile and deploy/k8s (no cluster, no Docker).

What a cluster or a build would catch late is checked here against the code itself: the env
names are the ones ``Settings.from_env`` reads, the probe paths are routed by the real apps,
the HPA's metric is in the metrics registry, ports and selectors line up, the grace period
covers the drain, and the image's final stage carries no dev tool and runs as non-root.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from packaging.requirements import Requirement

from bot.app import create_app
from bot.app_keys import CALLS, VAD_MODEL
from bot.calls import WRAP_UP_SECS, CallRegistry
from bot.metrics import METRICS, ServerMetrics
from bot.ops import create_ops_app
from bot.persona_store import PersonaStore
from bot.server import ServeOptions
from bot.settings import Settings
from bot.workers import make_plan
from pipelines.audio.batched_vad import BatchedSileroVAD
from pipelines.gemini.clients import GeminiClients

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "playwright", "pytest-asyncio", "coverage"}
# deploy/k8s YAML files that are not applied with the base kustomization, and why.
NOT_IN_BASE = {
    "secret.example.yaml": "the operator creates the real Secret",
    "servicemonitor.yaml": "needs the Prometheus Operator's CRD",
    "prometheus-adapter-rules.yaml": "Helm values for prometheus-adapter",
    "kustomization.yaml": "the list itself",
}


def _docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML document"
    return docs


def _objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name in ("kustomization.yaml", "prometheus-adapter-rules.yaml"):
            continue
        objects += _docs(path)
    return objects


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in _objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, got {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    (container,) = _one("Deployment", "voicebot")["spec"]["template"]["spec"]["containers"]
    return container


class _Recording(Mapping[str, str]):
    """An empty environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _settings_env_names() -> set[str]:
    env = _Recording()
    Settings.from_env(env)
    assert "GEMINI_API_KEY" in env.asked, "Settings.from_env no longer reads through get()"
    return env.asked


def test_every_yaml_document_parses_and_names_itself() -> None:
    paths = sorted(K8S.rglob("*.yaml"))
    assert len(paths) >= 9
    for path in paths:
        for doc in _docs(path):
            if path.name == "prometheus-adapter-rules.yaml":
                assert doc["rules"]["custom"], path
                continue
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: {doc}"
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path
    kinds = {o["kind"] for o in _objects()}
    expected = {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"}
    expected |= {"PodDisruptionBudget", "ConfigMap", "Secret", "ServiceMonitor", "StatefulSet"}
    assert kinds >= expected


def test_the_kustomizations_list_every_manifest_but_the_documented_exceptions() -> None:
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        folder = kustomization.parent
        listed = set(_docs(kustomization)[0]["resources"])
        present = {p.name for p in folder.glob("*.yaml")}
        assert listed <= present, f"{kustomization}: lists missing files {listed - present}"
        exceptions = set(NOT_IN_BASE) if folder == K8S else {"kustomization.yaml"}
        assert present - listed == exceptions, f"{kustomization}: not listed {present - listed}"


def test_the_deployment_env_is_what_the_server_reads_and_its_sources_exist() -> None:
    read = _settings_env_names()
    env = {e["name"]: e for e in _container()["env"]}
    # Downward-API values (the pod IP) are not settings: the kubelet expands them into others.
    downward = {n for n, e in env.items() if "fieldRef" in e.get("valueFrom", {})}
    unknown = set(env) - read - {"HOME"} - downward
    assert not unknown, f"Deployment sets variables Settings.from_env never reads: {unknown}"
    needed = {"GEMINI_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_URL"}
    needed |= {"VOICEBOT_OPS_TOKEN", "VOICEBOT_OPS_PORT", "VOICEBOT_DATABASE_URL"}
    needed |= {"VOICEBOT_LOG_FORMAT", "VOICEBOT_MAX_CALLS"}
    assert needed <= set(env), f"missing: {needed - set(env)}"

    config = _one("ConfigMap", "voicebot-config")["data"]
    secret = _one("Secret", "voicebot-secrets")["stringData"]
    values: dict[str, str] = {}
    for name, entry in env.items():
        if name in downward:
            continue
        if "value" in entry:
            # $(POD_IP) as the kubelet expands it, with an example pod IP.
            values[name] = entry["value"].replace("$(POD_IP)", "10.0.0.5")
            continue
        source = entry["valueFrom"]
        if ref := source.get("secretKeyRef"):
            assert ref["name"] == "voicebot-secrets" and ref["key"] == name
            assert ref["key"] in secret, f"secret.example.yaml lacks {ref['key']}"
            values[name] = secret[ref["key"]]
        else:
            ref = source["configMapKeyRef"]
            assert ref["name"] == "voicebot-config" and ref["key"] == name
            if ref.get("optional"):
                continue
            assert ref["key"] in config, f"configmap.yaml lacks {ref['key']}"
            values[name] = config[ref["key"]]
    for name in config:
        assert name in read, f"configmap.yaml sets {name}, which Settings.from_env never reads"
    # The example values are all accepted as the server would read them.
    settings = Settings.from_env(values)
    assert settings.log_format == "json" and settings.signatures_required
    assert settings.records_url is not None and settings.records_url.startswith("postgresql+")
    ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert settings.ops_address is not None and settings.ops_address.port == ports["ops"]
    assert settings.ops_address.host == "0.0.0.0"


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}


def test_probe_and_scrape_paths_are_routed_by_the_real_apps() -> None:
    settings = Settings(database_url="off")
    public = create_app(settings, PersonaStore(ROOT / "config/personas"), GeminiClients("k"))
    public_routes = _routes(public)
    container = _container()
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], live["path"]) == ("/readyz", "/livez")  # separated: drain is ready=no
    assert ready["port"] == live["port"] == "http"
    for path in ("/readyz", "/livez", "/twilio/voice", "/twilio/status", "/twilio/media"):
        method = "POST" if path in ("/twilio/voice", "/twilio/status") else "GET"
        assert (method, path) in public_routes, path
    assert ("GET", "/metrics") not in public_routes and ("GET", "/stats") not in public_routes

    bare = web.Application()
    bare[CALLS] = CallRegistry.from_settings(settings)
    bare[VAD_MODEL] = BatchedSileroVAD()
    bare[METRICS] = ServerMetrics()
    ops_routes = _routes(create_ops_app(bare, Settings(ops_token="t")))
    (endpoint,) = _one("ServiceMonitor")["spec"]["endpoints"]
    assert ("GET", endpoint["path"]) in ops_routes and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["key"] == "VOICEBOT_OPS_TOKEN"


def test_the_hpa_scales_on_a_metric_the_server_exports_through_the_adapter_rule() -> None:
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "voicebot",
    }
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods["metric"]["name"]
    assert pods["target"]["type"] == "AverageValue"
    registry = ServerMetrics().registry
    gauges = {m.name: m.type for m in registry.collect()}
    assert gauges.get(name) == "gauge", f"{name} is not a gauge of bot/metrics.py"
    target = float(pods["target"]["averageValue"])
    max_calls = int(_one("ConfigMap", "voicebot-config")["data"]["VOICEBOT_MAX_CALLS"])
    args = _container()["args"]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    # VOICEBOT_MAX_CALLS is per worker process; the target is per pod.
    assert 0 < target < max_calls * workers, "pods must be added before they refuse callers"

    (rule,) = _docs(K8S / "prometheus-adapter-rules.yaml")[0]["rules"]["custom"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
    assert re.fullmatch(rule["name"]["matches"], name)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_ports_and_selectors_line_up() -> None:
    deployment = _one("Deployment", "voicebot")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert args[:1] == ["serve"] and args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == ports["http"]

    services = {s["metadata"]["name"]: s for s in _objects() if s["kind"] == "Service"}
    for name in ("voicebot", "voicebot-ops"):
        spec = services[name]["spec"]
        assert spec["selector"].items() <= pod_labels.items(), name
        for port in spec["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port {port}"
    assert [p["targetPort"] for p in services["voicebot"]["spec"]["ports"]] == ["http"]

    ingress = _one("Ingress")["spec"]
    (rule,) = ingress["rules"]
    for path in rule["http"]["paths"]:
        backend = path["backend"]["service"]
        service_ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
        assert backend["name"] == "voicebot" and backend["port"]["name"] in service_ports
    monitor = _one("ServiceMonitor")["spec"]
    ops_labels = services["voicebot-ops"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= ops_labels.items()
    assert (
        not monitor["selector"]["matchLabels"].items()
        <= services["voicebot"]["metadata"]["labels"].items()
    ), "the ServiceMonitor must not select the public Service"
    ops_ports = {p["name"] for p in services["voicebot-ops"]["spec"]["ports"]}
    assert monitor["endpoints"][0]["port"] in ops_ports
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()

    postgres = _one("StatefulSet", "voicebot-postgres")
    pg_port = postgres["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    (pg_service_port,) = services["voicebot-postgres"]["spec"]["ports"]
    assert pg_service_port["targetPort"] == pg_port["name"]
    secret_url = urlsplit(_one("Secret", "voicebot-secrets")["stringData"]["VOICEBOT_DATABASE_URL"])
    assert (secret_url.hostname, secret_url.port) == ("voicebot-postgres", pg_service_port["port"])


def test_the_ingress_serves_wss_for_half_hour_calls_on_the_public_url_host() -> None:
    ingress = _one("Ingress")
    notes = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= 30 * 60, key
    spec = ingress["spec"]
    (tls,) = spec["tls"]
    (rule,) = spec["rules"]
    public = urlsplit(_one("ConfigMap", "voicebot-config")["data"]["PUBLIC_URL"])
    assert public.scheme == "https"  # wss:// stream URLs
    assert tls["hosts"] == [rule["host"]] == [public.hostname] and tls["secretName"]
    prefixes = [p["path"] for p in rule["http"]["paths"]]
    for path in ("/twilio/voice", "/twilio/status", "/twilio/media"):
        assert any(path.startswith(prefix) for prefix in prefixes), path
    assert not any("/stats".startswith(p) or "/metrics".startswith(p) for p in prefixes)


def test_the_grace_period_covers_pre_stop_the_drain_and_the_wrap_up() -> None:
    pod = _one("Deployment", "voicebot")["spec"]["template"]["spec"]
    container = _container()
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    args = container["args"]
    drain = float(args[args.index("--drain-secs") + 1])
    needed = float(sleep[1]) + drain + WRAP_UP_SECS
    grace = pod["terminationGracePeriodSeconds"]
    assert needed < grace <= needed + 60, f"grace {grace} s for {needed} s of preStop+drain+wrap"
    # Gunicorn's master (--workers) waits graceful_timeout before it kills a worker: that bound
    # fits in the grace period too.
    settings = Settings(time_scale=1.0)
    plan = make_plan(2, settings, ServeOptions(port=8080, drain_secs=drain), False, None)
    assert float(sleep[1]) + plan.graceful_timeout <= grace
    # The preStop pause outlasts readiness noticing nothing: two probe periods at least.
    assert float(sleep[1]) >= 2 * container["readinessProbe"]["periodSeconds"]


def _dockerfile_stages() -> list[dict[str, Any]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"base": words[0], "name": name, "lines": []})
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1]["lines"].append((instruction, rest.strip()))
    return stages


def test_the_image_is_multi_stage_with_a_slim_non_root_final_stage_without_dev_tools() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    builder, final = stages[0], stages[-1]
    assert final["base"] == "python:3.13-slim"
    lines = final["lines"]

    def values(instruction: str) -> list[str]:
        return [rest for ins, rest in lines if ins == instruction]

    # Nothing is installed in the final stage: the venv comes whole from the builder.
    for run in values("RUN"):
        assert not re.search(r"\bpip\b|\buv\b|apt-get|poetry", run), run
    copies = values("COPY")
    assert any(c.startswith(f"--from={builder['name']} ") for c in copies)
    assert not any(re.search(r"\b(tests|\.venv)\b", c) for c in copies), copies
    assert any(c.split()[0] == "config" for c in copies), "personas and pricing (config/)"

    (user,) = values("USER")
    assert user.split(":")[0] not in ("root", "0")
    entry = yaml.safe_load(values("ENTRYPOINT")[-1]) + yaml.safe_load(values("CMD")[-1])
    assert entry[:2] == ["voicebot", "serve"] and entry[entry.index("--host") + 1] == "0.0.0.0"
    exposed = {int(p) for e in values("EXPOSE") for p in e.split()}
    ports = {p["containerPort"] for p in _container()["ports"]}
    assert exposed == ports

    # The builder installs pyproject's [project] dependencies, pinned by the lock as
    # constraints, never the lock itself (it pins the dev tools too) nor an extra.
    builder_runs = " ".join(r for i, r in builder["lines"] if i == "RUN")
    installs = [c for c in re.split(r"&&|;", builder_runs) if re.search(r"pip install", c)]
    assert installs
    for command in installs:
        words = shlex.split(command)
        assert "-r" not in words and "requirements.lock" not in words, command
        assert not any("[" in w for w in words), f"an extra is installed: {command}"
        if "--requirement" in words:
            assert words[words.index("--requirement") + 1] == "runtime.in"
            assert "--constraint" in words
    assert "['project']['dependencies']" in builder_runs
    # And the build fails if one got into the venv anyway (the builder's last check).
    (guard,) = [c for c in re.split(r"&&", builder_runs) if "dev tools in the runtime venv" in c]
    for tool in DEV_TOOLS - {"coverage"}:
        assert f"'{tool}'" in guard, f"the builder's guard does not look for {tool}"


def test_the_runtime_dependency_closure_holds_no_dev_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(r), "") for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = req.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed on this Python (e.g. audioop-lts before 3.13)
        for sub in requires:
            for wanted in sorted(req.extras) or [""]:
                todo.append((Requirement(sub), wanted))
    names = {k.split("[")[0] for k in seen}
    assert "pipecat-ai" in names and "sqlalchemy" in names and len(names) > 40
    assert not names & DEV_TOOLS, f"runtime dependencies pull dev tools: {names & DEV_TOOLS}"


def test_the_build_context_filter_lets_in_what_the_image_copies() -> None:
    rules = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "**", "everything is left out unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for stage in _dockerfile_stages():
        for instruction, rest in stage["lines"]:
            if instruction != "COPY" or rest.startswith("--from="):
                continue
            for source in rest.split()[:-1]:
                assert source in allowed, f"COPY {source}: left out of the build context"


def test_workers_match_the_cpu_request_and_peers_reach_each_worker() -> None:
    container = _container()
    args = container["args"]
    workers = int(args[args.index("--workers") + 1])
    cpu = container["resources"]["requests"]["cpu"]
    assert float(cpu) == workers, f"--workers {workers} on a pod requesting {cpu} CPU"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    peer = urlsplit(env["VOICEBOT_PEER_URL"]["value"].replace("$(POD_IP)", "10.0.0.5"))
    assert peer.hostname == "10.0.0.5"
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_IP") < names.index("VOICEBOT_PEER_URL"), "$(POD_IP) defined first"
    public = int(args[args.index("--port") + 1])
    settings = Settings(peer_url=f"http://10.0.0.5:{peer.port}")
    plan = make_plan(workers, settings, ServeOptions(port=public), False, None)
    ports = {p["containerPort"]: p["name"] for p in container["ports"]}
    peer_ports = [plan.peer_address(i).port for i in range(workers)]
    assert all(p in ports for p in peer_ports), f"container ports {ports} lack {peer_ports}"
    services = {s["metadata"]["name"]: s for s in _objects() if s["kind"] == "Service"}
    peers = services["voicebot-peers"]["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    assert sorted(p["port"] for p in peers["ports"]) == peer_ports
    assert {p["targetPort"] for p in peers["ports"]} == {ports[p] for p in peer_ports}
