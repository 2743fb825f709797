"""PARLEY_SECRETS_KEY on the real stack: a tenant's credentials (an MCP server's header value, a webhook's signing
secret) are sealed in Redis, so nothing in it holds them, while the worker still calls the MCP server with the
header and signs deliveries with the secret; a web without the key cannot read the sealed records and says so
rather than passing a sealed value off as a credential."""

from __future__ import annotations

from typing import Any

import redis
from cryptography.fernet import Fernet

from parley.shared.sealing import SEALED
from parley.shared.store import keys
from tests.harness import wait_until
from tests.integration.helpers import client, create_agent
from tests.mcp_server import SECRET_HEADER
from tests.sse_client import collect
from tests.webhook_receiver import Receiver

LOOPBACK = {"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}


def test_credentials_are_sealed_in_redis_and_used_by_the_worker(stack: Any, mcp_server: Any) -> None:
    env = {**LOOPBACK, "PARLEY_SECRETS_KEY": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"}
    [web] = stack.start_web(env=env)
    stack.start_workers(env=env)
    receiver = Receiver()
    _, value = SECRET_HEADER
    stack.model_server.control("script", [{"tool_calls": [{"name": "mcp__private__echo", "arguments": {"text": "hi"}}]},
                                          {"reply": "It said hi."}])  # fmt: skip
    try:
        with client(stack.web_url, stack.api_key) as http:
            created = http.post("/api/v1/mcp-servers", json={"name": "private", "url": f"{mcp_server.url}/private/mcp",
                                                             "headers": {"X-Test-Secret": value}})  # fmt: skip
            assert created.status_code == 201, created.text
            hook = http.post("/api/v1/webhooks", json={"url": receiver.url})
            assert hook.status_code == 201, hook.text
            secret = hook.json()["secret"]

            with redis.Redis.from_url(stack.redis_url, decode_responses=True) as r:
                stored = r.hget(keys.mcp_servers("alice"), "private") + r.hget(keys.webhooks("alice"),
                                                                               hook.json()["id"])
            assert value not in stored and secret not in stored and stored.count(SEALED) == 2

            create_agent(http, response_shape=None, tools=["mcp:private/echo"])
            events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "echo hi", "session_id": "s"})
            (result,) = [event.data for event in events if event.type == "tool_result"]
            assert result["tool_name"] == "mcp:private/echo" and result["ok"], result
            assert events[-2].data["content"] == "It said hi."
            wait_until(lambda: receiver.delivered(), timeout=15, message="the turn's delivery")
            assert receiver.delivered()[0].signed_by(secret)

        # A web started without the key reads neither record: it leaves them out (and logs why), never
        # handing a sealed value on as a header or a secret.
        web.terminate()
        [keyless] = stack.start_web(env=LOOPBACK)
        with client(str(keyless.url), stack.api_key) as http:
            assert http.get("/api/v1/mcp-servers").json() == []
            assert http.get("/api/v1/webhooks").json()["data"] == []
            # ... though the tenant can still remove them (and then register them again under this key).
            assert http.delete(f"/api/v1/webhooks/{hook.json()['id']}").status_code == 204
            assert http.delete("/api/v1/mcp-servers/private").status_code == 204
        assert "PARLEY_SECRETS_KEY is not set" in keyless.log_tail(200) and value not in keyless.log_tail(200)
    finally:
        receiver.down()
