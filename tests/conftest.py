"""Shared pytest configuration for all of Parley's tests (keep it minimal).

Tests under ``tests/integration/`` are marked ``integration`` automatically, so
``pytest -m "not integration"`` runs only the fast in-process tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
