"""`http_get` fetches text with limits, and refuses loopback, private and link-local addresses before connecting.

Every test guards `socket.create_connection` (what httpx's sync transport connects with): a
connection to anything but loopback fails the test, so no test sends traffic off this machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients
from parley.tools import ToolContext, ToolRegistry
from parley.tools import http_get as module
from parley.tools.http_get import forbidden_reason
from parley.tools.registry import TOOL_ATTRIBUTE

PAGE = b"""<!doctype html><html><head><title>Menu</title><style>body { color: red }</style>
<script>alert("no")</script></head><body><h1>Today&#39;s menu</h1><p>Tomato   and
basil&nbsp;pasta</p><ul><li>one</li><li>two</li></ul><noscript>enable js</noscript></body></html>"""


class Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        Handler.hosts.append(self.headers.get("Host", ""))
        routes: dict[str, Callable[[], None]] = {
            "/page": lambda: self.answer(200, "text/html; charset=utf-8", PAGE),
            "/plain": lambda: self.answer(200, "text/plain; charset=latin-1", "café".encode("latin-1")),
            "/big": lambda: self.answer(200, "text/plain", b"a" * 5000),
            "/image": lambda: self.answer(200, "image/png", b"\x89PNG"),
            "/missing": lambda: self.answer(404, "text/plain", b"no such page"),
            "/redirect": lambda: self.redirect("/page"),
            "/loop": lambda: self.redirect("/loop"),
            "/to-private": lambda: self.redirect("http://10.0.0.1/secret"),
            "/to-metadata": lambda: self.redirect("http://169.254.169.254/latest/meta-data/"),
            "/to-file": lambda: self.redirect("file:///etc/passwd"),
            "/trickle": self.trickle,
        }
        routes.get(self.path, lambda: self.answer(404, "text/plain", b"?"))()

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            for _ in range(40):  # a byte every 0.1 s: no single read ever times out
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: the connection would resolve it again
        return False


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every address connected to. Anything but a loopback address is blocked before a packet leaves, and
    fails the test at teardown (the tool would report the blocked connection as its own error)."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        made.append((address[0], address[1]))
        if not is_loopback(address[0]):
            raise ConnectionRefusedError(f"the test blocked a connection to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    Handler.hosts.clear()
    yield made
    assert all(is_loopback(host) for host, _ in made), f"http_get tried to connect to {made}"


def run(make_settings: Callable[..., Settings], clients: RedisClients, url: str, **env: str) -> tuple[bool, str]:
    settings = make_settings(**env)
    ctx = ToolContext(tenant="alice", session_id="s1", job_id="job_1", redis=clients.text, settings=settings)
    registry = ToolRegistry([getattr(module.http_get, TOOL_ATTRIBUTE)])
    result = asyncio.run(registry.run("http_get", {"url": url}, ctx))  # a sync tool: in the loop's default pool
    return result.ok, result.content


@pytest.fixture
def fetch(make_settings: Callable[..., Settings], clients: RedisClients) -> Callable[..., tuple[bool, str]]:
    """`fetch(url, **env)`: the tool's (ok, content), private addresses allowed (the test server is on loopback)."""
    return lambda url, **env: run(make_settings, clients, url, **{"PARLEY_HTTP_GET_ALLOW_PRIVATE": "true", **env})


@pytest.fixture
def fetch_public(make_settings: Callable[..., Settings], clients: RedisClients) -> Callable[..., tuple[bool, str]]:
    """`fetch_public(url)`: the tool's (ok, content) with the default settings (public addresses only)."""
    return lambda url, **env: run(make_settings, clients, url, **env)


def test_html_becomes_readable_text(server: str, fetch: Callable[..., tuple[bool, str]]) -> None:
    ok, content = fetch(f"{server}/page")
    assert ok
    assert content == f"HTTP 200 {server}/page\ntext/html, {len(PAGE)} bytes\n\nMenu\n\nToday's menu\n\n" \
                      "Tomato and basil\xa0pasta\n\n- one\n- two"  # fmt: skip
    assert "alert" not in content and "color" not in content and "enable js" not in content


