"""What the processes use while a phase runs: memory sampled from /proc, commands counted by Redis."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import redis

from .. import sysinfo


def pss_kb(pid: int) -> int | None:
    """Proportional set size: resident pages, each shared page divided among the processes sharing it."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_kb(pid: int) -> int:
    return sysinfo.status_kb(pid, "VmRSS") or 0


def threads(pid: int) -> int:
    return sysinfo.status_kb(pid, "Threads") or 0  # a plain count, read the same way


class MemorySampler:
    """Samples RSS (and PSS) of a group of processes every `interval_s`: the peak of each process
    and the peak of their sum at one instant (what the group holds at once)."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.5) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.peak_rss_kb: dict[str, int] = {}
        self.peak_pss_kb: dict[str, int] = {}
        self.peak_threads: dict[str, int] = {}
        self.peak_sum_rss_kb = 0
        self.peak_sum_pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        total_rss = total_pss = 0
        for name, pid in self.pids.items():
            rss, pss = rss_kb(pid), pss_kb(pid) or 0
            total_rss += rss
            total_pss += pss
            self.peak_rss_kb[name] = max(rss, self.peak_rss_kb.get(name, 0))
            self.peak_pss_kb[name] = max(pss, self.peak_pss_kb.get(name, 0))
            self.peak_threads[name] = max(threads(pid), self.peak_threads.get(name, 0))
        self.peak_sum_rss_kb = max(self.peak_sum_rss_kb, total_rss)
        self.peak_sum_pss_kb = max(self.peak_sum_pss_kb, total_pss)

    def result(self) -> dict[str, Any]:
        return {
            "processes": len(self.pids),
            "peak_rss_mib": {name: round(kb / 1024, 1) for name, kb in self.peak_rss_kb.items()},
            "peak_pss_mib": {name: round(kb / 1024, 1) for name, kb in self.peak_pss_kb.items()},
            "peak_threads": dict(self.peak_threads),
            "peak_sum_rss_mib": round(self.peak_sum_rss_kb / 1024, 1),
            "peak_sum_pss_mib": round(self.peak_sum_pss_kb / 1024, 1),
            "vm_hwm_mib": {name: round((sysinfo.status_kb(pid, "VmHWM") or 0) / 1024, 1)
                           for name, pid in self.pids.items()},  # fmt: skip
        }


class ModelGauge:
    """Samples the scripted model server's open streams: how many model calls run at once."""

    def __init__(self, model: Any, interval_s: float = 0.2) -> None:
        self.model = model
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-gauge", daemon=True)

    def __enter__(self) -> ModelGauge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak = max(self.peak, int(self.model.control("stats", timeout=2)["open_streams"]))
            except Exception:  # noqa: BLE001 - a missed sample is only a missed sample
                pass


class RunningGauge:
    """Samples how many turns workers run at once: the entries of rq's StartedJobRegistry (ZCARD).
    Its own commands are counted (`samples`), so they can be left out of the commands per turn."""

    def __init__(self, redis_url: str, queue: str, interval_s: float = 0.2) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.key = f"rq:wip:{queue}"
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="running-gauge", daemon=True)

    def __enter__(self) -> RunningGauge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak = max(self.peak, int(self.client.zcard(self.key)))
                self.samples += 1
            except redis.RedisError:
                pass


def command_counts(redis_url: str) -> dict[str, int]:
    """Redis's own count of each command since it started (INFO commandstats), scripts' inner commands included."""
    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def commands_per_turn(before: dict[str, int], after: dict[str, int], turns: int,
                      own: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Commands per turn between two `command_counts`, less the benchmark's `own` commands."""
    delta = {name: after.get(name, 0) - before.get(name, 0) - (own or {}).get(name, 0) for name in after}
    delta = {name: count for name, count in delta.items() if count > 0 and name != "info"}
    total = sum(delta.values())
    top = sorted(delta.items(), key=lambda item: -item[1])[:14]
    return {
        "turns": turns, "total": total, "per_turn": round(total / turns, 1) if turns else None,
        "evalsha_per_turn": round(delta.get("evalsha", 0) / turns, 1) if turns else None,
        "top_per_turn": {name: round(count / turns, 2) for name, count in top} if turns else {},
    }  # fmt: skip
