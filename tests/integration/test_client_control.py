"""The SDK and the CLI over the other routes of the contract's "Conversation control" (fork and regenerate,
webhooks, schedules), on the real stack."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from parley.client import NotFoundError, Parley, ValidationError
from tests.harness import free_port
from tests.integration.test_cli import cli_env, run

LOOPBACK = {"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}


def test_fork_and_regenerate_through_the_sdk_and_the_cli(stack: Any, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    with Parley(stack.web_url, stack.api_key) as client:
        client.agents.create("Chef", first_message="Hello, I am your chef.", model="test-model")
        client.chat("basil", session_id="s")
        client.chat("tomatoes", session_id="s")
        branch = client.sessions.fork("s", "msg_2", new_session_id="b")
        assert (branch.session_id, branch.agent_name, branch.message_count) == ("b", "Chef", 3)
        assert [m.content for m in client.sessions.messages("b")][1] == "basil"

        first = client.sessions.messages("s")[-1]
        stack.model_server.control("script", [{"reply": "another answer"}])
        again = client.chat(session_id="s", regenerate=True)
        assert again.response == "another answer"
        shown = client.sessions.messages("s")
        assert shown[-1].content == "another answer" and first.id not in [m.id for m in shown]
        assert first.id in [m.id for m in client.sessions.messages("s", include_replaced=True)]
        with pytest.raises(NotFoundError):
            client.sessions.fork("nope", "msg_0")

    forked = json.loads(run(env, "sessions", "fork", "s", "--at", "msg_0", "--as", "c", "--json").stdout)
    assert forked["session_id"] == "c" and forked["message_count"] == 1
    assert "continuing session c" in run(env, "chat", "-a", "Chef", "-m", "hi").stderr  # the fork is the last one
    stack.model_server.control("script", [{"reply": "regenerated"}])
    assert run(env, "chat", "-s", "c", "--regenerate").stdout.strip() == "regenerated"
    run(env, "sessions", "fork", "nope", "--at", "msg_0", code=4)


def test_webhooks_through_the_sdk_and_the_cli(stack: Any, tmp_path: Path) -> None:
    stack.start_web(env=LOOPBACK)
    stack.start_workers(env=LOOPBACK)
    env = cli_env(stack, tmp_path)
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: deliveries stay pending or fail
    with Parley(stack.web_url, stack.api_key) as client:
        client.agents.create("Chef", model="test-model")
        hook = client.webhooks.create(url, events=["turn.finished"])
        assert hook.secret and hook.events == ["turn.finished"] and hook.url == url
        assert [(h.id, h.secret) for h in client.webhooks.list()] == [(hook.id, None)]
        assert client.webhooks.get(hook.id).url == url
        answer = client.chat("hello", session_id="w")
        deadline = time.monotonic() + 20
        while not (deliveries := client.webhooks.deliveries(hook.id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [(d.type, d.job_id) for d in deliveries] == [("turn.finished", answer.job_id)]
        with pytest.raises(ValidationError):
            client.webhooks.create(url, events=["turn.started"])

        created = json.loads(run(env, "webhooks", "create", url, "--event", "turn.failed", "--json").stdout)
        assert created["secret"] and created["events"] == ["turn.failed"]
        assert created["id"] in run(env, "webhooks", "list").stdout
        assert json.loads(run(env, "webhooks", "show", created["id"], "--json").stdout)["url"] == url
        listed = json.loads(run(env, "webhooks", "deliveries", hook.id, "--json").stdout)
        assert [d["job_id"] for d in listed] == [answer.job_id]
        run(env, "webhooks", "create", url, "--event", "turn.started", code=2)  # not one of the four
        assert f"deleted webhook {created['id']}" in run(env, "webhooks", "delete", created["id"]).stdout
        run(env, "webhooks", "show", created["id"], code=4)
        client.webhooks.delete(hook.id)
        assert client.webhooks.list() == []


def test_schedules_through_the_sdk_and_the_cli(stack: Any, tmp_path: Path) -> None:
    stack.start_web()
    stack.start_workers()
    env = cli_env(stack, tmp_path)
    with Parley(stack.web_url, stack.api_key) as client:
        chef = client.agents.create("Chef", model="test-model")
        every = client.schedules.create("Chef", "tick", interval_s=1, session_id="ticks")
        assert every.agent_id == chef.id and every.interval_s == 1 and every.next_run_at
        daily = client.schedules.create("Chef", "menu", cron="0 8 * * *", timezone="Europe/Paris")
        assert {s.id for s in client.schedules.list()} == {every.id, daily.id}
        assert client.schedules.get(daily.id).cron == "0 8 * * *"
        deadline = time.monotonic() + 20
        while not client.schedules.get(every.id).last_job_id and time.monotonic() < deadline:
            time.sleep(0.2)
        job_id = client.schedules.get(every.id).last_job_id
        assert job_id and client.jobs.wait(job_id, timeout=30).session_id == "ticks"
        with pytest.raises(ValidationError):
            client.schedules.create("Chef", "both", cron="0 8 * * *", interval_s=60)
        client.schedules.delete(every.id)
        with pytest.raises(NotFoundError):
            client.schedules.get(every.id)

    created = json.loads(run(env, "schedules", "create", "-a", "Chef", "-m", "hourly", "--every", "3600",
                             "--json").stdout)  # fmt: skip
    assert created["interval_s"] == 3600
    assert created["id"] in run(env, "schedules", "list").stdout
    assert "cron:" in run(env, "schedules", "show", daily.id).stdout
    run(env, "schedules", "create", "-a", "Chef", "-m", "x", code=2)  # neither --cron nor --every
    run(env, "schedules", "create", "-a", "Chef", "-m", "x", "--cron", "* * * * *", "--every", "5", code=2)
    run(env, "schedules", "create", "-a", "Nobody", "-m", "x", "--every", "5", code=4)
    run(env, "schedules", "create", "-a", "Chef", "-m", "x", "--cron", "not cron", code=1)
    assert f"deleted schedule {created['id']}" in run(env, "schedules", "delete", created["id"]).stdout
    run(env, "schedules", "show", created["id"], code=4)
