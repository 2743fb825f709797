"""Hostile models and tools, worker side: idle and timed-out streams, lone surrogates, tool runs replayed.

The model is the scripted server (tests/model_server.py) on a thread, spoken to by the real
OpenAIProvider on an event loop of each test's own; Redis is fakeredis.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue

from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.worker_turns import Attempt, WorkerTurns
from parley.shared.text import REPLACEMENT
from parley.tools import ToolContext, ToolRegistry, tool
from parley.tools.registry import TOOL_ATTRIBUTE
from parley.worker.engine import Engine
from parley.worker.providers.base import REASONING, TEXT, ModelError, ModelStream, ToolCall
from parley.worker.providers.openai import OpenAIProvider
from parley.worker.rq_side import RqSide
from parley.worker.turn.control import JobControl
from parley.worker.turn.loop import AgentLoop, Stopped
from parley.worker.turn.toolbox import Toolbox
from tests.model_server import serve_in_thread

LONE = "\ud800"
USER = [{"role": "user", "content": "hi"}]
T = TypeVar("T")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    url, stop = serve_in_thread()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def control(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as client:
        client.post("/_control/reset").raise_for_status()
        yield client


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    """The worker's bounded pool (sync tools, tool-run records)."""
    pool = ThreadPoolExecutor(4, thread_name_prefix="sync")
    yield pool
    pool.shutdown(wait=True)


def script(control: httpx.Client, *steps: dict[str, Any]) -> None:
    """Steps as JSON with ASCII escapes: a lone surrogate travels as `"\\ud800"`, as Python writes it."""
    control.post("/_control/script", content=json.dumps(list(steps)),
                 headers={"Content-Type": "application/json"}).raise_for_status()  # fmt: skip


def stats(control: httpx.Client) -> dict[str, int]:
    return control.get("/_control/stats").json()  # type: ignore[no-any-return]


def hung_up(control: httpx.Client, count: int = 1) -> bool:
    """Whether the model server saw `count` clients leave mid-answer (it notices within a moment)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = stats(control)
        if seen["disconnects"] >= count and seen["open_streams"] == 0:
            return True
        time.sleep(0.02)
    return False


def on_loop(provider: Any, body: Callable[[], Awaitable[T]]) -> T:
    """`body()` on an event loop of its own, the provider's HTTP client closed on that loop after it."""

    async def run() -> T:
        try:
            return await body()
        finally:
            if hasattr(provider, "aclose"):
                await provider.aclose()

    return asyncio.run(run())


@pytest.fixture
def provider(base_url: str, make_settings: Callable[..., Settings]) -> OpenAIProvider:
    return OpenAIProvider(make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x",
                                        PARLEY_MODEL_MAX_RETRIES="0", PARLEY_MODEL_TIMEOUT_S="0.5"))  # fmt: skip


def test_a_read_timeout_mid_stream_is_a_model_timeout(provider: OpenAIProvider, control: httpx.Client) -> None:
    script(control, {"chunk_delay_ms": 3000})  # the role chunk at once, then nothing for 3 s

    async def read() -> ModelError:
        async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
            with pytest.raises(ModelError) as info:
                [part async for part in stream.parts()]
        return info.value

    error = on_loop(provider, read)
    assert error.timed_out, str(error)


def test_model_text_reasoning_and_calls_have_no_lone_surrogates(provider: OpenAIProvider,
                                                                control: httpx.Client) -> None:  # fmt: skip
    script(control, {"reasoning": f"think {LONE}", "reply": f"say {LONE}",
                     "tool_calls": [{"name": f"calc{LONE}", "arguments": f'{{"x": "{LONE}"}}'}]})  # fmt: skip

    async def read() -> tuple[list[tuple[str, str]], list[ToolCall]]:
        async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
            parts = [part async for part in stream.parts()]
        return parts, stream.tool_calls

    parts, calls = on_loop(provider, read)
    assert "".join(p for kind, p in parts if kind == REASONING) == f"think {REPLACEMENT}"
    assert "".join(p for kind, p in parts if kind == TEXT) == f"say {REPLACEMENT}"
    [call] = calls
    assert call.name == f"calc{REPLACEMENT}"
    assert call.arguments == f'{{"x": "{REPLACEMENT}"}}'
    for text in [p for _, p in parts] + [call.name, call.arguments]:
        text.encode("utf-8")  # would raise on a lone surrogate


