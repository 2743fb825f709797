"""READ_CONTEXT: a turn's agent and its session's memory in one step, giving the same window as the
reads it replaces (snapshot, then the tail in LRANGE chunks), whether or not its tail covers the window."""

from __future__ import annotations

import asyncio
import json

import pytest

from parley.shared.store import keys, memory
from parley.shared.store.agents import AgentStore
from parley.shared.store.sessions import first_message_json
from parley.shared.store.worker_turns import WorkerTurns

MODEL = "gpt-4o-mini"


def _session(r, tenant: str, session_id: str, turns: int, agent: dict) -> None:
    key = keys.messages(tenant, session_id)
    r.rpush(key, first_message_json(agent, 1))
    for n in range(turns):
        r.rpush(key, json.dumps({"role": "user", "content": f"question {n} " * 5, "tokens": 12}),
                json.dumps({"role": "assistant", "content": f"answer {n} " * 5, "tokens": 12}))  # fmt: skip
    r.hset(keys.session(tenant, session_id), mapping={"agent_id": agent["id"], "exchanges": turns,
                                                     "tokens": turns * 24})  # fmt: skip


@pytest.mark.parametrize("turns, budget", [(3, 10_000), (40, 10_000), (40, 300), (0, 10_000)])
def test_the_window_from_read_context_is_the_window_read_step_by_step(clients, worker_turns: WorkerTurns,
                                                                      agents: AgentStore, turns: int,
                                                                      budget: int) -> None:  # fmt: skip
    from parley.shared.schema import AgentCreate

    agent = agents.create("acme", AgentCreate(name="helper", first_message="Hello there"))
    _session(clients.text, "acme", "s1", turns, agent)
    read = asyncio.run(worker_turns.read_context("acme", agent["id"], "s1"))
    assert read.agent == agent
    assert len(read.tail) == min(memory.FIRST_CHUNK, 1 + 2 * turns)  # 40 turns: more than one chunk holds
    from_read = memory.read_window(clients.text, "acme", "s1", budget_tokens=budget, model=MODEL,
                                   prefetched=read.prefetched(MODEL))  # fmt: skip
    step_by_step = memory.read_window(clients.text, "acme", "s1", budget_tokens=budget, model=MODEL)
    assert from_read == step_by_step
    assert from_read.exchanges == turns


def test_a_file_agent_is_found_and_a_missing_agent_is_none(clients, worker_turns: WorkerTurns) -> None:
    clients.text.hset(keys.agent(keys.FILE_SCOPE, "agent_f"), mapping={"id": '"agent_f"', "name": '"filed"'})
    assert asyncio.run(worker_turns.read_context("acme", "agent_f", "s1")).agent == {"id": "agent_f", "name": "filed"}
    read = asyncio.run(worker_turns.read_context("acme", "agent_gone", "s1"))
    assert read.agent is None and read.total == 0 and read.tail == []
