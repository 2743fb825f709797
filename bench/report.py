"""Every benchmark's results: the JSON file and the markdown tables, and the targets as met/missed.

``write(kind, results, output)`` is what ``python -m bench <kind>`` ends with: it adds the targets (where
the benchmark has any), prints the markdown and writes the JSON.  The sections per benchmark:

* ``turn`` (the default run): :func:`markdown` and :func:`targets`;
* ``load``: :func:`load_markdown` and :func:`load_targets`;
* ``hostile``: :func:`hostile_markdown`;
* ``rebuild``: :func:`rebuild_markdown`;
* ``redis-ceiling``: :func:`ceiling_markdown`;
* ``rq-compare``, ``trace``, ``profile``: the turn report's own sections, on their own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
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


# -- load (`python -m bench load`) -------------------------------------------------------------


def _ms0(summary: dict[str, Any], key: str) -> str:
    value = summary.get(key)
    return "-" if value is None else f"{value:.0f}"


def _load_latency_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = ["| what | n | p50 ms | p90 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, summary in rows:
        out.append(f"| {label} | {summary.get('n', 0)} | {_ms0(summary, 'p50')} | {_ms0(summary, 'p90')} | "
                   f"{_ms0(summary, 'p99')} | {_ms0(summary, 'max')} |")  # fmt: skip
    return out


def load_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    load = results.get("load")
    if load:
        memory = load["worker_memory"]
        found += [
            {"target": f"{load['clients']} turns in flight at once, all completing",
             "figure": f"{load['peak_turns_running_at_once']} running at once; {load['finished']}/{load['turns']} "
                       f"finished", "met": load["peak_turns_running_at_once"] >= load["clients"]
                                            and load["finished"] == load["turns"]},
            {"target": "held by at most 2 worker processes", "figure": f"{load['workers']} processes",
             "met": load["workers"] <= 2},
            {"target": "their RSS together <= 512 MiB", "figure": f"{memory['peak_sum_rss_mib']} MiB (peak of the sum)",
             "met": memory["peak_sum_rss_mib"] <= 512},
            {"target": "first `delta` adds <= 250 ms p99 over the model's first chunk",
             "figure": f"{load['first_delta_added_ms'].get('p99', float('nan')):.0f} ms",
             "met": load["first_delta_added_ms"].get("p99", 1e9) <= 250},
        ]  # fmt: skip
    idle = results.get("idle")
    if idle:
        single = len(idle["pubsub_connections"]) == 1
        found += [
            {"target": f"{idle['requested']} idle SSE streams on one web, over one Redis pub/sub connection",
             "figure": f"{idle['still_open_after_hold']} open after {idle['held_s']:g} s; pub/sub connections with "
                       f"their channels: {[c['channels'] for c in idle['pubsub_connections']]}",
             "met": idle["still_open_after_hold"] == idle["requested"] and single},
            {"target": "<= 20 KiB per idle stream", "figure": f"{idle['rss_kib_per_stream']} KiB (RSS)",
             "met": idle["rss_kib_per_stream"] <= 20},
        ]  # fmt: skip
    drain = results.get("drain")
    if drain:
        outcomes = drain["outcomes"]
        bad = drain["turns"] - outcomes.get("finished", 0)
        found.append({"target": "SIGTERM to every worker under load: 0 turns failed or lost",
                      "figure": f"{bad} not finished ({outcomes}); {drain['retried']} handed back and finished "
                                f"elsewhere", "met": bad == 0 and drain["wrong_answers"] == 0})  # fmt: skip
    return found


def load_markdown(results: dict[str, Any]) -> str:
    """The load benchmark's report (``python -m bench load``)."""
    lines = [f"# Load benchmark ({results['command']}, {results['started_at']})", ""]
    model = results.get("model", {})
    lines.append(f"Model: tests/model_server.py, {model.get('chunks')} chunks, first after "
                 f"{model.get('first_chunk_delay_ms')} ms, then one every {model.get('chunk_delay_ms')} ms "
                 f"({model.get('answer_ms')} ms per answer).")  # fmt: skip
    direct = results.get("model_direct")
    if direct:
        lines += ["", f"## The model alone ({direct['clients']} streams at once)", ""]
        lines += _load_latency_rows([("request -> first content chunk", direct["first_chunk_ms"]),
                                ("request -> end of the answer", direct["end_ms"])])  # fmt: skip
    load = results.get("load")
    if load:
        lines += ["", f"## {load['clients']} streaming clients x {load['rounds']} turns; {load['workers']} workers x "
                      f"{load['concurrency']} turns; {load['webs']} webs", ""]  # fmt: skip
        lines.append(f"Clients started spread over {load['clients_start_spread_over_s']:g} s. "
                     f"Turns: {load['finished']}/{load['turns']} finished, outcomes {load['outcomes']}, "
                     f"{load['wrong_answers']} wrong answers, {load['turns_per_s']} turns/s; turns running at once "
                     f"(peak of rq's started registry): {load['peak_turns_running_at_once']}; model calls at once "
                     f"(peak): {load['peak_model_calls_at_once']}.")  # fmt: skip
        direct = results.get("model_direct", {}).get("first_chunk_ms", {})
        if direct.get("p99") is not None and load["first_delta_ms"].get("p99") is not None:
            lines.append(f"Measured against the model's own first chunk (alone, {results['model_direct']['clients']}"
                         f" streams at once): p50 {load['first_delta_ms']['p50'] - direct['p50']:.0f} ms, p99 "
                         f"{load['first_delta_ms']['p99'] - direct['p99']:.0f} ms added.")  # fmt: skip
        lines += [""] + _load_latency_rows([
            ("request -> first `delta`", load["first_delta_ms"]),
            ("first `delta` minus the model's first-chunk delay", load["first_delta_added_ms"]),
            *((f"... of which {name}", figures) for name, figures in load.get("first_delta_phases_ms", {}).items()),
            ("request -> `done`", load["done_ms"]),
        ])  # fmt: skip
        lines += ["", "| process group | peak RSS of the sum MiB | peak PSS of the sum MiB | per process: peak RSS MiB"
                      " | threads (peak) |", "| --- | ---: | ---: | --- | --- |"]  # fmt: skip
        for label, memory in (("workers", load["worker_memory"]), ("webs", load["web_memory"])):
            lines.append(f"| {label} | {memory['peak_sum_rss_mib']} | {memory['peak_sum_pss_mib']} | "
                         f"{memory['peak_rss_mib']} | {memory['peak_threads']} |")  # fmt: skip
        cpu = load["cpu"]
        lines += ["", f"CPU while it ran: the machine was {cpu['machine_busy']:.0%} busy, {cpu['other_work_cores']} "
                      f"cores of it other work than ours. CPU ms per finished turn: {cpu['ms_per_turn']}; cores used: "
                      f"{cpu['cores_used']}."]  # fmt: skip
        commands = load["redis_commands"]
        lines += ["", f"Redis commands per finished turn (INFO commandstats, commands inside scripts included, "
                      f"every process): {commands['per_turn']}; EVALSHA {commands['evalsha_per_turn']}.",
                  f"Top: {commands['top_per_turn']}"]  # fmt: skip
    drain = results.get("drain")
    if drain:
        lines += ["", f"## Drain: SIGTERM to every worker with {drain['sigterm'].get('in_flight_at_sigterm')} model "
                      f"calls in flight (grace {drain['drain_grace_s']:g} s)", ""]  # fmt: skip
        lines.append(f"Turns: {drain['finished']}/{drain['turns']} finished, outcomes {drain['outcomes']}, "
                     f"{drain['retried']} handed back and finished elsewhere, {drain['wrong_answers']} wrong answers, "
                     f"rq failed registry: {drain['rq_failed_registry']}. Old workers: "
                     f"{ {k: v for k, v in drain['sigterm'].items() if k.startswith('worker')} }.")  # fmt: skip
        lines += [""] + _load_latency_rows([("request -> `done`", drain["done_ms"])])
    pool = results.get("pool")
    if pool:
        memory = pool["memory"]
        lines += ["", f"## rq WorkerPool of {pool['workers']} SimpleWorkers (one turn each), {pool['clients']} "
                      f"clients x {pool['rounds']} turns", ""]  # fmt: skip
        lines.append(f"Turns: {pool['finished']}/{pool['turns']} finished; model calls at once (peak): "
                     f"{pool['peak_model_calls_at_once']}; {memory['processes']} processes: RSS of the sum "
                     f"{memory['peak_sum_rss_mib']} MiB, PSS of the sum {memory['peak_sum_pss_mib']} MiB.")  # fmt: skip
        lines += [""] + _load_latency_rows([("first `delta` minus the model's first-chunk delay",
                                        pool["first_delta_added_ms"])])  # fmt: skip
    idle = results.get("idle")
    if idle:
        lines += ["", f"## Idle SSE streams on one web ({idle['opened']}/{idle['requested']} opened)", ""]
        lines.append(f"Opened in {idle['open_seconds']} s (jobs created in {idle['jobs_created_s']} s), held "
                     f"{idle['held_s']:g} s: {idle['still_open_after_hold']} still open, {idle['streams_with_a_ping']} "
                     f"got a ping (every {idle['ping_interval_s']:g} s). Web RSS {idle['web_rss_mib_before']} -> "
                     f"{idle['web_rss_mib_with_streams']} MiB: **{idle['rss_kib_per_stream']} KiB per stream** (PSS "
                     f"{idle['pss_kib_per_stream']}); web CPU while held {idle['web_cpu_s_while_held']} s; Redis "
                     f"pub/sub connections (channels): {idle['pubsub_connections']}; open errors "
                     f"{idle['open_errors']}; streams the web ended: {idle['streams_ended_by_the_web']}.")  # fmt: skip
    lines += ["", "## Targets", "", "| target | figure | met? |", "| --- | --- | --- |"]
    for target in results.get("targets", []):
        lines.append(f"| {target['target']} | {target['figure']} | {'met' if target['met'] else '**missed**'} |")
    return "\n".join(lines)


