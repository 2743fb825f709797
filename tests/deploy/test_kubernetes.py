"""The kustomize base (and every overlay) renders, validates against Kubernetes' and KEDA's schemas, and
keeps the properties docs/deploy.md promises (drain within the grace period, no capacity lost in a
rollout, SSE unbuffered, Redis persistent, the queue KEDA watches is the one Parley fills)."""

from __future__ import annotations

import copy
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parley.api.routes.ops import router as ops_router
from parley.shared.settings import Settings
from parley.shared.store import keys

from .validators import (
    K8S_BASE,
    K8S_OVERLAYS,
    REPO_ROOT,
    ManifestError,
    describe,
    is_builtin,
    kustomize_build,
    validate_kubernetes,
    validate_scaled_object,
)

Obj = dict[str, Any]


def validate(obj: Obj) -> None:
    if is_builtin(obj):
        validate_kubernetes(obj)
    elif obj["apiVersion"].startswith("keda.sh/") and obj["kind"] == "ScaledObject":
        validate_scaled_object(obj)
    else:
        raise ManifestError(f"{describe(obj)}: no schema to validate {obj['apiVersion']} against")


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return kustomize_build(K8S_BASE)


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [obj for obj in objs if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Obj) -> Obj:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, describe(workload)
    first: Obj = containers[0]
    return first


def default(field: str) -> Any:
    return Settings.model_fields[field].default


def config(objs: list[Obj]) -> dict[str, str]:
    maps = [obj for obj in objs if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("parley-config")]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


# -- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [K8S_BASE, *K8S_OVERLAYS], ids=lambda path: path.name)
def test_kustomization_renders_and_every_object_validates(directory: Path) -> None:
    objs = kustomize_build(directory)
    assert objs, f"{directory} rendered nothing"
    for obj in objs:
        validate(obj)


def test_base_has_what_the_issue_lists(base: list[Obj]) -> None:
    kinds = sorted({obj["kind"] for obj in base})
    assert kinds == sorted({"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet", "Ingress",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject"})  # fmt: skip
    assert {obj["metadata"].get("namespace") for obj in base if obj["kind"] != "Namespace"} == {"parley"}


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()

BROKEN = {
    "unknown container field": ("Deployment", "parley-web", _set("spec.template.spec.containers.0.livenessProbes", {})),
    "replicas as text": ("StatefulSet", "redis", _set("spec.replicas", "one")),
    "probe without a handler port": ("Deployment", "parley-web",
                                     _set("spec.template.spec.containers.0.readinessProbe.httpGet.port", None)),
    "port as text": ("Deployment", "parley-web", _set("spec.template.spec.containers.0.ports.0.containerPort", "8000")),
    "ingress rule without paths": ("Ingress", "parley", _set("spec.rules.0.http.paths", _DELETE)),
    "HPA without maxReplicas": ("HorizontalPodAutoscaler", "parley-web", _set("spec.maxReplicas", _DELETE)),
    "KEDA: listLength as a number": ("ScaledObject", "parley-worker", _set("spec.triggers.0.metadata.listLength", 4)),
    "KEDA: misspelt field": ("ScaledObject", "parley-worker", _set("spec.minReplicaCounts", 2)),
    "KEDA: no scale target": ("ScaledObject", "parley-worker", _set("spec.scaleTargetRef", _DELETE)),
    "KEDA: no triggers": ("ScaledObject", "parley-worker", _set("spec.triggers", _DELETE)),
    "KEDA: unknown redis scaler key": ("ScaledObject", "parley-worker", _set("spec.triggers.0.metadata.queue", "x")),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN))
def test_validators_refuse_a_broken_manifest(base: list[Obj], case: str) -> None:
    kind, name, mutate = BROKEN[case]
    obj = copy.deepcopy(find(base, kind, name))
    validate(obj)  # the real one passes ...
    mutate(obj)
    with pytest.raises(ManifestError):  # ... and the broken one does not
        validate(obj)


def test_kustomize_refuses_a_missing_resource() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp)
        base = os.path.relpath(K8S_BASE, overlay)
        (overlay / "kustomization.yaml").write_text(f"resources:\n  - {base}\n  - missing.yaml\n")
        with pytest.raises(ManifestError, match="missing.yaml"):
            kustomize_build(overlay)


# -- what the manifests promise --------------------------------------------------------------


def test_one_image_runs_the_procfiles_process_types(base: list[Obj]) -> None:
    web = container(find(base, "Deployment", "parley-web"))
    worker = container(find(base, "Deployment", "parley-worker"))
    assert web["image"] == worker["image"]
    procfile = (REPO_ROOT / "Procfile").read_text()
    assert web["args"] == ["web"] and re.search(r"^web:", procfile, re.M)
    assert worker["args"] == ["worker"] and re.search(r"^worker:", procfile, re.M)
    assert "ports" not in worker, "workers need no port"


def test_worker_drains_within_its_termination_grace(base: list[Obj]) -> None:
    worker = find(base, "Deployment", "parley-worker")
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    drain = float(config(base).get("PARLEY_DRAIN_GRACE_S", default("drain_grace_s")))
    assert grace > drain >= default("drain_grace_s") - 5
    assert grace > default("drain_grace_s")


