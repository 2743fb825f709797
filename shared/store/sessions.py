"""Sessions (conversations) and their messages in Redis.

A session is a hash, listed in two sorted sets (all of the tenant's, and the agent's) by creation
time. Its messages are a list of JSON objects, oldest first; a message's id is `msg_<index>`, so
paging by `before` is one LRANGE, whatever the history's length.

Branches: a regenerated answer marks the old one `replaced` (it keeps its place and id; lists and the model's
context leave it out; the hash's `replaced` counts them); a fork copies a session's messages up to one into a
new session (FORK_SESSION). Retention: the sessions of an agent with `session_ttl_s` expire that long after
their last turn (lib_session_ttl.lua; the worker's sweeper, worker/retention.py, deletes what is left).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import redis

from parley.shared.clock import iso, now_ms
from parley.shared.errors import Conflict, InvalidInput, NotFound, TooLarge
from parley.shared.schema import MessagePublic, SessionPublic
from parley.shared.store import images, keys, memory, scripts
from parley.shared.store.scripts.calls import ForkSessionCall
from parley.shared.tokens import count_message

MESSAGE_ID_PREFIX = "msg_"
MAX_PAGE = 1000
_NUMBER = re.compile(r"[0-9]{1,18}")
"""A cursor's time or a message's index: ASCII digits, small enough for Redis (a signed 64-bit number);
`str.isdigit` would take '²' or '٣', and int() of thousands of digits raises."""


def new_session_id() -> str:
    return f"sess_{uuid.uuid4().hex}"


def message_json(role: str, content: str, *, job_id: str | None, created_at: int, **extra: Any) -> str:
    """One stored message; `extra` holds `images`, `tool_calls` or `name` where they apply."""
    message = {"role": role, "content": content, "created_at": created_at, "job_id": job_id}
    message.update({name: value for name, value in extra.items() if value})
    return json.dumps(message, separators=(",", ":"))


def first_message_json(agent: dict[str, Any], created_at: int) -> str:
    """The agent's opening line as message 0, or '' when the agent has none."""
    text = agent.get("first_message") or ""
    return message_json("assistant", text, job_id=None, created_at=created_at) if text else ""


def _public_message(index: int, message: dict[str, Any]) -> MessagePublic:
    """A stored message as the API shows it (its `images` already resolved to data URIs; its
    `tokens`, the count its context budget used, is bookkeeping and stays inside)."""
    message.pop("tokens", None)
    message["id"] = f"{MESSAGE_ID_PREFIX}{index}"
    message["created_at"] = iso(message["created_at"])
    if isinstance(message.get("feedback"), dict):  # a person's rating of an answer (store/feedback.py)
        message["feedback"] = {**message["feedback"], "updated_at": iso(message["feedback"].get("updated_at"))}
    return MessagePublic.model_validate(message)


