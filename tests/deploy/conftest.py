"""Print why a deploy test was skipped (no Docker daemon, no `docker compose`) at the end of the run,
so a CI log says which checks did not run here and why, without `-rs`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if HERE in Path(str(report.fspath)).resolve().parents]  # fmt: skip
    if not skipped:
        return
    terminalreporter.section("deploy checks skipped here")
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"{report.nodeid}: {reason}")