# -- hostile (`python -m bench hostile`) -------------------------------------------------------


def hostile_markdown(results: dict[str, Any]) -> str:
    lines = ["| phase | ordinary turns answered | p50 ms | p90 ms | p99 ms | max ms | worker peak RSS MiB "
             "| hostile turns |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, phase in results["phases"].items():
        lat = phase["latency_ms"]
        hostile = phase.get("hostile_turns") or {}
        shown = "; ".join(f"{kind}: {info['turns']} {info['outcomes']}" for kind, info in hostile.items()) or "-"
        lines.append(f"| {name} | {phase['answered']}/{phase['ordinary_turns']} | {lat.get('p50', '-')} | "
                     f"{lat.get('p90', '-')} | {lat.get('p99', '-')} | {lat.get('max', '-')} | "
                     f"{phase['worker_peak_rss_mib']} | {shown} |")  # fmt: skip
    return "\n".join(lines)


# -- rebuild (`python -m bench rebuild`) -------------------------------------------------------


def rebuild_markdown(results: dict[str, Any]) -> str:
    load = " ".join(f"{x:.2f}" for x in results["load_average_before"])
    lines = ["## Context rebuild: 100 vs 100,000 messages (`python -m bench rebuild`)", "",
             f"machine: {results['cpu_model']}, {results['cores']} cores usable; Redis {results['redis_version']} on "
             f"127.0.0.1; commit {results['commit']}; budget {results['budget']:,} tokens, model {results['model']}; "
             f"{results['rebuilds']} timed rebuilds per session after {results['warmup']} untimed, alternating "
             f"sessions; load average before: {load}"]  # fmt: skip
    for variant in results["variants"]:
        lines += ["", f"### {variant['title']}", "",
                  "| history | window (messages / tokens) | read_window p50 | p99 | mean "
                  "| whole history read (old way) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for row, old in zip(variant["figures"], variant["whole_history_ms"], strict=True):
            lines.append(f"| {row['history_messages']:,} | {row['window_messages']} / {row['window_tokens']:,} | "
                         f"{row['p50_ms']:.3f} ms | {row['p99_ms']:.3f} ms | {row['mean_ms']:.3f} ms | "
                         f"{old:.1f} ms |")  # fmt: skip
        verdict = "met" if variant["p50_ratio"] <= 1.5 else "MISSED"
        lines += ["", f"p50 ratio 100,000 / 100 messages: **{variant['p50_ratio']:.2f}** (target <= 1.5: {verdict}); "
                      f"p99 ratio {variant['p99_ratio']:.2f}"]  # fmt: skip
    return "\n".join(lines)


# -- redis-ceiling (`python -m bench redis-ceiling`) ---------------------------------------------


def _ceiling_header(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    code = results.get("code") or {}
    modified = code.get("modified_files") or []
    changes = f" plus uncommitted changes in {len(modified)} tracked files" if modified else ""
    return [
        "## One Redis's ceiling (`python -m bench redis-ceiling`)", "",
        f"- Machine: {m.get('cpu_model')}, {m.get('cores')} cores usable, Linux {m.get('kernel')}; Python "
        f"{m.get('python')}; Redis server {m.get('redis_server')} (AOF on, `appendfsync everysec`)",
        f"- Command: `{results.get('command')}`; code: commit {code.get('commit')}{changes}",
        f"- Run at {results.get('started_at')}, took {results.get('duration_s')} s; the machine was "
        f"{results.get('machine_busy_before', 0):.0%} busy just before. Redis and the client processes share "
        "the cores.", "",
    ]  # fmt: skip


def _ceiling_phases(phases: list[dict[str, Any]]) -> list[str]:
    out = ["| phase | turns/s | Redis main thread busy | Redis CPU ms per turn (main thread / process) | "
           "**implied ceiling, turns/s** | commands per turn (EVALSHA) | clients' CPU ms per turn | machine busy |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for phase in phases:
        commands = phase["commands"]
        out.append(f"| {phase['phase']} | {phase['turns_per_s']} ({phase['turns']} in {phase['seconds']:.0f} s) | "
                   f"{phase['redis_main_busy']:.0%} | {phase['redis_main_cpu_ms_per_turn']} / "
                   f"{phase['redis_process_cpu_ms_per_turn']} | **{phase['implied_ceiling_turns_per_s']}** | "
                   f"{commands['per_turn']} ({commands['evalsha_per_turn']}) | {phase['clients_cpu_ms_per_turn']} | "
                   f"{phase['machine_busy']:.0%} |")  # fmt: skip
    out.append("")
    for phase in phases:
        out.append(f"- **{phase['phase']}**: {phase['title']}; errors: {phase['errors'] or 'none'}, failed turns: "
                   f"{phase.get('turn_errors') or 'none'}; AOF rewrites "
                   f"{phase['aof_rewrites']}; Redis memory at the end {phase['redis_used_memory_mib']} MiB.")
    return [*out, ""]


def _ceiling_latency(phase: dict[str, Any]) -> list[str]:
    out = [f"#### Latency of each call at that load, client side, phase `{phase['phase']}` (ms)", "",
           "| call | n | p50 | p90 | p99 | max |", "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for kind, s in phase["latency_ms"].items():
        if s.get("n"):
            out.append(f"| {kind} | {s['n']} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | {s['max']:.1f} |")
    return [*out, ""]


def _ceiling_commands(phase: dict[str, Any], top: int = 16) -> list[str]:
    out = [f"#### Where Redis's time goes, phase `{phase['phase']}` (INFO commandstats; a script's inner commands "
           "are in their own rows and in EVALSHA's time)", "",
           "| command | calls per turn | usec per turn | usec per call |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, row in list(phase["command_time"].items())[:top]:
        out.append(f"| {name} | {row['calls_per_turn']} | {row['usec_per_turn']} | {row['usec_per_call']} |")
    return [*out, ""]


def _ceiling_profile(profile: dict[str, Any] | None) -> list[str]:
    if not profile:
        return []
    out = [f"### Each step of a turn inside Redis ({profile['turns']} turns one after the other, each step "
           f"between two `INFO cpu commandstats`; {profile['info_bracket_cpu_usec']} usec of an empty bracket "
           "taken off)", "",
           "| step | calls per turn | commands per call | execution usec per call | Redis CPU usec per call | "
           "**Redis CPU usec per turn** | commands of one call |",
           "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for row in profile["steps"]:
        commands = ", ".join(f"{name} {n:g}" for name, n in row["commands"].items())
        out.append(f"| {row['step']} | {row['calls_per_turn']} | {row['commands_per_call']} | "
                   f"{row['exec_usec_per_call']} | {row['redis_cpu_usec_per_call']} | "
                   f"**{row['redis_cpu_usec_per_turn']}** | {commands} |")  # fmt: skip
    out += ["", f"Per turn: {profile['commands_per_turn']} commands, {profile['redis_cpu_usec_per_turn']} usec of "
                "Redis CPU (Parley's own steps: no rq worker, the stream read after the commit, so no live "
                "subscriber while the deltas are published). Each call here runs alone, so it pays a whole turn of "
                "Redis's event loop (its read, reply and AOF write): read the CPU columns as shares, the load "
                "phases for the cost per turn."]  # fmt: skip
    return [*out, ""]


def ceiling_markdown(results: dict[str, Any]) -> str:
    """``python -m bench redis-ceiling``: the phases' ceilings, latencies, commands, and the step profile."""
    phases = results.get("phases") or []
    lines = [*_ceiling_header(results), *_ceiling_phases(phases)]
    for phase in phases:
        lines += _ceiling_latency(phase)
    if phases:
        lines += _ceiling_commands(phases[0])
    lines += _ceiling_profile(results.get("profile"))
    return "\n".join(lines)


# -- prompt caching (`python -m bench cache`) ---------------------------------------------------


def cache_markdown(results: dict[str, Any]) -> str:
    """``python -m bench cache``: the share of prompt tokens served from cache, and where prefixes broke."""
    code = results.get("code") or {}
    options = results.get("options") or {}
    modified = code.get("modified_files") or []
    lines = ["## Prompt caching (`python -m bench cache`)", "",
             f"- Command: `{results.get('command')}`; code: commit {code.get('commit')}"
             f"{' (modified: ' + ', '.join(modified) + ')' if modified else ''}",
             f"- {options.get('turns')} turns, context_budget {options.get('budget')}, "
             f"{options.get('user_words')}-word user messages, {options.get('answer_words')}-word answers, "
             f"the calculator every {options.get('tool_every')} turns; cached tokens rounded to multiples of "
             f"{options.get('cache_block')}; "
             f"where the summary lags, it takes {options.get('summary_delay_ms')} ms and turns come every "
             f"{options.get('think_ms')} ms", "",
             "| scenario | requests | n | prompt tokens | cached tokens | **cached share** |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for scenario in results.get("scenarios") or []:
        for label, key in (("turns' model calls", "turn_requests"), ("rolling summaries' calls", "summary_requests"),
                           ("all", "all_requests")):  # fmt: skip
            row = scenario.get(key) or {}
            if row:
                lines.append(f"| {scenario['title']} | {label} | {row['requests']} | {row['prompt_tokens']} | "
                             f"{row['cached_tokens']} | **{row['cached_share']:.1%}** |")  # fmt: skip
    lines.append("")
    for scenario in results.get("scenarios") or []:
        usage = scenario.get("parley_usage") or {}
        breaks = ", ".join(f"{where}: {count}" for where, count in
                           sorted((scenario.get("breaks") or {}).items(), key=lambda item: -item[1])) or "none"
        lines += [f"- {scenario['title']}: Parley's usage of the turns says prompt_tokens "
                  f"{usage.get('prompt_tokens')}, cached_tokens {usage.get('cached_tokens')} "
                  f"({usage.get('turns_reporting_cached')} turns reported it); where a turn request's prefix "
                  f"broke (its first message that differs from the previous turn request's): {breaks}"]  # fmt: skip
    return "\n".join(lines)


# -- profile, trace, rq-compare on their own -----------------------------------------------------


def profile_text(results: dict[str, Any]) -> str:
    """py-spy summaries of collapsed-stack files, as text (``python -m bench profile FILE...``)."""
    out = []
    for entry in results["summaries"]:
        summary, top = entry["summary"], entry["top"]
        lines = [f"{entry['file']}: {summary['samples']} samples",
                 "  focus: Parley's functions and key library calls, inclusive %"]  # fmt: skip
        lines += [f"    {pct:5.1f}  {name}" for name, pct in summary["focus"][:top]]
        lines.append("  inclusive %  (function or what it calls)")
        lines += [f"    {pct:5.1f}  {name}" for name, pct in summary["inclusive"][:top]]
        lines.append("  self %  (leaf frame)")
        lines += [f"    {pct:5.1f}  {name}" for name, pct in summary["self"][:top]]
        out += [*lines, f"  by thread: {entry['by_thread']}", ""]
    return "\n".join(out)


def trace_markdown(results: dict[str, Any]) -> str:
    return "\n".join(_trace(results)) or "(no turn traced)"


def rq_markdown(results: dict[str, Any]) -> str:
    return "\n".join(_rq(results))


# -- the one writer ------------------------------------------------------------------------------

_MARKDOWN: dict[str, Callable[[dict[str, Any]], str]] = {
    "turn": markdown, "load": load_markdown, "hostile": hostile_markdown, "rebuild": rebuild_markdown,
    "redis-ceiling": ceiling_markdown, "rq-compare": rq_markdown, "trace": trace_markdown, "profile": profile_text,
    "cache": cache_markdown,
}  # fmt: skip
_TARGETS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {"turn": targets, "load": load_targets}


def write(kind: str, results: dict[str, Any], output: Path | None) -> None:
    """Add the targets (if `kind` has any), print the markdown, write the JSON to `output` (if given)."""
    if kind in _TARGETS:
        results["targets"] = _TARGETS[kind](results)
    print(_MARKDOWN[kind](results), flush=True)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"bench {kind}: results written to {output}", file=sys.stderr, flush=True)
