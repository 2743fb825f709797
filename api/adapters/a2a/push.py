"""A2A push notification configs, translated: the four config methods' params in, Parley's subscriptions (kind
`a2a`, shared/store/webhooks.py) out, and back as A2A shows a config. No I/O here: routes.py stores and checks.

1.0 (`CreateTaskPushNotificationConfig`, `GetTaskPushNotificationConfig`, `ListTaskPushNotificationConfigs`,
`DeleteTaskPushNotificationConfig`) sends a flat `TaskPushNotificationConfig` `{taskId, id?, url, token?,
authentication?: {scheme, credentials?}}` and names one by `{taskId, id}`; 0.3 (`tasks/pushNotificationConfig/set`,
`/get`, `/list`, `/delete`) nests it: `{taskId, pushNotificationConfig: {id?, url, token?, authentication?:
{schemes, credentials?}}}` and names one by `{id: <task id>, pushNotificationConfigId}`. A config without an `id`
is named by its task's id (as the a2a-sdk's own server does). `SendMessage`'s `configuration` may carry one too
(1.0 `taskPushNotificationConfig`, 0.3 `pushNotificationConfig`): it is bound to the task the message makes.

What the worker POSTs to the config's URL, at each end of the task's turn and when it waits for input: the Task
(0.3) or `{"task": Task}` (1.0, a StreamResponse), with `X-A2A-Notification-Token: <token>` and, with
`authentication`, `Authorization: <scheme> <credentials>` (parley.shared.a2a_task.push_body, worker/webhooks.py).
Credentials are kept for that and never shown again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from parley.shared.store import webhooks as store
from parley.shared.store.webhooks import KIND_A2A, Webhook

from .translate import MAX_ID_CHARS, invalid_params, param, task_id_param

MAX_TOKEN_CHARS = 1024
MAX_CREDENTIAL_CHARS = 4096
SCHEME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")

METHODS = {
    "CreateTaskPushNotificationConfig": "set", "GetTaskPushNotificationConfig": "get",
    "ListTaskPushNotificationConfigs": "list", "DeleteTaskPushNotificationConfig": "delete",
    "tasks/pushNotificationConfig/set": "set", "tasks/pushNotificationConfig/get": "get",
    "tasks/pushNotificationConfig/list": "list", "tasks/pushNotificationConfig/delete": "delete",
}  # fmt: skip
"""Each config method, in both dialects, to what it does."""


@dataclass(frozen=True)
class PushConfig:
    """A config as the client sent it (its task may not exist yet: SendMessage's)."""

    config_id: str | None
    url: str
    token: str | None
    authorization: str | None
    """`<scheme> <credentials>`, sent as the Authorization header."""


def subscription_id(task_id: str, config_id: str) -> str:
    """The subscription of a config: the same for the same task and config id (a second `set` replaces it)."""
    return "a2a_" + hashlib.sha256(f"{task_id} {config_id}".encode()).hexdigest()[:32]


def _text(value: Any, name: str, most: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > most or any(ord(char) < 0x20 or ord(char) > 0x7E for char in value):
        raise invalid_params(f"{name} must be printable ASCII text of at most {most} characters")
    return value


def _authorization(value: Any, legacy: bool, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_params(f"{where}.authentication must be an object")
    if legacy:
        schemes = value.get("schemes")
        scheme = schemes[0] if isinstance(schemes, list) and schemes else None
    else:
        scheme = value.get("scheme")
    if not isinstance(scheme, str) or not scheme or len(scheme) > 64 or not set(scheme) <= SCHEME_CHARS:
        raise invalid_params(f"{where}.authentication needs a scheme (e.g. Bearer)")
    credentials = _text(value.get("credentials"), f"{where}.authentication.credentials", MAX_CREDENTIAL_CHARS)
    return f"{scheme} {credentials}" if credentials else None


def parse_config(value: Any, legacy: bool, where: str) -> PushConfig:
    """One config's fields (0.3's `PushNotificationConfig` or 1.0's `TaskPushNotificationConfig`)."""
    if not isinstance(value, dict):
        raise invalid_params(f"{where} must be an object")
    try:
        url = store.check_url(value.get("url"))  # type: ignore[arg-type]
    except ValueError as error:
        raise invalid_params(f"{where}.url: {error}") from None
    return PushConfig(config_id=_text(value.get("id"), f"{where}.id", MAX_ID_CHARS), url=url,
                      token=_text(value.get("token"), f"{where}.token", MAX_TOKEN_CHARS),
                      authorization=_authorization(value.get("authentication"), legacy, where))  # fmt: skip


def parse_set(params: dict[str, Any], legacy: bool) -> tuple[str, PushConfig]:
    """(task id, config) of a set / Create call."""
    task_id = _text(param(params, "taskId", "task_id"), "taskId", MAX_ID_CHARS)
    if task_id is None:
        raise invalid_params("taskId is required")
    if legacy:
        return task_id, parse_config(param(params, "pushNotificationConfig", "push_notification_config"), True,
                                     "pushNotificationConfig")  # fmt: skip
    return task_id, parse_config(params, False, "params")


def parse_ref(params: dict[str, Any], legacy: bool) -> tuple[str, str | None]:
    """(task id, config id or None) of a get, list or delete call."""
    if legacy:
        task_id = task_id_param(params)
        config_id = param(params, "pushNotificationConfigId", "push_notification_config_id")
    else:
        task_id = _text(param(params, "taskId", "task_id"), "taskId", MAX_ID_CHARS) or ""
        if not task_id:
            raise invalid_params("taskId is required")
        config_id = params.get("id")
    return task_id, _text(config_id, "the config id", MAX_ID_CHARS)


def from_send(params: dict[str, Any], legacy: bool) -> PushConfig | None:
    """The config a SendMessage's `configuration` carries, if any."""
    configuration = params.get("configuration")
    if not isinstance(configuration, dict):
        return None
    if legacy:
        value = param(configuration, "pushNotificationConfig", "push_notification_config")
        return None if value is None else parse_config(value, True, "configuration.pushNotificationConfig")
    value = param(configuration, "taskPushNotificationConfig", "task_push_notification_config")
    return None if value is None else parse_config(value, False, "configuration.taskPushNotificationConfig")


def subscription(task_id: str, config: PushConfig, legacy: bool, created_at: int) -> Webhook:
    """The config as Parley keeps it: a subscription to every end of the task's turn, in the client's dialect."""
    config_id = config.config_id or task_id
    return Webhook(id=subscription_id(task_id, config_id), url=config.url, events=list(store.EVENTS), secret="",
                   created_at=created_at, kind=KIND_A2A, job_id=task_id, token=config.token, config_id=config_id,
                   authorization=config.authorization, legacy=legacy)  # fmt: skip


def render(hook: Webhook, legacy: bool) -> dict[str, Any]:
    """A config as A2A shows it (credentials never)."""
    config: dict[str, Any] = {"id": hook.config_id or hook.job_id, "url": hook.url}
    if hook.token:
        config["token"] = hook.token
    scheme = hook.authorization.partition(" ")[0] if hook.authorization else None
    if legacy:
        if scheme:
            config["authentication"] = {"schemes": [scheme]}
        return {"taskId": hook.job_id, "pushNotificationConfig": config}
    if scheme:
        config["authentication"] = {"scheme": scheme}
    return {"taskId": hook.job_id, **config}


def render_list(hooks: list[Webhook], legacy: bool) -> Any:
    configs = [render(hook, legacy) for hook in hooks]
    return configs if legacy else {"configs": configs}