def test_rollouts_and_disruptions_keep_capacity(base: list[Obj]) -> None:
    hpa = find(base, "HorizontalPodAutoscaler", "parley-web")
    scaled = find(base, "ScaledObject", "parley-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "parley-web" and hpa["spec"]["minReplicas"] >= 2
    assert scaled["spec"]["scaleTargetRef"]["name"] == "parley-worker" and scaled["spec"]["minReplicaCount"] >= 2
    pdbs = [obj for obj in base if obj["kind"] == "PodDisruptionBudget"]
    for name in ("parley-web", "parley-worker"):
        deployment = find(base, "Deployment", name)
        assert "replicas" not in deployment["spec"], "the autoscaler owns replicas; re-applying must not reset them"
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [pdb for pdb in pdbs if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{name}: one PodDisruptionBudget must select its pods"
        assert covering[0]["spec"]["maxUnavailable"] == 1


def test_probes_use_routes_the_app_serves(base: list[Obj]) -> None:
    routes = {getattr(route, "path", None) for route in ops_router.routes}
    web = container(find(base, "Deployment", "parley-web"))
    port_names = {port["name"] for port in web["ports"]}
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert web[probe]["httpGet"]["path"] in routes
        assert web[probe]["httpGet"]["port"] in port_names
    worker = container(find(base, "Deployment", "parley-worker"))
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["exec"]["command"] == ["parley-healthcheck", "worker"]


def test_ingress_keeps_streams_unbuffered_and_long_lived(base: list[Obj]) -> None:
    ingress = find(base, "Ingress", "parley")
    service = find(base, "Service", "parley-web")
    web = find(base, "Deployment", "parley-web")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 10 * default("sse_ping_s")
    assert not any("affinity" in key for key in notes), "no sticky sessions: any web serves any stream"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "parley-web"
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    target = service["spec"]["ports"][0]["targetPort"]
    assert target in {port["name"] for port in container(web)["ports"]}


def test_keda_watches_the_queue_parley_fills(base: list[Obj]) -> None:
    scaled = find(base, "ScaledObject", "parley-worker")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    queue = config(base).get("PARLEY_QUEUE", default("queue_name"))
    assert trigger["metadata"]["listName"] == keys.rq_queue(queue)
    redis_service = find(base, "Service", "redis")
    port = redis_service["spec"]["ports"][0]["port"]
    namespace = scaled["metadata"]["namespace"]
    assert trigger["metadata"]["address"] == f"redis.{namespace}.svc.cluster.local:{port}"
    assert config(base)["REDIS_URL"].startswith(f"redis://redis:{port}/")


def test_redis_persists_every_write_and_never_evicts(base: list[Obj]) -> None:
    redis = find(base, "StatefulSet", "redis")
    args = container(redis)["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--appendonly"] == "yes" and pairs["--appendfsync"] in {"everysec", "always"}
    assert pairs["--maxmemory-policy"] == "noeviction"
    mounts = {mount["name"]: mount["mountPath"] for mount in container(redis)["volumeMounts"]}
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert any(mounts.get(claim) == pairs["--dir"] for claim in claims), "the AOF must live on the volume"


def dockerfile_user() -> str:
    users = re.findall(r"^USER\s+(\S+)", (REPO_ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    return users[-1].split(":")[0]


def test_every_pod_runs_unprivileged_with_resources(base: list[Obj]) -> None:
    workloads = [obj for obj in base if obj["kind"] in {"Deployment", "StatefulSet"}]
    assert len(workloads) == 3
    for workload in workloads:
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, describe(workload)
        for each in pod["containers"]:
            security = each["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(each["resources"]["requests"]), describe(workload)
            assert "memory" in each["resources"]["limits"], describe(workload)
    for name in ("parley-web", "parley-worker"):
        assert str(pod_spec(find(base, "Deployment", name))["securityContext"]["runAsUser"]) == dockerfile_user()


def test_pods_read_the_generated_config_and_the_documented_secret(base: list[Obj]) -> None:
    config_map = next(obj for obj in base if obj["kind"] == "ConfigMap")
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for name in ("parley-web", "parley-worker"):
        sources = container(find(base, "Deployment", name))["envFrom"]
        assert sources[0] == {"configMapRef": {"name": config_map["metadata"]["name"]}}, "the hashed name"
        assert sources[-1]["secretRef"]["name"] == "parley-secrets", "the Secret comes last, so it wins"
    assert "create secret generic parley-secrets" in docs


def test_the_overlay_docs_deploy_md_shows_renders_with_its_image_and_host(tmp_path: Path) -> None:
    """docs/deploy.md's own example overlay, as an operator would copy it (beside deploy/)."""
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    example = re.search(r"cat > my-parley/kustomization.yaml <<'EOF'\n(.*?)\nEOF\n", docs, re.S)
    assert example, "docs/deploy.md shows an overlay in a heredoc"
    overlay = tmp_path / "my-parley"
    overlay.mkdir()
    text = example.group(1).replace("../deploy/k8s/base", os.path.relpath(K8S_BASE, overlay))
    (overlay / "kustomization.yaml").write_text(text)
    objs = kustomize_build(overlay)
    for obj in objs:
        validate(obj)
    images = {container(find(objs, "Deployment", name))["image"] for name in ("parley-web", "parley-worker")}
    assert images == {"registry.mycompany.com/parley:0.1.0"}
    ingress = find(objs, "Ingress", "parley")
    assert ingress["spec"]["rules"][0]["host"] == ingress["spec"]["tls"][0]["hosts"][0] == "parley.mycompany.com"
