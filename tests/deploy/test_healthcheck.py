"""deploy/healthcheck.py (the image's `parley-healthcheck`, used by Compose and by Kubernetes probes)
against a real Redis, web and worker: healthy when the process is, unhealthy when it is not, and a
worker is not blamed for a Redis outage it is waiting out."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from parley.local.redis_server import RedisServer
from tests.harness import child_env, free_port, start_web, start_worker, stop_all, wait_until

from .validators import DEPLOY, REPO_ROOT

pytestmark = pytest.mark.integration

HEALTHCHECK = DEPLOY / "healthcheck.py"


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


def test_entrypoint_runs_the_real_web_which_stops_on_sigterm(redis_server: RedisServer, tmp_path: Path) -> None:
    """The image's entry point with the repository's Procfile: `web` becomes uvicorn itself (same pid),
    so the SIGTERM an orchestrator sends reaches it and it shuts down gracefully, promptly."""
    port = free_port()
    env = child_env({"REDIS_URL": redis_server.url, "PARLEY_API_KEYS": "k", "PORT": port,
                     "PARLEY_PROCFILE": REPO_ROOT / "Procfile"})  # fmt: skip
    log = (tmp_path / "web.log").open("w")
    process = subprocess.Popen(["sh", str(DEPLOY / "docker-entrypoint.sh"), "web"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: healthcheck("web", env={"PORT": str(port)})[0] == 0, timeout=30, interval=0.2,
                   message="the web started by the entry point answers /readyz")  # fmt: skip
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert any(b"uvicorn" in part for part in command), command
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so its parent sees why it ended
        assert process.wait(timeout=20) in {0, -signal.SIGTERM}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert "Application shutdown complete" in (tmp_path / "web.log").read_text()
