"""`parley usage` as the installed command against the real stack: a table by day, agent or session with the
cost in the service's currency, `--json`, `--limit`, and exit code 1 for a range the service refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration.test_cli import AGENT_YAML, cli_env, run

PRICED = {"PARLEY_MODEL_PRICES": "gpt-4o-mini=0.15/0.60", "PARLEY_CURRENCY": "EUR"}


def test_usage_command(stack: Any, tmp_path: Path) -> None:
    stack.start_web(env=PRICED)
    stack.start_workers(env=PRICED)
    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.yaml").write_text(AGENT_YAML)
    run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml"))
    for session_id, prompt in (("s1", 1000), ("s2", 2000)):
        stack.model_server.control("script", [{"reply": "fine", "usage": {"prompt_tokens": prompt,
                                                                           "completion_tokens": 100}}])
        run(env, "chat", "--session", session_id, "--message", "hello")
    today = datetime.now(UTC).date().isoformat()

    table = run(env, "usage").stdout.splitlines()
    assert table[0].split() == ["DAY", "TURNS", "PROMPT", "COMPLETION", "CACHED", "COST", "(EUR)"]
    cost = f"{(3000 * 0.15 + 200 * 0.60) / 1_000_000:.6f}"
    assert table[1].split() == [today, "2", "3000", "200", "0", cost]
    assert table[2].split() == ["total", "2", "3000", "200", "0", cost]

    by_agent = run(env, "usage", "--group-by", "agent").stdout.splitlines()
    assert by_agent[0].split()[:2] == ["AGENT", "NAME"] and by_agent[1].split()[1:3] == ["Chef", "2"]
    sessions = json.loads(run(env, "usage", "-g", "session", "--since", today, "--json").stdout)
    assert [(row["key"], row["prompt_tokens"]) for row in sessions["data"]] == [("s1", 1000), ("s2", 2000)]
    assert sessions["currency"] == "EUR" and sessions["total"]["turns"] == 2
    one = json.loads(run(env, "usage", "-g", "session", "--limit", "1", "--json").stdout)
    assert [row["key"] for row in one["data"]] == ["s1"] and one["next_cursor"] == "s1"

    run(env, "usage", "--since", "2020-01-01", "--until", "2022-01-01", code=1)  # more than 366 days: 422
    run(env, "usage", "--since", "someday", code=1)
    run(env, "usage", "--group-by", "tenant", code=2)
