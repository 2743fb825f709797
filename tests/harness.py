"""Helpers for integration tests that run the REAL processes (on parley.local's one supervisor,
:mod:`parley.local.processes`; the Redis server is tests/redis_server.py's).

The web and worker commands come from the repository's ``Procfile`` and run
through bash exactly as a Procfile runner (and ``python -m parley.local``) runs
them, so the tests exercise what deploys run.  Every process writes its output
to a log file; failures quote the tail of it.

    web = start_web(env, port=free_port(), log_dir=tmp_path)    # waits for /readyz 200
    worker = start_worker(env, log_dir=tmp_path)
    worker.kill()                                               # SIGKILL, a crash
    worker.restart()
    model = start_model_server(log_dir=tmp_path)                # tests/model_server.py
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from parley.local import child_path, describe, parse_procfile, procfile_argv
from parley.local.processes import Process, ProcessError, free_port
from parley.local.processes import stop_all as processes_stop_all
from tests.redis_server import RedisServer, redis_answers

__all__ = [
    "REPO_ROOT",
    "HarnessError",
    "ModelServer",
    "RedisServer",
    "ServiceProcess",
    "child_env",
    "free_port",
    "procfile",
    "redis_answers",
    "start_model_server",
    "start_web",
    "start_worker",
    "stop_all",
    "wait_until",
    "wait_worker_registered",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCFILE = REPO_ROOT / "Procfile"

#: Variables of the test runner's own environment that never leak into the
#: processes under test: each test states the configuration it runs with.
_NOT_INHERITED_PREFIXES = ("PARLEY_", "OPENAI_")
_NOT_INHERITED = {"REDIS_URL", "PORT"}

_counters: dict[str, itertools.count[int]] = {}


class HarnessError(AssertionError):
    """A process under test did not start, answer or stop as expected (log tail included)."""


def procfile() -> dict[str, str]:
    """The process types of the repository's Procfile (the file must exist)."""
    if not PROCFILE.is_file():
        raise HarnessError(f"{PROCFILE} is missing: the tests run the Procfile's commands")
    return parse_procfile(PROCFILE.read_text(encoding="utf-8"))


