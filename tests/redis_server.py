"""The tests' Redis server: parley.local's :class:`~parley.local.redis_server.RedisServer` plus what only
tests do to it: crash it (:meth:`RedisServer.kill`), restart it in place, read its log, and use a
temporary data directory that goes away with a ``with`` block.

    with RedisServer() as server:     # a temp dir, removed at the end
        server.kill()                 # SIGKILL: a crash; the AOF keeps acknowledged writes
        server.start()                # same port and dir
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from parley.local import redis_server as local
from parley.local.processes import ProcessError, free_port
from parley.local.redis_server import RedisServerError, RedisServerNotFound, find_server_binary, redis_answers

__all__ = [
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFound",
    "find_server_binary",
    "free_port",
    "redis_answers",
]


class RedisServer(local.RedisServer):
    """``dir=None`` makes a temporary data dir, removed by :meth:`cleanup` (and on leaving a ``with`` block)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        dir: Path | None = None,
        appendonly: bool = True,
        binary: Path | str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self._owns_dir = dir is None
        chosen = Path(tempfile.mkdtemp(prefix="parley-redis-")) if dir is None else dir
        super().__init__(port, dir=chosen, appendonly=appendonly, binary=binary, die_with_parent=die_with_parent)

    def kill(self) -> None:
        """SIGKILL: a crash. Writes already in the AOF survive a :meth:`start`."""
        try:
            self.process.kill(5.0)
        except ProcessError as exc:
            raise RedisServerError(str(exc)) from exc

    def restart(self, *, hard: bool = False) -> RedisServer:
        """Stop (SIGKILL when ``hard``) and start again on the same port and dir."""
        if hard:
            self.kill()
        else:
            self.stop()
        self._port_was_given = True  # clients hold our URL: never move
        self.start()
        return self

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) or "(empty log)"

    def cleanup(self) -> None:
        """Stop, and remove the data dir if it was a temporary one we made."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
