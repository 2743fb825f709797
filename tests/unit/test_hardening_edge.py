"""The API edge against hostile input (issue 11): bodies bounded while they stream and before any route,
JSON bodies made safe in one place (lone surrogates, nesting, encodings), ids and cursors that do not parse
refused as the client's error, the /v1 history bounded, /metrics behind its token.

BodyGuard is driven with raw ASGI messages, so a test controls exactly what arrives and when, and sees
how much of the body the edge read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import Message, Receive, Scope, Send

from parley.api import middleware
from parley.api.adapters.openai import translate as openai_compat
from parley.api.middleware import BodyGuard
from parley.api.routes.ops import check_metrics_token
from parley.shared import events
from parley.shared.errors import InvalidInput, TooLarge, Unauthorized
from parley.shared.store.sessions import SessionStore

LIMIT = 4096


class Echo:
    """An app that reads the body as FastAPI does (until `more_body` is false) and answers 200 with it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Client:
    """Sends `chunks` one ASGI message each (chunked framing: no content-length unless given)."""

    def __init__(self, chunks: list[bytes] | Callable[[int], bytes | None], delay_s: float = 0.0) -> None:
        self.chunks, self.delay_s = chunks, delay_s
        self.received = 0
        """How many body messages the edge asked for."""
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        index = self.received
        self.received += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if callable(self.chunks):
            piece = self.chunks(index)
            if piece is None:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": piece, "more_body": True}
        if index >= len(self.chunks):
            await asyncio.sleep(3600)  # the client sends nothing more
        last = index == len(self.chunks) - 1
        return {"type": "http.request", "body": self.chunks[index], "more_body": not last}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def run(guard: BodyGuard, client: Client, headers: list[tuple[bytes, bytes]] | None = None, path: str = "/x") -> None:
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    asyncio.run(guard(scope, client.receive, client.send))


JSON = [(b"content-type", b"application/json")]


# --- size, whatever the framing, and time ----------------------------------------------------------


def test_a_chunked_body_past_the_limit_is_413_and_the_rest_is_never_read() -> None:
    app = Echo()
    client = Client(lambda index: b"x" * 1000)  # a body without end
    run(BodyGuard(app, LIMIT), client)
    assert client.status == 413 and client.json()["error"]["code"] == "too_large"
    assert (b"connection", b"close") in client.sent[0]["headers"]
    assert client.received == 5  # 5000 bytes: the first message past 4096, then no more
    assert app.calls == 0


def test_a_declared_length_past_the_limit_is_413_before_any_read() -> None:
    app, client = Echo(), Client([b"{}"])
    run(BodyGuard(app, LIMIT), client, [(b"content-length", str(LIMIT + 1).encode())])
    assert client.status == 413 and client.received == 0 and app.calls == 0


def test_a_declared_length_of_thousands_of_digits_is_413() -> None:
    client = Client([b"{}"])
    run(BodyGuard(Echo(), LIMIT), client, [(b"content-length", b"9" * 5000)])
    assert client.status == 413


def test_a_body_at_the_limit_passes_whole() -> None:
    app, client = Echo(), Client([b"a" * 1000] * 4 + [b"b" * 96])
    run(BodyGuard(app, LIMIT), client)
    assert client.status == 200 and app.bodies == [b"a" * 4000 + b"b" * 96]


def test_a_trickled_body_is_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "BODY_GRACE_S", 0.3)
    app = Echo()
    client = Client(lambda index: b"x", delay_s=0.05)  # 20 bytes a second, for ever
    run(BodyGuard(app, LIMIT), client)
    assert client.status == 408 and client.json()["error"]["code"] == "request_timeout"
    assert app.calls == 0 and client.received < 20


def test_a_client_that_sends_nothing_is_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "BODY_GRACE_S", 0.2)
    client = Client([])
    run(BodyGuard(Echo(), LIMIT), client)
    assert client.status == 408


def test_a_client_that_leaves_while_sending_gets_nothing_and_the_app_is_not_called() -> None:
    app = Echo()
    client = Client(lambda index: b"x" if index < 3 else None)
    run(BodyGuard(app, LIMIT), client)
    assert client.sent == [] and app.calls == 0


# --- JSON bodies: one place for every route ----------------------------------------------------------


def test_lone_surrogates_become_u_fffd_and_the_body_stays_json() -> None:
    body = rb'{"message": "hi \ud800 there", "metadata": {"k\udfff": ["\udc00x"]}, "ok": "\ud83d\ude00"}'
    app, client = Echo(), Client([body])
    run(BodyGuard(app, LIMIT), client, JSON)
    [seen] = app.bodies
    seen.decode("utf-8")  # strict: encodable everywhere
    assert json.loads(seen) == {"message": "hi \ufffd there", "metadata": {"k\ufffd": ["\ufffdx"]}, "ok": "\U0001f600"}


