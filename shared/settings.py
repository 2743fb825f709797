"""One `Settings` object, read from the environment (and an optional `.env` file).

Every duration carries its unit in its name (`_s`, `_ms`). The contract's variables keep their
contract names (`REDIS_URL`, `PARLEY_API_KEYS`, ...); the rest are Parley's own tuning knobs,
all prefixed `PARLEY_` and listed in docs/configuration.md.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.shared.sealing import Sealer, sealer
from parley.shared.usage import Price, parse_prices

DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a tenant name may be: it is part of every Redis key of the tenant (no `:`, no leading `_`, no spaces)."""


def check_tenant_name(name: str, where: str) -> str:
    """`name` when it is a valid tenant name, else ValueError naming the setting it came from."""
    if not TENANT_NAME.fullmatch(name):
        raise ValueError(f"{where}: {name!r} is not a tenant name (1-64 of A-Z a-z 0-9 . _ -, starting with a "
                         "letter or digit; names starting with '_' are reserved)")
    return name


@lru_cache(maxsize=8)
def priced(text: str) -> dict[str, Price]:
    """PARLEY_MODEL_PRICES parsed once per text (each turn's commit prices its usage)."""
    return parse_prices(text)


class Settings(BaseSettings):
    """Configuration shared by `web` and `worker`."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0", alias="REDIS_URL")
    api_keys: str = Field("", alias="PARLEY_API_KEYS")
    openai_api_key: str | None = Field(None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    llm: Literal["openai", "demo"] | None = Field(None, alias="PARLEY_LLM")
    default_model: str = Field("gpt-4o-mini", alias="PARLEY_MODEL")
    agents_file: str | None = Field(None, alias="PARLEY_AGENTS_FILE")
    compat_tenant: str | None = Field(None, alias="PARLEY_COMPAT_TENANT")

    queue_name: str = Field("parley-turns", alias="PARLEY_QUEUE")
    """RQ queue that holds chat turns."""
    max_queue_depth: int = Field(10_000, alias="PARLEY_MAX_QUEUE_DEPTH", ge=1)
    """Chat routes answer 429 once the turn queue holds this many jobs."""
    max_turns_in_flight: int = Field(1_000, alias="PARLEY_MAX_TURNS_IN_FLIGHT", ge=0)
    """Per tenant: chat routes answer 429 once this many of its turns are queued or running (0: no limit).
    Kept below PARLEY_MAX_QUEUE_DEPTH so one tenant cannot fill the queue for the others."""
    tenant_requests_per_s: int = Field(0, alias="PARLEY_TENANT_REQUESTS_PER_S", ge=0)
    """Per tenant: authenticated requests (any route, all keys of the tenant, all web processes) per second
    before the API answers 429; 0: no limit."""
    tenant_concurrency: int = Field(32, alias="PARLEY_TENANT_CONCURRENCY", ge=0)
    """Per tenant: most of its turns in the worker queue or running at once; the rest wait in the tenant's
    own line (in order), so one tenant's backlog never queues ahead of another tenant's turns (0: no cap)."""
    max_streams_per_tenant: int = Field(200, alias="PARLEY_MAX_STREAMS_PER_TENANT", ge=1)
    """Per tenant and web process: open SSE streams (job events, chat streams) beyond this answer 429."""
    max_agents_per_tenant: int = Field(1_000, alias="PARLEY_MAX_AGENTS_PER_TENANT", ge=1)
    """Per tenant: agents it may hold; creating one more answers 409 `too_many_agents`."""
    max_history_messages: int = Field(500, alias="PARLEY_MAX_HISTORY_MESSAGES", ge=1)
    """Most messages one `/v1/chat/completions` request may bring (413 beyond)."""
    max_history_chars: int = Field(400_000, alias="PARLEY_MAX_HISTORY_CHARS", ge=1)
    """Most characters of text all messages of one `/v1/chat/completions` request may bring (413 beyond)."""
    rate_limit_turns: int = Field(0, alias="PARLEY_RATE_LIMIT_TURNS", ge=0)
    """Per API key: turns accepted per `PARLEY_RATE_WINDOW_S` before chat routes answer 429 (0: no limit)."""
    rate_window_s: int = Field(60, alias="PARLEY_RATE_WINDOW_S", ge=1)
    retention_s: int = Field(86_400, alias="PARLEY_RETENTION_S", ge=60)
    """How long a job's record, events and result are kept after it was accepted, in seconds."""
    idempotency_ttl_s: int = Field(86_400, alias="PARLEY_IDEMPOTENCY_TTL_S", ge=1)
    """How long an Idempotency-Key maps to its first job, in seconds (the contract says a day)."""
    chat_timeout_s: float = Field(120.0, alias="PARLEY_CHAT_TIMEOUT_S", gt=0)
    """How long `POST /api/v1/chat` waits for the turn before answering 504 with the job id."""
    turn_timeout_s: int = Field(300, alias="PARLEY_TURN_TIMEOUT_S", ge=5)
    """Longest a worker may spend on one turn (RQ job timeout), in seconds."""
    turn_retries: int = Field(2, alias="PARLEY_TURN_RETRIES", ge=0)
    """How often a turn whose worker died is run again before it ends `failed`."""
    heartbeat_ttl_s: int = Field(20, alias="PARLEY_HEARTBEAT_TTL_S", ge=3)
    """A running turn whose worker sent no heartbeat for this long counts as abandoned."""
    drain_grace_s: float = Field(25.0, alias="PARLEY_DRAIN_GRACE_S", gt=0)
    """After SIGTERM, how long a worker lets its running turn finish before handing it back."""
    worker_concurrency: int = Field(50, alias="PARLEY_WORKER_CONCURRENCY", ge=1, le=1000)
    """How many turns one worker process runs at once (tasks on its event loop; a turn mostly waits on the model)."""
    maintenance_interval_s: int = Field(10, alias="PARLEY_MAINTENANCE_INTERVAL_S", ge=1)
    """How often an idle worker looks for abandoned turns, in seconds."""
    sse_ping_s: float = Field(15.0, alias="PARLEY_SSE_PING_S", gt=0)
    """Idle SSE streams get a `: ping` comment this often, in seconds."""
    sse_send_timeout_s: float = Field(30.0, alias="PARLEY_SSE_SEND_TIMEOUT_S", gt=0)
    """A stream whose client read nothing for this long (one send still blocked) ends, giving back its place."""
    max_message_chars: int = Field(32_000, alias="PARLEY_MAX_MESSAGE_CHARS", ge=1)
    max_image_bytes: int = Field(5 * 1024 * 1024, alias="PARLEY_MAX_IMAGE_BYTES", ge=1)
    """Largest decoded size of one image, in bytes."""
    max_body_bytes: int = Field(40 * 1024 * 1024, alias="PARLEY_MAX_BODY_BYTES", ge=1024)
    """Largest request body the API reads, in bytes (413 beyond)."""
    tool_modules: str = Field("", alias="PARLEY_TOOL_MODULES")
    """Comma-separated modules imported at start; their `@tool` functions are offered to agents."""
    tool_timeout_s: float = Field(10.0, alias="PARLEY_TOOL_TIMEOUT_S", gt=0)
    """Longest one tool call may run (unless the tool sets its own), in seconds; then the model is told it timed out."""
    http_get_allow_private: bool = Field(False, alias="PARLEY_HTTP_GET_ALLOW_PRIVATE")
    """Let `http_get` fetch loopback, private and link-local addresses (off: only public ones)."""
    http_get_max_bytes: int = Field(1_000_000, alias="PARLEY_HTTP_GET_MAX_BYTES", ge=1)
    """Most bytes `http_get` reads of a response body (after decompression); the rest is cut."""
    http_get_timeout_s: float = Field(10.0, alias="PARLEY_HTTP_GET_TIMEOUT_S", gt=0)
    """Longest one `http_get` fetch may take, redirects included, in seconds."""
    private_networks_allowed: str = Field("", alias="PARLEY_PRIVATE_NETWORKS_ALLOWED")
    """Comma-separated CIDRs or host names that tools (`http_get`, MCP servers) and webhooks may reach although
    they are private or loopback (default: none)."""
    mcp_timeout_s: float = Field(30.0, alias="PARLEY_MCP_TIMEOUT_S", gt=0)
    """Longest one call of an MCP server's tool (or one listing of its tools) may take, in seconds."""
    mcp_max_bytes: int = Field(1_000_000, alias="PARLEY_MCP_MAX_BYTES", ge=1024)
    """Most bytes read of one MCP server's answer; a larger one fails the call."""
    mcp_tools_ttl_s: int = Field(300, alias="PARLEY_MCP_TOOLS_TTL_S", ge=0)
    """How long a server's tool list is kept before it is asked again (0: asked at every turn)."""
    max_mcp_servers: int = Field(20, alias="PARLEY_MAX_MCP_SERVERS", ge=0)
    """Most MCP servers one tenant may register."""
    max_schedules: int = Field(50, alias="PARLEY_MAX_SCHEDULES", ge=0)
    """Most schedules one tenant may hold; creating one more answers 409 `too_many_schedules`."""
    approval_timeout_s: int = Field(86_400, alias="PARLEY_APPROVAL_TIMEOUT_S", ge=1)
    """How long a tool call waits for a person's decision; then it is denied ("timed out") and the turn goes on."""
    max_webhooks: int = Field(20, alias="PARLEY_MAX_WEBHOOKS", ge=0)
    """Most webhooks one tenant may register; one more is 409 `too_many_webhooks`."""
    webhook_timeout_s: float = Field(10.0, alias="PARLEY_WEBHOOK_TIMEOUT_S", gt=0)
    """Longest one delivery attempt may take (connect, send, read the answer), in seconds."""
    webhook_backoff_s: float = Field(1.0, alias="PARLEY_WEBHOOK_BACKOFF_S", gt=0)
    """Wait before a failed delivery's first retry, in seconds; doubled at each further attempt."""
    webhook_backoff_cap_s: float = Field(300.0, alias="PARLEY_WEBHOOK_BACKOFF_CAP_S", gt=0)
    """Longest wait between two attempts of one delivery, in seconds."""
    webhook_give_up_s: int = Field(86_400, alias="PARLEY_WEBHOOK_GIVE_UP_S", ge=1)
    """How long a delivery is retried after it was created before it ends `failed`, in seconds (the contract
    promises at least an hour: keep it at 3600 or more outside tests)."""
    webhook_concurrency: int = Field(16, alias="PARLEY_WEBHOOK_CONCURRENCY", ge=1)
    """Per worker: most delivery attempts in flight at once."""
    webhook_tenant_concurrency: int = Field(8, alias="PARLEY_WEBHOOK_TENANT_CONCURRENCY", ge=1)
    """Per tenant, across every worker: most delivery attempts in flight at once, so one tenant's slow or failing
    receivers cannot take every worker's places from the others' deliveries."""
    session_ttl_min_s: int = Field(60, alias="PARLEY_SESSION_TTL_MIN_S", ge=1)
    """The least `session_ttl_s` an agent may set, in seconds (lower only for tests)."""
    session_sweep_s: float = Field(10.0, alias="PARLEY_SESSION_SWEEP_S", gt=0)
    """How often a worker deletes what is left of expired sessions (agents' `session_ttl_s`), in seconds."""
    fork_max_messages: int = Field(10_000, alias="PARLEY_FORK_MAX_MESSAGES", ge=1)
    """Most messages one fork copies (a fork is one Redis step: it must stay short); beyond, 413."""
    model_timeout_s: float = Field(60.0, alias="PARLEY_MODEL_TIMEOUT_S", gt=0)
    """Read timeout of one model request, in seconds."""
    model_idle_timeout_s: float = Field(60.0, alias="PARLEY_MODEL_IDLE_TIMEOUT_S", gt=0)
    """A model stream that sends no content (text, reasoning or tool call) for this long ends the attempt as
    timed out, even while the server keeps the connection alive with empty bytes."""
    model_max_retries: int = Field(3, alias="PARLEY_MODEL_MAX_RETRIES", ge=0)
    """How often the OpenAI SDK retries 429, 5xx and connection errors (it honours Retry-After)."""
    model_stream_usage: bool = Field(True, alias="PARLEY_MODEL_STREAM_USAGE")
    """Ask the model for token counts (`stream_options.include_usage`); off for servers that refuse it."""
    model_prompt_cache_key: bool = Field(True, alias="PARLEY_MODEL_PROMPT_CACHE_KEY")
    """Send each turn's session as `prompt_cache_key` (a provider routes one conversation's calls to its prompt
    cache); off for servers that refuse unknown fields."""
    context_tokens: int = Field(16_000, alias="PARLEY_CONTEXT_TOKENS", ge=256)
    """Default context budget of an agent, in tokens (an agent's `context_budget` overrides it): docs/memory.md."""
    summary_timeout_s: float = Field(120.0, alias="PARLEY_SUMMARY_TIMEOUT_S", gt=0)
    """Longest a summary job may take (RQ job timeout), and how long `POST .../summary` waits before 504."""
    demo_chunk_delay_ms: int = Field(15, alias="PARLEY_DEMO_CHUNK_DELAY_MS", ge=0)
    """Pause between the demo model's chunks, in ms, so streaming is visible."""
    max_tool_steps: int = Field(8, alias="PARLEY_MAX_TOOL_STEPS", ge=1, le=100)
    """Model steps that end in tool calls one turn may take; past that the turn answers that it stopped."""
    tenant_budgets: str = Field("", alias="PARLEY_TENANT_BUDGETS")
    """Comma-separated `tenant:tokens_per_day` (prompt + completion tokens per UTC day); `*:N` for every tenant
    not named; a tenant with no entry (and no `*`) has no budget. Parsed by `tenant_budget`."""
    max_turn_tokens: int = Field(0, alias="PARLEY_MAX_TURN_TOKENS", ge=0)
    """Tokens (prompt + completion, every model call) one turn may use before it stops with an answer saying so;
    0: no cap. An agent's `max_turn_tokens` can only lower it."""
    model_response_format: bool = Field(True, alias="PARLEY_MODEL_RESPONSE_FORMAT")
    """Send `response_format` for agents with a response shape; off for servers that refuse it
    (the shape is in the instructions either way, and every answer is checked)."""
    redis_timeout_s: float = Field(2.0, alias="PARLEY_REDIS_TIMEOUT_S", gt=0)
    """Connect and command timeout towards Redis for request handling, in seconds."""
    cors_origins: str = Field("*", alias="PARLEY_CORS_ORIGINS")
    """Comma-separated origins whose browser pages may call the API ('*': any; empty: none).
    Keys travel in the Authorization header, never in cookies, so '*' exposes no credentials."""
    metrics_token: str | None = Field(None, alias="PARLEY_METRICS_TOKEN")
    """When set, `/metrics` answers only requests with `Authorization: Bearer <this token>`."""
    metrics_agent_labels: bool = Field(False, alias="PARLEY_METRICS_AGENT_LABELS")
    """Label token metrics with agent and model names (tenants' data: off by default; bounded when on)."""
    model_prices: str = Field("", alias="PARLEY_MODEL_PRICES")
    """Prices per 1M tokens by model, for the cost in `GET /api/v1/usage`: `model=input/output[/cached_input],...`
    (or a JSON object of model -> [input, output, cached_input?]); empty: usage shows no cost."""
    currency: str = Field("USD", alias="PARLEY_CURRENCY", pattern=r"^[A-Za-z]{3}$")
    """The currency PARLEY_MODEL_PRICES are in (ISO 4217 code), named beside the cost in usage."""
    usage_retention_days: int = Field(400, alias="PARLEY_USAGE_RETENTION_DAYS", ge=1, le=3660)
    """How long a day's usage counters are kept, in days from that day."""
    usage_max_groups: int = Field(1000, alias="PARLEY_USAGE_MAX_GROUPS_PER_DAY", ge=1, le=100_000)
    """Most agents, and most sessions, one tenant's usage keeps apart per day; later ones that day are counted
    under the key `(other)` (the day's totals stay exact)."""
    secrets_key: str = Field("", alias="PARLEY_SECRETS_KEY", repr=False)
    """Fernet keys, comma-separated, that seal tenants' credentials kept in Redis (MCP header values, webhook
    secrets, A2A push tokens): the first seals, all unseal (shared/sealing.py); empty: kept as they are."""
    log_level: str = Field("INFO", alias="PARLEY_LOG_LEVEL")
    rq_log_level: str = Field("WARNING", alias="PARLEY_RQ_LOG_LEVEL")
    """RQ's own log level in workers (INFO logs every job and every maintenance pass)."""
    log_format: Literal["text", "json"] = Field("text", alias="PARLEY_LOG_FORMAT")
    """`json`: every log line is one JSON object with ts, level, logger, msg and the request/tenant/session/job ids."""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("compat_tenant")
    @classmethod
    def _compat_tenant_name(cls, value: str | None) -> str | None:
        return None if value is None else check_tenant_name(value, "PARLEY_COMPAT_TENANT")

    @field_validator("model_prices")
    @classmethod
    def _model_prices(cls, value: str) -> str:
        priced(value)  # raises on malformed entries, at start rather than at a turn's commit
        return value

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key(cls, value: str) -> str:
        sealer(value)  # raises on a malformed key, at start rather than at the first write
        return value

    @property
    def sealer(self) -> Sealer:
        """Seals and unseals tenants' credentials with PARLEY_SECRETS_KEY."""
        return sealer(self.secrets_key)

    @property
    def prices(self) -> dict[str, Price]:
        """PARLEY_MODEL_PRICES by model name (empty when unset)."""
        return priced(self.model_prices)

    @model_validator(mode="after")
    def _parse_keys(self) -> Settings:
        self.keys_to_tenants()  # raises on malformed entries, at start rather than per request
        parse_budgets(self.tenant_budgets)  # likewise
        return self

    @property
    def provider(self) -> Literal["openai", "demo"]:
        """The model provider: `PARLEY_LLM`, else `openai` when an OpenAI variable is set."""
        if self.llm:
            return self.llm
        return "openai" if (self.openai_api_key or self.openai_base_url) else "demo"

    def keys_to_tenants(self) -> dict[str, str]:
        """Map each API key to its tenant (`tenant:key`, or a bare `key` for tenant `default`)."""
        mapping: dict[str, str] = {}
        for entry in self.api_keys.split(","):
            entry = entry.strip()
            if not entry:
                continue
            tenant, sep, key = entry.partition(":")
            if not sep:
                tenant, key = DEFAULT_TENANT, tenant
            if not tenant or not key:
                raise ValueError(f"PARLEY_API_KEYS entry {entry!r} is not `tenant:key` or `key`")
            check_tenant_name(tenant, "PARLEY_API_KEYS")
            if mapping.get(key, tenant) != tenant:
                raise ValueError(f"PARLEY_API_KEYS: one key is given to two tenants ({mapping[key]!r}, {tenant!r})")
            mapping[key] = tenant
        return mapping

    def tenant_budget(self, tenant: str) -> int | None:
        """The tenant's tokens per UTC day (PARLEY_TENANT_BUDGETS: its entry, else `*`'s), None: no budget."""
        budgets = parse_budgets(self.tenant_budgets)
        return budgets.get(tenant, budgets.get(ANY_TENANT))


