"""deploy/docker-compose.yml matches the Compose Specification and keeps what docs/deploy.md promises:
Redis with AOF and noeviction, two webs and two workers from one image, healthchecks everywhere,
a stop grace period that lets a worker drain, and an nginx that does not buffer streams."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from parley.shared.settings import Settings

from .validators import DEPLOY, REPO_ROOT, ManifestError, validate_compose

COMPOSE_FILE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def seconds(duration: str) -> float:
    """A Compose duration such as `30s`, `1m30s`."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * scale[unit] for number, unit in parts)


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    validate_compose(compose)


@pytest.mark.parametrize(
    "service, field, value",
    [
        ("web", "deploy", {"replica": 2}),
        ("worker", "healthcheck", {"test": ["CMD", "true"], "intervall": "5s"}),
        ("redis", "restart", ["always"]),
        ("web", "stop_grace_periods", "30s"),
    ],
)
def test_the_schema_refuses_a_broken_compose_file(compose: dict[str, Any], service: str, field: str,
                                                  value: Any) -> None:  # fmt: skip
    broken = copy.deepcopy(compose)
    broken["services"][service][field] = value
    with pytest.raises(ManifestError):
        validate_compose(broken)


def test_redis_persists_every_write_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    args = redis["command"]
    assert args[0] == "redis-server"
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs["--appendonly"] == "yes" and pairs["--appendfsync"] in {"everysec", "always"}
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"]), "the AOF must live on a volume"


def test_two_webs_and_two_workers_from_one_image(compose: dict[str, Any]) -> None:
    web, worker = compose["services"]["web"], compose["services"]["worker"]
    procfile = (REPO_ROOT / "Procfile").read_text()
    assert web["image"] == worker["image"] and web["build"] == worker["build"]
    assert web["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / web["build"]["context"] / web["build"]["dockerfile"]).is_file()
    for name, service in (("web", web), ("worker", worker)):
        assert service["command"] == [name] and re.search(rf"^{name}:", procfile, re.M)
        assert service["deploy"]["replicas"] == 2
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert compose["services"]["web"]["healthcheck"]["test"][1:] == ["parley-healthcheck", "web", "/readyz"]
    assert compose["services"]["worker"]["healthcheck"]["test"][1:] == ["parley-healthcheck", "worker"]


def test_workers_get_time_to_drain(compose: dict[str, Any]) -> None:
    drain = Settings.model_fields["drain_grace_s"].default
    for name in ("web", "worker"):
        assert seconds(compose["services"][name]["stop_grace_period"]) > drain, name


def test_environment_file_and_example_agree(compose: dict[str, Any]) -> None:
    assert compose["services"]["web"]["env_file"] == ["parley.env"]
    example = (DEPLOY / "parley.env.example").read_text()
    assert re.search(r"^REDIS_URL=redis://redis:6379/", example, re.M), "the example must point at the redis service"
    assert "parley.env" in (DEPLOY / ".gitignore").read_text().split()


def test_nginx_spreads_over_the_webs_without_buffering(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    mount = next(volume for volume in proxy["volumes"] if volume.startswith("./nginx.conf:"))
    conf = (DEPLOY / mount.split(":")[0]).read_text()
    web_port = compose["services"]["web"]["expose"][0]
    assert f"http://web:{web_port};" in conf
    assert re.search(r"^\s*proxy_buffering off;", conf, re.M)
    read_timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", conf, re.M)
    assert read_timeout and int(read_timeout.group(1)) >= 10 * Settings.model_fields["sse_ping_s"].default
    assert proxy["ports"][0].endswith(":8080") and re.search(r"^\s*listen 8080;", conf, re.M)


def _docker_compose() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run([*command, "version"], capture_output=True,
                                                        timeout=30, check=False).returncode == 0:  # fmt: skip
            return command
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("neither `docker compose` (plugin) nor `docker-compose` is installed here; "
                    "the file was checked against the Compose Specification's schema instead")  # fmt: skip
    copy_of_deploy = tmp_path / "deploy"  # with a parley.env, which the repository does not hold
    shutil.copytree(DEPLOY, copy_of_deploy, ignore=shutil.ignore_patterns("parley.env", "k8s", "grafana"))
    (copy_of_deploy / "parley.env").write_text((DEPLOY / "parley.env.example").read_text())
    result = subprocess.run([*command, "-f", str(copy_of_deploy / COMPOSE_FILE.name), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
