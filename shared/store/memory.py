"""Memory past the context window: a token budget per agent, a rolling summary per session, and a
context rebuilt from the tail of the history, reading O(window) data whatever the history's length.

A turn's context is: system (the agent's context and instructions), the first message, the
session's rolling summary, then the newest whole turns (a turn starts at a user message) that fit
the budget. Once the history beyond the summary nears the budget, a summariser job (worker side,
`parley.worker.summary`) folds the oldest turns into the summary. docs/memory.md has the policy.

Session hash fields this module owns (beside `agent_id`, `created_at`, `metadata`, `exchanges`):

| field | holds |
| --- | --- |
| `tokens` | tokens of the turns' messages not yet in the summary (FINISH_TURN adds, the summariser takes) |
| `summary` | the rolling summary, text ('' or absent: none yet) |
| `summary_upto` | index of the first message the summary does NOT cover (absent: 0) |
| `summary_tokens` | tokens of `summary` (so a rebuild need not count it) |
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import redis
from rq.job import JobStatus
from rq.utils import utcformat

from parley.shared import budgets, telemetry
from parley.shared.clock import now_ms
from parley.shared.errors import BudgetExceeded, SummaryRunning, limit_refusal
from parley.shared.store import keys, scripts
from parley.shared.store.scripts.calls import AdmitReportCall
from parley.shared.tokens import MESSAGE_OVERHEAD_TOKENS, count_message, count_text

TOKENS_FIELD = "tokens"
SUMMARY_FIELD = "summary"
SUMMARY_UPTO_FIELD = "summary_upto"
SUMMARY_TOKENS_FIELD = "summary_tokens"

FIRST_CHUNK = 32
"""Messages read by the first LRANGE of a tail; each next one reads twice as many, up to MAX_CHUNK."""
MAX_CHUNK = 1024
SUMMARY_TRIGGER = 0.8
"""A summary is scheduled once first message + summary + unsummarised history pass this share of
the history budget: a little before they no longer fit, so the window does not drop turns the
summary does not hold yet while the summariser runs."""
KEEP_SHARE = 0.5
"""The summariser folds all but the newest turns that fit in this share of the history budget."""
FOLD_SHARE = 2.0
"""One summariser run reads at most this many history budgets of messages to fold (O(window)).
More lie there only in a history stored before token counts were kept: the older ones are left
out of the summary (they were out of the window already)."""
WINDOW_STEP_SHARE = 0.25
"""Once the newest turns no longer all fit, the window's start moves in steps of this share of the history
budget (see `stepped_start`), not by a turn each turn: between two steps the window only grows at its end, so
the prompt's prefix stays byte-stable and a provider's prompt cache keeps serving it."""
MIN_HISTORY_TOKENS = 128
"""The history budget never drops below this, however long the agent's system prompt."""
SUMMARY_FUNCTION = "parley.worker.summary.roll_summary"
"""The rolling-summary RQ job, named by path: `shared` never imports `worker`."""
REPORT_FUNCTION = "parley.worker.summary.summarise_session"
"""The RQ job behind `POST /api/v1/sessions/{id}/summary`."""


@dataclass
class Window:
    """What a turn's context is rebuilt from (besides the agent's system prompt)."""

    first: dict[str, Any] | None
    """Message 0 when it is the agent's first message (always kept)."""
    summary: str
    """The session's rolling summary ('' when none)."""
    messages: list[dict[str, Any]]
    """The newest whole turns that fit in the budget, oldest first."""
    start_index: int
    """List index of messages[0] (== total when messages is empty)."""
    total: int
    """Messages in the session."""
    exchanges: int = 0
    """Turns the session has committed (for `max_turns`), from the session hash."""
    tokens: int = 0
    """Tokens of first + summary + messages, as counted for the budget."""


def context_budget(agent: dict[str, Any], default_tokens: int) -> int:
    """The agent's context budget in tokens: its `context_budget`, else PARLEY_CONTEXT_TOKENS."""
    return int(agent.get("context_budget") or default_tokens)


