"""Hostile response shapes against the real processes (issue 11 items 1, 2, 6).

A shape whose pattern has nested quantifiers, met by a long almost-matching answer from the model,
used to hold the worker (Python's `re` backtracking in C, which no timeout interrupts) and every turn
queued behind it. Now the turn ends promptly and another tenant's turn on the same worker finishes.
Shapes the service cannot apply safely are refused at the door with 422, and the tenant's agent list
keeps answering 200.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import client, create_agent, wait_job

pytestmark = pytest.mark.integration

EVIL_SHAPE = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["a"]}
ALMOST = json.dumps({"a": "a" * 5_000 + "!"})
"""2**5000 backtracking steps for Python's `re`; one linear pass for RE2."""


def nested(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {"type": "object"}
    node = top
    for _ in range(depth - 1):
        node["properties"] = {"a": {"type": "object"}}
        node = node["properties"]["a"]
    return top


def test_a_catastrophic_pattern_ends_the_turn_and_spares_the_other_tenant(stack: Any) -> None:
    stack.start_web(1)
    stack.start_workers(1)
    with client(stack.web_url, stack.api_keys["alice"], timeout=60) as alice, \
            client(stack.web_url, stack.api_keys["bob"], timeout=60) as bob:  # fmt: skip
        create_agent(alice, name="Strict", response_shape=EVIL_SHAPE)
        create_agent(bob, name="Plain")
        stack.model_server.control("script", [{"reply": ALMOST}, {"reply": ALMOST}])  # the answer, then the repair
        hostile = alice.post("/api/v1/chat/jobs", json={"agent": "Strict", "message": "answer with a's"})
        assert hostile.status_code == 202, hostile.text
        deadline_job = wait_job(alice, hostile.json()["job_id"], timeout=30)
        other = bob.post("/api/v1/chat/jobs", json={"agent": "Plain", "message": "hello"})
        assert other.status_code == 202, other.text
        bobs = wait_job(bob, other.json()["job_id"], timeout=30)

    assert deadline_job["status"] == "failed", deadline_job
    assert "did not fit the agent's response shape" in deadline_job["error"], deadline_job
    assert "does not match" in deadline_job["error"]
    assert bobs["status"] == "finished", bobs
    assert bobs["result"]["response"].startswith("echo:")


def test_both_tenants_turns_run_side_by_side(stack: Any) -> None:
    """Submitted together on one worker: the other tenant's turn finishes however the hostile one goes."""
    stack.start_web(1)
    stack.start_workers(1)
    with client(stack.web_url, stack.api_keys["alice"], timeout=60) as alice, \
            client(stack.web_url, stack.api_keys["bob"], timeout=60) as bob:  # fmt: skip
        create_agent(alice, name="Strict", response_shape=EVIL_SHAPE)
        create_agent(bob, name="Plain")
        stack.model_server.control("script", [{"reply": ALMOST}, {"reply": ALMOST}])
        hostile = alice.post("/api/v1/chat/jobs", json={"agent": "Strict", "message": "answer with a's"}).json()
        other = bob.post("/api/v1/chat/jobs", json={"agent": "Plain", "message": "hello"}).json()
        bobs = wait_job(bob, other["job_id"], timeout=30)
        alices = wait_job(alice, hostile["job_id"], timeout=30)
    assert bobs["status"] == "finished", bobs
    assert alices["status"] in ("finished", "failed"), alices


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        body = b'{"type": "integer"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Counting,), {"hits": hits}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def hostile_shapes(url: str) -> dict[str, Any]:
    return {
        "backreference": {"type": "object", "properties": {"a": {"pattern": r"^(a+)\1$"}}},
        "lookahead key": {"type": "object", "patternProperties": {"(?=a)": {}}},
        "remote $ref": {"type": "object", "properties": {"a": {"$ref": f"{url}/schema.json"}}},
        "file $ref": {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}},
        "unknown $schema": {"$schema": f"{url}/meta", "type": "object"},
        "40 levels": nested(40),
        "too large": {"type": "object", "properties": {f"f{i}": {"description": "x" * 100} for i in range(700)}},
        "not a schema": {"type": "object", "properties": {"a": {"type": "strin"}}},
    }


def test_hostile_shapes_are_refused_at_the_door(stack: Any, schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    stack.start_web(1)
    with client(stack.web_url, stack.api_keys["alice"]) as alice:
        existing = create_agent(alice, name="Kept")
        for name, shape in hostile_shapes(url).items():
            created = alice.post("/api/v1/agents", json={"name": f"hostile {name}", "response_shape": shape})
            assert created.status_code == 422, (name, created.status_code, created.text)
            assert created.json()["error"]["code"] == "invalid_request", (name, created.text)
            assert "response_shape" in created.json()["error"]["message"], (name, created.text)
            patched = alice.patch(f"/api/v1/agents/{existing['id']}", json={"response_shape": shape})
            assert patched.status_code == 422, (name, patched.status_code, patched.text)
            seeded = alice.post("/agents/create-agent", json={"context": "c", "response_shape": shape})
            assert seeded.status_code == 422, (name, seeded.status_code, seeded.text)
        deep = alice.post("/api/v1/agents", json={"name": "deep", "response_shape": nested(300)})
        assert 400 <= deep.status_code < 500 and "error" in deep.json(), deep.text
        listed = alice.get("/api/v1/agents")
        assert listed.status_code == 200, listed.text
        assert [agent["name"] for agent in listed.json()] == ["Kept"]
        assert alice.get(f"/api/v1/agents/{existing['id']}").json()["response_shape"] is None
    assert hits == []


def test_bounded_metadata_and_tools(stack: Any) -> None:
    stack.start_web(1)
    with client(stack.web_url, stack.api_keys["alice"]) as alice:
        create_agent(alice, name="Chef")
        too_big = alice.post("/api/v1/sessions", json={"agent": "Chef", "metadata": {"blob": "x" * 20_000}})
        assert too_big.status_code == 422, too_big.text
        too_many = alice.post("/api/v1/agents", json={"name": "Tools", "tools": ["calculator"] * 129})
        assert too_many.status_code == 422, too_many.text
        assert alice.get("/api/v1/sessions").json()["data"] == []
