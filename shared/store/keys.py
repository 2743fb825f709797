"""Every Redis key and channel name Parley uses, built here and nowhere else.

The schema (also drawn in docs/architecture.md). `{t}` is the tenant, `{a}` an agent id, `{s}` a
session id, `{j}` a job id. Tenant names never contain `:` nor start with `_` (see settings), so keys stay unambiguous.

| key | type | holds |
| --- | --- | --- |
| `parley:agent:{t}:{a}` | hash | one agent, each field JSON-encoded |
| `parley:agents:{t}` | zset | agent ids by creation time (ms) |
| `parley:agent-names:{t}` | hash | agent name -> agent id (names are unique per tenant) |
| `parley:session:{t}:{s}` | hash | agent_id, created_at, metadata, exchanges |
| `parley:sessions:{t}` | zset | session ids by creation time (ms), for listing newest first |
| `parley:agent-sessions:{t}:{a}` | zset | the same, for one agent |
| `parley:messages:{t}:{s}` | list | committed messages (JSON), oldest first; index = message id |
| `parley:lane:{t}:{s}` | list | job ids of the session's accepted, unfinished turns; the head runs |
| `parley:job:{t}:{j}` | hash | one turn: status, timestamps, input message, result, error |
| `parley:events:{t}:{j}` | stream | the turn's events; entry ids are the SSE event ids |
| `parley:live:{t}:{j}` | pub/sub channel | the same events as they happen, `"<id> <json>"` |
| `parley:idem:{t}:{sha256(key)}` | string | Idempotency-Key -> `<job id> <request hash>` |
| `parley:inflight:{t}` | string | the tenant's accepted, unfinished turns (a counter) |
| `parley:rate:{t}:{sha256(api key)}` | string | turns accepted for one API key in the current window |
| `parley:notes:{t}:{s}` | list | notes the agent keeps in the session (`remember` tool), oldest first |
| `parley:images:{t}:{s}` | hash | the session's images: `img_<sha256>` ref -> data URI, each stored once |
| `parley:summary-lock:{t}:{s}` | string | id of the session's running rolling-summary job (one at a time; expires) |
| `parley:request-rate:{t}` | string | the tenant's requests in the current second (expires with it) |
| `parley:tenant-admitted:{t}` | string | the tenant's turns in RQ's queue or running (PARLEY_TENANT_CONCURRENCY) |
| `parley:tenant-line:{t}` | list | the tenant's ready turns (lane heads) waiting, in order, for a place |
| `parley:tool-runs:{t}:{j}` | hash | a turn's tool runs: `<name>:<sha256 of args>:<n>` -> result, replayed on retry |
| `parley:pending-notes:{t}:{j}` | list | notes a running turn's `remember` wrote; committed with the turn |
| `parley:summary-report:{t}:{s}` | string | the session's running `POST .../summary` job (one at a time; expires) |
| `parley:mcp-servers:{t}` | hash | MCP server name -> JSON (url, headers, allowed_tools, created_at) |
| `parley:mcp-tools:{t}:{name}` | string | the server's tool list (JSON), cached for PARLEY_MCP_TOOLS_TTL_S |
| `parley:steers:{t}:{j}` | list | job ids of `on_busy: steer` requests waiting to join turn `{j}` |
| `parley:approval-deadlines` | zset | `{t} {j}` of turns waiting for a decision, by deadline (ms) |
| `parley:webhooks:{t}` | hash | webhook id -> JSON (kind, url, events, secret, created_at; A2A: job_id, token) |
| `parley:turn-ends` | stream | deployment-wide: `{t, j, type}` per turn end of a tenant with webhooks |
| `parley:webhook-delivery:{t}:{d}` | hash | one delivery: webhook, type, job_id, body, status, attempts, lease |
| `parley:webhook-deliveries:{t}:{w}` | zset | the webhook's delivery ids by creation (ms), newest kept |
| `parley:webhook-due` | zset | deployment-wide: `{t} {d}` of pending deliveries, by when each is due (ms) |
| `parley:metric:{name}` | hash | a deployment-wide counter or histogram: labels (and bucket) -> count |
| `parley:web-streams` | hash | web process id -> `"<open SSE streams> <expiry ms>"`, summed at scrape |
| `parley:feedback:{t}` | zset | `"<session id> <message index>"` of the tenant's rated messages, by rating time (ms) |
| `parley:agent-feedback:{t}:{a}` | zset | the same, for one agent's sessions |
| `parley:schedule:{t}:{id}` | hash | one schedule: agent, message, session, cron or interval, zone, next and last run |
| `parley:schedules:{t}` | zset | the tenant's schedule ids by creation time (ms) (listing, PARLEY_MAX_SCHEDULES) |
| `parley:schedules-due` | zset | `{t} {id}` of each running schedule by next run (ms), or by lease end while fired |
| `parley:session-expiries` | zset | `["{t}","{a}","{s}"]` of sessions whose agent has `session_ttl_s`, by expiry (ms) |
| `parley:budget-spent:{t}:{day}` | string | tokens the tenant spent on UTC day `YYYY-MM-DD` (PARLEY_TENANT_BUDGETS) |
| `parley:usage:{t}:{day}` | hash | the tenant's usage on a UTC day (YYYY-MM-DD): turns, tokens, cost (micro-units) |
| `parley:usage-agents:{t}:{day}` | hash | the same by agent, `<agent id>` + a bar + counter -> count (bounded) |
| `parley:usage-sessions:{t}:{day}` | hash | the same by session, `<session id>` + a bar + counter -> count (bounded) |

File agents (`PARLEY_AGENTS_FILE`) live under the reserved tenant `FILE_SCOPE`.
RQ's own keys (`rq:job:{j}`, `rq:queue:{name}`) are named by RQ; we take them from RQ's classes.
"""

