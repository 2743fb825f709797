"""Tenant isolation on every route, and every bad input of the contract refused with nothing created."""

from __future__ import annotations

import base64
import json

import pytest

from parley.shared.store import keys
from tests.integration.helpers import client, create_agent, messages, wait_job
from tests.sse_client import collect


def _snapshot(stack) -> dict[str, str]:
    """Every key in Redis with its type and size, to show a refused request changed nothing. Left out: the
    deployment's metrics (a web flushes its HTTP request counts whenever its timer says, refused requests
    included) and rq's maintenance markers (`rq:clean_*`, which a worker sets and lets expire on its own timer)."""
    r = stack.redis()
    shot = {}
    own_timers = (keys.metric(""), "rq:clean_")
    for key in r.scan_iter(count=1000):
        if key.startswith(own_timers):
            continue
        kind = r.type(key)
        size = {"hash": r.hlen, "list": r.llen, "zset": r.zcard, "stream": r.xlen, "set": r.scard}.get(
            kind, lambda k: len(r.get(k) or "")
        )(key)
        shot[key] = f"{kind}:{size}"
    return shot


def test_tenants_never_see_each_other(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, "key-alice") as alice, client(stack.web_url, "key-bob") as bob:
        agent = create_agent(alice)
        chat = alice.post("/api/v1/chat", json={"message": "secret", "session_id": "my-session"}).json()
        job_id = chat["job_id"]

        for path in [
            f"/api/v1/agents/{agent['id']}", "/api/v1/agents/Chef", "/api/v1/sessions/my-session",
            "/api/v1/sessions/my-session/messages", f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/events",
        ]:  # fmt: skip
            response = bob.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert bob.patch(f"/api/v1/agents/{agent['id']}", json={"description": "x"}).status_code == 404
        assert bob.delete(f"/api/v1/agents/{agent['id']}").status_code == 404
        assert bob.delete("/api/v1/sessions/my-session").status_code == 404
        assert bob.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 404
        assert bob.get("/api/v1/agents").json() == []
        assert bob.get("/api/v1/sessions").json() == {"data": [], "next_cursor": None}
        assert bob.post("/api/v1/chat", json={"message": "hi", "agent": agent["id"]}).status_code == 404
        assert bob.post("/api/v1/sessions", json={"agent": "Chef"}).status_code == 404

        # The same session id and agent name, for bob: a different session that shares nothing.
        create_agent(bob, first_message="Bob's chef here")
        bobs = bob.post("/api/v1/chat", json={"message": "hello", "session_id": "my-session"}).json()
        assert bobs["response"] == "echo: hello"
        assert [m["content"] for m in messages(bob, "my-session")] == ["Bob's chef here", "hello", "echo: hello"]
        assert [m["content"] for m in messages(alice, "my-session")][1:] == ["secret", "echo: secret"]
        assert [s["session_id"] for s in alice.get("/api/v1/sessions").json()["data"]] == ["my-session"]


def test_file_agents_are_visible_to_every_tenant_and_read_only(stack, tmp_path) -> None:
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text("- name: Guide\n  description: shared\n  first_message: Welcome!\n")
    stack.env["PARLEY_AGENTS_FILE"] = str(agents_file)
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, "key-alice") as alice, client(stack.web_url, "key-bob") as bob:
        create_agent(alice)
        assert [a["name"] for a in alice.get("/api/v1/agents").json()] == ["Guide", "Chef"]
        assert [a["name"] for a in bob.get("/api/v1/agents").json()] == ["Guide"]
        assert bob.patch("/api/v1/agents/Guide", json={"description": "mine"}).status_code == 409
        answer = bob.post("/api/v1/chat", json={"message": "hi"}).json()  # the first agent: Guide
        assert answer["agent_name"] == "Guide"


def test_unknown_or_missing_key_is_401_everywhere(stack) -> None:
    stack.start_web()
    for key in (None, "wrong"):
        with client(stack.web_url, key) as http:
            for method, path in [("GET", "/api/v1/agents"), ("POST", "/api/v1/chat"), ("GET", "/api/v1/jobs/x"),
                                 ("GET", "/api/v1/sessions"), ("POST", "/api/v1/chat/stream")]:  # fmt: skip
                response = http.request(method, path, json={"message": "hi"})
                assert response.status_code == 401, (key, path)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"]["code"] == "unauthorized"
    with client(stack.web_url, None) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/openapi.json").status_code == 200


