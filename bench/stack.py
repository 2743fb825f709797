"""The system under test, started from scratch: Redis, model servers, web and workers; one class for every
benchmark.

web and worker run exactly the Procfile's commands, through tests/harness.py's ``start_web`` and
``start_worker`` (``bash -c "exec <command>"``, each a :class:`parley.local.processes.Process`), with the
benchmark's environment.  What differs between benchmarks is configuration:

* ``keys``: the tenants and their API keys (``turn`` and ``load``: one tenant; ``hostile``: 21);
* ``model``: ``"scripted"`` (tests/model_server.py, paced through its control API) or ``"hostile"``
  (bench/hostile/model.py with ``model_args``), and ``timed_model`` for bench/timed_model.py;
* ``env``: settings every web and worker gets; each ``start_web``/``start_workers`` may add more;
* how many webs, workers and rq ``WorkerPool`` processes run, started and stopped as a benchmark goes.

Every process is stopped by ``close()``, which the caller runs in a ``finally`` (also on Ctrl-C); each
also gets PDEATHSIG, so none outlives a killed benchmark.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from parley.local.redis_server import RedisServer
from tests.harness import (
    REPO_ROOT,
    ServiceProcess,
    child_env,
    free_port,
    start_model_server,
    start_web,
    start_worker,
    wait_until,
)

from . import sysinfo

API_KEY = "key-bench"
TENANT = "bench"
BENCH_LIMITS = {"PARLEY_TENANT_CONCURRENCY": "0", "PARLEY_MAX_TURNS_IN_FLIGHT": "0",
                "PARLEY_MAX_STREAMS_PER_TENANT": "1000000"}
"""No per-tenant cap on admitted turns, turns in flight or open streams: one tenant runs the `turn` and
`load` benchmarks, and the limits that keep tenants fair would only cap it (200+ turns in flight,
10 000 idle streams on one web)."""


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _repo_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """child_env(overrides) with the checkout on PYTHONPATH, for ``python -m bench...`` children."""
    env = child_env(overrides)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class Stack:
    def __init__(
        self,
        *,
        keys: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        model: str = "scripted",
        model_args: list[str] | None = None,
        timed_model: bool = False,
        keep_logs: bool = False,
        log_dir: Path | None = None,
    ) -> None:
        self.keys = dict(keys) if keys is not None else {TENANT: API_KEY}
        self.extra_env = dict(env) if env is not None else dict(BENCH_LIMITS)
        self.model_kind = model
        self.model_args = list(model_args or [])
        self.with_timed_model = timed_model
        self._owns_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="parley-bench-"))
        self.keep_logs = keep_logs
        self.redis: RedisServer | None = None
        self.model: Any = None  # tests.harness.ModelServer (scripted) or a ServiceProcess (hostile)
        self.timed: ServiceProcess | None = None
        self.webs: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.others: list[ServiceProcess] = []
        self.model_url_for_workers = ""
        #: Peak RSS (VmHWM, kB) of every process, keyed by name; read again just before each stops.
        self.peak_rss_kb: dict[str, int] = {}
        #: What each worker process was used for (worker name -> phases), for the RSS table.
        self.purposes: dict[str, list[str]] = {}
        self.redis_version = "?"
        self._serial: dict[str, int] = {}

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Redis, the model server(s) and the first web (named ``web``)."""
        self.redis = RedisServer(dir=self.log_dir / "redis", die_with_parent=True)
        self.redis.start()
        client = redis.Redis.from_url(self.redis.url)
        try:
            self.redis_version = str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
        if self.model_kind == "scripted":
            self.model = start_model_server(log_dir=self.log_dir)
            self.model_url_for_workers = self.model.base_url
        else:
            self.model = self._start_server("hostile-model", "bench.hostile.model", self.model_args, timeout=60)
            self.model_url_for_workers = f"{self.model.url}/v1"
        if self.with_timed_model:
            self.timed = self._start_server("timed-model", "bench.timed_model", [], timeout=30)
        self.start_web(name="web")

    def _start_server(self, name: str, module: str, args: list[str], timeout: float) -> ServiceProcess:
        """``python -m <module> --port PORT <args>``, ready once it prints ``<name> listening on``."""
        port = free_port()

        def ready(proc: ServiceProcess) -> None:
            proc.wait_for_log(rf"{name} listening on http://127\.0\.0\.1:\d+", timeout=timeout)

        proc = ServiceProcess(name, [sys.executable, "-m", module, "--port", str(port), *args], _repo_env(),
                              self.log_dir, url=f"http://127.0.0.1:{port}", port=port, ready=ready)  # fmt: skip
        return proc.start()

    def env(self, model_base_url: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        assert self.redis is not None
        return {
            "REDIS_URL": self.redis.url,
            "PARLEY_LLM": "openai",
            "OPENAI_BASE_URL": model_base_url or self.model_url_for_workers,
            "OPENAI_API_KEY": "x",
            "PARLEY_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in self.keys.items()),
            "PARLEY_LOG_LEVEL": "WARNING",
            **self.extra_env,
            **(extra or {}),
        }

    def _name(self, kind: str) -> str:
        self._serial[kind] = self._serial.get(kind, 0) + 1
        return f"{kind}.{self._serial[kind]}"

    def start_web(self, extra: dict[str, str] | None = None, name: str | None = None) -> ServiceProcess:
        proc = start_web(self.env(extra=extra), log_dir=self.log_dir, name=name or self._name("web"))
        self.webs.append(proc)
        return proc

    def start_workers(self, count: int, extra: dict[str, str] | None = None, *, name: str | None = None,
                      model_base_url: str | None = None, purpose: str = "") -> list[ServiceProcess]:  # fmt: skip
        """Start `count` more workers (``name`` for a single one; else worker.1, worker.2, ...)."""
        started = []
        for _ in range(count):
            proc_name = name or self._name("worker")
            proc = start_worker(self.env(model_base_url, extra), log_dir=self.log_dir, name=proc_name)
            self.workers.append(proc)
            self.purposes[proc_name] = [purpose] if purpose else []
            started.append(proc)
        return started

    def set_workers(self, count: int, model_base_url: str | None = None, purpose: str = "") -> None:
        """Run exactly `count` workers talking to `model_base_url` (restarting them if it changes)."""
        url = model_base_url or self.model_url_for_workers
        if url != self.model_url_for_workers:
            while self.workers:
                self.stop(self.workers[-1], timeout=10)
            self.model_url_for_workers = url
        while len(self.workers) > count:
            self.stop(self.workers[-1], timeout=10)
        for worker in self.workers:
            if purpose and purpose not in self.purposes[worker.name]:
                self.purposes[worker.name].append(purpose)
        if len(self.workers) < count:
            self.start_workers(count - len(self.workers), purpose=purpose)

    def start_pool(self, workers: int) -> ServiceProcess:
        """rq's WorkerPool of `workers` one-turn-at-a-time SimpleWorkers (bench/load/pool.py)."""
        env = _repo_env(self.env())

        def ready(proc: ServiceProcess) -> None:
            client = redis.Redis.from_url(self.redis_url)
            try:
                wait_until(lambda: len(self._registered(client, proc)) >= workers, timeout=120, interval=0.2,
                           message=f"{workers} pool workers registered")  # fmt: skip
            finally:
                client.close()

        proc = ServiceProcess(self._name("pool"), [sys.executable, "-m", "bench.load.pool", "--workers", str(workers)],
                              env, self.log_dir, ready=ready)  # fmt: skip
        self.others.append(proc)
        return proc.start()

    def _registered(self, client: redis.Redis, pool: ServiceProcess) -> list[int]:
        """Pids of the RQ workers registered in Redis that are children of the pool process."""
        children = set(sysinfo.children(self.pid(pool)))
        pids = [client.hget(key, "pid") for key in client.smembers("rq:workers")]
        return [int(pid) for pid in pids if pid and int(pid) in children]

    # -- what the processes are ---------------------------------------------------------

    @property
    def web(self) -> ServiceProcess | None:
        """The first web (``web``), the one every benchmark talks to unless it spreads its clients."""
        return self.webs[0] if self.webs else None

    @property
    def base_url(self) -> str:
        assert self.web is not None and self.web.url is not None
        return self.web.url

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    @property
    def model_url(self) -> str:
        assert self.model is not None and self.model.url is not None
        return str(self.model.url)

    @property
    def headers(self) -> dict[str, str]:
        """The first tenant's Authorization header."""
        return self.auth(next(iter(self.keys)))

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def pid(self, proc: ServiceProcess) -> int:
        """The pid of the program itself (not a wrapping shell)."""
        assert proc.pid is not None
        return sysinfo.program_pid(proc.pid)

    def processes(self) -> dict[str, int]:
        """name -> pid of the program itself (not a wrapping shell) for every running process."""
        found: dict[str, int] = {}
        if self.redis is not None and self.redis.pid:
            found["redis"] = self.redis.pid
        for proc in (self.model, self.timed, *self.webs, *self.workers):
            if proc is not None and proc.alive and proc.pid:
                found[proc.name] = sysinfo.program_pid(proc.pid)
        return found

    def _record_peak(self, name: str, pid: int) -> int | None:
        peak = sysinfo.status_kb(pid, "VmHWM")
        if peak is not None:
            self.peak_rss_kb[name] = max(peak, self.peak_rss_kb.get(name, 0))
        return peak

    def record_peaks(self) -> None:
        for name, pid in self.processes().items():
            self._record_peak(name, pid)

    def describe_pids(self) -> dict[str, dict[str, Any]]:
        return {name: {"pid": pid, "cmdline": " ".join(sysinfo.cmdline(pid))} for name, pid in self.processes().items()}

    # -- stop ---------------------------------------------------------------------------

    def stop(self, proc: ServiceProcess, timeout: float = 40.0) -> int | None:
        """Record its peak RSS, then SIGTERM and wait (SIGKILL after `timeout`); its exit code. Never raises."""
        for group in (self.webs, self.workers, self.others):
            if proc in group:
                group.remove(proc)
        if proc.alive and proc.pid:
            self._record_peak(proc.name, sysinfo.program_pid(proc.pid))
        try:
            return proc.terminate(timeout=timeout)
        except Exception as error:  # noqa: BLE001 - keep stopping the others
            print(f"bench: could not stop {proc.name}: {error}", file=sys.stderr)
            return None

    def close(self) -> None:
        """Stop everything this stack started, in reverse order; never raises."""
        try:
            self.record_peaks()
        except Exception:  # noqa: BLE001
            pass
        for proc in [*self.others, *reversed(self.workers), *reversed(self.webs), self.timed, self.model]:
            if proc is not None:
                self.stop(proc, timeout=10)
        if self.redis is not None:
            try:
                self.redis.stop()
            except Exception as error:  # noqa: BLE001
                print(f"bench: could not stop Redis: {error}", file=sys.stderr)
        if self.keep_logs:
            print(f"bench: logs kept in {self.log_dir}", file=sys.stderr)
        elif self._owns_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
