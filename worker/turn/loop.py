"""The agent loop of one turn: call the model, run the tools it asks for, feed their results back,
until it answers (ReAct), then check the answer's shape.

Events, in order, for each model step (docs/api.md has the whole table):
- `thinking` for reasoning text the provider streams (never kept in the history);
- `delta` for every piece of text as it streams. When the step ends in tool calls its text was
  the model's thought, not the answer: an `llm_thought` with that text follows, and the `delta`s
  after the step's tools start the answer afresh;
- `tool_execution` for each call, then a `tool_result` for each (several calls run at once).
A tool that fails or times out becomes an error result for the model and the client; it never
ends the turn. Nothing is written to the history here: the caller commits `transcript` and the
answer together, once, when the turn has finished.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from parley.shared import events, telemetry
from parley.shared.events import EventType
from parley.shared.store.tool_runs import ToolRuns
from parley.shared.text import clean_json
from parley.tools import ToolContext, ToolRegistry, ToolResult

from ..providers.base import REASONING, ModelError, Provider, ToolCall
from .context import model_message
from .structured import REPAIR_PROMPT, InvalidAnswer, intent_of, parse_answer, response_format

log = logging.getLogger("parley.worker.loop")

MAX_PARALLEL_TOOLS = 8
STEP_LIMIT_ANSWER = (
    "I stopped here: answering needed more than {steps} tool steps, the most this agent may take in one turn. "
    "Please narrow the question down or ask again."
)


class Stopped(Exception):
    """The turn was canceled or taken over by a newer attempt: stop without writing anything."""


async def in_thread(threads: Executor | None, func: Callable[..., Any], *args: Any) -> Any:
    """`func(*args)` in the worker's bounded pool (None: the loop's default executor), so blocking or
    CPU-heavy work leaves the event loop free."""
    return await asyncio.get_running_loop().run_in_executor(threads, func, *args)


@dataclass
class Outcome:
    """How the loop ended: the answer, its parsed JSON (agents with a response shape), the token
    counts over every step, and the tool steps to commit before the answer."""

    answer: str
    structured: Any = None
    intent: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)


class AgentLoop:
    def __init__(self, *, provider: Provider, registry: ToolRegistry, agent: dict[str, Any], model: str,
                 tool_context: ToolContext, emit: Callable[[str], bool], threads: Executor, max_steps: int,
                 idle_timeout_s: float | None = None) -> None:  # fmt: skip
        """`emit` queues one event and says whether the turn is still ours (a cancel or a newer attempt
        also cancels the task running the loop); sync tools, tool-run records and shape checks run in
        `threads`; a model step that sends no content for `idle_timeout_s` ends in a timed-out ModelError."""
        self.provider = provider
        self.registry = registry
        self.agent = agent
        self.model = model
        self.tool_context = tool_context
        self.emit = emit
        self.threads = threads
        self.max_steps = max_steps
        self.idle_timeout_s = idle_timeout_s
        self.runs = ToolRuns(tool_context.redis, tool_context.tenant, tool_context.job_id,
                             tool_context.settings.retention_s)  # fmt: skip
        self.tools = registry.openai_tools(agent.get("tools") or []) if agent.get("tools") else []
        self.shape = agent.get("response_shape") or None
        self.usage: dict[str, int] = {}
        self.first_text_at: float | None = None
        """When the first piece of text arrived (time.monotonic), for the time-to-first-token metric."""

    async def run(self, messages: list[dict[str, Any]]) -> Outcome:
        """Raises Stopped, InvalidAnswer (bad shape twice) and the provider's ModelError."""
        transcript: list[dict[str, Any]] = []
        for step in range(1, self.max_steps + 1):
            text, calls = await self._model_step(messages, tools=self.tools)
            if not calls:
                return await self._answer(messages, text, transcript)
            said = {"role": "assistant", "content": text, "tool_calls": [call.as_message_part() for call in calls]}
            if text:
                self._send(events.encode(EventType.LLM_THOUGHT, thought=text, turn=step))
            results = await self._run_tools(calls)
            messages.append(said)
            transcript.append(said)
            for call, result in zip(calls, results, strict=True):
                heard = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result.content}
                messages.append(model_message(heard))
                transcript.append(heard)
        answer = STEP_LIMIT_ANSWER.format(steps=self.max_steps)
        log.info("turn %s reached the step limit (%d)", self.tool_context.job_id, self.max_steps)
        self._send(events.encode(EventType.DELTA, content=answer))
        return Outcome(answer=answer, usage=self.usage, transcript=transcript)

    async def _answer(self, messages: list[dict[str, Any]], text: str, transcript: list[dict[str, Any]]) -> Outcome:
        """The final answer; with a response shape, checked, and repaired once when it does not fit."""
        if self.shape is None:
            return Outcome(answer=text, usage=self.usage, transcript=transcript)
        try:
            structured = await in_thread(self.threads, parse_answer, self.shape, text)
        except InvalidAnswer as error:
            log.info("turn %s: answer does not fit the shape (%s); asking once for a repair",
                     self.tool_context.job_id, error)  # fmt: skip
            self._send(events.encode(EventType.STATUS, message="repairing", reason=str(error)))
            repair = [*messages, {"role": "assistant", "content": text},
                      {"role": "user", "content": REPAIR_PROMPT.format(reason=error)}]  # fmt: skip
            text, _ = await self._model_step(repair, tools=[])
            structured = await in_thread(self.threads, parse_answer, self.shape, text)
        return Outcome(answer=text, structured=structured, intent=intent_of(structured), usage=self.usage,
                       transcript=transcript)  # fmt: skip

    def _send(self, payload: str) -> None:
        if not self.emit(payload):
            raise Stopped

    async def _model_step(self, messages: list[dict[str, Any]], *,
                          tools: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:  # fmt: skip
        """Stream one model step; its text and the calls it asks for. The idle timeout is a deadline
        pushed back by every piece of content (a piece of a tool call included): a server trickling
        SSE comments or empty chunks never pushes it."""
        pieces: list[str] = []
        loop = asyncio.get_running_loop()
        idle = asyncio.timeout(self.idle_timeout_s)
        try:
            async with idle, self.provider.stream(
                model=self.model, messages=messages, temperature=self.agent.get("temperature"),
                max_tokens=self.agent.get("max_tokens"), tools=tools or None,
                response_format=response_format(self.shape),
            ) as stream:  # fmt: skip
                if self.idle_timeout_s is not None:
                    stream.on_activity = lambda: idle.reschedule(loop.time() + self.idle_timeout_s)  # type: ignore[operator]
                async for kind, piece in stream.parts():
                    if kind == REASONING:
                        self._send(events.encode(EventType.THINKING, message=piece))
                    else:
                        if self.first_text_at is None:
                            self.first_text_at = time.monotonic()
                        pieces.append(piece)
                        self._send(events.encode(EventType.DELTA, content=piece))
        except TimeoutError:
            if not idle.expired():
                raise
            log.warning("turn %s: the model sent nothing for %.0f s; hung up", self.tool_context.job_id,
                        self.idle_timeout_s)  # fmt: skip
            raise ModelError(f"the model sent no content for {self.idle_timeout_s:g} s", timed_out=True) from None
        for name, count in stream.usage.items():
            if isinstance(count, int):
                self.usage[name] = self.usage.get(name, 0) + count
        return "".join(pieces), list(stream.tool_calls)

    async def _run_tools(self, calls: list[ToolCall]) -> list[ToolResult]:
        """Announce every call, run them at once, report every result, in the calls' order."""
        allowed = set(self.agent.get("tools") or [])
        for call in calls:
            self._send(events.encode(EventType.TOOL_EXECUTION, tool_name=call.name, args=_shown_args(call.arguments),
                                     call_id=call.id))  # fmt: skip
        fields = [self.runs.field(call.name, call.arguments) for call in calls]  # in order: same n every attempt
        replayed = await in_thread(self.threads, self.runs.recorded, fields)
        running = asyncio.Semaphore(MAX_PARALLEL_TOOLS)

        async def one(call: ToolCall, field: str, recorded: ToolResult | None) -> ToolResult:
            async with running:
                return await self._run_tool(call, field, recorded, allowed)

        results = await asyncio.gather(*map(one, calls, fields, replayed))
        for call, result in zip(calls, results, strict=True):
            telemetry.tool_call(call.name if call.name in allowed else "(unknown)", result.ok)
            self._send(events.encode(EventType.TOOL_RESULT, tool_name=call.name, preview=result.preview,
                                     call_id=call.id, ok=result.ok))  # fmt: skip
        return list(results)

    async def _run_tool(self, call: ToolCall, field: str, replayed: ToolResult | None,
                        allowed: set[str]) -> ToolResult:  # fmt: skip
        """The recorded result when an earlier attempt of the job ran this call, else the tool's, recorded."""
        if replayed is not None:
            log.info("turn %s: %s replayed from an earlier attempt, not run again", self.tool_context.job_id, field)
            return replayed
        if call.name not in allowed:
            message = f"error: this agent has no tool named {call.name!r}; it may use: {', '.join(sorted(allowed))}"
            return ToolResult.of(False, message)
        result = await self.registry.run(call.name, call.arguments, self.tool_context, self.threads)
        await in_thread(self.threads, self.runs.record, field, result)
        return result


def _shown_args(arguments: str) -> Any:
    """The call's arguments as the client sees them: the JSON object, or the text when it is not JSON.
    A `"\\ud800"` escape inside the arguments' JSON becomes U+FFFD here, as it does for the tool."""
    try:
        return clean_json(json.loads(arguments))
    except json.JSONDecodeError:
        return arguments
