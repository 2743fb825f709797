"""The CLI's state file: where it lives, what it remembers per server and key, and its robustness."""

from __future__ import annotations

import json
from pathlib import Path

from parley.cli.state import State, default_path, profile_key


def test_default_path_prefers_parley_state_then_xdg_then_home(tmp_path: Path) -> None:
    assert default_path({"PARLEY_STATE": str(tmp_path / "s.json")}) == tmp_path / "s.json"
    assert default_path({"XDG_CONFIG_HOME": "/xdg"}) == Path("/xdg/parley/state.json")
    assert default_path({}) == Path.home() / ".config" / "parley" / "state.json"


def test_remembers_the_last_session_per_agent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.json"
    state = State(path, "http://h:8000/", "key-alice")
    assert state.last_session("agent-1") is None
    state.remember("agent-1", "s1")
    state.remember("agent-2", "s2")
    state.remember("agent-1", "s3")
    again = State(path, "http://h:8000", "key-alice")  # a later run; the trailing slash does not matter
    assert again.last_session("agent-1") == "s3" and again.last_session("agent-2") == "s2"


def test_profiles_keep_servers_and_keys_apart_and_never_store_the_key(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    State(path, "http://h:8000", "key-alice").remember("agent-1", "alice-session")
    assert State(path, "http://h:8000", "key-bob").last_session("agent-1") is None
    assert State(path, "http://other:8000", "key-alice").last_session("agent-1") is None
    assert "key-alice" not in path.read_text()
    assert profile_key("http://h:8000", None) == "http://h:8000 -"
    assert profile_key("http://h:8000", "a") != profile_key("http://h:8000", "b")


def test_forget_session_drops_it_everywhere_in_the_profile(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = State(path, "http://h", "k")
    state.remember("a1", "s1")
    state.remember("a2", "s1")
    state.remember("a3", "s3")
    assert state.forget_session("s1") is True
    assert state.last_session("a1") is None and state.last_session("a2") is None
    assert state.last_session("a3") == "s3"
    assert state.forget_session("s1") is False


def test_unreadable_or_foreign_file_counts_as_empty_and_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for junk in ("not json", "[1, 2]", '{"profiles": []}', '{"profiles": {"http://h -": {"last_session": 5}}}'):
        path.write_text(junk)
        state = State(path, "http://h", None)
        assert state.last_session("a") is None
        state.remember("a", "s")
        assert state.last_session("a") == "s"
        assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