def child_env(overrides: Mapping[str, object] | None = None) -> dict[str, str]:
    """The test runner's environment minus PARLEY_*/OPENAI_*/REDIS_URL/PORT, plus overrides.

    PATH starts with this interpreter's bin directory so ``uvicorn`` and ``python``
    in the Procfile are the ones of the venv running the tests.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _NOT_INHERITED and not k.startswith(_NOT_INHERITED_PREFIXES)
    }
    env["PATH"] = child_path(env.get("PATH"))
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, message: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or raise HarnessError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


class ServiceProcess(Process):
    """A process under test (:class:`parley.local.processes.Process`), its output in ``log_dir/<name>.log``.

    ``kill()`` SIGKILLs the whole process group (a crash: the process and any
    children, such as a worker's job work-horse, die at once).  ``terminate()``
    sends SIGTERM to the process itself (a deploy's graceful stop) and SIGKILLs
    whatever is left after ``timeout``.  ``restart()`` starts the same command
    with the same environment and, if one was given, waits on the same readiness
    check.  Failures are :class:`HarnessError` with the tail of the log.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        cwd: Path = REPO_ROOT,
        url: str | None = None,
        port: int | None = None,
        ready: Callable[[ServiceProcess], None] | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        super().__init__(
            name, argv, env, cwd=cwd, log_path=self.log_dir / f"{name}.log", url=url, port=port,
            ready=ready, tag="harness",
        )  # fmt: skip

    def error(self, message: str) -> HarnessError:
        state = "running" if self.alive else f"exited with code {self.returncode}"
        return HarnessError(
            f"{self.name}: {message} (process {state}; command: {describe(self.argv)})\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}\n--- end of {self.name} log ---"
        )

    _fail = error

    def start(self) -> ServiceProcess:
        super().start()
        return self

    def restart(self, *, hard: bool = False, timeout: float = 15.0) -> ServiceProcess:
        super().restart(hard=hard, timeout=timeout)
        return self

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the log (this start's part) matches the regex ``pattern``."""
        regex = re.compile(pattern, re.MULTILINE)
        marker = f"=== harness: start #{self.starts} of {self.name}:"
        deadline = time.monotonic() + timeout
        while True:
            text = self.read_log()
            found = regex.search(text, max(text.rfind(marker), 0))
            if found:
                return found
            if not self.alive:
                raise self.error(f"exited before printing {pattern!r}")
            if time.monotonic() >= deadline:
                raise self.error(f"did not print {pattern!r} within {timeout:.0f}s")
            time.sleep(0.05)


def stop_all(processes: list[ServiceProcess], timeout: float = 15.0) -> None:
    """SIGTERM all at once, wait up to ``timeout`` in all, then SIGKILL every group (leftovers too)."""
    try:
        processes_stop_all(processes, timeout)
    except ProcessError as exc:
        raise HarnessError(str(exc)) from None


def _default_log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="parley-test-logs-"))


def _next_name(kind: str) -> str:
    counter = _counters.setdefault(kind, itertools.count(1))
    return f"{kind}.{next(counter)}"


def start_web(
    env: Mapping[str, object],
    port: int | None = None,
    *,
    log_dir: Path | None = None,
    name: str | None = None,
    wait: bool = True,
    ready_path: str = "/readyz",
    timeout: float = 30.0,
) -> ServiceProcess:
    """Start the Procfile's ``web`` with ``env`` (over a clean environment) and PORT.

    With ``wait`` it returns once ``GET ready_path`` answers 200; ``restart()`` waits
    the same way.  ``.url`` is ``http://127.0.0.1:PORT``.
    """
    port = port if port is not None else free_port()
    full_env = child_env({**env, "PORT": port})

    def ready(proc: ServiceProcess) -> None:
        assert proc.url is not None
        proc.wait_http(proc.url + ready_path, timeout=timeout)

    proc = ServiceProcess(
        name or _next_name("web"),
        procfile_argv(procfile()["web"]),
        full_env,
        log_dir or _default_log_dir(),
        url=f"http://127.0.0.1:{port}",
        port=port,
        ready=ready if wait else None,
    )
    return proc.start()


def wait_worker_registered(redis_url: str, pid: int, timeout: float = 30.0) -> None:
    """Wait until an RQ worker with this pid is registered (``rq:workers`` + its hash)."""
    import redis

    def registered() -> bool:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            for key in client.smembers("rq:workers"):
                if client.hget(key, "pid") == str(pid).encode():
                    return True
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        return False

    wait_until(registered, timeout=timeout, interval=0.1, message=f"an RQ worker with pid {pid} in rq:workers")


def start_worker(
    env: Mapping[str, object],
    *,
    log_dir: Path | None = None,
    name: str | None = None,
    wait: bool | Callable[[ServiceProcess], None] = True,
    timeout: float = 30.0,
) -> ServiceProcess:
    """Start the Procfile's ``worker`` with ``env`` (over a clean environment).

    ``wait=True`` returns once the process has registered as an RQ worker in the
    Redis at ``env['REDIS_URL']`` (``restart()`` waits the same way); pass a
    callable for another readiness check, or False for none.
    """

    def registered(proc: ServiceProcess) -> None:
        redis_url = str(env["REDIS_URL"])
        assert proc.pid is not None
        try:
            wait_worker_registered(redis_url, proc.pid, timeout=timeout)
        except HarnessError as exc:
            raise proc._fail(str(exc)) from None

    ready: Callable[[ServiceProcess], None] | None
    if callable(wait):
        ready = wait
    elif wait:
        ready = registered
    else:
        ready = None
    proc = ServiceProcess(
        name or _next_name("worker"),
        procfile_argv(procfile()["worker"]),
        child_env(env),
        log_dir or _default_log_dir(),
        ready=ready,
    )
    return proc.start()


class ModelServer(ServiceProcess):
    """``tests/model_server.py``, an OpenAI-compatible stand-in model, as a subprocess."""

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be."""
        assert self.url is not None
        return self.url + "/v1"

    def control(self, path: str, payload: Any = None, method: str | None = None, timeout: float = 10.0) -> Any:
        """Call the control API: ``control("reset")`` → POST /_control/reset; JSON in and out."""
        assert self.url is not None
        url = f"{self.url}/_control/{path.lstrip('/')}"
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            url, data=data, method=method or ("GET" if payload is None else "POST"),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body.strip() else None


def start_model_server(port: int | None = None, *, log_dir: Path | None = None, timeout: float = 30.0) -> ModelServer:
    """Run ``python -m tests.model_server --port PORT`` from the repo root; wait for its banner.

    ``port=None`` picks a free port; ``port=0`` lets the server pick and reads the
    port from its ``model-server listening on http://127.0.0.1:PORT`` line.  Either
    way a ``restart()`` comes back on the same port.
    """
    return _start_test_server("model_server", "model-server", ModelServer, port, log_dir, timeout)  # type: ignore[return-value]


def start_mcp_server(port: int | None = None, *, log_dir: Path | None = None, timeout: float = 30.0) -> ServiceProcess:
    """Run ``python -m tests.mcp_server --port PORT`` (the project's MCP server, a real HTTP server) and wait
    for its banner; its endpoint is ``proc.url + "/mcp"``."""
    return _start_test_server("mcp_server", "mcp-server", ServiceProcess, port, log_dir, timeout)


def _start_test_server(module: str, name: str, kind: type[ServiceProcess], port: int | None, log_dir: Path | None,
                       timeout: float) -> ServiceProcess:  # fmt: skip
    """``python -m tests.<module> --port PORT`` from the repo root, ready once it prints
    ``<name> listening on http://127.0.0.1:PORT``."""
    if not (REPO_ROOT / "tests" / f"{module}.py").is_file():
        raise HarnessError(f"{REPO_ROOT / 'tests' / module}.py is missing: the integration tests need it")
    port = port if port is not None else free_port()
    banner = name + r" listening on http://127\.0\.0\.1:(\d+)"

    def ready(proc: ServiceProcess) -> None:
        found = proc.wait_for_log(banner, timeout=timeout)
        actual = int(found.group(1))
        if proc.port not in (0, actual):
            raise proc._fail(f"listens on port {actual}, not on the {proc.port} it was given")
        proc.port = actual
        proc.url = f"http://127.0.0.1:{actual}"
        proc.argv[proc.argv.index("--port") + 1] = str(actual)  # restarts keep the port

    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = kind(
        name,
        [sys.executable, "-m", f"tests.{module}", "--port", str(port)],
        env,
        log_dir or _default_log_dir(),
        url=f"http://127.0.0.1:{port}",
        port=port,
        ready=ready,
    )
    proc.start()
    return proc
