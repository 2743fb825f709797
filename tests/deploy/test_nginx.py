"""deploy/nginx.conf (the Compose proxy) with a real nginx, where one is installed: the file is valid,
and a stream through it reaches the client event by event, not buffered until the turn ends."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.local.redis_server import RedisServer
from tests.harness import free_port, start_web, start_worker, stop_all, wait_until
from tests.integration.helpers import create_agent
from tests.sse_client import iter_events

from .validators import DEPLOY

pytestmark = pytest.mark.integration

CONF = DEPLOY / "nginx.conf"


@pytest.fixture(scope="module")
def nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found is None:
        pytest.skip("nginx is not installed here (Debian: apt-get install nginx-light); deploy/nginx.conf was "
                    "checked by test_compose.py's reading of it only")  # fmt: skip
    return found


def wrapper(tmp_path: Path, site: Path) -> Path:
    """A main nginx.conf around the server block, as the nginx image's own includes it."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    main = tmp_path / "nginx.conf"
    main.write_text(f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log {tmp_path}/logs/access.log;\n  include {site};\n}}\n")  # fmt: skip
    return main


def test_nginx_accepts_the_file(nginx: str, tmp_path: Path) -> None:
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(wrapper(tmp_path, CONF))],
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture
def proxied_web(nginx: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    """A web and a worker (demo model, 150 ms between words) behind nginx.conf; yields the proxy's URL."""
    env = {"REDIS_URL": redis_server.url, "PARLEY_API_KEYS": "k", "PARLEY_LLM": "demo",
           "PARLEY_DEMO_CHUNK_DELAY_MS": "150"}  # fmt: skip
    web = start_web(env, log_dir=tmp_path)
    worker = start_worker(env, log_dir=tmp_path)
    port = free_port()
    # The same file, with loopback in place of Compose's service name and port.
    site = tmp_path / "site.conf"
    site.write_text(CONF.read_text().replace("listen 8080;", f"listen 127.0.0.1:{port};")
                    .replace("http://web:8000", str(web.url)))  # fmt: skip
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(wrapper(tmp_path, site))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _status(url + "/readyz") == 200, timeout=15, message="nginx to proxy /readyz")
        yield url
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        stop_all([web, worker])


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_a_stream_through_nginx_arrives_as_it_is_made(proxied_web: str) -> None:
    arrivals: list[tuple[float, str]] = []
    with httpx.Client(base_url=proxied_web, headers={"Authorization": "Bearer k"}, timeout=30) as client:
        create_agent(client)
        with client.stream("POST", "/api/v1/chat/stream", json={"message": "tell me something"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in iter_events(response):
                arrivals.append((time.monotonic(), event.type))
    deltas = [at for at, kind in arrivals if kind == "delta"]
    assert [kind for _, kind in arrivals][-1] == "done" and len(deltas) >= 3, arrivals
    # 150 ms between words: unbuffered, the deltas arrive spread out; buffered, all at once at the end.
    assert deltas[-1] - deltas[0] >= 0.15 * (len(deltas) - 1) * 0.5, arrivals