class SessionStore:
    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._create = r.register_script(scripts.CREATE_SESSION)
        self._fork = r.register_script(scripts.FORK_SESSION)

    def create(self, tenant: str, agent: dict[str, Any], session_id: str | None, metadata: dict) -> str:
        """Create a session bound to `agent`; 409 when the id is taken."""
        session_id = session_id or new_session_id()
        created = now_ms()
        _, was_created = self._create(
            keys=[keys.session(tenant, session_id), keys.sessions(tenant),
                  keys.agent_sessions(tenant, agent["id"]), keys.messages(tenant, session_id),
                  keys.lane(tenant, session_id), keys.session_expiries()],
            args=[session_id, agent["id"], created, json.dumps(metadata), first_message_json(agent, created),
                  int(agent.get("session_ttl_s") or 0) * 1000,
                  keys.session_expiry_member(tenant, agent["id"], session_id)],
        )  # fmt: skip
        if not int(was_created):
            raise Conflict(f"session {session_id!r} already exists")
        return session_id

    def bound_agent(self, tenant: str, session_id: str) -> str | None:
        """The id of the agent a session is bound to, or None when there is no such session."""
        return self.r.hget(keys.session(tenant, session_id), "agent_id")  # type: ignore[return-value]

    def get(self, tenant: str, session_id: str, agent_names: dict[str, str]) -> SessionPublic:
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.session(tenant, session_id))
            pipe.llen(keys.messages(tenant, session_id))
            pipe.lrange(keys.lane(tenant, session_id), 0, -1)
            raw, count, lane = pipe.execute()
        if not raw:
            raise NotFound(f"session {session_id!r} not found")
        return _public_session(session_id, raw, count, agent_names).model_copy(update={"active_jobs": lane})

    def fork(self, tenant: str, session_id: str, at: str, new_id: str | None, agent: dict[str, Any],
             max_messages: int) -> str:  # fmt: skip
        """A new session of `agent` (the source's) holding the source's messages up to `at` (FORK_SESSION); its id.
        NotFound for an unknown session or message (or a replaced one), Conflict when `new_id` exists, TooLarge
        past `max_messages`."""
        index = _message_index(at, "at")
        new_id = new_id or new_session_id()
        call = ForkSessionCall(
            source=keys.session(tenant, session_id), source_messages=keys.messages(tenant, session_id),
            source_notes=keys.notes(tenant, session_id), source_images=keys.session_images(tenant, session_id),
            session=keys.session(tenant, new_id), sessions=keys.sessions(tenant),
            agent_sessions=keys.agent_sessions(tenant, agent["id"]), messages=keys.messages(tenant, new_id),
            notes=keys.notes(tenant, new_id), session_images=keys.session_images(tenant, new_id),
            lane=keys.lane(tenant, new_id), session_expiries=keys.session_expiries(), session_id=new_id, at=index,
            now_ms=now_ms(), max_messages=max_messages, session_ttl_ms=int(agent.get("session_ttl_s") or 0) * 1000,
            expiry_member=keys.session_expiry_member(tenant, agent["id"], new_id),
        )  # fmt: skip
        outcome, detail = self._fork(keys=call.keys(), args=call.args())
        if outcome == "missing":
            raise NotFound(f"session {session_id!r} not found")
        if outcome == "no_message":
            raise NotFound(f"session {session_id!r} has no message {at!r} (or it was replaced)")
        if outcome == "exists":
            raise Conflict(f"session {new_id!r} already exists")
        if outcome == "too_long":
            raise TooLarge(f"a fork copies at most {detail} messages; fork at an earlier message")
        return new_id

    def last_user_message(self, tenant: str, session_id: str) -> tuple[int, dict[str, Any]] | None:
        """The session's last user message that is not replaced, with its index (what a regenerate answers
        again); None when it has none past its rolling summary. Reads back from the end only that far."""
        messages_key = keys.messages(tenant, session_id)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.llen(messages_key)
            pipe.hmget(keys.session(tenant, session_id), memory.SUMMARY_UPTO_FIELD)
            total, (upto,) = pipe.execute()
        for index, message in memory.backwards(self.r, tenant, session_id, int(total), int(upto or 0)):
            if message.get("role") == "user":
                return index, message
        return None

    def page(self, tenant: str, *, agent_id: str | None, limit: int, cursor: str | None,
             agent_names: dict[str, str]) -> tuple[list[SessionPublic], str | None]:  # fmt: skip
        """Newest first. The cursor is `<created ms>:<session id>` of the last item returned."""
        index_key = keys.agent_sessions(tenant, agent_id) if agent_id else keys.sessions(tenant)
        top: str = "+inf"
        after_id: str | None = None
        if cursor:
            score, sep, after_id = cursor.partition(":")
            if not sep or not _NUMBER.fullmatch(score) or not after_id:
                raise InvalidInput("cursor is not one this API returned", field="cursor")
            top = score
        rows: list[tuple[str, float]] = []
        offset = 0
        while len(rows) < limit + 1:
            batch = self.r.zrevrangebyscore(index_key, top, "-inf", start=offset, num=limit + 1, withscores=True)
            if not batch:
                break
            offset += len(batch)
            for member, score in batch:  # type: ignore[union-attr]
                # Within one ms, ZREVRANGEBYSCORE orders members from high to low: skip up to the cursor.
                if after_id is not None and int(score) == int(top) and member >= after_id:
                    continue
                rows.append((member, score))
        page, more = rows[:limit], len(rows) > limit
        with self.r.pipeline(transaction=False) as pipe:
            for session_id, _ in page:
                pipe.hgetall(keys.session(tenant, session_id))
                pipe.llen(keys.messages(tenant, session_id))
            replies = pipe.execute()
        sessions = [
            _public_session(session_id, replies[2 * i], replies[2 * i + 1], agent_names)
            for i, (session_id, _) in enumerate(page)
            if replies[2 * i]
        ]
        next_cursor = f"{int(page[-1][1])}:{page[-1][0]}" if more and page else None
        return sessions, next_cursor

    def append(self, tenant: str, session_id: str, items: list[tuple[str, str]], model: str) -> list[MessagePublic]:
        """Add messages (role, text) to the session's history without a turn (the Conversations API's items),
        counted in `model`'s tokens as a turn's are. NotFound without the session; Conflict while one of its
        turns is queued, running or waiting (its commit would land between them)."""
        session_key, lane_key, messages_key = (keys.session(tenant, session_id), keys.lane(tenant, session_id),
                                               keys.messages(tenant, session_id))  # fmt: skip
        created = now_ms()
        counted = [(role, text, count_message({"role": role, "content": text}, model)) for role, text in items]
        stored = [message_json(role, text, job_id=None, created_at=created, tokens=n) for role, text, n in counted]
        with self.r.pipeline() as pipe:
            pipe.watch(session_key, lane_key)  # a turn accepted meanwhile makes EXEC fail: Conflict, nothing added
            if not pipe.exists(session_key):
                raise NotFound(f"session {session_id!r} not found")
            if pipe.llen(lane_key):
                raise Conflict(f"session {session_id!r} has a turn in flight: add items once it has ended")
            pipe.multi()
            pipe.rpush(messages_key, *stored)
            pipe.hincrby(session_key, "tokens", sum(n for _, _, n in counted))
            try:
                first = pipe.execute()[0] - len(stored)
            except redis.WatchError:
                raise Conflict(f"session {session_id!r} changed meanwhile: try again") from None
        return [_public_message(first + offset, json.loads(item)) for offset, item in enumerate(stored)]

    def set_metadata(self, tenant: str, session_id: str, metadata: dict[str, Any]) -> None:
        """Replace the session's metadata (checked by the caller's model). NotFound without the session."""
        key = keys.session(tenant, session_id)
        with self.r.pipeline() as pipe:
            pipe.watch(key)
            if not pipe.exists(key):
                raise NotFound(f"session {session_id!r} not found")
            pipe.multi()
            pipe.hset(key, "metadata", json.dumps(metadata))
            pipe.execute()

    def delete(self, tenant: str, session_id: str) -> None:
        agent_id = self.bound_agent(tenant, session_id)
        if agent_id is None:
            raise NotFound(f"session {session_id!r} not found")
        with self.r.pipeline() as pipe:
            pipe.delete(keys.session(tenant, session_id), keys.messages(tenant, session_id),
                        keys.notes(tenant, session_id))
            pipe.zrem(keys.session_expiries(), keys.session_expiry_member(tenant, agent_id, session_id))
            pipe.zrem(keys.sessions(tenant), session_id)
            pipe.zrem(keys.agent_sessions(tenant, agent_id), session_id)
            pipe.delete(keys.session_images(tenant, session_id), keys.summary_lock(tenant, session_id))
            pipe.execute()

    def messages(self, tenant: str, session_id: str, *, limit: int, before: str | None,
                 include_replaced: bool = False) -> list[MessagePublic]:  # fmt: skip
        """Those of the `limit` messages before `before` (or the newest) that are not replaced (all of them with
        `include_replaced`), oldest first."""
        return self.messages_page(tenant, session_id, limit=limit, before=before,
                                  include_replaced=include_replaced)[0]  # fmt: skip

    def messages_page(self, tenant: str, session_id: str, *, limit: int, before: str | None,
                      include_replaced: bool = False) -> tuple[list[MessagePublic], int]:  # fmt: skip
        """`messages`, and the index of the first message of the range read (0: nothing older)."""
        if self.bound_agent(tenant, session_id) is None:
            raise NotFound(f"session {session_id!r} not found")
        key = keys.messages(tenant, session_id)
        if before is None:
            end = int(self.r.llen(key)) - 1  # type: ignore[arg-type]
        else:
            end = _message_index(before, "before") - 1
        start = max(0, end - limit + 1)
        if end < 0:
            return [], 0
        read = [json.loads(item) for item in self.r.lrange(key, start, end)]  # type: ignore[union-attr]
        stored = [(start + offset, message) for offset, message in enumerate(read)
                  if include_replaced or not message.get("replaced")]  # fmt: skip
        found = images.lookup(self.r, tenant, session_id, [ref for _, m in stored for ref in m.get("images") or ()])
        for _, message in stored:
            if message.get("images"):
                message["images"] = images.with_uris(message["images"], found)
        return [_public_message(index, message) for index, message in stored], start


def _message_index(message_id: str, field: str) -> int:
    """The list index a message id (`msg_<n>`) names; 422 for anything else."""
    index = message_id.removeprefix(MESSAGE_ID_PREFIX)
    if not message_id.startswith(MESSAGE_ID_PREFIX) or not _NUMBER.fullmatch(index):
        raise InvalidInput(f"{field} must be a message id such as msg_12", field=field)
    return int(index)


def _public_session(session_id: str, raw: dict[str, str], count: int, agent_names: dict[str, str]) -> SessionPublic:
    return SessionPublic(
        session_id=session_id,
        agent_id=raw["agent_id"],
        agent_name=agent_names.get(raw["agent_id"]),
        created_at=iso(raw["created_at"]) or "",
        metadata=json.loads(raw.get("metadata") or "{}"),
        message_count=int(count),
    )
