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

import json
import logging
import time
from typing import Any

from parley.shared import events, logs, telemetry
from parley.shared.clock import now_ms
from parley.shared.events import ErrorCode, EventType
from parley.shared.store import images as session_images
from parley.shared.store.sessions import message_json
from parley.shared.tokens import count_message
from parley.tools import ToolContext

from ..memory.window import maybe_schedule_summary, remembered
from ..providers.base import ModelError
from ..runtime import Runtime
from .cancel_watch import CancelWatch
from .context import CLOSING_MESSAGE, build_messages, exchanges_so_far
from .emitter import Emitter
from .loop import AgentLoop, Outcome, Stopped
from .structured import InvalidAnswer

log = logging.getLogger("parley.worker.turn")


@logs.turn_context
def run_turn(tenant: str, job_id: str, *, rt: Runtime) -> str:
    """Run one turn; returns how it ended (RQ keeps that as the job's result)."""
    state, attempt, record = rt.turns.start(tenant, job_id)
    started = time.monotonic()
    if state != "started":
        log.info("turn %s not run: %s", job_id, state)
        return state
    logs.bind(session_id=record.get("session_id"))
    agent = rt.agents.get_by_id(tenant, record["agent_id"])
    if agent is None:
        return _fail(rt, tenant, job_id, attempt, "the session's agent no longer exists", ErrorCode.AGENT_MISSING)
    model = agent.get("model") or rt.settings.default_model
    images = json.loads(record.get("images") or "[]")
    if "history" in record:  # a turn that brought its own conversation (no session memory)
        history = json.loads(record["history"])
        exchanges = exchanges_so_far(history)
    else:
        history, exchanges = remembered(rt, tenant, record, agent, model, images)

    if agent.get("max_turns") and exchanges >= agent["max_turns"]:
        if not rt.turns.emit(tenant, job_id, attempt, [events.encode(EventType.DELTA, content=CLOSING_MESSAGE)]):
            return "stopped"
        return _commit(rt, tenant, job_id, attempt, agent, record, Outcome(answer=CLOSING_MESSAGE), model)
    messages = build_messages(agent, history, record["message"], images)
    try:
        outcome = _run_loop(rt, tenant, job_id, attempt, agent, record, messages, started)
    except ModelError as error:
        telemetry.model_error(error.status, error.timed_out)
        code = ErrorCode.MODEL_TIMEOUT if error.timed_out else ErrorCode.MODEL_FAILED
        return _fail(rt, tenant, job_id, attempt, str(error), code)
    except InvalidAnswer as error:
        return _fail(rt, tenant, job_id, attempt, f"the model's answer did not fit the agent's response shape "
                                              f"twice: {error}", ErrorCode.INVALID_ANSWER)  # fmt: skip
    if outcome is None:
        log.info("turn %s attempt %s stopped: canceled or superseded", job_id, attempt)
        return "stopped"
    return _commit(rt, tenant, job_id, attempt, agent, record, outcome, model)


def _run_loop(rt: Runtime, tenant: str, job_id: str, attempt: int, agent: dict[str, Any], record: dict[str, str],
              messages: list[dict[str, Any]], started: float) -> Outcome | None:  # fmt: skip
    """The agent loop with its events sent from a side thread and a watch for cancels and for a
    model gone quiet; None when the turn was canceled or superseded meanwhile.

    A cancel hangs up on the model (the step streaming then ends at once); the events queued
    before it are all sent before this returns, so the turn's last events follow them. A model
    step with no content for PARLEY_MODEL_IDLE_TIMEOUT_S is hung up on by the same watch and
    ends the turn with a timed-out ModelError.
    """
    holder: list[AgentLoop] = []

    def hang_up() -> None:
        if holder:
            holder[0].hang_up()

    def hang_up_if_idle(now: float) -> None:
        if holder:
            holder[0].hang_up_if_idle(now)

    with CancelWatch(lambda: rt.turns.is_running(tenant, job_id, attempt), hang_up,
                     on_check=hang_up_if_idle) as watch, \
            Emitter(lambda batch: rt.turns.emit(tenant, job_id, attempt, batch), hang_up) as emitter:  # fmt: skip
        loop = AgentLoop(
            provider=rt.provider, registry=rt.tools, agent=agent,
            model=agent.get("model") or rt.settings.default_model,
            tool_context=ToolContext(tenant=tenant, session_id=record["session_id"], job_id=job_id,
                                     redis=rt.clients.text, settings=rt.settings,
                                     memory="history" not in record),  # brought its own history: no notes
            emit=emitter.put, is_stopped=lambda: watch.fired or emitter.stopped,
            max_steps=rt.settings.max_tool_steps, idle_timeout_s=rt.settings.model_idle_timeout_s,
        )  # fmt: skip
        holder.append(loop)
        try:
            return loop.run(messages)
        except Stopped:
            return None
        finally:
            if loop.first_text_at is not None:
                telemetry.first_token(loop.first_text_at - started)
            usage = loop.usage
            telemetry.tokens(agent["name"], loop.model, usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _commit(rt: Runtime, tenant: str, job_id: str, attempt: int, agent: dict[str, Any], record: dict[str, str],
            outcome: Outcome, model: str) -> str:  # fmt: skip
    """Commit the turn (user message, tool steps, answer, images, token counts) and end it; then,
    for a session, schedule a rolling summary when its history nears the budget."""
    session_id = record["session_id"]
    now = now_ms()
    usage = outcome.usage or None
    result: dict[str, Any] = {"response": outcome.answer, "agent_id": agent["id"], "agent_name": agent["name"],
                              "session_id": session_id, "job_id": job_id, "usage": usage}  # fmt: skip
    response: dict[str, Any] = {"content": outcome.answer, "intent": outcome.intent, "session_id": session_id,
                                "usage": usage}  # fmt: skip
    if outcome.structured is not None:
        result["structured"] = response["structured"] = outcome.structured
    uris = json.loads(record.get("images") or "[]")
    refs = [session_images.image_ref(uri) for uri in uris]
    stored = [
        {"role": "user", "content": record["message"], "created_at": int(record["enqueued_at"]), "images": refs},
        *({**step, "created_at": now} for step in outcome.transcript),
        {"role": "assistant", "content": outcome.answer, "created_at": now},
    ]
    tokens = [count_message(message, model) for message in stored]
    messages = [message_json(job_id=job_id, tokens=n, **message) for message, n in zip(stored, tokens, strict=True)]
    done = rt.turns.finish(
        tenant, job_id, status="finished", attempt=attempt, result=result, messages=messages, session_id=session_id,
        images=dict(zip(refs, uris, strict=True)), tokens=sum(tokens),
        events_out=[events.encode(EventType.RESPONSE, **response), events.encode(EventType.DONE)],
    )  # fmt: skip
    if done and "history" not in record:
        maybe_schedule_summary(rt, tenant, session_id, agent)
    return "finished" if done else "stopped"


def _fail(rt: Runtime, tenant: str, job_id: str, attempt: int | None, error: str, code: ErrorCode) -> str:
    log.warning("turn %s failed: %s", job_id, error)
    rt.turns.finish(
        tenant, job_id, status="failed", attempt=attempt, error=error, error_code=code,
        events_out=[events.encode(EventType.ERROR, message=error, code=code), events.encode(EventType.DONE)],
    )  # fmt: skip
    return "failed"


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
    reason = "the worker running this turn stopped" if exc_type is not None and "Abandoned" in getattr(
        exc_type, "__name__", ""
    ) else f"the turn failed: {exc_value!r}"
    _fail(rt, tenant, job_id, None, reason, ErrorCode.TURN_FAILED)
