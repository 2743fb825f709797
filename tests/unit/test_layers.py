"""The import rule that keeps the processes apart, checked on the source: `api` and `worker` build on
`shared` and never import each other, `shared` imports neither, and the SDK (`client`, and `cli` on
top of it) reaches into the server only for the API schema (`parley.shared.schema`) and the event
types (`parley.shared.events`, which stays pure Python: it imports nothing but the standard library).

Every import statement counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "worker", "shared", "client", "cli", "local")

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "api": ("parley.worker",),
    "worker": ("parley.api",),
    "shared": ("parley.api", "parley.worker", "parley.client", "parley.cli", "parley.local"),
    "client": ("parley.api", "parley.worker", "parley.cli", "parley.local"),
    "cli": ("parley.api", "parley.worker", "parley.local"),
}
SDK_MAY_IMPORT_FROM_SHARED = ("parley.shared.schema", "parley.shared.events")
"""The server modules the SDK imports: the API's request and response models, and the event types and
event parsing (one owner of the event wire format)."""


def module_package(path: Path, package: str) -> list[str]:
    """The dotted package a source file's relative imports start from (`parley.<package>...`)."""
    parts = ["parley", package, *path.relative_to(ROOT / package).with_suffix("").parts]
    return parts[:-1]  # a module's own package; for an __init__.py, the package it opens


def imported_modules(code: str, own_package: list[str]) -> list[str]:
    """Absolute names of every module `code` imports, relative imports resolved from `own_package`."""
    names: list[str] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package[: len(own_package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, modules: tuple[str, ...]) -> bool:
    """True when `name` is one of `modules` or inside one (`parley.client` is not inside `parley.cli`)."""
    return any(name == module or name.startswith(module + ".") for module in modules)


def imports_of(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import in every source file of `parley.<package>`."""
    return [
        (str(path.relative_to(ROOT)), name)
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported_modules(path.read_text(encoding="utf-8"), module_package(path, package))
    ]


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_no_layer_imports_what_it_must_not(package: str) -> None:
    offences = [f"{path} imports {name}" for path, name in imports_of(package) if within(name, FORBIDDEN[package])]
    assert offences == []


@pytest.mark.parametrize("package", ["client", "cli"])
def test_the_sdk_takes_only_the_api_schema_from_the_server(package: str) -> None:
    offences = [
        f"{path} imports {name}"
        for path, name in imports_of(package)
        if within(name, ("parley.shared",)) and not within(name, SDK_MAY_IMPORT_FROM_SHARED)
    ]
    assert offences == []


def test_the_checker_sees_relative_and_lazy_imports() -> None:
    """The rules above can fail: a relative import climbing into another layer, and an import inside a
    function, are both found (as seen from parley/api/routes/x.py)."""
    code = "from ...worker import turn\nfrom . import chat\n\ndef f():\n    import parley.worker.loop\n"
    names = imported_modules(code, module_package(ROOT / "api" / "routes" / "x.py", "api"))
    assert {"parley.worker", "parley.worker.turn", "parley.api.routes.chat", "parley.worker.loop"} <= set(names)
    assert within("parley.worker.loop", FORBIDDEN["api"]) and not within("parley.client", FORBIDDEN["client"])


def test_the_events_module_the_sdk_shares_imports_only_the_standard_library() -> None:
    """`parley.shared.events` ships with the SDK: any import outside the standard library (Redis, a server
    module) would pull the server into every client."""
    path = ROOT / "shared" / "events.py"
    names = imported_modules(path.read_text(encoding="utf-8"), module_package(path, "shared"))
    outside = [name for name in names if name.partition(".")[0] not in sys.stdlib_module_names]
    assert outside == []
