"""Usage counters (shared/usage.py, lib_usage.lua via FINISH_TURN, shared/store/usage.py): prices parsed from
PARLEY_MODEL_PRICES, a turn counted once in the step that ends it (even when that step runs twice), the
per-day bound of groups, and reading a range back a page at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import fakeredis
import pytest
from pydantic import ValidationError

from parley.shared import events
from parley.shared.clock import now_ms
from parley.shared.events import EventType
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore
from parley.shared.store.usage import UsageStore, add_call_usage
from parley.shared.store.worker_turns import Attempt, WorkerTurns
from parley.shared.usage import Price, day_of, parse_prices, turn_counts

from . import test_idempotent_turn_steps as steps
from .test_idempotent_turn_steps import LostReplies, same_call_id, twice
from .test_turn_scripts import T, accept, start, take_from_queue

aio, lost, retrying, store, worker = steps.aio, steps.lost, steps.retrying, steps.store, steps.worker  # fixtures

USAGE = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280, "cached_tokens": 1024}


# --- prices ---------------------------------------------------------------------------------


def test_prices_with_colons_and_slashes_in_model_names() -> None:
    prices = parse_prices("gpt-4o-mini=0.15/0.60/0.075, openrouter/meta-llama/llama-3:free=0/0,ollama/qwen2.5:7b=1/2")
    assert prices["gpt-4o-mini"] == Price(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
    assert prices["openrouter/meta-llama/llama-3:free"] == Price(Decimal(0), Decimal(0), Decimal(0))
    assert prices["ollama/qwen2.5:7b"].cached_input == Decimal(1)  # no cached price: the input price


def test_prices_as_json() -> None:
    prices = parse_prices('{"a/b:c": [3, 15, 0.3], "d": ["1", "2"]}')
    assert prices == {"a/b:c": Price(Decimal(3), Decimal(15), Decimal("0.3")), "d": Price(Decimal(1), Decimal(2),
                                                                                         Decimal(1))}


@pytest.mark.parametrize("text", ["gpt", "gpt=1", "gpt=1/2/3/4", "=1/2", "gpt=a/b", "gpt=-1/2", "gpt=nan/1",
                                  "gpt=1e9/1", "{", "[1]", '{"m": 3}', "gpt=1/inf"])
def test_bad_prices_are_refused_at_start(make_settings: Callable[..., Settings], text: str) -> None:
    with pytest.raises(ValidationError, match="PARLEY_MODEL_PRICES"):
        make_settings(PARLEY_MODEL_PRICES=text)


def test_settings_prices_and_currency(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PARLEY_MODEL_PRICES="m=1/2", PARLEY_CURRENCY="EUR")
    assert settings.prices == {"m": Price(Decimal(1), Decimal(2), Decimal(1))} and settings.currency == "EUR"
    with pytest.raises(ValidationError):
        make_settings(PARLEY_CURRENCY="euros")


def test_cost_in_micro_units_does_not_drift() -> None:
    """A price per 1M tokens times tokens is micro-units; a million turns add up exactly."""
    price = Price(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
    one = price.cost_micros(1200, 80, 1024)
    assert one == round(176 * 0.15 + 1024 * 0.075 + 80 * 0.60)  # 26.4 + 76.8 + 48 = 151.2 -> 151
    assert turn_counts(USAGE, "m", {"m": price}) == {"turns": 1, "prompt_tokens": 1200, "completion_tokens": 80,
                                                     "cached_tokens": 1024, "cost": 151}  # fmt: skip
    assert turn_counts(USAGE, "unpriced", {"m": price})["cost"] == 0
    assert turn_counts(None, "m", {"m": price}) == {"turns": 1, "prompt_tokens": 0, "completion_tokens": 0,
                                                    "cached_tokens": 0, "cost": 0}  # fmt: skip
    assert turn_counts({"prompt_tokens": -5, "completion_tokens": True}, "x", {})["prompt_tokens"] == 0


# --- counted at commit ----------------------------------------------------------------------


def _finish(side: WorkerTurns, job_id: str, attempt: int, usage: dict[str, int] | None,
            status: str = "finished") -> bool:  # fmt: skip
    return asyncio.run(side.finish(
        Attempt(T, job_id, attempt), "s1", status=status, usage=usage,
        events_out=[events.encode(EventType.DONE)], **({"error": "boom"} if status == "failed" else {}),
    ))  # fmt: skip


def _read(clients: RedisClients, group_by: str, tenant: str = T, **kwargs: Any) -> Any:
    today = day_of(now_ms())
    return UsageStore(clients.text).read(tenant, group_by=group_by, since=kwargs.pop("since", today),
                                         until=kwargs.pop("until", today), limit=kwargs.pop("limit", 100),
                                         **kwargs)  # fmt: skip


def _run(turns: TurnStore, side: WorkerTurns, chef: dict, usage: dict[str, int] | None, session_id: str = "s1",
         status: str = "finished") -> str:  # fmt: skip
    accepted = accept(turns, chef, session_id=session_id)
    take_from_queue(turns, accepted.job_id)
    start(side, accepted.job_id)
    assert asyncio.run(side.finish(
        Attempt(T, accepted.job_id, 1), session_id, status=status, usage=usage,
        events_out=[events.encode(EventType.DONE)],
    ))  # fmt: skip
    return accepted.job_id


def test_a_turn_counts_once_by_day_agent_and_session(turns: TurnStore, worker_turns: WorkerTurns,
                                                     clients: RedisClients, chef: dict) -> None:  # fmt: skip
    counts = turn_counts(USAGE, "m", {"m": Price(Decimal(1), Decimal(2), Decimal("0.5"))})
    _run(turns, worker_turns, chef, counts, "s1")
    _run(turns, worker_turns, chef, counts, "s2")
    _run(turns, worker_turns, chef, None, "s2", status="failed")  # not counted: no usage given
    day = _read(clients, "day")
    today = day_of(now_ms()).isoformat()
    assert [key for key, _ in day.rows] == [today]
    assert vars(day.rows[0][1]) == {"turns": 2, "prompt_tokens": 2400, "completion_tokens": 160,
                                    "cached_tokens": 2048, "cost": 2 * (176 + 512 + 160)}  # fmt: skip
    assert vars(day.total) == vars(day.rows[0][1])
    agents = _read(clients, "agent")
    assert [(key, counts.turns) for key, counts in agents.rows] == [("agent-chef", 2)]
    sessions = _read(clients, "session")
    assert [(key, counts.prompt_tokens) for key, counts in sessions.rows] == [("s1", 1200), ("s2", 1200)]
    assert _read(clients, "day", tenant="other").rows == []
    ttl_ms = clients.text.pttl(keys.usage_day(T, today))
    assert 399 * 86_400_000 < ttl_ms <= 400 * 86_400_000  # type: ignore[operator]


def test_a_lost_reply_of_the_commit_counts_the_turn_once(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    """The client's retry runs FINISH_TURN a second time with the same arguments: counted once."""
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    counts = turn_counts(USAGE, "m", {})
    assert twice(lost, lambda: worker.finish(Attempt(T, accepted.job_id, 1), "s1", status="finished", usage=counts,
                                             events_out=[events.encode(EventType.DONE)])) is True  # fmt: skip
    assert vars(_read(retrying, "day").total)["turns"] == 1
    assert _read(retrying, "day").total.prompt_tokens == 1200


