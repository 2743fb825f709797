"""The `prompt_cache_key` of the model calls a task makes: the session's, so a provider routes every call of one
conversation to the machine whose prompt cache holds its prefix (OpenAI's Chat Completions takes it). The key is
a hash: the provider learns neither the tenant nor the session id.

A context variable rather than an argument: the turn sets it once (worker/turn/run.py) and every model step of
that turn (worker/turn/loop.py) sends it, without each layer in between passing it on. Each RQ job runs as its
own asyncio task (worker/engine.py), with its own copy of the context, so one job's key never reaches another's
calls; a summary job sets none (its prompt is not the conversation's).
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

KEY_HEX_CHARS = 32
"""The key: 128 bits of a SHA-256, as hex (OpenAI takes up to 64 characters)."""

PROMPT_CACHE_KEY: ContextVar[str | None] = ContextVar("parley_prompt_cache_key", default=None)


def key_for(tenant: str, session_id: str) -> str:
    """The session's prompt cache key: a hash of its tenant and id. The tenant keeps two tenants' sessions of the
    same id (clients choose ids: `default`, a user's email) from sharing a key, and the hash keeps both names from
    the provider."""
    return hashlib.sha256(f"{len(tenant)}:{tenant}:{session_id}".encode()).hexdigest()[:KEY_HEX_CHARS]


def use_session(tenant: str, session_id: str | None) -> None:
    """The model calls of the running task (a turn) carry this session's key from now on."""
    PROMPT_CACHE_KEY.set(key_for(tenant, session_id) if session_id else None)
