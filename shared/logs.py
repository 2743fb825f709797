"""Logging for both processes: plain text, or one JSON object per line (`PARLEY_LOG_FORMAT=json`).

What a line is about (`request_id`, `tenant`, `session_id`, `job_id`) lives in a context variable,
set where each is known (the HTTP middleware, the key check, the chat routes, the worker's turn)
and added to every record logged while it is set. A context variable follows each asyncio task
and each worker thread on its own, so concurrent requests and turns never mix their ids.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from parley.shared.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: ContextVar[dict[str, str] | None] = ContextVar("parley_log_context", default=None)
HANDLER_NAME = "parley"


def bind(**fields: str | None) -> None:
    """Add ids to the current context (None leaves a field as it was)."""
    _context.set({**(_context.get() or {}), **{name: value for name, value in fields.items() if value is not None}})


def set_context(**fields: str | None) -> None:
    """Replace the current context: what one unit of work (a turn) is about, nothing left from before."""
    _context.set({name: value for name, value in fields.items() if value is not None})


P = ParamSpec("P")
R = TypeVar("R")


def turn_context(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """For a job coroutine called as `(tenant, job_id, ...)`: what it logs carries both ids, and
    nothing logged after it returns does (the worker's next job in the same task must not show this one's)."""

    @functools.wraps(func)
    async def with_context(*args: P.args, **kwargs: P.kwargs) -> R:
        tenant, job_id = args[0], args[1]
        token = _context.set({"tenant": str(tenant), "job_id": str(job_id)})
        try:
            return await func(*args, **kwargs)
        finally:
            _context.reset(token)

    return with_context


def context() -> dict[str, str]:
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", <context ids>, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_context.get() or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    """Log to stderr at `PARLEY_LOG_LEVEL` in `PARLEY_LOG_FORMAT`; in JSON, uvicorn's own loggers too,
    so every line of the process is JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    json_lines = settings.log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:  # configured twice: replace ours
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    if json_lines:
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            if logger.handlers:  # uvicorn set up its own: use ours instead
                logger.handlers = [handler]
