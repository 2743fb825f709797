"""A response shape is data (issue 11 items 1, 2, 6; contract "Hostile input").

No regular expression in a shape may run unbounded (the worker's `parse_answer` and the models both
hold), no `$ref` may reach the network or the disk (a real HTTP server counts the tries), no shape or
answer may nest or grow past its bounds, and whatever a stored shape holds ends as InvalidAnswer,
never a crash. With the code before shared/shapes.py the catastrophic-pattern tests hang until
pytest-timeout fails them, and the `$ref` tests see the server's hits.
"""

from __future__ import annotations

import http.server
import json
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from parley.shared import shapes
from parley.shared.schema import AgentCreate, AgentUpdate, SessionCreate
from parley.shared.store.agents import AgentStore, public
from parley.worker.turn.structured import InvalidAnswer, parse_answer

EVIL = "^(a+)+$"
"""Nested quantifiers: Python's `re` backtracks 2**n times on n a's and a mismatch; RE2 takes linear time."""
ALMOST = "a" * 64 + "!"
"""An almost-matching text for EVIL: 2**64 steps for Python's `re`."""


def schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep, built without recursion."""
    top: dict[str, Any] = {}
    node = top
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return top


# ------------------------------------------------------------------------ regular expressions run in RE2

CATASTROPHIC_SHAPES = {
    "pattern": (schema(a={"type": "string", "pattern": EVIL}), {"a": ALMOST}),
    "patternProperties": ({"type": "object", "patternProperties": {EVIL: {"type": "integer"}}, "required": ["x"]},
                          {ALMOST: "x"}),
    "additionalProperties": ({"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
                             {ALMOST: 1}),
    "unevaluatedProperties": ({"type": "object", "patternProperties": {EVIL: {}}, "unevaluatedProperties": False},
                              {ALMOST: 1}),
    "unevaluatedProperties 2019-09": ({"$schema": "https://json-schema.org/draft/2019-09/schema", "type": "object",
                                       "patternProperties": {EVIL: {}}, "unevaluatedProperties": False},
                                      {ALMOST: 1}),
    "propertyNames": ({"type": "object", "propertyNames": {"pattern": EVIL}}, {ALMOST: 1}),
    "draft-04": ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                  "properties": {"a": {"pattern": EVIL}}}, {"a": ALMOST}),
    "draft-07 items": ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                        "properties": {"a": {"type": "array", "items": {"pattern": EVIL}}}}, {"a": [ALMOST] * 3}),
    "a nested $schema": ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {
        "a": {"$schema": "http://json-schema.org/draft-04/schema#", "pattern": EVIL}}}, {"a": ALMOST}),
    "through a $ref": ({"type": "object", "$defs": {"s": {"pattern": EVIL}},
                        "properties": {"a": {"$ref": "#/$defs/s"}}}, {"a": ALMOST}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CATASTROPHIC_SHAPES))
def test_nested_quantifiers_finish_and_the_answer_is_refused(name: str) -> None:
    shape, answer = CATASTROPHIC_SHAPES[name]
    assert AgentCreate(name="a", response_shape=shape).response_shape == shape  # RE2 can run it: accepted
    with pytest.raises(InvalidAnswer):
        parse_answer(shape, json.dumps(answer))


def test_a_matching_answer_still_fits() -> None:
    shape, _ = CATASTROPHIC_SHAPES["pattern"]
    assert parse_answer(shape, json.dumps({"a": "aaaa"})) == {"a": "aaaa"}
    shape, _ = CATASTROPHIC_SHAPES["additionalProperties"]
    assert parse_answer(shape, '{"aaa": 1}') == {"aaa": 1}
    with pytest.raises(InvalidAnswer, match="does not match any of the regexes"):
        parse_answer(shape, '{"b": 1}')


def test_every_keyword_function_that_names_re_sees_re2() -> None:
    """The stock functions call the module-level `re.search`; in the safe classes none of them is left."""
    stock_modules = {vars(module)["__name__"] for module in (shapes._utils, shapes._keywords, shapes._legacy_keywords)}
    for cls in shapes.SAFE_VALIDATORS.values():
        for keyword, function in cls.VALIDATORS.items():
            inner = function.__wrapped__
            assert isinstance(inner, types.FunctionType), keyword
            if inner.__module__ in stock_modules:
                assert inner.__globals__ is not vars(shapes._keywords) and inner.__globals__["re"] is shapes._Re2Module
                for helper in ("find_additional_properties", "find_evaluated_property_keys_by_schema"):
                    if helper in inner.__globals__:
                        assert inner.__globals__[helper].__globals__["re"] is shapes._Re2Module, (keyword, helper)


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)b", "(?!a)b", "(?<=a)b", "(?<!a)b", "a{1001}"])
def test_patterns_re2_cannot_run_are_refused_at_the_door(pattern: str) -> None:
    for shape in (schema(a={"type": "string", "pattern": pattern}),
                  {"type": "object", "patternProperties": {pattern: {}}}):  # fmt: skip
        with pytest.raises(ValidationError, match="not supported"):
            AgentCreate(name="a", response_shape=shape)
        with pytest.raises(ValidationError, match="not supported"):
            AgentUpdate(response_shape=shape)


def test_long_patterns_are_refused() -> None:
    with pytest.raises(ValidationError, match="longer than"):
        AgentCreate(name="a", response_shape=schema(a={"pattern": "a" * (shapes.PATTERN_MAX_CHARS + 1)}))


def test_a_stored_pattern_re2_cannot_run_is_an_invalid_answer_not_a_hang() -> None:
    shape = schema(a={"type": "string", "pattern": r"^(a+)+\1$"})  # stored before the checks existed
    with pytest.raises(InvalidAnswer, match="cannot be applied"):
        parse_answer(shape, json.dumps({"a": ALMOST}))


def test_formats_are_annotations_only() -> None:
    shape = schema(a={"type": "string", "format": "email"}, b={"type": "string", "format": "regex"})
    assert AgentCreate(name="a", response_shape=shape).response_shape == shape
    assert parse_answer(shape, '{"a": "not an email", "b": "(unclosed"}') == {"a": "not an email", "b": "(unclosed"}


# ------------------------------------------------------------------------------ no reference is fetched


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        body = json.dumps({"type": "integer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server serving `{"type": "integer"}` at every path; yields its URL and the paths asked for."""
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def remote_shapes(url: str) -> list[dict[str, Any]]:
    return [
        schema(a={"$ref": f"{url}/schema.json"}),
        schema(a={"$ref": f"{url}/schema.json#/definitions/x"}),
        {"$id": f"{url}/root.json", "type": "object", "properties": {"a": {"$ref": "other.json"}}},
        schema(a={"$id": f"{url}/nested/", "properties": {"b": {"$ref": "#/x"}}}),
        schema(a={"$dynamicRef": f"{url}/dynamic.json"}),
        {"$schema": "https://json-schema.org/draft/2019-09/schema", "type": "object",
         "properties": {"a": {"$recursiveRef": f"{url}/recursive.json"}}},
        {"$schema": f"{url}/meta.json", "type": "object"},
    ]  # fmt: skip


