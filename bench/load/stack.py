"""Several `web` and `worker` processes over bench/stack.py's Redis and scripted model server.

Every process runs the Procfile's command through tests/harness.py (as deploys run it), with the
benchmark's environment plus per-process settings; `close()` stops all of them, also on Ctrl-C.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path
from typing import Any

import redis

from tests.harness import REPO_ROOT, ServiceProcess, child_env, start_web, start_worker, wait_until

from .. import sysinfo
from ..stack import Stack


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class LoadStack:
    def __init__(self, keep_logs: bool = False) -> None:
        self.base = Stack(keep_logs=keep_logs)
        self.webs: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.others: list[ServiceProcess] = []
        self._serial: dict[str, int] = {}

    @property
    def log_dir(self) -> Path:
        return self.base.log_dir

    def start(self) -> None:
        """Redis, the scripted model server and bench/stack.py's first web (kept as `webs[0]`)."""
        self.base.start()
        assert self.base.web is not None
        self.webs.append(self.base.web)

    @property
    def model(self) -> Any:
        assert self.base.model is not None
        return self.base.model

    @property
    def redis_url(self) -> str:
        assert self.base.redis is not None
        return self.base.redis.url

    @property
    def headers(self) -> dict[str, str]:
        return self.base.headers

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.base.env(self.model.base_url), **(extra or {})}

    def _name(self, kind: str) -> str:
        self._serial[kind] = self._serial.get(kind, 0) + 1
        return f"{kind}.{self._serial[kind]}"

    def start_web(self, extra: dict[str, str] | None = None) -> ServiceProcess:
        proc = start_web(self.env(extra), log_dir=self.log_dir, name=self._name("web"))
        self.webs.append(proc)
        return proc

    def start_workers(self, count: int, extra: dict[str, str] | None = None) -> list[ServiceProcess]:
        started = []
        for _ in range(count):
            proc = start_worker(self.env(extra), log_dir=self.log_dir, name=self._name("worker"))
            self.workers.append(proc)
            started.append(proc)
        return started

    def start_pool(self, workers: int) -> ServiceProcess:
        """rq's WorkerPool of `workers` one-turn-at-a-time SimpleWorkers (bench/load/pool.py)."""
        env = child_env(self.env())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)

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

    def pid(self, proc: ServiceProcess) -> int:
        assert proc.pid is not None
        return sysinfo.program_pid(proc.pid)

    def stop(self, proc: ServiceProcess, timeout: float = 40.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); its exit code."""
        for group in (self.webs, self.workers, self.others):
            if proc in group:
                group.remove(proc)
        try:
            return proc.terminate(timeout=timeout)
        except Exception as error:  # noqa: BLE001 - keep stopping the others
            print(f"bench: could not stop {proc.name}: {error}", file=sys.stderr)
            return None

    def close(self) -> None:
        """Stop everything started here, then bench/stack.py's processes; never raises."""
        for proc in [*self.others, *self.workers, *self.webs[1:]]:
            try:
                proc.terminate(timeout=10)
            except Exception as error:  # noqa: BLE001
                print(f"bench: could not stop {proc.name}: {error}", file=sys.stderr)
        self.others.clear()
        self.workers.clear()
        self.base.close()
