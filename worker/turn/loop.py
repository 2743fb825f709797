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
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from parley.shared import events, telemetry, tracing
from parley.shared.events import EventType
from parley.shared.store import images as session_images
from parley.shared.store.tool_runs import INTERRUPTED, ToolRuns
from parley.shared.text import clean_json
from parley.tools import ToolResult

from ..providers.base import REASONING, ModelError, Provider, ToolCall
from ..providers.fallback import ModelChain, models_of
from .budget import TurnBudget
from .context import model_sequence
from .structured import REPAIR_PROMPT, InvalidAnswer, intent_of, parse_answer, response_format
from .toolbox import Toolbox

log = logging.getLogger("parley.worker.loop")

MAX_PARALLEL_TOOLS = 8
STEP_LIMIT_ANSWER = (
    "I stopped here: answering needed more than {steps} tool steps, the most this agent may take in one turn. "
    "Please narrow the question down or ask again."
)


class Stopped(Exception):
    """The turn was canceled or taken over by a newer attempt: stop without writing anything."""


class WaitForDecisions(Exception):
    """A step's calls include some that wait for a person's decision (the agent's `approval`): the turn pauses.
    `state` is what it goes on from (`Resume.from_state`), `pending` the calls that wait, as the job shows them."""

    def __init__(self, state: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(pending)} call(s) wait for a decision")
        self.state = state
        self.pending = pending


@dataclass
class Resume:
    """Where a paused turn goes on: the step whose calls waited, and the decisions on them."""

    step: int
    transcript: list[dict[str, Any]]
    """The steps before the paused one, as committed (images by ref)."""
    said: dict[str, Any]
    calls: list[ToolCall]
    fields: list[str]
    seen: dict[str, int]
    usage: dict[str, int]
    images: dict[str, str]
    decisions: dict[str, dict[str, Any]]
    """call id -> {approve, reason}."""
    steered: int = 0
    """How many steered messages the transcript holds (`on_busy: steer`)."""

    @classmethod
    def from_state(cls, state: dict[str, Any], decisions: dict[str, dict[str, Any]]) -> Resume:
        return cls(step=state["step"], transcript=state["transcript"], said=state["said"],
                   calls=[ToolCall(**call) for call in state["calls"]], fields=state["fields"], seen=state["seen"],
                   usage=state["usage"], images=state["images"], decisions=decisions,
                   steered=state.get("steered", 0))  # fmt: skip


async def in_thread(threads: Executor | None, func: Callable[..., Any], *args: Any) -> Any:
    """`func(*args)` in the worker's bounded pool (None: the loop's default executor), so blocking or
    CPU-heavy work leaves the event loop free."""
    return await asyncio.get_running_loop().run_in_executor(threads, func, *args)


@dataclass
class Outcome:
    """How the loop ended: the answer, its parsed JSON (agents with a response shape), the token
    counts over every step, the tool steps to commit before the answer, the images of their results
    (ref -> data URI), and the client's tool calls the answer ends with (`/v1/chat/completions` tools)."""

    answer: str
    structured: Any = None
    intent: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    client_calls: list[ToolCall] = field(default_factory=list)
    """When set, the turn ends on these calls of the client's tools: the transcript's last assistant message
    made them, and there is no answer message to commit (`answer` is that message's text)."""
    model: str | None = None
    """The model that answered the last model step (the agent's, or one of its fallback_models); None: none did."""


