"""Checks the fake model server with the official ``openai`` SDK.

Why: every integration test and benchmark trusts this server to speak OpenAI's wire
format and to fault exactly as scripted; if it drifted, those tests would pass or fail
for the wrong reasons.  Using the real SDK (not hand-written requests) is the point.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.model_server import serve_in_thread

USER_ONLY: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there friend"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    url, stop = serve_in_thread()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def control(base_url: str) -> Iterator[httpx.Client]:
    """Control API client; every test starts from a clean server."""
    with httpx.Client(base_url=base_url, timeout=5) as client:
        client.post("/_control/reset").raise_for_status()
        yield client


def sdk(base_url: str, max_retries: int = 0) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=max_retries, timeout=5)


def script(control: httpx.Client, *steps: dict[str, Any]) -> None:
    control.post("/_control/script", json=list(steps)).raise_for_status()


def test_non_stream_answer_and_usage(base_url: str, control: httpx.Client) -> None:
    with sdk(base_url) as client:
        completion = client.chat.completions.create(model="test-model", messages=USER_ONLY, temperature=0)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello there friend"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 4)
    assert completion.usage.total_tokens == 7
    recorded = control.get("/_control/requests").json()
    assert [(r["body"]["messages"], r["status"]) for r in recorded] == [(USER_ONLY, 200)]
    assert recorded[0]["headers"]["authorization"] == "Bearer x"


def test_stream_reassembles_with_usage_chunk(base_url: str, control: httpx.Client) -> None:
    with (
        sdk(base_url) as client,
        client.chat.completions.create(
            model="test-model",
            messages=USER_ONLY,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream,
    ):
        chunks = list(stream)
    first, *content, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in content] == ["echo:", " hello", " there", " friend"]
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage is not None and usage.usage.total_tokens == 7
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert control.get("/_control/stats").json() == {"requests": 1, "open_streams": 0, "disconnects": 0}


def test_stream_without_usage_and_exact_chunk_count(base_url: str, control: httpx.Client) -> None:
    control.post("/_control/options", json={"chunks": 3}).raise_for_status()
    with sdk(base_url) as client:
        chunks = list(client.chat.completions.create(model="m", messages=USER_ONLY, stream=True))
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    texts = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(texts) == 3 and "".join(t or "" for t in texts) == "echo: hello there friend"


def test_echo_shows_earlier_user_messages(base_url: str, control: httpx.Client) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "I like tea"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "what is my name?"},
    ]
    with sdk(base_url) as client:
        completion = client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == "echo: what is my name? | earlier: my name is Ada / I like tea"


def test_rate_limit_is_retried_by_the_sdk(base_url: str, control: httpx.Client) -> None:
    script(control, {"status": 429, "retry_after": 0})
    with sdk(base_url, max_retries=2) as client:
        completion = client.chat.completions.create(model="m", messages=USER_ONLY)
    assert completion.choices[0].message.content == "echo: hello there friend"
    recorded = control.get("/_control/requests").json()
    assert [r["status"] for r in recorded] == [429, 200]
    assert [r["headers"].get("x-stainless-retry-count") for r in recorded] == ["0", "1"]
    assert recorded[0]["body"] == recorded[1]["body"]


def test_server_error_without_retries_raises(base_url: str, control: httpx.Client) -> None:
    script(control, {"status": 500, "body": {"error": {"message": "boom", "type": "server_error", "code": None}}})
    with sdk(base_url) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=USER_ONLY)
    assert "boom" in str(info.value)
    assert [r["status"] for r in control.get("/_control/requests").json()] == [500]


def test_a_step_for_one_model_is_taken_by_that_models_requests_only(base_url: str, control: httpx.Client) -> None:
    script(control, {"model": "primary", "status": 503}, {"reply": "for anyone"}, {"model": "primary", "status": 429})
    with sdk(base_url) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="primary", messages=USER_ONLY)
        first = client.chat.completions.create(model="fallback", messages=USER_ONLY)
        second = client.chat.completions.create(model="fallback", messages=USER_ONLY)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="primary", messages=USER_ONLY)
    assert first.choices[0].message.content == "for anyone"
    assert second.choices[0].message.content == "echo: hello there friend"  # no step left for it: the default
    recorded = control.get("/_control/requests").json()
    assert [(r["body"]["model"], r["status"]) for r in recorded] == [
        ("primary", 503), ("fallback", 200), ("fallback", 200), ("primary", 429)]
    assert control.post("/_control/script", json={"model": 3}).status_code == 400


def test_reply_override_and_delay(base_url: str, control: httpx.Client) -> None:
    script(control, {"reply": "exact text here", "delay_ms": 100}, {"reply": "streamed reply", "chunk_delay_ms": 1})
    with sdk(base_url) as client:
        started = time.perf_counter()
        completion = client.chat.completions.create(model="m", messages=USER_ONLY)
        assert time.perf_counter() - started >= 0.1
        chunks = list(client.chat.completions.create(model="m", messages=USER_ONLY, stream=True))
    assert completion.choices[0].message.content == "exact text here"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "streamed reply"


def test_drop_after_chunks_breaks_the_stream(base_url: str, control: httpx.Client) -> None:
    script(control, {"drop_after_chunks": 2})
    received: list[str] = []
    with sdk(base_url) as client, pytest.raises((openai.APIError, httpx.HTTPError)) as info:
        for chunk in client.chat.completions.create(model="m", messages=USER_ONLY, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(info.value, openai.APITimeoutError | httpx.TimeoutException), "stalled, not dropped"
    assert received == ["", "echo:", " hello"]


def test_hang_then_client_close_counts_a_disconnect(base_url: str, control: httpx.Client) -> None:
    script(control, {"hang": True})
    with sdk(base_url) as client:
        stream = client.chat.completions.create(model="m", messages=USER_ONLY, stream=True)
        assert next(stream).choices[0].delta.role == "assistant"
        assert next(stream).choices[0].delta.content == "echo:"
        assert control.get("/_control/stats").json()["open_streams"] == 1
        stream.close()
    deadline = time.monotonic() + 2
    while (stats := control.get("/_control/stats").json())["disconnects"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats == {"requests": 1, "open_streams": 0, "disconnects": 1}


def test_reset_clears_script_requests_and_options(base_url: str, control: httpx.Client) -> None:
    control.post("/_control/options", json={"chunks": 2, "chunk_delay_ms": 1}).raise_for_status()
    script(control, {"status": 503})
    with sdk(base_url) as client, pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="m", messages=USER_ONLY)
    script(control, {"reply": "never used"})
    control.post("/_control/reset").raise_for_status()
    assert control.get("/_control/requests").json() == []
    assert control.get("/_control/script").json() == []
    assert control.get("/_control/stats").json() == {"requests": 0, "open_streams": 0, "disconnects": 0}
    assert control.get("/_control/options").json() == {"chunk_delay_ms": 0, "first_chunk_delay_ms": 0, "chunks": None,
                                                       "echo_words": None, "cache_block": 1}
    with sdk(base_url) as client:
        chunks = list(client.chat.completions.create(model="m", messages=USER_ONLY, stream=True))
    assert len(chunks) == 6  # role + one chunk per word + finish: default pacing is back


def test_models_and_control_validation(base_url: str, control: httpx.Client) -> None:
    with sdk(base_url) as client:
        assert [m.id for m in client.models.list()] == ["test-model"]
    assert control.post("/_control/script", json=[{"stauts": 429}]).status_code == 400
    assert control.post("/_control/options", json={"chunks": -1}).status_code == 400
    assert control.get("/_control/script").json() == []


def test_cli_prints_listening_line_and_serves() -> None:
    """Integration tests start it as a process and parse this exact line for the URL."""
    command = [sys.executable, "-m", "tests.model_server", "--port", "0", "--chunks", "2"]
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        chunks: list[str | None] = []
        try:
            line = proc.stdout.readline()
            match = re.fullmatch(r"model-server listening on (http://127\.0\.0\.1:\d+)\n", line)
            if match:
                with sdk(match[1]) as client:
                    stream = client.chat.completions.create(model="m", messages=USER_ONLY, stream=True)
                    chunks = [c.choices[0].delta.content for c in stream]
        finally:
            proc.terminate()
            _, errors = proc.communicate(timeout=5)
    assert match, f"stdout={line!r} stderr={errors!r}"
    assert chunks == ["", "echo: hello ", "there friend", None]
    assert errors == ""


def test_tool_calls_and_reasoning_stream_as_openai_streams_them(base_url: str, control: httpx.Client) -> None:
    script(control, {"reasoning": "think first", "reply": "Let me look.",
                     "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}},
                                    {"name": "current_time", "arguments": "{}"}]})  # fmt: skip
    with sdk(base_url) as client:
        stream = client.chat.completions.create(model="test-model", messages=USER_ONLY, stream=True)
        chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Let me look."
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "think first"
    fragments = [call for d in deltas for call in d.tool_calls or ()]
    names = {f.index: f.function.name for f in fragments if f.function and f.function.name}
    arguments = {i: "".join((f.function.arguments if f.function else None) or "" for f in fragments if f.index == i)
                 for i in names}  # fmt: skip
    assert names == {0: "calculator", 1: "current_time"}
    assert arguments == {0: '{"expression": "1+1"}', 1: "{}"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_provider_puts_streamed_calls_together(base_url: str, control: httpx.Client, make_settings: Any) -> None:
    from parley.worker.providers.base import REASONING, TEXT
    from parley.worker.providers.openai import OpenAIProvider

    script(control, {"reasoning": "hmm", "reply": "Checking.",
                     "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]})  # fmt: skip
    provider = OpenAIProvider(make_settings(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="x"))
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]

    async def read() -> tuple[list[tuple[str, str]], Any]:
        async with provider.stream(model="m", messages=[{"role": "user", "content": "hi"}], temperature=None,
                                   max_tokens=None, tools=tools) as stream:  # fmt: skip
            parts = [part async for part in stream.parts()]
        await provider.aclose()
        return parts, stream

    parts, stream = asyncio.run(read())
    assert "".join(p for kind, p in parts if kind == REASONING) == "hmm"
    assert "".join(p for kind, p in parts if kind == TEXT) == "Checking."
    calls = [(c.id, c.name, c.arguments) for c in stream.tool_calls]
    assert calls == [("call_0", "calculator", '{"expression": "6*7"}')]
    sent = control.get("/_control/requests").json()[-1]["body"]
    assert sent["tools"] == tools


def test_keepalive_stream_sends_only_comments_after_the_role_chunk(base_url: str, control: httpx.Client) -> None:
    script(control, {"keepalive_ms": 20})
    lines: list[str] = []
    body = {"model": "m", "messages": USER_ONLY, "stream": True}
    with httpx.Client(timeout=5) as http, http.stream("POST", f"{base_url}/v1/chat/completions", json=body) as reply:
        for line in reply.iter_lines():
            lines.append(line)
            if lines.count(": keep-alive") == 5:
                break
    data = [line for line in lines if line.startswith("data:")]
    assert len(data) == 1 and '"content":""' in data[0]
    assert set(lines) - set(data) <= {": keep-alive", ""}
    assert control.post("/_control/script", json={"keepalive_ms": 0}).status_code == 400


def test_a_lone_surrogate_in_a_reply_travels_as_a_json_escape(base_url: str, control: httpx.Client) -> None:
    control.post("/_control/script", content=json.dumps({"reply": "a \ud800 b"}),
                 headers={"Content-Type": "application/json"}).raise_for_status()  # fmt: skip
    body = {"model": "m", "messages": USER_ONLY, "stream": True}
    with httpx.Client(timeout=5) as http:
        text = http.post(f"{base_url}/v1/chat/completions", json=body).text
    assert '"content":" \\ud800"' in text


def test_cached_tokens_by_prefix_with_tools_only_steps_and_short_echoes(base_url: str, control: httpx.Client) -> None:
    """What bench/cache.py relies on: cached tokens in the SDK's usage (per prompt_cache_key), a `with_tools` step
    left for a request that offers tools (a summary job's request offers none), echoes cut to `echo_words`."""
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    control.post("/_control/options", json={"echo_words": 3}).raise_for_status()
    script(control, {"with_tools": True, "reply": "scripted"})
    longer: list[ChatCompletionMessageParam] = [*USER_ONLY, {"role": "assistant", "content": "ok"},
                                                {"role": "user", "content": "and more"}]
    with sdk(base_url) as client:
        plain = client.chat.completions.create(model="m", messages=USER_ONLY, extra_body={"prompt_cache_key": "k"})
        offered = client.chat.completions.create(model="m", messages=longer, tools=tools,
                                                 extra_body={"prompt_cache_key": "k"})  # fmt: skip
        again = client.chat.completions.create(model="m", messages=longer, tools=tools,
                                               extra_body={"prompt_cache_key": "k"})  # fmt: skip
    assert plain.choices[0].message.content == "echo: hello there"  # the default answer, cut to three words
    assert offered.choices[0].message.content == "scripted"
    assert plain.usage is not None and plain.usage.prompt_tokens_details is not None
    assert plain.usage.prompt_tokens_details.cached_tokens == 0
    assert offered.usage is not None and offered.usage.prompt_tokens_details is not None
    assert offered.usage.prompt_tokens_details.cached_tokens == 0  # its tools come first: they differ
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens == 6
    assert control.get("/_control/requests").json()[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 6}
