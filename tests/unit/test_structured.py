"""Structured answers: which `response_format` an agent's shape asks for, and which answers fit."""

from __future__ import annotations

import pytest

from parley.worker.turn.structured import InvalidAnswer, intent_of, is_json_schema, parse_answer, response_format

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_json_schema_goes_to_structured_output_mode() -> None:
    assert is_json_schema(SCHEMA)
    assert response_format(SCHEMA) == {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}


def test_descriptions_ask_for_a_json_object_and_no_shape_for_nothing() -> None:
    assert response_format({"answer": "string", "recipes": "list of strings"}) == {"type": "json_object"}
    assert response_format("a JSON object with a title") == {"type": "json_object"}
    assert response_format(None) is None and response_format({}) is None


def test_schema_answers_are_validated() -> None:
    assert parse_answer(SCHEMA, '{"answer": "yes"}') == {"answer": "yes"}
    with pytest.raises(InvalidAnswer, match="'answer' is a required property"):
        parse_answer(SCHEMA, '{"other": 1}')
    with pytest.raises(InvalidAnswer, match="at answer: 3 is not of type 'string'"):
        parse_answer(SCHEMA, '{"answer": 3}')


def test_text_that_is_not_json_is_refused_with_where() -> None:
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        parse_answer(SCHEMA, "Sure! Here you go.")


def test_a_fenced_json_answer_counts() -> None:
    assert parse_answer(SCHEMA, '```json\n{"answer": "x"}\n```') == {"answer": "x"}


def test_description_shapes_need_every_key() -> None:
    shape = {"answer": "string", "recipes": "list of strings"}
    assert parse_answer(shape, '{"answer": "a", "recipes": []}') == {"answer": "a", "recipes": []}
    with pytest.raises(InvalidAnswer, match="lacks the field.s. recipes"):
        parse_answer(shape, '{"answer": "a"}')
    with pytest.raises(InvalidAnswer, match="not a JSON object"):
        parse_answer(shape, "[1, 2]")


def test_word_shapes_take_any_json() -> None:
    assert parse_answer("a list of numbers", "[1, 2]") == [1, 2]


def test_intent_only_from_an_object_with_text_intent() -> None:
    assert intent_of({"intent": "order"}) == "order"
    assert intent_of({"intent": 3}) is None and intent_of([1]) is None
