"""What the figures were measured on, and per-process figures read from /proc."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    found = {}
    for name in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "redis", "rq", "httpx",
                 "openai"):  # fmt: skip
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def machine(redis_version: str, redis_binary: str) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "redis_server": redis_version,
        "redis_binary": redis_binary,
        "packages": versions(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified_files": changed}


# -- /proc per process ---------------------------------------------------------------------


def status_kb(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM: peak resident set, VmRSS: current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def cmdline(pid: int) -> list[str]:
    try:
        return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]
    except OSError:
        return []


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def program_pid(pid: int) -> int:
    """The pid running the program: `pid` itself, unless it is a shell that did not `exec`.

    The harness runs Procfile commands as ``bash -c "exec <command>"``, so the pid it holds is
    normally the program's own; this checks instead of assuming.
    """
    argv = cmdline(pid)
    if argv and Path(argv[0]).name in ("bash", "sh", "dash") and "-c" in argv:
        kids = children(pid)
        if kids:
            return kids[0]
    return pid


def machine_ticks() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine since boot (/proc/stat), idle including iowait."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]  # user..steal; guest time is already in user


class MachineMeter:
    """How busy the whole machine was between start() and stop(), as a fraction of all cores."""

    def start(self) -> MachineMeter:
        self._before = machine_ticks()
        return self

    def stop(self) -> float:
        total, idle = machine_ticks()
        spent = total - self._before[0]
        self.busy = 1.0 - (idle - self._before[1]) / spent if spent > 0 else 0.0
        return self.busy


def machine_busy(seconds: float = 2.0) -> float:
    """Fraction of all cores busy over the next `seconds` (nothing of ours running, say)."""
    import time

    meter = MachineMeter().start()
    time.sleep(seconds)
    return meter.stop()
