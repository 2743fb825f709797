"""Feedback on agents' answers on the real stack: `PUT .../messages/{id}/feedback` sets, changes and clears a
rating that the message then carries, `GET /api/v1/feedback` lists it (by agent, since a time, a page at a time,
one tenant's only), hostile bodies get clear JSON errors and change nothing, and `/metrics` counts the ratings
(by agent only when the operator asked for agent labels)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.integration.helpers import client, create_agent, messages
from tests.integration.test_metrics import eventually, scrape, value

MODEL = "test-model"


def feedback_url(session_id: str, message_id: str) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{message_id}/feedback"


def answered_session(http: httpx.Client, session_id: str, agent: str) -> list[dict[str, Any]]:
    """A session of `agent` with one turn: msg_0 the first message, msg_1 the user's, msg_2 the answer."""
    answer = http.post("/api/v1/chat", json={"message": f"hello from {session_id}", "session_id": session_id,
                                             "agent": agent})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return messages(http, session_id)


def test_feedback_is_set_changed_cleared_listed_and_counted(stack: Any) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        chef = create_agent(http, model=MODEL)
        baker = create_agent(http, name="Baker", model=MODEL)
        history = answered_session(http, "s1", "Chef")
        assert [m["role"] for m in history] == ["assistant", "user", "assistant"]
        assert all("feedback" not in m for m in history)

        up = http.put(feedback_url("s1", "msg_2"), json={"rating": "up", "comment": "Just right"})
        assert up.status_code == 200, up.text
        shown = up.json()
        assert shown["id"] == "msg_2" and shown["content"] == history[2]["content"]
        assert shown["feedback"]["rating"] == "up" and shown["feedback"]["comment"] == "Just right"
        assert messages(http, "s1")[2] == shown  # the listing shows what the PUT answered
        first_rated = shown["feedback"]["updated_at"]

        again = http.put(feedback_url("s1", "msg_2"), json={"rating": "up", "comment": "Just right"})
        assert again.json() == shown  # the same feedback again changes nothing, not even its time
        time.sleep(0.01)
        down = http.put(feedback_url("s1", "msg_2"), json={"rating": "down"})
        assert down.status_code == 200
        assert down.json()["feedback"]["rating"] == "down" and down.json()["feedback"]["comment"] is None
        assert down.json()["feedback"]["updated_at"] > first_rated

        # The opening line is the agent's too; a second session, of another agent, rated later.
        assert http.put(feedback_url("s1", "msg_0"), json={"rating": "up"}).status_code == 200
        answered_session(http, "s2", "Baker")
        since = datetime.now(UTC)
        time.sleep(0.01)
        assert http.put(feedback_url("s2", "msg_2"), json={"rating": "up", "comment": "ok"}).status_code == 200

        listed = http.get("/api/v1/feedback")
        assert listed.status_code == 200, listed.text
        items = listed.json()["data"]
        assert [(i["session_id"], i["message_id"], i["rating"]) for i in items] == [
            ("s2", "msg_2", "up"), ("s1", "msg_0", "up"), ("s1", "msg_2", "down")]  # fmt: skip
        assert items[0] | {"updated_at": None, "content": None} == {
            "session_id": "s2", "message_id": "msg_2", "agent_id": baker["id"], "rating": "up", "comment": "ok",
            "updated_at": None, "content": None}  # fmt: skip
        assert items[2]["content"] == history[2]["content"] and items[2]["agent_id"] == chef["id"]
        assert listed.json()["next_cursor"] is None

        by_agent = http.get("/api/v1/feedback", params={"agent": "Chef"}).json()["data"]
        assert [(i["session_id"], i["message_id"]) for i in by_agent] == [("s1", "msg_0"), ("s1", "msg_2")]
        assert http.get("/api/v1/feedback", params={"agent": baker["id"]}).json()["data"] == [items[0]]
        recent = http.get("/api/v1/feedback", params={"since": since.isoformat()}).json()["data"]
        assert recent == [items[0]]
        future = (since + timedelta(days=1)).isoformat()
        assert http.get("/api/v1/feedback", params={"since": future}).json()["data"] == []

        first_page = http.get("/api/v1/feedback", params={"limit": 2}).json()
        assert first_page["data"] == items[:2] and first_page["next_cursor"]
        rest = http.get("/api/v1/feedback", params={"limit": 2, "cursor": first_page["next_cursor"]}).json()
        assert rest == {"data": items[2:], "next_cursor": None}

        cleared = http.put(feedback_url("s1", "msg_2"), json={"rating": None})
        assert cleared.status_code == 200 and "feedback" not in cleared.json()
        assert "feedback" not in messages(http, "s1")[2]
        assert [i["message_id"] for i in http.get("/api/v1/feedback", params={"agent": "Chef"}).json()["data"]] == [
            "msg_0"]  # fmt: skip
        assert http.put(feedback_url("s1", "msg_2"), json={"rating": None}).status_code == 200  # cleared again

        # A deleted session's feedback leaves the listing.
        assert http.delete("/api/v1/sessions/s2").status_code == 204
        assert [i["session_id"] for i in http.get("/api/v1/feedback").json()["data"]] == ["s1"]

    # up on msg_2, down on it, up on msg_0, up on s2: the same rating twice and the clear count nothing.
    def ratings() -> tuple[float, float]:
        samples = scrape(stack.web_url)
        return value(samples, "parley_feedback_total", rating="up"), value(samples, "parley_feedback_total",
                                                                            rating="down")  # fmt: skip

    eventually(ratings, (3.0, 1.0), timeout=30)
    assert "Chef" not in httpx.get(stack.web_url + "/metrics").text  # no agent names unless asked for


