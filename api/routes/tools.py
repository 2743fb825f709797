"""`/api/v1/tools`: the tools this deployment offers, which agents may name in `tools`.

The router's lifespan loads the tools when the web process starts, so a tool module that fails to
import stops the process at start with its name, instead of failing agent requests later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, Field

from parley.tools import load_registry

from ..deps import Runtime, get_tenant
from ..errors import documented

log = logging.getLogger("parley.api")


@asynccontextmanager
async def load_tools_at_start(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan (FastAPI nests an included router's), once `app.state.rt` exists."""
    registry = load_registry(app.state.rt.settings)
    log.info("tools: %s", ", ".join(registry.names()))
    yield


router = APIRouter(prefix="/api/v1/tools", tags=["tools"], dependencies=[Depends(get_tenant)],
                   responses=documented(401, 503), lifespan=load_tools_at_start)  # fmt: skip


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
