"""The load benchmark's markdown report and its targets."""

from __future__ import annotations

from typing import Any


def _ms(summary: dict[str, Any], key: str) -> str:
    value = summary.get(key)
    return "-" if value is None else f"{value:.0f}"


def _latency_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = ["| what | n | p50 ms | p90 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, summary in rows:
        out.append(f"| {label} | {summary.get('n', 0)} | {_ms(summary, 'p50')} | {_ms(summary, 'p90')} | "
                   f"{_ms(summary, 'p99')} | {_ms(summary, 'max')} |")  # fmt: skip
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
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


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Load benchmark ({results['command']}, {results['started_at']})", ""]
    model = results.get("model", {})
    lines.append(f"Model: tests/model_server.py, {model.get('chunks')} chunks, first after "
                 f"{model.get('first_chunk_delay_ms')} ms, then one every {model.get('chunk_delay_ms')} ms "
                 f"({model.get('answer_ms')} ms per answer).")  # fmt: skip
    direct = results.get("model_direct")
    if direct:
        lines += ["", f"## The model alone ({direct['clients']} streams at once)", ""]
        lines += _latency_rows([("request -> first content chunk", direct["first_chunk_ms"]),
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
        lines += [""] + _latency_rows([
            ("request -> first `delta`", load["first_delta_ms"]),
            ("first `delta` minus the model's first-chunk delay", load["first_delta_added_ms"]),
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
        lines += [""] + _latency_rows([("request -> `done`", drain["done_ms"])])
    pool = results.get("pool")
    if pool:
        memory = pool["memory"]
        lines += ["", f"## rq WorkerPool of {pool['workers']} SimpleWorkers (one turn each), {pool['clients']} "
                      f"clients x {pool['rounds']} turns", ""]  # fmt: skip
        lines.append(f"Turns: {pool['finished']}/{pool['turns']} finished; model calls at once (peak): "
                     f"{pool['peak_model_calls_at_once']}; {memory['processes']} processes: RSS of the sum "
                     f"{memory['peak_sum_rss_mib']} MiB, PSS of the sum {memory['peak_sum_pss_mib']} MiB.")  # fmt: skip
        lines += [""] + _latency_rows([("first `delta` minus the model's first-chunk delay",
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