def test_remote_references_are_refused_at_creation_without_a_fetch(schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    for shape in remote_shapes(url):
        with pytest.raises(ValidationError):
            AgentCreate(name="a", response_shape=shape)
    assert hits == []


def test_a_stored_remote_reference_is_never_fetched_at_validation(schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    for shape in remote_shapes(url):
        with pytest.raises(InvalidAnswer):
            parse_answer(shape, '{"a": "not an integer"}')
        validator = shapes.safe_validator(shape)  # no check first: the validator alone holds too
        try:
            list(validator.iter_errors({"a": "not an integer"}))
        except Exception as error:  # noqa: BLE001 - unresolvable, as long as nothing was asked for
            assert "integer" not in str(error)
    assert hits == []


def test_the_server_does_count_what_a_stock_validator_fetches(schema_server: tuple[str, list[str]]) -> None:
    """The counting server works: jsonschema as it comes does fetch the reference (what the tests above rule out)."""
    import jsonschema

    url, hits = schema_server
    with pytest.raises(jsonschema.ValidationError, match="not of type 'integer'"):
        jsonschema.validate({"a": "x"}, schema(a={"$ref": f"{url}/schema.json"}))
    assert hits == ["/schema.json"]


def test_file_references_are_refused_and_never_read(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    target.write_text(json.dumps({"type": "integer"}))
    shape = schema(a={"$ref": target.as_uri()})
    with pytest.raises(ValidationError, match="not allowed"):
        AgentCreate(name="a", response_shape=shape)
    with pytest.raises(InvalidAnswer) as refused:
        parse_answer(shape, '{"a": "x"}')
    assert "integer" not in str(refused.value)  # the file's content played no part
    with pytest.raises(Exception) as unresolvable:
        list(shapes.safe_validator(shape).iter_errors({"a": "x"}))
    assert "integer" not in str(unresolvable.value)


def test_local_references_work_and_a_root_id_is_only_a_name(schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    shape = {"$id": f"{url}/root.json", "type": "object", "$defs": {"n": {"type": "integer"}},
             "properties": {"a": {"$ref": "#/$defs/n"}, "self": {"$ref": "#"}}}  # fmt: skip
    AgentCreate(name="a", response_shape=shape)
    assert parse_answer(shape, '{"a": 1, "self": {"a": 2}}') == {"a": 1, "self": {"a": 2}}
    with pytest.raises(InvalidAnswer, match="not of type 'integer'"):
        parse_answer(shape, '{"a": "x"}')
    assert hits == []


def test_a_reference_to_nothing_is_refused() -> None:
    with pytest.raises(ValidationError, match="points to nothing"):
        AgentCreate(name="a", response_shape=schema(a={"$ref": "#/$defs/missing"}))


# --------------------------------------------------------------------------------- bounds on shapes


def test_deep_shapes_are_refused_without_recursion() -> None:
    AgentCreate(name="a", response_shape=nested(shapes.SHAPE_MAX_DEPTH))
    for depth in (shapes.SHAPE_MAX_DEPTH + 1, 300, 100_000):  # 100 000 would overflow any recursive walk
        with pytest.raises(ValidationError, match="deeper than"):
            AgentCreate(name="a", response_shape=nested(depth))


def test_large_shapes_are_refused() -> None:
    big = schema(**{f"f{i}": {"type": "string", "description": "x" * 100} for i in range(700)})
    with pytest.raises(ValidationError, match="larger than"):
        AgentCreate(name="a", response_shape=big)
    with pytest.raises(ValidationError, match="longer than"):
        AgentCreate(name="a", response_shape="words " * 20_000)
    assert AgentCreate(name="a", response_shape="a JSON object with a title").response_shape


def test_invalid_schemas_are_refused_with_where() -> None:
    with pytest.raises(ValidationError, match="at properties/a/type"):
        AgentCreate(name="a", response_shape=schema(a={"type": "strin"}))
    with pytest.raises(ValidationError, match="not plain JSON"):
        AgentCreate(name="a", response_shape=schema(a={"maximum": float("inf")}))


def test_description_shapes_are_not_checked_as_schemas() -> None:
    shape = {"answer": "string", "pattern": "the pattern you noticed (if any", "$ref": "see https://example.com"}
    assert AgentCreate(name="a", response_shape=shape).response_shape == shape


# ------------------------------------------------------------------------- answers: bounded, never a crash


def test_deep_and_large_answers_are_invalid_answers() -> None:
    with pytest.raises(InvalidAnswer, match="deeper than"):
        parse_answer({"type": "object"}, "[" * 200_000)  # json.loads itself raises RecursionError
    with pytest.raises(InvalidAnswer, match="deeper than"):
        parse_answer({"type": "object"}, "[" * 65 + "]" * 65)
    with pytest.raises(InvalidAnswer, match="larger than"):
        parse_answer({"type": "object"}, json.dumps({"a": "x" * shapes.ANSWER_MAX_BYTES}))


def test_an_exponential_reference_graph_stops_at_the_budget() -> None:
    defs: dict[str, Any] = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
                            for i in range(30)}  # fmt: skip
    defs["d30"] = {"type": "string"}
    shape = {"type": "object", "$defs": defs, "properties": {"a": {"$ref": "#/$defs/d0"}}}
    AgentCreate(name="a", response_shape=shape)
    with pytest.raises(InvalidAnswer, match="too much work"):
        parse_answer(shape, '{"a": 1}')  # 2**30 paths, each failing
    assert parse_answer(shape, '{"a": "x"}') == {"a": "x"}  # the first path fits at once


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    shape = schema(a={"type": "array", "uniqueItems": True})
    distinct = [{"k": i} for i in range(20_000)]  # unsortable: stock jsonschema compares every pair
    assert parse_answer(shape, json.dumps({"a": distinct}))["a"][-1] == {"k": 19_999}
    for duplicated in ([1, 1.0], [{"x": 1, "y": 2}, {"y": 2, "x": 1}], [[1, [2]], [1, [2]]]):
        with pytest.raises(InvalidAnswer, match="non-unique"):
            parse_answer(shape, json.dumps({"a": duplicated}))
    assert parse_answer(shape, '{"a": [true, 1, false, 0, null, "1"]}')


@pytest.mark.parametrize("shape", [
    {"$ref": "#"},
    {"type": "object", "properties": 5},
    schema(a={"type": "nonsense"}),
    {"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}},
    {"type": "object", "required": "a"},
])  # fmt: skip
def test_whatever_a_stored_shape_holds_ends_as_invalid_answer(shape: dict[str, Any]) -> None:
    with pytest.raises(InvalidAnswer):
        parse_answer(shape, '{"a": 1}')


def test_answers_lose_lone_surrogates() -> None:
    assert parse_answer(schema(a={"type": "string", "pattern": "^.+$"}), '{"a": "x\\ud800"}') == {"a": "x\ufffd"}


def test_reasons_are_short() -> None:
    with pytest.raises(InvalidAnswer) as refused:
        parse_answer(schema(a={"type": "integer"}), json.dumps({"a": "x" * 100_000}))
    assert len(str(refused.value)) < 2 * shapes.MESSAGE_MAX_CHARS


# ------------------------------------------------------------------------------- other free-form fields


def test_session_metadata_is_bounded() -> None:
    assert SessionCreate(metadata={"user": "ana", "tags": ["a", "b"]}).metadata["user"] == "ana"
    with pytest.raises(ValidationError, match="larger than"):
        SessionCreate(metadata={"blob": "x" * 20_000})
    with pytest.raises(ValidationError, match="deeper than"):
        SessionCreate(metadata=nested(33))
    with pytest.raises(ValidationError, match="not plain JSON"):
        SessionCreate(metadata={"x": float("nan")})


def test_tools_are_bounded() -> None:
    assert AgentCreate(name="a", tools=["calculator"] * 128).tools == ["calculator"] * 128
    with pytest.raises(ValidationError, match="at most 128"):
        AgentCreate(name="a", tools=["calculator"] * 129)
    with pytest.raises(ValidationError, match="at most 200 characters"):
        AgentUpdate(tools=["x" * 201])


def test_a_deep_shape_stored_before_the_limits_does_not_break_the_agent_list(agents: AgentStore) -> None:
    """Item 6: such a shape used to make every `GET /api/v1/agents` of its tenant a 500 (pydantic cannot
    serialize ~250 levels); now the agent is listed with the shape named instead."""
    legacy = AgentCreate.model_construct(**{**AgentCreate(name="Old").model_dump(), "response_shape": nested(300)})
    agents.create("alice", legacy)
    agents.create("alice", AgentCreate(name="New", response_shape=schema(a={"type": "string"})))
    shown = [json.loads(public(agent, "m").model_dump_json()) for agent in agents.visible("alice")]
    assert [agent["name"] for agent in shown] == ["Old", "New"]
    assert "deeper than" in shown[0]["response_shape"]
    assert shown[1]["response_shape"] == schema(a={"type": "string"})
