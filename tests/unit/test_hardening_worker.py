"""Hostile models and tools, worker side: idle and timed-out streams, lone surrogates, tool runs replayed.

The model is the scripted server (tests/model_server.py) on a thread, spoken to by the real
OpenAIProvider; Redis is fakeredis.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.text import REPLACEMENT
from parley.tools import ToolContext, ToolRegistry, tool
from parley.tools.registry import TOOL_ATTRIBUTE
from parley.worker.providers.base import REASONING, TEXT, ModelError, ModelStream, ToolCall
from parley.worker.providers.openai import OpenAIProvider
from parley.worker.turn.cancel_watch import CancelWatch
from parley.worker.turn.loop import AgentLoop, Stopped
from tests.model_server import serve_in_thread

LONE = "\ud800"
USER = [{"role": "user", "content": "hi"}]


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


def script(control: httpx.Client, *steps: dict[str, Any]) -> None:
    """Steps as JSON with ASCII escapes: a lone surrogate travels as `"\\ud800"`, as Python writes it."""
    control.post("/_control/script", content=json.dumps(list(steps)),
                 headers={"Content-Type": "application/json"}).raise_for_status()  # fmt: skip


@pytest.fixture
def provider(base_url: str, make_settings: Callable[..., Settings]) -> OpenAIProvider:
    return OpenAIProvider(make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x",
                                        PARLEY_MODEL_MAX_RETRIES="0", PARLEY_MODEL_TIMEOUT_S="0.5"))  # fmt: skip


def test_a_read_timeout_mid_stream_is_a_model_timeout(provider: OpenAIProvider, control: httpx.Client) -> None:
    script(control, {"chunk_delay_ms": 3000})  # the role chunk at once, then nothing for 3 s
    with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
        with pytest.raises(ModelError) as info:
            list(stream.parts())
    assert info.value.timed_out, str(info.value)


def test_model_text_reasoning_and_calls_have_no_lone_surrogates(provider: OpenAIProvider,
                                                                control: httpx.Client) -> None:  # fmt: skip
    script(control, {"reasoning": f"think {LONE}", "reply": f"say {LONE}",
                     "tool_calls": [{"name": f"calc{LONE}", "arguments": f'{{"x": "{LONE}"}}'}]})  # fmt: skip
    with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
        parts = list(stream.parts())
    assert "".join(p for kind, p in parts if kind == REASONING) == f"think {REPLACEMENT}"
    assert "".join(p for kind, p in parts if kind == TEXT) == f"say {REPLACEMENT}"
    [call] = stream.tool_calls
    assert call.name == f"calc{REPLACEMENT}"
    assert call.arguments == f'{{"x": "{REPLACEMENT}"}}'
    for text in [p for _, p in parts] + [call.name, call.arguments]:
        text.encode("utf-8")  # would raise on a lone surrogate


def test_a_model_error_message_has_no_lone_surrogate(provider: OpenAIProvider, control: httpx.Client) -> None:
    script(control, {"status": 400, "body": {"error": {"message": f"bad {LONE}", "type": "x"}}})
    with pytest.raises(ModelError) as info:
        with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None):
            pass
    str(info.value).encode("utf-8")
    assert REPLACEMENT in str(info.value)


# --------------------------------------------------------------------------- the idle timeout


def _keep(sent: list[str], payload: str) -> bool:
    sent.append(payload)
    return True


def make_loop(clients: RedisClients, settings: Settings, provider: Any, *, tools: Sequence[Any] = (),
              job_id: str = "job_1", idle_timeout_s: float | None = None,
              sent: list[str] | None = None) -> AgentLoop:  # fmt: skip
    registry = ToolRegistry(getattr(fn, TOOL_ATTRIBUTE) for fn in tools)
    ctx = ToolContext(tenant="alice", session_id="s1", job_id=job_id, redis=clients.text, settings=settings)
    out = sent if sent is not None else []
    return AgentLoop(provider=provider, registry=registry, agent={"name": "a", "tools": registry.names()},
                     model="m", tool_context=ctx, emit=lambda payload: _keep(out, payload),
                     is_stopped=lambda: False, max_steps=4, idle_timeout_s=idle_timeout_s)  # fmt: skip


def test_a_stream_of_keep_alive_comments_is_hung_up_as_a_timeout(
        base_url: str, control: httpx.Client, clients: RedisClients,
        make_settings: Callable[..., Settings]) -> None:  # fmt: skip
    """SSE comments never reach the loop, so only the watcher thread can see the stream is idle."""
    settings = make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x", PARLEY_MODEL_MAX_RETRIES="0",
                             PARLEY_MODEL_TIMEOUT_S="30")  # fmt: skip
    script(control, {"keepalive_ms": 50})
    loop = make_loop(clients, settings, OpenAIProvider(settings), idle_timeout_s=0.6)
    started = time.monotonic()
    safety = threading.Timer(10, loop.hang_up)  # without the idle timeout the stream would never end
    safety.start()
    try:
        with CancelWatch(lambda: True, loop.hang_up, interval_s=0.1, on_check=loop.hang_up_if_idle):
            with pytest.raises(ModelError) as info:
                loop.run(list(USER))
    finally:
        safety.cancel()
    assert info.value.timed_out
    assert "no content for 0.6 s" in str(info.value)
    assert time.monotonic() - started < 5


def test_a_cancel_is_still_a_cancel_not_a_timeout(base_url: str, control: httpx.Client, clients: RedisClients,
                                                  make_settings: Callable[..., Settings]) -> None:  # fmt: skip
    settings = make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x", PARLEY_MODEL_MAX_RETRIES="0")
    script(control, {"keepalive_ms": 50})
    ours = threading.Event()
    ours.set()
    loop = make_loop(clients, settings, OpenAIProvider(settings), idle_timeout_s=60)
    loop.is_stopped = lambda: not ours.is_set()
    threading.Timer(0.5, ours.clear).start()
    with CancelWatch(ours.is_set, loop.hang_up, interval_s=0.1, on_check=loop.hang_up_if_idle):
        with pytest.raises(Stopped):
            loop.run(list(USER))


def test_a_failing_check_hook_does_not_stop_the_shared_watcher() -> None:
    hung_up = threading.Event()
    ours = threading.Event()
    ours.set()

    def broken(now: float) -> None:
        raise RuntimeError("boom")

    with CancelWatch(lambda: True, lambda: None, interval_s=0.05, on_check=broken), \
            CancelWatch(ours.is_set, hung_up.set, interval_s=0.05):  # fmt: skip
        time.sleep(0.2)
        ours.clear()
        assert hung_up.wait(5)


def test_a_late_hang_up_after_the_step_ended_does_nothing() -> None:
    """A step read to its end may have given its connection to another turn: closing it must not touch it."""
    closed: list[bool] = []
    stream = ModelStream(iter([(TEXT, "a")]), close=lambda: closed.append(True))
    assert list(stream) == ["a"]
    stream.close(idle=True)
    assert closed == [] and not stream.idle


# --------------------------------------------------------------------------- tools


class ScriptedProvider:
    """A provider that answers each step from a list: tool calls, or text."""

    def __init__(self, steps: list[list[ToolCall] | str]) -> None:
        self.steps = list(steps)

    @contextmanager
    def stream(self, **_: Any) -> Iterator[ModelStream]:
        step = self.steps.pop(0)
        if isinstance(step, str):
            yield ModelStream(iter([(TEXT, step)]))
        else:
            yield ModelStream(iter(()), tool_calls=list(step))


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


def test_a_retried_attempt_replays_recorded_tool_runs(clients: RedisClients, settings: Settings) -> None:
    RAN.clear()
    calls = [ToolCall("c1", "side_effect", '{"item": "x"}'), ToolCall("c2", "side_effect", '{ "item":"x" }'),
             ToolCall("c3", "side_effect", '{"item": "y"}')]  # fmt: skip
    first = make_loop(clients, settings, ScriptedProvider([calls, "done"]), tools=[side_effect])
    assert first.run(list(USER)).answer == "done"
    assert sorted(RAN) == ["x", "x", "y"]  # two identical calls in one attempt both run

    again: list[str] = []
    retry = make_loop(clients, settings, ScriptedProvider([calls[::-1], [calls[0]], "done"]), tools=[side_effect],
                      sent=again)  # fmt: skip
    outcome = retry.run(list(USER))
    assert sorted(RAN) == ["x", "x", "x", "y"]  # only the third identical call is new
    results = [m["content"] for m in outcome.transcript if m["role"] == "tool"]
    assert results == ["did y", "did x", "did x", "did x"]
    runs = clients.text.hgetall(keys.tool_runs("alice", "job_1"))
    assert len(runs) == 4 and all(field.startswith("side_effect:") for field in runs)
    assert 0 < clients.text.pttl(keys.tool_runs("alice", "job_1")) <= settings.retention_s * 1000

    other_job = make_loop(clients, settings, ScriptedProvider([[calls[0]], "done"]), tools=[side_effect],
                          job_id="job_2")  # fmt: skip
    other_job.run(list(USER))
    assert RAN.count("x") == 4  # another job runs its tools itself


def test_tool_results_and_arguments_have_no_lone_surrogates(clients: RedisClients, settings: Settings) -> None:
    sent: list[str] = []
    call = ToolCall("c1", "unpaired", '{"text": "\\ud800 in the arguments"}')
    loop = make_loop(clients, settings, ScriptedProvider([[call], "done"]), tools=[unpaired], sent=sent)
    outcome = loop.run(list(USER))
    [result] = [m["content"] for m in outcome.transcript if m["role"] == "tool"]
    assert result == f"{REPLACEMENT} {REPLACEMENT} in the arguments"
    for payload in sent:
        payload.encode("utf-8")  # every event can be stored
    assert any(json.loads(p).get("preview") == result for p in sent)
    assert any(json.loads(p).get("args") == {"text": f"{REPLACEMENT} in the arguments"} for p in sent)