def system_tokens(agent: dict[str, Any], model: str) -> int:
    """What the agent's system prompt takes of the budget: context, instructions, response shape
    (and the sentence that asks for it). Cached: a turn and its summary check ask for it again."""
    shape = agent.get("response_shape")
    shape_text = shape if isinstance(shape, str) else json.dumps(shape) if shape else ""
    return _system_tokens(agent.get("context") or "", agent.get("instructions") or "", shape_text, model)


@lru_cache(maxsize=256)
def _system_tokens(context: str, instructions: str, shape_text: str, model: str) -> int:
    texts = count_text(context, model) + count_text(instructions, model) + count_text(shape_text, model)
    return texts + 2 * MESSAGE_OVERHEAD_TOKENS + (30 if shape_text else 0)


def history_budget(agent: dict[str, Any], default_tokens: int, model: str) -> int:
    """Tokens left for first message + summary + history once the system prompt is counted.

    The caller of read_window subtracts the new user message from it as well."""
    return max(MIN_HISTORY_TOKENS, context_budget(agent, default_tokens) - system_tokens(agent, model))


def message_tokens(message: dict[str, Any], model: str) -> int:
    """A stored message's `tokens`, or its count when it was stored without one."""
    stored = message.get("tokens")
    return stored if isinstance(stored, int) else count_message(message, model)


def is_first_message(message: dict[str, Any]) -> bool:
    """The agent's opening line is stored as message 0, an assistant message no turn made."""
    return message.get("role") == "assistant" and not message.get("job_id")


def summary_message_tokens(summary: str, stored: str | None, model: str) -> int:
    if not summary:
        return 0
    return int(stored) if stored and stored.isdigit() else count_text(summary, model) + MESSAGE_OVERHEAD_TOKENS


@dataclass
class Snapshot:
    """The session's length, message 0 and memory fields, read in one MULTI (a consistent view)."""

    total: int
    first: dict[str, Any] | None
    summary: str
    summary_upto: int
    summary_tokens: int
    tokens: int
    exchanges: int

    @property
    def boundary(self) -> int:
        """The oldest index a window may read: past the summary and the first message."""
        return max(self.summary_upto, 1 if self.first else 0)


def snapshot(r: Any, tenant: str, session_id: str, model: str) -> Snapshot:
    messages_key = keys.messages(tenant, session_id)
    with r.pipeline(transaction=True) as pipe:
        pipe.llen(messages_key)
        pipe.lindex(messages_key, 0)
        pipe.hmget(keys.session(tenant, session_id), *SNAPSHOT_FIELDS)
        total, raw_first, fields = pipe.execute()
    return snapshot_of(total, raw_first, fields, model)


SNAPSHOT_FIELDS = (SUMMARY_FIELD, SUMMARY_UPTO_FIELD, SUMMARY_TOKENS_FIELD, TOKENS_FIELD, "exchanges")
"""The session hash fields a snapshot reads, in this order (READ_CONTEXT reads the same, in the same order)."""


def snapshot_of(total: int, raw_first: str | None, fields: list[str | None], model: str) -> Snapshot:
    """A snapshot from what was read: the history's length, message 0 and the SNAPSHOT_FIELDS' values."""
    summary, upto, summary_tokens, tokens, exchanges = fields
    first = json.loads(raw_first) if raw_first else None
    summary = summary or ""
    return Snapshot(
        total=int(total), first=first if first and is_first_message(first) else None, summary=summary,
        summary_upto=int(upto or 0), summary_tokens=summary_message_tokens(summary, summary_tokens, model),
        tokens=int(tokens or 0), exchanges=int(exchanges or 0),
    )  # fmt: skip


@dataclass(frozen=True)
class Prefetched:
    """A session's memory as a turn read it in one step (READ_CONTEXT): the snapshot, and its newest
    stored messages as JSON, from index `tail_start` to the end."""

    snapshot: Snapshot
    tail_start: int
    tail: list[str]


