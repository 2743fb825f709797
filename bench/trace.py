"""The anatomy of one turn, from Redis' own record of it (MONITOR).

Sequential ``POST /api/v1/chat`` turns run while a MONITOR connection records every command
Redis executes, with Redis' timestamp (µs, the same wall clock as ``time.time()`` here) and the
client port; each port is mapped to the process owning the socket (/proc/net/tcp and
/proc/<pid>/fd).  Each turn is then cut at its milestones:

    client sends -> web's first command -> ACCEPT script -> worker's first command (dequeued)
    -> START script -> first EMIT (first delta) -> last EMIT -> FINISH script
    -> web's read of the job record -> client has the answer;  worker: FINISH -> RQ done

and the round trips each process makes are counted (a MULTI...EXEC block counts once).
MONITOR slows Redis a little, so these timings are a little longer than the unobserved ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import redis

from . import measure
from .stack import API_KEY, Stack

PHASES = [
    ("client -> web's first Redis command (HTTP, routing, auth, thread pool)", "sent", "web_first"),
    ("web accepts the turn (agent lookup, RQ job, ACCEPT script)", "web_first", "accept"),
    ("queue hand-off (ACCEPT pushed -> worker's first command)", "accept", "worker_first"),
    ("RQ bookkeeping before the job function (-> START script)", "worker_first", "start"),
    ("context reads + model request until the first delta is emitted", "start", "first_emit"),
    ("remaining deltas (EMIT scripts, sent in batches)", "first_emit", "last_emit"),
    ("commit (FINISH script)", "last_emit", "finish"),
    ("web: `done` received -> job record read", "finish", "web_read"),
    ("web answers -> client has the response", "web_read", "received"),
]
AFTER = ("worker after FINISH (RQ bookkeeping, off the response path)", "finish", "worker_last")


def _socket_owners(pids: dict[str, int], redis_port: int) -> dict[int, str]:
    """client port -> process name, for every TCP connection to Redis that a known process holds."""
    inode_to_port: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port:
                inode_to_port[parts[9]] = local_port
    owners: dict[int, str] = {}
    for name, pid in pids.items():
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = target[8:-1]
                if inode in inode_to_port:
                    owners[inode_to_port[inode]] = name
    return owners


def _role(name: str) -> str:
    return "worker" if name.startswith("worker") else name


def trace_turns(base_url: str, headers: dict[str, str], redis_url: str, pids: dict[str, int],
                turns: int = 20, warmup: int = 3) -> dict[str, Any]:  # fmt: skip
    """Run `turns` sequential /chat turns under MONITOR; per-phase medians and round trips per turn."""
    monitor_client = redis.Redis.from_url(redis_url)
    redis_port = int(monitor_client.connection_pool.connection_kwargs["port"])
    records: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        try:
            with monitor_client.monitor() as monitor:
                ready.set()
                for command in monitor.listen():
                    records.append(command)
        except Exception:  # noqa: BLE001 - the connection is closed to stop us
            ready.set()

    thread = threading.Thread(target=listen, name="monitor", daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.2)
    windows = []
    with measure.sync_client() as client:
        for index in range(warmup + turns):
            sent = time.time()
            body = {"agent": measure.AGENT["name"], "message": measure.message(index)}
            response = client.post(f"{base_url}/api/v1/chat", headers=headers, json=body)
            received = time.time()
            response.raise_for_status()
            if index >= warmup:
                windows.append({"job_id": response.json()["job_id"], "sent": sent, "received": received})
            time.sleep(0.02)  # lets RQ's bookkeeping after the job end before the next turn
    time.sleep(0.3)
    owners = _socket_owners(pids, redis_port)
    try:
        monitor_client.connection_pool.disconnect()
    except (redis.RedisError, OSError):
        pass
    thread.join(2)
    return analyse(records, windows, owners)


def _script_kind(lua: list[str]) -> str:
    """Which of Parley's scripts ran, told by what it did (robust to changes in its keys)."""
    text = " ".join(lua)
    if '"type":"session"' in text:
        return "accept"
    if '"type":"done"' in text:
        return "finish"
    if '"type":"delta"' in text:
        return "emit"
    if "HINCRBY" in text and "attempt" in text:
        return "start"
    return "other"


def _script_kinds(records: list[dict[str, Any]]) -> dict[int, str]:
    """Position of each top-level EVALSHA/EVAL -> which script it ran (its commands follow it directly)."""
    kinds: dict[int, str] = {}
    current: int | None = None
    lua: list[str] = []
    for position, record in enumerate(records):
        if record.get("client_type") == "lua":
            lua.append(record["command"])
            continue
        if current is not None:
            kinds[current] = _script_kind(lua)
        current = position if record["command"].upper().startswith(("EVALSHA", "EVAL ")) else None
        lua = []
    if current is not None:
        kinds[current] = _script_kind(lua)
    return kinds


Tagged = list[tuple[int, dict[str, Any]]]


def _is_job_read(record: dict[str, Any], job: str) -> bool:
    return record["command"].upper().startswith("HGETALL") and job in record["command"]


