"""The `prompt_cache_key` of the model calls a task makes: the session's, so a provider routes every call of one
conversation to the machine whose prompt cache holds its prefix (OpenAI's Chat Completions takes it).

A context variable rather than an argument: the turn sets it once (worker/turn/run.py) and every model step of
that turn (worker/turn/loop.py) sends it, without each layer in between passing it on. Each RQ job runs as its
own asyncio task (worker/engine.py), with its own copy of the context, so one job's key never reaches another's
calls; a summary job sets none (its prompt is not the conversation's).
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

MAX_KEY_CHARS = 64
"""The longest key OpenAI takes; a longer session id (a client may choose its own) is sent as its SHA-256."""

PROMPT_CACHE_KEY: ContextVar[str | None] = ContextVar("parley_prompt_cache_key", default=None)


def key_for(session_id: str) -> str:
    """The session's prompt cache key: its id, or its id's SHA-256 (hex, 64 characters) when that is too long."""
    if len(session_id) <= MAX_KEY_CHARS:
        return session_id
    return hashlib.sha256(session_id.encode()).hexdigest()


def use_session(session_id: str | None) -> None:
    """The model calls of the running task (a turn) carry this session's key from now on."""
    PROMPT_CACHE_KEY.set(key_for(session_id) if session_id else None)