from __future__ import annotations

import hashlib
import json

PREFIX = "parley"
FILE_SCOPE = "_file"
"""Pseudo-tenant holding the agents from PARLEY_AGENTS_FILE, visible to every tenant."""


def agent(tenant: str, agent_id: str) -> str:
    return f"{PREFIX}:agent:{tenant}:{agent_id}"


def agents(tenant: str) -> str:
    return f"{PREFIX}:agents:{tenant}"


def agent_names(tenant: str) -> str:
    return f"{PREFIX}:agent-names:{tenant}"


def session(tenant: str, session_id: str) -> str:
    return f"{PREFIX}:session:{tenant}:{session_id}"


def sessions(tenant: str) -> str:
    return f"{PREFIX}:sessions:{tenant}"


def agent_sessions(tenant: str, agent_id: str) -> str:
    return f"{PREFIX}:agent-sessions:{tenant}:{agent_id}"


def messages(tenant: str, session_id: str) -> str:
    return f"{PREFIX}:messages:{tenant}:{session_id}"


def lane(tenant: str, session_id: str) -> str:
    return f"{PREFIX}:lane:{tenant}:{session_id}"


def job(tenant: str, job_id: str) -> str:
    return f"{PREFIX}:job:{tenant}:{job_id}"


def events(tenant: str, job_id: str) -> str:
    return f"{PREFIX}:events:{tenant}:{job_id}"


def live_channel(tenant: str, job_id: str) -> str:
    return f"{PREFIX}:live:{tenant}:{job_id}"


