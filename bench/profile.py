"""Profiles of the running web and worker processes with py-spy, summarised as text.

``python -m bench --profile`` (after the measurements) drives two loads against the
zero-latency model and meanwhile runs ``py-spy record --format raw`` (collapsed stacks) against
web and each worker: sequential ``/chat`` turns with 1 worker and ``--idle`` (where the wall time
of a turn goes, waits included), then 32 concurrent clients with 2 workers and ``--gil`` (what
the CPU goes to).  The collapsed stacks are kept in
/tmp/parley-bench-profiles/ (``--profile-dir``) and summarised here as the functions with the most
samples, inclusive (the function or anything it calls) and self (the leaf frame).

    python -m bench profile /tmp/parley-bench-profiles/concurrent-cpu-web.txt   # summarise one file
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

PROFILES = Path(tempfile.gettempdir()) / "parley-bench-profiles"
"""Default home of the collapsed stacks (``--profile-dir`` moves it); summaries go to results.json."""
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match.group("file")
    for marker in ("site-packages/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker.startswith("lib/"):
                file = file.split("/", 1)[1] if "/" in file else file
    return f"{match.group('func')} ({file})"


def read_collapsed(path: Path, main_thread_only: bool = True) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = [_frame_name(frame) for frame in body.split(";")]
        if main_thread_only and frames and "_bootstrap" in frames[0]:
            continue  # threads: the worker's heartbeat thread, the web's thread pool (counted apart)
        stacks.append((frames, int(count)))
    return stacks


#: Library functions worth seeing beside Parley's own in the "focus" list: where time goes
#: between Parley's code and the wire.
FOCUS_MARKERS = (
    "maybe_transform", "SyncAPIClient.post", "Stream.__stream__", "_process_response_data", "create_connection",
    "handle_job_success", "dequeue_job_and_maintain_ttl", "prepare_execution (rq", "prepare_job_execution",
    "Script.__call__", "Pipeline.execute (redis", "Thread.start", "Thread.join", "run_in_threadpool",
    "solve_dependencies", "serialize_response", "RequestResponseCycle.send", "HttpToolsProtocol.data_received",
)
PROJECT_DIRS = ("(api/", "(shared/", "(worker/")
_ENTRY_POINTS = ("<module>", "main (worker/__main__.py)")


def summarise(stacks: list[tuple[list[str], int]], top: int = 25) -> dict[str, Any]:
    """Top functions by inclusive and self samples, and `focus`: Parley's own functions plus
    the library calls in FOCUS_MARKERS, by inclusive share."""
    total = sum(count for _, count in stacks)
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        for name in set(frames):
            inclusive[name] += count
        if frames:
            leaf[frames[-1]] += count
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    focus = [(name, share(n)) for name, n in inclusive.most_common()
             if (any(d in name for d in PROJECT_DIRS) or any(m in name for m in FOCUS_MARKERS))
             and not any(name.startswith(e) for e in _ENTRY_POINTS)]  # fmt: skip
    return {
        "samples": total,
        "inclusive": [(name, share(n)) for name, n in inclusive.most_common(top)],
        "self": [(name, share(n)) for name, n in leaf.most_common(top)],
        "focus": focus[:top],
    }


def compact(path: Path) -> None:
    """Rewrite py-spy's collapsed stacks without line numbers, merged: the same data, smaller."""
    merged: Counter[str] = Counter()
    for frames, count in read_collapsed(path, main_thread_only=False):
        merged[";".join(frames)] += count
    path.write_text("".join(f"{stack} {count}\n" for stack, count in merged.most_common()), encoding="utf-8")


def thread_share(path: Path) -> dict[str, float]:
    """Share of samples by thread root: the main thread against helper threads."""
    counts: Counter[str] = Counter()
    for frames, count in read_collapsed(path, main_thread_only=False):
        counts["threads (pool, heartbeat)" if frames and "_bootstrap" in frames[0] else "main thread"] += count
    total = sum(counts.values()) or 1
    return {name: round(100.0 * n / total, 1) for name, n in counts.items()}


