"""A provider's prompt cache, as the scripted model (tests/model_server.py) reports it.

Why it exists: Parley's prompt-caching work is measured by the share of prompt tokens a provider would
serve from its cache. Providers cache by prefix: a request's longest prefix already seen in an earlier
request (routed by `prompt_cache_key` when it has one) is read from cache, the rest is computed. This
module does that deterministically, so a test or a benchmark can see what a change to the prompt's
assembly costs or saves.

The request is read in the order providers serialise it: the tools (and response format), then each
message in order (its role and other fields, then its content). Each is cut into *units*; a unit of
content text is one word with the whitespace before it and weighs one token (the scripted model's
`prompt_tokens` is the number of words in the messages' content, so `cached_tokens <= prompt_tokens`);
everything else (tools, a message's role and fields, whitespace at the end of a content, image parts)
is one unit that weighs nothing but must match byte for byte for the prefix to go on.

`cached_tokens` is the weight of the longest common prefix, rounded down to a multiple of `block`
(1: not rounded; OpenAI rounds to 128-token blocks past its 1,024-token minimum, which the scripted
model's word counts would rarely reach, so the default does not round). A request with a
`prompt_cache_key` is compared with the earlier requests that had the same key; one without a key with
every earlier request. Prefixes are kept as a set of chained hashes per key (O(request) per lookup);
past MAX_PREFIXES in all, the least recently used keys are dropped, as a provider's cache evicts.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

Unit = tuple[str, int]
"""(bytes of the unit as text, tokens it weighs)."""

MAX_PREFIXES = 400_000
_WORDS = re.compile(r"\s*\S+")
_ALL = object()  # the bucket of every request, keyed or not


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


def _text_units(text: str) -> list[Unit]:
    units: list[Unit] = [(word, 1) for word in _WORDS.findall(text)]
    tail = text[sum(len(word) for word, _ in units) :]
    if tail:
        units.append((tail, 0))
    return units


def _content_units(content: Any) -> list[Unit]:
    if isinstance(content, str):
        return _text_units(content)
    units: list[Unit] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                units.append(("\x00part:" + _dumps({k: v for k, v in part.items() if k != "text"}), 0))
                units.extend(_text_units(part["text"]))
            else:
                units.append(("\x00part:" + _dumps(part), 0))
    elif content is not None:
        units.append(("\x00content:" + _dumps(content), 0))
    return units


def prompt_units(body: dict[str, Any]) -> list[Unit]:
    """The request's prompt as units, in the order providers serialise it: tools, then messages."""
    head = {name: body[name] for name in ("tools", "response_format") if body.get(name) is not None}
    units: list[Unit] = [("\x00head:" + _dumps(head), 0)]
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            units.append(("\x00message:" + _dumps(message), 0))
            continue
        units.append(("\x00message:" + _dumps({k: v for k, v in message.items() if k != "content"}), 0))
        units.extend(_content_units(message.get("content")))
    return units


class PrefixCache:
    """The prefixes earlier requests sent, per `prompt_cache_key` and all together."""

    def __init__(self, block: int = 1) -> None:
        self.block = block
        self.buckets: OrderedDict[object, set[int]] = OrderedDict()
        self.size = 0

    def clear(self) -> None:
        self.buckets.clear()
        self.size = 0

    def serve(self, body: dict[str, Any]) -> int:
        """The tokens of `body`'s prompt served from cache; then its prefixes are cached for later requests."""
        key = body.get("prompt_cache_key")
        bucket_key: object = key if isinstance(key, str) and key else _ALL
        hashes = self._hashes(prompt_units(body))
        seen = self.buckets.get(bucket_key, set())
        cached = 0
        for digest, weight in hashes:
            if digest not in seen:
                break
            cached += weight
        for name in {bucket_key, _ALL}:
            bucket = self.buckets.setdefault(name, set())
            self.buckets.move_to_end(name)
            before = len(bucket)
            bucket.update(digest for digest, _ in hashes)
            self.size += len(bucket) - before
        self._evict()
        return cached - cached % self.block if self.block > 1 else cached

    @staticmethod
    def _hashes(units: list[Unit]) -> list[tuple[int, int]]:
        """(hash of the prefix ending with this unit, the unit's weight) for every unit."""
        digest = 0
        out = []
        for text, weight in units:
            digest = hash((digest, text))
            out.append((digest, weight))
        return out

    def _evict(self) -> None:
        while self.size > MAX_PREFIXES and len(self.buckets) > 1:
            name, bucket = next(iter(self.buckets.items()))
            if name is _ALL:
                self.buckets.move_to_end(name)
                name, bucket = next(iter(self.buckets.items()))
            del self.buckets[name]
            self.size -= len(bucket)
        if self.size > MAX_PREFIXES:  # one bucket alone is too large: start it afresh
            self.clear()