def test_the_same_finish_call_run_again_counts_nothing_more(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    same_call_id(monkeypatch, "finish-1")
    counts = turn_counts(USAGE, "m", {})
    assert _finish(worker, accepted.job_id, 1, counts)
    assert _finish(worker, accepted.job_id, 1, counts)  # the same call: answered, not run
    same_call_id(monkeypatch, "finish-2")
    assert not _finish(worker, accepted.job_id, 1, counts)  # another call: the turn had ended
    assert _read(retrying, "day").total.turns == 1


def test_bad_usage_writes_nothing(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                  chef: dict) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    take_from_queue(turns, accepted.job_id)
    start(worker_turns, accepted.job_id)
    with pytest.raises(Exception, match="usage"):
        _finish(worker_turns, accepted.job_id, 1, {"turns": 1, "prompt_tokens": -1, "completion_tokens": 0,
                                                   "cached_tokens": 0, "cost": 0})  # fmt: skip
    assert turns.job(T, accepted.job_id)["status"] == "started"  # type: ignore[index]
    assert _finish(worker_turns, accepted.job_id, 1, turn_counts(USAGE, "m", {}))


def test_groups_past_the_days_bound_count_under_other(clients: RedisClients, make_settings: Callable[..., Settings],
                                                      chef: dict, server: Any) -> None:  # fmt: skip
    settings = make_settings(PARLEY_USAGE_MAX_GROUPS_PER_DAY="2")
    turns = TurnStore(clients, settings)
    side = WorkerTurns(turns, fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    counts = turn_counts(USAGE, "m", {})
    for session_id in ("a", "b", "c", "d", "a"):
        _run(turns, side, chef, counts, session_id)
    sessions = _read(clients, "session")
    assert [(key, c.turns) for key, c in sessions.rows] == [("(other)", 2), ("a", 2), ("b", 1)]
    assert sessions.total.turns == 5


def test_pages_in_key_order(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict) -> None:
    for session_id in ("s3", "s1", "s2"):
        _run(turns, worker_turns, chef, turn_counts(USAGE, "m", {}), session_id)
    first = _read(clients, "session", limit=2)
    assert [key for key, _ in first.rows] == ["s1", "s2"] and first.next_cursor == "s2"
    second = _read(clients, "session", limit=2, cursor=first.next_cursor)
    assert [key for key, _ in second.rows] == ["s3"] and second.next_cursor is None
    assert first.total.turns == second.total.turns == 3


def test_a_call_outside_a_turn_adds_tokens_and_cost_but_no_turn(turns: TurnStore, worker_turns: WorkerTurns,
                                                                 clients: RedisClients, chef: dict,
                                                                 server: Any) -> None:  # fmt: skip
    _run(turns, worker_turns, chef, turn_counts(USAGE, "m", {}), "s1")
    summary = turn_counts({"prompt_tokens": 300, "completion_tokens": 20}, "m", {"m": Price(Decimal(1), Decimal(2),
                                                                                            Decimal(1))}, turns=0)
    assert summary == {"turns": 0, "prompt_tokens": 300, "completion_tokens": 20, "cached_tokens": 0, "cost": 340}

    async def add() -> None:
        aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        await add_call_usage(aio, T, chef["id"], "s1", summary, at_ms=now_ms(), max_groups=1000, retention_days=1)
        await aio.aclose()

    asyncio.run(add())
    (session,) = _read(clients, "session").rows
    assert session[0] == "s1" and session[1].turns == 1 and session[1].prompt_tokens == 1500
    assert session[1].completion_tokens == 100 and session[1].cost == 340
    (agent,) = _read(clients, "agent").rows
    assert agent == (chef["id"], session[1])
    assert clients.text.pttl(keys.usage_day(T, day_of(now_ms()).isoformat())) > 0


def test_a_canceled_turn_is_counted_once_by_its_last_attempt(turns: TurnStore, worker_turns: WorkerTurns,
                                                              clients: RedisClients, chef: dict) -> None:  # fmt: skip
    counts = turn_counts(USAGE, "m", {})
    accepted = accept(turns, chef, session_id="s1")
    take_from_queue(turns, accepted.job_id)
    start(worker_turns, accepted.job_id)
    attempt = Attempt(T, accepted.job_id, 1)
    assert not asyncio.run(worker_turns.count_canceled(attempt, counts))  # still running: not canceled
    assert turns.cancel(T, accepted.job_id)
    assert not asyncio.run(worker_turns.count_canceled(Attempt(T, accepted.job_id, 2), counts))  # not its attempt
    assert asyncio.run(worker_turns.count_canceled(attempt, counts))
    assert not asyncio.run(worker_turns.count_canceled(attempt, counts))  # once
    (session,) = _read(clients, "session").rows
    assert session[0] == "s1" and session[1].turns == 1 and session[1].prompt_tokens == USAGE["prompt_tokens"]
    finished = _run(turns, worker_turns, chef, counts, "s2")
    assert not asyncio.run(worker_turns.count_canceled(Attempt(T, finished, 1), counts))  # finished: counted there
    assert _read(clients, "day").total.turns == 2


def test_a_range_reads_each_day(clients: RedisClients) -> None:
    clients.text.hset(keys.usage_day(T, "2026-01-01"), mapping={"turns": 2, "prompt_tokens": 10})
    clients.text.hset(keys.usage_day(T, "2026-01-03"), mapping={"turns": 1, "prompt_tokens": 5})
    read = UsageStore(clients.text).read(T, group_by="day", since=date(2026, 1, 1), until=date(2026, 1, 2), limit=10)
    assert [(key, c.turns) for key, c in read.rows] == [("2026-01-01", 2)] and read.total.prompt_tokens == 10


def test_a_turn_answered_partly_by_a_fallback_prices_each_step_at_its_model(
        make_settings: Callable[..., Settings]) -> None:  # fmt: skip
    """Steps answered by a fallback model cost that model's price; steps before a pause (in the loop's usage, not in
    this attempt's by-model counts) cost the answering model's."""
    from types import SimpleNamespace

    from parley.worker.turn.spent import Spent

    settings = make_settings(PARLEY_MODEL_PRICES="main=10/10,backup=1/1")
    by_model = {"main": {"prompt_tokens": 1000, "completion_tokens": 0},
                "backup": {"prompt_tokens": 1000, "completion_tokens": 0}}  # fmt: skip
    loop = SimpleNamespace(usage={"prompt_tokens": 3000, "completion_tokens": 0}, model="main",
                           models=SimpleNamespace(answered="backup", usage_by_model=by_model))  # fmt: skip
    spent = Spent(model="main")
    spent.took(loop)  # type: ignore[arg-type]
    counts = spent.finished(settings)
    assert spent.model == "backup"
    assert counts["prompt_tokens"] == 3000
    assert counts["cost"] == 1000 * 10 + 1000 * 1 + 1000 * 1  # main's step, backup's step, the earlier one at backup
