"""Agents on the real stack: a tenant holds at most PARLEY_MAX_AGENTS_PER_TENANT (409 `too_many_agents`,
nothing written, other tenants unaffected), and renames and deletes racing each other across two web
processes leave the agents whole: no stale name, no agent half there."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from parley.shared.store import keys
from tests.integration.helpers import client, create_agent


def _agent_keys(r: redis.Redis, tenant: str) -> dict[str, object]:
    names = r.hgetall(keys.agent_names(tenant))
    index = r.zrange(keys.agents(tenant), 0, -1)
    hashes = sorted(r.scan_iter(match=keys.agent(tenant, "*")))
    return {"names": names, "index": index, "hashes": hashes}


def assert_whole(r: redis.Redis, tenant: str) -> None:
    """Name index, creation index and agent hashes describe the same agents."""
    names: dict[str, str] = r.hgetall(keys.agent_names(tenant))  # type: ignore[assignment]
    index = set(r.zrange(keys.agents(tenant), 0, -1))  # type: ignore[arg-type]
    prefix = keys.agent(tenant, "")
    assert {key[len(prefix) :] for key in r.scan_iter(match=prefix + "*")} == index  # type: ignore[union-attr]
    assert sorted(names.values()) == sorted(index), names
    for name, agent_id in names.items():
        assert json.loads(r.hget(prefix + agent_id, "name")) == name  # type: ignore[arg-type]


def test_a_tenant_holds_at_most_max_agents(stack) -> None:
    stack.start_web(2, env={"PARLEY_MAX_AGENTS_PER_TENANT": "3"})
    r = stack.redis()
    with client(stack.web_urls[0], "key-alice") as alice, client(stack.web_urls[1], "key-alice") as alice2, \
            client(stack.web_urls[1], "key-bob") as bob:  # fmt: skip
        made = [create_agent(alice if i % 2 else alice2, name=f"A{i}") for i in range(3)]
        before = _agent_keys(r, "alice")
        for http in (alice, alice2):  # the count lives in Redis: every web sees it
            refused = http.post("/api/v1/agents", json={"name": "One too many"})
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "too_many_agents"
        assert _agent_keys(r, "alice") == before
        for i in range(3):
            create_agent(bob, name=f"B{i}")  # bob's agents are his own count
        assert alice.delete(f"/api/v1/agents/{made[0]['id']}").status_code == 204
        create_agent(alice, name="One too many")
        assert len(alice.get("/api/v1/agents").json()) == 3
    assert_whole(r, "alice")
    assert_whole(r, "bob")


def _race(http: httpx.Client, agent_id: str, round_: int, worker: int) -> int:
    if worker % 3 == 0:
        return http.delete(f"/api/v1/agents/{agent_id}").status_code
    return http.patch(f"/api/v1/agents/{agent_id}", json={"name": f"N{round_}-{worker}"}).status_code


def test_racing_renames_and_deletes_across_two_webs_leave_the_agents_whole(stack) -> None:
    stack.start_web(2)
    r = stack.redis()
    https = [client(url, stack.api_key) for url in stack.web_urls]
    with https[0], https[1], ThreadPoolExecutor(6) as pool:
        for round_ in range(15):
            agent_id = create_agent(https[0], name=f"R{round_}")["id"]
            racers = [pool.submit(_race, https[w % 2], agent_id, round_, w) for w in range(6)]
            codes = [racer.result() for racer in racers]
            assert set(codes) <= {200, 204, 404, 409}, codes
            assert_whole(r, "alice")
        for name in r.hkeys(keys.agent_names("alice")):  # every name left is an agent that answers
            assert https[1].get(f"/api/v1/agents/{name}").status_code == 200
