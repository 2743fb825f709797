"""The system under test, started from scratch: Redis, model servers, web and workers.

web and worker run exactly the Procfile's commands, through tests/harness.py (``bash -c "exec
<command>"``), with the benchmark's environment.  Every process is stopped by ``close()``,
which the caller runs in a ``finally`` (also on Ctrl-C); each also gets PDEATHSIG, so none
outlives a killed benchmark.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from parley.local.redis_server import RedisServer
from tests.harness import (
    REPO_ROOT,
    ModelServer,
    ServiceProcess,
    child_env,
    free_port,
    start_model_server,
    start_web,
    start_worker,
)

from . import sysinfo

API_KEY = "key-bench"
TENANT = "bench"
BENCH_LIMITS = {"PARLEY_TENANT_CONCURRENCY": "0", "PARLEY_MAX_TURNS_IN_FLIGHT": "0",
                "PARLEY_MAX_STREAMS_PER_TENANT": "1000000"}
"""No per-tenant cap on admitted turns, turns in flight or open streams (see `Stack.env`)."""


class Stack:
    def __init__(self, log_dir: Path | None = None, keep_logs: bool = False) -> None:
        self._owns_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="parley-bench-"))
        self.keep_logs = keep_logs
        self.redis: RedisServer | None = None
        self.model: ModelServer | None = None
        self.timed: ServiceProcess | None = None
        self.web: ServiceProcess | None = None
        self.workers: list[ServiceProcess] = []
        self.model_url_for_workers = ""
        #: Peak RSS (VmHWM, kB) of every process, keyed by name; read again just before each stops.
        self.peak_rss_kb: dict[str, int] = {}
        self.redis_version = "?"
        self._worker_serial = 0
        #: What each worker process was used for (worker name -> phases), for the RSS table.
        self.purposes: dict[str, list[str]] = {}

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        self.redis = RedisServer(dir=self.log_dir / "redis", die_with_parent=True)
        self.redis.start()
        client = redis.Redis.from_url(self.redis.url)
        try:
            self.redis_version = str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
        self.model = start_model_server(log_dir=self.log_dir)
        self.timed = self._start_timed_model()
        self.model_url_for_workers = self.model.base_url
        self.web = start_web(self.env(self.model.base_url), log_dir=self.log_dir, name="web")

    def _start_timed_model(self) -> ServiceProcess:
        port = free_port()
        env = child_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)

        def ready(proc: ServiceProcess) -> None:
            proc.wait_for_log(r"timed-model listening on http://127\.0\.0\.1:\d+", timeout=30)

        proc = ServiceProcess(
            "timed-model", [sys.executable, "-m", "bench.timed_model", "--port", str(port)], env, self.log_dir,
            url=f"http://127.0.0.1:{port}", port=port, ready=ready,
        )  # fmt: skip
        return proc.start()

    def env(self, model_base_url: str) -> dict[str, str]:
        assert self.redis is not None
        return {
            "REDIS_URL": self.redis.url,
            "PARLEY_LLM": "openai",
            "OPENAI_BASE_URL": model_base_url,
            "OPENAI_API_KEY": "x",
            "PARLEY_API_KEYS": f"{TENANT}:{API_KEY}",
            "PARLEY_LOG_LEVEL": "WARNING",
            # One tenant runs every benchmark: the per-tenant limits that keep tenants fair would
            # only cap it (200+ turns in flight, 10 000 idle streams on one web).
            **BENCH_LIMITS,
        }

    def set_workers(self, count: int, model_base_url: str | None = None, purpose: str = "") -> None:
        """Run exactly `count` workers talking to `model_base_url` (restarting them if it changes)."""
        url = model_base_url or self.model_url_for_workers
        if url != self.model_url_for_workers:
            self.stop_workers()
            self.model_url_for_workers = url
        while len(self.workers) > count:
            self._stop(self.workers.pop())
        for worker in self.workers:
            if purpose and purpose not in self.purposes[worker.name]:
                self.purposes[worker.name].append(purpose)
        while len(self.workers) < count:
            self._worker_serial += 1
            name = f"worker.{self._worker_serial}"
            self.workers.append(start_worker(self.env(url), log_dir=self.log_dir, name=name))
            self.purposes[name] = [purpose] if purpose else []

    def stop_workers(self) -> None:
        while self.workers:
            self._stop(self.workers.pop())

    # -- what the processes are ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.web is not None and self.web.url is not None
        return self.web.url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def processes(self) -> dict[str, int]:
        """name -> pid of the program itself (not a wrapping shell) for every running process."""
        found: dict[str, int] = {}
        if self.redis is not None and self.redis.pid:
            found["redis"] = self.redis.pid
        for proc in (self.model, self.timed, self.web, *self.workers):
            if proc is not None and proc.alive and proc.pid:
                found[proc.name] = sysinfo.program_pid(proc.pid)
        return found

    def record_peaks(self) -> None:
        for name, pid in self.processes().items():
            peak = sysinfo.status_kb(pid, "VmHWM")
            if peak is not None:
                self.peak_rss_kb[name] = max(peak, self.peak_rss_kb.get(name, 0))

    def describe_pids(self) -> dict[str, dict[str, Any]]:
        return {name: {"pid": pid, "cmdline": " ".join(sysinfo.cmdline(pid))} for name, pid in self.processes().items()}

    # -- stop ---------------------------------------------------------------------------

    def _stop(self, proc: ServiceProcess) -> None:
        if proc.alive and proc.pid:
            peak = sysinfo.status_kb(sysinfo.program_pid(proc.pid), "VmHWM")
            if peak is not None:
                self.peak_rss_kb[proc.name] = max(peak, self.peak_rss_kb.get(proc.name, 0))
        try:
            proc.terminate(timeout=10)
        except Exception as error:  # noqa: BLE001 - keep stopping the others
            print(f"bench: could not stop {proc.name}: {error}", file=sys.stderr)

    def close(self) -> None:
        """Stop everything this stack started, in reverse order; never raises."""
        try:
            self.record_peaks()
        except Exception:  # noqa: BLE001
            pass
        for proc in [*reversed(self.workers), self.web, self.timed, self.model]:
            if proc is not None:
                self._stop(proc)
        self.workers.clear()
        if self.redis is not None:
            try:
                self.redis.stop()
            except Exception as error:  # noqa: BLE001
                print(f"bench: could not stop Redis: {error}", file=sys.stderr)
        if self._owns_log_dir and not self.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)
