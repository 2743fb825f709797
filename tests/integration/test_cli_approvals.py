"""`parley` and approvals end to end (issue 14): the installed command against the real stack. On a terminal
`parley chat` shows the waiting call and asks `Run it? [y/N]`; without one it exits 7 and leaves the turn
waiting for `parley jobs approve|deny`; `--deny-all` decides without asking."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.helpers import client, wait_job
from tests.integration.test_cli import Terminal, cli_env, parley_bin, run

pytestmark = pytest.mark.integration

AGENT = {"name": "Chef", "context": "You are a chef.", "first_message": "Hello, I am your chef.",
         "tools": ["calculator"], "approval": ["*"]}  # fmt: skip
CALL = {"reply": "Let me work it out.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}


def _setup(stack, tmp_path: Path, *replies: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The stack, the agent, and the model's script: for each reply, a calculator call then that reply."""
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.json").write_text(json.dumps(AGENT))
    run(env, "agents", "create", "-f", str(tmp_path / "agent.json"))
    stack.model_server.control("script", [step for reply in replies for step in (CALL, {"reply": reply})])
    return env


def test_on_a_terminal_chat_asks_and_runs_the_approved_call(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = _setup(stack, tmp_path, "It is 42.", "Fine, no sums.")
    terminal = Terminal([parley_bin(), "chat", "--agent", "Chef"], env)
    try:
        terminal.expect("you> ")
        terminal.send("What is six times seven?")
        terminal.expect("? calculator waits for your approval")
        terminal.expect('"expression": "6*7"')
        terminal.expect("Run it? [y/N]")
        terminal.send("y")
        terminal.expect("[approved: calculator]")
        terminal.expect("← calculator: 42")
        terminal.expect("It is 42.")
        terminal.expect("you> ")
        terminal.send("And now?")
        terminal.expect("Run it? [y/N]")
        terminal.send("n")
        terminal.expect("Why not?")
        terminal.send("do it in your head")
        terminal.expect("[denied: calculator]")
        terminal.expect("Fine, no sums.")
        terminal.expect("you> ")
        terminal.send("/quit")
        assert terminal.wait() == 0, terminal.seen
        assert "Traceback" not in terminal.seen
    finally:
        terminal.close()
    told = [m for m in stack.model_server.control("requests")[3]["body"]["messages"] if m["role"] == "tool"]
    assert "denied" in told[-1]["content"] and "do it in your head" in told[-1]["content"]


def test_without_a_terminal_the_turn_waits_for_jobs_approve(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = _setup(stack, tmp_path, "It is 42.")
    waiting = run(env, "chat", "-m", "What is six times seven?", code=7)
    found = re.search(r"job (\S+) waits for your approval of calculator \(call (\S+)\)", waiting.stderr)
    assert found, waiting.stderr
    job_id, call_id = found.groups()
    assert f"`parley jobs approve {job_id} {call_id}`" in waiting.stderr and "--approve-all" in waiting.stderr
    shown = json.loads(run(env, "jobs", "show", job_id, "--json").stdout)
    assert shown["status"] == "waiting" and shown["pending"][0]["call_id"] == call_id
    run(env, "jobs", "deny", job_id, "call_unknown", code=4)
    assert f"approved call {call_id} of job {job_id}" in run(env, "jobs", "approve", job_id, call_id).stdout
    run(env, "jobs", "approve", job_id, call_id, code=1)  # decided already: 409
    with client(stack.web_url, stack.api_key) as http:
        assert wait_job(http, job_id)["result"]["response"] == "It is 42."
    tail = run(env, "jobs", "tail", job_id)
    assert "waits for your approval" in tail.stderr and "It is 42." in tail.stdout


def test_deny_all_decides_without_asking(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = _setup(stack, tmp_path, "Fine, no sums.")
    done = run(env, "chat", "-m", "What is six times seven?", "--deny-all")
    assert done.stdout.strip().splitlines()[-1] == "Fine, no sums."  # after the step's thought (its deltas)
    assert "[denied: calculator]" in done.stderr and "Run it?" not in done.stderr
    run(env, "chat", "-m", "x", "--deny-all", "--approve-all", code=2)
