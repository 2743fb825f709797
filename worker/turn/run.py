"""The RQ job that runs one chat turn, and the callback that ends a turn RQ gives up on (RQ finds
both at `parley.worker.turn`, see __init__.py; both get the worker's runtime as `rt`, see
worker/runtime.py).

A turn: mark it started (counting the attempt), rebuild the context from Redis (what the session
remembers: worker/memory/window.py), run the agent loop (loop.py: the model's answer streamed as
`delta` events, its tool calls run and fed back), then commit the user message, the tool steps and
the answer, the job's result and its last events in one atomic step. Nothing reaches the history
before that step, so a worker that dies mid-turn, even between two tool steps, leaves nothing
half-written; RQ runs the turn again elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from parley.shared import events, logs, telemetry, tracing
from parley.shared.budgets import usage_tokens
from parley.shared.clock import now_ms
from parley.shared.events import ErrorCode, EventType
from parley.shared.store import images as session_images
from parley.shared.store import keys
from parley.shared.store.sessions import message_json
from parley.shared.store.worker_turns import Attempt
from parley.shared.tokens import count_message
from parley.tools import ToolContext

from ..memory.regenerate import NOTHING_TO_REGENERATE, as_regenerated
from ..memory.window import agent_model, maybe_schedule_summary, remembered
from ..providers import cache_key
from ..providers.base import ModelError
from ..runtime import Runtime
from .budget import OverBudget, TurnBudget, max_steps
from .context import CLOSING_MESSAGE, build_messages, exchanges_so_far, model_sequence
from .control import CURRENT
from .loop import AgentLoop, Outcome, Resume, Stopped, WaitForDecisions, in_thread
from .outbox import Outbox
from .spent import Spent
from .structured import InvalidAnswer
from .toolbox import Toolbox, split_names

log = logging.getLogger("parley.worker.turn")


@logs.turn_context
@tracing.traced_turn
async def run_turn(tenant: str, job_id: str, *, rt: Runtime) -> str:
    """Run one turn; returns how it ended (RQ keeps that as the job's result)."""
    state, attempt, record = await rt.worker_turns.start(tenant, job_id)
    started = time.monotonic()
    if state != "started":
        log.info("turn %s not run: %s", job_id, state)
        return state  # 'waiting': a stale run of a turn that waits for decisions
    turn = Attempt(tenant, job_id, attempt)
    tracing.turn_started(record, attempt)  # the `invoke_agent` span, in the trace of the request that queued it
    control = CURRENT.get()
    if control is not None:
        control.started(turn)
    logs.bind(session_id=record.get("session_id"))
    cache_key.use_session(tenant, None if "history" in record else record.get("session_id"))  # the session's key
    if record.get("regenerate"):  # the last user message, answered again (worker/memory/regenerate.py)
        regenerated = await in_thread(rt.threads, as_regenerated, rt, tenant, record)
        if regenerated is None:
            return await _fail(rt, turn, record, NOTHING_TO_REGENERATE, ErrorCode.NOTHING_TO_REGENERATE)
        record = regenerated
    images = json.loads(record.get("images") or "[]")
    agent, history, exchanges = await _context(rt, tenant, record, images)
    if agent is None:
        return await _fail(rt, turn, record, "the session's agent no longer exists", ErrorCode.AGENT_MISSING)
    agent = for_this_turn(agent, record)
    model = agent_model(rt, agent)
    spent = Spent(model)
    if agent.get("max_turns") and exchanges >= agent["max_turns"]:
        if not await rt.worker_turns.emit(turn, [events.encode(EventType.DELTA, content=CLOSING_MESSAGE)]):
            return "stopped"
        return await _commit(rt, turn, agent, record, Outcome(answer=CLOSING_MESSAGE), model, spent)
    resume = _resume(record)
    messages = build_messages(agent, history, record["message"], images, tool_results=_tool_results(record))
    if resume is not None:
        shown = [{**item, "images": [resume.images[ref] for ref in item["images"]]} if item.get("images") else item
                 for item in resume.transcript]  # fmt: skip
        messages.extend(model_sequence(shown))
    try:
        outcome = await _run_or_count(rt, turn, agent, model, record, messages, started, resume, spent)
    except ModelError as error:
        telemetry.model_error(error.status, error.timed_out)
        code = ErrorCode.MODEL_TIMEOUT if error.timed_out else ErrorCode.MODEL_FAILED
        return await _fail(rt, turn, record, str(error), code, spent.failed(rt.settings))
    except (InvalidAnswer, OverBudget) as error:
        return await _fail(rt, turn, record, *_loop_failure(error), spent.failed(rt.settings))
    if outcome is None:
        log.info("turn %s attempt %s stopped: canceled or superseded", job_id, attempt)
        return "stopped"
    if isinstance(outcome, WaitForDecisions):
        return await _pause(rt, turn, outcome)
    return await _commit(rt, turn, agent, record, outcome, model, spent)


async def _run_or_count(rt: Runtime, turn: Attempt, agent: dict[str, Any], model: str, record: dict[str, str],
                        messages: list[dict[str, Any]], started: float, resume: Resume | None,
                        spent: Spent) -> Outcome | WaitForDecisions | None:  # fmt: skip
    """`_run_loop`; when the turn stops there (canceled, or superseded by a newer attempt), what it spent is counted
    if it was canceled (`_count_if_canceled`), whether an emit found it (None) or the engine's watch (the task is
    cancelled with a `Stopped` reason)."""
    try:
        outcome = await _run_loop(rt, turn, agent, model, record, messages, started, resume, spent)
    except asyncio.CancelledError:
        control = CURRENT.get()
        if control is not None and isinstance(control.reason, Stopped):
            await _count_if_canceled(rt, turn, spent)
        raise
    if outcome is None:
        await _count_if_canceled(rt, turn, spent)
    return outcome


async def _count_if_canceled(rt: Runtime, turn: Attempt, spent: Spent) -> None:
    """A turn canceled while this attempt ran it: the tokens it spent count in its tenant's usage all the same
    (the cancel's commit, a web's, knew none), once, and only for the turn's last attempt (COUNT_CANCELED checks
    both). A Redis failure loses the count (logged)."""
    usage = spent.failed(rt.settings)
    if usage is None:
        return
    try:
        if await rt.worker_turns.count_canceled(turn, usage):
            log.info("turn %s was canceled: its %d prompt and %d completion tokens counted", turn.job_id,
                     usage["prompt_tokens"], usage["completion_tokens"])  # fmt: skip
    except RedisError as error:
        log.warning("could not count the usage of canceled turn %s: %s", turn.job_id, error)


def _loop_failure(error: InvalidAnswer | OverBudget) -> tuple[str, ErrorCode]:
    """The failed turn's error and code for what ended its loop: a bad answer twice, or the tenant's budget."""
    if isinstance(error, OverBudget):
        return str(error), ErrorCode.BUDGET_EXCEEDED
    return f"the model's answer did not fit the agent's response shape twice: {error}", ErrorCode.INVALID_ANSWER


def for_this_turn(agent: dict[str, Any], record: dict[str, str]) -> dict[str, Any]:
    """The agent as this turn runs it: the request's own instructions after the agent's, its response shape
    instead of the agent's (the Responses API's `instructions` and `text.format`)."""
    if record.get("instructions"):
        joined = "\n\n".join(filter(None, (agent.get("instructions"), record["instructions"])))
        agent = {**agent, "instructions": joined}
    if "response_shape" in record:
        agent = {**agent, "response_shape": json.loads(record["response_shape"])}
    return agent


def _resume(record: dict[str, str]) -> Resume | None:
    """Where a turn resumed after decisions goes on (None for a turn that never paused)."""
    if not record.get("paused"):
        return None
    return Resume.from_state(json.loads(record["paused"]), json.loads(record.get("decisions") or "{}"))


def _tool_results(record: dict[str, str]) -> list[dict[str, str]] | None:
    """The client's results of its tools' calls a turn goes on from (`/v1/chat/completions`), if any."""
    return json.loads(record["tool_results"]) if record.get("tool_results") else None


async def _pause(rt: Runtime, turn: Attempt, wait: WaitForDecisions) -> str:
    """The turn waits for people's decisions: its state to Redis (PAUSE_TURN), its slot free."""
    shown = [events.encode(EventType.APPROVAL_REQUIRED, call_id=call["call_id"], tool_name=call["tool_name"],
                           args=call["args"]) for call in wait.pending]  # fmt: skip
    control = CURRENT.get()
    if control is not None:
        control.committing = True  # the pause ends the attempt itself, as a commit does
    waiting = events.encode(EventType.STATUS, message="waiting")
    paused = await rt.worker_turns.pause(turn, paused=json.dumps(wait.state), pending=json.dumps(wait.pending),
                                         events_out=[*shown, waiting])  # fmt: skip
    log.info("turn %s waits for %d decision(s)", turn.job_id, len(wait.pending))
    return "waiting" if paused else "stopped"


async def _context(rt: Runtime, tenant: str, record: dict[str, str],
                   images: list[str]) -> tuple[dict[str, Any] | None, list[Any], int]:  # fmt: skip
    """The agent, the history the turn remembers and the session's exchanges so far: one READ_CONTEXT,
    then the window built from it in the worker's pool (token counts; older messages or images read
    there when the window needs them)."""
    read = await rt.worker_turns.read_context(tenant, record["agent_id"], record["session_id"])
    agent = read.agent
    if agent is None:
        return None, [], 0
    if "history" in record:  # a turn that brought its own conversation (no session memory)
        history = json.loads(record["history"])
        return agent, history, exchanges_so_far(history)
    model = agent_model(rt, agent)
    end = int(record["regenerate_at"]) if "regenerate_at" in record else None
    history, exchanges = await in_thread(rt.threads, remembered, rt, tenant, record, agent, model, images,
                                         read.prefetched(model), end)  # fmt: skip
    if end is not None and read.total > end + 1:
        exchanges = max(0, exchanges - 1)  # the exchange answered again is not one more
    return agent, history, exchanges


async def _run_loop(rt: Runtime, turn: Attempt, agent: dict[str, Any], model: str, record: dict[str, str],
                    messages: list[dict[str, Any]], started: float,
                    resume: Resume | None, spent: Spent) -> Outcome | WaitForDecisions | None:  # fmt: skip
    """The agent loop with its events sent through an outbox; None when the turn was found canceled or
    superseded by an emit. (Found so by the engine's watch instead, the task is cancelled.) Every event
    queued is sent before this returns, so the turn's last events follow them. `spent` gets what the loop
    spent, however it ends."""
    control = CURRENT.get()

    def stop(error: BaseException | None) -> None:
        if control is not None:
            control.stop(error or Stopped())

    async def send(batch: list[str]) -> bool:
        ours = await rt.worker_turns.emit(turn, batch)
        if ours and control is not None:
            control.confirm()  # the emit's fence said the attempt still runs: the watch need not ask
        return ours

    outbox = Outbox(send, stop)

    async def take_steers() -> list[str] | None:
        await outbox.sent()  # the steered events follow every event the turn sent before them
        return await rt.worker_turns.take_steers(turn)

    ctx = ToolContext(tenant=turn.tenant, session_id=record["session_id"], job_id=turn.job_id, redis=rt.clients.text,
                      settings=rt.settings, memory="history" not in record)  # brought its own history: no notes
    loop = AgentLoop(
        provider=rt.provider, toolbox=await _toolbox(rt, agent, record, ctx), agent=agent, model=model,
        emit=outbox.put, max_steps=max_steps(agent, rt.settings), idle_timeout_s=rt.settings.model_idle_timeout_s,
        tool_choice=json.loads(record["tool_choice"]) if record.get("tool_choice") and resume is None else None,
        take_steers=take_steers, steered=json.loads(record.get("steered") or "[]"),
        steers_waiting=bool(record.get("steers")),
        budget=TurnBudget(aio=rt.aio, settings=rt.settings, tenant=turn.tenant, agent=agent, model=model,
                          threads=rt.threads, used=usage_tokens(resume.usage) if resume else 0),
    )  # fmt: skip
    try:
        outcome: Outcome | WaitForDecisions = await loop.run(messages, resume)
        if isinstance(outcome, Outcome):
            outcome.model = loop.models.answered
    except Stopped:
        return None
    except WaitForDecisions as wait:
        outcome = wait
    finally:
        if loop.first_text_at is not None:
            telemetry.first_token(loop.first_text_at - started)
        spent.took(loop)
        for answered, usage in loop.models.usage_by_model.items():  # by the model that answered each step
            telemetry.tokens(agent["name"], answered, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                             usage.get("cached_tokens"))
        tracing.turn_usage(loop.model, loop.usage)
    await outbox.sent()
    return None if outbox.stopped else outcome


async def _toolbox(rt: Runtime, agent: dict[str, Any], record: dict[str, str], ctx: ToolContext) -> Toolbox:
    """The tools this turn may call: the agent's built-ins and MCP servers' tools, and the client's own."""
    builtin, remote_names = split_names(agent.get("tools") or [])
    remote = None
    if remote_names:
        from ..mcp import load_remote_tools  # only turns of agents with MCP tools need the MCP client

        remote = await load_remote_tools(rt.aio, rt.settings, ctx.tenant, remote_names)
    return Toolbox(registry=rt.tools, builtin=builtin, ctx=ctx, threads=rt.threads, remote=remote,
                   client=json.loads(record.get("client_tools") or "[]"), approval=agent.get("approval") or [])


async def _commit(rt: Runtime, turn: Attempt, agent: dict[str, Any], record: dict[str, str], outcome: Outcome,
                  model: str, spent: Spent) -> str:  # fmt: skip
    """Commit the turn (user message, tool steps, answer, images, token counts) and end it; then,
    for a session, schedule a rolling summary when its history nears the budget."""
    session_id = record["session_id"]
    now = now_ms()
    usage = outcome.usage or None
    result: dict[str, Any] = {"response": outcome.answer, "agent_id": agent["id"], "agent_name": agent["name"],
                              "session_id": session_id, "job_id": turn.job_id, "usage": usage}  # fmt: skip
    response: dict[str, Any] = {"content": outcome.answer, "intent": outcome.intent, "session_id": session_id,
                                "usage": usage}  # fmt: skip
    if outcome.model is not None:  # the model that answered: the agent's or one of its fallback_models
        result["model"] = response["model"] = outcome.model
    if outcome.structured is not None:
        result["structured"] = response["structured"] = outcome.structured
    if outcome.client_calls:
        result["tool_calls"] = response["tool_calls"] = [
            {"id": call.id, "name": call.name, "arguments": call.arguments} for call in outcome.client_calls]
    uris = json.loads(record.get("images") or "[]")
    refs = [session_images.image_ref(uri) for uri in uris]
    enqueued = int(record["enqueued_at"])
    tool_results = _tool_results(record)
    opening = [{"role": "tool", "tool_call_id": item["tool_call_id"], "content": item["content"],
                "created_at": enqueued} for item in tool_results] if tool_results is not None else [
        {"role": "user", "content": record["message"], "created_at": enqueued, "images": refs}]  # fmt: skip
    if record.get("regenerate"):
        opening = []  # the user message answered again is stored already
    closing = [] if outcome.client_calls else [{"role": "assistant", "content": outcome.answer, "created_at": now}]
    stored = [*opening, *({**step, "created_at": now} for step in outcome.transcript), *closing]
    tokens = [count_message(message, model) for message in stored]
    messages = [message_json(job_id=turn.job_id, tokens=n, **message)
                for message, n in zip(stored, tokens, strict=True)]  # fmt: skip
    done = await _finish(
        rt, turn, session_id, status="finished", result=result, messages=messages,
        images={**outcome.images, **dict(zip(refs, uris, strict=True))}, tokens=sum(tokens),
        usage=spent.finished(rt.settings),
        events_out=[events.encode(EventType.RESPONSE, **response), events.encode(EventType.DONE)],
    )  # fmt: skip
    if done and "history" not in record:
        await in_thread(rt.threads, maybe_schedule_summary, rt, turn.tenant, session_id, agent)
    return "finished" if done else "stopped"


async def _fail(rt: Runtime, turn: Attempt, record: dict[str, str], error: str, code: ErrorCode,
                usage: dict[str, int] | None = None) -> str:  # fmt: skip
    """End the turn `failed`; `usage`: what it counts in its tenant's usage (None: not counted)."""
    log.warning("turn %s failed: %s", turn.job_id, error)
    tracing.turn_failed(code, error)
    await _finish(rt, turn, record["session_id"], status="failed", usage=usage, **failure(error, code))
    return "failed"


async def _finish(rt: Runtime, turn: Attempt, session_id: str, **values: Any) -> bool:
    """FINISH_TURN for this attempt; from here the engine no longer stops the task (the commit ends the
    attempt itself, and its reply must be read)."""
    control = CURRENT.get()
    if control is not None:
        control.committing = True
    return await rt.worker_turns.finish(turn, session_id, **values)


def failure(error: str, code: ErrorCode) -> dict[str, Any]:
    """FINISH_TURN's values for a turn that failed with `error`."""
    return {"error": error, "error_code": code,
            "events_out": [events.encode(EventType.ERROR, message=error, code=code), events.encode(EventType.DONE)]}


def on_turn_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, traceback: Any, *, rt: Runtime) -> None:
    """RQ's failure callback: end the turn `failed` once RQ will not run it again.

    RQ calls this before it decides to retry (for a job that raised, and for one whose worker
    died, found by registry cleanup), so a job with retries left is left alone: it runs again
    and its stream goes on with a `retrying` status.
    """
    if job.retries_left:
        log.warning("turn %s failed (%s); RQ retries it, %s retries left", job.id, exc_type, job.retries_left)
        return
    tenant, job_id = job.args
    if rt.clients.text.hget(keys.job(tenant, job_id), "status") == "waiting":
        log.info("turn %s waits for decisions: its run's failure (%s) leaves it waiting", job_id, exc_type)
        return
    reason = "the worker running this turn stopped" if exc_type is not None and "Abandoned" in getattr(
        exc_type, "__name__", ""
    ) else f"the turn failed: {exc_value!r}"
    log.warning("turn %s failed: %s", job_id, reason)
    rt.turns.finish(tenant, job_id, status="failed", attempt=None, **failure(reason, ErrorCode.TURN_FAILED))
