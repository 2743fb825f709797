"""The tests' Redis server: parley.local's :class:`~parley.local.redis_server.RedisServer` plus what only
tests do to it: crash it (:meth:`RedisServer.kill`), restart it in place, read its log, and use a
temporary data directory that goes away with a ``with`` block.

    with RedisServer() as server:     # a temp dir, removed at the end
        server.wait_aof_written()     # Redis has handed every write to the kernel
        server.kill()                 # SIGKILL: a crash; what was written to the AOF survives
        server.start()                # same port and dir
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

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

    def wait_aof_written(self, timeout_s: float = 10.0) -> None:
        """Wait until Redis has written its AOF buffer to the file (``aof_buffer_length`` 0).

        With ``appendfsync everysec`` Redis acknowledges a write before writing it to the AOF
        whenever a background fsync is still running (a slow disk), and may hold it up to two
        seconds: a SIGKILL then loses it. A test that kills Redis and expects its writes back
        waits for this first, rather than sleeping and hoping the disk was quick.
        """
        deadline = time.monotonic() + timeout_s
        with redis.Redis.from_url(self.url, socket_timeout=2) as client:
            while True:
                persistence = client.info("persistence")
                if not persistence.get("aof_enabled") or int(persistence.get("aof_buffer_length", 0)) == 0:
                    return
                if time.monotonic() >= deadline:
                    raise RedisServerError(f"Redis still holds {persistence['aof_buffer_length']} AOF bytes unwritten")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash. What Redis wrote to its AOF (see :meth:`wait_aof_written`) survives a :meth:`start`."""
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