def _worker_marks(marks: dict[str, float], worker: Tagged, kinds: dict[int, str], job: str) -> None:
    after_accept = [(p, r) for p, r in worker if r["time"] > marks["accept"]]
    if after_accept:
        marks["worker_first"] = after_accept[0][1]["time"]
    emits = []
    for position, record in after_accept:
        kind = kinds.get(position)
        if kind == "start" and "start" not in marks:
            marks["start"] = record["time"]
        elif kind == "emit":
            emits.append(record["time"])
        elif kind == "finish" and "finish" not in marks:
            marks["finish"] = record["time"]
    if emits:
        marks["first_emit"], marks["last_emit"] = emits[0], emits[-1]
    if "finish" in marks:
        tail = [r for _, r in worker if r["time"] >= marks["finish"] and job in r["command"]]
        if tail:
            marks["worker_last"] = tail[-1]["time"]


def _marks(window: dict[str, Any], web: Tagged, worker: Tagged, kinds: dict[int, str]) -> dict[str, float]:
    """The milestones of one turn (see the module docstring), as Redis timestamps."""
    job = window["job_id"]
    marks: dict[str, float] = {"sent": window["sent"], "received": window["received"]}
    if web:
        marks["web_first"] = web[0][1]["time"]
    accepts = [r["time"] for p, r in web if kinds.get(p) == "accept"]
    if not accepts:
        return marks
    marks["accept"] = accepts[0]
    _worker_marks(marks, worker, kinds, job)
    after = marks.get("finish", marks["accept"])
    reads = [r["time"] for _, r in web if r["time"] > after and _is_job_read(r, job)]
    if reads:
        marks["web_read"] = reads[0]
    return marks


def _round_trips(who: list[tuple[int, dict[str, Any], str]], since: float,
                 commands: dict[str, Counter[str]]) -> Counter[str]:  # fmt: skip
    """Round trips per role: top-level commands, a MULTI ... EXEC block counting once."""
    per_role: Counter[str] = Counter()
    in_multi: dict[str, bool] = defaultdict(bool)
    for _, record, role in who:
        name = record["command"].split(" ", 1)[0].upper()
        if role == "worker" and record["time"] < since:
            continue  # the previous turn's RQ bookkeeping
        commands[role][name] += 1
        port = str(record.get("client_port"))
        if name == "MULTI":
            in_multi[port] = True
            per_role[role] += 1
        elif name == "EXEC":
            in_multi[port] = False
        elif not in_multi[port]:
            per_role[role] += 1
    return per_role


def analyse(records: list[dict[str, Any]], windows: list[dict[str, Any]], owners: dict[int, str]) -> dict[str, Any]:
    kinds = _script_kinds(records)
    phases: dict[str, list[float]] = defaultdict(list)
    trips: dict[str, list[int]] = defaultdict(list)
    commands: dict[str, Counter[str]] = defaultdict(Counter)
    lua_per_turn: list[int] = []
    for window in windows:
        begin, end = window["sent"], window["received"] + 0.015
        mine = [(position, r) for position, r in enumerate(records) if begin <= r["time"] <= end]
        who = [(position, r, _role(owners.get(int(r.get("client_port") or 0), "other")))
               for position, r in mine if r.get("client_type") != "lua"]  # fmt: skip
        web = [(p, r) for p, r, role in who if role == "web"]
        worker = [(p, r) for p, r, role in who if role == "worker"]
        marks = _marks(window, web, worker, kinds)
        for label, a, b in [*PHASES, AFTER]:
            if a in marks and b in marks:
                phases[label].append((marks[b] - marks[a]) * 1000)
        per_role = _round_trips(who, marks.get("accept", 0.0), commands)
        for role in ("web", "worker"):
            trips[role].append(per_role.get(role, 0))
        lua_per_turn.append(sum(1 for _, r in mine if r.get("client_type") == "lua"))
    count = len(windows)
    return {
        "turns": count,
        "phases_ms": [{"phase": label, "median": round(statistics.median(phases[label]), 3), "n": len(phases[label])}
                      for label, _, _ in [*PHASES, AFTER] if phases[label]],  # fmt: skip
        "round_trips_per_turn": {role: statistics.median(values) for role, values in trips.items() if values},
        "commands_per_turn": {role: {name: round(n / count, 1) for name, n in counter.most_common()}
                              for role, counter in commands.items()} if count else {},  # fmt: skip
        "commands_inside_scripts_per_turn": statistics.median(lua_per_turn) if lua_per_turn else 0,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("info", nargs="?", type=Path, default=None,
                        help="JSON {base, redis, pids} of a running stack (default: start one, with 1 worker)")
    parser.add_argument("--turns", type=int, default=20, help="turns traced (20)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Trace ``--turns`` turns against the stack in ``info``, or against a fresh one (as ``turn`` does)."""
    results: dict[str, Any] = {"command": args.command, "options": args.options}
    if args.info is not None:
        info = json.loads(args.info.read_text(encoding="utf-8"))
        headers = {"Authorization": f"Bearer {API_KEY}"}
        results["trace"] = trace_turns(info["base"], headers, info["redis"], info["pids"], turns=args.turns)
        return results
    stack = Stack(keep_logs=args.keep_logs)
    try:
        stack.start()
        stack.model.control("options", {"chunk_delay_ms": 0, "first_chunk_delay_ms": 0, "chunks": 8})
        stack.set_workers(1, purpose="trace")
        with measure.sync_client() as client:
            measure.create_agent(client, stack.base_url, stack.headers)
        results["trace"] = trace_turns(stack.base_url, stack.headers, stack.redis_url, stack.processes(),
                                       turns=args.turns)  # fmt: skip
    finally:
        stack.close()
    return results
