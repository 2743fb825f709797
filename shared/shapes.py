"""A response shape is data: checked when it comes in, applied to answers without running tenant code.

An agent's `response_shape` (and a few other free-form JSON fields) comes from a tenant, and the worker
applies it to model answers on workers it shares with every other tenant. So:

* `check_json` bounds any free-form JSON value: nesting depth (walked without recursion), serialized
  size, finite numbers only. The models (shared/schema.py) use it for shapes and session metadata.
* `check_shape` is the door for shapes (agent create/update, file agents, the seed route): bounded like
  any JSON; for a JSON Schema, every `$ref`/`$dynamicRef`/`$recursiveRef` a local fragment (`#...`), no
  nested `$id` that would move references out of the shape, `$schema` a dialect jsonschema knows, every
  `pattern` and `patternProperties` key compiled by RE2 (linear time: no backreferences, no lookaround),
  and the schema valid against its metaschema without format checks.
* `validate_answer` applies a shape with jsonschema's validators extended so that no tenant input can
  run unbounded: regular expressions run in RE2 (jsonschema's keyword functions call the module-level
  `re.search`; they are re-bound to a stand-in whose `search` is RE2's), `format` is an annotation only,
  `uniqueItems` hashes instead of comparing every pair, `$ref` resolves in a registry whose retrieval
  refuses everything (no network, no disk), and every keyword and subschema step is charged to a work
  budget: a shape/answer pair that needs more (e.g. a ref graph that fans out exponentially) is refused
  instead of holding the worker. The checked validator is built once per shape and cached.
* `load_answer` parses a model's answer within size and depth bounds, lone surrogates replaced.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import json
import logging
import types
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import re2
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import _keywords, _legacy_keywords, _utils, exceptions, validators
from jsonschema.exceptions import ValidationError, best_match
from jsonschema_specifications import REGISTRY as SPECIFICATIONS

from parley.shared.text import clean, clean_json

log = logging.getLogger(__name__)

SHAPE_MAX_BYTES = 64 * 1024
"""A shape's serialized JSON (or its text, for a shape in words) at most this many UTF-8 bytes."""
SHAPE_MAX_DEPTH = 32
"""Containers nested at most this deep in a shape."""
PATTERN_MAX_CHARS = 1_000
"""A `pattern` or `patternProperties` key at most this long."""
REF_MAX_CHARS = 1_000
"""A `$ref` (or `$dynamicRef`, `$recursiveRef`) at most this long."""
ANSWER_MAX_BYTES = 512 * 1024
"""A structured answer at most this many UTF-8 bytes (a far longer one is not an answer a person reads)."""
ANSWER_MAX_DEPTH = 64
"""Containers nested at most this deep in a structured answer."""
WORK_BUDGET = 100_000
"""Work units one validation may spend: EVOLVE_UNITS per subschema step, ERROR_UNITS per error made, one per
keyword plus the size of the containers it loops over. An answer of 200 recipes (28 KB) uses about a third;
the worst shape and answer pairs tried stop within about half a second."""
EVOLVE_UNITS = 5
ERROR_UNITS = 5
ERRORS_SHOWN = 10
"""The most relevant of an answer's first few errors is the one reported: no need to find them all."""
MESSAGE_MAX_CHARS = 300
"""Error messages quote the offending value; cut so a huge value does not travel into prompts and events."""

REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
SCHEMA_KEYS = ("$schema", "properties")


class ShapeError(ValueError):
    """A shape (or another free-form JSON value) the API refuses; the message says why, for people."""


class AnswerError(ValueError):
    """An answer that does not fit its shape, or a shape that cannot be applied to it."""


class _WorkExceeded(Exception):
    """Raised inside jsonschema when a validation has spent its budget."""


def is_json_schema(shape: Any) -> bool:
    """Whether a shape is a JSON Schema (an object with `type: object`, `properties` or `$schema`)."""
    return isinstance(shape, dict) and (shape.get("type") == "object" or any(key in shape for key in SCHEMA_KEYS))


