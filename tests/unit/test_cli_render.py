"""The CLI's formatting: tables, session exports, agent files and the printing of a turn's events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley.cli.errors import TURN_FAILED, USAGE, CLIError, TurnFailed
from parley.cli.main import load_agent_file
from parley.cli.render import TurnPrinter, export_json, export_markdown, fields, one_line, table
from parley.client import Event, MessagePublic, SessionPublic

SESSION = SessionPublic(session_id="s1", agent_id="agent-1", agent_name="Chef", created_at="2026-01-01T00:00:00Z",
                        metadata={"team": "a"}, message_count=3)  # fmt: skip
MESSAGES = [
    MessagePublic(id="msg_0", role="assistant", content="Hello!", created_at="t0", job_id=None),
    MessagePublic(id="msg_1", role="user", content="Basil?", created_at="t1", job_id="j1",
                  images=["data:image/png;base64,AAAA"]),  # type: ignore[call-arg]
    MessagePublic(id="msg_2", role="assistant", content="Yes.\n\nPesto.", created_at="t2", job_id="j1"),
]


def test_table_pads_columns_and_trims_line_ends() -> None:
    assert table(("A", "BB"), [("xxx", None), ("y", "z")]) == "A    BB\nxxx\ny    z"


def test_fields_and_one_line() -> None:
    assert fields([("id", "a"), ("shape", {"x": 1}), ("none", None)]) == 'id:    a\nshape: {"x": 1}\nnone:'
    assert one_line("a\n  b") == "a b" and one_line("abcdef", 4) == "abc…" and one_line(None) == ""


def test_export_markdown_lists_every_message_in_order() -> None:
    text = export_markdown(SESSION, MESSAGES)
    assert text.startswith("# Session s1 with Chef\n\n- agent: Chef (`agent-1`)\n- created: 2026-01-01T00:00:00Z\n")
    assert "- messages: 3\n" in text and '- metadata: `{"team": "a"}`' in text
    assert text.index("## Chef · t0\n\nHello!") < text.index("## user · t1\n\nBasil?") < text.index("## Chef · t2")
    assert "Yes.\n\nPesto.\n" in text and "_(1 image attached)_" in text
    assert text.endswith("Pesto.\n")


def test_export_json_is_one_document_with_session_and_messages() -> None:
    data = json.loads(export_json(SESSION, MESSAGES))
    assert data["session"]["session_id"] == "s1"
    assert [m["id"] for m in data["messages"]] == ["msg_0", "msg_1", "msg_2"]
    assert data["messages"][1]["images"] == ["data:image/png;base64,AAAA"]


def _events(*items: dict[str, object]) -> list[Event]:
    return [Event(id=f"1-{n}", type=str(data["type"]), data=dict(data)) for n, data in enumerate(items)]


def _printer(**kwargs: bool) -> tuple[TurnPrinter, list[str]]:
    lines: list[str] = []
    printer = TurnPrinter(lambda text, newline: lines.append(text + ("\n" if newline else "")),
                          lambda text: lines.append(f"<{text}>\n"), **kwargs)  # fmt: skip
    return printer, lines


def test_turn_printer_streams_deltas_and_puts_steps_on_their_own_lines() -> None:
    printer, lines = _printer()
    for event in _events(
        {"type": "session", "job_id": "j1", "session_id": "s1"},
        {"type": "status", "message": "queued"},
        {"type": "delta", "content": "Let me "},
        {"type": "tool_execution", "tool_name": "search", "args": {"q": "basil"}},
        {"type": "tool_result", "tool_name": "search", "preview": "pesto\nrecipes"},
        {"type": "delta", "content": "see."},
        {"type": "status", "message": "retrying", "attempt": 2},
        {"type": "delta", "content": "Again."},
        {"type": "something_new"},
        {"type": "response", "content": "Again.", "session_id": "s1"},
        {"type": "done"},
    ):
        printer.handle(event)
    printer.finish()
    assert "".join(lines) == (
        'Let me \n<→ search({"q": "basil"})>\n<← search: pesto recipes>\nsee.\n'
        "<[retrying, attempt 2: the answer starts again]>\nAgain.\n"
    )
    assert printer.job_id == "j1" and printer.session_id == "s1" and printer.answer == "Again."


def test_turn_printer_shows_progress_when_asked_and_a_response_without_deltas() -> None:
    printer, lines = _printer(show_progress=True)
    for event in _events({"type": "status", "message": "started"}, {"type": "response", "content": "Bye."},
                         {"type": "done"}):  # fmt: skip
        printer.handle(event)
    printer.finish()
    assert "".join(lines) == "<[started]>\nBye.\n"


def test_turn_printer_raises_turn_failed_after_an_error_event() -> None:
    printer, _ = _printer()
    for event in _events({"type": "session", "job_id": "j9"}, {"type": "delta", "content": "par"},
                         {"type": "error", "message": "canceled", "code": "canceled"}, {"type": "done"}):  # fmt: skip
        printer.handle(event)
    with pytest.raises(TurnFailed) as raised:
        printer.finish()
    assert raised.value.code == TURN_FAILED and raised.value.job_id == "j9" and raised.value.error_code == "canceled"
    assert raised.value.message == "the turn failed (job j9): canceled [canceled]"


def test_load_agent_file_reads_yaml_and_json_and_drops_read_only_fields(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: Chef\ncontext: You cook.\nresponse_shape:\n  answer: string\n")
    assert load_agent_file(str(tmp_path / "a.yaml")) == {"name": "Chef", "context": "You cook.",
                                                         "response_shape": {"answer": "string"}}  # fmt: skip
    shown = {"id": "agent-1", "name": "Chef", "created_at": "t", "updated_at": None, "source": "api", "model": "m"}
    (tmp_path / "a.json").write_text(json.dumps(shown))
    assert load_agent_file(str(tmp_path / "a.json")) == {"name": "Chef", "model": "m"}


@pytest.mark.parametrize("content", ["- a list", "context: no name", "name: [unclosed", "name: '  '"])
def test_load_agent_file_refuses_what_is_not_one_named_agent(tmp_path: Path, content: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(CLIError) as raised:
        load_agent_file(str(tmp_path / "bad.yaml"))
    assert raised.value.code == USAGE


def test_load_agent_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="cannot read") as raised:
        load_agent_file(str(tmp_path / "nope.yaml"))
    assert raised.value.code == USAGE


def test_a_printer_holding_text_writes_the_answer_alone() -> None:
    """stdout that is not a terminal (`answer=$(parley chat -m ...)`) gets the answer only: the text streamed
    before a tool step was a thought (a note), and a retried attempt's first text is not written twice."""
    printer, lines = _printer(hold_text=True)
    for event in _events(
        {"type": "delta", "content": "Let me look."},
        {"type": "llm_thought", "thought": "Let me look.", "turn": 1},
        {"type": "tool_execution", "tool_name": "search", "args": {}},
        {"type": "tool_result", "tool_name": "search", "preview": "pesto"},
        {"type": "delta", "content": "Pes"},
        {"type": "status", "message": "retrying", "attempt": 2},
        {"type": "delta", "content": "Pesto."},
        {"type": "response", "content": "Pesto.", "session_id": "s1"},
        {"type": "done"},
    ):
        printer.handle(event)
    printer.finish()
    answer = [line for line in lines if not line.startswith("<")]
    assert "".join(answer) == "Pesto.\n"
