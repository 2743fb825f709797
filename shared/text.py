"""Text that every store and wire format can hold: lone UTF-16 surrogates replaced.

A JSON string may carry `"\\ud800"` (a surrogate with no partner): Python decodes it into a `str`
that cannot be encoded as UTF-8, so Redis, Lua's cjson and every client would fail on it half-way.
Each edge where outside text enters Parley (request bodies, model streams, tool results) passes it
through `clean`, which replaces each lone surrogate with U+FFFD and leaves everything else as it is.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a str from Python never holds paired ones)."""
    if _SURROGATE.search(text) is None:  # the common case: one scan, no copy
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def clean_json(value: Any) -> Any:
    """A parsed JSON value with `clean` applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean(key): clean_json(item) for key, item in value.items()}
    return value
