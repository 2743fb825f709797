"""Each tool run of a turn recorded once per (job, call), so a retried attempt replays it instead of running it again.

A worker killed mid-turn leaves the turn to be retried from the start, and the retried attempt asks
the model again. When it asks for a call an earlier attempt already ran, the recorded result is
given back and the tool is not run a second time (a note is not written twice, a message not sent
twice). A call is known by its tool's name, the SHA-256 of its arguments as canonical JSON, and how
many identical calls came before it in this attempt (`<name>:<sha256>:<n>`), in the hash
`keys.tool_runs(tenant, job_id)`, which expires with the job (`PARLEY_RETENTION_S`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from parley.shared.store import keys
from parley.tools.context import ToolResult

if TYPE_CHECKING:
    import redis

log = logging.getLogger("parley.tools")

INTERRUPTED = ToolResult.of(False, "error: the worker running this call stopped while it ran; it was not run again "
                                   "(it may or may not have taken effect)")
"""What a claimed call that never recorded its result gives (`ToolRuns.claim`)."""


def canonical_arguments(arguments: str | dict[str, Any]) -> str:
    """The arguments as canonical JSON (sorted keys, no spaces), or the text as is when it is not JSON."""
    value: Any = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class ToolRuns:
    """One attempt's view of the job's recorded tool runs."""

    def __init__(self, redis: redis.Redis, tenant: str, job_id: str, retention_s: int) -> None:
        self.redis = redis
        self.key = keys.tool_runs(tenant, job_id)
        self.job_id = job_id
        self.retention_ms = retention_s * 1000
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def field(self, name: str, arguments: str | dict[str, Any]) -> str:
        """The call's field; call in the order the model asked, so identical calls count the same every attempt."""
        digest = hashlib.sha256(canonical_arguments(arguments).encode("utf-8", "surrogatepass")).hexdigest()
        base = f"{name}:{digest}"
        with self._lock:
            n = self._seen[base]
            self._seen[base] += 1
        return f"{base}:{n}"

    def seen(self) -> dict[str, int]:
        """How many calls of each (name, arguments) this attempt counted, to go on counting after a pause."""
        with self._lock:
            return dict(self._seen)

    def restore(self, seen: dict[str, int]) -> None:
        """Go on counting from `seen` (a paused turn's, as `seen()` gave it)."""
        with self._lock:
            self._seen.update(seen)

    def claim(self, field: str) -> bool:
        """Mark the call as running, recording INTERRUPTED as its result until `record` replaces it; False when
        a result (or a claim) is there already. For calls that must run at most once (approved ones)."""
        with self.redis.pipeline() as pipe:
            pipe.hsetnx(self.key, field, _encode(INTERRUPTED))
            pipe.pexpire(self.key, self.retention_ms)
            claimed, _ = pipe.execute()
        return bool(claimed)

    def recorded(self, fields: list[str]) -> list[ToolResult | None]:
        """The recorded result of each field, None where that call has not run yet (one round trip)."""
        if not fields:
            return []
        stored = self.redis.hmget(self.key, fields)
        return [_decode(value) for value in stored]  # type: ignore[union-attr]

    def record(self, field: str, result: ToolResult) -> None:
        """Keep `result` for a retry; a failure to keep it is logged, not raised (the run has happened)."""
        value = _encode(result)
        try:
            with self.redis.pipeline() as pipe:  # MULTI: the field and the hash's lifetime together
                pipe.hset(self.key, field, value)
                pipe.pexpire(self.key, self.retention_ms)
                pipe.execute()
        except Exception as error:  # noqa: BLE001 - Redis down: the turn will find out when it commits
            log.warning("could not record the run of %s (job %s): %s", field, self.job_id, error)


def _encode(result: ToolResult) -> str:
    return json.dumps({"ok": result.ok, "content": result.content, "images": list(result.images)}, ensure_ascii=False)


def _decode(value: Any) -> ToolResult | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        data = json.loads(value)
        return ToolResult.of(bool(data["ok"]), str(data["content"]), tuple(map(str, data.get("images") or ())))
    except (ValueError, KeyError, TypeError):
        return None