def idempotency(tenant: str, idempotency_key: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{PREFIX}:idem:{tenant}:{digest}"


def inflight(tenant: str) -> str:
    return f"{PREFIX}:inflight:{tenant}"


def rate(tenant: str, api_key: str) -> str:
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    return f"{PREFIX}:rate:{tenant}:{digest}"


def rq_job(job_id: str) -> str:
    """RQ's hash for a job, as RQ names it."""
    from rq.job import Job

    return Job.key_for(job_id)


def rq_queue(queue_name: str) -> str:
    """RQ's list for a queue, as RQ names it."""
    from rq.queue import Queue

    return f"{Queue.redis_queue_namespace_prefix}{queue_name}"


def notes(tenant: str, session_id: str) -> str:
    """List of the notes an agent keeps in one session (`remember` / `recall` tools), oldest first."""
    return f"{PREFIX}:notes:{tenant}:{session_id}"


def session_images(tenant: str, session_id: str) -> str:
    """The session's images by ref (messages hold refs, so an image is stored once however often it is read)."""
    return f"{PREFIX}:images:{tenant}:{session_id}"


def summary_lock(tenant: str, session_id: str) -> str:
    """Held by the session's queued or running rolling-summary job, so only one runs at a time."""
    return f"{PREFIX}:summary-lock:{tenant}:{session_id}"


def request_rate(tenant: str) -> str:
    """The tenant's authenticated requests in the current one-second window (PARLEY_TENANT_REQUESTS_PER_S)."""
    return f"{PREFIX}:request-rate:{tenant}"


def tenant_admitted(tenant: str) -> str:
    """How many of the tenant's turns are in RQ's queue or running (the PARLEY_TENANT_CONCURRENCY cap)."""
    return f"{PREFIX}:tenant-admitted:{tenant}"


def tenant_line(tenant: str) -> str:
    """The tenant's ready turns (session lane heads) waiting, in order, for a place under its cap."""
    return f"{PREFIX}:tenant-line:{tenant}"


def tool_runs(tenant: str, job_id: str) -> str:
    """The results of a turn's tool runs, so a retried attempt replays them instead of running them again."""
    return f"{PREFIX}:tool-runs:{tenant}:{job_id}"


def pending_notes(tenant: str, job_id: str) -> str:
    """Notes written by a running turn; FINISH_TURN moves them to `notes` when the turn finishes."""
    return f"{PREFIX}:pending-notes:{tenant}:{job_id}"


def summary_report(tenant: str, session_id: str) -> str:
    """Held by the session's running `POST /api/v1/sessions/{id}/summary` job, so only one runs at a time."""
    return f"{PREFIX}:summary-report:{tenant}:{session_id}"


def metric(name: str) -> str:
    """A deployment-wide counter or histogram (shared/telemetry.py has the field format)."""
    return f"{PREFIX}:metric:{name}"


def web_streams() -> str:
    """Each web process's count of open SSE streams, with the time it stops counting."""
    return f"{PREFIX}:web-streams"


def hub_channel() -> str:
    """A pub/sub channel nothing publishes on: each web's event hub stays subscribed to it, so its one
    pub/sub connection stays in subscribe mode while no stream is open."""
    return f"{PREFIX}:hub"


def mcp_servers(tenant: str) -> str:
    return f"{PREFIX}:mcp-servers:{tenant}"


def mcp_tools(tenant: str, server: str) -> str:
    return f"{PREFIX}:mcp-tools:{tenant}:{server}"


def approval_deadlines() -> str:
    """Deployment-wide: every waiting turn as `"<tenant> <job id>"`, scored by when its wait times out."""
    return f"{PREFIX}:approval-deadlines"


def feedback(tenant: str) -> str:
    """The tenant's rated messages (`"<session id> <message index>"`), scored by when they were rated (ms)."""
    return f"{PREFIX}:feedback:{tenant}"


def agent_feedback(tenant: str, agent_id: str) -> str:
    """The same index for the sessions of one agent (`GET /api/v1/feedback?agent=`)."""
    return f"{PREFIX}:agent-feedback:{tenant}:{agent_id}"


def schedule(tenant: str, schedule_id: str) -> str:
    return f"{PREFIX}:schedule:{tenant}:{schedule_id}"


def schedules(tenant: str) -> str:
    """The tenant's schedule ids by creation time (ms)."""
    return f"{PREFIX}:schedules:{tenant}"


def schedules_due() -> str:
    """Deployment-wide: every schedule that still runs as `"<tenant> <schedule id>"`, scored by its next run (ms);
    while one process fires it, by the end of that process's lease (shared/store/schedules.py)."""
    return f"{PREFIX}:schedules-due"


def webhooks(tenant: str) -> str:
    """The tenant's webhooks (and A2A push configs): FINISH_TURN, PAUSE_TURN and TAKE_STEERS check that it EXISTS."""
    return f"{PREFIX}:webhooks:{tenant}"


def turn_ends() -> str:
    """Deployment-wide stream of the turn ends that webhooks may want (the dispatcher's consumer group reads it)."""
    return f"{PREFIX}:turn-ends"


def webhook_delivery(tenant: str, delivery_id: str) -> str:
    """One delivery of one event to one webhook, with its attempts."""
    return f"{PREFIX}:webhook-delivery:{tenant}:{delivery_id}"


def webhook_deliveries(tenant: str, webhook_id: str) -> str:
    """The webhook's deliveries by creation time, for `GET /api/v1/webhooks/{id}/deliveries`."""
    return f"{PREFIX}:webhook-deliveries:{tenant}:{webhook_id}"


def webhook_due() -> str:
    """Deployment-wide: every pending delivery as `"<tenant> <delivery id>"`, scored by when it is due (ms)."""
    return f"{PREFIX}:webhook-due"


def webhook_leases(tenant: str) -> str:
    """The tenant's delivery attempts in flight, as `"<tenant> <delivery id>"`, scored by when their lease ends (ms):
    CLAIM_DELIVERIES leases no more than PARLEY_WEBHOOK_TENANT_CONCURRENCY at once."""
    return f"{PREFIX}:webhook-leases:{tenant}"


def webhook_parked(tenant: str) -> str:
    """The tenant's due deliveries set aside while it is at its cap of attempts in flight, scored by when they
    were due (ms); CLAIM_DELIVERIES moves them back to `webhook_due()` as places free."""
    return f"{PREFIX}:webhook-parked:{tenant}"


def webhook_parked_tenants() -> str:
    """Deployment-wide: the tenants with parked deliveries."""
    return f"{PREFIX}:webhook-parked-tenants"


def steers(tenant: str, job_id: str) -> str:
    """The steer requests waiting to join a turn: TAKE_STEERS moves them into it before a model call, FINISH_TURN
    makes those left the session's next turns."""
    return f"{PREFIX}:steers:{tenant}:{job_id}"


def session_expiries() -> str:
    """Deployment-wide: every session of an agent with `session_ttl_s`, as `session_expiry_member`, scored
    by when it expires (ms); the worker's sweeper deletes what is left of each once it is due."""
    return f"{PREFIX}:session-expiries"


def session_expiry_member(tenant: str, agent_id: str, session_id: str) -> str:
    """A session in `session_expiries`: JSON, so the sweeper can name its keys (the agent's list too)
    once its hash is gone."""
    return json.dumps([tenant, agent_id, session_id], separators=(",", ":"))


def budget_spent(tenant: str, day: str) -> str:
    """Tokens the tenant's model calls used on UTC day `day` (`YYYY-MM-DD`, shared/budgets.py): the worker adds
    each call's, ACCEPT_TURN and every model call check it against PARLEY_TENANT_BUDGETS."""
    return f"{PREFIX}:budget-spent:{tenant}:{day}"


def usage_day(tenant: str, day: str) -> str:
    """The tenant's usage counters of one UTC day (`YYYY-MM-DD`): FINISH_TURN adds each counted turn
    (lib_usage.lua); they expire PARLEY_USAGE_RETENTION_DAYS after that day."""
    return f"{PREFIX}:usage:{tenant}:{day}"


def usage_agents(tenant: str, day: str) -> str:
    """The same day's counters by agent, one field per agent and counter (`shared/store/usage.py` reads them)."""
    return f"{PREFIX}:usage-agents:{tenant}:{day}"


def usage_sessions(tenant: str, day: str) -> str:
    """The same day's counters by session."""
    return f"{PREFIX}:usage-sessions:{tenant}:{day}"
