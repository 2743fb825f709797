"""`remember` / `recall` keep notes per session in Redis, bounded, and deleting the session deletes them."""

from __future__ import annotations

import pytest

from parley.shared import keys
from parley.shared.redis_client import RedisClients
from parley.shared.sessions import SessionStore
from parley.shared.settings import Settings
from parley.shared.tools import ToolContext, ToolError
from parley.shared.tools.notes import MAX_NOTE_CHARS, MAX_NOTES, recall, remember


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
    stored = clients.text.lrange("parley:notes:alice:s1", 0, -1)
    assert stored == ["Likes basil, hates coriander.", "Allergic to peanuts"]


def test_notes_belong_to_one_session_of_one_tenant(clients: RedisClients, settings: Settings) -> None:
    remember("secret of alice", context(clients, settings))
    assert recall(context(clients, settings, session_id="s2")) == "no notes in this conversation yet"
    assert recall(context(clients, settings, tenant="bob")) == "no notes in this conversation yet"


def test_notes_are_bounded_in_size_and_count(clients: RedisClients, settings: Settings) -> None:
    ctx = context(clients, settings)
    with pytest.raises(ToolError, match="the note is empty"):
        remember("   ", ctx)
    with pytest.raises(ToolError, match=f"at most {MAX_NOTE_CHARS} characters and this one has {MAX_NOTE_CHARS + 1}"):
        remember("x" * (MAX_NOTE_CHARS + 1), ctx)
    for number in range(1, MAX_NOTES + 1):
        remember(f"note {number}", ctx)
    assert remember("one more", ctx) == f"noted; the oldest note was dropped ({MAX_NOTES} notes are kept)"
    kept = clients.text.lrange(keys.notes("alice", "s1"), 0, -1)
    assert len(kept) == MAX_NOTES and kept[0] == "note 2" and kept[-1] == "one more"


def test_deleting_the_session_deletes_its_notes(clients: RedisClients, settings: Settings,
                                                sessions: SessionStore) -> None:  # fmt: skip
    session_id = sessions.create("alice", {"id": "agent-1", "first_message": ""}, "s1", {})
    remember("to be forgotten", context(clients, settings, session_id=session_id))
    remember("kept elsewhere", context(clients, settings, session_id="other"))
    sessions.delete("alice", session_id)
    assert not clients.text.exists(keys.notes("alice", session_id))
    assert clients.text.exists(keys.notes("alice", "other"))
