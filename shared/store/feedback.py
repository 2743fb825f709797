"""Feedback on an agent's answers: a person's rating (`up` or `down`) and comment on one assistant message.

Where it lives: on the message itself (its JSON in the session's messages list gains
`feedback: {rating, comment, updated_at}`), so every reader of the history sees it, and in two sorted sets
scored by the time of rating (the tenant's, `keys.feedback`, and the session's agent's, `keys.agent_feedback`)
for `GET /api/v1/feedback`. Both change in one SET_FEEDBACK step, a compare-and-set on the message: this
module reads the message, builds the new JSON with Python's json (every other field kept as stored), and the
script stores it only if the message is still the one read, else this module reads again.

An index entry outlives its message when the session is deleted (or deleted and made again): the listing
checks each entry against the message (it must carry feedback rated at the entry's time) and drops the ones
that do not match, so a page may hold fewer than `limit` items while `next_cursor` says there are more.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import redis

from parley.shared.clock import iso, now_ms
from parley.shared.errors import Conflict, InvalidInput, NotFound
from parley.shared.schema import FeedbackItem, MessagePublic
from parley.shared.store import keys, scripts
from parley.shared.store.scripts.calls import SetFeedbackCall
from parley.shared.store.sessions import MESSAGE_ID_PREFIX, SessionStore

CONTENT_CHARS = 1000
"""How much of the rated answer the listing shows (characters; the whole message is in the session)."""
SET_TRIES = 5
"""Compare-and-set attempts before giving up with 409 (only a message rewritten that often fails them all)."""
MAX_PAGE = 100
_NUMBER = re.compile(r"[0-9]{1,18}")
"""A message's position or a cursor's time: ASCII digits, small enough for Redis (see sessions.py)."""


@dataclass(frozen=True)
class Rated:
    """What `FeedbackStore.set` did: the message as the API now shows it, and whether a rating was given."""

    message: MessagePublic
    agent_id: str
    counted: str | None
    """The rating newly given or changed to (`up`, `down`), for the metric; None when none was (cleared, or
    the same rating again)."""


def message_index(message_id: str) -> int:
    """The list position of `msg_<n>`; NotFound for anything else (no message has that id)."""
    index = message_id.removeprefix(MESSAGE_ID_PREFIX)
    if not message_id.startswith(MESSAGE_ID_PREFIX) or not _NUMBER.fullmatch(index):
        raise NotFound(f"message {message_id!r} not found")
    return int(index)


def member(session_id: str, index: int) -> str:
    """An index entry: the session id (no spaces in one, so the last space splits) and the message's position."""
    return f"{session_id} {index}"


