"""A2A push notifications through the official a2a-sdk client, on real web and worker processes, with a real
receiver on 127.0.0.1 (tests/webhook_receiver.py): a config set on a waiting task (1.0) brings the task when its
turn ends, as a StreamResponse with the client's token; a config on a 0.3 `message/send` brings the 0.3 Task; the
config methods read, list and delete configs, and see only the caller's tasks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.compat.v0_3 import types as v03
from a2a.helpers.proto_helpers import get_data_parts
from a2a.types.a2a_pb2 import (
    AgentCard,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    StreamResponse,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from google.protobuf.json_format import ParseDict

from tests.harness import wait_until
from tests.integration.helpers import client, create_agent
from tests.integration.test_a2a_adapter import BUMP_THEN_ANSWER, _legacy, _send, _text, run
from tests.webhook_receiver import Receiver

ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools", "PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1",
       "PARLEY_WEBHOOK_BACKOFF_S": "0.2", "PARLEY_WEBHOOK_BACKOFF_CAP_S": "1"}  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.down()


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


@asynccontextmanager
async def _client(stack: Any, agent: str, *, legacy: bool = False, tenant: str = "alice",
                  push: TaskPushNotificationConfig | None = None) -> AsyncIterator[Client]:  # fmt: skip
    async with httpx.AsyncClient(headers=stack.headers(tenant), timeout=30) as http:
        card: AgentCard = await A2ACardResolver(http, f"{stack.web_url}/a2a/{agent}").get_agent_card()
        assert card.capabilities.push_notifications
        config = ClientConfig(streaming=False, httpx_client=http, push_notification_config=push)
        sdk = ClientFactory(config).create(_legacy(card) if legacy else card)
        try:
            yield sdk
        finally:
            await sdk.close()


def test_a_config_set_on_a_waiting_task_brings_the_task_when_it_ends(stack: Any, receiver: Receiver) -> None:
    stack.start_web(env=ENV)
    stack.start_workers(env=ENV)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, name="Bumper", tools=["bump"], approval=["bump"])
    _script(stack, *BUMP_THEN_ANSWER)
    state: dict[str, Any] = {}

    async def scenario() -> None:
        async with _client(stack, "Bumper") as sdk:
            task = await _send(sdk, _text("bump it"))
            assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
            state["task"] = task
            made = await sdk.create_task_push_notification_config(TaskPushNotificationConfig(
                task_id=task.id, id="mine", url=receiver.url, token="tok-1"))  # fmt: skip
            assert (made.task_id, made.id, made.url, made.token) == (task.id, "mine", receiver.url, "tok-1")
            got = await sdk.get_task_push_notification_config(GetTaskPushNotificationConfigRequest(
                task_id=task.id, id="mine"))  # fmt: skip
            assert got == made
            listed = await sdk.list_task_push_notification_configs(ListTaskPushNotificationConfigsRequest(
                task_id=task.id))  # fmt: skip
            assert list(listed.configs) == [made]
            with pytest.raises(InvalidParamsError):  # a private address the operator did not allow
                await sdk.create_task_push_notification_config(TaskPushNotificationConfig(
                    task_id=task.id, url="http://10.0.0.1/hook"))  # fmt: skip
            state["call_id"] = get_data_parts(task.status.message.parts)[0]["pending"][0]["call_id"]
        async with _client(stack, "Bumper", tenant="bob") as bob:  # another tenant's task is not there
            with pytest.raises(TaskNotFoundError):
                await bob.list_task_push_notification_configs(ListTaskPushNotificationConfigsRequest(
                    task_id=state["task"].id))  # fmt: skip

    with client(stack.web_url, "key-bob") as http:
        create_agent(http, name="Bumper")
    run(scenario)
    task_id = state["task"].id
    assert receiver.all() == []  # the config came after the wait began: nothing is sent for that
    with client(stack.web_url, stack.api_key) as http:
        decided = http.post(f"/api/v1/jobs/{task_id}/approvals", json={"call_id": state["call_id"], "approve": True})
        assert decided.status_code == 202
    wait_until(lambda: receiver.delivered(), timeout=20, message="the task's push notification")
    got = receiver.delivered()[0]
    assert got.headers["x-a2a-notification-token"] == "tok-1" and "parley-signature" not in got.headers
    update = ParseDict(got.event, StreamResponse())
    assert update.task.id == task_id and update.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "Done bumping." in json.dumps(got.event)

    async def delete() -> None:
        async with _client(stack, "Bumper") as sdk:
            await sdk.delete_task_push_notification_config(DeleteTaskPushNotificationConfigRequest(
                task_id=task_id, id="mine"))  # fmt: skip
            listed = await sdk.list_task_push_notification_configs(ListTaskPushNotificationConfigsRequest(
                task_id=task_id))  # fmt: skip
            assert list(listed.configs) == []

    run(delete)


def test_a_0_3_send_with_a_config_brings_the_0_3_task(stack: Any, receiver: Receiver) -> None:
    stack.start_web(env=ENV)
    stack.start_workers(env=ENV)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
    push = TaskPushNotificationConfig(url=receiver.url, token="tok-03")

    async def scenario() -> None:
        async with _client(stack, "Chef", legacy=True, push=push) as sdk:
            task = await _send(sdk, _text("I like figs"))  # message/send with configuration.pushNotificationConfig
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            wait_until(lambda: receiver.delivered(), timeout=20, message="the task's push notification")
            got = receiver.delivered()[0]
            assert got.headers["x-a2a-notification-token"] == "tok-03"
            sent = v03.Task.model_validate(got.event)
            assert sent.id == task.id and sent.status.state == v03.TaskState.completed
            assert got.event["kind"] == "task"
            listed = await sdk.list_task_push_notification_configs(ListTaskPushNotificationConfigsRequest(
                task_id=task.id))  # fmt: skip
            assert [(c.url, c.token, c.id) for c in listed.configs] == [(receiver.url, "tok-03", task.id)]

    run(scenario)
