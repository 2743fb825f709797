"""What the protocol adapters (issue 15) ask of the stores and the turn beyond /api/v1/chat: a turn's own
instructions and response shape, forgetting an ended turn, items added to a session without a turn."""

from __future__ import annotations

import json

import pytest

from parley.shared.errors import Conflict, NotFound
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import SessionStore
from parley.shared.store.turns import TurnStore
from parley.shared.store.worker_turns import WorkerTurns
from parley.worker.turn.run import for_this_turn

from .test_turn_scripts import T, accept, event_list, finish_ok, start, take_from_queue


def test_a_turns_own_instructions_follow_the_agents_and_its_shape_replaces_the_agents() -> None:
    agent = {"name": "Chef", "instructions": "Keep it short.", "response_shape": {"answer": "string"}}
    record = {"instructions": "Answer in French.", "response_shape": json.dumps({"type": "object"})}
    turn = for_this_turn(agent, record)
    assert turn["instructions"] == "Keep it short.\n\nAnswer in French."
    assert turn["response_shape"] == {"type": "object"}
    assert for_this_turn(agent, {}) == agent
    assert for_this_turn({"name": "Bare"}, {"instructions": "Be brief."})["instructions"] == "Be brief."


def test_accept_keeps_a_turns_own_instructions_and_shape(turns: TurnStore, chef: dict) -> None:
    job_id = turns.accept(tenant=T, agent=chef, session_id="s1", message="hi", images=[], idempotency_key=None,
                          request_hash="h", instructions="Be brief.",
                          response_shape={"type": "object"}).job_id  # fmt: skip
    record = turns.job(T, job_id) or {}
    assert record["instructions"] == "Be brief." and json.loads(record["response_shape"]) == {"type": "object"}
    assert "instructions" not in (turns.job(T, accept(turns, chef, "s2").job_id) or {})


def test_forget_deletes_an_ended_turn_only(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                           chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef).job_id
    with pytest.raises(Conflict):
        turns.forget(T, job_id)
    take_from_queue(turns, job_id)
    _, attempt, _ = start(worker_turns, job_id)
    assert finish_ok(worker_turns, job_id, attempt)
    assert event_list(clients, job_id)
    turns.forget(T, job_id)
    assert turns.job(T, job_id) is None and event_list(clients, job_id) == []
    assert clients.text.llen(keys.messages(T, "s1")) == 3  # what it committed stays in the session
    with pytest.raises(NotFound):
        turns.forget(T, job_id)


def test_items_are_appended_to_an_idle_session_only(turns: TurnStore, sessions: SessionStore,
                                                    clients: RedisClients, chef: dict) -> None:  # fmt: skip
    sessions.create(T, chef, "s1", {})
    added = sessions.append(T, "s1", [("user", "I like basil."), ("assistant", "Noted.")], "gpt-4o")
    assert [(m.id, m.role, m.content) for m in added] == [("msg_1", "user", "I like basil."),
                                                          ("msg_2", "assistant", "Noted.")]  # fmt: skip
    assert int(clients.text.hget(keys.session(T, "s1"), "tokens") or 0) > 0
    accept(turns, chef, "s1")
    with pytest.raises(Conflict):
        sessions.append(T, "s1", [("user", "more")], "gpt-4o")
    with pytest.raises(NotFound):
        sessions.append(T, "nope", [("user", "x")], "gpt-4o")
    sessions.set_metadata(T, "s1", {"topic": "basil"})
    assert json.loads(clients.text.hget(keys.session(T, "s1"), "metadata") or "{}") == {"topic": "basil"}


