"""Build deploy/Dockerfile and smoke-test the image: web and worker containers from the one image
answer a chat turn (demo model) through a real Redis, run as a non-root user, pass their own health
checks, and stop promptly on SIGTERM. Needs a Docker daemon: skipped, with the reason printed at
the end of the run, where none answers."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.local.redis_server import RedisServer
from tests.harness import free_port
from tests.integration.helpers import create_agent

from .validators import DEPLOY, REPO_ROOT

pytestmark = pytest.mark.integration

BUILD_TIMEOUT_S = 900


def docker_unavailable() -> str | None:
    """Why the image cannot be built here, or None when a daemon answers."""
    if shutil.which("docker") is None:
        return "no `docker` command on PATH"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=20, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if info.returncode != 0:
        return f"no Docker daemon answers (`docker info`: {info.stderr.strip().splitlines()[-1:]})"
    return None


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"Docker image not built or smoke-tested: {reason}")
    tag = f"parley-test:{uuid.uuid4().hex[:8]}"
    built = docker("build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(REPO_ROOT), timeout=BUILD_TIMEOUT_S)
    assert built.returncode == 0, built.stderr[-4000:]
    yield tag
    docker("rmi", "-f", tag)


def test_image_runs_as_a_non_root_user(image: str) -> None:
    result = docker("run", "--rm", image, "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() not in {"", "0"}


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout} s"
        time.sleep(0.5)


def test_web_and_worker_containers_answer_a_turn(image: str, redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    # Host networking: the containers reach the test's Redis on 127.0.0.1 and the test reaches the web.
    common = ["--network", "host", "-e", f"REDIS_URL={redis_server.url}", "-e", "PARLEY_API_KEYS=smoke:k",
              "-e", "PARLEY_LLM=demo", "-e", f"PORT={port}"]  # fmt: skip
    names = {kind: f"parley-smoke-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("web", "worker")}
    try:
        for kind, name in names.items():
            started = docker("run", "-d", "--name", name, *common, image, kind)
            assert started.returncode == 0, started.stderr
        wait_http(f"http://127.0.0.1:{port}/readyz")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer k"},
                          timeout=60) as http:  # fmt: skip
            create_agent(http)
            answer = http.post("/api/v1/chat", json={"message": "hello"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] and answer.json()["job_id"]
        for kind, name in names.items():
            check = docker("exec", name, "parley-healthcheck", kind)
            assert check.returncode == 0, check.stdout + check.stderr
        for name in names.values():
            started_at = time.monotonic()
            stopped = docker("stop", "--time", "30", name, timeout=60)
            assert stopped.returncode == 0, stopped.stderr
            assert time.monotonic() - started_at < 20, f"{name} ignored SIGTERM (killed after the grace period)"
            code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            # 143 = 128 + SIGTERM: uvicorn re-raises the signal after its graceful shutdown
            assert code in {"0", "143"}, f"{name} exited {code}: {docker('logs', name).stderr[-2000:]}"
    finally:
        for name in names.values():
            docker("rm", "-f", name)