def test_a_body_without_lone_surrogates_passes_byte_for_byte() -> None:
    body = b'{"message": "caf\xc3\xa9 \\ud83d\\ude00 \\\\ud800", "n": 1.50}'
    app, client = Echo(), Client([body])
    run(BodyGuard(app, LIMIT), client, JSON)
    assert json.loads(app.bodies[0])["message"] == "café \U0001f600 \\ud800"


def test_the_content_length_the_app_sees_is_the_bodys() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["headers"] = dict(scope["headers"])
        seen["body"] = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    body = rb'{"m": "\udfff"}'
    run(BodyGuard(app, LIMIT), Client([body]), [*JSON, (b"transfer-encoding", b"chunked")])
    assert seen["headers"][b"content-length"] == str(len(seen["body"])).encode()
    assert b"transfer-encoding" not in seen["headers"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 5000 + b"]" * 5000, "nests"),  # RecursionError in json
        (b'{"a": ' + b"[" * 101 + b"]" * 101 + b"}", "nests"),  # past MAX_JSON_DEPTH
        (b'{"message": "\xed\xa0\x80"}', "UTF-8"),  # an encoded surrogate: json.loads(bytes) would take it
        (b'{"message": "caf\xe9"}', "UTF-8"),  # Latin-1
        ('{"message": "hi"}'.encode("utf-16"), "UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a BOM
        (b"{not json", "not valid JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),  # int() refuses that many digits
    ],
)
def test_json_bodies_that_cannot_be_read_safely_are_400_invalid_json(body: bytes, why: str) -> None:
    app, client = Echo(), Client([body])
    run(BodyGuard(app, 1 << 20), client, JSON)
    assert client.status == 400, client.sent
    assert client.json()["error"]["code"] == "invalid_json" and why in client.json()["error"]["message"]
    assert app.calls == 0


def test_nesting_up_to_the_bound_passes_and_brackets_in_strings_do_not_count() -> None:
    deep = b"[" * middleware.MAX_JSON_DEPTH + b"]" * middleware.MAX_JSON_DEPTH
    brackets = json.dumps({"text": "[" * 500 + "{" * 500}).encode()
    for body in (deep, brackets, b"[" + b"[]," * 300 + b"[]]"):
        app, client = Echo(), Client([body])
        run(BodyGuard(app, 1 << 20), client, JSON)
        assert client.status == 200 and app.bodies == [body]


def test_a_large_json_body_is_checked_too() -> None:
    body = json.dumps({"message": "x" * 100_000 + "\\ud800"}).encode().replace(b"\\\\ud800", b"\\ud800")
    app, client = Echo(), Client([body])
    run(BodyGuard(app, 1 << 20), client, JSON)
    assert json.loads(app.bodies[0])["message"].endswith("x\ufffd")


def test_other_content_types_pass_untouched() -> None:
    body = b"\xff\xfe not json \xed\xa0\x80"
    app, client = Echo(), Client([body])
    run(BodyGuard(app, LIMIT), client, [(b"content-type", b"text/plain")])
    assert app.bodies == [body]


def test_after_the_body_receive_passes_through_for_disconnects() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    arriving: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return arriving.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(BodyGuard(app, LIMIT)({"type": "http", "method": "GET", "headers": []}, receive, send))
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"] and sent[0]["status"] == 204


# --- ids, cursors and the /v1 history -------------------------------------------------------------


@pytest.mark.parametrize("event_id", ["18446744073709551615-0", "0-18446744073709551615", "18446744073709551614-5"])
def test_the_largest_stream_ids_are_valid(event_id: str) -> None:
    assert events.valid_id(event_id)


@pytest.mark.parametrize("event_id", ["18446744073709551616-0", "1-18446744073709551616", "99999999999999999999-1",
                                      "18446744073709551615-18446744073709551615"])  # fmt: skip
def test_stream_ids_past_64_bits_are_refused(event_id: str) -> None:
    assert not events.valid_id(event_id)


@pytest.mark.parametrize("cursor", ["\u00b2:s", "\u0663\u0663:s", "9" * 19 + ":s", "9" * 5000 + ":s", "-1:s", "1e5:s"])
def test_a_cursor_that_does_not_parse_is_invalid_input(sessions: SessionStore, cursor: str) -> None:
    with pytest.raises(InvalidInput):
        sessions.page("t", agent_id=None, limit=10, cursor=cursor, agent_names={})


