"""`remember` / `recall`: notes an agent keeps for itself in one session, in Redis.

A note is committed with the turn that wrote it: `remember` puts it on the job's pending list
(`keys.pending_notes`, expiring after PARLEY_RETENTION_S), and FINISH_TURN moves the pending notes
onto the session's (`keys.notes`) when the turn finishes; a canceled or failed turn's notes
vanish with it. `recall` lists the session's notes and then the running turn's own. The notes
live beside the session's messages and go when the session is deleted. A session keeps at most
`MAX_NOTES` (the oldest go first), each at most `MAX_NOTE_CHARS` long. A turn without session
memory (a `/v1/chat/completions` call that brings its own history) has no notes: both tools
refuse, telling the model so.
"""

from __future__ import annotations

import json

from parley.shared.store import keys
from parley.tools.context import ToolContext, ToolError
from parley.tools.registry import tool

MAX_NOTES = 100
MAX_NOTE_CHARS = 2_000
NO_MEMORY = ("this conversation has no memory between turns (the caller sends the whole history each time), "
             "so there are no notes: keep what matters in your answer instead")  # fmt: skip


def note_text(stored: str | bytes) -> str:
    """A committed note's text: FINISH_TURN stores it as JSON `{"text", "upto"}` (upto: the session's message
    count once its turn committed, which a fork reads); a note stored before that is its text as it is."""
    raw = stored.decode() if isinstance(stored, bytes) else str(stored)
    if raw.startswith("{"):
        try:
            note = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(note, dict) and isinstance(note.get("text"), str) and isinstance(note.get("upto"), int):
            return note["text"]
    return raw


@tool(timeout_s=5)
def remember(note: str, ctx: ToolContext) -> str:
    """Save a short note for later in this conversation (facts, preferences, decisions); `recall` lists them.

    Args:
        note: the text to keep, at most 2000 characters.
    """
    if not ctx.memory:
        raise ToolError(NO_MEMORY)
    text = note.strip()
    if not text:
        raise ToolError("the note is empty")
    if len(text) > MAX_NOTE_CHARS:
        raise ToolError(f"a note holds at most {MAX_NOTE_CHARS} characters and this one has {len(text)}: shorten it")
    pending = keys.pending_notes(ctx.tenant, ctx.job_id)
    with ctx.redis.pipeline() as pipe:  # MULTI: the push, the trim and the lifetime together
        pipe.rpush(pending, text)
        pipe.ltrim(pending, -MAX_NOTES, -1)
        pipe.pexpire(pending, ctx.settings.retention_s * 1000)
        pipe.llen(keys.notes(ctx.tenant, ctx.session_id))
        pushed, _, _, kept = pipe.execute()
    total = int(pushed) + int(kept)
    if total > MAX_NOTES:
        return f"noted; the oldest note will be dropped when this turn ends ({MAX_NOTES} notes are kept)"
    return f"noted ({total} notes in this conversation)"


@tool(timeout_s=5)
def recall(ctx: ToolContext, query: str = "") -> str:
    """List the notes saved with `remember` in this conversation, oldest first (or those matching a query).

    Args:
        query: words a note must contain (any case); empty lists every note.
    """
    if not ctx.memory:
        raise ToolError(NO_MEMORY)
    with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.notes(ctx.tenant, ctx.session_id), 0, -1)
        pipe.lrange(keys.pending_notes(ctx.tenant, ctx.job_id), 0, -1)
        kept, pending = pipe.execute()
    notes = [note_text(item) for item in kept] + [item.decode() if isinstance(item, bytes) else str(item)
                                                   for item in pending]  # fmt: skip
    notes = notes[-MAX_NOTES:]  # what the session will keep once this turn's notes are committed
    if not notes:
        return "no notes in this conversation yet"
    words = query.lower().split()
    found = [(number, note) for number, note in enumerate(notes, 1) if all(word in note.lower() for word in words)]
    if not found:
        return f"no note contains {query!r} ({len(notes)} notes in all)"
    return "\n".join(f"{number}. {note}" for number, note in found)