# ---------------------------------------------------------------------------------------------- JSON bounds


def json_depth(value: Any, limit: int) -> int:
    """How deeply containers nest in `value`, counted without recursion; stops counting past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def json_size(value: Any) -> int:
    """UTF-8 bytes of `value` as compact JSON; ValueError for what JSON cannot hold. Check the depth first:
    the encoder recurses."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError("not plain JSON (NaN and infinities are not JSON numbers)") from None
    except TypeError as error:
        raise ValueError(f"not plain JSON ({error})") from None
    return len(text.encode("utf-8", "surrogatepass"))


def check_json(value: Any, *, max_depth: int, max_bytes: int, what: str = "the value") -> Any:
    """`value` unchanged when it nests at most `max_depth` deep and is at most `max_bytes` as JSON;
    ShapeError (a ValueError, so pydantic answers 422) otherwise."""
    if json_depth(value, max_depth) > max_depth:
        raise ShapeError(f"{what} nests deeper than {max_depth} levels")
    try:
        size = json_size(value)
    except ValueError as error:
        raise ShapeError(f"{what} is {error}") from None
    if size > max_bytes:
        raise ShapeError(f"{what} is larger than {max_bytes} bytes as JSON ({size})")
    return value


# ---------------------------------------------------------------------------------------- regular expressions

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=256)
def _re2(pattern: str) -> Any:
    return re2.compile(pattern, options=_RE2_OPTIONS)


def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2; ShapeError when it is too long or RE2 cannot run it."""
    if len(pattern) > PATTERN_MAX_CHARS:
        raise ShapeError(f"pattern {_short(pattern)} is longer than {PATTERN_MAX_CHARS} characters")
    return _compile_re2(pattern)


def _compile_re2(pattern: str) -> Any:
    try:
        return _re2(clean(pattern))
    except re2.error as error:
        reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) else error
        raise ShapeError(f"pattern {_short(pattern)} is not supported ({reason}); patterns run in RE2: "
                         "no backreferences or lookaround") from None  # fmt: skip


class _Re2Module:
    """Stands in for the `re` module inside jsonschema's keyword functions, which only call `re.search`."""

    @staticmethod
    def search(pattern: str, text: str) -> Any:
        return _compile_re2(pattern).search(clean(text))  # no length bound: jsonschema joins patterns with |


# ---------------------------------------------------------------------------------------------- the budget

_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("shape_work_budget", default=None)


def _charge(units: int) -> None:
    left = _budget.get()
    if left is not None:
        left[0] -= units
        if left[0] < 0:
            raise _WorkExceeded


def _size(value: Any) -> int:
    return len(value) if isinstance(value, dict | list) else 0


def _cost(keyword: str, value: Any, instance: Any, schema: Any) -> int:
    """What one keyword application costs: one, plus the containers it loops over (pattern keywords
    search every pattern against every key)."""
    units = 1 + _size(value) + _size(instance)
    if keyword in ("patternProperties", "additionalProperties", "unevaluatedProperties") and isinstance(schema, dict):
        units += _size(schema.get("patternProperties")) * _size(instance)
    return units