def test_hostile_feedback_is_refused_and_changes_nothing(stack: Any) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL)
        answered_session(http, "s1", "Chef")
        before = messages(http, "s1")
        url = feedback_url("s1", "msg_2")
        refusals = {
            "bad rating": (http.put(url, json={"rating": "meh"}), 422),
            "no rating": (http.put(url, json={"comment": "hi"}), 422),
            "rating a number": (http.put(url, json={"rating": 1}), 422),
            "comment too long": (http.put(url, json={"rating": "up", "comment": "x" * 2001}), 422),
            "comment without rating": (http.put(url, json={"rating": None, "comment": "why"}), 422),
            "unknown field": (http.put(url, json={"rating": "up", "stars": 5}), 422),
            "not JSON": (http.put(url, content=b"up", headers={"Content-Type": "application/json"}), 400),
            "user message": (http.put(feedback_url("s1", "msg_1"), json={"rating": "up"}), 422),
            "unknown message": (http.put(feedback_url("s1", "msg_3"), json={"rating": "up"}), 404),
            "not a message id": (http.put(feedback_url("s1", "2"), json={"rating": "up"}), 404),
            "huge index": (http.put(feedback_url("s1", "msg_" + "9" * 40), json={"rating": "up"}), 404),
            "unknown session": (http.put(feedback_url("nope", "msg_2"), json={"rating": "up"}), 404),
            "bad cursor": (http.get("/api/v1/feedback", params={"cursor": "x"}), 422),
            "bad since": (http.get("/api/v1/feedback", params={"since": "yesterday"}), 422),
            "unknown agent": (http.get("/api/v1/feedback", params={"agent": "Nobody"}), 404),
            "limit too big": (http.get("/api/v1/feedback", params={"limit": 1000}), 422),
        }
        for name, (response, status) in refusals.items():
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"]["code"] and response.json()["error"]["message"], name
        assert messages(http, "s1") == before
        assert http.get("/api/v1/feedback").json() == {"data": [], "next_cursor": None}
        lone = http.put(url, content=b'{"rating": "down", "comment": "bad \\ud800 answer"}',
                        headers={"Content-Type": "application/json"})  # fmt: skip
        assert lone.status_code == 200 and lone.json()["feedback"]["comment"] == "bad \ufffd answer"

    # Another tenant: the session, the message and the feedback do not exist; the same ids are its own.
    with client(stack.web_url, stack.api_keys["bob"]) as bob:
        assert bob.put(url, json={"rating": "up"}).status_code == 404
        assert bob.get("/api/v1/feedback").json() == {"data": [], "next_cursor": None}
        create_agent(bob, model=MODEL)
        answered_session(bob, "s1", "Chef")
        assert bob.put(url, json={"rating": "up"}).json()["feedback"]["rating"] == "up"
        assert [i["rating"] for i in bob.get("/api/v1/feedback").json()["data"]] == ["up"]
    with client(stack.web_url, stack.api_key) as http:
        assert [i["rating"] for i in http.get("/api/v1/feedback").json()["data"]] == ["down"]
        assert messages(http, "s1")[2]["feedback"]["rating"] == "down"


def test_feedback_counts_by_agent_when_the_operator_asks(stack: Any) -> None:
    stack.start_web(env={"PARLEY_METRICS_AGENT_LABELS": "true"})
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL)
        answered_session(http, "s1", "Chef")
        rated = http.put(feedback_url("s1", "msg_2"), json={"rating": "down"})
        assert rated.status_code == 200, rated.text
        # A later turn commits after the rated answer and leaves its feedback as it was.
        later = http.post("/api/v1/chat", json={"message": "more", "session_id": "s1"})
        assert later.status_code == 200, later.text
        assert messages(http, "s1")[2]["feedback"]["rating"] == "down", messages(http, "s1")

    def down_for_chef() -> float:
        return value(scrape(stack.web_url), "parley_feedback_total", agent="Chef", rating="down")

    eventually(down_for_chef, 1.0, timeout=30)
