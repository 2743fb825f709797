"""The hostile benchmark's processes: Redis, bench/hostile/model.py, one web and one worker at a time.

web and worker run the Procfile's commands through tests/harness.py with 21 tenants' keys; every process
is stopped by ``close()`` (the caller's ``finally``, also on Ctrl-C), and each has PDEATHSIG.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import redis

from parley.local.redis_server import RedisServer
from tests.harness import REPO_ROOT, ServiceProcess, child_env, free_port, start_web, start_worker

from .. import sysinfo


class HostileStack:
    def __init__(self, tenants: int, hostile: str, *, answer_ms: float, bomb_mib: int, keep_logs: bool) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="parley-hostile-"))
        self.keep_logs = keep_logs
        self.ordinary = [f"tenant{i:02d}" for i in range(1, tenants + 1)]
        self.keys = {name: f"key-{name}" for name in [*self.ordinary, hostile]}
        self.answer_ms, self.bomb_mib = answer_ms, bomb_mib
        self.redis: RedisServer | None = None
        self.model: ServiceProcess | None = None
        self.web: ServiceProcess | None = None
        self.worker: ServiceProcess | None = None
        self.redis_version = "?"

    @property
    def redis_binary(self) -> str:
        return str(self.redis.binary) if self.redis is not None else "?"

    @property
    def model_url(self) -> str:
        assert self.model is not None and self.model.url is not None
        return self.model.url

    @property
    def base_url(self) -> str:
        assert self.web is not None and self.web.url is not None
        return self.web.url

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        return {
            "REDIS_URL": self.redis.url, "PARLEY_LLM": "openai", "OPENAI_BASE_URL": self.model_url + "/v1",
            "OPENAI_API_KEY": "x", "PARLEY_API_KEYS": ",".join(f"{t}:{k}" for t, k in self.keys.items()),
            "PARLEY_LOG_LEVEL": "WARNING",
            # The bomb is served from 127.0.0.1: http_get may reach it (the older and the newer setting).
            "PARLEY_HTTP_GET_ALLOW_PRIVATE": "true", "PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1/32",
        }  # fmt: skip

    def start(self) -> None:
        self.redis = RedisServer(dir=self.log_dir / "redis", die_with_parent=True)
        self.redis.start()
        client = redis.Redis.from_url(self.redis.url)
        try:
            self.redis_version = str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
        self.model = self._start_model()
        self.web = start_web(self.env(), log_dir=self.log_dir, name="web")

    def _start_model(self) -> ServiceProcess:
        port = free_port()
        env = child_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)

        def ready(proc: ServiceProcess) -> None:
            proc.wait_for_log(r"hostile-model listening on http://127\.0\.0\.1:\d+", timeout=60)

        argv = [sys.executable, "-m", "bench.hostile.model", "--port", str(port), "--answer-ms", str(self.answer_ms),
                "--bomb-mib", str(self.bomb_mib)]  # fmt: skip
        proc = ServiceProcess("hostile-model", argv, env, self.log_dir, url=f"http://127.0.0.1:{port}", port=port,
                              ready=ready)  # fmt: skip
        return proc.start()

    def start_worker(self, name: str) -> None:
        """A fresh worker, so each phase's peak RSS is its own."""
        self.worker = start_worker(self.env(), log_dir=self.log_dir, name=f"worker.{name}")

    def stop_worker(self) -> float | None:
        """Stop the worker; its peak RSS (VmHWM) in MiB."""
        if self.worker is None:
            return None
        peak = None
        if self.worker.alive and self.worker.pid:
            kb = sysinfo.status_kb(sysinfo.program_pid(self.worker.pid), "VmHWM")
            peak = round(kb / 1024, 1) if kb is not None else None
        self.worker.terminate(timeout=5)
        self.worker = None
        return peak

    def model_counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.model_url + "/_control/counts", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop everything started here; never raises."""
        for proc in (self.worker, self.web, self.model):
            if proc is not None:
                try:
                    proc.terminate(timeout=10)
                except Exception as error:  # noqa: BLE001 - keep stopping the others
                    print(f"bench.hostile: could not stop {proc.name}: {error}", file=sys.stderr)
        if self.redis is not None:
            try:
                self.redis.stop()
            except Exception as error:  # noqa: BLE001
                print(f"bench.hostile: could not stop Redis: {error}", file=sys.stderr)
        if self.keep_logs:
            print(f"bench.hostile: logs kept in {self.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
