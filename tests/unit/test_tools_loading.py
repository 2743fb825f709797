"""A deployment's tools: the built-ins, `parley.tools` entry points and PARLEY_TOOL_MODULES; bad ones fail at start."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from parley.shared.settings import Settings
from parley.tools import ToolLoadError, clear_cache, load_registry, unknown_tools

BUILTINS = ["calculator", "current_time", "http_get", "recall", "remember"]

TOOLS_MODULE = '''
from parley.tools import tool

@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()

@tool(name="whisper")
def lower_it(text: str) -> str:
    """Lower-case a text."""
    return text.lower()

def helper() -> None:
    """Not a tool."""
'''


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test loads anew; afterwards no test module stays imported or cached."""
    before = set(sys.modules)
    clear_cache()
    yield
    clear_cache()
    for name in set(sys.modules) - before:
        if name.startswith("tooltest_"):
            del sys.modules[name]


def write_modules(root: Path, **modules: str) -> None:
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


def write_distribution(root: Path, name: str, entry_points: str) -> None:
    """A minimal installed distribution (a dist-info folder) declaring `entry_points`."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_the_builtins_are_always_there(settings: Settings) -> None:
    registry = load_registry(settings)
    assert registry.names() == BUILTINS
    assert load_registry(settings) is registry  # loaded once per process


def test_tool_modules_setting(make_settings: Callable[..., Settings], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    write_modules(tmp_path, tooltest_textual=TOOLS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry(make_settings(PARLEY_TOOL_MODULES=" tooltest_textual , "))
    assert registry.names() == sorted(BUILTINS + ["shout", "whisper"])
    shout = registry.get("shout")
    assert shout is not None and shout.module == "tooltest_textual"


def test_entry_points_name_modules_or_functions(settings: Settings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    write_modules(tmp_path, tooltest_ep_module=TOOLS_MODULE, tooltest_ep_function='''
        from parley.tools import tool

        @tool
        def reverse(text: str) -> str:
            """Reverse a text."""
            return text[::-1]

        @tool
        def not_offered(text: str) -> str:
            """Defined here, but the entry point names only `reverse`."""
            return text
    ''')  # fmt: skip
    write_distribution(tmp_path, "tooltest_plugin", """
        [parley.tools]
        texts = tooltest_ep_module
        reverse = tooltest_ep_function:reverse

        [console_scripts]
        unrelated = tooltest_ep_module:helper
    """)  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry(settings)
    assert registry.names() == sorted(BUILTINS + ["reverse", "shout", "whisper"])
    assert registry.get("not_offered") is None  # a function entry point offers that function alone


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("broken = tooltest_broken", "entry point 'broken' (tooltest_broken) in group 'parley.tools' failed to load: "
                                     "ZeroDivisionError"),
        ("missing = tooltest_no_such_module", "failed to load: ModuleNotFoundError"),
        ("plain = tooltest_plain:helper", "is neither a module nor a function decorated with @tool"),
        ("empty = tooltest_plain", "names a module with no @tool function"),
    ],
)
def test_bad_entry_points_fail_at_load_naming_them(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   entry_point: str, message: str) -> None:  # fmt: skip
    write_modules(tmp_path, tooltest_broken="x = 1 / 0\n", tooltest_plain="def helper() -> None:\n    pass\n")
    write_distribution(tmp_path, "tooltest_bad", f"[parley.tools]\n{entry_point}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ToolLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_registry(settings)


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        ("tooltest_broken", "PARLEY_TOOL_MODULES module 'tooltest_broken' failed to import: ZeroDivisionError"),
        ("tooltest_absent", "PARLEY_TOOL_MODULES module 'tooltest_absent' failed to import: ModuleNotFoundError"),
        ("tooltest_plain", "PARLEY_TOOL_MODULES module 'tooltest_plain' defines no @tool function"),
        ("tooltest_clash", "two tools are named 'calculator': one in parley.tools.calculator, one in "
                           "tooltest_clash"),
    ],
)
def test_bad_tool_modules_fail_at_load_naming_them(make_settings: Callable[..., Settings], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, modules: str,
                                                   message: str) -> None:  # fmt: skip
    write_modules(tmp_path, tooltest_broken="x = 1 / 0\n", tooltest_plain="def helper() -> None:\n    pass\n",
                  tooltest_clash='''
                      from parley.tools import tool

                      @tool
                      def calculator(expression: str) -> str:
                          """A calculator of our own."""
                          return "4"
                  ''')  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ToolLoadError, match=message):
        load_registry(make_settings(PARLEY_TOOL_MODULES=modules))


def test_unknown_tools_uses_the_process_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 make_settings: Callable[..., Settings]) -> None:  # fmt: skip
    write_modules(tmp_path, tooltest_textual=TOOLS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    configured = make_settings(PARLEY_TOOL_MODULES="tooltest_textual")
    monkeypatch.setattr("parley.tools.loading.get_settings", lambda: configured)
    assert unknown_tools(["calculator", "shout", "web_search", "helper"]) == ["web_search", "helper"]
    assert unknown_tools([]) == []
