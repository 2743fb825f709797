"""Memory as turns use it, end to end: images reach the model and stay in the window, stored once;
a session that outgrows its budget is folded into a summary by the worker and the next turn's
context is the summary plus the newest turns."""

from __future__ import annotations

import json

from parley.shared.store import keys
from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
IMAGE_PART = {"type": "image_url", "image_url": {"url": PNG}}


def test_images_reach_the_model_stay_for_a_follow_up_and_are_stored_once(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None)
        first = http.post("/api/v1/chat", json={"message": "what is this?", "session_id": "i", "images": [PNG]})
        assert first.status_code == 200, first.text
        sent = model_requests(stack)[-1]["body"]["messages"][-1]
        assert sent == {"role": "user", "content": [{"type": "text", "text": "what is this?"}, IMAGE_PART]}

        http.post("/api/v1/chat", json={"message": "and its colour?", "session_id": "i"})
        follow_up = model_requests(stack)[-1]["body"]["messages"]
        earlier = next(m for m in follow_up if isinstance(m["content"], list))
        assert earlier["content"] == [{"type": "text", "text": "what is this?"}, IMAGE_PART]
        assert follow_up[-1] == {"role": "user", "content": "and its colour?"}

        http.post("/api/v1/chat", json={"message": "same one again", "session_id": "i", "images": [PNG]})
        r = stack.redis()
        assert r.hlen(keys.session_images("alice", "i")) == 1
        raw = [json.loads(item) for item in r.lrange(keys.messages("alice", "i"), 0, -1)]
        refs = [m["images"] for m in raw if m.get("images")]
        assert len(refs) == 2 and refs[0] == refs[1] and refs[0][0].startswith("img_")
        assert PNG not in json.dumps(raw)  # the messages hold refs, not the image
        shown = [m for m in messages(http, "i") if m.get("images")]
        assert [m["images"] for m in shown] == [[PNG], [PNG]]


def test_a_long_session_is_folded_and_the_next_context_is_summary_plus_tail(stack) -> None:
    env = {"PARLEY_CONTEXT_TOKENS": "400"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    # Short answers, the summary's too, so the budget holds a summary and some turns.
    stack.model_server.control("script", [{"reply": "Noted: the user sent a list of words."}] * 40)
    words = " ".join(f"word{i}" for i in range(40))
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, context="", instructions="")
        r = stack.redis()
        turns = 0
        while not r.hget(keys.session("alice", "long"), "summary") and turns < 12:
            reply = http.post("/api/v1/chat", json={"message": f"turn {turns}: {words}", "session_id": "long"})
            assert reply.status_code == 200, reply.text
            turns += 1
            wait_until(lambda: not r.exists(keys.summary_lock("alice", "long")), timeout=30,
                       message="the rolling summary job to end")  # fmt: skip
        summary = r.hget(keys.session("alice", "long"), "summary")
        assert summary, f"no summary after {turns} turns"

        http.post("/api/v1/chat", json={"message": "what did we say?", "session_id": "long"})
        context = model_requests(stack)[-1]["body"]["messages"]
        assert context[0] == {"role": "assistant", "content": "Hello, I am your chef."}
        assert context[1]["role"] == "system" and context[1]["content"].endswith(summary)
        assert context[1]["content"].startswith("Summary of the earlier conversation")
        assert context[2]["role"] == "user"
        asked = [m["content"] for m in context if m["role"] == "user"]
        assert not any(text.startswith("turn 0:") for text in asked)  # folded away, though still stored
        assert asked[-2].startswith(f"turn {turns - 1}:") and asked[-1] == "what did we say?"
        assert any(m["content"].startswith("turn 0:") for m in messages(http, "long"))