def test_a_model_error_message_has_no_lone_surrogate(provider: OpenAIProvider, control: httpx.Client) -> None:
    script(control, {"status": 400, "body": {"error": {"message": f"bad {LONE}", "type": "x"}}})

    async def open_it() -> ModelError:
        with pytest.raises(ModelError) as info:
            async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None):
                pass
        return info.value

    error = on_loop(provider, open_it)
    str(error).encode("utf-8")
    assert REPLACEMENT in str(error)


# --------------------------------------------------------------------------- the idle timeout


def _keep(sent: list[str], payload: str) -> bool:
    sent.append(payload)
    return True


def make_loop(clients: RedisClients, settings: Settings, provider: Any, threads: ThreadPoolExecutor, *,
              tools: Sequence[Any] = (), job_id: str = "job_1", idle_timeout_s: float | None = None,
              sent: list[str] | None = None, emit: Callable[[str], bool] | None = None) -> AgentLoop:  # fmt: skip
    registry = ToolRegistry(getattr(fn, TOOL_ATTRIBUTE) for fn in tools)
    ctx = ToolContext(tenant="alice", session_id="s1", job_id=job_id, redis=clients.text, settings=settings)
    out = sent if sent is not None else []
    toolbox = Toolbox(registry=registry, builtin=registry.names(), ctx=ctx, threads=threads)
    return AgentLoop(provider=provider, toolbox=toolbox, agent={"name": "a", "tools": registry.names()},
                     model="m", emit=emit or (lambda payload: _keep(out, payload)), max_steps=4,
                     idle_timeout_s=idle_timeout_s)  # fmt: skip


def test_a_stream_of_keep_alive_comments_is_hung_up_as_a_timeout(
        base_url: str, control: httpx.Client, clients: RedisClients, make_settings: Callable[..., Settings],
        threads: ThreadPoolExecutor) -> None:  # fmt: skip
    """SSE comments never reach `parts()`, so they never push the idle deadline back: the step times out and
    its connection is closed."""
    settings = make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x", PARLEY_MODEL_MAX_RETRIES="0",
                             PARLEY_MODEL_TIMEOUT_S="30")  # fmt: skip
    script(control, {"keepalive_ms": 50})
    provider = OpenAIProvider(settings)
    loop = make_loop(clients, settings, provider, threads, idle_timeout_s=0.6)

    async def run() -> ModelError:
        with pytest.raises(ModelError) as info:  # without the idle timeout the stream would never end: 10 s safety
            await asyncio.wait_for(loop.run(list(USER)), timeout=10)
        return info.value

    started = time.monotonic()
    error = on_loop(provider, run)
    assert error.timed_out
    assert "no content for 0.6 s" in str(error)
    assert time.monotonic() - started < 5
    assert hung_up(control)  # the model saw the hang-up


def test_a_cancel_is_still_a_cancel_not_a_timeout(base_url: str, control: httpx.Client, clients: RedisClients,
                                                  make_settings: Callable[..., Settings],
                                                  threads: ThreadPoolExecutor) -> None:  # fmt: skip
    """The engine stops a canceled turn by cancelling its task (JobControl.stop): the idle model is hung up and
    the loop ends cancelled with the engine's reason, not in a timed-out ModelError."""
    settings = make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x", PARLEY_MODEL_MAX_RETRIES="0")
    script(control, {"keepalive_ms": 50})
    provider = OpenAIProvider(settings)
    loop = make_loop(clients, settings, provider, threads, idle_timeout_s=60)

    async def run() -> tuple[str, JobControl]:
        task = asyncio.create_task(loop.run(list(USER)))
        job = JobControl(task=task)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        job.stop(Stopped())
        try:
            await asyncio.wait_for(task, timeout=5)
        except asyncio.CancelledError:
            return "cancelled", job
        return "ended", job

    ended, job = on_loop(provider, run)
    assert ended == "cancelled" and isinstance(job.reason, Stopped)
    assert hung_up(control)


