"""Prompt caching, piece by piece: a turn's prompt starts with the same bytes as the previous turn's (system
context, instructions and shape, the first message, the summary, then the window, which only grows at its end
until it must slide, and then slides in steps); the session's `prompt_cache_key` on every call of a turn; the
provider's cached tokens read into the turn's flat usage and the metric; the scripted model's own accounting."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

import pytest

from parley.shared import telemetry
from parley.shared.settings import Settings
from parley.shared.store import keys, memory
from parley.shared.store.sessions import message_json
from parley.worker.providers import cache_key
from parley.worker.providers.openai import OpenAIProvider, _clean_usage
from parley.worker.turn.context import build_messages, model_sequence
from parley.worker.turn.toolbox import Toolbox
from tests.prompt_cache import PrefixCache
from tests.unit.test_memory import MODEL, SESSION, TENANT, build_session, turn_tokens

AGENT = {"context": "You are a chef.", "instructions": "Keep it short.", "response_shape": {"dish": "string"}}
FIRST = {"role": "assistant", "content": "Hello, I am your chef."}


def _stored(role: str, content: str, **extra: Any) -> dict[str, Any]:
    """A message as a turn commits it (with Parley's bookkeeping, which the model never sees)."""
    return {"role": role, "content": content, "created_at": 123, "job_id": "job_1", "tokens": 9, **extra}


def _bytes(messages: list[dict[str, Any]]) -> list[bytes]:
    """Each message as the provider's JSON body carries it."""
    return [json.dumps(message, separators=(",", ":")).encode() for message in messages]


# -- the order and the bytes ----------------------------------------------------------------


def test_the_context_is_system_instructions_first_message_summary_window_then_the_new_message() -> None:
    summary = {"role": "system", "content": "Summary of the earlier conversation: soup."}
    history = [FIRST, summary, _stored("user", "a stew?"), _stored("assistant", "Yes.")]
    messages = build_messages(AGENT, history, "and bread?")
    assert [(m["role"], m["content"][:12]) for m in messages] == [
        ("system", "You are a ch"), ("system", "Keep it shor"), ("assistant", "Hello, I am "),
        ("system", "Summary of t"), ("user", "a stew?"), ("assistant", "Yes."), ("user", "and bread?"),
    ]  # fmt: skip
    assert "dish" in messages[1]["content"]  # the response shape is part of the instructions, before the history


def test_the_next_turns_prompt_starts_with_the_bytes_of_this_turns_every_call() -> None:
    """What a turn sent the model (its first call, and its call after a tool step) is, byte for byte, the start of
    what the next turn sends, which rebuilds it from what the turn committed."""
    history = [FIRST, _stored("user", "soup?"), _stored("assistant", "Leek soup.")]
    first_call = build_messages(AGENT, history, "how much salt for 6?")
    # The turn's tool step, as the agent loop feeds it back (worker/turn/loop.py)...
    said = {"role": "assistant", "content": "",
            "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "calculator",
                                                                            "arguments": '{"expression":"6*2"}'}}]}
    heard = {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "12", "images": []}
    second_call = [*first_call, *model_sequence([said, heard])]
    # ... and as the next turn reads it back from the history.
    committed = [_stored("user", "how much salt for 6?"), _stored("assistant", "", tool_calls=said["tool_calls"]),
                 _stored("tool", "12", tool_call_id="call_0", name="calculator"), _stored("assistant", "12 g.")]
    next_turn = build_messages(AGENT, [*history, *committed], "thanks")
    assert _bytes(next_turn[: len(first_call)]) == _bytes(first_call)
    assert _bytes(next_turn[: len(second_call)]) == _bytes(second_call)
    assert _bytes(second_call[: len(first_call)]) == _bytes(first_call)


def test_tool_schemas_come_in_the_agents_order_every_turn(settings: Settings) -> None:
    from parley.tools import ToolContext
    from parley.tools.loading import load_registry

    registry = load_registry(settings)
    ctx = ToolContext(tenant="t", session_id="s", job_id="j", redis=None, settings=settings)
    names = ["http_get", "calculator", "current_time"]
    specs = [Toolbox(registry=registry, builtin=names, ctx=ctx, threads=None).specs() for _ in range(2)]
    assert [spec["function"]["name"] for spec in specs[0]] == names
    assert json.dumps(specs[0]) == json.dumps(specs[1])


