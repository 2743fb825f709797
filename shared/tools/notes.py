"""`remember` / `recall`: notes an agent keeps for itself in one session, in Redis (`keys.notes`).

The notes live beside the session's messages and go when the session is deleted. A session keeps
at most `MAX_NOTES` (the oldest go first), each at most `MAX_NOTE_CHARS` long.
"""

from __future__ import annotations

from .. import keys
from .context import ToolContext, ToolError
from .registry import tool

MAX_NOTES = 100
MAX_NOTE_CHARS = 2_000


@tool(timeout_s=5)
def remember(note: str, ctx: ToolContext) -> str:
    """Save a short note for later in this conversation (facts, preferences, decisions); `recall` lists them.

    Args:
        note: the text to keep, at most 2000 characters.
    """
    text = note.strip()
    if not text:
        raise ToolError("the note is empty")
    if len(text) > MAX_NOTE_CHARS:
        raise ToolError(f"a note holds at most {MAX_NOTE_CHARS} characters and this one has {len(text)}: shorten it")
    key = keys.notes(ctx.tenant, ctx.session_id)
    with ctx.redis.pipeline() as pipe:  # MULTI: the push and the trim together
        pipe.rpush(key, text)
        pipe.ltrim(key, -MAX_NOTES, -1)
        pushed, _ = pipe.execute()
    if int(pushed) > MAX_NOTES:
        return f"noted; the oldest note was dropped ({MAX_NOTES} notes are kept)"
    return f"noted ({pushed} notes in this conversation)"


@tool(timeout_s=5)
def recall(ctx: ToolContext, query: str = "") -> str:
    """List the notes saved with `remember` in this conversation, oldest first (or those matching a query).

    Args:
        query: words a note must contain (any case); empty lists every note.
    """
    stored = ctx.redis.lrange(keys.notes(ctx.tenant, ctx.session_id), 0, -1)
    notes = [item.decode() if isinstance(item, bytes) else str(item) for item in stored]  # type: ignore[union-attr]
    if not notes:
        return "no notes in this conversation yet"
    words = query.lower().split()
    found = [(number, note) for number, note in enumerate(notes, 1) if all(word in note.lower() for word in words)]
    if not found:
        return f"no note contains {query!r} ({len(notes)} notes in all)"
    return "\n".join(f"{number}. {note}" for number, note in found)
