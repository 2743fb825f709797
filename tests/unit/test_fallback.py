"""worker/providers/fallback.py: which failures move a step on to the next model, and that nothing a model sent
before it failed is ever given to the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from parley.shared import telemetry
from parley.worker.providers.base import PROGRESS, TEXT, ModelError, ModelStream
from parley.worker.providers.fallback import ModelChain, can_fall_back, models_of


class Script:
    """What one model does when asked: fail at the request, or stream parts (an exception among them is raised
    there), or wait `silent_s` before anything."""

    def __init__(self, parts: list[Any] | None = None, error: ModelError | None = None, silent_s: float = 0,
                 usage: dict[str, int] | None = None) -> None:  # fmt: skip
        self.parts = parts if parts is not None else [(TEXT, "hi")]
        self.error = error
        self.silent_s = silent_s
        self.usage = usage or {"prompt_tokens": 3, "completion_tokens": 1}


class FakeProvider:
    def __init__(self, scripts: dict[str, list[Script]]) -> None:
        self.scripts = scripts
        self.asked: list[str] = []
        self.closed: list[str] = []

    @asynccontextmanager
    async def stream(self, *, model: str, **request: Any) -> AsyncIterator[ModelStream]:
        self.asked.append(model)
        script = self.scripts[model].pop(0)
        if script.error is not None:
            raise script.error
        usage: dict[str, Any] = {}

        async def parts() -> AsyncGenerator[tuple[str, str], None]:
            await asyncio.sleep(script.silent_s)
            for part in script.parts:
                if isinstance(part, Exception):
                    raise part
                yield part
            usage.update(script.usage)

        try:
            yield ModelStream(parts(), usage)
        finally:
            self.closed.append(model)

    async def aclose(self) -> None:
        pass


async def read(chain: ModelChain, **kwargs: Any) -> list[tuple[str, str]]:
    async with chain.stream(messages=[], temperature=None, max_tokens=None, **kwargs) as stream:
        return [part async for part in stream.parts()]


@pytest.fixture(autouse=True)
def no_pending_metrics() -> None:
    telemetry.PENDING.take()


def counted() -> dict[tuple[str, str], float]:
    return {(name, field): amount for name, field, amount in telemetry.PENDING.take()}


@pytest.mark.parametrize(("error", "falls_back"), [
    (ModelError("x", status=429), True), (ModelError("x", status=500), True), (ModelError("x", status=503), True),
    (ModelError("x", timed_out=True), True), (ModelError("x", status=400), False),
    (ModelError("x", status=401), False), (ModelError("x", status=404), False), (ModelError("x"), False),
])  # fmt: skip
def test_what_falls_back(error: ModelError, falls_back: bool) -> None:
    assert can_fall_back(error) is falls_back


def test_models_of_the_agent_in_order_each_once() -> None:
    assert models_of({}, "a") == ["a"]
    assert models_of({"fallback_models": None}, "a") == ["a"]
    assert models_of({"fallback_models": ["b", "a", "c", "b"]}, "a") == ["a", "b", "c"]


def test_a_503_moves_the_step_to_the_next_model_which_later_steps_start_from() -> None:
    provider = FakeProvider({"a": [Script(error=ModelError("a answered 503", status=503))],
                             "b": [Script([(TEXT, "from "), (TEXT, "b")]), Script()]})  # fmt: skip
    chain = ModelChain(provider, ["a", "b"])
    assert asyncio.run(read(chain)) == [(TEXT, "from "), (TEXT, "b")]
    assert chain.answered == "b"
    assert asyncio.run(read(chain)) == [(TEXT, "hi")]  # the next step: b at once, a not asked again
    assert provider.asked == ["a", "b", "b"]
    assert chain.usage_by_model == {"b": {"prompt_tokens": 6, "completion_tokens": 2}}
    metrics = counted()
    assert metrics[("parley_model_errors", '["503"]')] == 1
    assert metrics[("parley_model_fallbacks", '["","","503"]')] == 2  # model names only with agent labels on


def test_a_bad_request_does_not_fall_back() -> None:
    error = ModelError("the model answered 400: bad", status=400)
    provider = FakeProvider({"a": [Script(error=error)], "b": [Script()]})
    chain = ModelChain(provider, ["a", "b"])
    with pytest.raises(ModelError) as raised:
        asyncio.run(read(chain))
    assert (str(raised.value), raised.value.status) == ("a: the model answered 400: bad", 400)
    assert provider.asked == ["a"]
    assert chain.answered is None
    assert counted() == {}  # the turn counts the error it fails with


def test_every_model_failing_names_each_failure() -> None:
    provider = FakeProvider({"a": [Script(error=ModelError("the model answered 503: down", status=503))],
                             "b": [Script(error=ModelError("the model answered 429: slow down", status=429))]})
    with pytest.raises(ModelError) as raised:
        asyncio.run(read(ModelChain(provider, ["a", "b"])))
    assert str(raised.value) == ("no model could answer (a: the model answered 503: down; "
                                 "b: the model answered 429: slow down)")  # fmt: skip
    assert (raised.value.status, raised.value.timed_out) == (429, False)
    assert counted() == {("parley_model_errors", '["503"]'): 1}


def test_a_failure_after_the_first_part_is_the_steps_failure() -> None:
    broken = ModelError("the model's stream broke off", status=None)
    provider = FakeProvider({"a": [Script([(TEXT, "half"), broken])], "b": [Script()]})
    seen: list[tuple[str, str]] = []

    async def run() -> None:
        async with ModelChain(provider, ["a", "b"]).stream(messages=[], temperature=None, max_tokens=None) as stream:
            async for part in stream.parts():
                seen.append(part)

    with pytest.raises(ModelError) as raised:
        asyncio.run(run())
    assert raised.value is broken
    assert seen == [(TEXT, "half")]
    assert provider.asked == ["a"]
    assert provider.closed == ["a"]


def test_a_timeout_before_the_first_part_falls_back_and_nothing_of_it_is_given() -> None:
    timed_out = ModelError("the model stopped sending mid-answer (read timed out)", timed_out=True)
    provider = FakeProvider({"a": [Script([timed_out])], "b": [Script([(PROGRESS, ""), (TEXT, "b")])]})
    chain = ModelChain(provider, ["a", "b"])
    assert asyncio.run(read(chain)) == [(TEXT, "b")]
    assert provider.closed == ["a", "b"]
    assert counted()[("parley_model_fallbacks", '["","","timeout"]')] == 1


def test_a_silent_model_is_passed_over_after_the_first_part_deadline() -> None:
    provider = FakeProvider({"a": [Script(silent_s=30)], "b": [Script()]})
    chain = ModelChain(provider, ["a", "b"], first_part_timeout_s=0.2)
    holds: list[str] = []
    assert asyncio.run(read(chain, on_open=lambda: holds.append("held"))) == [(TEXT, "hi")]
    assert holds == ["held", "held"]  # once per model tried
    assert provider.closed == ["a", "b"]
    assert chain.answered == "b"


def test_the_only_model_failing_is_its_own_error() -> None:
    provider = FakeProvider({"a": [Script(silent_s=30)]})
    with pytest.raises(ModelError) as raised:
        asyncio.run(read(ModelChain(provider, ["a"], first_part_timeout_s=0.1)))
    assert str(raised.value) == "the model sent no content for 0.1 s"
    assert raised.value.timed_out


def test_activity_is_reported_for_the_part_read_ahead() -> None:
    provider = FakeProvider({"a": [Script([(PROGRESS, ""), (TEXT, "x")])]})
    beats: list[int] = []

    async def run() -> list[str]:
        async with ModelChain(provider, ["a"]).stream(messages=[], temperature=None, max_tokens=None) as stream:
            stream.on_activity = lambda: beats.append(1)
            return [piece async for piece in stream]

    assert asyncio.run(run()) == ["x"]
    assert len(beats) == 2


def test_a_later_step_whose_model_fails_names_it_and_does_not_go_back() -> None:
    provider = FakeProvider({"a": [Script(error=ModelError("the model answered 503: down", status=503))],
                             "b": [Script(), Script(error=ModelError("the model answered 500: oops", status=500))]})
    chain = ModelChain(provider, ["a", "b"])
    assert asyncio.run(read(chain)) == [(TEXT, "hi")]
    with pytest.raises(ModelError) as raised:
        asyncio.run(read(chain))
    assert str(raised.value) == "b: the model answered 500: oops"
    assert provider.asked == ["a", "b", "b"]
