"""A tool's definition: its JSON Schema and argument validator, built from a typed Python function.

`build_tool(fn)` reads the signature: each parameter becomes a property (its type hint gives the
type, its default makes it optional), the docstring's first paragraph is the tool's description
and its Google-style `Args:` lines describe the parameters. A function whose one parameter is a
pydantic model takes that model's schema instead. A parameter annotated `ToolContext` is filled in
by the registry and never shown to the model.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import GenerateJsonSchema

from parley.tools.context import ToolContext

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Tool names OpenAI-compatible servers accept."""

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?|See Also):\s*$")
_ARG_LINE = re.compile(r"^(\s*)\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True)
class Tool:
    """One registered tool: the function, what the model is told about it, and how its arguments are checked."""

    name: str
    description: str
    fn: Callable[..., Any]
    arguments: type[BaseModel]
    """Validates the model's arguments (a model built from the signature, or the tool's own pydantic model)."""
    parameters: dict[str, Any]
    """JSON Schema of the arguments, as the model is given it."""
    fields: tuple[tuple[str, str], ...]
    """(field of `arguments`, parameter of `fn`) pairs; empty when `fn` takes the pydantic model itself."""
    model_param: str | None
    """The parameter receiving the validated pydantic model, when the tool takes one."""
    context_param: str | None
    """The parameter receiving the `ToolContext`, if any."""
    timeout_s: float | None
    """Longest the call may run; None: `PARLEY_TOOL_TIMEOUT_S`."""
    module: str
    """The module defining `fn` (the registry picks tools by module)."""

    def call(self, arguments: BaseModel, ctx: ToolContext) -> Any:
        """Run the function with validated `arguments` (and `ctx` where it asks for one)."""
        if self.model_param:
            kwargs: dict[str, Any] = {self.model_param: arguments}
        else:
            kwargs = {param: getattr(arguments, field) for field, param in self.fields}
        if self.context_param:
            kwargs[self.context_param] = ctx
        return self.fn(**kwargs)


class _NoFieldTitles(GenerateJsonSchema):
    """Leaves out pydantic's per-field `title`s: the property name says the same, in fewer tokens."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(schema_generator=_NoFieldTitles)
    schema.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The first paragraph (as one line) and the `Args:` descriptions of a Google-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line.strip()):
            break
        summary.append(line.strip())
    args: dict[str, str] = {}
    in_args, indent, current = False, 0, ""
    for line in lines:
        if _SECTION.match(line.strip()) and not line.startswith((" ", "\t")):
            in_args, current = line.strip().rstrip(":") in ("Args", "Arguments", "Parameters"), ""
            continue
        if not in_args or not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (not current or width <= indent):
            indent, current = width, match.group(2)
            args[current] = match.group(3).strip()
        elif current and width > indent:
            args[current] = f"{args[current]} {line.strip()}".strip()
    return " ".join(summary), args


def build_tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
               timeout_s: float | None = None) -> Tool:  # fmt: skip
    """The `Tool` for `fn`; raises TypeError for a function that cannot be one (told at import, not at call)."""
    tool_name = fn.__name__ if name is None else name
    if not NAME_PATTERN.match(tool_name):
        raise TypeError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'")
    if timeout_s is not None and timeout_s <= 0:
        raise TypeError(f"tool {tool_name!r}: timeout_s must be positive")
    summary, arg_docs = parse_docstring(fn.__doc__)
    tool_description = description or summary
    if not tool_description:
        raise TypeError(f"tool {tool_name!r} needs a description: give it a docstring or description=")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as error:  # a hint naming something undefined
        raise TypeError(f"tool {tool_name!r}: cannot resolve its type hints ({error})") from error

    context_param: str | None = None
    params: list[inspect.Parameter] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            raise TypeError(f"tool {tool_name!r}: parameter {param.name!r} must be an ordinary named parameter")
        if hints.get(param.name) is ToolContext:
            context_param = param.name
        else:
            params.append(param)

    if len(params) == 1 and _is_model(hints.get(params[0].name)):
        model: type[BaseModel] = hints[params[0].name]
        return Tool(name=tool_name, description=tool_description, fn=fn, arguments=model, parameters=json_schema(model),
                    fields=(), model_param=params[0].name, context_param=context_param, timeout_s=timeout_s,
                    module=fn.__module__)  # fmt: skip

    # Fields get neutral names and the parameters' names as aliases, so a parameter may be called
    # `json`, `schema` or `model_id` without shadowing BaseModel's own attributes.
    definitions: dict[str, Any] = {}
    fields: list[tuple[str, str]] = []
    for index, param in enumerate(params):
        field = f"p{index}"
        default = ... if param.default is inspect.Parameter.empty else param.default
        definitions[field] = (
            hints.get(param.name, Any),
            Field(default, alias=param.name, description=arg_docs.get(param.name)),
        )
        fields.append((field, param.name))
    arguments = create_model(  # type: ignore[call-overload]
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid", protected_namespaces=()), **definitions
    )
    return Tool(name=tool_name, description=tool_description, fn=fn, arguments=arguments,
                parameters=json_schema(arguments), fields=tuple(fields), model_param=None,
                context_param=context_param, timeout_s=timeout_s, module=fn.__module__)  # fmt: skip


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, BaseModel)
