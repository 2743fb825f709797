"""No async route of api/ makes a blocking store call on the event loop: the stores are synchronous
Redis clients, so every call from an `async def` route goes through a thread (`run_in_threadpool`).
Each async route that reaches a store runs here against stores that fail when called on the thread
running the event loop, and that record the calls made, so a route that reached no store cannot pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from parley.api.adapters.openai import routes as openai_routes
from parley.api.adapters.seed import routes as seed_routes
from parley.api.adapters.seed.translate import CompatUserMessage
from parley.api.routes import agents, chat, jobs, sessions
from parley.shared.errors import NotFound
from parley.shared.schema import ChatRequest
from parley.shared.settings import Settings
from parley.shared.store.turns import Accepted

AGENT = {"id": "agent-1", "name": "Chef"}


class OffLoopStore:
    """A store whose every method refuses to run on an event loop's thread and answers from `answers`."""

    def __init__(self, name: str, answers: dict[str, Any], calls: list[str]) -> None:
        self.name, self.answers, self.calls = name, answers, calls

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self.calls.append(f"{self.name}.{method}")
                return self.answers.get(method)
            raise AssertionError(f"{self.name}.{method} was called on the event loop")

        return call


def runtime(calls: list[str], **answers: dict[str, Any]) -> Any:
    stores = {name: OffLoopStore(name, answers.get(name, {}), calls) for name in ("agents", "sessions", "turns")}
    return SimpleNamespace(**stores, settings=Settings())


def run(route: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(route)


def test_seed_chat_agent_checks_the_conversation_in_a_thread() -> None:
    calls: list[str] = []
    rt = runtime(calls, sessions={"bound_agent": None})
    body = CompatUserMessage(conversation_id="conv-1", message="hello")
    with pytest.raises(NotFound, match="Conversation not found"):
        run(seed_routes.chat_agent(body, rt, "t1", "key"))
    assert calls == ["sessions.bound_agent"]


def test_summary_checks_the_session_in_a_thread() -> None:
    calls: list[str] = []
    rt = runtime(calls, sessions={"bound_agent": None})
    with pytest.raises(NotFound, match="session 's1' not found"):
        run(sessions.summarise_session("s1", rt, "t1", "key"))
    assert calls == ["sessions.bound_agent"]


def test_openai_models_read_agents_in_a_thread() -> None:
    calls: list[str] = []
    rt = runtime(calls, agents={"visible": [{**AGENT, "created_at": "1700000000000"}]})
    answer = run(openai_routes.list_models(rt, "t1"))
    assert answer["data"][0]["id"] == "Chef" and calls == ["agents.visible"]


@pytest.mark.parametrize(
    ("route", "store"),
    [(lambda rt: sessions.delete_session("s1", rt, "t1"), "sessions.delete"),
     (lambda rt: agents.delete_agent("Chef", rt, "t1"), "agents.delete")],
)  # fmt: skip
def test_deletes_run_in_a_thread(route: Callable[[Any], Coroutine[Any, Any, Any]], store: str) -> None:
    calls: list[str] = []
    assert run(route(runtime(calls))).status_code == 204
    assert calls == [store]


def test_job_events_read_the_job_in_a_thread() -> None:
    calls: list[str] = []
    rt = runtime(calls, turns={"job": None})
    with pytest.raises(NotFound, match="job 'job_1' not found"):
        run(jobs.job_event_stream("job_1", rt, "t1"))
    assert calls == ["turns.job"]


def test_accepting_a_turn_runs_in_a_thread() -> None:
    """The service's `accept`, shared by `/api/v1/chat`, `/v1/chat/completions` and the seed's chat."""
    calls: list[str] = []
    accepted = Accepted("job_1", "s1", AGENT["id"], replayed=False)
    rt = runtime(calls, sessions={"bound_agent": AGENT["id"]}, agents={"get_by_id": AGENT},
                 turns={"accept": accepted})  # fmt: skip
    answer = run(chat.chat_job(ChatRequest(message="hi", session_id="s1"), rt, "t1", "key"))
    assert isinstance(answer, JSONResponse) and answer.status_code == 202
    assert calls == ["sessions.bound_agent", "agents.get_by_id", "turns.accept"]
