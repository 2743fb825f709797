"""The results as a markdown table, and the targets as met/missed."""

from __future__ import annotations

from typing import Any

REPRODUCE = "make bench   (= .venv/bin/python -m bench);   smoke run: python -m bench --quick"


def _get(data: dict[str, Any], *path: str) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def overhead(results: dict[str, Any]) -> dict[str, float] | None:
    chat, direct = _get(results, "latency", "chat"), _get(results, "latency", "model_direct")
    if not chat or not direct:
        return None
    return {"p50": chat["p50"] - direct["p50"], "p99": chat["p99"] - direct["p99"]}


def _run(results: dict[str, Any], system: str, workers: int, model: str) -> dict[str, Any] | None:
    for run in _get(results, "throughput", "runs") or []:
        if run["system"] == system and run["workers"] == workers and run["model"] == model:
            return run  # type: ignore[no-any-return]
    return None


_BORING = ("<module>", "_run_code", "_run_module_as_main", "main (worker/__main__.py)", "BaseWorker.work",
           "run (asyncio/runners.py)", "run_until_complete", "run_forever", "_run_once", "Handle._run",
           "Server.run", "Server.serve", "_bootstrap", "Thread.run", "run (uvicorn", "main (uvicorn", "Context.run",
           "invoke (click", "Command.main", "Command.invoke", "callback (")


def _boring(name: str) -> bool:
    return any(part in name for part in _BORING)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, figure: float | None, limit: float, unit: str, at_most: bool = True) -> None:
        if figure is None:
            rows.append({"target": name, "figure": None, "unit": unit, "met": None})
            return
        met = figure <= limit if at_most else figure >= limit
        rows.append({"target": name, "limit": limit, "figure": round(figure, 3), "unit": unit, "met": met})

    over = overhead(results)
    add("overhead per turn, p50 <= 10 ms", over and over["p50"], 10, "ms")
    add("overhead per turn, p99 <= 40 ms", over and over["p99"], 40, "ms")
    add("request -> `session` event, p50 <= 10 ms", _get(results, "streaming", "to_session", "p50"), 10, "ms")
    add("model first chunk -> client first `delta`, p50 <= 5 ms",
        _get(results, "streaming", "first_delta_lag", "p50"), 5, "ms")  # fmt: skip
    two = _run(results, "parley", 2, "zero-latency")
    add(">= 100 turns/s with 2 workers (zero-latency model)", two and two["per_s"], 100, "turns/s", at_most=False)
    return rows


def _stats_row(label: str, s: dict[str, Any]) -> str:
    return f"| {label} | {s['n']} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['p99'])} | {_ms(s['max'])} |"


