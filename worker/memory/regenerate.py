"""A regenerate turn (`"regenerate": true`): it answers the session's last user message again.

It queued like any turn, so it runs after the turns accepted before it and answers the last user message as it is
when it starts: that message becomes the turn's own (its text and images), and its context is the history before
it. FINISH_TURN then marks the old answer replaced and appends the new one (shared/store/scripts/lib_replace.lua).
"""

from __future__ import annotations

import json

from parley.shared.store import images as session_images

from ..runtime import Runtime

NOTHING_TO_REGENERATE = "the session has no user message to answer again"


def as_regenerated(rt: Runtime, tenant: str, record: dict[str, str]) -> dict[str, str] | None:
    """The job record as the turn runs it: `message` and `images` (data URIs) the last user message's,
    `regenerate_at` its index (the context ends before it); None when the session has no user message.
    Blocking: the worker runs it in its pool."""
    found = rt.sessions.last_user_message(tenant, record["session_id"])
    if found is None:
        return None
    index, message = found
    refs = message.get("images") or []
    uris = session_images.with_uris(refs, session_images.lookup(rt.clients.text, tenant, record["session_id"], refs))
    return {**record, "message": message.get("content") or "", "images": json.dumps(uris),
            "regenerate_at": str(index)}  # fmt: skip
