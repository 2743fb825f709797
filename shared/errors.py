"""Small named errors under one base class; the API maps each to its status and slug in one place."""

from __future__ import annotations

from parley.shared.budgets import next_day, seconds_to_next_day
from parley.shared.clock import now_ms
from parley.shared.events import ErrorCode


class ParleyError(Exception):
    """Base of every error a client may be shown. `status` and `code` follow the contract."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidInput(ParleyError):
    status, code = 422, "invalid_request"


class NotFound(ParleyError):
    status, code = 404, "not_found"


class Conflict(ParleyError):
    status, code = 409, "conflict"


class TooManyAgents(Conflict):
    """The tenant holds PARLEY_MAX_AGENTS_PER_TENANT agents already: it must delete one first."""

    code = "too_many_agents"


class TooManyMcpServers(Conflict):
    """The tenant holds PARLEY_MAX_MCP_SERVERS servers already: it must delete one first."""

    code = "too_many_mcp_servers"


class TooManyWebhooks(Conflict):
    """The tenant holds PARLEY_MAX_WEBHOOKS webhooks already: it must delete one first."""

    code = "too_many_webhooks"


class TooManySchedules(Conflict):
    """The tenant holds PARLEY_MAX_SCHEDULES schedules already: it must delete one first."""

    code = "too_many_schedules"


class SummaryRunning(Conflict):
    """A `POST /api/v1/sessions/{id}/summary` job of the session is queued or running already."""

    code = "summary_running"


class NothingToRegenerate(Conflict):
    """A `"regenerate": true` chat request (or its turn) found no user message in the session to answer again."""

    code = "nothing_to_regenerate"


class SessionBusy(Conflict):
    """A chat request with `on_busy: reject` while a turn of its session is queued, running or waiting."""

    code = "session_busy"


class PrivateNetwork(InvalidInput):
    """An MCP server's (or a webhook's) URL whose host is (or resolves to) an address tools may not reach."""

    code = "private_network"


class UnresolvableHost(InvalidInput):
    """An MCP server's (or a webhook's) URL whose host has no address."""

    code = "unresolvable_host"


class McpServerFailed(ParleyError):
    """An MCP server being registered could not be reached, refused, or did not list its tools."""

    status, code = 502, "mcp_server_failed"


class McpServerTimeout(ParleyError):
    """An MCP server being registered did not answer within PARLEY_MCP_TIMEOUT_S."""

    status, code = 504, "mcp_server_timeout"


class TooLarge(ParleyError):
    status, code = 413, "too_large"


class TooManyRequests(ParleyError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after_s: int = 1, **extra: object) -> None:
        super().__init__(message, **extra)
        self.retry_after_s = retry_after_s


class BudgetExceeded(TooManyRequests):
    """The tenant's tokens for the UTC day (PARLEY_TENANT_BUDGETS) are spent: no turn until the next day, which
    Retry-After names (a turn refused at accept, or a running turn stopped before its next model call)."""

    code = "budget_exceeded"

    def __init__(self, message: str, retry_after_s: int | None = None, **extra: object) -> None:
        if retry_after_s is None:
            retry_after_s = seconds_to_next_day(now_ms())
        super().__init__(message, retry_after_s=retry_after_s, **extra)

    @classmethod
    def at_accept(cls, spent: str, budget: int | None, at_ms: int) -> BudgetExceeded:
        """The refusal of a turn or report whose accept found the day spent (lib_budget.lua's `spent`)."""
        return cls(f"this tenant's tokens for today are spent ({spent} of {budget}); try again after "
                   f"{next_day(at_ms)}", retry_after_s=seconds_to_next_day(at_ms))  # fmt: skip


class Unauthorized(ParleyError):
    status, code = 401, "unauthorized"


class ModelFailed(ParleyError):
    status, code = 502, "model_failed"


class InvalidAnswer(ModelFailed):
    """The model answered, twice, in a way that does not fit the agent's response shape."""

    code = "invalid_answer"


class NotReady(ParleyError):
    status, code = 503, "not_ready"


class TimedOut(ParleyError):
    status, code = 504, "timeout"


def limit_refusal(outcome: str, detail: str) -> TooManyRequests | None:
    """The 429 for a refusal of the limits snippet (shared/store/scripts/lib_limits.lua: `queue_full`, `busy`,
    `rate_limited` with the ms left in the key's window), or None for any other outcome."""
    if outcome == "queue_full":
        return TooManyRequests("the turn queue is full; try again shortly", retry_after_s=2)
    if outcome == "busy":
        return TooManyRequests("too many of this tenant's turns are in flight; try again shortly", retry_after_s=1)
    if outcome == "rate_limited":
        return TooManyRequests("this API key sent too many turns; wait for the window to end",
                               retry_after_s=max(1, -(-int(detail) // 1000)))  # fmt: skip
    return None


TURN_ERRORS: dict[str, type[ParleyError]] = {
    ErrorCode.CANCELED: Conflict,
    ErrorCode.MODEL_TIMEOUT: TimedOut,
    ErrorCode.INVALID_ANSWER: InvalidAnswer,
    ErrorCode.NOTHING_TO_REGENERATE: NothingToRegenerate,
    ErrorCode.BUDGET_EXCEEDED: BudgetExceeded,
}
"""The error a request waiting on a turn (or a summary) gets from the `code` of the job's `error` event; any
other code (`model_failed`, `turn_failed`, `agent_missing`, `summary_failed`, none) is ModelFailed (502)."""


def turn_error(code: str | None, message: str, **extra: object) -> ParleyError:
    """The error for an `error` event's `code` and `message` (a canceled turn says so in its own words)."""
    cls = TURN_ERRORS.get(code or "", ModelFailed)
    return cls("the turn was canceled" if code == ErrorCode.CANCELED else message, **extra)
