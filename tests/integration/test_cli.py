"""The `parley` command end to end: the installed script as a subprocess against the real stack."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.harness import free_port
from tests.integration.helpers import client, wait_job

AGENT_YAML = """\
name: Chef
description: Mediterranean recipes
context: You are a chef.
first_message: Hello, I am your chef.
instructions: Keep it short.
"""


def parley_bin() -> str:
    found = shutil.which("parley", path=str(Path(sys.executable).parent))
    assert found, f"the parley command is not installed next to {sys.executable}: pip install -e ."
    return found


def cli_env(stack: Any, tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PARLEY_URL": stack.web_url if stack.webs else "",
        "PARLEY_API_KEY": stack.api_key,
        "PARLEY_STATE": str(tmp_path / "state.json"),
        "HOME": str(tmp_path),
        "NO_COLOR": "1",
        "TERM": "dumb",
        "COLUMNS": "200",
    })  # fmt: skip
    env.update(overrides)
    return env


def run(env: dict[str, str], *args: str, code: int = 0, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([parley_bin(), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, f"parley {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_agents_chat_memory_and_sessions(stack, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.yaml").write_text(AGENT_YAML)

    # agents
    assert "created agent Chef" in run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml")).stdout
    listed = json.loads(run(env, "agents", "list", "--json").stdout)
    assert [a["name"] for a in listed] == ["Chef"] and listed[0]["first_message"] == "Hello, I am your chef."
    shown = run(env, "agents", "show", "Chef").stdout
    assert "context:" in shown and "You are a chef." in shown and "Keep it short." in shown
    assert json.loads(run(env, "agents", "show", "Chef", "--json").stdout)["id"] == listed[0]["id"]
    assert "Chef" in run(env, "agents", "list").stdout.splitlines()[1]
    run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml"), code=1)  # the name is taken: 409

    # a one-shot chat (the only agent is picked), then a second run continues the same session
    first = run(env, "chat", "--message", "I like basil")
    assert first.stdout.strip() == "echo: I like basil"
    assert "new session" in first.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    [profile] = state["profiles"].values()
    [session_id] = profile["last_session"].values()
    second = run(env, "chat", "--agent", "Chef", "--message", "and tomatoes")
    assert f"continuing session {session_id} with Chef" in second.stderr
    assert second.stdout.strip() == "echo: and tomatoes | earlier: I like basil"
    fresh = run(env, "chat", "--agent", "Chef", "--new", "-m", "hello again")
    assert fresh.stdout.strip() == "echo: hello again" and session_id not in fresh.stderr

    # sessions
    sessions = json.loads(run(env, "sessions", "list", "--json").stdout)
    assert len(sessions) == 2 and session_id in {s["session_id"] for s in sessions}
    assert session_id in run(env, "sessions", "list", "--agent", "Chef").stdout
    show = run(env, "sessions", "show", session_id).stdout
    assert "message_count: 5" in show and "and tomatoes" in show
    markdown = run(env, "sessions", "export", session_id, "--format", "markdown").stdout
    assert markdown.startswith(f"# Session {session_id} with Chef")
    assert markdown.index("I like basil") < markdown.index("echo: and tomatoes | earlier: I like basil")
    assert markdown.count("## user") == 2 and markdown.count("## Chef") == 3
    exported = json.loads(run(env, "sessions", "export", session_id).stdout)
    assert [m["role"] for m in exported["messages"]] == ["assistant", "user", "assistant", "user", "assistant"]
    assert exported["session"]["session_id"] == session_id
    assert f"deleted session {session_id}" in run(env, "sessions", "delete", session_id).stdout
    run(env, "sessions", "show", session_id, code=4)

    # with two agents and no terminal to ask on, chat wants --agent
    (tmp_path / "second.json").write_text(json.dumps({"name": "Baker", "context": "You bake."}))
    run(env, "agents", "create", "-f", str(tmp_path / "second.json"))
    assert "--agent" in run(env, "chat", "-m", "hi", code=2).stderr

    assert "deleted agent Chef" in run(env, "agents", "delete", "Chef").stdout
    assert [a["name"] for a in json.loads(run(env, "agents", "list", "--json").stdout)] == ["Baker"]
    run(env, "agents", "show", "Chef", code=4)


def test_jobs_show_tail_and_cancel(stack, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.yaml").write_text(AGENT_YAML)
    run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml"))
    with client(stack.web_url, stack.api_key) as http:
        job_id = http.post("/api/v1/chat/jobs", json={"message": "tail me", "session_id": "j"}).json()["job_id"]
        tail = run(env, "jobs", "tail", job_id)
        assert "echo: tail me" in tail.stdout and "[started]" in tail.stderr
        shown = json.loads(run(env, "jobs", "show", job_id, "--json").stdout)
        assert shown["status"] == "finished" and shown["result"]["response"] == "echo: tail me"
        assert "finished" in run(env, "jobs", "show", job_id).stdout
        lines = [json.loads(line) for line in run(env, "jobs", "tail", job_id, "--json").stdout.splitlines()]
        assert lines[0]["type"] == "session" and lines[-1]["type"] == "done"

        stack.model_server.control("script", [{"hang": True}])
        hung = http.post("/api/v1/chat/jobs", json={"message": "hang", "session_id": "h"}).json()["job_id"]
        deadline = time.monotonic() + 20
        while stack.model_server.control("stats")["open_streams"] < 1:
            assert time.monotonic() < deadline, "the hanging turn never reached the model"
            time.sleep(0.05)
        assert f"canceled job {hung}" in run(env, "jobs", "cancel", hung).stdout
        assert wait_job(http, hung)["status"] == "canceled"
        failed = run(env, "jobs", "tail", hung, code=6)
        assert "the turn failed" in failed.stderr and "canceled" in failed.stderr
        assert "had already ended" in run(env, "jobs", "cancel", hung).stdout
        run(env, "jobs", "show", "job_unknown", code=4)


def test_exit_codes_and_one_line_errors(stack, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)

    wrong = run(cli_env(stack, tmp_path, PARLEY_API_KEY="wrong-key"), "agents", "list", code=3)
    assert wrong.stderr.startswith("parley: authentication failed") and len(wrong.stderr.splitlines()) == 1

    url = f"http://127.0.0.1:{free_port()}"
    down = run(env, "--url", url, "sessions", "list", code=5)
    assert down.stderr.strip() == (f"parley: cannot reach {url} (connection refused); is the server running? "
                                   "set PARLEY_URL or --url")  # fmt: skip
    run(cli_env(stack, tmp_path, PARLEY_URL=url), "chat", "-m", "hi", code=5)

    unknown = run(env, "chat", "--agent", "Nobody", "--message", "hi", code=4)
    assert unknown.stderr.strip() == "parley: no agent 'Nobody' (see `parley agents list`)"
    no_agents = run(env, "chat", "-m", "hi", code=1)
    assert "no agents yet" in no_agents.stderr
    run(env, "sessions", "export", "x", "--format", "pdf", code=2)
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    run(env, "agents", "create", "-f", str(tmp_path / "bad.yaml"), code=2)


class Terminal:
    """A process on a pseudo-terminal: `expect` waits for text, `send` types a line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                        start_new_session=True)  # fmt: skip
        os.close(slave)
        self.seen = ""
        self.pos = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the process closed the terminal
            return False
        if not data:
            return False
        self.seen += data.decode("utf-8", "replace")
        return True

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.seen.find(text, self.pos)) < 0:
            left = deadline - time.monotonic()
            assert left > 0 and self._read(min(left, 0.2)), f"{text!r} never came; the terminal shows:\n{self.seen}"
        self.pos = found + len(text)

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def wait(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        return self.process.wait(timeout=1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def test_interactive_chat_on_a_terminal(stack, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.yaml").write_text(AGENT_YAML)
    run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml"))
    terminal = Terminal([parley_bin(), "chat", "--agent", "Chef"], env)
    try:
        terminal.expect("new session")
        terminal.expect("Chef> Hello, I am your chef.")
        terminal.expect("you> ")
        terminal.send("I like basil")
        terminal.expect("Chef> echo: I like basil")
        terminal.expect("you> ")
        terminal.send("and tomatoes")
        terminal.expect("Chef> echo: and tomatoes | earlier: I like basil")
        terminal.expect("you> ")
        terminal.send("/quit")
        assert terminal.wait() == 0, terminal.seen
        assert "Traceback" not in terminal.seen
    finally:
        terminal.close()