def test_a_turn_is_stopped_when_an_emit_says_it_is_no_longer_ours(
        base_url: str, control: httpx.Client, clients: RedisClients, make_settings: Callable[..., Settings],
        threads: ThreadPoolExecutor) -> None:  # fmt: skip
    """A cancel found by the turn's own write: the loop stops reading at once and hangs up, mid-answer."""
    settings = make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x", PARLEY_MODEL_MAX_RETRIES="0")
    script(control, {"reply": "one two three four five six", "chunks": 6, "chunk_delay_ms": 200})
    provider = OpenAIProvider(settings)
    sent: list[str] = []

    def emit(payload: str) -> bool:
        sent.append(payload)
        return len(sent) < 2  # the second event finds the turn canceled

    loop = make_loop(clients, settings, provider, threads, idle_timeout_s=60, emit=emit)

    async def run() -> None:
        with pytest.raises(Stopped):
            await asyncio.wait_for(loop.run(list(USER)), timeout=10)

    started = time.monotonic()
    on_loop(provider, run)
    assert len(sent) == 2 and time.monotonic() - started < 1  # not read to its end (6 x 0.2 s)
    assert hung_up(control)


def test_the_watch_outlives_a_failed_check_and_stops_only_the_turns_no_longer_theirs(
        clients: RedisClients, worker_turns: WorkerTurns) -> None:  # fmt: skip
    """One round trip asks about every running turn; a Redis error skips a round, never ends the watch."""
    for job_id in ("job_1", "job_2"):
        clients.text.hset(keys.job("alice", job_id), mapping={"status": "started", "attempt": "1"})
    asked: list[int] = []
    real = worker_turns.running

    async def flaky(attempts: list[Attempt]) -> list[bool]:
        asked.append(len(attempts))
        if len(asked) == 1:
            raise RedisConnectionError("Redis went away")
        return await real(attempts)

    worker_turns.running = flaky  # type: ignore[method-assign]

    async def run() -> tuple[bool, bool, list[JobControl]]:
        rq = RqSide([Queue("turns", connection=clients.raw)], connection=clients.raw)
        engine = Engine(rq, concurrency=2, drain_grace_s=1, turns=worker_turns)
        sleeping = [asyncio.create_task(asyncio.sleep(30)) for _ in range(2)]
        controls = [JobControl(task=task, attempt=Attempt("alice", job_id, 1))  # type: ignore[arg-type]
                    for task, job_id in zip(sleeping, ("job_1", "job_2"), strict=True)]  # fmt: skip
        engine.running = {c.attempt.job_id: (None, c) for c in controls}  # type: ignore[misc, union-attr]
        clients.text.hset(keys.job("alice", "job_2"), "status", "canceled")
        watch = asyncio.create_task(engine._watch())
        try:
            await asyncio.wait([sleeping[1]], timeout=5)
        finally:
            watch.cancel()
            sleeping[0].cancel()
        return sleeping[1].cancelled(), not watch.done() or watch.cancelled(), controls

    stopped, watched_on, controls = asyncio.run(run())
    assert stopped and watched_on and isinstance(controls[1].reason, Stopped)
    assert controls[0].reason is None  # still its attempt's turn: left running
    assert asked[0] == 2 and len(asked) >= 2  # both turns in one ask; asked again after the failed one


def test_a_turn_stopped_after_its_step_ended_leaves_the_next_turn_s_stream_alone(
        base_url: str, control: httpx.Client, clients: RedisClients, make_settings: Callable[..., Settings],
        threads: ThreadPoolExecutor) -> None:  # fmt: skip
    """A step read to its end gives its connection back to the provider's pool, where another turn's step may
    take it: stopping the first turn afterwards (here while it runs a tool) must not touch that stream."""
    settings = make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x", PARLEY_MODEL_MAX_RETRIES="0")
    script(control, {"tool_calls": [{"name": "lingers", "arguments": "{}"}]},
           {"reply": "one two three", "chunks": 3, "chunk_delay_ms": 150})  # fmt: skip
    provider = OpenAIProvider(settings)

    async def run() -> tuple[str, bool]:
        in_tool = asyncio.Event()

        @tool
        async def lingers() -> str:
            """Runs until it is stopped."""
            in_tool.set()
            await asyncio.sleep(30)
            return "late"

        first = make_loop(clients, settings, provider, threads, tools=[lingers], idle_timeout_s=60)
        second = make_loop(clients, settings, provider, threads, job_id="job_2", idle_timeout_s=60)
        running = asyncio.create_task(first.run(list(USER)))
        await asyncio.wait_for(in_tool.wait(), timeout=5)  # its model step has ended
        answering = asyncio.create_task(second.run(list(USER)))
        await asyncio.sleep(0.2)  # the second turn is mid-answer
        JobControl(task=running).stop(Stopped())  # type: ignore[arg-type]
        outcome = await asyncio.wait_for(answering, timeout=5)
        await asyncio.wait([running], timeout=5)
        return outcome.answer, running.cancelled()

    answer, stopped = on_loop(provider, run)
    assert stopped and answer == "one two three"
    assert stats(control)["disconnects"] == 0


