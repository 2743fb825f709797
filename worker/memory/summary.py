"""Summary jobs: the rolling summary that keeps a long session within its context budget, and the
summary a client asks for with `POST /api/v1/sessions/{id}/summary`.

Both run as RQ jobs on the turns' queue, beside the turns, so no worker needs a second queue; RQ
finds them at `parley.worker.summary` (see there) and they get the worker's runtime as `rt`
(worker/runtime.py). The rolling summary never touches a turn: it is scheduled after a turn
committed (`maybe_schedule_summary`, window.py), at most one per session at a time (a lock key),
reads O(window) of the history, and writes its result only if no other summary was written
meanwhile. A model failure leaves the old summary (logged); the next turn schedules another try.
docs/memory.md has the policy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

import redis

from parley.shared import events
from parley.shared.clock import now_ms
from parley.shared.events import ErrorCode, EventType
from parley.shared.store import keys, memory, scripts
from parley.shared.store.usage import add_call_usage
from parley.shared.tokens import MESSAGE_OVERHEAD_TOKENS, count_text
from parley.shared.usage import turn_counts

from ..providers.base import ModelError
from ..providers.fallback import ModelChain, models_of
from ..runtime import Runtime
from ..turn.budget import day_spent, spend
from ..turn.context import instructions_text
from ..turn.loop import in_thread
from ..turn.structured import InvalidAnswer, parse_answer, response_format
from .window import agent_model

log = logging.getLogger("parley.worker.summary")


@dataclass(frozen=True)
class Payer:
    """Whose a summary's model call is: its tokens count against the tenant's budget and in its usage, under the
    session's agent and the session (as a turn's do, but counting no turn)."""

    tenant: str
    agent_id: str
    session_id: str

SUMMARY_WORDS_MIN, SUMMARY_WORDS_MAX = 80, 800
ROLLING_PROMPT = (
    "You maintain the running summary of a long conversation between a user and an AI assistant, so the "
    "assistant can go on with the conversation once the older messages are gone. Fold the new messages into "
    "the summary so far. Keep every fact, name, number, preference, decision and open question the assistant "
    "may need later, and who said what; drop pleasantries. Write plain text, at most {words} words, and "
    "nothing but the summary."
)


async def roll_summary(tenant: str, session_id: str, token: str, *, rt: Runtime) -> str:
    """RQ job: fold the session's oldest unsummarised turns into its rolling summary.

    Returns what happened (RQ keeps it as the result): written | nothing_to_fold | superseded |
    model_failed | over_budget | missing. Its Redis reads and writes are sync: they run in the worker's pool. A
    tenant whose tokens for today are spent gets no summary call (the window goes on sliding; a turn on a later
    day schedules the fold again)."""
    try:
        return await _roll(rt, tenant, session_id)
    except ModelError as error:
        log.warning("session %s/%s: the summary model failed (%s); the old summary stays", tenant, session_id, error)
        return "model_failed"
    finally:
        await in_thread(rt.threads, _release, rt.clients.text, keys.summary_lock(tenant, session_id), token)


def _plan(rt: Runtime, tenant: str, session_id: str
          ) -> tuple[str, list[str], memory.Snapshot, memory.Fold, int] | str:  # fmt: skip
    """What to fold (the agent's id, the models to ask, the agent's first, then its fallbacks; snapshot, fold,
    budget), or why there is nothing: missing | nothing_to_fold."""
    r = rt.clients.text
    agent_id = rt.sessions.bound_agent(tenant, session_id)
    agent = rt.agents.get_by_id(tenant, agent_id) if agent_id else None
    if agent is None:
        return "missing"
    model = agent_model(rt, agent)
    budget = memory.history_budget(agent, rt.settings.context_tokens, model)
    snap = memory.snapshot(r, tenant, session_id, model)
    fold = memory.plan_fold(r, tenant, session_id, snap, budget, model)
    if fold is None:
        return "nothing_to_fold"
    return agent["id"], models_of(agent, model), snap, fold, budget


async def _roll(rt: Runtime, tenant: str, session_id: str) -> str:
    r = rt.clients.text
    plan = await in_thread(rt.threads, _plan, rt, tenant, session_id)
    if isinstance(plan, str):
        return plan
    agent_id, models, snap, fold, budget = plan
    if await day_spent(rt.aio, rt.settings, tenant):
        log.info("session %s/%s: not summarised: the tenant's tokens for today are spent", tenant, session_id)
        return "over_budget"
    model = models[0]
    words = max(SUMMARY_WORDS_MIN, min(SUMMARY_WORDS_MAX, budget // 8))
    prompt = [
        {"role": "system", "content": ROLLING_PROMPT.format(words=words)},
        {"role": "user", "content": f"Summary so far:\n{snap.summary or '(none yet)'}\n\n"
                                    f"New messages, oldest first:\n{transcript(fold.messages)}"},
    ]  # fmt: skip
    summary = (await _ask(rt, models, prompt, payer=Payer(tenant, agent_id, session_id))).strip()
    if not summary:
        raise ModelError("the model answered with an empty summary")
    written = await in_thread(rt.threads, functools.partial(
        memory.write_summary, r, tenant, session_id, expected_upto=snap.summary_upto, summary=summary,
        summary_tokens=count_text(summary, model) + MESSAGE_OVERHEAD_TOKENS, upto=fold.cut,
        tokens_then=snap.tokens, kept_tokens=fold.kept_tokens,
    ))  # fmt: skip
    if not written:
        log.info("session %s/%s: summary not written (another was, or the session went)", tenant, session_id)
        return "superseded"
    if fold.skipped:
        log.info("session %s/%s: %d old messages beyond one run's reach left out of the summary",
                 tenant, session_id, fold.skipped)  # fmt: skip
    log.info("session %s/%s: summary now covers messages < %d (%d folded)", tenant, session_id, fold.cut,
             len(fold.messages))  # fmt: skip
    return "written"


async def summarise_session(tenant: str, session_id: str, job_id: str, *, rt: Runtime) -> str:
    """RQ job behind `POST /api/v1/sessions/{id}/summary`: the whole conversation (rolling summary
    plus the window's tail) summarised as the agent's instructions and response shape say.

    Answers through the job's event stream, as a turn does: `response` (with `structured`, the
    parsed JSON object) or `error`, then `done`; the web process waits on it as `/chat` waits."""
    try:
        structured, text = await _report(rt, tenant, session_id)
        outcome = [events.encode(EventType.RESPONSE, content=text, structured=structured, session_id=session_id)]
        result = "finished"
    except ModelError as error:
        code = ErrorCode.MODEL_TIMEOUT if error.timed_out else ErrorCode.MODEL_FAILED
        log.warning("summary %s of %s/%s failed: %s", job_id, tenant, session_id, error)
        outcome, result = [events.encode(EventType.ERROR, message=str(error), code=code)], "failed"
    except Exception as error:  # the waiting request gets an answer, never a hang
        log.error("summary %s of %s/%s failed", job_id, tenant, session_id, exc_info=True)
        outcome = [events.encode(EventType.ERROR, message=f"the summary failed: {error.__class__.__name__}",
                                 code=ErrorCode.SUMMARY_FAILED)]  # fmt: skip
        result = "failed"
    finally:  # before `done`: a client that asks again once answered is not refused as still running
        await in_thread(rt.threads, _release_report, rt, tenant, session_id, job_id)
    await _emit(rt, tenant, job_id, [*outcome, events.encode(EventType.DONE)])
    return result


def _report_context(rt: Runtime, tenant: str, session_id: str) -> tuple[dict[str, Any], str, memory.Window]:
    """The session's agent, its model and its window (sync reads: run in the worker's pool)."""
    agent_id = rt.sessions.bound_agent(tenant, session_id)
    agent = rt.agents.get_by_id(tenant, agent_id) if agent_id else None
    if agent is None:
        raise ModelError("the session or its agent no longer exists")
    model = agent_model(rt, agent)
    budget = memory.history_budget(agent, rt.settings.context_tokens, model)
    return agent, model, memory.read_window(rt.clients.text, tenant, session_id, budget_tokens=budget, model=model)


async def _report(rt: Runtime, tenant: str, session_id: str) -> tuple[dict[str, Any], str]:
    agent, model, window = await in_thread(rt.threads, _report_context, rt, tenant, session_id)
    conversation = ([window.first] if window.first else []) + window.messages
    earlier = f"Summary of its earlier part:\n{window.summary}\n\n" if window.summary else ""
    shaped = bool(agent.get("response_shape"))
    ask = ("Summarise this conversation following your instructions, in the JSON shape they give."
           if shaped else "Summarise this conversation in a few short paragraphs.")  # fmt: skip
    prompt: list[dict[str, str]] = []
    if agent.get("context"):
        prompt.append({"role": "system", "content": agent["context"]})
    if instructions_text(agent):
        prompt.append({"role": "system", "content": instructions_text(agent)})
    prompt.append({"role": "user", "content": f"{ask}\n\n{earlier}The conversation:\n{transcript(conversation)}"})
    text = (await _ask(rt, models_of(agent, model), prompt, response_format(agent.get("response_shape")),
                       payer=Payer(tenant, agent["id"], session_id))).strip()
    if not shaped:
        return {"text": text}, text
    return parse_summary(agent["response_shape"], text), text


def parse_summary(shape: Any, text: str) -> dict[str, Any]:
    """The summary as the JSON object the agent's response shape asks for (checked as a turn's
    answer is, worker/turn/structured.py); ModelError when it is not one."""
    try:
        value = parse_answer(shape, text)
    except InvalidAnswer as error:
        raise ModelError(f"the model's summary does not fit the agent's response shape: {error}") from None
    if not isinstance(value, dict):
        raise ModelError("the model's summary is not a JSON object in the agent's response shape")
    return value


def transcript(messages: list[dict[str, Any]]) -> str:
    """Stored messages as plain lines (`user: ...`), tool calls and images named, for a summary prompt."""
    lines = []
    for message in messages:
        role, text = message.get("role", "?"), message.get("content") or ""
        if role == "tool":
            role = f"tool {message.get('name') or ''} result".replace("  ", " ")
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            text += f" [called {function.get('name')}({function.get('arguments') or ''})]"
        if message.get("images"):
            text += f" [{len(message['images'])} image(s)]"
        lines.append(f"{role}: {text.strip()}")
    return "\n".join(lines)


async def _ask(rt: Runtime, models: list[str], messages: list[dict[str, str]],
               answer_format: dict[str, Any] | None = None, payer: Payer | None = None) -> str:  # fmt: skip
    """The whole answer of the first of `models` that answers (the agent's, then its fallback_models, as a turn's
    steps try them: worker/providers/fallback.py); ModelError (timed out) when it sends nothing for
    PARLEY_MODEL_IDLE_TIMEOUT_S (a deadline pushed back by every piece of content, as a turn's steps have). With
    a `payer`, the answer's tokens count against its tenant's daily budget and in its usage (`_count`)."""
    idle_after = rt.settings.model_idle_timeout_s
    loop = asyncio.get_running_loop()
    idle = asyncio.timeout(idle_after)
    pieces: list[str] = []
    chain = ModelChain(rt.provider, models, idle_after)
    try:
        async with idle, chain.stream(
                messages=messages, temperature=None, max_tokens=None, response_format=answer_format,
                on_open=lambda: idle.reschedule(None)) as stream:  # fmt: skip
            stream.on_activity = lambda: idle.reschedule(loop.time() + idle_after)
            async for piece in stream:
                pieces.append(piece)
    except TimeoutError:
        if not idle.expired():
            raise
        raise ModelError(f"the model sent no content for {idle_after:g} s", timed_out=True) from None
    if payer is not None:
        await _count(rt, payer, chain.answered or models[0], stream.usage, messages, "".join(pieces))
    return "".join(pieces)


async def _count(rt: Runtime, payer: Payer, model: str, usage: dict[str, Any], messages: list[dict[str, str]],
                 text: str) -> None:  # fmt: skip
    """A summary's tokens against its tenant's budget (worker/turn/budget.py `spend`), and the tokens the model
    reported in its usage with their cost at `model`'s price (no turn). A Redis failure loses the count (logged),
    never the summary."""
    if rt.settings.tenant_budget(payer.tenant) is not None:
        await spend(rt.aio, payer.tenant, model, usage, list(messages), text, threads=rt.threads)
    counts = turn_counts(usage, model, rt.settings.prices, turns=0)
    try:
        await add_call_usage(rt.aio, payer.tenant, payer.agent_id, payer.session_id, counts, at_ms=now_ms(),
                             max_groups=rt.settings.usage_max_groups,
                             retention_days=rt.settings.usage_retention_days)  # fmt: skip
    except redis.RedisError as error:
        log.warning("could not add a summary's usage of %s/%s: %s", payer.tenant, payer.session_id, error)


async def _emit(rt: Runtime, tenant: str, job_id: str, payloads: list[str]) -> None:
    """Append events to the job's stream and publish them live, as a turn's events go (EMIT_EVENT: without
    a turn's attempt fence, since a summary job has no attempts to fence)."""
    emit = rt.aio.register_script(scripts.EMIT_EVENT)
    for payload in payloads:
        await emit(keys=[keys.events(tenant, job_id), keys.live_channel(tenant, job_id)],
                   args=[payload, rt.settings.retention_s * 1000])  # fmt: skip


def _release_report(rt: Runtime, tenant: str, session_id: str, job_id: str) -> None:
    """Free the session's report lock (admit_report took it); if Redis fails, it expires by itself."""
    try:
        memory.release_report(rt.clients.text, tenant, session_id, job_id)
    except redis.RedisError:
        log.warning("could not release the summary lock of %s/%s; it expires by itself", tenant, session_id,
                    exc_info=True)  # fmt: skip


def _release(r: Any, lock: str, token: str) -> None:
    """Delete the lock if this job still holds it."""
    with r.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(lock)
            if pipe.get(lock) == token:
                pipe.multi()
                pipe.delete(lock)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not release %s; it expires by itself", lock, exc_info=True)
