"""Fallback models: a model step tried with the agent's model, then with each of its `fallback_models` in
order, while the model before it failed in a way another model may not (429, 5xx or a timeout, after the
provider's own retries) and nothing of the step has reached the client.

"Nothing reached the client" is kept by reading ahead: a model counts as answering once its stream gave its
first part (a piece of text, of reasoning or of a function call), and only then is the step handed to the
caller, which sends that part on. An error before that point (the openai provider raises at its request for an
HTTP error and for no answer in time; a stream that breaks or stays silent before its first part) moves on to
the next model; an error after it fails the step as it always did, since the client may have seen some of it.
A bad request (4xx other than 429, e.g. 400 or 401) fails at once: another model would be sent the same.

A `ModelChain` lives for one turn (or one summary job), and remembers which model answered: a later step of the
turn starts from that model, so an outage of the agent's model costs its retries once per turn, not once per
tool step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from parley.shared import telemetry, tracing

from .base import ModelError, ModelStream, Provider

log = logging.getLogger("parley.worker.fallback")

ERROR_TEXT_MAX = 500
"""Characters of each model's error kept in the error of a step every model failed (the job's `error`)."""


def can_fall_back(error: ModelError) -> bool:
    """Whether another model may answer where this one failed: a rate limit (429), a server error (5xx) or a
    timeout. Other 4xx (bad request, auth) and connection errors would fail the same way for the next model."""
    if error.timed_out:
        return True
    return error.status is not None and (error.status == 429 or 500 <= error.status <= 599)


def models_of(agent: dict[str, Any], model: str) -> list[str]:
    """The models a step of `agent` may be answered by, in the order they are tried: `model` (the agent's, or
    PARLEY_MODEL), then its `fallback_models`, each once."""
    models = [model]
    for name in agent.get("fallback_models") or ():
        if isinstance(name, str) and name and name not in models:
            models.append(name)
    return models


class ModelChain:
    """Opens each model step on the first of `models` that answers (see the module's docstring).

    `first_part_timeout_s`: how long a model may take to give its first part before the next is tried (None:
    only the provider's own timeouts). `answered` is the model that answered the last step (None before one
    did); `usage_by_model` the token counts each model reported, summed over the steps it answered."""

    def __init__(self, provider: Provider, models: Iterable[str], first_part_timeout_s: float | None = None) -> None:
        self.provider = provider
        self.models = list(models)
        if not self.models:
            raise ValueError("a model chain needs at least one model")
        self.first_part_timeout_s = first_part_timeout_s
        self.start = 0
        """Index of the model the next step tries first: the one that answered the last step."""
        self.answered: str | None = None
        self.usage_by_model: dict[str, dict[str, int]] = {}
        self.passed_over: str | None = None
        """Why the agent's model was passed over (`telemetry.fallback_reason`), once it was."""

    @asynccontextmanager
    async def stream(self, *, on_open: Callable[[], None] | None = None,
                     **request: Any) -> AsyncGenerator[ModelStream, None]:  # fmt: skip
        """`async with chain.stream(messages=..., ...) as stream`: the step on the first model that answers,
        as `Provider.stream` gives it (`request` is that call's arguments but `model`). Raises the ModelError
        of the last model tried: the model's own when it was the only one, else one naming each model's failure.

        `on_open` is called before each model is tried when the chain keeps a first-part deadline: the caller
        holds its own idle deadline off until the step is handed over (the first part then pushes it back)."""
        failed: list[tuple[str, ModelError]] = []
        last = len(self.models) - 1
        for index in range(self.start, last + 1):
            model = self.models[index]
            async with AsyncExitStack() as stack:
                call = stack.enter_context(tracing.chat(model))  # a `chat <model>` span per model tried
                try:
                    opened = await self._open(stack, model, on_open, request)
                except ModelError as error:
                    call.failed(error)
                    failed.append((model, error))
                    if index == 0:
                        self.passed_over = telemetry.fallback_reason(error.status, error.timed_out)
                    if index == last or not can_fall_back(error):
                        raise _failure(failed, named=last > 0) from error
                    telemetry.model_error(error.status, error.timed_out)  # the last failure is counted by the turn
                    log.warning("model %r failed (%s); trying %r", model, error, self.models[index + 1])
                    continue
                self._answered(index)
                yield opened
                self._count(model, opened.usage)
                call.answered(opened)
                return

    async def _open(self, stack: AsyncExitStack, model: str, on_open: Callable[[], None] | None,
                    request: dict[str, Any]) -> ModelStream:  # fmt: skip
        """The model's step with its first part read ahead (its stream's context entered on `stack`)."""
        if self.first_part_timeout_s is not None and on_open is not None:
            on_open()
        timer = asyncio.timeout(self.first_part_timeout_s)
        try:
            async with timer:
                inner = await stack.enter_async_context(self.provider.stream(model=model, **request))
                parts = inner.raw()
                first = await anext(parts, None)
        except TimeoutError:
            if not timer.expired():
                raise
            raise ModelError(f"the model sent no content for {self.first_part_timeout_s:g} s",
                             timed_out=True) from None  # fmt: skip
        relay = _relay(first, parts)
        stack.push_async_callback(_close, relay)  # before the provider's stream closes (LIFO)
        return ModelStream(relay, inner.usage, inner.tool_calls, inner.response)

    def _answered(self, index: int) -> None:
        self.start = index
        self.answered = self.models[index]
        if index > 0:
            telemetry.model_fallback(self.models[0], self.answered, self.passed_over or telemetry.OTHER)

    def _count(self, model: str, usage: dict[str, Any]) -> None:
        counts = self.usage_by_model.setdefault(model, {})
        for name, count in usage.items():
            if isinstance(count, int):
                counts[name] = counts.get(name, 0) + count


def _failure(failed: list[tuple[str, ModelError]], named: bool) -> ModelError:
    """The error of a step no model answered: an agent with no fallbacks gets its model's own, as before; else
    one naming each model tried and its failure (its status and timeout those of the last, which decide the
    turn's error code as they did with one model)."""
    last = failed[-1][1]
    if not named:
        return last
    text = "; ".join(f"{name}: {str(error)[:ERROR_TEXT_MAX]}" for name, error in failed)
    if len(failed) > 1:
        text = f"no model could answer ({text})"
    return ModelError(text, status=last.status, timed_out=last.timed_out)


async def _relay(first: tuple[str, str] | None,
                 rest: AsyncIterator[tuple[str, str]]) -> AsyncGenerator[tuple[str, str], None]:  # fmt: skip
    """The part read ahead, then the rest of the stream."""
    if first is None:
        return
    yield first
    async for part in rest:
        yield part


async def _close(relay: AsyncGenerator[tuple[str, str], None]) -> None:
    with contextlib.suppress(RuntimeError):  # another task mid-read in it (the provider's stream says why)
        await relay.aclose()
