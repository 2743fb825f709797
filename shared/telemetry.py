"""Deployment-wide metrics, kept in Redis so any `web`'s `/metrics` shows every web and worker.

Why Redis: workers and webs may run on different hosts, so prometheus_client's multiprocess
mode (a shared directory) cannot add them up. Each counter or histogram is one Redis hash
(`keys.metric(name)`), one field per label set:

- counter: field `<label values as a JSON array>`, the count;
- histogram: field `<labels>|<le>` per bucket, counting the observations that fell in that
  bucket alone (not cumulative: one HINCRBY per observation), `<labels>|+Inf` above the last
  bound, and `<labels>|sum` (a float) the sum of the observed values.

How deltas reach Redis without a round trip of their own:
- A turn's life (queue wait, turn time and outcome) is recorded inside the Lua scripts that
  start and finish the turn (start_turn.lua and finish_turn.lua in shared/store/scripts/, through
  lib_telemetry.lua, whose tables are made from METRICS), so it is counted exactly once, in the same
  atomic step, only when that step really started or ended the turn.
- Everything else (`first_token`, `tokens`, `model_error`, `tool_call`, `http_request`) goes
  into this process's buffer; the next write the process makes anyway carries it: the emit
  pipeline of a turn's events, or the start/finish scripts (`deltas`, their last ARGV). The web also
  flushes its buffer every second and at each scrape (api/metrics.py).
A write that fails loses its deltas; a metric is never worth a failed turn.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

from parley.shared.store import keys


@dataclass(frozen=True)
class Metric:
    name: str
    """Prometheus name; counters are exposed with `_total` appended."""
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return keys.metric(self.name)


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

QUEUE_WAIT = Metric("parley_queue_wait_seconds", "histogram", "Time from a turn's acceptance to its start",
                    buckets=_LATENCY_BUCKETS)  # fmt: skip
TURN = Metric("parley_turn_seconds", "histogram", "Time from a turn's acceptance to its end", ("outcome",),
              buckets=_LATENCY_BUCKETS)  # fmt: skip
FIRST_TOKEN = Metric("parley_time_to_first_token_seconds", "histogram",
                     "Time from a turn's start to the model's first answer text", buckets=_LATENCY_BUCKETS)  # fmt: skip
TOKENS = Metric("parley_tokens", "counter", "Tokens sent to (in) and received from (out) the model, as it counted; "
                "cached: those of in the provider served from its prompt cache",
                ("agent", "model", "direction"))  # fmt: skip
"""Stored with agent and model "" unless PARLEY_METRICS_AGENT_LABELS is on (they are tenants' data), and
exposed by direction only unless the scraped web has it on (api/metrics.py)."""
MODEL_ERRORS = Metric("parley_model_errors", "counter",
                      "Model calls that failed, by HTTP status (or timeout / connection)", ("status",))  # fmt: skip
TOOL_CALLS = Metric("parley_tool_calls", "counter", "Tool calls made by agents", ("tool", "outcome"))
JOBS = Metric("parley_jobs", "counter", "Turns that ended, by outcome", ("outcome",))
HTTP_REQUESTS = Metric("parley_http_requests", "counter", "HTTP requests answered", ("method", "route", "status"))
HTTP_SECONDS = Metric("parley_http_request_seconds", "histogram", "Time to answer (to the first byte for streams)",
                      ("method", "route"), buckets=_LATENCY_BUCKETS[:12])  # fmt: skip
WEBHOOK_ATTEMPTS = Metric("parley_webhook_attempts", "counter",
                          "Webhook delivery attempts, by outcome (delivered, status, timeout, unreachable, refused)",
                          ("outcome",))  # fmt: skip
FEEDBACK = Metric("parley_feedback", "counter", "Ratings people gave agents' answers (each new or changed rating)",
                  ("agent", "rating"))  # fmt: skip
"""Stored with agent "" unless PARLEY_METRICS_AGENT_LABELS is on (agent names are tenants' data), and exposed by
rating only unless the scraped web has it on (api/metrics.py), as `parley_tokens`."""

AGENT_LABEL_SETS = 100
"""With PARLEY_METRICS_AGENT_LABELS on, the most label sets `parley_tokens` holds, deployment-wide: past it,
new (agent, model) pairs count as ("other", "other") (enforced where Redis adds a field, so tenants creating
agents or naming models cannot grow the hash or the scrape without bound)."""
BOUNDED = {TOKENS.name: AGENT_LABEL_SETS, FEEDBACK.name: AGENT_LABEL_SETS}
OTHER = "other"

SCHEDULE_FIRINGS = Metric("parley_schedule_firings", "counter",
                          "Schedule firings, by outcome: ran (a turn), refused (limits, a conflict), stopped "
                          "(its agent was deleted)", ("outcome",))  # fmt: skip
"""Counted once per firing, by ADVANCE_SCHEDULE (the process that records the firing); no tenant label."""
BUDGET_STOPS = Metric("parley_budget_stops", "counter",
                      "Turns refused at accept (refused) or stopped before a model call (stopped) by a tenant's "
                      "daily budget, or stopped by their own token cap (turn_cap)", ("reason",))  # fmt: skip
"""No tenant label (tenants' names are their data)."""
MODEL_FALLBACKS = Metric("parley_model_fallbacks", "counter",
                         "Model steps answered by one of an agent's fallback_models, by why the agent's model was "
                         "passed over (its HTTP status, or timeout)", ("from_model", "to_model", "reason"))  # fmt: skip
"""Stored with both models "" unless PARLEY_METRICS_AGENT_LABELS is on (model names are tenants' data), bounded as
`parley_tokens` is, and exposed by reason only unless the scraped web has it on (api/metrics.py)."""
BOUNDED[MODEL_FALLBACKS.name] = AGENT_LABEL_SETS
METRICS = (QUEUE_WAIT, TURN, FIRST_TOKEN, TOKENS, MODEL_ERRORS, TOOL_CALLS, JOBS, HTTP_REQUESTS, HTTP_SECONDS,
           FEEDBACK, SCHEDULE_FIRINGS, WEBHOOK_ATTEMPTS, BUDGET_STOPS, MODEL_FALLBACKS)  # fmt: skip
"""Every metric kept in Redis; their keys are the last KEYS of the recording scripts (`metrics`), in this order,
and a delta names its metric by its position here (from 1)."""
INDEX = {metric.name: position for position, metric in enumerate(METRICS, start=1)}
"""Each metric's position (from 1) among a recording script's metric KEYS, as its deltas name it."""


def le_text(bound: float) -> str:
    """A bucket bound as a field suffix and as Prometheus's `le` label (0.5 -> '0.5', 10.0 -> '10')."""
    return format(bound, "g")


@functools.lru_cache(maxsize=4096)
def labels_field(values: tuple[str, ...]) -> str:
    """The hash field of a label set (cached: the same few sets recur on every turn)."""
    return json.dumps([str(value) for value in values], separators=(",", ":"))


def bucket_of(metric: Metric, value: float) -> str:
    for bound in metric.buckets:
        if value <= bound:
            return le_text(bound)
    return "+Inf"


# --- the process's buffer -----------------------------------------------------------------

Delta = tuple[str, str, float]
"""(metric name, hash field, amount)."""


class Pending:
    """Deltas recorded in this process and not yet written, summed per field (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deltas: dict[tuple[str, str], float] = {}

    def add(self, metric: Metric, field: str, amount: float) -> None:
        with self._lock:
            self._deltas[(metric.name, field)] = self._deltas.get((metric.name, field), 0) + amount

    def observe(self, metric: Metric, labels: tuple[str, ...], value: float) -> None:
        prefix = labels_field(labels)
        value = max(0.0, value)
        with self._lock:
            for field, amount in ((f"{prefix}|{bucket_of(metric, value)}", 1.0), (f"{prefix}|sum", value)):
                self._deltas[(metric.name, field)] = self._deltas.get((metric.name, field), 0) + amount

    def take(self) -> list[Delta]:
        """Every pending delta, leaving none."""
        with self._lock:
            taken, self._deltas = self._deltas, {}
        return [(name, field, amount) for (name, field), amount in taken.items()]

    def __bool__(self) -> bool:
        return bool(self._deltas)


PENDING = Pending()


# --- recording (both processes) -------------------------------------------------------------


def first_token(seconds: float) -> None:
    """The model's first answer text arrived `seconds` after the turn started."""
    PENDING.observe(FIRST_TOKEN, (), seconds)


_agent_labels: bool | None = None


def configure(agent_labels: bool) -> None:
    """Label token counts with agent and model names (PARLEY_METRICS_AGENT_LABELS; read from the settings
    on first use when never called)."""
    global _agent_labels
    _agent_labels = agent_labels


def agent_labels() -> bool:
    if _agent_labels is None:
        from parley.shared.settings import get_settings

        configure(get_settings().metrics_agent_labels)
    return bool(_agent_labels)


def tokens(agent: str, model: str, tokens_in: int | None, tokens_out: int | None, cached: int | None = None) -> None:
    """Token counts of one model call, as the model reported them (None: not reported); agent and model
    only with PARLEY_METRICS_AGENT_LABELS on (names are tenants' data). `cached`: the prompt tokens (counted in
    `in` too) the provider served from its prompt cache, direction `cached`."""
    if not agent_labels():
        agent = model = ""
    for direction, count in (("in", tokens_in), ("out", tokens_out), ("cached", cached)):
        if count:
            PENDING.add(TOKENS, labels_field((agent, model, direction)), int(count))


def feedback(agent: str, rating: str) -> None:
    """A person rated an answer of `agent` (its name) `up` or `down`, or changed its rating to that; the agent
    only with PARLEY_METRICS_AGENT_LABELS on (names are tenants' data)."""
    PENDING.add(FEEDBACK, labels_field((agent if agent_labels() else "", rating)), 1)


_HTTP_STATUS = re.compile(r"[1-5][0-9]{2}")


def model_error(status: int | str | None, timed_out: bool = False) -> None:
    """A model call failed: its HTTP status (`other` for anything that is not one), else `timeout` or
    `connection`."""
    if status is not None:
        label = str(status) if _HTTP_STATUS.fullmatch(str(status)) else OTHER
    else:
        label = "timeout" if timed_out else "connection"
    PENDING.add(MODEL_ERRORS, labels_field((label,)), 1)


def model_fallback(from_model: str, to_model: str, reason: str) -> None:
    """A fallback model (`to_model`) answered a model step the agent's model (`from_model`) could not, for
    `reason` (`fallback_reason`); the models only with PARLEY_METRICS_AGENT_LABELS on (names are tenants' data)."""
    if not agent_labels():
        from_model = to_model = ""
    PENDING.add(MODEL_FALLBACKS, labels_field((from_model, to_model, reason)), 1)


def fallback_reason(status: int | None, timed_out: bool) -> str:
    """Why a model was passed over, as a bounded label: its HTTP status (`other` for anything that is not
    one), else `timeout` (or `connection`), as `parley_model_errors` names it."""
    if status is not None:
        return str(status) if _HTTP_STATUS.fullmatch(str(status)) else OTHER
    return "timeout" if timed_out else "connection"


def tool_call(tool: str, ok: bool) -> None:
    """One tool call ended (ok: False when it raised or timed out). A name no tool of this deployment has
    (the model's invention, which a tenant's message can steer) counts as `other`."""
    PENDING.add(TOOL_CALLS, labels_field((tool if _known_tool(tool) else OTHER, "ok" if ok else "error")), 1)


def _known_tool(name: str) -> bool:
    from parley.tools import default_registry  # here: the tools import much that telemetry's users need not

    try:
        return default_registry().get(name) is not None
    except Exception:  # a registry that cannot load fails the process at start, never a metric
        return False


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP answer; `route` is the route's template (bounded), any other method counts as `other`
    (clients choose the method: they must not grow Redis's hash without bound)."""
    method = method if method in HTTP_METHODS else "other"
    PENDING.add(HTTP_REQUESTS, labels_field((method, route, str(status))), 1)
    PENDING.observe(HTTP_SECONDS, (method, route), seconds)


WEBHOOK_OUTCOMES = frozenset({"delivered", "status", "timeout", "unreachable", "refused"})


def webhook_attempt(outcome: str) -> None:
    """One webhook delivery attempt ended: `delivered` (2xx), `status` (another answer), `timeout`,
    `unreachable` (no connection) or `refused` (an address webhooks may not reach)."""
    PENDING.add(WEBHOOK_ATTEMPTS, labels_field((outcome if outcome in WEBHOOK_OUTCOMES else OTHER,)), 1)

BUDGET_REASONS = frozenset({"refused", "stopped", "turn_cap"})


def budget_stop(reason: str) -> None:
    """A turn refused (`refused`) or stopped (`stopped`) by its tenant's daily budget, or stopped by its own token
    cap (`turn_cap`)."""
    PENDING.add(BUDGET_STOPS, labels_field((reason if reason in BUDGET_REASONS else OTHER,)), 1)


# --- writing --------------------------------------------------------------------------------


def other_field(name: str, field: str) -> str:
    """Where a bounded metric's new label set counts once the metric is full: its last label kept."""
    try:
        values = json.loads(field)
        last = [str(values[-1])] if isinstance(values, list) and values else []
    except ValueError:
        last = []
    others = [OTHER] * (len(METRICS[INDEX[name] - 1].labels) - len(last))
    return labels_field((*others, *last))


def write(pipe: Any, deltas: list[Delta]) -> None:
    """Queue the deltas' writes on a pipeline (a histogram's `sum` is a float, the rest count; a bounded
    metric's new label set goes to its `other` field once the metric holds its most)."""
    for name, field, amount in deltas:
        key = METRICS[INDEX[name] - 1].key
        if field.endswith("|sum"):
            pipe.hincrbyfloat(key, field, amount)
        elif name in BOUNDED:
            pipe.eval(_add_bounded(), 1, key, field, int(amount), BOUNDED[name], other_field(name, field))
        else:
            pipe.hincrby(key, field, int(amount))


def _add_bounded() -> str:
    """The ADD_BOUNDED script (imported here: the scripts package reads METRICS from this module)."""
    from parley.shared.store.scripts import ADD_BOUNDED

    return ADD_BOUNDED


def script_keys() -> tuple[str, ...]:
    """A recording script's `metrics` KEYS (its last): every metric's hash, in METRICS order."""
    return tuple(metric.key for metric in METRICS)


def script_arg(deltas: list[Delta]) -> str:
    """The pending deltas as the recording scripts' `deltas` ARGV (a bounded metric's with its `other` field)."""
    return json.dumps([[INDEX[name], field, amount if field.endswith("|sum") else int(amount),
                        *([other_field(name, field)] if name in BOUNDED else [])]
                       for name, field, amount in deltas])  # fmt: skip


# --- reading (for /metrics) -----------------------------------------------------------------


@dataclass
class Series:
    labels: dict[str, str]
    value: float = 0.0
    """A counter's count."""
    buckets: dict[str, float] | None = None
    """A histogram's per-bucket counts (not cumulative), by `le` text."""
    sum: float = 0.0


def parse(metric: Metric, fields: dict[str, str]) -> list[Series]:
    """A metric's series from its Redis hash (fields written by this module or its Lua)."""
    series: dict[str, Series] = {}
    for field, raw in fields.items():
        prefix, _, suffix = field.rpartition("|") if metric.kind == "histogram" else (field, "", "")
        try:
            values = json.loads(prefix)
            amount = float(raw)
        except ValueError:
            continue  # not ours: skip rather than break the scrape
        if not isinstance(values, list) or len(values) != len(metric.labels):
            continue
        one = series.setdefault(prefix, Series(dict(zip(metric.labels, map(str, values), strict=True))))
        if metric.kind == "counter":
            one.value += amount
        elif suffix == "sum":
            one.sum += amount
        else:
            one.buckets = one.buckets or {}
            one.buckets[suffix] = one.buckets.get(suffix, 0) + amount
    return list(series.values())


def cumulative(metric: Metric, series: Series) -> list[tuple[str, float]]:
    """Prometheus buckets (cumulative, ending with +Inf) from a series' per-bucket counts."""
    counts = series.buckets or {}
    out, total = [], 0.0
    for bound in metric.buckets:
        total += counts.get(le_text(bound), 0)
        out.append((le_text(bound), total))
    total += sum(count for le, count in counts.items() if le not in {le_text(b) for b in metric.buckets})
    out.append(("+Inf", total))
    return out
