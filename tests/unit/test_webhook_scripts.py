"""Webhooks' Redis steps on fakeredis: FINISH_TURN and PAUSE_TURN write a turn's end to the turn-ends stream only
for a tenant with webhooks, and once however often the same call runs; CREATE_DELIVERY makes a delivery once;
CLAIM_DELIVERIES leases each to one claim, no tenant past its cap of attempts in flight, and ends those of a
deleted webhook; RECORD_ATTEMPT schedules a retry
only for the lease's holder. Also: the backoff, and the signature the worker sends verifies with the receiver
docs/webhooks.md shows."""

from __future__ import annotations

import asyncio
import json
import runpy
import time
from pathlib import Path
from typing import Any

import pytest

from parley.shared.sealing import PLAIN
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store import turns as turns_module
from parley.shared.store import webhooks as webhooks_module
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore
from parley.shared.store.webhooks import Attempt, Deliveries, Webhook, WebhookStore, delivery_id, due_member
from parley.shared.store.worker_turns import WorkerTurns
from parley.worker import webhook_post, webhooks
from parley.worker.webhooks import backoff_s

from .test_turn_scripts import T, accept, finish_ok, start

HOOK = Webhook(id="wh_1", url="https://example.com/hook", events=["turn.finished"], secret="whsec_x", created_at=1)
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "webhook_receiver.py"


def entries(clients: RedisClients) -> list[dict[str, str]]:
    return [fields for _id, fields in clients.text.xrange(keys.turn_ends())]


def test_a_tenant_without_webhooks_writes_no_turn_end(turns: TurnStore, worker_turns: WorkerTurns,
                                                      clients: RedisClients, chef: dict) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    _, attempt, _ = start(worker_turns, accepted.job_id)
    assert finish_ok(worker_turns, accepted.job_id, attempt)
    assert not clients.text.exists(keys.turn_ends())


def test_a_turn_end_is_written_once_however_often_its_call_runs(turns: TurnStore, worker_turns: WorkerTurns,
                                                                 clients: RedisClients, chef: dict,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    WebhookStore(clients.text, 20, PLAIN).create(T, HOOK)
    accepted = accept(turns, chef)
    _, attempt, _ = start(worker_turns, accepted.job_id)
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "call-1")
    assert finish_ok(worker_turns, accepted.job_id, attempt)
    assert finish_ok(worker_turns, accepted.job_id, attempt)  # the same call again: answered, not run
    assert entries(clients) == [{"t": T, "j": accepted.job_id, "type": "turn.finished"}]