class FeedbackStore:
    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._set = r.register_script(scripts.SET_FEEDBACK)
        self._sessions = SessionStore(r)

    def set(self, tenant: str, session_id: str, message_id: str, rating: str | None,
            comment: str | None) -> Rated:  # fmt: skip
        """Give (rating `up`/`down`, with an optional comment: checked by the caller's model, schema.FeedbackSet)
        or clear (rating None) the feedback on one of the agent's answers. NotFound for an unknown session or
        message; InvalidInput for a message that is not the agent's; Conflict when the message kept changing
        under SET_TRIES attempts."""
        index = message_index(message_id)
        session_key, messages_key = keys.session(tenant, session_id), keys.messages(tenant, session_id)
        for _ in range(SET_TRIES):
            with self.r.pipeline(transaction=False) as pipe:
                pipe.hget(session_key, "agent_id")
                pipe.lindex(messages_key, index)
                agent_id, raw = pipe.execute()
            if agent_id is None:
                raise NotFound(f"session {session_id!r} not found")
            if raw is None:
                raise NotFound(f"message {message_id!r} not found")
            message = json.loads(raw)
            if message.get("role") != "assistant":
                raise InvalidInput("only the agent's answers (assistant messages) take feedback", field="message_id")
            old = message.get("feedback") if isinstance(message.get("feedback"), dict) else None
            if rating is None:
                if old is None:
                    return self._rated(tenant, session_id, index, agent_id, None)
                message.pop("feedback")
                rated_ms: int | str = ""
            else:
                if old is not None and old.get("rating") == rating and old.get("comment") == comment:
                    return self._rated(tenant, session_id, index, agent_id, None)
                rated_ms = now_ms()
                message["feedback"] = {"rating": rating, "comment": comment, "updated_at": rated_ms}
            call = SetFeedbackCall(
                session=session_key, messages=messages_key, feedback=keys.feedback(tenant),
                agent_feedback=keys.agent_feedback(tenant, agent_id), agent_id=agent_id, index=index,
                expected=raw, replacement=json.dumps(message, separators=(",", ":")),
                member=member(session_id, index), rated_ms=rated_ms,
            )  # fmt: skip
            outcome = self._set(keys=call.keys(), args=call.args())
            if outcome == "stored":
                changed = rating if rating is not None and (old or {}).get("rating") != rating else None
                return self._rated(tenant, session_id, index, agent_id, changed)
            if outcome == "missing":
                raise NotFound(f"session {session_id!r} not found")
        raise Conflict(f"message {message_id!r} kept changing while its feedback was stored: try again")

    def _rated(self, tenant: str, session_id: str, index: int, agent_id: str, counted: str | None) -> Rated:
        """The message as `GET .../messages` shows it now (its images resolved, as there)."""
        shown = self._sessions.messages(tenant, session_id, limit=1, before=f"{MESSAGE_ID_PREFIX}{index + 1}",
                                        include_replaced=True)  # a replaced answer keeps its rating  # fmt: skip
        if not shown:
            raise NotFound(f"session {session_id!r} not found")  # deleted meanwhile
        return Rated(message=shown[0], agent_id=agent_id, counted=counted)

    def page(self, tenant: str, *, agent_id: str | None, since_ms: int | None, limit: int,
             cursor: str | None) -> tuple[list[FeedbackItem], str | None]:  # fmt: skip
        """Feedback newest first (by the time it was given), rated at or after `since_ms`; the cursor is
        `<rated ms>:<entry>` of the last entry read."""
        index_key = keys.agent_feedback(tenant, agent_id) if agent_id else keys.feedback(tenant)
        top, after = "+inf", None
        if cursor:
            score, sep, after = cursor.partition(":")
            if not sep or not _NUMBER.fullmatch(score) or not after:
                raise InvalidInput("cursor is not one this API returned", field="cursor")
            top = score
        bottom = str(since_ms) if since_ms is not None else "-inf"
        rows: list[tuple[str, float]] = []
        offset = 0
        while len(rows) < limit + 1:
            batch = self.r.zrevrangebyscore(index_key, top, bottom, start=offset, num=limit + 1, withscores=True)
            if not batch:
                break
            offset += len(batch)
            for entry, score in batch:  # type: ignore[union-attr]
                # Within one ms, ZREVRANGEBYSCORE orders members from high to low: skip up to the cursor.
                if after is not None and int(score) == int(top) and entry >= after:
                    continue
                rows.append((entry, score))
        chosen, more = rows[:limit], len(rows) > limit
        items = self._items(tenant, index_key, chosen)
        next_cursor = f"{int(chosen[-1][1])}:{chosen[-1][0]}" if more and chosen else None
        return items, next_cursor

    def _items(self, tenant: str, index_key: str, rows: list[tuple[str, float]]) -> list[FeedbackItem]:
        """The entries as items; entries whose message no longer carries that feedback leave the index."""
        places = [(entry, entry.rpartition(" ")) for entry, _ in rows]
        with self.r.pipeline(transaction=False) as pipe:
            for _, (session_id, _, index) in places:
                pipe.hget(keys.session(tenant, session_id), "agent_id")
                pipe.lindex(keys.messages(tenant, session_id), int(index) if index.isdigit() else -1)
            replies = pipe.execute()
        items, stale = [], []
        for position, ((entry, (session_id, _, index)), (_, score)) in enumerate(zip(places, rows, strict=True)):
            agent_id, raw = replies[2 * position], replies[2 * position + 1]
            message = _decoded(raw) or {}
            feedback = message.get("feedback")
            if (agent_id is None or not isinstance(feedback, dict) or feedback.get("updated_at") != int(score)
                    or not index.isdigit()):  # fmt: skip
                stale.append(entry)
                continue
            content = message["content"] if isinstance(message.get("content"), str) else ""
            items.append(FeedbackItem(
                session_id=session_id, message_id=f"{MESSAGE_ID_PREFIX}{index}", agent_id=agent_id,
                rating=feedback.get("rating"), comment=feedback.get("comment"),
                updated_at=iso(feedback["updated_at"]) or "", content=content[:CONTENT_CHARS],
            ))  # fmt: skip
        if stale:
            self.r.zrem(index_key, *stale)
        return items


def _decoded(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
