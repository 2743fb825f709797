"""Lone surrogates, which a JSON string may carry, become U+FFFD; everything else is left alone."""

from __future__ import annotations

import json

from parley.shared.text import clean, clean_json


def test_lone_surrogates_are_replaced() -> None:
    parsed = json.loads('"a\\ud800b\\udfffc"')
    assert clean(parsed) == "a\ufffdb\ufffdc"
    clean(parsed).encode("utf-8")  # encodable now


def test_pairs_and_other_text_are_kept() -> None:
    text = json.loads('"\\ud83d\\ude00 caf\\u00e9"')  # a valid pair decodes to one code point
    assert clean(text) is text
    assert clean(text) == "😀 café"


def test_json_values_are_cleaned_throughout() -> None:
    value = json.loads('{"k\\udc00": ["\\ud800", 1, {"x": "\\ud801y"}], "n": null}')
    assert clean_json(value) == {"k\ufffd": ["\ufffd", 1, {"x": "\ufffdy"}], "n": None}