def record(pid: int, out: Path, seconds: float, idle: bool, rate: int = 250) -> subprocess.Popen[bytes]:
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
            "--format", "raw", "--nonblocking", "-o", str(out)]  # fmt: skip
    argv.append("--idle" if idle else "--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _sequential_load(stack: Any, seconds: float, errors: list[BaseException]) -> None:
    from . import measure

    deadline = time.monotonic() + seconds
    try:
        with measure.sync_client() as client:
            index = 0
            while time.monotonic() < deadline:
                client.post(f"{stack.base_url}/api/v1/chat", headers=stack.headers,
                            json={"agent": measure.AGENT["name"], "message": measure.message(index)}).raise_for_status()
                index += 1
    except BaseException as error:  # noqa: BLE001
        errors.append(error)


def _concurrent_load(stack: Any, seconds: float, concurrency: int, errors: list[BaseException]) -> None:
    from . import measure

    try:
        measure.chat_throughput(stack.base_url, stack.headers, 1_000_000, concurrency, {}, seconds + 120, seconds)
    except BaseException as error:  # noqa: BLE001
        errors.append(error)


def profile_stack(stack: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Profile web and workers under two loads; summaries keyed by `<load>/<process>`.

    * ``sequential-wall``: 1 worker, one /chat at a time, py-spy ``--idle`` (where the wall time
      of a turn goes, waits on Redis and the model included).
    * ``concurrent-cpu``: 2 workers, ``--concurrency`` clients, py-spy ``--gil``: only the thread
      holding the GIL, i.e. running Python code (what the CPU goes to when throughput is the
      question; py-spy's plain "active" samples also count threads that are runnable but waiting
      for a core, which on a saturated 2-core machine is most of the waiting on Redis).
    """
    directory = Path(args.profile_dir) if getattr(args, "profile_dir", None) else PROFILES
    directory.mkdir(parents=True, exist_ok=True)
    seconds = max(3, int(args.profile_seconds))
    results: dict[str, Any] = {}
    plans = [("sequential-wall", 1, True), ("concurrent-cpu", 2, False)]
    for label, workers, idle in plans:
        stack.set_workers(workers, model_base_url=stack.model.base_url, purpose=f"profile {label}")
        time.sleep(1.0)
        errors: list[BaseException] = []
        if workers == 1:
            load = threading.Thread(target=_sequential_load, args=(stack, seconds + 2, errors), daemon=True)
        else:
            load = threading.Thread(target=_concurrent_load, args=(stack, seconds + 2, args.concurrency, errors),
                                    daemon=True)  # fmt: skip
        load.start()
        time.sleep(1.0)  # the load is running before sampling starts
        targets = {name: pid for name, pid in stack.processes().items() if name == "web" or name.startswith("worker")}
        spies = {}
        for name, pid in targets.items():
            path = directory / f"{label}-{name.split('.')[0] if name == 'web' else 'worker' + str(len(spies))}.txt"
            spies[name] = (record(pid, path, seconds, idle=idle), path)
        for name, (proc, path) in spies.items():
            try:
                _, err = proc.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            key = f"{label}/{name}"
            if proc.returncode != 0 or not path.exists():
                results[key] = {"error": (err or b"").decode(errors="replace")[-500:]}
                continue
            compact(path)
            summary = summarise(read_collapsed(path, main_thread_only=idle))
            summary["threads"] = thread_share(path)
            summary["file"] = str(path)
            summary["mode"] = "wall time (--idle)" if idle else "Python on CPU (--gil)"
            results[key] = summary
        load.join(timeout=seconds + 150)
        if errors:
            results[f"{label}/load-error"] = repr(errors[0])
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="py-spy collapsed stacks (--format raw)")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--all-threads", action="store_true")
    parser.add_argument("--output", type=Path, default=None, help="also write the summaries as JSON here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Summarise each file: the top functions (inclusive, self, focus) and the share by thread."""
    summaries = [{"file": str(path), "top": args.top,
                  "summary": summarise(read_collapsed(path, not args.all_threads), args.top),
                  "by_thread": thread_share(path)} for path in args.files]  # fmt: skip
    return {"command": args.command, "options": args.options, "summaries": summaries}
