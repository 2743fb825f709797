"""`remember` / `recall` keep notes per session in Redis, pending on the job until the turn commits them,
bounded, refused without session memory; deleting the session deletes them."""

from __future__ import annotations

import pytest

from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import SessionStore
from parley.tools import ToolContext, ToolError
from parley.tools.notes import MAX_NOTE_CHARS, MAX_NOTES, recall, remember


def context(clients: RedisClients, settings: Settings, tenant: str = "alice", session_id: str = "s1") -> ToolContext:
    return ToolContext(tenant=tenant, session_id=session_id, job_id="job_1", redis=clients.text, settings=settings)


def test_notes_key_format() -> None:
    assert keys.notes("acme", "s1") == "parley:notes:acme:s1"
    assert keys.notes("alice", "s1") != keys.notes("bob", "s1")


def test_remember_then_recall(clients: RedisClients, settings: Settings) -> None:
    ctx = context(clients, settings)
    assert recall(ctx) == "no notes in this conversation yet"
    assert remember("  Likes basil, hates coriander.  ", ctx) == "noted (1 notes in this conversation)"
    assert remember("Allergic to peanuts", ctx) == "noted (2 notes in this conversation)"
    assert recall(ctx) == "1. Likes basil, hates coriander.\n2. Allergic to peanuts"
    assert recall(ctx, "PEANUTS") == "2. Allergic to peanuts"
    assert recall(ctx, "hates basil") == "1. Likes basil, hates coriander."
    assert recall(ctx, "shellfish") == "no note contains 'shellfish' (2 notes in all)"
    pending = clients.text.lrange(keys.pending_notes("alice", "job_1"), 0, -1)
    assert pending == ["Likes basil, hates coriander.", "Allergic to peanuts"]


def test_notes_wait_on_the_job_until_the_turn_commits_them(clients: RedisClients, settings: Settings) -> None:
    """`remember` writes to the job's pending list, with a lifetime, never to the session's notes."""
    clients.text.rpush(keys.notes("alice", "s1"), "from an earlier turn")
    ctx = context(clients, settings)
    assert remember("from this turn", ctx) == "noted (2 notes in this conversation)"
    assert clients.text.lrange(keys.notes("alice", "s1"), 0, -1) == ["from an earlier turn"]
    pending = keys.pending_notes("alice", "job_1")
    assert clients.text.lrange(pending, 0, -1) == ["from this turn"]
    assert 0 < clients.text.pttl(pending) <= settings.retention_s * 1000
    assert recall(ctx) == "1. from an earlier turn\n2. from this turn"
    other_turn = ToolContext(tenant="alice", session_id="s1", job_id="job_2", redis=clients.text, settings=settings)
    assert recall(other_turn) == "1. from an earlier turn"


def test_a_turn_without_session_memory_has_no_notes(clients: RedisClients, settings: Settings) -> None:
    ctx = ToolContext(tenant="alice", session_id="s1", job_id="job_1", redis=clients.text, settings=settings,
                      memory=False)  # fmt: skip
    with pytest.raises(ToolError, match="no memory between turns"):
        remember("anything", ctx)
    with pytest.raises(ToolError, match="no memory between turns"):
        recall(ctx)
    assert clients.text.keys("*") == []


def test_notes_belong_to_one_session_of_one_tenant(clients: RedisClients, settings: Settings) -> None:
    clients.text.rpush(keys.notes("alice", "s1"), "secret of alice")
    assert recall(context(clients, settings)) == "1. secret of alice"
    assert recall(context(clients, settings, session_id="s2")) == "no notes in this conversation yet"
    assert recall(context(clients, settings, tenant="bob")) == "no notes in this conversation yet"


def test_notes_are_bounded_in_size_and_count(clients: RedisClients, settings: Settings) -> None:
    ctx = context(clients, settings)
    with pytest.raises(ToolError, match="the note is empty"):
        remember("   ", ctx)
    with pytest.raises(ToolError, match=f"at most {MAX_NOTE_CHARS} characters and this one has {MAX_NOTE_CHARS + 1}"):
        remember("x" * (MAX_NOTE_CHARS + 1), ctx)
    clients.text.rpush(keys.notes("alice", "s1"), *(f"kept {number}" for number in range(1, MAX_NOTES + 1)))
    assert remember("one more", ctx) == f"noted; the oldest note will be dropped when this turn ends " \
                                         f"({MAX_NOTES} notes are kept)"  # fmt: skip
    listed = recall(ctx).splitlines()
    assert len(listed) == MAX_NOTES and listed[0] == "1. kept 2" and listed[-1] == f"{MAX_NOTES}. one more"
    for number in range(1, MAX_NOTES + 1):
        remember(f"note {number}", ctx)
    pending = clients.text.lrange(keys.pending_notes("alice", "job_1"), 0, -1)
    assert len(pending) == MAX_NOTES and pending[0] == "note 1" and pending[-1] == f"note {MAX_NOTES}"


def test_deleting_the_session_deletes_its_notes(clients: RedisClients, settings: Settings,
                                                sessions: SessionStore) -> None:  # fmt: skip
    session_id = sessions.create("alice", {"id": "agent-1", "first_message": ""}, "s1", {})
    clients.text.rpush(keys.notes("alice", session_id), "to be forgotten")  # as a finished turn commits it
    clients.text.rpush(keys.notes("alice", "other"), "kept elsewhere")
    sessions.delete("alice", session_id)
    assert not clients.text.exists(keys.notes("alice", session_id))
    assert clients.text.exists(keys.notes("alice", "other"))
