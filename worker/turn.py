"""The RQ job that runs one chat turn, and the callback that ends a turn RQ gives up on.

A turn: mark it started (counting the attempt), rebuild the context from Redis, stream the
model's answer as `delta` events, then commit the user message and the answer, the job's result
and its last events in one atomic step. Nothing reaches the history before that step, so a
worker that dies mid-turn leaves nothing half-written; RQ runs the turn again elsewhere.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from parley.shared import events, logs, telemetry
from parley.shared.clock import now_ms
from parley.shared.sessions import message_json

from .cancel_watch import CancelWatch
from .context import CLOSING_MESSAGE, build_messages, exchanges_so_far
from .emitter import Emitter
from .providers import ModelError
from .runtime import runtime

log = logging.getLogger("parley.worker.turn")


@logs.turn_context
def run_turn(tenant: str, job_id: str) -> str:
    """Run one turn; returns how it ended (RQ keeps that as the job's result)."""
    rt = runtime()
    state, attempt, record = rt.turns.start(tenant, job_id)
    started = time.monotonic()
    if state != "started":
        log.info("turn %s not run: %s", job_id, state)
        return state
    logs.bind(session_id=record.get("session_id"))
    agent = rt.agents.get_by_id(tenant, record["agent_id"])
    if agent is None:
        return _fail(tenant, job_id, attempt, "the session's agent no longer exists", "agent_missing")
    if "history" in record:  # a turn that brought its own conversation (no session memory)
        history = json.loads(record["history"])
    else:
        history = rt.sessions.history(tenant, record["session_id"])

    answer: tuple[str, dict[str, Any]] | None
    if agent.get("max_turns") and exchanges_so_far(history) >= agent["max_turns"]:
        answer = (CLOSING_MESSAGE, {})
        if not rt.turns.emit(tenant, job_id, attempt, [events.encode("delta", content=CLOSING_MESSAGE)]):
            return "stopped"
    else:
        try:
            answer = _stream_answer(tenant, job_id, attempt, agent, build_messages(agent, history, record["message"]),
                                    started)  # fmt: skip
        except ModelError as error:
            telemetry.model_error(error.status, error.timed_out)
            code = "model_timeout" if error.timed_out else "model_failed"
            return _fail(tenant, job_id, attempt, str(error), code)
    if answer is None:
        return "stopped"
    return _commit(tenant, job_id, attempt, agent, record, *answer)


def _stream_answer(tenant: str, job_id: str, attempt: int, agent: dict[str, Any], messages: list[dict[str, str]],
                   started: float) -> tuple[str, dict[str, Any]] | None:  # fmt: skip
    """The answer (each piece emitted as a `delta`) and the model's token counts; None when the
    turn was canceled meanwhile.

    Leaving the provider's context closes the model connection, so a cancel stops the model too.
    """
    rt = runtime()
    pieces: list[str] = []
    model = agent.get("model") or rt.settings.default_model
    with rt.provider.stream(
        model=model, messages=messages,
        temperature=agent.get("temperature"), max_tokens=agent.get("max_tokens"),
    ) as stream, CancelWatch(lambda: rt.turns.is_running(tenant, job_id, attempt), stream.close) as watch, \
            Emitter(lambda batch: rt.turns.emit(tenant, job_id, attempt, batch), stream.close) as emitter:  # fmt: skip
        try:
            for piece in stream:
                if not pieces:
                    telemetry.first_token(time.monotonic() - started)
                pieces.append(piece)
                if not emitter.put(events.encode("delta", content=piece)):
                    break
        except ModelError:
            if not (watch.fired or emitter.stopped):
                raise
    telemetry.tokens(agent["name"], model, stream.usage.get("prompt_tokens"), stream.usage.get("completion_tokens"))
    if watch.fired or emitter.stopped:
        log.info("turn %s attempt %s stopped: canceled or superseded", job_id, attempt)
        return None
    return "".join(pieces), dict(stream.usage)


def _commit(tenant: str, job_id: str, attempt: int, agent: dict[str, Any], record: dict[str, str],
            answer: str, usage: dict[str, Any]) -> str:  # fmt: skip
    rt = runtime()
    session_id = record["session_id"]
    now = now_ms()
    result = {"response": answer, "agent_id": agent["id"], "agent_name": agent["name"],
              "session_id": session_id, "job_id": job_id, "usage": usage or None}  # fmt: skip
    images = json.loads(record.get("images") or "[]")
    messages = [
        message_json("user", record["message"], job_id=job_id, created_at=int(record["enqueued_at"]), images=images),
        message_json("assistant", answer, job_id=job_id, created_at=now),
    ]
    done = rt.turns.finish(
        tenant, job_id, status="finished", attempt=attempt, result=result, messages=messages, session_id=session_id,
        events_out=[events.encode("response", content=answer, intent=None, session_id=session_id,
                                  usage=usage or None),
                    events.encode("done")],
    )  # fmt: skip
    return "finished" if done else "stopped"


def _fail(tenant: str, job_id: str, attempt: int | None, error: str, code: str) -> str:
    log.warning("turn %s failed: %s", job_id, error)
    runtime().turns.finish(
        tenant, job_id, status="failed", attempt=attempt, error=error, error_code=code,
        events_out=[events.encode("error", message=error, code=code), events.encode("done")],
    )  # fmt: skip
    return "failed"


def on_turn_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, traceback: Any) -> None:
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
    _fail(tenant, job_id, None, reason, "turn_failed")
