"""The one process supervisor: how ``python -m parley.local``, the tests and the benchmarks run a child.

A :class:`Process` starts its command in a new session (its own process group, so a terminal's Ctrl-C
reaches only the supervisor, which stops its children itself), asks Linux to SIGTERM it should the
supervisor die (``PR_SET_PDEATHSIG``), and sends its output either to a log file (``log_path``) or
through a pipe that :meth:`Process.pump` copies line by line, each line prefixed, to a writer.

    web = Process("web.1", argv, env, log_path=Path("web.log"), url="http://127.0.0.1:8000",
                  ready=lambda p: p.wait_http(p.url + "/readyz"))
    web.start()          # and waits on ``ready``
    web.terminate(10)    # SIGTERM; SIGKILL of the whole group after 10 s (leftovers too)
    web.kill()           # SIGKILL of the group: a crash
    web.restart()

This module imports only the standard library: the launcher, the test harness and the benchmarks
build on it, never the other way round.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Process",
    "ProcessError",
    "die_with_parent_preexec",
    "free_port",
    "http_status",
    "stop_all",
]


class ProcessError(RuntimeError):
    """A child did not start, become ready or stop as expected."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies.

    Keeps stray processes from outliving a killed test run, launcher or benchmark.  Resolved
    here, before fork, so the child does nothing but one prctl call.  Linux ties this to the
    *thread* that forks, so it is only used from the main thread (None elsewhere): a child
    started from a short-lived thread must not die with it.
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


