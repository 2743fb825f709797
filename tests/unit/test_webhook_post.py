"""worker/webhook_post.py against a real HTTP server on 127.0.0.1: a 2xx delivers, a redirect is a failed attempt
(not followed), an address webhooks may not reach is refused before any connection, a slow receiver times out,
a refused connection is `unreachable`, and a huge answer is read only in part."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from parley.tools import network
from parley.worker import webhook_post

ALLOWED = network.parse_allowlist("127.0.0.1")
seen: list[tuple[str, dict[str, str], bytes]] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen.append((self.path, dict(self.headers.items()), body))
        if self.path == "/slow":
            time.sleep(1.5)
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(50_000_000))
            self.end_headers()
            try:
                for _ in range(5000):
                    self.wfile.write(b"x" * 10_000)
            except OSError:
                pass  # the client stopped reading
            return
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def post(url: str, allowed: network.Allowlist = ALLOWED, timeout_s: float = 5.0) -> webhook_post.Outcome:
    return asyncio.run(webhook_post.post(url, b'{"a":1}', {"Parley-Delivery-Id": "dlv_1"}, allowed=allowed,
                                         timeout_s=timeout_s))  # fmt: skip


def test_a_2xx_delivers_with_the_headers_and_the_host(base: str) -> None:
    outcome = post(base + "/ok")
    assert outcome.kind == "delivered" and outcome.attempt.ok and outcome.attempt.status_code == 204
    path, headers, body = seen[-1]
    assert (path, body, headers["Parley-Delivery-Id"]) == ("/ok", b'{"a":1}', "dlv_1")
    assert headers["Host"] == base.removeprefix("http://")


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(base: str) -> None:
    before = len(seen)
    outcome = post(base + "/moved")
    assert (outcome.kind, outcome.attempt.status_code, outcome.attempt.error) == ("status", 302, "HTTP 302")
    assert len(seen) == before + 1


def test_a_private_address_is_refused_before_any_connection(base: str) -> None:
    before = len(seen)
    outcome = post(base + "/ok", allowed=network.parse_allowlist(""))
    assert outcome.kind == "refused" and "loopback" in (outcome.attempt.error or "")
    assert len(seen) == before


def test_a_slow_receiver_times_out_and_a_closed_port_is_unreachable(base: str) -> None:
    slow = post(base + "/slow", timeout_s=0.3)
    assert slow.kind == "timeout" and slow.attempt.status_code is None and slow.attempt.duration_ms < 1000
    closed = post("http://127.0.0.1:9/hook")
    assert closed.kind == "unreachable" and "cannot connect" in (closed.attempt.error or "")


def test_a_huge_answer_is_read_only_in_part(base: str) -> None:
    started = time.monotonic()
    outcome = post(base + "/huge")
    assert outcome.kind == "delivered" and time.monotonic() - started < 3
