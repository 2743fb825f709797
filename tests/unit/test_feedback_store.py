"""SET_FEEDBACK and the feedback store on fakeredis's Lua: the message keeps every other field as stored, a
message changed between the read and the write is read again (never overwritten), a second run of the same
call writes nothing, and the listing drops entries whose message no longer carries that feedback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from parley.shared.errors import InvalidInput, NotFound
from parley.shared.store import feedback as feedback_store
from parley.shared.store import keys, scripts
from parley.shared.store.connection import RedisClients
from parley.shared.store.feedback import FeedbackStore, member
from parley.shared.store.scripts.calls import SetFeedbackCall
from parley.shared.store.sessions import SessionStore, message_json

T = "acme"
CHEF = {"id": "agent-1", "name": "Chef", "first_message": "Hello, I am your chef."}


@pytest.fixture
def store(clients: RedisClients, sessions: SessionStore) -> FeedbackStore:
    sessions.create(T, CHEF, "s1", {})
    answer = message_json("assistant", "Pesto 🌿", job_id="job_1", created_at=1_700_000_000_123, tokens=7,
                          tool_calls=[{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}])
    clients.text.rpush(keys.messages(T, "s1"), message_json("user", "basil?", job_id="job_1", created_at=1), answer)
    return FeedbackStore(clients.text)


def stored(clients: RedisClients, index: int) -> dict[str, Any]:
    return json.loads(clients.text.lindex(keys.messages(T, "s1"), index) or "null")


def test_a_rating_keeps_every_other_field_and_is_indexed(store: FeedbackStore, clients: RedisClients) -> None:
    before = stored(clients, 2)
    rated = store.set(T, "s1", "msg_2", "up", "nice")
    after = stored(clients, 2)
    assert {k: v for k, v in after.items() if k != "feedback"} == before
    assert after["feedback"]["rating"] == "up" and after["feedback"]["comment"] == "nice"
    assert rated.counted == "up" and rated.message.feedback is not None
    assert rated.message.feedback.updated_at.endswith("Z")
    score = clients.text.zscore(keys.feedback(T), member("s1", 2))
    assert score == after["feedback"]["updated_at"]
    assert clients.text.zscore(keys.agent_feedback(T, "agent-1"), member("s1", 2)) == score
    assert store.set(T, "s1", "msg_2", "up", "nice").counted is None  # the same again: nothing new
    assert stored(clients, 2) == after
    assert store.set(T, "s1", "msg_2", "down", None).counted == "down"
    cleared = store.set(T, "s1", "msg_2", None, None)
    assert cleared.counted is None and cleared.message.feedback is None
    assert stored(clients, 2) == before
    assert clients.text.zcard(keys.feedback(T)) == clients.text.zcard(keys.agent_feedback(T, "agent-1")) == 0


def test_refusals_change_nothing(store: FeedbackStore, clients: RedisClients) -> None:
    with pytest.raises(InvalidInput):
        store.set(T, "s1", "msg_1", "up", None)  # the user's message
    for message_id in ("msg_3", "2", "msg_-1", "msg_" + "9" * 30, "msg_²"):
        with pytest.raises(NotFound):
            store.set(T, "s1", message_id, "up", None)
    with pytest.raises(NotFound):
        store.set(T, "s2", "msg_0", "up", None)
    with pytest.raises(NotFound):
        store.set("other", "s1", "msg_2", "up", None)
    assert "feedback" not in stored(clients, 2) and clients.text.zcard(keys.feedback(T)) == 0


def test_a_message_changed_meanwhile_is_read_again_and_a_second_run_writes_nothing(
        store: FeedbackStore, clients: RedisClients) -> None:  # fmt: skip
    script = clients.text.register_script(scripts.SET_FEEDBACK)
    raw = clients.text.lindex(keys.messages(T, "s1"), 2)
    assert raw is not None
    replacement = json.dumps({**json.loads(raw), "feedback": {"rating": "up", "comment": None, "updated_at": 5}})
    call = SetFeedbackCall(session=keys.session(T, "s1"), messages=keys.messages(T, "s1"), feedback=keys.feedback(T),
                           agent_feedback=keys.agent_feedback(T, "agent-1"), agent_id="agent-1", index=2,
                           expected=raw, replacement=replacement, member=member("s1", 2), rated_ms=5)  # fmt: skip
    assert script(keys=call.keys(), args=call.args()) == "stored"
    assert script(keys=call.keys(), args=call.args()) == "changed"  # a lost reply's retry
    assert clients.text.lindex(keys.messages(T, "s1"), 2) == replacement
    wrong_agent = SetFeedbackCall(**{**call.__dict__, "agent_id": "agent-2"})
    assert script(keys=wrong_agent.keys(), args=wrong_agent.args()) == "missing"

    # Another writer (a turn marking the answer replaced, say) changes it between the store's read and write.
    real = store._set

    def racing(keys: list[str], args: list[Any]) -> Any:
        if racing.first:  # type: ignore[attr-defined]
            racing.first = False  # type: ignore[attr-defined]
            message = json.loads(clients.text.lindex(keys[1], 2) or "{}")
            clients.text.lset(keys[1], 2, json.dumps({**message, "replaced": True}))
        return real(keys=keys, args=args)

    racing.first = True  # type: ignore[attr-defined]
    store._set = racing  # type: ignore[method-assign]
    rated = store.set(T, "s1", "msg_2", "down", "late")
    assert rated.counted == "down"
    after = stored(clients, 2)
    assert after["replaced"] is True and after["feedback"]["rating"] == "down"  # neither write lost


def test_the_listing_drops_entries_whose_message_lost_that_feedback(
        store: FeedbackStore, clients: RedisClients, sessions: SessionStore,
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    clock = iter(range(1_000, 2_000))  # two ratings in one millisecond have no order: "newest first" needs two
    monkeypatch.setattr(feedback_store, "now_ms", lambda: next(clock))
    store.set(T, "s1", "msg_2", "up", None)
    store.set(T, "s1", "msg_0", "down", None)
    items, cursor = store.page(T, agent_id=None, since_ms=None, limit=10, cursor=None)
    assert [(i.message_id, i.rating) for i in items] == [("msg_0", "down"), ("msg_2", "up")] and cursor is None
    assert items[1].content == "Pesto 🌿" and items[1].agent_id == "agent-1"
    sessions.delete(T, "s1")
    sessions.create(T, CHEF, "s1", {})  # the same id again: its msg_0 carries no feedback
    assert store.page(T, agent_id="agent-1", since_ms=None, limit=10, cursor=None) == ([], None)
    assert store.page(T, agent_id=None, since_ms=None, limit=10, cursor=None) == ([], None)
    assert clients.text.zcard(keys.feedback(T)) == clients.text.zcard(keys.agent_feedback(T, "agent-1")) == 0
    with pytest.raises(InvalidInput):
        store.page(T, agent_id=None, since_ms=None, limit=10, cursor="nonsense")
