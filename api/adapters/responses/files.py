"""`input_file` content parts of a user message, read as text for the model.

Open Responses lets a file come as a `file_id`, a `file_url` or base64 `file_data` with a `filename`. Parley keeps
no files (there is no upload endpoint, so no `file_id` can name one) and fetches nothing a request points at, so
only `file_data` can be honoured, and only for a file that is text: its media type (from the data URL, else from
the filename) is text-like and its bytes are UTF-8. Its text then joins the message, marked with its name, and
counts towards the message's limits (PARLEY_MAX_MESSAGE_CHARS) like anything typed. Everything else is a 400 that
says what would be taken (the spec leaves a server free to refuse what it cannot read).
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from typing import Any

from parley.shared.errors import ParleyError

TEXT_TYPES = {
    "application/json", "application/ld+json", "application/x-ndjson", "application/xml", "application/yaml",
    "application/x-yaml", "application/toml", "application/csv", "application/sql", "application/javascript",
    "application/x-javascript", "application/typescript", "application/x-sh", "application/x-python",
    "application/graphql",
}  # fmt: skip
"""Media types outside text/* whose files are text."""
TEXT_SUFFIXES = (".md", ".markdown", ".rst", ".txt", ".log", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml",
                 ".toml", ".ini", ".cfg", ".conf", ".xml", ".html", ".htm", ".py", ".js", ".ts", ".go", ".rs",
                 ".java", ".c", ".h", ".cpp", ".rb", ".php", ".sh", ".sql", ".css", ".tex")  # fmt: skip
"""Filenames taken as text when the data URL names no media type (or only application/octet-stream)."""
DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                      re.ASCII)  # fmt: skip
MAX_FILENAME = 200


def _refused(message: str, field: str) -> ParleyError:
    return ParleyError(message, field=field)


def _filename(part: dict[str, Any], field: str) -> str:
    name = part.get("filename")
    if name is None:
        return "file"
    if not isinstance(name, str) or not name.strip():
        raise _refused(f"{field}.filename must be a non-empty string", f"{field}.filename")
    return "".join(ch for ch in name.strip() if ch.isprintable())[:MAX_FILENAME] or "file"


def _is_text_type(media_type: str | None, filename: str) -> bool:
    """Whether the file is text: by its media type, or by its filename when the type says nothing."""
    if media_type in (None, "application/octet-stream"):
        if filename.lower().endswith(TEXT_SUFFIXES):
            return True
        media_type = mimetypes.guess_type(filename, strict=False)[0]
    if media_type is None:
        return False
    media_type = media_type.lower()
    return media_type.startswith("text/") or media_type in TEXT_TYPES or media_type.endswith(("+json", "+xml"))


def _decode(data: str, field: str) -> tuple[str | None, bytes]:
    """(media type or None, the file's bytes) of a data URL or of bare base64."""
    media_type: str | None = None
    found = DATA_URL.match(data)
    if found is not None:
        media_type, data = found.group("type"), data[found.end() :]
        if not found.group("b64"):
            raise _refused(f"{field}.file_data must be base64 (a data URL with ;base64, or bare base64)",
                           f"{field}.file_data")  # fmt: skip
    elif data.startswith("data:"):
        raise _refused(f"{field}.file_data is not a valid data URL", f"{field}.file_data")
    try:
        return media_type, base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _refused(f"{field}.file_data is not valid base64", f"{field}.file_data") from None


def file_text(part: dict[str, Any], field: str) -> str:
    """The text an `input_file` part brings into the message (400 for a file Parley cannot read)."""
    if part.get("file_id") is not None:
        raise _refused(f"{field}.file_id cannot be used: Parley keeps no uploaded files; send the file's content "
                       "as file_data (base64, with filename)", f"{field}.file_id")  # fmt: skip
    if part.get("file_url") is not None:
        raise _refused(f"{field}.file_url cannot be used: Parley fetches no files; send the file's content as "
                       "file_data (base64, with filename)", f"{field}.file_url")  # fmt: skip
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise _refused(f"{field} must carry file_data (the file as base64 or a base64 data URL)", f"{field}.file_data")
    filename = _filename(part, field)
    media_type, raw = _decode(data, field)
    kind = media_type or mimetypes.guess_type(filename, strict=False)[0] or "of an unknown type"
    if not _is_text_type(media_type, filename):
        raise _refused(f"{field} ({filename!r}, {kind}) cannot be read: only text files are taken (text/*, JSON, "
                       "XML, YAML, CSV, source code), as UTF-8", f"{field}.file_data")  # fmt: skip
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refused(f"{field} ({filename!r}) is not UTF-8 text", f"{field}.file_data") from None
    if "\x00" in text:
        raise _refused(f"{field} ({filename!r}) is not text (it holds NUL bytes)", f"{field}.file_data")
    return f"\n\n<file name={json.dumps(filename, ensure_ascii=False)}>\n{text}\n</file>\n\n"