def test_text_is_decoded_with_its_charset_and_errors_are_content(server: str,
                                                                 fetch: Callable[..., tuple[bool, str]]) -> None:
    assert fetch(f"{server}/plain") == (True, f"HTTP 200 {server}/plain\ntext/plain, 4 bytes\n\ncafé")
    assert fetch(f"{server}/missing") == (True, f"HTTP 404 {server}/missing\ntext/plain, 12 bytes\n\nno such page")


def test_body_is_cut_at_max_bytes(server: str, fetch: Callable[..., tuple[bool, str]]) -> None:
    ok, content = fetch(f"{server}/big", PARLEY_HTTP_GET_MAX_BYTES="1000")
    assert ok and content == f"HTTP 200 {server}/big\ntext/plain, first 1000 bytes\n\n" + "a" * 1000


def test_binary_content_is_refused(server: str, fetch: Callable[..., tuple[bool, str]]) -> None:
    assert fetch(f"{server}/image") == (False, f"error: {server}/image answered HTTP 200 with image/png, "
                                               "which is not text")  # fmt: skip


def test_redirects_are_followed_and_bounded(server: str, fetch: Callable[..., tuple[bool, str]]) -> None:
    ok, content = fetch(f"{server}/redirect")
    assert ok and content.startswith(f"HTTP 200 {server}/page\n")
    assert fetch(f"{server}/loop") == (False, f"error: {server}/loop redirects more than 5 times")
    assert Handler.hosts.count(server.removeprefix("http://")) == 2 + 6


def test_a_slow_trickle_hits_the_time_limit(server: str, fetch: Callable[..., tuple[bool, str]]) -> None:
    assert fetch(f"{server}/trickle", PARLEY_HTTP_GET_TIMEOUT_S="0.5") == (
        False, f"error: fetching {server}/trickle timed out after 0.5 s")  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/", "refused: 127.0.0.1 is a loopback address"),
        ("http://127.0.0.1:6379/", "refused: 127.0.0.1 is a loopback address"),
        ("http://localhost/", "refused: localhost resolves to"),
        ("http://[::1]/", "refused: ::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "refused: ::ffff:127.0.0.1 is an IPv6-wrapped loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local address"),
        ("http://10.0.0.1/", "refused: 10.0.0.1 is a private address"),
        ("http://192.168.1.1/", "refused: 192.168.1.1 is a private address"),
        ("http://0.0.0.0/", "refused: 0.0.0.0 is an unspecified address"),
        ("ftp://example.com/", "only http:// and https:// URLs"),
        ("file:///etc/passwd", "only http:// and https:// URLs"),
        ("example.com/page", "only http:// and https:// URLs"),
    ],
)
def test_private_addresses_are_refused_before_connecting(fetch_public: Callable[..., tuple[bool, str]],
                                                         connections: list[tuple[str, int]], url: str,
                                                         message: str) -> None:  # fmt: skip
    ok, content = fetch_public(url)
    assert not ok
    assert content.startswith(f"error: {message}"), content
    assert connections == []


def test_a_name_that_resolves_to_loopback_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                     fetch_public: Callable[..., tuple[bool, str]],
                                                     connections: list[tuple[str, int]]) -> None:  # fmt: skip
    answers = {"intranet.example": ["93.184.216.34", "127.0.0.1"]}  # one bad address is enough
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo(answers))
    assert fetch_public("https://intranet.example/admin") == (
        False, "error: refused: intranet.example resolves to 127.0.0.1, which is a loopback address; "
               "http_get fetches public addresses only")  # fmt: skip
    assert connections == []