# -- the window slides in steps ------------------------------------------------------------------


def _start(r: Any, budget: int, step: int) -> int:
    return memory.read_window(r, TENANT, SESSION, budget_tokens=budget, model=MODEL, step_tokens=step).start_index


def _add_turn(r: Any, turn: int) -> None:
    """One more committed turn (as FINISH_TURN leaves it: messages with their tokens, the session's `tokens`)."""
    for role in ("user", "assistant"):
        content = f"{role} {turn}: " + "word " * 10
        tokens = memory.message_tokens({"role": role, "content": content}, MODEL)
        r.rpush(keys.messages(TENANT, SESSION), message_json(role, content, job_id=f"job_{turn}", created_at=turn,
                                                             tokens=tokens))  # fmt: skip
        r.hincrby(keys.session(TENANT, SESSION), memory.TOKENS_FIELD, tokens)


def test_a_sliding_window_keeps_its_start_until_it_must_move_then_moves_by_a_step(clients) -> None:
    r = clients.text
    per_turn = turn_tokens()
    first = memory.message_tokens({"role": "assistant", "content": "Hello! I am the first message."}, MODEL)
    budget = first + 8 * per_turn  # eight whole turns fit
    step = 3 * per_turn
    build_session(r, 8)
    assert _start(r, budget, step) == _start(r, budget, 0) == 1  # everything fits: the window starts at the top
    starts, plain = [], []
    for turn in range(8, 30):
        _add_turn(r, turn)
        starts.append(_start(r, budget, step))
        plain.append(_start(r, budget, 0))
        window = memory.read_window(r, TENANT, SESSION, budget_tokens=budget, model=MODEL, step_tokens=step)
        assert window.tokens <= budget and window.messages[-1]["content"].startswith(f"assistant {turn}:")
        assert window.messages[0]["role"] == "user" and starts[-1] >= plain[-1]
    assert len(set(plain)) == len(plain)  # without steps the start moves every turn: the prefix breaks every turn
    moves = [index for index in range(1, len(starts)) if starts[index] != starts[index - 1]]
    assert len(moves) <= len(starts) // 3 + 1  # with steps of three turns it moves at most every third turn
    assert all(starts[index] - starts[index - 1] >= 2 * 3 for index in moves)  # by a step (3 turns) at least
    assert all(start - base <= 2 * 3 for start, base in zip(starts, plain, strict=True))  # never more than a step


def test_without_room_for_a_step_the_window_is_the_newest_turns_that_fit(clients) -> None:
    r = clients.text
    build_session(r, 12)
    per_turn = turn_tokens()
    first = memory.message_tokens({"role": "assistant", "content": "Hello! I am the first message."}, MODEL)
    budget = first + 2 * per_turn  # two turns fit; a step of ten turns has no turn start past it
    assert _start(r, budget, 10 * per_turn) == _start(r, budget, 0) == 1 + 2 * 10


# -- the key ------------------------------------------------------------------------------------


def _body(provider: OpenAIProvider) -> dict[str, Any]:
    return provider._body("m", [{"role": "user", "content": "hi"}], None, None, None, None)


def test_the_session_is_the_prompt_cache_key_of_the_turns_calls_unless_turned_off(make_settings: Any) -> None:
    provider = OpenAIProvider(make_settings())

    def in_a_turn(session_id: str | None) -> dict[str, Any]:
        cache_key.use_session("acme", session_id)
        return _body(provider)

    assert "prompt_cache_key" not in _body(provider)  # no turn set one (a summary job)
    assert contextvars.copy_context().run(in_a_turn, "sess_1")["prompt_cache_key"] == cache_key.key_for("acme",
                                                                                                        "sess_1")
    assert "prompt_cache_key" not in contextvars.copy_context().run(in_a_turn, None)
    assert "prompt_cache_key" not in _body(provider)  # each task (job) has its own: nothing leaks out
    off = OpenAIProvider(make_settings(PARLEY_MODEL_PROMPT_CACHE_KEY="false"))

    def turned_off() -> dict[str, Any]:
        cache_key.use_session("acme", "sess_1")
        return _body(off)

    assert "prompt_cache_key" not in contextvars.copy_context().run(turned_off)
    asyncio.run(provider.aclose())
    asyncio.run(off.aclose())


