"""Local development helpers for Parley (installed as ``parley.local``).

* ``python -m parley.local`` runs the whole service on one machine: Redis (an
  existing one from ``REDIS_URL`` or a private one it starts), the ``web`` and
  ``worker`` processes exactly as the repository's ``Procfile`` declares them.
* :mod:`parley.local.processes` is the one process supervisor (own process group,
  output to a log file or prefixed, readiness, SIGTERM then SIGKILL); the test
  harness and the benchmarks run their processes with it too.
* :mod:`parley.local.redis_server` finds and runs a Redis-compatible server
  (tests/redis_server.py adds what only tests do to it).

This module only holds the Procfile helpers shared by the launcher, the test
harness and the benchmarks, so that all run exactly what a deployment runs.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

__all__ = [
    "DEFAULT_PROCFILE",
    "child_path",
    "describe",
    "find_procfile",
    "parse_procfile",
    "procfile_argv",
    "read_procfile",
    "repo_root",
]

#: What the repository's Procfile says; used only when no Procfile can be found
#: (for example when the distribution was installed from a wheel).
DEFAULT_PROCFILE: dict[str, str] = {
    "web": "uvicorn parley.api.main:app --host 0.0.0.0 --port ${PORT:-8000}",
    "worker": "python -m parley.worker",
}


def repo_root() -> Path:
    """The source checkout this package lives in (``local/`` is one level down)."""
    return Path(__file__).resolve().parent.parent


def find_procfile(start: Path | None = None) -> Path | None:
    """The Procfile in ``start`` (default: the current directory) or in the checkout."""
    candidates = [Path(start) if start is not None else Path.cwd(), repo_root()]
    for directory in candidates:
        path = directory / "Procfile"
        if path.is_file():
            return path
    return None


def parse_procfile(text: str) -> dict[str, str]:
    """Parse Procfile text: ``name: command`` lines; blank lines and ``#`` comments skipped."""
    processes: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if not sep or not name or not command or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Procfile line {lineno} is not 'name: command': {raw!r}")
        if name in processes:
            raise ValueError(f"Procfile line {lineno}: process type {name!r} declared twice")
        processes[name] = command
    return processes


def read_procfile(path: Path | None = None) -> dict[str, str]:
    """The process types of ``path`` (default: :func:`find_procfile`), else :data:`DEFAULT_PROCFILE`."""
    if path is None:
        path = find_procfile()
        if path is None:
            return dict(DEFAULT_PROCFILE)
    return parse_procfile(Path(path).read_text(encoding="utf-8"))


def procfile_argv(command: str) -> list[str]:
    """argv that runs a Procfile command the way Procfile runners do: through a shell.

    ``exec`` makes the shell replace itself with the program, so the pid we hold
    is the program's own and signals reach it directly.  ``${PORT:-8000}`` and
    friends are expanded by bash from the child's environment.
    """
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    return [shell, "-c", "exec " + command]


def child_path(env_path: str | None = None) -> str:
    """PATH for child processes: this interpreter's bin directory first.

    ``.venv/bin/python -m parley.local`` is usually run without activating the
    venv, so ``uvicorn`` and ``python`` in the Procfile must resolve to the venv.
    """
    bindir = str(Path(sys.executable).parent)
    parts = [p for p in (env_path if env_path is not None else os.environ.get("PATH", "")).split(os.pathsep) if p]
    return os.pathsep.join([bindir] + [p for p in parts if p != bindir])


def describe(argv: list[str]) -> str:
    """A shell-quoted rendering of argv, for log lines."""
    return " ".join(shlex.quote(a) for a in argv)
