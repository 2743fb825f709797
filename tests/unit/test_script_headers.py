"""Each Lua script's header is what runs (shared/store/scripts/__init__.py says how a script is made).

The `-- KEYS:` and `-- ARGV:` lines of every runnable .lua file name each position; the named builders of
scripts/calls.py must list the same names in the same order, the script may index no KEYS or ARGV its
header does not name, the snippets it uses index none at all, and what runs is the snippets, then the
file, unchanged."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from parley.shared import telemetry
from parley.shared.store import scripts
from parley.shared.store.scripts.calls import BUILDERS, ScriptCall

ITEM = re.compile(r"(\d+)(\.\.)? ([a-z_]+)")
INDEXED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")


def lua_files() -> list[str]:
    return sorted(entry.name.removesuffix(".lua") for entry in files(scripts).iterdir() if entry.name.endswith(".lua"))


def header(name: str, kind: str) -> list[str]:
    """The items of the script's one `-- KEYS:` or `-- ARGV:` line ('1 job', '4.. metrics'), checked for form."""
    lines = re.findall(rf"^-- {kind}: (.*)$", scripts.source(name), re.MULTILINE)
    assert len(lines) == 1, f"{name}.lua: {len(lines)} `-- {kind}:` lines, not one"
    items = [item.strip() for item in lines[0].split(",")]
    for position, item in enumerate(items, start=1):
        found = ITEM.fullmatch(item)
        assert found, f"{name}.lua: {kind} item {item!r} is not `<position> <name>` or `<position>.. <name>`"
        assert int(found[1]) == position, f"{name}.lua: {kind} item {item!r} is out of place"
        assert not found[2] or position == len(items), f"{name}.lua: only the last {kind} may take the rest"
    return items


def names(items: list[str]) -> list[str]:
    return [item.split(" ")[1] for item in items]


def test_every_lua_file_is_a_snippet_or_a_runnable_script() -> None:
    runnable = [name for name in lua_files() if not name.startswith("lib_")]
    assert sorted(scripts.RUNNABLE) == runnable


@pytest.mark.parametrize("name", scripts.RUNNABLE)
def test_a_header_names_each_position_once(name: str) -> None:
    every = names(header(name, "KEYS")) + names(header(name, "ARGV"))
    assert len(every) == len(set(every)), f"{name}.lua: a name is used twice"


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda builder: builder.SCRIPT)
def test_a_builder_lists_its_scripts_header_in_order(builder: type[ScriptCall]) -> None:
    assert builder.header("key") == header(builder.SCRIPT, "KEYS")
    assert builder.header("arg") == header(builder.SCRIPT, "ARGV")


@pytest.mark.parametrize("name", scripts.RUNNABLE)
def test_a_script_indexes_only_what_its_header_names(name: str) -> None:
    for kind in ("KEYS", "ARGV"):
        items = header(name, kind)
        variadic = items[-1].split(" ")[0].endswith("..")
        used = {int(position) for used_kind, position in INDEXED.findall(scripts.source(name)) if used_kind == kind}
        assert all(1 <= position <= len(items) or variadic for position in used), (name, kind, sorted(used))
        named = set(range(1, len(items) + (0 if variadic else 1)))
        assert named <= used, f"{name}.lua names {kind} it never reads: {sorted(named - used)}"


@pytest.mark.parametrize("name", [name for name in lua_files() if name.startswith("lib_")])
def test_a_snippet_takes_its_keys_and_arguments_as_parameters(name: str) -> None:
    """So the header of the script that uses it is the whole story."""
    assert not INDEXED.findall(scripts.source(name))


@pytest.mark.parametrize("name", scripts.RUNNABLE)
def test_what_runs_is_the_snippets_it_uses_then_the_file_unchanged(name: str) -> None:
    text = scripts.source(name)
    assert scripts.load(name) == "".join(scripts.snippet(used) + "\n" for used in scripts.uses(text)) + text
    assert scripts.load(name).endswith(text)
    assert getattr(scripts, name.upper()) == scripts.load(name)


def test_the_telemetry_tables_follow_metrics() -> None:
    """Every metric the recording scripts name exists, at the position its hash takes among their KEYS."""
    tables = scripts.telemetry_tables()
    for position, metric in enumerate(telemetry.METRICS, start=1):
        assert f"{metric.name} = {position}" in tables
    used = {name for script in scripts.RUNNABLE for name in re.findall(r"METRIC\.(\w+)", scripts.source(script))}
    assert used and used <= {metric.name for metric in telemetry.METRICS}
    assert len(telemetry.script_keys()) == len(telemetry.METRICS)
