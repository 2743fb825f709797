"""``python -m parley.local``: run Parley on this machine, the way it is deployed.

1. Redis: ``REDIS_URL`` if a server answers there, else a private Redis-compatible
   server (see :mod:`parley.local.redis_server`) whose data lives in
   ``.parley-data/redis`` (append-only file), so memory survives restarts.
2. An API key: from ``PARLEY_API_KEYS`` if set, else made once and kept in
   ``.parley-data/api_key``.
3. Agents: ``PARLEY_AGENTS_FILE`` if set, else ``.parley-data/agents.yaml`` with one
   example agent (written once; edit it freely).
4. The ``web`` and ``worker`` process types of the Procfile, run through bash just
   as a Procfile runner would, with their output prefixed by ``web.1 |`` etc.
5. Waits for ``GET /readyz`` to answer 200, then prints the URL, the key and a
   first request to try.

Ctrl-C or SIGTERM stops everything it started (processes first, then Redis).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

from parley.local import (
    child_path,
    describe,
    find_procfile,
    procfile_argv,
    read_procfile,
)
from parley.local.processes import Process, ProcessError, http_status, stop_all
from parley.local.redis_server import RedisServer, RedisServerError, redis_answers
from parley.shared.settings import Settings

DATA_DIR_NAME = ".parley-data"

EXAMPLE_AGENTS_YAML = """\
# Agents served by your local Parley. Written once by `python -m parley.local`;
# edit it freely (it is never overwritten) and restart. Point PARLEY_AGENTS_FILE at
# another YAML or JSON file to use that instead.
#
# Each agent has a name, a description, a context (what it knows), a first_message
# (its greeting) and instructions (how it behaves); model, tools (GET /api/v1/tools
# lists them) and response_shape (a JSON Schema or a description) are optional.
- name: Parley Guide
  description: A friendly guide who explains what Parley is and how to talk to its agents.
  context: |
    Parley hosts conversational AI agents behind an HTTP API. Every conversation is a
    session named by a session_id. Parley remembers each session's messages in Redis,
    so a conversation carries on across requests, and across restarts of the service.
    Requests go to /api/v1/ with an "Authorization: Bearer <API key>" header.
  first_message: >-
    Hi, I'm the Parley Guide! Ask me anything about Parley, or try my tools:
    "calc: 2+2*10", "what time is it in Tokyo?", "remember: I like basil".
  instructions: |
    Be warm, brief and concrete. When someone asks how to do something with Parley,
    answer with a short example request. Remember what was said earlier in the
    session and refer back to it. If you don't know something, say so plainly.
    Use your tools for arithmetic, the time and notes rather than guessing.
  tools: [calculator, current_time, http_get, remember, recall]
- name: Trip Planner
  description: Answers in a fixed JSON shape (a response_shape), with the intent of each message.
  context: You help people plan short trips.
  first_message: Where would you like to go, and for how long?
  instructions: Keep each answer to a few sentences.
  response_shape:
    type: object
    properties:
      answer: {type: string}
      intent: {type: string, enum: [plan, question, other]}
    required: [answer, intent]
  tools: [current_time]
"""


def _say(message: str, *, stream: IO[str] | None = None) -> None:
    with _OUTPUT_LOCK:
        print(message, file=stream or sys.stdout, flush=True)


def _error(message: str) -> None:
    _say(f"parley.local: error: {message}", stream=sys.stderr)


_OUTPUT_LOCK = threading.Lock()


class Shutdown(Exception):
    """Raised by the SIGINT/SIGTERM handler to unwind to the clean-up code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StartupFailed(Exception):
    """Something could not start; the message says what and what to do."""


# -- the pieces -------------------------------------------------------------------------


def first_key(api_keys: str) -> str:
    """The key part of the first ``tenant:key`` or bare ``key`` entry."""
    for entry in api_keys.split(","):
        entry = entry.strip()
        if entry:
            return entry.split(":", 1)[1].strip() if ":" in entry else entry
    raise StartupFailed("PARLEY_API_KEYS is set but holds no key")


def api_keys_setting(data_dir: Path) -> tuple[str, str, str]:
    """(PARLEY_API_KEYS value, key to show, where it came from)."""
    configured = os.environ.get("PARLEY_API_KEYS", "").strip()
    if configured:
        return configured, first_key(configured), "from PARLEY_API_KEYS"
    key_file = data_dir / "api_key"
    key = key_file.read_text(encoding="utf-8").strip() if key_file.is_file() else ""
    if not key:
        key = "parley-" + secrets.token_hex(16)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
        return key, key, f"new, saved in {key_file}"
    return key, key, f"saved in {key_file}"