_STATS_HEADER = ["| what | n | p50 ms | p90 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]


def _background(figures: dict[str, Any], what: str) -> list[str]:
    if "other_load_cores" not in figures:
        return []
    return [f"While {what} was measured the machine was {figures['machine_busy']:.0%} busy; processes other than "
            f"ours used {figures['other_load_cores']:.2f} cores.", ""]  # fmt: skip


def _header(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    packages = m.get("packages") or {}
    code = results.get("code") or {}
    modified = code.get("modified_files") or []
    background = results.get("background_busy_before")
    changes = f" plus uncommitted changes in {len(modified)} tracked files (listed in results.json)" if modified else ""
    calm = "" if background is None else f"; other work kept the machine {background:.0%} busy just before the start"
    return [
        "## Parley benchmark", "",
        f"- Machine: {m.get('cpu_model')}, {m.get('cores')} cores usable, Linux {m.get('kernel')}",
        f"- Python {m.get('python')}, Redis server {m.get('redis_server')} ({m.get('redis_binary')})",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in packages.items()),
        f"- Command: `{results.get('command')}`; reproduce with: {REPRODUCE}",
        f"- Code: commit {code.get('commit')}{changes}",
        f"- Run at {results.get('started_at')}, took {results.get('duration_s')} s. Everything (load generator "
        f"included) shares the same cores{calm}.", "",
    ]  # fmt: skip


def _latency(results: dict[str, Any]) -> list[str]:
    latency = results.get("latency")
    if not latency:
        return []
    out = [f"### 1. Sequential latency, zero-latency model (options {latency['model_options']}; "
           f"{latency['sessions']})", "", *_STATS_HEADER]  # fmt: skip
    rows = (("`POST /api/v1/chat` (Parley)", "chat"), ("model server direct, non-stream", "model_direct"),
            ("model server direct, stream (plain httpx)", "model_direct_stream"),
            ("model server, stream, through Parley's `OpenAIProvider` (OpenAI SDK) in-process",
             "model_via_provider"))  # fmt: skip
    out += [_stats_row(label, latency[key]) for label, key in rows if latency.get(key)]
    over = overhead(results)
    if over:
        out.append(f"| **overhead per turn** (chat - direct non-stream) | | **{over['p50']:.2f}** | | "
                   f"**{over['p99']:.2f}** | |")  # fmt: skip
    out.append("")
    out += _background(latency.get("chat") or {}, "`/chat`")
    via = latency.get("model_via_provider") or {}
    if "tcp_connections_opened" in via:
        out += [f"The OpenAI SDK path opened {via['tcp_connections_opened']} TCP connections for {via['calls']} "
                "streamed calls.", ""]  # fmt: skip
    transform = latency.get("sdk_transform_ms_by_messages") or {}
    if transform and "error" not in transform:
        out += ["The OpenAI SDK's request transform (`maybe_transform`, run by `chat.completions.create` before "
                "sending) costs, per call: " + ", ".join(f"{ms:.2f} ms at {n} messages" for n, ms in transform.items())
                + ".", ""]  # fmt: skip
    return out


def _trace(results: dict[str, Any]) -> list[str]:
    traced = results.get("trace")
    if not traced or not traced.get("phases_ms"):
        return []
    out = [f"### Anatomy of a turn (median of {traced['turns']} sequential `/chat` turns, timed by Redis MONITOR)",
           "", "| phase | median ms |", "| --- | ---: |"]  # fmt: skip
    out += [f"| {row['phase']} | {row['median']:.2f} |" for row in traced["phases_ms"]]
    trips = traced.get("round_trips_per_turn", {})
    out += ["", f"Redis round trips per turn: web {trips.get('web', '-')}, worker {trips.get('worker', '-')} "
            f"(MULTI...EXEC counted once); commands run inside Lua scripts per turn: "
            f"{traced.get('commands_inside_scripts_per_turn')}."]  # fmt: skip
    for role, counts in (traced.get("commands_per_turn") or {}).items():
        out.append(f"- {role} commands per turn: " + ", ".join(f"{name} {n:g}" for name, n in counts.items()))
    return [*out, ""]


def _streaming(results: dict[str, Any]) -> list[str]:
    streaming = results.get("streaming")
    if not streaming:
        return []
    out = [f"### 2. Streaming (`POST /api/v1/chat/stream`; model: {streaming.get('model')}; "
           f"{streaming.get('sessions')})", "", *_background(streaming, "this"), *_STATS_HEADER]  # fmt: skip
    rows = (("request sent -> `session` event received", "to_session"),
            ("model sent first chunk -> client got first `delta`", "first_delta_lag"),
            ("request sent -> `done` event received", "to_done"))  # fmt: skip
    out += [_stats_row(label, streaming[key]) for label, key in rows]
    return [*out, ""]


def _throughput(results: dict[str, Any]) -> list[str]:
    throughput = results.get("throughput")
    if not throughput:
        return []
    out = [f"### 3. Throughput ({throughput['concurrency']} concurrent clients, {throughput['endpoint']}; "
           f"{throughput['sessions']})", "",
           "| system | workers | model | turns ok | errors | s | **turns/s** | p50 ms | p99 ms | "
           "CPU: measured processes | CPU: whole machine | other work, cores |",
           "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for run in throughput["runs"]:
        lat = run["latency"]
        out.append(f"| {run['system']} | {run['workers'] or '-'} | {run['model']} | {run['ok']}/{run['turns']} | "
                   f"{sum(run['errors'].values())} | {run['elapsed_s']:.2f} | **{run['per_s']:.1f}** | "
                   f"{_ms(lat.get('p50'))} | {_ms(lat.get('p99'))} | {run['cpu_util_of_machine'] * 100:.0f}% | "
                   f"{run.get('machine_busy', 0) * 100:.0f}% | {run.get('other_load_cores', 0):.2f} |")  # fmt: skip
    out.append("")
    parley_runs = [run for run in throughput["runs"] if run["system"] == "parley"]
    if parley_runs:
        names = sorted({name for run in parley_runs for name in run["cpu_ms_per_turn"]})
        out += ["CPU time per turn, ms, by process (from /proc/<pid>/stat):", "",
                "| workers | model | " + " | ".join(names) + " | all |",
                "| ---: | --- | " + " | ".join("---:" for _ in names) + " | ---: |"]  # fmt: skip
        for run in parley_runs:
            per_turn = run["cpu_ms_per_turn"]
            cells = [f"{per_turn[name]:.2f}" if name in per_turn else "-" for name in names]
            out.append(f"| {run['workers']} | {run['model']} | " + " | ".join(cells) +
                       f" | {sum(per_turn.values()):.2f} |")  # fmt: skip
        out.append("")
    return out


def _rss(results: dict[str, Any]) -> list[str]:
    peaks = results.get("peak_rss_kb")
    if not peaks:
        return []
    purposes = results.get("worker_purposes") or {}
    out = ["### 4. Peak RSS (VmHWM from /proc/<pid>/status, pid of the program itself)", "",
           "| process | peak RSS MiB | used for |", "| --- | ---: | --- |"]  # fmt: skip
    for name, kb in sorted(peaks.items(), key=lambda item: (not item[0].startswith(("web", "worker")), item[0])):
        used = ", ".join(purposes.get(name, [])) if name.startswith("worker") else ""
        out.append(f"| {name} | {kb / 1024:.1f} | {used} |")
    return [*out, ""]


def _rq(results: dict[str, Any]) -> list[str]:
    rq = results.get("rq_workers")
    if not rq:
        return []
    out = ["### RQ worker classes: no-op jobs in burst mode, same Redis", "",
           "| worker class | jobs x rounds | finished (min) | ms per job (median) | each round |",
           "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    for row in rq:
        if "error" in row:
            out.append(f"| {row['worker']} | error: {row['error']} | | | |")
            continue
        each = ", ".join(f"{value:.2f}" for value in row.get("per_job_ms_all", []))
        out.append(f"| `{row['class']}` | {row['jobs']} x {row.get('rounds', 1)} | {row['finished']} | "
                   f"{row['per_job_ms']:.2f} | {each} |")  # fmt: skip
    return [*out, ""]


def _profiles(results: dict[str, Any]) -> list[str]:
    profiles = results.get("profiles")
    if not profiles:
        return []
    out = ["### Profiles (py-spy; the collapsed stacks' paths are in the JSON results)", ""]
    for key, summary in profiles.items():
        if not isinstance(summary, dict) or "error" in summary:
            out.append(f"- {key}: {summary}")
            continue
        out += [f"**{key}** ({summary['mode']}, {summary['samples']} samples, threads {summary['threads']})", "",
                "| inclusive % | Parley's functions and key library calls | | self % | leaf function |",
                "| ---: | --- | --- | ---: | --- |"]  # fmt: skip
        inclusive = (summary.get("focus") or [row for row in summary["inclusive"] if not _boring(row[0])])[:12]
        leaf = summary["self"][:12]
        for index in range(max(len(inclusive), len(leaf))):
            a = inclusive[index] if index < len(inclusive) else ("", "")
            b = leaf[index] if index < len(leaf) else ("", "")
            out.append(f"| {a[1]} | `{a[0]}` | | {b[1]} | `{b[0]}` |")
        out.append("")
    return out


def _targets(results: dict[str, Any]) -> list[str]:
    rows = results.get("targets") or []
    if not rows:
        return []
    out = ["### Targets", "", "| target | figure | met? |", "| --- | ---: | --- |"]
    for row in rows:
        figure = "-" if row["figure"] is None else f"{row['figure']:.2f} {row['unit']}"
        met = "n/a" if row["met"] is None else ("met" if row["met"] else "**missed**")
        out.append(f"| {row['target']} | {figure} | {met} |")
    return [*out, ""]


def markdown(results: dict[str, Any]) -> str:
    sections = (_header, _latency, _trace, _streaming, _throughput, _rss, _rq, _profiles, _targets)
    return "\n".join(line for section in sections for line in section(results))