def test_a_redirect_to_a_private_address_is_refused(server: str, monkeypatch: pytest.MonkeyPatch,
                                                    fetch_public: Callable[..., tuple[bool, str]],
                                                    connections: list[tuple[str, int]]) -> None:  # fmt: skip
    allow_only_the_test_server(monkeypatch)
    port = int(server.rsplit(":", 1)[1])
    for path, message in (("/to-private", "refused: 10.0.0.1 is a private address"),
                          ("/to-metadata", "refused: 169.254.169.254 is a link-local address"),
                          ("/to-file", "only http:// and https:// URLs")):  # fmt: skip
        ok, content = fetch_public(f"{server}{path}")
        assert not ok and content.startswith(f"error: {message}"), content
    assert set(connections) == {("127.0.0.1", port)}


def test_the_connection_goes_to_the_checked_address(server: str, monkeypatch: pytest.MonkeyPatch,
                                                    fetch_public: Callable[..., tuple[bool, str]],
                                                    connections: list[tuple[str, int]]) -> None:  # fmt: skip
    """DNS rebinding: the name answers a good address to the check and a bad one after; only the first is used."""
    allow_only_the_test_server(monkeypatch)
    port = int(server.rsplit(":", 1)[1])
    asked: list[str] = []
    first = fake_getaddrinfo({"rebind.example": ["127.0.0.1"]})
    later = fake_getaddrinfo({"rebind.example": ["10.0.0.1"]})

    def rebinding(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return (first if asked.count(host) == 1 else later)(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    ok, content = fetch_public(f"http://rebind.example:{port}/plain")
    assert ok and content.startswith(f"HTTP 200 http://rebind.example:{port}/plain\n"), content
    assert asked.count("rebind.example") == 1
    assert connections == [("127.0.0.1", port)]
    assert Handler.hosts == [f"rebind.example:{port}"]  # the server still sees the name


def test_https_connects_to_the_checked_address_and_keeps_the_name_for_tls(
        monkeypatch: pytest.MonkeyPatch, fetch_public: Callable[..., tuple[bool, str]]) -> None:  # fmt: skip
    """The request goes to the IP; the Host header and the TLS SNI (which httpcore also checks the certificate
    against) carry the name. No connection is made: the transport is a mock."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        # stream=, not content=: a response built with content= is read at once, and http_get reads raw bytes
        return httpx.Response(200, headers={"Content-Type": "text/plain"}, stream=httpx.ByteStream(b"secure"))

    real_client, transport = httpx.Client, httpx.MockTransport(answer)
    monkeypatch.setattr(httpx, "Client", lambda **options: real_client(transport=transport, **options))
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({"tls.example": ["93.184.216.34"]}))
    assert fetch_public("https://tls.example/doc?q=1") == (
        True, "HTTP 200 https://tls.example/doc?q=1\ntext/plain, 6 bytes\n\nsecure")  # fmt: skip
    [request] = sent
    assert str(request.url) == "https://93.184.216.34/doc?q=1"
    assert request.headers["host"] == "tls.example"
    assert request.extensions["sni_hostname"] == "tls.example"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.0.1", "private"), ("fc00::1", "private"),
        ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("240.0.0.1", "reserved"), ("100.64.0.1", "non-public"),
        ("::ffff:10.0.0.1", "IPv6-wrapped private"),
        ("2002:7f00:1::", "IPv6-wrapped loopback"),
        ("64:ff9b::a9fe:a9fe", "IPv6-wrapped link-local"),
        ("8.8.8.8", None), ("93.184.216.34", None), ("2606:4700:4700::1111", None),
    ],
)  # fmt: skip
def test_forbidden_reason(address: str, reason: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


def allow_only_the_test_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """With public-only settings, let 127.0.0.1 pass the check (the test server), and nothing else new."""
    real = module.forbidden_reason

    def reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        return None if str(address) == "127.0.0.1" else real(address)

    monkeypatch.setattr(module, "forbidden_reason", reason)


def fake_getaddrinfo(answers: dict[str, list[str]]) -> Callable[..., list[Any]]:
    real = socket.getaddrinfo

    def lookup(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in answers[host]]  # fmt: skip

    return lookup
