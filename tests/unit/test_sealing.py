"""Credentials at rest (shared/sealing.py): sealed with the first key of PARLEY_SECRETS_KEY, opened with any, read
as they are when written before a key was set; a sealed value no key opens is refused, never passed on; the MCP
server and webhook records keep no credential in the clear once a key is set."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import fakeredis
import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from parley.shared.sealing import PLAIN, SEALED, Sealer, Unsealable
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.mcp_servers import McpServer, McpServerStore, read_servers
from parley.shared.store.reseal import reseal
from parley.shared.store.webhooks import KIND_A2A, Deliveries, Webhook, WebhookStore, decode_webhook

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_sealed_with_the_first_key_opened_with_any() -> None:
    old = Sealer(OLD)
    sealed = old.seal("Bearer sk-live-123")
    assert sealed.startswith(SEALED) and "sk-live" not in sealed
    assert old.seal("Bearer sk-live-123") != sealed  # a fresh IV each time: equal secrets do not look equal
    rotated = Sealer(f"{NEW}, {OLD}")
    assert rotated.unseal(sealed) == "Bearer sk-live-123"
    assert Sealer(NEW).unseal(rotated.seal("x")) == "x"
    with pytest.raises(Unsealable):
        Sealer(NEW).unseal(sealed)  # the key it was sealed with was dropped
    with pytest.raises(Unsealable):
        PLAIN.unseal(sealed)  # no key at all: refused, not passed on as the credential
    with pytest.raises(Unsealable):
        old.unseal(sealed[:-4] + "AAAA")  # changed
    assert old.unseal("written before the key was set") == "written before the key was set"
    assert PLAIN.seal("kept as it is") == "kept as it is" and not PLAIN.sealing and old.sealing


def test_a_malformed_key_stops_the_settings(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="PARLEY_SECRETS_KEY"):
        make_settings(PARLEY_SECRETS_KEY="not-a-key")
    assert make_settings(PARLEY_SECRETS_KEY=f"{NEW},{OLD}").sealer.sealing
    assert NEW not in repr(make_settings(PARLEY_SECRETS_KEY=NEW))  # never in a log of the settings


def test_mcp_header_values_are_sealed_in_redis(clients: RedisClients, server: fakeredis.FakeServer) -> None:
    sealer = Sealer(NEW)
    store = McpServerStore(clients.text, 5, sealer)
    store.create("alice", McpServer(name="gh", url="https://mcp.example.com/mcp",
                                    headers={"Authorization": "Bearer ghp_secret"}))  # fmt: skip
    raw = clients.text.hget(keys.mcp_servers("alice"), "gh")
    assert "ghp_secret" not in raw and json.loads(raw)["headers"]["Authorization"].startswith(SEALED)
    assert store.get("alice", "gh").headers == {"Authorization": "Bearer ghp_secret"}
    aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    assert asyncio.run(read_servers(aio, "alice", ["gh"], sealer))["gh"].headers["Authorization"] == "Bearer ghp_secret"
    assert asyncio.run(read_servers(aio, "alice", ["gh"], PLAIN)) == {}  # unreadable without the key: left out
    # A record written before the key was set is read as it is, and sealed when next written.
    McpServerStore(clients.text, 5, PLAIN).create("alice", McpServer(name="old", url="https://mcp.example.com/mcp",
                                                                     headers={"X-Key": "plain"}))  # fmt: skip
    old = store.get("alice", "old")
    assert old.headers == {"X-Key": "plain"}
    store.update("alice", old)
    assert "plain" not in clients.text.hget(keys.mcp_servers("alice"), "old")


def test_webhook_secrets_and_a2a_credentials_are_sealed_in_redis(clients: RedisClients,
                                                                 server: fakeredis.FakeServer) -> None:  # fmt: skip
    sealer = Sealer(f"{NEW},{OLD}")
    store = WebhookStore(clients.text, 20, sealer)
    hook = Webhook(id="wh_1", url="https://example.com/hook", events=["turn.finished"], secret="whsec_abc")
    push = Webhook(id="wh_2", url="https://example.com/push", events=[], secret="", kind=KIND_A2A, job_id="job_1",
                   token="tok-xyz", authorization="Bearer push-auth")  # fmt: skip
    store.create("alice", hook)
    store.create("alice", push, cap=5)
    raw = json.dumps(clients.text.hgetall(keys.webhooks("alice")))
    for secret in ("whsec_abc", "tok-xyz", "push-auth"):
        assert secret not in raw
    assert store.get("alice", "wh_1").secret == "whsec_abc"
    aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    found = asyncio.run(Deliveries(aio, sealer).subscription("alice", "wh_2"))
    assert found is not None and (found.token, found.authorization) == ("tok-xyz", "Bearer push-auth")
    assert asyncio.run(Deliveries(aio, Sealer(NEW)).subscriptions("alice"))  # NEW seals: NEW alone opens
    assert asyncio.run(Deliveries(aio, Sealer(OLD)).subscriptions("alice")) == []  # a key that never sealed them


def test_reseal_seals_every_credential_with_the_first_key_so_the_old_one_can_go(clients: RedisClients) -> None:
    old = Sealer(OLD)
    McpServerStore(clients.text, 5, old).create("alice", McpServer(name="gh", url="https://mcp.example.com/mcp",
                                                                   headers={"Authorization": "Bearer x"}))  # fmt: skip
    McpServerStore(clients.text, 5, PLAIN).create("bob", McpServer(name="pre", url="https://mcp.example.com/mcp",
                                                                   headers={"X-Key": "plain"}))  # fmt: skip
    hooks_then = WebhookStore(clients.text, 20, old)
    hooks_then.create("alice", Webhook(id="wh_1", url="https://example.com/hook", events=["turn.finished"],
                                       secret="whsec_1"))  # fmt: skip
    hooks_then.create("alice", Webhook(
        id="wh_2", url="https://example.com/push", events=[], secret="", kind=KIND_A2A, job_id="job_1",
        token="tok-1", authorization="Bearer push-1"), cap=5)  # fmt: skip
    lost = Sealer(Fernet.generate_key().decode())  # a key nobody lists any more
    WebhookStore(clients.text, 20, lost).create("bob", Webhook(id="wh_3", url="https://example.com/hook",
                                                               events=["turn.finished"], secret="whsec_3"))  # fmt: skip
    unreadable = clients.text.hget(keys.webhooks("bob"), "wh_3")

    with pytest.raises(ValueError, match="PARLEY_SECRETS_KEY is not set"):
        reseal(clients.text, PLAIN)
    done = reseal(clients.text, Sealer(f"{NEW},{OLD}"))

    assert (done.sealed, done.unreadable, done.skipped) == (4, 1, 0)
    new_only = Sealer(NEW)
    assert McpServerStore(clients.text, 5, new_only).get("alice", "gh").headers == {"Authorization": "Bearer x"}
    assert McpServerStore(clients.text, 5, new_only).get("bob", "pre").headers == {"X-Key": "plain"}
    assert "plain" not in clients.text.hget(keys.mcp_servers("bob"), "pre")
    hooks = WebhookStore(clients.text, 20, new_only)
    assert hooks.get("alice", "wh_1").secret == "whsec_1"
    pushed = decode_webhook("wh_2", clients.text.hget(keys.webhooks("alice"), "wh_2"), new_only)
    assert pushed is not None and (pushed.token, pushed.authorization) == ("tok-1", "Bearer push-1")
    assert clients.text.hget(keys.webhooks("bob"), "wh_3") == unreadable  # left as it was
    assert McpServerStore(clients.text, 5, old).find("alice", "gh") is None  # the old key alone opens nothing now