ANY_TENANT = "*"
"""The PARLEY_TENANT_BUDGETS entry for every tenant that has none of its own."""
MAX_BUDGET_TOKENS = 10**15
"""Largest budget: Redis's Lua compares numbers as doubles, exact up to 2**53."""


@lru_cache(maxsize=8)
def parse_budgets(text: str) -> dict[str, int]:
    """PARLEY_TENANT_BUDGETS as tenant (or `*`) -> tokens per day; ValueError naming the bad entry."""
    budgets: dict[str, int] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        tenant, sep, amount = entry.partition(":")
        tenant, amount = tenant.strip(), amount.strip()
        if not sep or not tenant or not amount.isascii() or not amount.isdigit():
            raise ValueError(f"PARLEY_TENANT_BUDGETS entry {entry!r} is not `tenant:tokens_per_day` "
                             "(tokens a whole number, 0 or more; `*:N` for every other tenant)")
        if tenant != ANY_TENANT:
            check_tenant_name(tenant, "PARLEY_TENANT_BUDGETS")
        if tenant in budgets:
            raise ValueError(f"PARLEY_TENANT_BUDGETS names {tenant!r} twice")
        if int(amount) > MAX_BUDGET_TOKENS:
            raise ValueError(f"PARLEY_TENANT_BUDGETS entry {entry!r}: at most {MAX_BUDGET_TOKENS} tokens a day")
        budgets[tenant] = int(amount)
    return budgets


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()  # type: ignore[call-arg]