def test_the_key_is_a_hash_of_tenant_and_session_that_names_neither() -> None:
    key = cache_key.key_for("acme", "alice@example.com")
    assert len(key) == cache_key.KEY_HEX_CHARS and int(key, 16) >= 0
    assert "acme" not in key and "alice" not in key
    assert key == cache_key.key_for("acme", "alice@example.com")
    assert key != cache_key.key_for("globex", "alice@example.com")  # the same id in another tenant
    assert cache_key.key_for("a", "b\nc") != cache_key.key_for("a\nb", "c")
    assert len(cache_key.key_for("acme", "x" * 4096)) == cache_key.KEY_HEX_CHARS  # OpenAI takes 64 at most


# -- the usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "prompt_tokens_details": {"cached_tokens": 7},
      "completion_tokens_details": {"reasoning_tokens": 1}},
     {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "cached_tokens": 7}),
    ({"prompt_tokens": 9, "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 5},  # DeepSeek's names
     {"prompt_tokens": 9, "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 5, "cached_tokens": 4}),
    ({"prompt_tokens": 9, "prompt_tokens_details": None}, {"prompt_tokens": 9}),  # not reported: no cached_tokens
    ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": "7"}}, {"prompt_tokens": 9}),
    ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": -1}}, {"prompt_tokens": 9}),
    ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": True}}, {"prompt_tokens": 9}),
    ("nonsense", {}),
])  # fmt: skip
def test_cached_tokens_are_read_from_the_nested_usage_into_the_flat_one(usage: Any, expected: dict) -> None:
    assert _clean_usage(usage) == expected


def test_cached_tokens_are_counted_in_their_own_direction(clients: Any, settings: Settings) -> None:
    from tests.unit.test_hardening_edge_metrics import flush, token_samples

    telemetry.PENDING.take()
    telemetry.tokens("Chef", "m", 10, 3, 6)
    telemetry.tokens("Chef", "m", 5, 1, 0)
    telemetry.tokens("Chef", "m", 5, 1)
    flush(clients)
    assert token_samples(clients, settings) == {(("direction", "in"),): 20, (("direction", "out"),): 5,
                                                (("direction", "cached"),): 6}  # fmt: skip


# -- the scripted model's accounting (tests/prompt_cache.py) --------------------------------------

TOOLS = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]


def _request(*texts: str, key: str | None = None, tools: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "system" if i == 0 else "user", "content": t}
                                         for i, t in enumerate(texts)], "tools": tools or TOOLS}  # fmt: skip
    if key:
        body["prompt_cache_key"] = key
    return body


def test_the_scripted_model_serves_the_longest_common_prefix_per_key() -> None:
    cache = PrefixCache()
    assert cache.serve(_request("be brief", "one two three", key="a")) == 0
    assert cache.serve(_request("be brief", "one two three", "four", key="a")) == 5  # all of the first
    assert cache.serve(_request("be brief", "one two five", key="a")) == 4  # up to the word that differs
    assert cache.serve(_request("be brief", "one two three", key="b")) == 0  # another key: another cache
    assert cache.serve(_request("be brief", "one two three")) == 5  # no key: any earlier request
    assert cache.serve(_request("be brief", "one two three", key="a", tools=[*TOOLS, *TOOLS])) == 0  # tools first
    assert cache.serve(_request("be brief ", "one two three", key="a")) == 2  # a byte more ends the prefix
    assert cache.serve({"messages": [{"role": "system", "content": "be brief"}, {"role": "assistant",
                                      "content": "one two three"}], "tools": TOOLS, "prompt_cache_key": "a"}) == 2


def test_the_scripted_model_rounds_down_to_blocks_when_asked() -> None:
    cache = PrefixCache(block=4)
    cache.serve(_request("a b c d e f g", key="k"))
    assert cache.serve(_request("a b c d e f g", "h", key="k")) == 4