@pytest.mark.parametrize("before", ["msg_\u00b2", "msg_" + "9" * 19, "msg_" + "9" * 5000, "msg_-1", "msg_"])
def test_a_before_that_does_not_parse_is_invalid_input(sessions: SessionStore, before: str) -> None:
    sessions.r.hset("parley:session:t:s", mapping={"agent_id": "a", "created_at": 1})
    with pytest.raises(InvalidInput):
        sessions.messages("t", "s", limit=10, before=before)


def test_the_largest_before_is_read_not_refused(sessions: SessionStore) -> None:
    sessions.r.hset("parley:session:t:s", mapping={"agent_id": "a", "created_at": 1})
    message = {"role": "user", "content": "x", "created_at": 1000, "job_id": None}
    sessions.r.rpush("parley:messages:t:s", json.dumps(message))
    assert sessions.messages("t", "s", limit=10, before="msg_" + "9" * 18) == []  # the 10 before it: none
    assert [m.id for m in sessions.messages("t", "s", limit=10, before="msg_1")] == ["msg_0"]


def _completion(count: int, text: str = "hi", **extra: Any) -> openai_compat.ChatCompletionRequest:
    return openai_compat.ChatCompletionRequest.model_validate(
        {"model": "Chef", "messages": [{"role": "user", "content": text}] * count, **extra}
    )


def test_v1_history_over_the_message_bound_is_413() -> None:
    openai_compat._check_history(_completion(3), max_messages=3, max_chars=1000)
    with pytest.raises(TooLarge):
        openai_compat._check_history(_completion(4), max_messages=3, max_chars=1000)


def test_v1_history_over_the_character_bound_is_413_text_parts_included() -> None:
    openai_compat._check_history(_completion(2, "x" * 50), max_messages=10, max_chars=100)
    with pytest.raises(TooLarge):
        openai_compat._check_history(_completion(2, "x" * 51), max_messages=10, max_chars=100)
    parts = openai_compat.ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "x" * 101}]}]})  # fmt: skip
    with pytest.raises(TooLarge):
        openai_compat._check_history(parts, max_messages=10, max_chars=100)


@pytest.mark.parametrize("user", ["bad id!", "", "x" * 129, "-leading", "a\nb"])
def test_v1_user_that_is_not_a_session_id_is_422(user: str) -> None:
    with pytest.raises(InvalidInput):
        openai_compat._session_id(_completion(1, user=user), None)


def test_v1_model_must_name_an_agent() -> None:
    """An empty `model` would fall back to the tenant's first agent: refused instead."""
    request = {"model": "", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(ValueError):
        openai_compat.ChatCompletionRequest.model_validate(request)


def test_v1_session_header_wins_over_user() -> None:
    assert openai_compat._session_id(_completion(1, user="bad id!"), "good") == "good"
    assert openai_compat._session_id(_completion(1, user="ana@example.com"), None) == "ana@example.com"


def test_a_route_model_built_from_client_input_is_422_not_500() -> None:
    from parley.api.errors import client_input
    from parley.shared.schema import ChatRequest

    with pytest.raises(RequestValidationError):
        with client_input():
            ChatRequest(message="   ")


# --- /metrics token ---------------------------------------------------------------------------------


def test_metrics_token_is_asked_for_when_set() -> None:
    check_metrics_token(None, None)
    bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials="s3cret")
    check_metrics_token("s3cret", bearer)
    for sent in (None, HTTPAuthorizationCredentials(scheme="Bearer", credentials="s3cre"),
                 HTTPAuthorizationCredentials(scheme="Bearer", credentials="s3cret\u00e9")):  # fmt: skip
        with pytest.raises(Unauthorized):
            check_metrics_token("s3cret", sent)


@pytest.mark.parametrize("path", ["/mcp", "/a2a/Chef", "/a2a/Chef/"])
def test_a_refused_body_on_a_json_rpc_endpoint_is_a_json_rpc_error(path: str) -> None:
    """A2A and MCP clients read JSON-RPC errors only: a body that is not JSON gets -32700 (parse error), one past
    the size limit -32600, with Parley's code in `data`; the HTTP status stays."""
    client = Client([b'{"jsonrpc": "2.0",'])
    run(BodyGuard(Echo(), LIMIT), client, JSON, path=path)
    assert client.status == 400
    body = client.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == -32700 and body["error"]["data"] == {"code": "invalid_json"}
    big = Client(lambda index: b"x" * 1000)
    run(BodyGuard(Echo(), LIMIT), big, path=path)
    assert big.status == 413 and big.json()["error"]["code"] == -32600
    plain = Client([b'{"a":'])
    run(BodyGuard(Echo(), LIMIT), plain, JSON, path="/api/v1/mcp-servers")
    assert plain.json()["error"]["code"] == "invalid_json"