def _charged(keyword: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` (a keyword's validator) charging the budget for its call and for each error it makes."""

    @functools.wraps(function)
    def keyword_function(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        _charge(_cost(keyword, value, instance, schema))
        for error in function(validator, value, instance, schema) or ():
            _charge(ERROR_UNITS)
            yield error

    return keyword_function


# --------------------------------------------------------------------------- jsonschema, re-bound to RE2


def _rebind(function: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    """A copy of `function` that looks its global names up in `namespace` instead of its module."""
    copy = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                              function.__closure__)  # fmt: skip
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    return copy


def _rebound_modules() -> dict[types.FunctionType, types.FunctionType]:
    """Every function of jsonschema's keyword modules, copied so that `re` is RE2 and the helpers they call
    are the copies too (`find_additional_properties`, `find_evaluated_property_keys_by_schema`, ...)."""
    copies: dict[types.FunctionType, types.FunctionType] = {}
    namespaces = []
    for module in (_utils, _keywords, _legacy_keywords):
        namespace = dict(vars(module), re=_Re2Module)
        namespaces.append(namespace)
        for value in vars(module).values():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                copies[value] = _rebind(value, namespace)
    for namespace in namespaces:  # helpers imported from another of the three modules: their copies
        for name, value in list(namespace.items()):
            if inspect.isfunction(value) and value in copies:
                namespace[name] = copies[value]
    return copies


def _canonical(value: Any) -> Any:
    """A hashable stand-in with JSON's equality (1 == 1.0, true != 1, key order ignored)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, int | float):
        return ("number", value)
    return (type(value).__name__, value)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """`uniqueItems` in one pass with a set (jsonschema compares every pair when items are not sortable)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{_short(instance)} has non-unique elements")
            return
        seen.add(key)


def _annotation_only(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """`format` is an annotation here: format checks (some of them regular expressions) never run."""
    return iter(())


def _safe_validators(stock: Any, copies: dict[types.FunctionType, types.FunctionType]) -> dict[str, Any]:
    safe = {}
    for keyword, function in stock.VALIDATORS.items():
        function = copies.get(function, function)
        if keyword == "uniqueItems":
            function = _unique_items
        elif keyword == "format":
            function = _annotation_only
        safe[keyword] = _charged(keyword, function)
    return safe


def _dialect(uri: Any) -> str:
    return uri.rstrip("#") if isinstance(uri, str) else ""


def _evolve(self: Any, **changes: Any) -> Any:
    """jsonschema's `evolve`, choosing among the safe classes: the stock one picks a stock class (Python's
    `re`, remote references) for a subschema that names its `$schema`. The costliest step: charged more."""
    _charge(EVOLVE_UNITS)
    schema = changes.setdefault("schema", self.schema)
    dialect = schema.get("$schema") if isinstance(schema, dict) else None
    cls = SAFE_VALIDATORS.get(_dialect(dialect), type(self))
    for field in attrs.fields(type(self)):
        if field.init and field.alias not in changes:
            changes[field.alias] = getattr(self, field.name)
    return cls(**changes)


def _build_safe_classes() -> dict[str, Any]:
    copies = _rebound_modules()
    classes = {}
    stocks = (validators.Draft3Validator, validators.Draft4Validator, validators.Draft6Validator,
              validators.Draft7Validator, validators.Draft201909Validator, validators.Draft202012Validator)  # fmt: skip
    for stock in stocks:
        safe = validators.extend(stock, validators=_safe_validators(stock, copies))
        safe.evolve = _evolve
        classes[_dialect(stock.ID_OF(stock.META_SCHEMA))] = safe
    return classes


SAFE_VALIDATORS: dict[str, Any] = _build_safe_classes()
"""Dialect URI (without a trailing `#`) → the safe validator class for it."""
DEFAULT_VALIDATOR = SAFE_VALIDATORS[_dialect(validators.Draft202012Validator.ID_OF(
    validators.Draft202012Validator.META_SCHEMA))]  # fmt: skip


def _refuse(uri: str) -> referencing.Resource[Any]:
    """A response shape is never fetched: not over the network, not from the disk."""
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: referencing.Registry[Any] = SPECIFICATIONS.combine(referencing.Registry(retrieve=_refuse))  # type: ignore[call-arg]
"""The metaschemas jsonschema ships, and nothing else: every other URI is refused without a look."""


# ---------------------------------------------------------------------------------------------- shapes


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= MESSAGE_MAX_CHARS else shown[: MESSAGE_MAX_CHARS - 3] + "..."


def _walk(shape: Any) -> Iterator[tuple[dict[str, Any], int]]:
    """Every object in `shape` with its depth (the top is 0), without recursion."""
    stack: list[tuple[Any, int]] = [(shape, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            yield item, depth
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _check_object(node: dict[str, Any], depth: int) -> None:
    """One object of a JSON Schema: local references, no nested `$id`, RE2 patterns."""
    for key in REF_KEYS:
        ref = node.get(key)
        if isinstance(ref, str) and (not ref.startswith("#") or len(ref) > REF_MAX_CHARS):
            raise ShapeError(f"{key} {_short(ref)} is not allowed: only references inside the shape (`#...`, "
                             f"at most {REF_MAX_CHARS} characters) are; nothing is ever fetched")  # fmt: skip
    identifier = node.get("$id")
    if depth > 0 and isinstance(identifier, str) and not identifier.startswith("#"):
        raise ShapeError(f"$id {_short(identifier)} is only allowed at the top of the shape")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        compile_pattern(pattern)
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict):
        for key in patterns:
            compile_pattern(key)


def _resolver_for(shape: dict[str, Any], cls: Any) -> Any:
    """A resolver rooted at the shape, its anchors crawled once (not at every lookup), refusing the rest."""
    resource = referencing.jsonschema.specification_with(cls.ID_OF(cls.META_SCHEMA)).create_resource(shape)
    uri = resource.id() or ""
    return NO_RETRIEVAL.with_resource(uri, resource).crawl().resolver(base_uri=uri)


def safe_validator(shape: dict[str, Any]) -> Any:
    """A validator of `shape` that runs no tenant code whatever the shape holds (RE2, no retrieval, no
    formats, charged to the budget of `_with_budget`), without checking the shape first."""
    cls = SAFE_VALIDATORS.get(_dialect(shape.get("$schema")), DEFAULT_VALIDATOR)
    return cls(shape, format_checker=None, _resolver=_resolver_for(shape, cls))


def _validator_class(shape: dict[str, Any]) -> Any:
    dialect = shape.get("$schema")
    if dialect is None:
        return DEFAULT_VALIDATOR
    cls = SAFE_VALIDATORS.get(_dialect(dialect))
    if cls is None:
        raise ShapeError(f"$schema {_short(dialect)} is not a JSON Schema dialect Parley knows; use one of "
                         f"{', '.join(sorted(SAFE_VALIDATORS))} or leave it out (2020-12)")  # fmt: skip
    return cls


def _with_budget(run: Callable[[], Any]) -> Any:
    token = _budget.set([WORK_BUDGET])
    try:
        return run()
    finally:
        _budget.reset(token)


def _check_schema(shape: dict[str, Any]) -> Any:
    """The validator for a JSON Schema shape, after checking it is one; ShapeError when not."""
    for node, depth in _walk(shape):
        _check_object(node, depth)
    cls = _validator_class(shape)
    meta = cls(cls.META_SCHEMA, format_checker=None, registry=NO_RETRIEVAL)
    try:
        problem = _with_budget(lambda: best_match(meta.iter_errors(shape)))
    except (_WorkExceeded, RecursionError):
        raise ShapeError("the response_shape is too complex to check") from None
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "the top level"
        raise ShapeError(f"the response_shape is not a valid JSON Schema: at {where}: {_cut(problem.message)}")
    validator = safe_validator(shape)
    for node, _ in _walk(shape):
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                validator._resolver.lookup(ref)
            except Exception:  # Unresolvable, or a pointer referencing cannot read
                raise ShapeError(f"$ref {_short(ref)} points to nothing in the shape") from None
    return validator


def check_shape(shape: Any) -> Any:
    """`shape` unchanged when Parley can hold and apply it; ShapeError (a ValueError) saying why not."""
    if shape is None:
        return None
    if isinstance(shape, str):
        size = len(shape.encode("utf-8", "surrogatepass"))
        if size > SHAPE_MAX_BYTES:
            raise ShapeError(f"the response_shape is longer than {SHAPE_MAX_BYTES} bytes ({size})")
        return shape
    if not isinstance(shape, dict):
        raise ShapeError("the response_shape is a JSON object or a text")
    check_json(shape, max_depth=SHAPE_MAX_DEPTH, max_bytes=SHAPE_MAX_BYTES, what="the response_shape")
    if is_json_schema(shape):
        try:
            _check_schema(shape)
        except ShapeError:
            raise
        except Exception as error:  # pydantic turns only ValueError into a 422: nothing else may escape
            log.warning("response_shape could not be checked: %r", error)
            raise ShapeError("the response_shape could not be checked as a JSON Schema") from None
    return shape


@functools.lru_cache(maxsize=64)
def _compiled(shape_json: str) -> Any:
    """The checked validator of a shape, once per shape (the key is its canonical JSON)."""
    shape = json.loads(shape_json)
    check_json(shape, max_depth=SHAPE_MAX_DEPTH, max_bytes=SHAPE_MAX_BYTES, what="the response_shape")
    return _check_schema(shape)


def _cut(message: str) -> str:
    """`message` cut in its middle: jsonschema quotes the value first and says what is wrong at the end."""
    if len(message) <= MESSAGE_MAX_CHARS:
        return message
    half = (MESSAGE_MAX_CHARS - 5) // 2
    return f"{message[:half]} ... {message[-half:]}"


def validator_for(shape: dict[str, Any]) -> Any:
    """The safe validator of a JSON Schema shape (cached); AnswerError when the shape cannot be applied,
    e.g. one stored before these checks existed."""
    try:
        if json_depth(shape, SHAPE_MAX_DEPTH) > SHAPE_MAX_DEPTH:
            raise ShapeError(f"the response_shape nests deeper than {SHAPE_MAX_DEPTH} levels")
        return _compiled(json.dumps(shape, sort_keys=True, ensure_ascii=False, allow_nan=False))
    except (ShapeError, ValueError, TypeError, RecursionError) as error:
        raise AnswerError(f"the agent's response_shape cannot be applied ({_cut(str(error))})") from None


def validate_answer(shape: dict[str, Any], answer: Any) -> None:
    """Check `answer` against a JSON Schema shape within the work budget; AnswerError when it does not fit.

    Raises nothing else: whatever the shape or the answer holds is an AnswerError, never a crash."""
    validator = validator_for(shape)
    found: list[ValidationError] = []
    try:
        _with_budget(lambda: found.extend(itertools.islice(validator.iter_errors(answer), ERRORS_SHOWN)))
    except _WorkExceeded:
        if not found:
            raise AnswerError("checking it against the response_shape needs too much work") from None
    except RecursionError:
        raise AnswerError("the response_shape refers to itself without end") from None
    except referencing.exceptions.Unresolvable as error:
        raise AnswerError(f"the response_shape has a reference that cannot be resolved ({_cut(str(error))})") from None
    except (ShapeError, exceptions.SchemaError, exceptions.UnknownType) as error:
        raise AnswerError(f"the agent's response_shape cannot be applied ({_cut(str(error))})") from None
    except Exception as error:  # a shape stored before the checks may hold anything; never crash the turn
        log.warning("response_shape could not be applied: %r", error)
        raise AnswerError("the agent's response_shape cannot be applied") from None
    problem = best_match(found)
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "the top level"
        raise AnswerError(f"at {where}: {_cut(problem.message)}")


# ---------------------------------------------------------------------------------------------- answers


def load_answer(text: str) -> Any:
    """A model's answer parsed as JSON within ANSWER_MAX_BYTES and ANSWER_MAX_DEPTH, lone surrogates
    replaced; AnswerError otherwise."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > ANSWER_MAX_BYTES:
        raise AnswerError(f"it is larger than {ANSWER_MAX_BYTES} bytes ({size})")
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnswerError(f"it is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise AnswerError(f"it nests deeper than {ANSWER_MAX_DEPTH} levels") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise AnswerError(f"it is not valid JSON ({_cut(str(error))})") from None
    if json_depth(answer, ANSWER_MAX_DEPTH) > ANSWER_MAX_DEPTH:
        raise AnswerError(f"it nests deeper than {ANSWER_MAX_DEPTH} levels")
    return clean_json(answer)
