"""Output: tables, `key: value` blocks, JSON documents, session exports and turn events.

The formatting functions return strings (unit-tested without I/O); `TurnPrinter` writes a turn's
events as they arrive.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer
from pydantic import BaseModel

from parley.client import Event, MessagePublic, SessionPublic

from .errors import TurnFailed


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    return value


def json_document(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)


def one_line(text: Any, width: int = 60) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    if text is None:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def pretty_args(args: Any, limit: int = 2000) -> str:
    """A tool call's arguments as indented JSON (a string that is not JSON as it is), cut after `limit` characters."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    text = args if isinstance(args, str) else json.dumps(args, indent=2, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines() or [""])


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table: columns padded to their widest cell, no trailing spaces."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """`key: value` lines, keys aligned; dicts and lists as compact JSON."""
    items = [(k, v) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    lines = []
    for key, value in items:
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{(key + ':').ljust(width + 1)} {'' if value is None else value}".rstrip())
    return "\n".join(lines)


# -- session export -----------------------------------------------------------------------


def export_json(session: SessionPublic, messages: Sequence[MessagePublic]) -> str:
    return json_document({"session": session, "messages": list(messages)})


def export_markdown(session: SessionPublic, messages: Sequence[MessagePublic]) -> str:
    """The conversation as Markdown: a title, the session's facts, then each message under a heading."""
    agent = session.agent_name or session.agent_id
    lines = [f"# Session {session.session_id} with {agent}", ""]
    lines.append(f"- agent: {agent} (`{session.agent_id}`)")
    lines.append(f"- created: {session.created_at}")
    lines.append(f"- messages: {len(messages)}")
    if session.metadata:
        lines.append(f"- metadata: `{json.dumps(session.metadata, ensure_ascii=False)}`")
    for message in messages:
        speaker = agent if message.role == "assistant" else message.role
        lines += ["", f"## {speaker} · {message.created_at}", ""]
        lines.append(message.content if message.content else "_(empty)_")
        images = (message.model_extra or {}).get("images")
        if isinstance(images, list) and images:
            lines += ["", f"_({len(images)} image{'s' if len(images) != 1 else ''} attached)_"]
        if message.feedback is not None:
            comment = f": {one_line(message.feedback.comment, 500)}" if message.feedback.comment else ""
            lines += ["", f"_(rated {message.feedback.rating} · {message.feedback.updated_at}{comment})_"]
    return "\n".join(lines) + "\n"


# -- a turn's events ----------------------------------------------------------------------


class TurnPrinter:
    """Writes a turn's events: `delta` text as it comes (no newline, flushed), the rest dimmed on
    lines of their own. `handle` returns nothing; `finish` raises TurnFailed after an `error` event.

    `out` writes the answer, `note` a dimmed line (both take the text and a newline flag).
    """

    def __init__(self, out: Callable[[str, bool], None], note: Callable[[str], None], *,
                 show_progress: bool = False, hold_text: bool = False) -> None:  # fmt: skip
        """`hold_text`: write the answer only once the `response` says it is the answer, for an `out` that
        cannot take text back (stdout that is not a terminal): the text streamed before a tool step was
        the model's thought (shown by `note`), and text before a `retrying` or `repairing` is replaced."""
        self.out = out
        self.note = note
        self.show_progress = show_progress
        self.hold_text = hold_text
        self.job_id: str | None = None
        self.session_id: str | None = None
        self.answer = ""
        self.open_line = False
        self.error: Event | None = None

    def finish_line(self) -> None:
        """End the answer's line, when one is open."""
        self._break()

    def _break(self) -> None:
        if self.open_line:
            self.out("", True)
            self.open_line = False

    def handle(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:  # event types this printer does not know are skipped
            handler(event)

    def _on_session(self, event: Event) -> None:
        self.job_id = event.job_id or self.job_id
        self.session_id = event.session_id or self.session_id

    def _on_delta(self, event: Event) -> None:
        text = event.content or ""
        if text and self.hold_text:
            self.answer += text
        elif text:
            self.out(text, False)
            self.answer += text
            self.open_line = True

    def _on_status(self, event: Event) -> None:
        message = event.message or ""
        if message == "retrying":
            self._break()
            attempt = event.data.get("attempt")
            self.note(f"[retrying{f', attempt {attempt}' if attempt else ''}: the answer starts again]")
            self.answer = ""
        elif self.show_progress:
            self._break()
            self.note(f"[{message}]")

    def _on_thinking(self, event: Event) -> None:
        self._break()
        self.note(f"[thinking] {one_line(event.message, 200)}")

    def _on_llm_thought(self, event: Event) -> None:
        self._break()
        if self.hold_text:
            self.answer = ""  # it was a thought, not the answer
        self.note(f"[thought] {one_line(event.data.get('thought'), 200)}")

    def _on_tool_execution(self, event: Event) -> None:
        self._break()
        args = event.data.get("args")
        shown = json.dumps(args, ensure_ascii=False) if args is not None else ""
        self.note(f"→ {event.data.get('tool_name', 'tool')}({one_line(shown, 200)})")

    def _on_tool_result(self, event: Event) -> None:
        self._break()
        self.note(f"← {event.data.get('tool_name', 'tool')}: {one_line(event.data.get('preview'), 200)}")

    def _on_approval_required(self, event: Event) -> None:
        self._break()
        self.note(f"? {event.tool_name or 'a tool'} waits for your approval (call {event.call_id}), with:")
        self.note(indent(pretty_args(event.args)))

    def _on_response(self, event: Event) -> None:
        content = event.content or ""
        if self.hold_text and (content or self.answer):
            self.out(content or self.answer, False)
            self.open_line = True
        elif not self.answer and content:  # an answer that came without deltas
            self.out(content, False)
            self.open_line = True
        self.answer = content or self.answer
        self.session_id = event.session_id or self.session_id

    def _on_error(self, event: Event) -> None:
        self._break()
        self.error = event

    def _on_done(self, event: Event) -> None:
        self._break()

    def finish(self) -> None:
        self._break()
        if self.error is not None:
            raise TurnFailed(self.error.message or "error", self.error.code, self.job_id)


def style(text: str, **styles: Any) -> str:
    """`text` styled (bold=True, dim=True, fg="red", ...) unless NO_COLOR is set (https://no-color.org);
    typer.echo drops the styles anyway when the output is not a terminal."""
    if os.environ.get("NO_COLOR"):
        return text
    return typer.style(text, **styles)


def dim(text: str) -> str:
    return style(text, dim=True)