TINY_PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 16).decode()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/chat", {}, 422),
        ("/api/v1/chat", {"message": "   "}, 422),
        ("/api/v1/chat", {"message": 5}, 422),
        ("/api/v1/chat", {"message": "x" * 40_000}, 413),
        ("/api/v1/chat", {"message": "hi", "agent": "nobody"}, 404),
        ("/api/v1/chat", {"message": "hi", "session_id": "bad id!"}, 422),
        ("/api/v1/chat", {"message": "hi", "images": [TINY_PNG] * 6}, 422),
        ("/api/v1/chat", {"message": "hi", "images": ["data:image/bmp;base64,AAAA"]}, 422),
        ("/api/v1/chat", {"message": "hi", "images": ["data:image/png;base64,***"]}, 422),
        ("/api/v1/chat/stream", {"message": ""}, 422),
        ("/api/v1/chat/jobs", {"message": "hi", "agent": "nobody"}, 404),
        ("/api/v1/chat/jobs", {"message": "hi", "session_id": "taken", "agent": "Other"}, 409),
        ("/api/v1/agents", {"description": "no name"}, 422),
        ("/api/v1/agents", {"name": "Chef"}, 409),
        ("/api/v1/agents", {"name": "T", "temperature": 9}, 422),
        ("/api/v1/agents", {"name": "T", "tools": ["no_such_tool"]}, 422),
        ("/api/v1/agents", {"name": "T", "unknown_field": 1}, 422),
        ("/api/v1/sessions", {"agent": "nobody"}, 404),
        ("/api/v1/sessions", {"agent": "Chef", "session_id": "taken"}, 409),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(stack, path, body, status) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        create_agent(http, name="Other")
        assert http.post("/api/v1/sessions", json={"agent": "Chef", "session_id": "taken"}).status_code == 201
        before = _snapshot(stack)
        response = http.post(path, json=body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] and error["message"]
        assert _snapshot(stack) == before