# --------------------------------------------------------------------------- tools


async def _parts(*parts: tuple[str, str]) -> AsyncIterator[tuple[str, str]]:
    for part in parts:
        yield part


class ScriptedProvider:
    """A provider that answers each step from a list: tool calls, or text."""

    def __init__(self, steps: list[list[ToolCall] | str]) -> None:
        self.steps = list(steps)

    @asynccontextmanager
    async def stream(self, **_: Any) -> AsyncIterator[ModelStream]:
        step = self.steps.pop(0)
        if isinstance(step, str):
            yield ModelStream(_parts((TEXT, step)))
        else:
            yield ModelStream(_parts(), tool_calls=list(step))


RAN: list[str] = []


@tool
def side_effect(item: str) -> str:
    """Records that it ran."""
    RAN.append(item)
    return f"did {item}"


@tool
def unpaired(text: str) -> str:
    """Returns a lone surrogate, and echoes its argument."""
    return f"{LONE} {text}"


def test_a_retried_attempt_replays_recorded_tool_runs(clients: RedisClients, settings: Settings,
                                                       threads: ThreadPoolExecutor) -> None:  # fmt: skip
    RAN.clear()
    calls = [ToolCall("c1", "side_effect", '{"item": "x"}'), ToolCall("c2", "side_effect", '{ "item":"x" }'),
             ToolCall("c3", "side_effect", '{"item": "y"}')]  # fmt: skip
    first = make_loop(clients, settings, ScriptedProvider([calls, "done"]), threads, tools=[side_effect])
    assert asyncio.run(first.run(list(USER))).answer == "done"
    assert sorted(RAN) == ["x", "x", "y"]  # two identical calls in one attempt both run

    again: list[str] = []
    retry = make_loop(clients, settings, ScriptedProvider([calls[::-1], [calls[0]], "done"]), threads,
                      tools=[side_effect], sent=again)  # fmt: skip
    outcome = asyncio.run(retry.run(list(USER)))
    assert sorted(RAN) == ["x", "x", "x", "y"]  # only the third identical call is new
    results = [m["content"] for m in outcome.transcript if m["role"] == "tool"]
    assert results == ["did y", "did x", "did x", "did x"]
    runs = clients.text.hgetall(keys.tool_runs("alice", "job_1"))
    assert len(runs) == 4 and all(field.startswith("side_effect:") for field in runs)
    assert 0 < clients.text.pttl(keys.tool_runs("alice", "job_1")) <= settings.retention_s * 1000

    other_job = make_loop(clients, settings, ScriptedProvider([[calls[0]], "done"]), threads, tools=[side_effect],
                          job_id="job_2")  # fmt: skip
    asyncio.run(other_job.run(list(USER)))
    assert RAN.count("x") == 4  # another job runs its tools itself


def test_tool_results_and_arguments_have_no_lone_surrogates(clients: RedisClients, settings: Settings,
                                                            threads: ThreadPoolExecutor) -> None:  # fmt: skip
    sent: list[str] = []
    call = ToolCall("c1", "unpaired", '{"text": "\\ud800 in the arguments"}')
    loop = make_loop(clients, settings, ScriptedProvider([[call], "done"]), threads, tools=[unpaired], sent=sent)
    outcome = asyncio.run(loop.run(list(USER)))
    [result] = [m["content"] for m in outcome.transcript if m["role"] == "tool"]
    assert result == f"{REPLACEMENT} {REPLACEMENT} in the arguments"
    for payload in sent:
        payload.encode("utf-8")  # every event can be stored
    assert any(json.loads(p).get("preview") == result for p in sent)
    assert any(json.loads(p).get("args") == {"text": f"{REPLACEMENT} in the arguments"} for p in sent)