def test_a_queued_turn_canceled_writes_turn_canceled(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    WebhookStore(clients.text, 20, PLAIN).create(T, HOOK)
    accepted = accept(turns, chef)
    assert turns.cancel(T, accepted.job_id)
    assert not turns.cancel(T, accepted.job_id)
    assert entries(clients) == [{"t": T, "j": accepted.job_id, "type": "turn.canceled"}]


def test_the_cap_is_per_tenant_and_a_deleted_webhook_is_gone(clients: RedisClients) -> None:
    store = WebhookStore(clients.text, 1, PLAIN)
    store.create(T, HOOK)
    with pytest.raises(Exception, match="PARLEY_MAX_WEBHOOKS"):
        store.create(T, Webhook(id="wh_2", url=HOOK.url, events=HOOK.events, secret="s"))
    store.create("other", HOOK)
    store.delete(T, HOOK.id)
    assert store.listed(T) == [] and not clients.text.exists(keys.webhooks(T))


def _deliveries(worker_turns: WorkerTurns) -> Deliveries:
    return Deliveries(worker_turns.aio, PLAIN)


def test_a_delivery_is_made_once_and_leased_to_one_claim(worker_turns: WorkerTurns, clients: RedisClients) -> None:
    WebhookStore(clients.text, 20, PLAIN).create(T, HOOK)
    deliveries = _deliveries(worker_turns)

    async def scenario() -> None:
        made = [await deliveries.create(T, HOOK, "1-0", "turn.finished", "job_1", b"{}", 60_000) for _ in range(2)]
        assert made == [True, False]
        member = due_member(T, delivery_id(HOOK.id, "1-0"))
        assert await deliveries.claim("a", 10, 60_000, 10) == [member]
        assert await deliveries.claim("b", 10, 60_000, 10) == []  # leased to "a"
        failed = Attempt(at=1, duration_ms=5, status_code=500, error="HTTP 500")
        assert await deliveries.record(member, "b", failed, "retry", 0, 1000) == "pending"  # not b's lease
        assert clients.text.zscore(keys.webhook_due(), member) > time.time() * 1000  # still a's lease
        assert await deliveries.record(member, "a", failed, "retry", 5, 1000) == "pending"
        assert clients.text.zscore(keys.webhook_due(), member) == 5
        assert await deliveries.claim("c", 10, 60_000, 10) == [member]
        ok = Attempt(at=2, duration_ms=5, status_code=204)
        assert await deliveries.record(member, "c", ok, "delivered", 0, 1000) == "delivered"
        assert await deliveries.record(member, "a", failed, "failed", 0, 1000) == "delivered"  # stays delivered
        record = await deliveries.read(T, delivery_id(HOOK.id, "1-0"))
        assert record["attempt_count"] == "4" and len(json.loads(record["attempts"])) == 4
        assert clients.text.zscore(keys.webhook_due(), member) is None

    asyncio.run(scenario())


def test_the_pending_deliveries_of_a_deleted_webhook_end(worker_turns: WorkerTurns, clients: RedisClients) -> None:
    store = WebhookStore(clients.text, 20, PLAIN)
    store.create(T, HOOK)
    deliveries = _deliveries(worker_turns)

    async def scenario() -> None:
        await deliveries.create(T, HOOK, "1-0", "turn.finished", "job_1", b"{}", 60_000)
        store.delete(T, HOOK.id)
        assert await deliveries.claim("a", 10, 60_000, 10) == []
        assert (await deliveries.read(T, delivery_id(HOOK.id, "1-0")))["status"] == "failed"
        assert clients.text.zcard(keys.webhook_due()) == 0

    asyncio.run(scenario())


def test_no_tenant_holds_more_than_its_cap_of_attempts_so_others_go_on(
        worker_turns: WorkerTurns, clients: RedisClients, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store = WebhookStore(clients.text, 20, PLAIN)
    store.create(T, HOOK)
    store.create("other", HOOK)
    deliveries = _deliveries(worker_turns)

    def tenants(members: list[str]) -> list[str]:
        return sorted(member.split(" ")[0] for member in members)

    async def scenario() -> None:
        for n in range(1, 6):  # T's backlog first, then one of the other tenant's
            await deliveries.create(T, HOOK, f"{n}-0", "turn.finished", f"job_{n}", b"{}", 600_000)
        await deliveries.create("other", HOOK, "6-0", "turn.finished", "job_6", b"{}", 600_000)
        first = await deliveries.claim("a", 4, 60_000, 2)
        assert tenants(first) == sorted([T, T, "other"])  # T's cap is 2: its other three wait, the other goes on
        assert clients.text.zcard(keys.webhook_parked(T)) == 3
        assert clients.text.smembers(keys.webhook_parked_tenants()) == {T}
        assert await deliveries.claim("b", 4, 60_000, 2) == []  # T still at its cap
        ok = Attempt(at=1, duration_ms=5, status_code=204)
        ours = [member for member in first if member.startswith(f"{T} ")]
        assert await deliveries.record(ours[0], "a", ok, "delivered", 0, 1000) == "delivered"
        assert clients.text.zcard(keys.webhook_leases(T)) == 1
        (third,) = await deliveries.claim("c", 4, 60_000, 2)
        assert third.startswith(f"{T} ") and third not in first
        assert clients.text.zcard(keys.webhook_parked(T)) == 2

        # Leases whose worker died end: their deliveries are due again, still no more than the cap at once.
        later = webhooks_module.now_ms() + 120_000
        monkeypatch.setattr(webhooks_module, "now_ms", lambda: later)
        again = await deliveries.claim("d", 10, 60_000, 2)
        assert tenants(again) == sorted([T, T, "other"])
        assert clients.text.zcard(keys.webhook_parked(T)) == 2
        for member in again:
            assert await deliveries.record(member, "d", ok, "delivered", 0, 1000) == "delivered"
        assert tenants(await deliveries.claim("e", 10, 60_000, 2)) == [T, T]
        assert clients.text.zcard(keys.webhook_parked(T)) == 0
        assert await deliveries.claim("f", 10, 60_000, 2) == []
        assert not clients.text.exists(keys.webhook_parked(T))
        assert not clients.text.smembers(keys.webhook_parked_tenants())

    asyncio.run(scenario())


def test_the_backoff_doubles_up_to_its_cap(make_settings: Any) -> None:
    settings: Settings = make_settings(PARLEY_WEBHOOK_BACKOFF_S="1", PARLEY_WEBHOOK_BACKOFF_CAP_S="10")
    waits = [backoff_s(settings, attempts) for attempts in range(1, 7)]
    for wait, base in zip(waits, [1, 2, 4, 8, 10, 10], strict=True):
        assert base <= wait <= base * 1.1


def test_the_signature_verifies_with_the_documented_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_WEBHOOK_SECRET", "whsec_test")
    example = runpy.run_path(str(EXAMPLE))  # not as __main__: it serves nothing
    body = b'{"type":"turn.finished","job":{}}'
    now = int(time.time())
    header = webhook_post.signature("whsec_test", body, now)
    assert example["verify"](header, body, "whsec_test")
    assert not example["verify"](header, body + b" ", "whsec_test")
    assert not example["verify"](header, body, "whsec_other")
    assert not example["verify"](webhook_post.signature("whsec_test", body, now - 301), body, "whsec_test")


def test_the_doc_shows_the_example_receiver_as_it_is() -> None:
    doc = (EXAMPLE.parents[1] / "webhooks.md").read_text(encoding="utf-8")
    assert "```python\n" + EXAMPLE.read_text(encoding="utf-8") + "```" in doc


def test_dead_consumers_that_hold_nothing_leave_the_group(
    worker_turns: WorkerTurns, clients: RedisClients, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "PRUNE_IDLE_MS", -1)
    dispatcher = webhooks.Dispatcher(worker_turns.aio, settings)

    async def scenario() -> None:
        await dispatcher._ensure_group()
        clients.text.xgroup_createconsumer(keys.turn_ends(), webhooks.GROUP, "dead")
        await dispatcher._prune()
        names = [c["name"] for c in clients.text.xinfo_consumers(keys.turn_ends(), webhooks.GROUP)]
        assert "dead" not in names

    asyncio.run(scenario())