def http_status(url: str, timeout: float) -> tuple[int | None, str]:
    """(status, detail) of a GET; status None when nothing answered (detail says why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code), f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, str(getattr(exc, "reason", exc))


def _describe(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


class Process:
    """One child process: started in its own process group, output to ``log_path`` or a pipe.

    ``tag`` names the supervisor in the lines it writes into the log (``=== tag: start #2 of web.1: ...``).
    ``ready`` is called with the process after each start (also by :meth:`restart`); if it raises, the
    child is killed.  (Typed ``Any`` so that a subclass's checks may take the subclass.)
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        log_path: Path | None = None,
        url: str | None = None,
        port: int | None = None,
        ready: Callable[[Any], None] | None = None,
        die_with_parent: bool = True,
        tag: str = "parley",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        self.log_path = Path(log_path) if log_path is not None else None
        self.url = url
        self.port = port
        self.ready = ready
        self.die_with_parent = die_with_parent
        self.tag = tag
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def poll(self) -> int | None:
        return self.returncode

    def read_log(self) -> str:
        """The whole log file ('' without one)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])

    def note(self, text: str) -> None:
        """Write ``=== tag: text`` into the log, so a reader sees what the supervisor did and when."""
        if self.log_path is None:
            return
        with open(self.log_path, "ab") as log:
            log.write(f"=== {self.tag}: {text}\n".encode())

    def error(self, message: str) -> Exception:
        """The exception to raise about this process (subclasses add their own type)."""
        state = "running" if self.alive else f"exited with code {self.returncode}"
        tail = f"\n--- last lines of {self.log_path} ---\n{self.log_tail()}" if self.log_path is not None else ""
        return ProcessError(f"{self.name}: {message} (process {state}; command: {_describe(self.argv)}){tail}")

    # -- start ----------------------------------------------------------------------------

    def start(self) -> Process:
        """Spawn the command, then run the ``ready`` check (killing the child if it fails)."""
        if self.alive:
            raise self.error(f"already running (pid {self.pid})")
        self.starts += 1
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.note(f"start #{self.starts} of {self.name}: {_describe(self.argv)}")
            with open(self.log_path, "ab") as log:
                self._spawn(log)
        else:
            self._spawn(subprocess.PIPE)
        if self.ready is not None:
            try:
                self.ready(self)
            except BaseException:
                self.kill()
                raise
        return self

    def _spawn(self, stdout: int | IO[bytes]) -> None:
        try:
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: killed as a whole; a terminal's Ctrl-C is for us
                preexec_fn=die_with_parent_preexec() if self.die_with_parent else None,  # noqa: PLW1509
            )
        except OSError as exc:
            raise self.error(f"could not run: {exc}") from exc

    def pump(self, prefix: str, write: Callable[[str], None]) -> None:
        """Copy the piped output, each line after ``prefix``, to ``write`` (from a daemon thread).

        Call it once every child is forked: a thread alive at fork time makes ``die_with_parent``
        unusable and forking less safe.
        """
        assert self._process is not None and self._process.stdout is not None, "pump() needs a piped start()"
        stdout = self._process.stdout

        def copy() -> None:
            with stdout:
                for raw in iter(stdout.readline, b""):
                    try:
                        write(prefix + raw.decode("utf-8", errors="replace").rstrip("\n"))
                    except (BrokenPipeError, ValueError):
                        pass

        self._pump = threading.Thread(target=copy, name=f"pump-{self.name}", daemon=True)
        self._pump.start()

    def flush_output(self, timeout: float = 2.0) -> None:
        """Wait (up to ``timeout``) until the pump has copied everything the child wrote."""
        if self._pump is not None:
            self._pump.join(timeout)

    # -- wait -----------------------------------------------------------------------------

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` for the process to exit; its exit code, or None if still running."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def wait_http(self, url: str | None = None, timeout: float = 30.0, status: int = 200) -> None:
        """Poll GET ``url`` (default: ``self.url + '/readyz'``) until it answers ``status``."""
        if url is None:
            if self.url is None:
                raise ValueError(f"{self.name}: no url to wait on")
            url = self.url.rstrip("/") + "/readyz"
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise self.error(f"exited while waiting for {url} to answer {status}")
            got, detail = http_status(url, timeout=2.0)
            if got == status:
                return
            last = f"HTTP {got}" if got is not None else detail
            if time.monotonic() >= deadline:
                raise self.error(f"GET {url} did not answer {status} within {timeout:.0f}s (last: {last})")
            time.sleep(0.1)

    # -- stop -----------------------------------------------------------------------------

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process itself (not its group), if it is running."""
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the process group, like a machine or container dying; wait for it."""
        if self._process is None:
            return
        self._killpg()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise self.error("did not die after SIGKILL") from exc

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait up to ``timeout``; then SIGKILL what is left of the group. The exit code."""
        if self._process is None:
            return None
        self.send_signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.note(f"{self.name} ignored SIGTERM for {timeout:.0f}s; SIGKILL")
        self.kill()  # also leftovers in the group (a work-horse, a hung child)
        return self._process.returncode

    stop = terminate

    def restart(self, *, hard: bool = False, timeout: float = 15.0) -> Process:
        """kill() if ``hard`` else terminate(), then start() (and the ``ready`` check) again."""
        if hard:
            self.kill()
        else:
            self.terminate(timeout)
        return self.start()

    def _killpg(self) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else f"exited {self.returncode}"
        where = f" log={self.log_path}" if self.log_path is not None else ""
        return f"<{type(self).__name__} {self.name} {state}{where}>"


def stop_all(
    processes: Iterable[Process], timeout: float = 15.0, give_up: Callable[[], bool] | None = None
) -> list[Process]:
    """SIGTERM all at once, wait up to ``timeout`` in all (less if ``give_up()``), then SIGKILL every group.

    Returns the processes that were still running when the wait ended.  Raises ProcessError (the
    messages of every process that did not die after SIGKILL) once all were tried.
    """
    procs = list(processes)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(proc.alive for proc in procs):
        if give_up is not None and give_up():
            break
        time.sleep(0.05)
    stuck = [proc for proc in procs if proc.alive]
    for proc in stuck:
        proc.note(f"{proc.name} still running {timeout:.0f}s after SIGTERM; SIGKILL")
    errors = []
    for proc in procs:
        try:
            proc.kill()
        except Exception as exc:  # noqa: BLE001 - kill the others first
            errors.append(str(exc))
        proc.flush_output(1.0)
    if errors:
        raise ProcessError("\n".join(errors))
    return stuck
