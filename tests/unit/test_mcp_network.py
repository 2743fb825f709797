"""PARLEY_PRIVATE_NETWORKS_ALLOWED (parley.tools.network): what it lets tools reach, what stays refused, and that
`http_get` honours it beside PARLEY_HTTP_GET_ALLOW_PRIVATE."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients
from parley.tools import ToolContext, ToolRegistry, network
from parley.tools import http_get as http_get_module
from parley.tools.context import ToolError
from parley.tools.registry import TOOL_ATTRIBUTE


def test_the_allowlist_takes_cidrs_addresses_and_host_names() -> None:
    allowed = network.parse_allowlist(" 10.0.0.0/8, 127.0.0.1 ,, MCP.Internal., fd00::/8 ")
    assert allowed.allows("whatever", ipaddress.ip_address("10.20.30.40"))
    assert allowed.allows("whatever", ipaddress.ip_address("127.0.0.1"))
    assert allowed.allows("whatever", ipaddress.ip_address("::ffff:127.0.0.1"))  # the mapped form of an entry
    assert allowed.allows("whatever", ipaddress.ip_address("fd12::1"))
    assert allowed.allows("mcp.internal", ipaddress.ip_address("192.168.1.1"))  # by name: any of its addresses
    assert not allowed.allows("whatever", ipaddress.ip_address("127.0.0.2"))
    assert not allowed.allows("whatever", ipaddress.ip_address("192.168.1.1"))
    assert not allowed.allows("other.internal", ipaddress.ip_address("169.254.169.254"))
    assert not network.parse_allowlist("").allows("x", ipaddress.ip_address("127.0.0.1"))


@pytest.mark.parametrize(
    ("host", "addresses", "allow", "refusal"),
    [
        ("127.0.0.1", ["127.0.0.1"], "", "refused: 127.0.0.1 is a loopback address; why"),
        ("127.0.0.1", ["127.0.0.1"], "127.0.0.1", None),
        ("intranet", ["93.184.216.34", "10.1.1.1"], "", "refused: intranet resolves to 10.1.1.1, which is a private "
                                                          "address; why"),
        ("intranet", ["93.184.216.34", "10.1.1.1"], "10.0.0.0/8", None),
        ("intranet", ["10.1.1.1", "169.254.169.254"], "10.0.0.0/8", "refused: intranet resolves to 169.254.169.254, "
                                                                    "which is a link-local address; why"),
        ("intranet", ["10.1.1.1", "169.254.169.254"], "intranet", None),
        ("example.com", ["93.184.216.34"], "", None),
    ],
)  # fmt: skip
def test_check_host_refuses_any_private_address_the_allowlist_does_not_name(
        host: str, addresses: list[str], allow: str, refusal: str | None) -> None:  # fmt: skip
    allowed = network.parse_allowlist(allow)
    if refusal is None:
        network.check_host(host, addresses, allowed, purpose="why")
    else:
        with pytest.raises(network.PrivateAddress) as caught:
            network.check_host(host, addresses, allowed, purpose="why")
        assert str(caught.value) == refusal


def test_the_async_resolver_gives_the_addresses() -> None:
    assert asyncio.run(network.resolve_async("127.0.0.1", 80)) == ["127.0.0.1"]
    with pytest.raises(network.Unresolvable):
        asyncio.run(network.resolve_async("no-such-host.invalid", 80))


def test_http_get_resolve_uses_the_allowlist() -> None:
    url = httpx.URL("http://127.0.0.1:9/")
    with pytest.raises(ToolError, match="loopback address; http_get fetches public addresses only"):
        http_get_module.resolve(url)
    assert http_get_module.resolve(url, allowed=network.parse_allowlist("127.0.0.0/8")) == ["127.0.0.1"]
    assert http_get_module.resolve(url, allow_private=True) == ["127.0.0.1"]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the intranet"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def intranet() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({}, False),
        ({"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}, True),
        ({"PARLEY_PRIVATE_NETWORKS_ALLOWED": "10.0.0.0/8"}, False),
        ({"PARLEY_HTTP_GET_ALLOW_PRIVATE": "true"}, True),
    ],
)
def test_http_get_fetches_from_private_networks_the_operator_allows(
        intranet: str, make_settings: Callable[..., Settings], clients: RedisClients, env: dict[str, str],
        ok: bool) -> None:  # fmt: skip
    settings = make_settings(**env)
    ctx = ToolContext(tenant="alice", session_id="s1", job_id="job_1", redis=clients.text, settings=settings)
    registry = ToolRegistry([getattr(http_get_module.http_get, TOOL_ATTRIBUTE)])
    result = asyncio.run(registry.run("http_get", {"url": intranet}, ctx))
    assert result.ok is ok, result.content
    if ok:
        assert "hello from the intranet" in result.content
    else:
        assert result.content.startswith("error: refused: 127.0.0.1 is a loopback address"), result.content