def agents_file_setting(data_dir: Path) -> tuple[str, str]:
    """(PARLEY_AGENTS_FILE value, description)."""
    configured = os.environ.get("PARLEY_AGENTS_FILE", "").strip()
    if configured:
        path = Path(configured).expanduser().resolve()
        if not path.is_file():
            _say(f"parley.local: warning: PARLEY_AGENTS_FILE={configured} does not exist", stream=sys.stderr)
        return str(path), f"{path} (from PARLEY_AGENTS_FILE)"
    path = (data_dir / "agents.yaml").resolve()
    if not path.exists():
        path.write_text(EXAMPLE_AGENTS_YAML, encoding="utf-8")
        return str(path), f"{path} (example written; edit it to add agents)"
    return str(path), str(path)


def llm_setting() -> tuple[str, str]:
    """(PARLEY_LLM value, description for the banner)."""
    settings = Settings()  # type: ignore[call-arg]  # the service's own rule, so the banner says what will serve
    configured = os.environ.get("PARLEY_LLM", "").strip()
    llm = settings.provider
    if llm == "demo":
        if configured:
            why = "PARLEY_LLM=demo"
        else:
            why = "no OPENAI_* variables are set"
        return llm, (
            f"demo ({why}): the built-in demo model is serving. For a real model set "
            "OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible server) "
            "and PARLEY_LLM=openai."
        )
    source = f"PARLEY_LLM={configured}" if configured else "OPENAI_* variables are set"
    base = settings.openai_base_url or "the OpenAI API"
    return llm, f"{llm} ({source}; {base})"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold a lock on the data dir so two launchers never share one Redis data dir."""
    lock_path = data_dir / "launcher.lock"
    fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.seek(0)
        other = fh.read().strip() or "?"
        fh.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise StartupFailed(
                f"another `python -m parley.local` (pid {other}) is already running with {data_dir}; "
                "stop it first (Ctrl-C in its terminal)"
            ) from exc
        raise
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir = Path(args.data_dir).resolve()
        self.redis: RedisServer | None = None
        self.children: list[Process] = []
        self.commands: dict[str, str] = {}  # name -> the Procfile command it runs, for messages
        self.force = False

    # -- start ----------------------------------------------------------------------

    def start_redis(self) -> tuple[str, str]:
        url = os.environ.get("REDIS_URL", "").strip()
        if url:
            if redis_answers(url, timeout_s=2.0):
                return url, f"{url} (REDIS_URL)"
            _say(
                f"parley.local: warning: REDIS_URL={url} does not answer PING; "
                "starting a local Redis server instead",
                stream=sys.stderr,
            )
        redis_dir = self.data_dir / "redis"
        try:
            self.redis = RedisServer(
                port=self.args.redis_port or None, dir=redis_dir, appendonly=True, die_with_parent=True
            )
            _say(f"parley.local: starting {self.redis.binary} on port {self.redis.port} (data in {redis_dir})")
            self.redis.start()
        except RedisServerError as exc:
            self.redis = None
            raise StartupFailed(f"could not start a local Redis server:\n{exc}") from exc
        return self.redis.url, f"{self.redis.url} (local {self.redis.binary.name}, data in {redis_dir})"

    def start_processes(self, env: dict[str, str]) -> None:
        procfile = Path(self.args.procfile) if self.args.procfile else find_procfile()
        processes = read_procfile(procfile)
        for needed in ("web", "worker"):
            if needed not in processes:
                raise StartupFailed(f"{procfile or 'the Procfile'} declares no {needed!r} process type")
        _say(f"parley.local: process types from {procfile or 'built-in defaults (no Procfile found)'}")
        plan = [("web.1", processes["web"], {"PORT": str(self.args.port)})]
        plan += [(f"worker.{i}", processes["worker"], {}) for i in range(1, self.args.workers + 1)]
        for name, command, extra in plan:
            child_env = {**env, **extra}
            _say(f"parley.local: starting {name}: {command}")
            child = Process(name, procfile_argv(command), child_env, tag="parley.local")
            try:
                child.start()
            except ProcessError as exc:
                raise StartupFailed(f"could not run {name} ({describe(child.argv)}): {exc.__cause__ or exc}") from exc
            self.children.append(child)
            self.commands[name] = command
        # Output pumps are threads: started only once every child is forked.
        width = max(len(c.name) for c in self.children)
        for child in self.children:
            child.pump(f"{child.name:<{width}} | ", _say)

    def dead_child(self) -> Process | None:
        for child in self.children:
            if child.poll() is not None:
                return child
        return None

    def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.args.port}/readyz"
        deadline = time.monotonic() + self.args.ready_timeout
        last = "no answer yet"
        while True:
            dead = self.dead_child()
            if dead is not None:
                dead.flush_output()
                raise StartupFailed(
                    f"{dead.name} exited with code {dead.poll()} during start-up "
                    f"(its output is above, lines prefixed '{dead.name}').\n"
                    f"  command: {self.commands[dead.name]}\n"
                    "  If it could not import parley.*, install the project first: "
                    "pip install -e '.[local]' (or: make run)"
                )
            status, detail = http_status(url, timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}" if status is not None else detail
            if time.monotonic() >= deadline:
                raise StartupFailed(
                    f"the web process did not become ready: GET {url} gave no 200 within "
                    f"{self.args.ready_timeout:.0f}s (last: {last}). Its output is above, lines prefixed 'web.1'."
                )
            time.sleep(0.25)

    # -- stop -----------------------------------------------------------------------

    def stop(self) -> None:
        alive = [c for c in self.children if c.alive]
        if alive:
            _say(f"parley.local: stopping {', '.join(c.name for c in alive)}")
        try:
            stuck = stop_all(self.children, self.args.stop_timeout, give_up=lambda: self.force)
        except ProcessError as exc:
            _error(str(exc))
        else:
            for child in stuck:
                _say(f"parley.local: {child.name} did not stop in time; killed it", stream=sys.stderr)
        if self.redis is not None:
            _say("parley.local: stopping Redis (data is kept in the data dir)")
            try:
                self.redis.stop()
            except RedisServerError as exc:
                _error(str(exc))

    # -- run ------------------------------------------------------------------------

    def run(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url, redis_desc = self.start_redis()
        api_keys, key, key_desc = api_keys_setting(self.data_dir)
        agents_file, agents_desc = agents_file_setting(self.data_dir)
        llm, llm_desc = llm_setting()

        if not port_is_free(self.args.port):
            raise StartupFailed(f"port {self.args.port} is already in use; choose another with --port N")

        env = dict(os.environ)
        env.update(
            REDIS_URL=redis_url,
            PARLEY_API_KEYS=api_keys,
            PARLEY_AGENTS_FILE=agents_file,
            PARLEY_LLM=llm,
            PATH=child_path(env.get("PATH")),
            PYTHONUNBUFFERED="1",
        )
        self.start_processes(env)
        self.wait_ready()

        base = f"http://127.0.0.1:{self.args.port}"
        procs = ", ".join(f"{c.name} (pid {c.pid})" for c in self.children)
        banner = f"""
