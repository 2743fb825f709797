"""shared/tokens.py: exact counts for OpenAI models from the BPE files shipped on PyPI (no download),
the documented estimate for every other model, and what a message costs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from parley.shared import tokens


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    tokens._load_encoding.cache_clear()
    tokens.encoding_for.cache_clear()
    yield
    tokens._load_encoding.cache_clear()
    tokens.encoding_for.cache_clear()


def test_openai_models_are_counted_with_their_encoding_offline() -> None:
    cl100k = tokens.encoding("cl100k_base")
    o200k = tokens.encoding("o200k_base")
    assert cl100k is not None and o200k is not None
    assert cl100k.encode("hello world") == [15339, 1917]  # tiktoken's README example
    assert o200k.decode(o200k.encode("Ünïcödé and emoji 🍝")) == "Ünïcödé and emoji 🍝"
    assert tokens.encoding_for("gpt-4") is cl100k
    assert tokens.encoding_for("gpt-4o-mini") is o200k
    assert tokens.count_text("hello world", "gpt-4o-mini") == 2
    assert tokens.count_text("tiktoken is great!", "gpt-4") == 6


def test_a_provider_prefix_is_ignored() -> None:
    assert tokens.encoding_for("openai/gpt-4o") is tokens.encoding("o200k_base")


def test_other_models_get_the_estimate_of_utf8_bytes_over_four() -> None:
    assert tokens.encoding_for("llama3.1:8b") is None
    assert tokens.count_text("hello world", "llama3.1:8b") == 3  # 11 bytes
    assert tokens.count_text("日本語", "test-model") == 3  # 9 bytes: multi-byte scripts count more
    assert tokens.count_text("", "test-model") == 0


def test_special_token_text_is_counted_as_text() -> None:
    assert tokens.count_text("<|endoftext|>", "gpt-4o") > 1


def test_an_encoding_whose_file_does_not_match_its_hash_falls_back_to_the_estimate(
    monkeypatch: pytest.MonkeyPatch, fresh_caches: None
) -> None:
    monkeypatch.setattr(tokens, "_bpe_file", lambda name: b"aGVsbG8= 0\n")
    assert tokens.encoding("o200k_base") is None
    assert tokens.count_text("hello world", "gpt-4o") == 3


def test_message_cost_adds_overhead_tool_calls_name_and_images() -> None:
    model = "test-model"
    plain = {"role": "user", "content": "x" * 40}
    assert tokens.count_message(plain, model) == 10 + tokens.MESSAGE_OVERHEAD_TOKENS
    with_images = {**plain, "images": ["img_a", "img_b"]}
    assert tokens.count_message(with_images, model) == 10 + tokens.MESSAGE_OVERHEAD_TOKENS + 2 * tokens.IMAGE_TOKENS
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "calculator", "arguments": "{\"expression\": \"2+2\"}"}}]}  # fmt: skip
    assert tokens.count_message(call, model) > tokens.MESSAGE_OVERHEAD_TOKENS + 10
    tool = {"role": "tool", "content": "4", "name": "calculator", "tool_call_id": "call_1"}
    assert tokens.count_message(tool, model) == tokens.MESSAGE_OVERHEAD_TOKENS + 1 + 1 + 3


def test_model_bound_parts_count_text_and_images() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "x" * 8},
                                           {"type": "image_url", "image_url": {"url": "data:..."}}]}  # fmt: skip
    assert tokens.count_message(message, "test-model") == tokens.MESSAGE_OVERHEAD_TOKENS + 2 + tokens.IMAGE_TOKENS


def test_turns_starting_at_once_build_one_encoding(fresh_caches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each build costs ~75 MiB: a worker's many turn threads must share one, not race to build their own."""
    reads: list[str] = []
    shipped = tokens._bpe_file

    def slow_read(name: str) -> bytes:
        reads.append(name)
        time.sleep(0.05)
        return shipped(name)

    monkeypatch.setattr(tokens, "_bpe_file", slow_read)
    built: list[object] = []
    threads = [threading.Thread(target=lambda: built.append(tokens.encoding("cl100k_base"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reads == ["cl100k_base"]
    assert len(built) == 8 and all(encoding is built[0] for encoding in built)
