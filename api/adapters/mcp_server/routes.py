"""The protocol's routes: parse, call the turn service (api/service/), shape the answer (translate.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