================================================================================
  Parley is running.

  URL:      {base}/   (open it in a browser to chat; sign in with the API key below)
  API:      {base}/api/v1/   (every route: {base}/docs)
  API key:  {key}   ({key_desc})
  Redis:    {redis_desc}
  Agents:   {agents_desc}
  Model:    {llm_desc}
  Running:  {procs}

  Try it:
    curl -s {base}/api/v1/chat \\
      -H 'Authorization: Bearer {key}' \\
      -H 'Content-Type: application/json' \\
      -d '{{"message": "Hello!", "session_id": "first-session"}}'

  Press Ctrl-C to stop.
================================================================================
"""
        _say(banner)

        while True:
            dead = self.dead_child()
            if dead is not None:
                dead.flush_output()
                _error(f"{dead.name} exited with code {dead.poll()}; stopping everything")
                return 1
            time.sleep(0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m parley.local",
        description="Run Parley locally: Redis, the web process and worker processes from the Procfile.",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT") or 8000), help="web port (default: $PORT or 8000)"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)")
    parser.add_argument(
        "--data-dir",
        default=DATA_DIR_NAME,
        help=f"local state: Redis data, API key, agents (default: ./{DATA_DIR_NAME})",
    )
    parser.add_argument("--redis-port", type=int, default=0, help="port of the local Redis server (default: any free)")
    parser.add_argument("--procfile", default=None, help="Procfile to read (default: ./Procfile, else the checkout's)")
    parser.add_argument(
        "--ready-timeout", type=float, default=60.0, help="seconds to wait for /readyz (default: 60)"
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=20.0, help="seconds processes get to stop before SIGKILL (default: 20)"
    )
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    launcher = Launcher(args)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if launcher.force or getattr(on_signal, "seen", False):
            launcher.force = True  # a second Ctrl-C: stop waiting, kill
            return
        on_signal.seen = True  # type: ignore[attr-defined]
        raise Shutdown(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    lock: IO[str] | None = None
    code = 0
    try:
        try:
            Path(args.data_dir).mkdir(parents=True, exist_ok=True)
            lock = lock_data_dir(Path(args.data_dir).resolve())
            code = launcher.run()
        except StartupFailed as exc:
            _error(str(exc))
            code = 1
        except Shutdown as exc:
            _say(f"\nparley.local: got {exc}, shutting down")
            code = 0
        finally:
            try:
                launcher.stop()
            except Shutdown:
                launcher.force = True
                launcher.stop()
    finally:
        if lock is not None:
            lock.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
