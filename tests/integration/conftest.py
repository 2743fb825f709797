"""Fixtures that run the REAL processes: Redis, the model server, web and workers.

* ``redis_server`` (session): a real Redis-compatible server on a free port with
  its AOF in a temp dir.  In CI (``CI`` set) it must be Debian's ``redis-server``;
  without a server binary the tests FAIL, they are never skipped.
* ``model_server`` (session): ``python -m tests.model_server`` as a subprocess.
* ``mcp_server`` (session): ``python -m tests.mcp_server``, the project's MCP server, as a subprocess.
* ``stack`` (per test): FLUSHALL + a model-server reset, then start what the test
  needs::

      def test_x(stack):
          stack.start_web(2)
          stack.start_workers(1)
          httpx.post(stack.web_urls[0] + "/api/v1/chat", headers=stack.headers("alice"), json=...)

  Every process it started is stopped at teardown, pass or fail; when the test
  failed (or PARLEY_TEST_SHOW_LOGS=1) the tail of each process log is printed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis

from tests.harness import (
    HarnessError,
    ModelServer,
    ServiceProcess,
    free_port,
    start_mcp_server,
    start_model_server,
    start_web,
    start_worker,
    stop_all,
    wait_worker_registered,
)
from tests.redis_server import RedisServer, RedisServerError, RedisServerNotFound, find_server_binary

#: Tenants and keys of the stack (PARLEY_API_KEYS="alice:key-alice,bob:key-bob").
API_KEYS: dict[str, str] = {"alice": "key-alice", "bob": "key-bob"}

#: Settings that make worker-liveness detection fast enough for tests; filled in
#: by the service code's author, e.g. {"PARLEY_HEARTBEAT_TTL_S": "6",
#: "PARLEY_MAINTENANCE_INTERVAL_S": "2"}.  Applied to every web and worker.
FAST_ENV: dict[str, str] = {
    "PARLEY_HEARTBEAT_TTL_S": "4",
    "PARLEY_MAINTENANCE_INTERVAL_S": "1",
    "PARLEY_SSE_PING_S": "2",
    "PARLEY_LOG_LEVEL": "INFO",
    "PARLEY_RQ_LOG_LEVEL": "INFO",
}

LOG_TAIL_LINES = 200

#: Teardown grace per process: SIGTERM, then SIGKILL of its process group.
STOP_TIMEOUT_S = 5.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# -- report hook: lets fixtures know whether the test failed --------------------------


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


# -- session fixtures --------------------------------------------------------------------


def redis_server_binary() -> Path:
    """Debian's redis-server in CI; elsewhere whatever find_server_binary() finds. Never skips."""
    if _in_ci():
        found = shutil.which("redis-server")
        if not found:
            pytest.fail(
                "CI must run the integration tests against Debian's redis-server, and none is on PATH. "
                "`make test` installs it (apt-get install -y redis-server).",
                pytrace=False,
            )
        return Path(found)
    try:
        return find_server_binary()
    except RedisServerNotFound as exc:
        pytest.fail(f"the integration tests need a real Redis server.\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        dir=tmp_path_factory.mktemp("redis-data"), binary=redis_server_binary(), die_with_parent=True
    )
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(f"could not start the Redis server for the integration tests:\n{exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """``python -m tests.mcp_server``: the project's MCP server, a real Streamable HTTP server."""
    try:
        server = start_mcp_server(log_dir=tmp_path_factory.mktemp("mcp-server"))
    except HarnessError as exc:
        pytest.fail(f"could not start the MCP server:\n{exc}", pytrace=False)
    yield server
    server.terminate()


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    try:
        server = start_model_server(log_dir=tmp_path_factory.mktemp("model-server"))
    except HarnessError as exc:
        pytest.fail(f"could not start the model server:\n{exc}", pytrace=False)
    yield server
    server.terminate()


# -- the per-test stack ------------------------------------------------------------------


class Stack:
    """One test's Parley deployment: shared Redis and model server, its own processes."""

    def __init__(self, redis_server: RedisServer, model_server: ModelServer, log_dir: Path) -> None:
        self.redis_server = redis_server
        self.model_server = model_server
        self.log_dir = log_dir
        self.redis_url = redis_server.url
        self.api_keys: dict[str, str] = dict(API_KEYS)
        self.env: dict[str, str] = {
            "REDIS_URL": self.redis_url,
            "PARLEY_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in API_KEYS.items()),
            "PARLEY_LLM": "openai",
            "OPENAI_BASE_URL": model_server.base_url,
            "OPENAI_API_KEY": "test",
            **FAST_ENV,
        }
        self.webs: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self._clients: list[redis.Redis] = []

    # -- convenience ------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """alice's key."""
        return self.api_keys["alice"]

    def headers(self, tenant: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys[tenant]}"}

    @property
    def web_urls(self) -> list[str]:
        return [str(w.url) for w in self.webs]

    @property
    def web_url(self) -> str:
        if not self.webs:
            raise HarnessError("no web process started: call stack.start_web() first")
        return str(self.webs[0].url)

    @property
    def processes(self) -> list[ServiceProcess]:
        return [*self.webs, *self.workers]

    def redis(self) -> redis.Redis:
        """A client of the test Redis (decode_responses=True), closed at teardown."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self._clients.append(client)
        return client

    # -- processes --------------------------------------------------------------------

    def start_web(
        self, n: int = 1, env: Mapping[str, object] | None = None, *, wait: bool = True
    ) -> list[ServiceProcess]:
        """Start ``n`` web processes (each on a free port), waiting for /readyz 200."""
        started = []
        for _ in range(n):
            name = f"web.{len(self.webs) + 1}"
            proc = start_web({**self.env, **(env or {})}, free_port(), log_dir=self.log_dir, name=name, wait=False)
            self.webs.append(proc)  # registered before waiting: stopped and logged even if it fails
            started.append(proc)
        if wait:
            for proc in started:
                proc.ready = lambda p: p.wait_http(str(p.url) + "/readyz", timeout=30)
                proc.ready(proc)
        return started

    def start_workers(
        self, m: int = 1, env: Mapping[str, object] | None = None, *, wait: bool = True
    ) -> list[ServiceProcess]:
        """Start ``m`` worker processes; with ``wait`` each must register as an RQ worker."""
        started = []
        for _ in range(m):
            name = f"worker.{len(self.workers) + 1}"
            proc = start_worker({**self.env, **(env or {})}, log_dir=self.log_dir, name=name, wait=False)
            self.workers.append(proc)
            started.append(proc)
        if wait:

            def registered(p: ServiceProcess) -> None:
                assert p.pid is not None
                try:
                    wait_worker_registered(self.redis_url, p.pid, timeout=30)
                except HarnessError as exc:
                    raise p._fail(str(exc)) from None

            for proc in started:
                proc.ready = registered
                registered(proc)
        return started

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every process at once; SIGKILL what is left after ``timeout``."""
        stop_all(self.processes, timeout=timeout)

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for proc in [*self.processes, self.model_server]:
            parts.append(
                f"----- {proc.name} ({proc.log_path}), last {lines} lines -----\n{proc.log_tail(lines)}"
            )
        parts.append(f"----- redis ({self.redis_server.log_path}) -----\n{self.redis_server.log_tail(40)}")
        return "\n".join(parts)

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            for client in self._clients:
                client.close()
            self._clients.clear()


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, redis_server: RedisServer, model_server: ModelServer, tmp_path: Path
) -> Iterator[Stack]:
    if not redis_server.running:  # a previous test killed it and did not bring it back
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    if not model_server.alive:
        model_server.start()
    model_server.control("reset", {})

    s = Stack(redis_server, model_server, tmp_path / "logs")
    try:
        yield s
    finally:
        try:
            s.close()
        finally:
            if _test_failed(request) or os.environ.get("PARLEY_TEST_SHOW_LOGS") == "1":
                print(f"\n===== process logs of {request.node.nodeid} =====\n{s.logs()}")
