"""Structured answers: what to ask the model for when an agent has a `response_shape`, and whether
its answer fits.

A shape is either a JSON Schema (an object with `type: object`, `properties` or `$schema`), a
seed-style description object (`{"answer": "string", "recipes": "list of strings"}`: every key
must be in the answer), or a description in words (any JSON object will do). JSON Schemas go to
the provider's structured-output mode (`response_format: json_schema`); the others ask for a
JSON object. Either way the instructions carry the shape too (context.py), and the answer
is checked here, because not every OpenAI-compatible server enforces `response_format`.

The answer is parsed and checked by shared/shapes.py, which treats the shape as data: bounded
answers, regular expressions in RE2, no reference ever fetched, a work budget per check.
"""

from __future__ import annotations

from typing import Any

from parley.shared.shapes import SCHEMA_KEYS, AnswerError, is_json_schema, load_answer, validate_answer

MISSING_SHOWN = 10
"""Missing fields named in the reason (it goes to the model and into the turn's events)."""

__all__ = ["SCHEMA_KEYS", "InvalidAnswer", "intent_of", "is_json_schema", "parse_answer", "response_format"]
REPAIR_PROMPT = (
    "Your previous answer does not fit the required shape: {reason}. "
    "Answer again with only the JSON, in exactly the shape given in the instructions."
)


class InvalidAnswer(Exception):
    """The model's answer is not JSON in the agent's shape; the message says why, for the model and for people."""


def response_format(shape: Any) -> dict[str, Any] | None:
    """The `response_format` to send for an agent's shape (None when it has none)."""
    if shape is None or shape == "" or shape == {}:
        return None
    if is_json_schema(shape):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": shape}}
    return {"type": "json_object"}


def _strip_fence(text: str) -> str:
    """Models sometimes wrap JSON in a ```json fence although asked not to; the JSON inside counts."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        stripped = stripped.removeprefix("json").removeprefix("JSON")
    return stripped.strip()


def parse_answer(shape: Any, text: str) -> Any:
    """The answer as JSON, checked against the shape; raises InvalidAnswer (and nothing else, whatever
    the shape or the text holds)."""
    try:
        answer = load_answer(_strip_fence(text))
        if is_json_schema(shape):
            validate_answer(shape, answer)
    except AnswerError as error:
        raise InvalidAnswer(str(error)) from None
    if is_json_schema(shape):
        return answer
    if isinstance(shape, dict):
        if not isinstance(answer, dict):
            raise InvalidAnswer("it is not a JSON object")
        missing = [name for name in shape if name not in answer]
        if missing:
            shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
            raise InvalidAnswer(f"it lacks the field(s) {shown}")
    return answer


def intent_of(answer: Any) -> str | None:
    """The answer's `intent`, when it is an object that carries one as text."""
    intent = answer.get("intent") if isinstance(answer, dict) else None
    return intent if isinstance(intent, str) else None
