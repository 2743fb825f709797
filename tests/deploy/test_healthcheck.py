"""deploy/healthcheck.py (the image's `parley-healthcheck`, used by Compose and by Kubernetes probes)
against a real Redis, web and worker: healthy when the process is, unhealthy when it is not, and a
worker is not blamed for a Redis outage it is waiting out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from parley.local.redis_server import RedisServer, find_server_binary
from tests.harness import free_port, start_web, start_worker, stop_all

from .validators import DEPLOY

pytestmark = pytest.mark.integration

HEALTHCHECK = DEPLOY / "healthcheck.py"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(dir=tmp_path_factory.mktemp("redis"), binary=find_server_binary(), die_with_parent=True)
    server.start()
    yield server
    server.stop()


def healthcheck(*args: str, env: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True,
                            env=env, timeout=30, check=False)  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_web_check_follows_readyz(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
    status, out = healthcheck("web", env=env)
    assert status == 1, f"no web listening yet: {out}"
    web = start_web({"REDIS_URL": redis_server.url, "PARLEY_API_KEYS": "k"}, port=port, log_dir=tmp_path)
    try:
        status, out = healthcheck("web", env=env)
        assert status == 0 and ": 200" in out, out
        status, out = healthcheck("web", "/no-such-route", env=env)
        assert status == 1 and ": 404" in out, out
    finally:
        stop_all([web])


def test_worker_check_follows_its_registration(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    redis.Redis.from_url(redis_server.url).flushall()
    status, out = healthcheck("worker", env=env)
    assert status == 1 and "none" in out, f"no worker on this host yet: {out}"
    worker = start_worker({"REDIS_URL": redis_server.url}, log_dir=tmp_path)
    try:
        status, out = healthcheck("worker", env=env)
        assert status == 0, out
    finally:
        stop_all([worker])
    status, out = healthcheck("worker", env=env)
    assert status == 1, f"a stopped worker unregisters: {out}"


def test_worker_check_passes_while_redis_is_down() -> None:
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PATH": "/usr/bin:/bin"}
    status, out = healthcheck("worker", env=env)
    assert status == 0 and "does not answer" in out, out


def test_usage_error() -> None:
    status, out = healthcheck("scheduler", env={"PATH": "/usr/bin:/bin"})
    assert status == 2 and "usage" in out
