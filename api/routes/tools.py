"""`/api/v1/tools`: the tools this deployment offers, which agents may name in `tools`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from parley.shared.tools import load_registry

from ..deps import Runtime, get_tenant
from ..errors import documented

router = APIRouter(prefix="/api/v1/tools", tags=["tools"], dependencies=[Depends(get_tenant)],
                   responses=documented(401, 503))  # fmt: skip


class ToolPublic(BaseModel):
    """One tool as the model is told about it."""

    name: str = Field(..., examples=["calculator"])
    description: str = Field(..., examples=["Evaluate an arithmetic expression exactly."])
    parameters: dict[str, Any] = Field(
        ..., description="JSON Schema of the tool's arguments.",
        examples=[{"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}],
    )  # fmt: skip


@router.get("", response_model=list[ToolPublic])
def list_tools(rt: Runtime) -> list[ToolPublic]:
    """Every tool agents may name, by name, with the JSON Schema of its arguments."""
    return [ToolPublic.model_validate(spec) for spec in load_registry(rt.settings).describe()]
