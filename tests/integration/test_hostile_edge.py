"""The API edge against hostile input, on real processes (issue 11 items 3, 5, 7, 9, 11, 12).

Bodies are bounded while they stream, before authentication; JSON bodies carrying lone surrogates are
normalised once for every route; input that does not parse is the client's 4xx and changes nothing;
/v1 history is bounded; /metrics shows no tenant data unless asked and can ask for a token; a web with
an invalid PARLEY_COMPAT_TENANT does not start."""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

import httpx

from tests.integration.helpers import client, create_agent, messages
from tests.integration.test_tenancy_and_input import _snapshot

MIB = 1 << 20
JSON = {"content-type": "application/json"}


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _read_response(sock: socket.socket, timeout: float) -> bytes:
    """What the server answered within `timeout` (b'' when nothing)."""
    sock.setblocking(False)
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        try:
            piece = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            break
        if not piece:
            break
        data += piece
        if b"\r\n\r\n" in data and data.endswith(b"}"):
            break
    sock.setblocking(True)
    return data


def test_a_chunked_body_of_any_size_is_413_before_auth_and_never_read(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_BODY_BYTES": str(MIB)})
    web = stack.webs[0]
    assert web.pid is not None
    before = _peak_rss_mib(web.pid)
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    body_mib = 200
    with socket.create_connection(("127.0.0.1", web.port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/chat HTTP/1.1\r\nHost: parley\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # no Authorization  # fmt: skip
        for _ in range(20):  # 1.25 MiB: past the limit
            sock.sendall(frame)
        answer = _read_response(sock, timeout=10)
        sent = 20 * len(chunk)
        try:  # the rest of a 200 MiB body, as fast as the server takes it
            while sent < body_mib * MIB:
                sock.sendall(frame)
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: it reads no more
        if not answer:
            answer = _read_response(sock, timeout=30)
    grown = _peak_rss_mib(web.pid) - before
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), (f"peak memory +{grown:.0f} MiB", answer[:300])
    assert json.loads(payload)["error"]["code"] == "too_large"
    assert grown < 50, f"the web's peak memory grew by {grown:.0f} MiB for a {body_mib} MiB body"
    with client(stack.web_url, stack.api_key) as http:
        assert http.get("/api/v1/agents").status_code == 200  # and the web serves on


def test_lone_surrogates_are_stored_as_u_fffd_and_served_back(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        agent = http.post("/api/v1/agents", headers=JSON,
                          content=rb'{"name": "Chef", "context": "\udc00 chef", "first_message": "hi \ud83d\ude00"}')
        assert agent.status_code == 201, agent.text
        assert http.get("/api/v1/agents/Chef").json()["context"] == "\ufffd chef"
        assert agent.json()["first_message"] == "hi \U0001f600"  # a pair is a character, kept

        metadata = rb'"metadata": {"k": "\ud800", "\udfff": "v"}'
        session = http.post("/api/v1/sessions", headers=JSON,
                            content=rb'{"agent": "Chef", "session_id": "s1", ' + metadata + b"}")
        assert session.status_code == 201, session.text
        assert http.get("/api/v1/sessions/s1").json()["metadata"] == {"k": "\ufffd", "\ufffd": "v"}

        chat = http.post("/api/v1/chat", headers=JSON, content=rb'{"message": "hi \ud800 there", "session_id": "s2"}')
        assert chat.status_code == 200, chat.text
        assert chat.json()["response"] == "echo: hi \ufffd there"
        assert [m["content"] for m in messages(http, "s2")][1:] == ["hi \ufffd there", "echo: hi \ufffd there"]


def test_json_that_cannot_be_read_safely_is_400_invalid_json_and_changes_nothing(stack) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        before = _snapshot(stack)
        for body in (b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than Python's json
                     b'{"agent": "Chef", "metadata": ' + b'{"a": ' * 150 + b"1" + b"}" * 151,  # deeper than 100
                     b'{"message": "caf\xe9"}',  # not UTF-8
                     b'{"message": "\xed\xa0\x80"}'):  # an encoded lone surrogate  # fmt: skip
            for path in ("/api/v1/chat", "/api/v1/sessions", "/v1/chat/completions"):
                response = http.post(path, headers=JSON, content=body)
                assert response.status_code == 400, (path, body[:40], response.text)
                assert response.json()["error"]["code"] == "invalid_json"
        assert _snapshot(stack) == before


def _refused(http: httpx.Client, method: str, path: str, status: int, **kwargs: Any) -> None:
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, (method, path, response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_input_that_does_not_parse_is_the_clients_error_and_changes_nothing(stack) -> None:
    stack.env["PARLEY_COMPAT_TENANT"] = "alice"
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http, client(stack.web_url, None) as anonymous:
        create_agent(http)
        conversation = anonymous.post("/agents/create-conversation", json={"agent_id": "Chef"})
        assert conversation.status_code == 200, conversation.text
        accepted = http.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": "s1"}).json()
        before = _snapshot(stack)

        for name in ("x" * 101, "   ", ""):
            _refused(anonymous, "POST", "/agents/create-agent", 422, json={"context": "c", "name": name})
        _refused(anonymous, "POST", "/agents/create-agent", 422, json={"context": "c" * 100_001})
        for message in ("   ", "\n\t"):
            _refused(anonymous, "POST", "/agents/chat-agent", 422,
                     json={"conversation_id": conversation.json()["id"], "message": message})
        for user in ("bad id!", "x" * 129, ""):
            _refused(http, "POST", "/v1/chat/completions", 422,
                     json={"model": "Chef", "user": user, "messages": [{"role": "user", "content": "hi"}]})
        for cursor in ("\u00b2:s1", "\u0663:s1", "9" * 30 + ":s1", "9" * 5000 + ":s1"):
            _refused(http, "GET", "/api/v1/sessions", 422, params={"cursor": cursor})
        for before_id in ("msg_\u00b2", "msg_" + "9" * 30, "msg_" + "9" * 5000):
            _refused(http, "GET", "/api/v1/sessions/s1/messages", 422, params={"before": before_id})
        for event_id in ("99999999999999999999-0", "18446744073709551616-0", "0-18446744073709551616",
                         "18446744073709551615-18446744073709551615"):  # fmt: skip
            _refused(http, "GET", f"/api/v1/jobs/{accepted['job_id']}/events", 422,
                     headers={"Last-Event-ID": event_id})
        assert _snapshot(stack) == before


def test_v1_history_is_bounded(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_HISTORY_MESSAGES": "4", "PARLEY_MAX_HISTORY_CHARS": "200"})
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        before = _snapshot(stack)
        turn = [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
        _refused(http, "POST", "/v1/chat/completions", 413, json={"model": "Chef", "messages": turn * 2 + turn[1:]})
        long = [{"role": "system", "content": "x" * 150},
                {"role": "user", "content": [{"type": "text", "text": "y" * 51}]}]
        _refused(http, "POST", "/v1/chat/completions", 413, json={"model": "Chef", "messages": long})
        assert _snapshot(stack) == before
        within = http.post("/v1/chat/completions", json={"model": "Chef", "messages": turn * 2})
        assert within.status_code == 200, within.text


def _metrics(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url + "/metrics", headers=headers, timeout=10)


def _one_turn_and_some_paths(stack) -> None:
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, name="AcmeSecretChef", model="acme-secret-model")
        assert http.post("/api/v1/chat", json={"message": "hi", "session_id": "acme-secret-session"}).status_code == 200
        assert http.get("/api/v1/agents/AcmeSecretChef").status_code == 200
        assert http.get("/acme-secret-path").status_code == 404


def _tokens(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("parley_tokens_total")]


def test_metrics_carry_no_tenant_data_by_default(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _one_turn_and_some_paths(stack)
    deadline = time.monotonic() + 10
    while 'route="/api/v1/agents/{agent}"' not in (text := _metrics(stack.web_url).text):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert "acme" not in text.lower(), [line for line in text.splitlines() if "acme" in line.lower()]
    assert {line.split(" ")[0] for line in _tokens(text)} == {'parley_tokens_total{direction="in"}',
                                                               'parley_tokens_total{direction="out"}'}
    assert 'route="unmatched"' in text


def test_metrics_agent_labels_when_the_operator_opts_in(stack) -> None:
    stack.env["PARLEY_METRICS_AGENT_LABELS"] = "true"
    stack.start_web()
    stack.start_workers()
    _one_turn_and_some_paths(stack)
    text = _metrics(stack.web_url).text
    assert any('agent="AcmeSecretChef"' in line and 'model="acme-secret-model"' in line for line in _tokens(text))
    assert "acme-secret-session" not in text and "acme-secret-path" not in text


def test_metrics_token(stack) -> None:
    stack.start_web(env={"PARLEY_METRICS_TOKEN": "s3cret-scrape"})
    for token in (None, "wrong", stack.api_key):
        refused = _metrics(stack.web_url, token)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthorized" and "parley_" not in refused.text
    allowed = _metrics(stack.web_url, "s3cret-scrape")
    assert allowed.status_code == 200 and "parley_redis_up 1.0" in allowed.text


def test_a_web_with_an_invalid_compat_tenant_does_not_start(stack) -> None:
    for tenant in ("a:b", "_file", "has space"):
        [web] = stack.start_web(env={"PARLEY_COMPAT_TENANT": tenant}, wait=False)
        deadline = time.monotonic() + 30
        while web.alive:
            assert time.monotonic() < deadline, f"a web with PARLEY_COMPAT_TENANT={tenant!r} is still running"
            time.sleep(0.1)
        assert web.returncode != 0
        log = web.read_log()
        assert "PARLEY_COMPAT_TENANT" in log and repr(tenant) in log and "is not a tenant name" in log, log[-2000:]
