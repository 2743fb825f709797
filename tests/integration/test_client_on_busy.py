"""`on_busy` through the SDK (`chat`, `chat_job`, `stream`) and `parley chat --on-busy`, on the real stack: `reject`
arrives as ConflictError `session_busy` (exit 1 from the CLI), `interrupt` cancels the running turn and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parley.client import ConflictError, Parley
from tests.integration.test_cli import cli_env, run


def test_on_busy_through_the_sdk_and_the_cli(stack: Any, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers(2)
    stack.model_server.control("script", [{"reply": "slow answer", "delay_ms": 4000}])
    with Parley(stack.web_url, stack.api_key) as client:
        client.agents.create("Chef", model="test-model")
        first = client.chat_job("first", session_id="b")
        with pytest.raises(ConflictError) as refused:
            client.chat("second", session_id="b", on_busy="reject")
        assert refused.value.code == "session_busy"
        busy = run(cli_env(stack, tmp_path), "chat", "-s", "b", "-m", "third", "--on-busy", "reject", code=1)
        assert "session_busy" in busy.stderr

        events = list(client.stream("instead", session_id="b", on_busy="interrupt"))
        answer = [event.content for event in events if event.type == "response"]
        assert answer and answer[0] is not None and answer[0].startswith("echo: instead")
        assert client.jobs.wait(first.job_id, timeout=30).status == "canceled"
        users = [m.content for m in client.sessions.messages("b") if m.role == "user"]
    assert users == ["instead"]  # the refused ones left nothing, the interrupted one committed nothing