class AgentLoop:
    def __init__(self, *, provider: Provider, toolbox: Toolbox, agent: dict[str, Any], model: str,
                 emit: Callable[[str], bool], max_steps: int, idle_timeout_s: float | None = None,
                 tool_choice: Any = None, take_steers: Callable[[], Awaitable[list[str] | None]] | None = None,
                 steered: list[str] | None = None, steers_waiting: bool = False,
                 budget: TurnBudget | None = None) -> None:  # fmt: skip
        """`emit` queues one event and says whether the turn is still ours (a cancel or a newer attempt
        also cancels the task running the loop); sync tools, tool-run records and shape checks run in
        the toolbox's `threads`; a model step that sends no content for `idle_timeout_s` ends in a
        timed-out ModelError; `tool_choice` (OpenAI's) goes with the turn's first model step.

        Steering (`on_busy: steer`): before each model call but a fresh attempt's first (unless
        `steers_waiting`), `take_steers` moves the messages waiting to join the turn into it and answers every
        message the turn took so far (None: the turn is no longer ours). `steered`: those an earlier attempt
        took; the ones its transcript does not hold join this attempt's context.

        `budget` (budget.py): checked before each model call (OverBudget), counted after it; its turn cap ends
        the loop before a model step as the step limit does."""
        self.provider = provider
        self.models = ModelChain(provider, models_of(agent, model), first_part_timeout_s=idle_timeout_s)
        """The agent's model, then its fallback_models (worker/providers/fallback.py)."""
        self.toolbox = toolbox
        self.tool_context = toolbox.ctx
        self.agent = agent
        self.model = model
        self.emit = emit
        self.threads = toolbox.threads
        self.max_steps = max_steps
        self.idle_timeout_s = idle_timeout_s
        self.tool_choice = tool_choice
        self.take_steers = take_steers
        self.steered = list(steered or [])
        self.steers_waiting = steers_waiting
        self.budget = budget
        ctx = toolbox.ctx
        self.runs = ToolRuns(ctx.redis, ctx.tenant, ctx.job_id, ctx.settings.retention_s)
        self.tools = toolbox.specs()
        self.shape = agent.get("response_shape") or None
        self.usage: dict[str, int] = {}
        self.images: dict[str, str] = {}
        self.first_text_at: float | None = None
        """When the first piece of text arrived (time.monotonic), for the time-to-first-token metric."""

    async def run(self, messages: list[dict[str, Any]], resume: Resume | None = None) -> Outcome:
        """Raises Stopped, WaitForDecisions, InvalidAnswer (bad shape twice) and the provider's ModelError.
        With `resume`, `messages` end before the paused step, which goes on with its decisions."""
        transcript: list[dict[str, Any]] = []
        first = 1
        if resume is not None:
            self.usage, self.images = dict(resume.usage), dict(resume.images)
            self.runs.restore(resume.seen)
            transcript = list(resume.transcript)
            first = resume.step + 1
            outcome = await self._tool_step(messages, transcript, resume.step, resume.said, resume.calls,
                                            resume.fields, resume.decisions)  # fmt: skip
            if outcome is not None:
                return outcome
        self._join(messages, transcript, self.steered[resume.steered if resume else 0:])
        for step in range(first, self.max_steps + 1):
            if self.budget is not None and self.budget.capped():
                return self._stop_with(self.budget.cap_answer(), transcript)
            if self.take_steers is not None and (step > first or resume is not None or self.steers_waiting):
                taken = await self.take_steers()
                if taken is None:
                    raise Stopped
                self._join(messages, transcript, taken[len(self.steered):])
                self.steered = taken
            text, calls = await self._model_step(messages, tools=self.tools,
                                                 tool_choice=self.tool_choice if step == 1 else None)  # fmt: skip
            if not calls:
                return await self._answer(messages, text, transcript)
            said = {"role": "assistant", "content": text, "tool_calls": [call.as_message_part() for call in calls]}
            if text and not any(self.toolbox.is_client(call.name) for call in calls):
                self._send(events.encode(EventType.LLM_THOUGHT, thought=text, turn=step))
            fields = [self.runs.field(call.name, call.arguments) for call in calls]  # in order: same n every attempt
            outcome = await self._tool_step(messages, transcript, step, said, calls, fields, None)
            if outcome is not None:
                return outcome
        log.info("turn %s reached the step limit (%d)", self.tool_context.job_id, self.max_steps)
        return self._stop_with(STEP_LIMIT_ANSWER.format(steps=self.max_steps), transcript)

    def _stop_with(self, answer: str, transcript: list[dict[str, Any]]) -> Outcome:
        """End the turn before its next model step with `answer` saying why (a limit): a finished turn."""
        self._send(events.encode(EventType.DELTA, content=answer))
        return Outcome(answer=answer, usage=self.usage, transcript=transcript, images=self.images)

    async def _tool_step(self, messages: list[dict[str, Any]], transcript: list[dict[str, Any]], step: int,
                         said: dict[str, Any], calls: list[ToolCall], fields: list[str],
                         decisions: dict[str, dict[str, Any]] | None) -> Outcome | None:  # fmt: skip
        """Run a step's calls of the agent's tools and feed their results back (`messages`, `transcript`).
        The step's calls that need approval and have no decision pause the turn (WaitForDecisions) once the
        others ran; when the step calls tools of the client, the turn ends with those calls (the Outcome)."""
        own = [index for index, call in enumerate(calls) if not self.toolbox.is_client(call.name)]
        if decisions is None:
            for index in own:
                call = calls[index]
                self._send(events.encode(EventType.TOOL_EXECUTION, tool_name=self.toolbox.shown_name(call.name),
                                         args=_shown_args(call.arguments), call_id=call.id))  # fmt: skip
        waiting = [index for index in own if self.toolbox.needs_approval(calls[index].name)
                   and (decisions is None or calls[index].id not in decisions)]  # fmt: skip
        if waiting:
            ready = [index for index in own if index not in waiting]
            await self._run_tools([calls[i] for i in ready], [fields[i] for i in ready], {})  # recorded: replayed
            raise self._wait(step, transcript, said, calls, fields, [calls[i] for i in waiting])
        results = await self._run_tools([calls[i] for i in own], [fields[i] for i in own], decisions or {},
                                        reported=None if decisions is None else set(decisions))  # fmt: skip
        transcript.append(said)
        heard_now: list[dict[str, Any]] = []
        for index, result in zip(own, results, strict=True):
            call = calls[index]
            refs = [session_images.image_ref(uri) for uri in result.images]
            self.images.update(zip(refs, result.images, strict=True))
            heard = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result.content}
            heard_now.append({**heard, "images": list(result.images)})
            transcript.append({**heard, "images": refs} if refs else heard)
        client_calls = [call for call in calls if self.toolbox.is_client(call.name)]
        if not client_calls:
            messages.extend(model_sequence([said, *heard_now]))
        if client_calls:
            return Outcome(answer=said["content"] or "", usage=self.usage, transcript=transcript, images=self.images,
                           client_calls=client_calls)  # fmt: skip
        return None

    @staticmethod
    def _join(messages: list[dict[str, Any]], transcript: list[dict[str, Any]], steered: list[str]) -> None:
        """Steered messages join the turn as user messages, in the model's context and in what it commits."""
        for text in steered:
            messages.append({"role": "user", "content": text})
            transcript.append({"role": "user", "content": text})

    def _wait(self, step: int, transcript: list[dict[str, Any]], said: dict[str, Any], calls: list[ToolCall],
              fields: list[str], waiting: list[ToolCall]) -> WaitForDecisions:  # fmt: skip
        state = {"step": step, "transcript": transcript, "said": said, "fields": fields, "seen": self.runs.seen(),
                 "calls": [{"id": call.id, "name": call.name, "arguments": call.arguments} for call in calls],
                 "usage": self.usage, "images": self.images, "steered": len(self.steered)}  # fmt: skip
        pending = [{"call_id": call.id, "kind": "approval", "tool_name": self.toolbox.shown_name(call.name),
                    "args": _shown_args(call.arguments)} for call in waiting]  # fmt: skip
        return WaitForDecisions(state, pending)

    async def _answer(self, messages: list[dict[str, Any]], text: str, transcript: list[dict[str, Any]]) -> Outcome:
        """The final answer; with a response shape, checked, and repaired once when it does not fit."""
        if self.shape is None:
            return Outcome(answer=text, usage=self.usage, transcript=transcript, images=self.images)
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
                       transcript=transcript, images=self.images)  # fmt: skip

    def _send(self, payload: str) -> None:
        if not self.emit(payload):
            raise Stopped

    async def _model_step(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]],
                          tool_choice: Any = None) -> tuple[str, list[ToolCall]]:  # fmt: skip
        """Stream one model step; its text and the calls it asks for. The idle timeout is a deadline
        pushed back by every piece of content (a piece of a tool call included): a server trickling
        SSE comments or empty chunks never pushes it."""
        pieces: list[str] = []
        loop = asyncio.get_running_loop()
        idle = asyncio.timeout(self.idle_timeout_s)
        if self.budget is not None:
            await self.budget.check()
        try:
            async with idle, self.models.stream(
                messages=messages, temperature=self.agent.get("temperature"),
                max_tokens=self.agent.get("max_tokens"), tools=tools or None,
                response_format=response_format(self.shape), tool_choice=tool_choice,
                on_open=lambda: idle.reschedule(None),  # the chain keeps the deadline of each model's first part
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
        if self.budget is not None:
            await self.budget.count(stream.usage, messages, "".join(pieces), list(stream.tool_calls))
        return "".join(pieces), list(stream.tool_calls)

    async def _run_tools(self, calls: list[ToolCall], fields: list[str], decisions: dict[str, dict[str, Any]],
                         reported: set[str] | None = None) -> list[ToolResult]:  # fmt: skip
        """Run the calls at once (a call with a decision: approved, it runs at most once; denied, it does not
        run), report each result (only those of `reported` call ids, when given: the others were reported
        before the turn paused), in the calls' order."""
        replayed = await in_thread(self.threads, self.runs.recorded, fields)
        running = asyncio.Semaphore(MAX_PARALLEL_TOOLS)

        async def one(call: ToolCall, field: str, recorded: ToolResult | None) -> ToolResult:
            async with running:
                return await self._run_tool(call, field, recorded, decisions.get(call.id))

        results = await asyncio.gather(*map(one, calls, fields, replayed))
        for call, result in zip(calls, results, strict=True):
            if reported is not None and call.id not in reported:
                continue
            shown = self.toolbox.shown_name(call.name)
            telemetry.tool_call(shown if self.toolbox.has(call.name) else "(unknown)", result.ok)
            self._send(events.encode(EventType.TOOL_RESULT, tool_name=shown, preview=result.preview,
                                     call_id=call.id, ok=result.ok))  # fmt: skip
        return list(results)

    async def _run_tool(self, call: ToolCall, field: str, replayed: ToolResult | None,
                        decision: dict[str, Any] | None) -> ToolResult:  # fmt: skip
        """The recorded result when an earlier attempt of the job ran this call, else the tool's, recorded.
        An approved call is claimed before it runs, so an attempt that dies while it runs leaves a result
        saying so: a retry never runs it again."""
        if replayed is not None:
            log.info("turn %s: %s replayed from an earlier attempt, not run again", self.tool_context.job_id, field)
            return replayed
        if decision is not None and not decision.get("approve"):
            reason = decision.get("reason") or "no reason given"
            result = ToolResult.of(False, f"error: a person denied this call ({reason}); it did not run")
            await in_thread(self.threads, self.runs.record, field, result)
            return result
        if decision is not None and not await in_thread(self.threads, self.runs.claim, field):
            return await in_thread(self.threads, lambda: self.runs.recorded([field])[0]) or INTERRUPTED
        shown = self.toolbox.shown_name(call.name)
        result = await tracing.tool(shown, call.id, self.toolbox.run(call.name, call.arguments))
        await in_thread(self.threads, self.runs.record, field, result)
        return result


def _shown_args(arguments: str) -> Any:
    """The call's arguments as the client sees them: the JSON object, or the text when it is not JSON.
    A `"\\ud800"` escape inside the arguments' JSON becomes U+FFFD here, as it does for the tool."""
    try:
        return clean_json(json.loads(arguments))
    except json.JSONDecodeError:
        return arguments
