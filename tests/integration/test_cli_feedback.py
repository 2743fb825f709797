"""`parley feedback up|down|clear|list`, `parley chat --on-busy` and the feedback in `sessions export`, as the
installed command against the real stack, with the exit codes of docs/cli.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_cli import AGENT_YAML, cli_env, run


def test_feedback_commands(stack: Any, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.yaml").write_text(AGENT_YAML)
    run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml"))
    answer = run(env, "chat", "--session", "s1", "--message", "I like basil", "--on-busy", "reject")
    assert answer.stdout.strip() == "echo: I like basil"
    run(env, "chat", "--session", "s1", "--message", "x", "--on-busy", "sometimes", code=2)
    run(env, "chat", "--session", "s1", "--message", "x", "--regenerate", code=2)

    rated = run(env, "feedback", "up", "s1", "msg_2", "--comment", "tasty")
    assert rated.stdout.strip() == "rated msg_2 of session s1 up"
    shown = json.loads(run(env, "feedback", "down", "s1", "msg_2", "--json").stdout)
    assert shown["id"] == "msg_2" and shown["feedback"]["rating"] == "down" and shown["feedback"]["comment"] is None
    run(env, "feedback", "up", "s1", "msg_0")

    listed = run(env, "feedback", "list").stdout.splitlines()
    assert listed[0].split() == ["RATING", "SESSION", "MESSAGE", "RATED", "COMMENT", "ANSWER"]
    assert [line.split()[:3] for line in listed[1:]] == [["up", "s1", "msg_0"], ["down", "s1", "msg_2"]]
    as_json = json.loads(run(env, "feedback", "list", "--agent", "Chef", "--limit", "1", "--json").stdout)
    assert [(i["message_id"], i["content"]) for i in as_json] == [("msg_0", "Hello, I am your chef.")]
    assert json.loads(run(env, "feedback", "list", "--since", "2999-01-01", "--json").stdout) == []

    markdown = run(env, "sessions", "export", "s1", "--format", "markdown").stdout
    assert "_(rated down · " in markdown and "_(rated up · " in markdown
    exported = json.loads(run(env, "sessions", "export", "s1").stdout)
    assert exported["messages"][2]["feedback"]["rating"] == "down"

    assert "cleared the feedback on msg_2" in run(env, "feedback", "clear", "s1", "msg_2").stdout
    assert [i["message_id"] for i in json.loads(run(env, "feedback", "list", "--json").stdout)] == ["msg_0"]

    run(env, "feedback", "up", "s1", "msg_1", code=1)  # the user's message: 422
    run(env, "feedback", "up", "s1", "msg_9", code=4)
    run(env, "feedback", "up", "nope", "msg_2", code=4)
    run(env, "feedback", "up", "s1", "msg_2", "--comment", "x" * 2001, code=1)
    run(env, "feedback", "list", "--since", "someday", code=1)
    run(env, "feedback", "list", "--agent", "Nobody", code=4)
    run(cli_env(stack, tmp_path, PARLEY_API_KEY="wrong"), "feedback", "list", code=3)