def test_malformed_json_and_oversized_body(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_BODY_BYTES": "2048"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        before = _snapshot(stack)
        bad = http.post("/api/v1/chat", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        big = http.post("/api/v1/chat", content=json.dumps({"message": "x" * 5000}))
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        assert http.get("/api/v1/sessions/x/messages?before=nonsense").status_code == 404
        assert http.get("/api/v1/sessions?cursor=nonsense").status_code == 422
        assert http.get("/api/v1/sessions?limit=0").status_code == 422
        assert http.get("/api/v1/jobs/x/events", headers={"Last-Event-ID": "garbage"}).status_code == 422
        assert _snapshot(stack) == before


def test_sessions_and_messages_paging_and_delete(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        create_agent(http, name="Other", first_message="")
        for i in range(5):
            created = http.post("/api/v1/sessions", json={"agent": "Chef", "session_id": f"s{i}", "metadata": {"i": i}})
            assert created.status_code == 201
            assert created.json()["message_count"] == 1 and created.json()["metadata"] == {"i": i}
        http.post("/api/v1/sessions", json={"agent": "Other", "session_id": "o"})
        seen, cursor = [], None
        while True:
            params: dict[str, str | int] = {"agent": "Chef", "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = http.get("/api/v1/sessions", params=params).json()
            seen += [s["session_id"] for s in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ["s4", "s3", "s2", "s1", "s0"]
        assert [s["session_id"] for s in http.get("/api/v1/sessions").json()["data"]][0] == "o"

        for i in range(3):
            job = http.post("/api/v1/chat/jobs", json={"message": f"m{i}", "session_id": "s0"}).json()
            wait_job(http, job["job_id"])
        all_messages = messages(http, "s0")
        assert len(all_messages) == 7
        older = http.get("/api/v1/sessions/s0/messages", params={"before": "msg_5", "limit": 2}).json()
        assert [m["id"] for m in older["data"]] == ["msg_3", "msg_4"] and older["next_before"] == "msg_3"
        newest = http.get("/api/v1/sessions/s0/messages", params={"limit": 2}).json()["data"]
        assert [m["id"] for m in newest] == ["msg_5", "msg_6"]
        first_page = http.get("/api/v1/sessions/s0/messages", params={"before": "msg_2"}).json()
        assert [m["id"] for m in first_page["data"]] == ["msg_0", "msg_1"] and first_page["next_before"] is None
        assert http.get("/api/v1/sessions/s0/messages", params={"before": "msg_²"}).status_code == 422

        assert http.delete("/api/v1/sessions/s0").status_code == 204
        assert http.get("/api/v1/sessions/s0").status_code == 404
        assert http.get("/api/v1/sessions/s0/messages").status_code == 404
        assert "s0" not in [s["session_id"] for s in http.get("/api/v1/sessions?limit=100").json()["data"]]


def test_agent_crud(stack) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        agent = create_agent(http)
        assert agent["type"] == "conversational" and agent["model"] == "gpt-4o-mini" and agent["created_at"]
        assert http.get(f"/api/v1/agents/{agent['id']}").json() == http.get("/api/v1/agents/Chef").json()
        listed = http.get("/api/v1/agents").json()
        assert {"id", "name", "type", "model", "description"} <= set(listed[0])
        changed = http.patch("/api/v1/agents/Chef", json={"name": "Cook", "max_turns": 3})
        assert changed.status_code == 200 and changed.json()["name"] == "Cook" and changed.json()["max_turns"] == 3
        assert http.get("/api/v1/agents/Chef").status_code == 404
        assert http.get("/api/v1/agents/Cook").json()["id"] == agent["id"]
        assert http.delete("/api/v1/agents/Cook").status_code == 204
        assert http.get(f"/api/v1/agents/{agent['id']}").status_code == 404
        assert http.get("/api/v1/agents").json() == []


def test_max_turns_closes_the_conversation_politely(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, max_turns=1)
        assert http.post("/api/v1/chat", json={"message": "one", "session_id": "t"}).json()["response"] == "echo: one"
        closing = http.post("/api/v1/chat", json={"message": "two", "session_id": "t"}).json()["response"]
        assert "close" in closing and "echo" not in closing
        assert len(stack.model_server.control("requests")) == 1


def test_seed_article_routes(stack) -> None:
    stack.env["PARLEY_COMPAT_TENANT"] = "alice"
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, None) as anonymous, client(stack.web_url, "key-alice") as alice:
        agent = anonymous.post("/agents/create-agent", json={
            "context": "You are a chef", "first_message": "Hi, chef here",
            "response_shape": "{'answer': 'string'}", "instructions": "Be brief",
        }).json()  # fmt: skip
        assert {"id", "context", "first_message", "response_shape", "instructions", "timestamp",
                "conversations"} <= set(agent)  # fmt: skip
        conversation = anonymous.post("/agents/create-conversation", json={"agent_id": agent["id"]}).json()
        assert conversation["agent_id"] == agent["id"] and conversation["id"] and conversation["timestamp"]
        stack.model_server.control("script", {"reply": '{"answer": "hey you"}'})  # the shape asks for JSON
        reply = anonymous.post("/agents/chat-agent", json={"conversation_id": conversation["id"], "message": "hey"})
        assert reply.json() == {"conversation_id": conversation["id"], "response": '{"answer": "hey you"}'}
        missing = anonymous.post("/agents/chat-agent", json={"conversation_id": "nope", "message": "hey"})
        assert missing.status_code == 404
        assert [a["id"] for a in anonymous.get("/agents/get-agents").json()] == [agent["id"]]
        listed = anonymous.get("/agents/get-conversations", params={"agent_id": agent["id"]}).json()
        assert [c["id"] for c in listed] == [conversation["id"]]
        exchanges = anonymous.get("/agents/get-messages", params={"conversation_id": conversation["id"]}).json()
        assert [(e["user_message"], e["agent_message"]) for e in exchanges] == [("hey", '{"answer": "hey you"}')]
        # The same data through /api/v1, as tenant alice.
        assert messages(alice, conversation["id"])[0]["content"] == "Hi, chef here"
        events = collect(alice, "GET", f"/api/v1/jobs/{exchanges[0]['id']}/events")
        assert events[-1].type == "done"
