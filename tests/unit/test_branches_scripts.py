"""Branches and retention in Redis, on fakeredis's Lua: a regenerate's commit (FINISH_TURN marks the old answer
replaced), FORK_SESSION, and a session's lifetime (lib_session_ttl.lua, SWEEP_SESSION)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from parley.shared.clock import now_ms
from parley.shared.errors import Conflict, InvalidInput, NotFound, TooLarge
from parley.shared.store import keys, memory
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import SessionStore, message_json
from parley.shared.store.turns import Accepted, TurnStore
from parley.shared.store.worker_turns import WorkerTurns
from parley.tools.notes import note_text
from parley.worker.retention import sweep
from tests.unit.test_hardening_scripts import finish, run

T = "acme"
MODEL = "gpt-4o-mini"


def accept(turns: TurnStore, agent: dict[str, Any], session_id: str = "s1", message: str = "hi",
           regenerate: bool = False) -> Accepted:  # fmt: skip
    return turns.accept(tenant=T, agent=agent, session_id=session_id, message=message, images=[],
                        idempotency_key=None, request_hash="h", regenerate=regenerate)  # fmt: skip


def exchange(worker: WorkerTurns, agent: dict[str, Any], question: str, answer: str, *, session_id: str = "s1",
             notes: tuple[str, ...] = (), tool_step: bool = False, regenerate: bool = False) -> str:  # fmt: skip
    """One committed turn (its user message unless a regenerate, an optional tool step, the answer)."""
    job_id = accept(worker.store, agent, session_id, "" if regenerate else question, regenerate).job_id
    attempt = run(worker, job_id)
    if notes:
        worker.store.r.rpush(keys.pending_notes(T, job_id), *notes)
    stored = [] if regenerate else [message_json("user", question, job_id=job_id, created_at=1, tokens=5)]
    if tool_step:
        stored.append(message_json("tool", "tool says", job_id=job_id, created_at=2, tokens=3))
    stored.append(message_json("assistant", answer, job_id=job_id, created_at=2, tokens=7))
    assert finish(worker, job_id, attempt, messages=stored, tokens=sum(json.loads(m)["tokens"] for m in stored))
    return job_id


def contents(sessions: SessionStore, session_id: str = "s1", **options: Any) -> list[str]:
    return [m.content for m in sessions.messages(T, session_id, limit=100, before=None, **options)]


# --- regenerate ------------------------------------------------------------------------------


def test_a_regenerate_marks_the_old_answer_replaced_and_appends_the_new_one(
        worker_turns: WorkerTurns, sessions: SessionStore, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    exchange(worker_turns, chef, "first?", "one")
    exchange(worker_turns, chef, "second?", "two", tool_step=True)
    before = clients.text.hgetall(keys.session(T, "s1"))
    exchange(worker_turns, chef, "", "two again", regenerate=True)

    assert contents(sessions) == ["Hello! What shall we cook?", "first?", "one", "second?", "two again"]
    everything = sessions.messages(T, "s1", limit=100, before=None, include_replaced=True)
    assert [(m.id, m.content, getattr(m, "replaced", None)) for m in everything] == [
        ("msg_0", "Hello! What shall we cook?", None), ("msg_1", "first?", None), ("msg_2", "one", None),
        ("msg_3", "second?", None), ("msg_4", "tool says", True), ("msg_5", "two", True), ("msg_6", "two again", None),
    ]  # fmt: skip
    after = clients.text.hgetall(keys.session(T, "s1"))
    assert after["exchanges"] == before["exchanges"]  # the answer replaced one: still two exchanges
    assert int(after["tokens"]) == int(before["tokens"]) - 3 - 7 + 7
    assert after["replaced"] == "2"
    # The context of the next turn, and the summariser's reads, leave the replaced answer out.
    window = memory.read_window(clients.text, T, "s1", budget_tokens=10_000, model=MODEL)
    assert [m["content"] for m in window.messages] == ["first?", "one", "second?", "two again"]
    # Regenerated again: only the newest answer is replaced this time.
    exchange(worker_turns, chef, "", "two, third take", regenerate=True)
    assert contents(sessions)[-2:] == ["second?", "two, third take"]
    assert clients.text.hget(keys.session(T, "s1"), "replaced") == "3"


def test_the_last_user_message_is_what_a_regenerate_answers(worker_turns: WorkerTurns, sessions: SessionStore,
                                                            chef: dict) -> None:  # fmt: skip
    sessions.create(T, chef, "s1", {})
    assert sessions.last_user_message(T, "s1") is None
    exchange(worker_turns, chef, "first?", "one")
    exchange(worker_turns, chef, "second?", "two")
    index, message = sessions.last_user_message(T, "s1")  # type: ignore[misc]
    assert (index, message["content"]) == (3, "second?")


def test_a_page_of_messages_says_where_older_ones_start_even_when_all_it_read_were_replaced(
        worker_turns: WorkerTurns, sessions: SessionStore, chef: dict) -> None:  # fmt: skip
    exchange(worker_turns, chef, "q?", "a1")
    exchange(worker_turns, chef, "", "a2", regenerate=True)
    page, start = sessions.messages_page(T, "s1", limit=1, before="msg_3")
    assert (page, start) == ([], 2)  # msg_2 was replaced: nothing shown, older ones from msg_2 down
    with pytest.raises(InvalidInput):
        sessions.messages_page(T, "s1", limit=1, before="3")


# --- fork ------------------------------------------------------------------------------------


def test_a_fork_holds_the_messages_images_and_notes_up_to_its_message(
        worker_turns: WorkerTurns, sessions: SessionStore, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    clients.text.rpush(keys.notes(T, "s1"), "a note from before notes kept their place")  # its turn is unknown
    exchange(worker_turns, chef, "first?", "one", notes=("likes basil",))
    exchange(worker_turns, chef, "second?", "two", notes=("hates cumin",))
    clients.text.hset(keys.session_images(T, "s1"), mapping={"img_a": "data:image/png;base64,AA",
                                                             "img_b": "data:image/png;base64,BB"})  # fmt: skip
    # (an image ref on message 1, as a committed user message holds it)
    raw = json.loads(clients.text.lindex(keys.messages(T, "s1"), 1))  # type: ignore[arg-type]
    clients.text.lset(keys.messages(T, "s1"), 1, json.dumps({**raw, "images": ["img_a"]}))

    assert sessions.fork(T, "s1", "msg_2", "f1", chef, 100) == "f1"
    assert contents(sessions, "f1") == ["Hello! What shall we cook?", "first?", "one"]
    assert [note_text(n) for n in clients.text.lrange(keys.notes(T, "f1"), 0, -1)] == ["likes basil"]
    assert clients.text.hgetall(keys.session_images(T, "f1")) == {"img_a": "data:image/png;base64,AA"}
    forked = clients.text.hgetall(keys.session(T, "f1"))
    assert (forked["agent_id"], forked["exchanges"], forked["tokens"]) == ("agent-chef", "1", "12")
    assert "f1" in clients.text.zrange(keys.agent_sessions(T, "agent-chef"), 0, -1)
    # The source is as it was.
    assert contents(sessions) == ["Hello! What shall we cook?", "first?", "one", "second?", "two"]
    # Forked at the second user message: not that turn's note (its answer is not in the fork).
    sessions.fork(T, "s1", "msg_3", "f2", chef, 100)
    assert [note_text(n) for n in clients.text.lrange(keys.notes(T, "f2"), 0, -1)] == ["likes basil"]


def test_a_fork_keeps_the_summary_only_when_it_covers_nothing_past_the_fork(
        worker_turns: WorkerTurns, sessions: SessionStore, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    for n in range(3):
        exchange(worker_turns, chef, f"q{n}?", f"a{n}")
    clients.text.hset(keys.session(T, "s1"), mapping={"summary": "they talked", "summary_upto": 3,
                                                      "summary_tokens": 4})  # fmt: skip
    sessions.fork(T, "s1", "msg_4", "covered", chef, 100)  # messages 0..4: the summary covers 1..2
    kept = clients.text.hgetall(keys.session(T, "covered"))
    assert (kept["summary"], kept["summary_upto"], kept["tokens"]) == ("they talked", "3", "12")
    sessions.fork(T, "s1", "msg_1", "early", chef, 100)  # the summary covers message 2, past the fork
    early = clients.text.hgetall(keys.session(T, "early"))
    assert "summary" not in early and early["tokens"] == "5"


def test_a_fork_refuses_what_it_cannot_copy_and_writes_nothing(worker_turns: WorkerTurns, sessions: SessionStore,
                                                               clients: RedisClients, chef: dict) -> None:  # fmt: skip
    exchange(worker_turns, chef, "q?", "a")
    exchange(worker_turns, chef, "", "a again", regenerate=True)  # msg_2 replaced, msg_3 the new answer
    sessions.create(T, chef, "taken", {})
    before = sorted(clients.text.keys("*"))
    with pytest.raises(NotFound):
        sessions.fork(T, "nope", "msg_0", None, chef, 100)
    with pytest.raises(NotFound):
        sessions.fork(T, "s1", "msg_4", None, chef, 100)
    with pytest.raises(NotFound):
        sessions.fork(T, "s1", "msg_2", None, chef, 100)  # a replaced answer
    with pytest.raises(Conflict):
        sessions.fork(T, "s1", "msg_1", "taken", chef, 100)
    with pytest.raises(TooLarge):
        sessions.fork(T, "s1", "msg_3", None, chef, 3)
    with pytest.raises(InvalidInput):
        sessions.fork(T, "s1", "2", None, chef, 100)
    assert sorted(clients.text.keys("*")) == before
    sessions.fork(T, "s1", "msg_3", "f", chef, 100)
    assert contents(sessions, "f") == ["Hello! What shall we cook?", "q?", "a again"]
    assert len(contents(sessions, "f", include_replaced=True)) == 4


# --- retention -------------------------------------------------------------------------------


def test_a_session_expires_after_its_ttl_unless_a_turn_is_in_its_lane(
        worker_turns: WorkerTurns, sessions: SessionStore, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    agent = {**chef, "session_ttl_s": 120}
    r = clients.text
    member = keys.session_expiry_member(T, agent["id"], "s1")
    sessions.create(T, agent, "s1", {})
    assert 0 < r.pttl(keys.session(T, "s1")) <= 120_000 and 0 < r.pttl(keys.messages(T, "s1")) <= 120_000
    assert abs(r.zscore(keys.session_expiries(), member) - (now_ms() + 120_000)) < 5_000  # type: ignore[operator]
    # A turn in the lane: no TTL while it is there, and the sweeper leaves the session alone even when due.
    job_id = accept(worker_turns.store, agent).job_id
    assert r.pttl(keys.session(T, "s1")) == -1 and r.pttl(keys.messages(T, "s1")) == -1
    later = now_ms() + 1_000_000
    assert asyncio.run(sweep(worker_turns.aio, now=later)) == 0
    assert r.exists(keys.session(T, "s1"))
    attempt = run(worker_turns, job_id)
    worker_turns.store.r.rpush(keys.pending_notes(T, job_id), "a note")
    assert finish(worker_turns, job_id, attempt)
    for key in (keys.session(T, "s1"), keys.messages(T, "s1"), keys.notes(T, "s1")):
        assert 0 < r.pttl(key) <= 120_000, key
    # Past its expiry: everything of it goes, its places in the lists too (its hash would have expired by then).
    asyncio.run(sweep(worker_turns.aio, now=now_ms() + 121_000))
    for key in (keys.session(T, "s1"), keys.messages(T, "s1"), keys.notes(T, "s1")):
        assert not r.exists(key), key
    assert r.zrange(keys.sessions(T), 0, -1) == [] and r.zrange(keys.agent_sessions(T, agent["id"]), 0, -1) == []
    assert r.zcard(keys.session_expiries()) == 0


def test_the_sweeper_spares_a_session_made_again_and_sessions_of_agents_without_ttl(
        worker_turns: WorkerTurns, sessions: SessionStore, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    r = clients.text
    sessions.create(T, {**chef, "session_ttl_s": 60}, "s1", {})
    sessions.delete(T, "s1")
    assert r.zcard(keys.session_expiries()) == 0  # deleted: nothing left to sweep
    sessions.create(T, {**chef, "session_ttl_s": 60}, "s1", {})
    exchange(worker_turns, {**chef, "session_ttl_s": None}, "q?", "a")  # the agent keeps its sessions now
    assert r.pttl(keys.session(T, "s1")) == -1 and r.zcard(keys.session_expiries()) == 0
    sessions.create(T, chef, "kept", {})
    assert asyncio.run(sweep(worker_turns.aio, now=now_ms() + 10**9)) == 0
    assert r.exists(keys.session(T, "s1")) and r.exists(keys.session(T, "kept"))
    # An entry whose session lives on with a later expiry (made again) only loses the entry.
    r.zadd(keys.session_expiries(), {keys.session_expiry_member(T, "agent-chef", "kept"): 1})
    r.hset(keys.session(T, "kept"), "expires_at", now_ms() + 60_000)
    assert asyncio.run(sweep(worker_turns.aio)) == 0
    assert r.exists(keys.session(T, "kept")) and r.zcard(keys.session_expiries()) == 0
    # ... and, made again for another agent, its place in the old agent's list.
    r.zadd(keys.agent_sessions(T, "agent-old"), {"kept": 1})
    r.zadd(keys.session_expiries(), {keys.session_expiry_member(T, "agent-old", "kept"): 1})
    assert asyncio.run(sweep(worker_turns.aio)) == 0
    assert r.zcard(keys.agent_sessions(T, "agent-old")) == 0 and r.exists(keys.session(T, "kept"))
    assert sorted(r.zrange(keys.agent_sessions(T, "agent-chef"), 0, -1)) == ["kept", "s1"]


def test_a_fork_of_an_agent_with_a_ttl_expires_as_its_sessions_do(worker_turns: WorkerTurns,
                                                                   sessions: SessionStore, clients: RedisClients,
                                                                   chef: dict) -> None:  # fmt: skip
    exchange(worker_turns, chef, "q?", "a")
    sessions.fork(T, "s1", "msg_2", "f1", {**chef, "session_ttl_s": 300}, 100)
    assert 0 < clients.text.pttl(keys.messages(T, "f1")) <= 300_000
    assert clients.text.zscore(keys.session_expiries(), keys.session_expiry_member(T, "agent-chef", "f1"))


def test_a_turn_canceled_while_queued_still_pushes_the_expiry(worker_turns: WorkerTurns, sessions: SessionStore,
                                                              clients: RedisClients, chef: dict) -> None:  # fmt: skip
    agent = {**chef, "session_ttl_s": 90}
    job_id = accept(worker_turns.store, agent).job_id
    assert clients.text.pttl(keys.session(T, "s1")) == -1
    assert worker_turns.store.cancel(T, job_id)
    assert 0 < clients.text.pttl(keys.session(T, "s1")) <= 90_000