def backwards(r: Any, tenant: str, session_id: str, end: int, boundary: int,
              known: tuple[int, list[str]] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:  # fmt: skip
    """(index, message) from index `end - 1` down to `boundary`, newest first, leaving out replaced messages (an
    old answer a regenerate replaced is in no context, window or summary).
    `known`, (start, messages from `start` to `end`) already read, is given first and not read again."""
    return (item for item in _backwards(r, tenant, session_id, end, boundary, known) if not item[1].get("replaced"))


def _backwards(r: Any, tenant: str, session_id: str, end: int, boundary: int,
               known: tuple[int, list[str]] | None) -> Iterator[tuple[int, dict[str, Any]]]:  # fmt: skip
    """`backwards` with replaced messages, read by LRANGEs of growing size (FIRST_CHUNK, twice that, ...): a
    reader that stops early read little more than it used."""
    key = keys.messages(tenant, session_id)
    chunk = FIRST_CHUNK
    if known is not None:
        start, raw = known
        for offset in range(len(raw) - 1, max(boundary, start) - start - 1, -1):
            yield start + offset, json.loads(raw[offset])
        end = max(boundary, start)
        chunk = min(max(2 * len(raw), FIRST_CHUNK), MAX_CHUNK)
    while end > boundary:
        start = max(boundary, end - chunk)
        raw = r.lrange(key, start, end - 1)
        for offset in range(len(raw) - 1, -1, -1):
            yield start + offset, json.loads(raw[offset])
        end = start
        chunk = min(chunk * 2, MAX_CHUNK)


def newest_turns(items: Iterator[tuple[int, dict[str, Any]]], budget: int, boundary: int, model: str,
                 step: int = 0, unsummarised: int = 0) -> tuple[list[dict[str, Any]], int, int]:  # fmt: skip
    """The newest whole turns of `items` (newest first) within `budget` tokens; with `step`, when they do not all
    fit, starting at a step (`stepped_start`; `unsummarised`: the tokens from the boundary to the end).

    Returns (messages oldest first, index of the first one, their tokens). A turn starts at a user
    message; the boundary also starts one (what lies before it is summarised or is message 0)."""
    taken: list[dict[str, Any]] = []
    used = 0
    starts: list[tuple[int, int, int]] = []  # (messages taken, their tokens, index) at each turn's start, newest first
    for index, message in items:
        used += message_tokens(message, model)
        if used > budget:
            break
        taken.append(message)
        if message.get("role") == "user" or index == boundary:
            starts.append((len(taken), used, index))
    if not starts:
        return [], -1, 0
    fit_count, fit_tokens, fit_start = starts[-1]
    if step > 0 and fit_start != boundary:  # the newest turns do not all fit: the window slides
        fit_count, fit_tokens, fit_start = stepped_start(starts, unsummarised, step)
    kept = taken[:fit_count]
    kept.reverse()
    return kept, fit_start, fit_tokens


def stepped_start(starts: list[tuple[int, int, int]], unsummarised: int, step: int) -> tuple[int, int, int]:
    """The turn start a sliding window begins at: the oldest that fits (`starts[-1]`), moved on to the first turn
    start at or past the next multiple of `step` tokens from the boundary (a turn's position is `unsummarised`
    minus the tokens from it to the end). That start stays the same turn after turn, however the history grows at
    its end, until the window must move past it; so the window moves by `step` tokens at a time. When no turn
    start that fits lies past that multiple (a turn longer than a step), the oldest that fits."""
    oldest = starts[-1]
    anchor = math.ceil((unsummarised - oldest[1]) / step) * step
    for start in reversed(starts):  # oldest first
        if unsummarised - start[1] >= anchor:
            return start
    return oldest


def read_window(r: Any, tenant: str, session_id: str, *, budget_tokens: int, model: str,
                prefetched: Prefetched | None = None, end: int | None = None,
                step_tokens: int = 0) -> Window:  # fmt: skip
    """The context of a session's next turn, reading O(window) of Redis, never O(history).

    One MULTI (LLEN, LINDEX 0, the summary fields), then the tail in growing LRANGE chunks until
    the budget is used or the summary's boundary is reached; never below `summary_upto`.
    `budget_tokens` is for first message + summary + tail (see history_budget). With `prefetched`
    (a turn's READ_CONTEXT), its snapshot and tail are used and only older messages are read, if needed.
    With `end`, the history stops before that index (a regenerate's context: what came before the user message
    it answers again). With `step_tokens`, a window that no longer holds every turn past the summary starts
    where it started last turn until it must move, then moves by that many tokens at least (`stepped_start`)."""
    snap = prefetched.snapshot if prefetched is not None else snapshot(r, tenant, session_id, model)
    if end is not None and end < snap.total:
        snap = replace(snap, total=end)
        if prefetched is not None:
            keep = max(0, end - prefetched.tail_start)
            prefetched = replace(prefetched, snapshot=snap, tail=prefetched.tail[:keep]) if keep else None
    first_tokens = message_tokens(snap.first, model) if snap.first else 0
    room = budget_tokens - first_tokens - snap.summary_tokens
    known = (prefetched.tail_start, prefetched.tail) if prefetched is not None else None
    messages, start, used = newest_turns(backwards(r, tenant, session_id, snap.total, snap.boundary, known),
                                         room, snap.boundary, model, step_tokens, snap.tokens)  # fmt: skip
    return Window(first=snap.first, summary=snap.summary, messages=messages,
                  start_index=start if messages else snap.total, total=snap.total, exchanges=snap.exchanges,
                  tokens=first_tokens + snap.summary_tokens + used)  # fmt: skip


def needs_summary(snap_tokens: int, summary_tokens: int, first_tokens: int, budget: int) -> bool:
    """True once first message + summary + unsummarised history pass SUMMARY_TRIGGER of the budget."""
    return first_tokens + summary_tokens + snap_tokens > SUMMARY_TRIGGER * budget


@dataclass
class Fold:
    """What one summariser run folds: messages [start, cut) into the summary, keeping [cut, total)."""

    start: int
    cut: int
    messages: list[dict[str, Any]]
    kept_tokens: int
    folded_tokens: int
    skipped: int
    """Messages between the old boundary and `start` left out (only in histories stored before token counts)."""


def plan_fold(r: Any, tenant: str, session_id: str, snap: Snapshot, budget: int, model: str) -> Fold | None:
    """Where to cut: keep the newest whole turns within KEEP_SHARE of the budget (at least the newest
    turn), fold the turns before them (at most FOLD_SHARE budgets of them). None: nothing to fold."""
    items = backwards(r, tenant, session_id, snap.total, snap.boundary)
    kept_tokens, cut = 0, snap.total
    running = 0
    pending: list[tuple[int, dict[str, Any], int]] = []  # read past the cut, not yet placed
    keep_limit = math.floor(KEEP_SHARE * budget)
    for index, message in items:
        tokens = message_tokens(message, model)
        pending.append((index, message, tokens))
        running += tokens
        if message.get("role") == "user" and index > snap.boundary:
            if cut == snap.total or running <= keep_limit:
                cut, kept_tokens = index, running  # the newest turn is always kept
                pending.clear()
            if running > keep_limit:
                break
    if cut <= snap.boundary or cut == snap.total:
        return None
    # `pending` holds what was read below the cut; go on reading older messages to fold.
    folded: list[tuple[int, dict[str, Any], int]] = [item for item in pending if item[0] < cut]
    fold_limit = math.floor(FOLD_SHARE * budget)
    fold_tokens = sum(item[2] for item in folded)
    oldest_read = folded[-1][0] if folded else cut
    if fold_tokens <= fold_limit and oldest_read > snap.boundary:
        for index, message in backwards(r, tenant, session_id, oldest_read, snap.boundary):
            tokens = message_tokens(message, model)
            if fold_tokens + tokens > fold_limit:
                break
            folded.append((index, message, tokens))
            fold_tokens += tokens
    while folded and fold_tokens > fold_limit:
        fold_tokens -= folded.pop()[2]
    reached = folded[-1][0] if folded else cut
    if reached > snap.boundary:
        # Cut short by the fold limit: start the fold at a turn's start.
        while folded and folded[-1][1].get("role") != "user":
            fold_tokens -= folded.pop()[2]
    if not folded:
        return None
    folded.reverse()
    start = folded[0][0]
    return Fold(start=start, cut=cut, messages=[item[1] for item in folded], kept_tokens=kept_tokens,
                folded_tokens=fold_tokens, skipped=start - snap.boundary)  # fmt: skip


def write_summary(r: Any, tenant: str, session_id: str, *, expected_upto: int, summary: str, summary_tokens: int,
                  upto: int, tokens_then: int, kept_tokens: int, retries: int = 5) -> bool:  # fmt: skip
    """Store a new rolling summary, atomically, only if `summary_upto` is still `expected_upto` and the
    session still exists (WATCH). `tokens` becomes what is left unsummarised: the kept messages plus
    whatever turns committed since the snapshot (`tokens_then`). False when the check failed."""
    key = keys.session(tenant, session_id)
    for _ in range(retries):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                exists, upto_now, tokens_now = pipe.hmget(key, "agent_id", SUMMARY_UPTO_FIELD, TOKENS_FIELD)
                if exists is None or int(upto_now or 0) != expected_upto:
                    return False
                left = max(0, int(tokens_now or 0) - tokens_then + kept_tokens)
                pipe.multi()
                pipe.hset(key, mapping={SUMMARY_FIELD: summary, SUMMARY_UPTO_FIELD: upto,
                                        SUMMARY_TOKENS_FIELD: summary_tokens, TOKENS_FIELD: left})  # fmt: skip
                pipe.execute()
                return True
            except redis.WatchError:
                continue  # a turn committed meanwhile (it added to `tokens`): read again
    return False


REPORT_LOCK_SLACK_S = 60
"""The report lock outlives the job's timeout by this much, so a dead job's lock expires by itself."""
UNADMITTED_REPORT_TTL_S = 3600
"""Lifetime of a report's RQ job saved by a web process that died before ADMIT_REPORT ran (admit_report.lua)."""


def report_lock_ms(settings: Any) -> int:
    """How long a report holds its session's lock at most (released sooner, when the job ends)."""
    return int((settings.summary_timeout_s + REPORT_LOCK_SLACK_S) * 1000)


def admit_report(queue: Any, settings: Any, tenant: str, session_id: str, job_id: str, api_key: str) -> None:
    """Queue the job behind `POST /api/v1/sessions/{id}/summary` (web side), within the chat routes' limits
    and one per session at a time. Raises TooManyRequests (queue full, tenant busy, key over its rate;
    BudgetExceeded: the tenant's tokens for the day are spent) or SummaryRunning; then nothing is queued, counted
    or locked."""
    job = queue.create_job(
        REPORT_FUNCTION, args=(tenant, session_id, job_id), job_id=job_id, status=JobStatus.DEFERRED,
        timeout=int(settings.summary_timeout_s) + 1, result_ttl=600, failure_ttl=settings.retention_s,
        description=f"summary of {tenant}/{session_id}",
    )  # fmt: skip
    at, budget = now_ms(), settings.tenant_budget(tenant)
    with queue.connection.pipeline() as pipe:
        job.save(pipeline=pipe)
        pipe.expire(keys.rq_job(job_id), UNADMITTED_REPORT_TTL_S)  # until ADMIT_REPORT keeps it (PERSIST)
        pipe.execute()
    call = AdmitReportCall(
        rq_queue=keys.rq_queue(settings.queue_name), inflight=keys.inflight(tenant), rate=keys.rate(tenant, api_key),
        summary_report=keys.summary_report(tenant, session_id), rq_job=keys.rq_job(job_id),
        max_queue_depth=settings.max_queue_depth, max_inflight=settings.max_turns_in_flight,
        max_rate=settings.rate_limit_turns, rate_window_ms=settings.rate_window_s * 1000, job_id=job_id,
        lock_ttl_ms=report_lock_ms(settings), enqueued_at=utcformat(datetime.now(UTC)),
        budget_spent=budgets.spent_key(tenant, at), budget=budgets.script_arg(budget),
    )  # fmt: skip
    outcome, detail = queue.connection.register_script(scripts.ADMIT_REPORT)(keys=call.keys(), args=call.args())
    outcome, detail = _text(outcome), _text(detail)
    if outcome == "admitted":
        return
    job.delete()
    if outcome == "budget_exceeded":
        telemetry.budget_stop("refused")
        raise BudgetExceeded.at_accept(detail, budget, at)
    refused = limit_refusal(outcome, detail)
    if refused:
        raise refused
    raise SummaryRunning("a summary of this session is already being made; wait for it, then ask again")


def release_report(r: Any, tenant: str, session_id: str, job_id: str) -> bool:
    """Free the session for the next report, if job `job_id` still holds it (the job's end, worker side)."""
    release = r.register_script(scripts.RELEASE_REPORT)
    return bool(release(keys=[keys.summary_report(tenant, session_id)], args=[job_id]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
