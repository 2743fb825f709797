"""`/api/v1/mcp-servers` and `GET /api/v1/tools` on a real web process, with the project's MCP server
(tests/mcp_server.py) as the tenant's server: registration asks the server for its tools with the given headers
(never shown again), lists and reads show the tools, agents may name them, and hostile registrations (private
addresses, bad names and URLs, one server too many, an unreachable server) get clear JSON errors and change
nothing."""

from __future__ import annotations

from typing import Any

from tests.integration.helpers import client, create_agent
from tests.mcp_server import SECRET_HEADER

LOOPBACK_ALLOWED = {"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}
ALL_TOOLS = ["echo", "fail", "hang", "hangs", "image", "large", "trace_context", "weather"]


def test_a_server_is_registered_with_its_headers_which_are_never_shown_again(stack: Any, mcp_server: Any) -> None:
    stack.start_web(env=LOOPBACK_ALLOWED)
    name, value = SECRET_HEADER
    body = {"name": "private", "url": f"{mcp_server.url}/private/mcp", "headers": {"X-Test-Secret": value},
            "allowed_tools": ["echo", "weather"]}  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        created = http.post("/api/v1/mcp-servers", json=body)
        assert created.status_code == 201, created.text
        assert created.json() == {
            "name": "private", "url": f"{mcp_server.url}/private/mcp", "header_names": ["X-Test-Secret"],
            "allowed_tools": ["echo", "weather"], "tools_error": None,
            "tools": [{"name": "echo", "description": "Say `text` back."},
                      {"name": "weather", "description": "The weather in `city`, as structured content."}],
        }  # fmt: skip
        listed = http.get("/api/v1/mcp-servers")
        one = http.get("/api/v1/mcp-servers/private")
        assert listed.status_code == one.status_code == 200
        assert listed.json() == [created.json()] and one.json() == created.json()
        for response in (created, listed, one):
            assert value not in response.text
        assert value not in stack.webs[0].log_tail(500)

        tools = {tool["name"]: tool for tool in http.get("/api/v1/tools").json()}
        assert "calculator" in tools and "mcp:private/echo" in tools and "mcp:private/hang" not in tools
        assert tools["mcp:private/weather"]["parameters"]["properties"]["city"]["type"] == "string"

        agent = create_agent(http, name="Weather", tools=["mcp:private/*", "mcp:later/search", "calculator"])
        assert agent["tools"] == ["mcp:private/*", "mcp:later/search", "calculator"]
        refused = http.post("/api/v1/agents", json={"name": "Bad", "tools": ["mcp:private/"]})
        assert refused.status_code == 422 and "mcp:private/" in refused.json()["error"]["message"]

        changed = http.patch("/api/v1/mcp-servers/private", json={"allowed_tools": None})
        assert changed.status_code == 200 and sorted(t["name"] for t in changed.json()["tools"]) == ALL_TOOLS
        wrong = http.patch("/api/v1/mcp-servers/private", json={"headers": {"X-Test-Secret": "wrong"}})
        assert wrong.status_code == 502 and wrong.json()["error"]["code"] == "mcp_server_failed"
        assert http.get("/api/v1/mcp-servers/private").json()["tools"]  # the failed change changed nothing

        assert http.delete("/api/v1/mcp-servers/private").status_code == 204
        assert http.get("/api/v1/mcp-servers/private").status_code == 404
        assert not any(name.startswith("mcp:") for name in (t["name"] for t in http.get("/api/v1/tools").json()))

    with client(stack.web_url, stack.api_keys["bob"]) as http:
        assert http.get("/api/v1/mcp-servers").json() == []


def test_both_revisions_register_and_list(stack: Any, mcp_server: Any) -> None:
    stack.start_web(env=LOOPBACK_ALLOWED)
    with client(stack.web_url, stack.api_key) as http:
        for name in ("legacy", "modern"):
            response = http.post("/api/v1/mcp-servers", json={"name": name, "url": f"{mcp_server.url}/{name}/mcp"})
            assert response.status_code == 201, response.text
            assert sorted(tool["name"] for tool in response.json()["tools"]) == ALL_TOOLS
        names = sorted(t["name"] for t in http.get("/api/v1/tools").json() if t["name"].startswith("mcp:"))
        assert names == sorted(f"mcp:{server}/{tool}" for server in ("legacy", "modern") for tool in ALL_TOOLS)


def error(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return response.status_code, body["error"]["code"]


def test_hostile_registrations_get_clear_errors_and_store_nothing(stack: Any, mcp_server: Any) -> None:
    stack.start_web(env={"PARLEY_MAX_MCP_SERVERS": "2", "PARLEY_MCP_TIMEOUT_S": "2"})  # no private networks allowed
    port = mcp_server.port
    with client(stack.web_url, stack.api_key) as http:
        cases: list[tuple[dict[str, Any] | str, tuple[int, str]]] = [
            ({"name": "loop", "url": f"http://127.0.0.1:{port}/mcp"}, (422, "private_network")),
            ({"name": "loop", "url": f"http://localhost:{port}/mcp"}, (422, "private_network")),
            ({"name": "meta", "url": "http://169.254.169.254/latest/meta-data/"}, (422, "private_network")),
            ({"name": "lan", "url": "http://10.0.0.1/mcp"}, (422, "private_network")),
            ({"name": "v6", "url": "http://[::ffff:127.0.0.1]:1/mcp"}, (422, "private_network")),
            ({"name": "nowhere", "url": "http://no-such-host.invalid/mcp"}, (422, "unresolvable_host")),
            ({"name": "bad name", "url": "https://example.com/mcp"}, (422, "invalid_request")),
            ({"name": "x" * 65, "url": "https://example.com/mcp"}, (422, "invalid_request")),
            ({"name": "ftp", "url": "ftp://example.com/mcp"}, (422, "invalid_request")),
            ({"name": "file", "url": "file:///etc/passwd"}, (422, "invalid_request")),
            ({"name": "creds", "url": "https://user:pw@example.com/mcp"}, (422, "invalid_request")),
            ({"name": "hdr", "url": "https://example.com/mcp", "headers": {"Host": "x"}}, (422, "invalid_request")),
            ({"name": "crlf", "url": "https://example.com/mcp", "headers": {"X": "a\r\nB: c"}},
             (422, "invalid_request")),
            ('{"name": "u", "url": "https://example.com/mcp", "headers": {"X": "\\ud800"}}',
             (422, "invalid_request")),
            ('{"name": "u", "url": "https://exa\\udc00mple.com/mcp"}', (422, "invalid_request")),
            ({"name": "extra", "url": "https://example.com/mcp", "token": "x"}, (422, "invalid_request")),
            ({"url": "https://example.com/mcp"}, (422, "invalid_request")),
        ]  # fmt: skip
        for body, expected in cases:
            sent = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {
                "json": body}  # a str: JSON as sent (a lone surrogate escaped in it)
            assert error(http.post("/api/v1/mcp-servers", **sent)) == expected, body
        assert error(http.post("/api/v1/mcp-servers", content=b"{not json",
                               headers={"Content-Type": "application/json"})) == (400, "invalid_json")  # fmt: skip
        assert http.get("/api/v1/mcp-servers").json() == []
        assert error(http.get("/api/v1/mcp-servers/nope")) == (404, "not_found")
        assert error(http.delete("/api/v1/mcp-servers/nope")) == (404, "not_found")
        assert error(http.patch("/api/v1/mcp-servers/nope", json={"allowed_tools": []})) == (404, "not_found")


def test_an_unreachable_server_a_duplicate_and_one_too_many(stack: Any, mcp_server: Any) -> None:
    stack.start_web(env={**LOOPBACK_ALLOWED, "PARLEY_MAX_MCP_SERVERS": "2", "PARLEY_MCP_TIMEOUT_S": "2"})
    with client(stack.web_url, stack.api_key) as http:
        down = http.post("/api/v1/mcp-servers", json={"name": "down", "url": "http://127.0.0.1:9/mcp"})
        assert error(down) == (502, "mcp_server_failed") and "127.0.0.1:9" in down.json()["error"]["message"]
        for name in ("one", "two"):
            created = http.post("/api/v1/mcp-servers", json={"name": name, "url": f"{mcp_server.url}/mcp"})
            assert created.status_code == 201
        again = http.post("/api/v1/mcp-servers", json={"name": "one", "url": f"{mcp_server.url}/mcp"})
        assert error(again) == (409, "conflict")
        third = http.post("/api/v1/mcp-servers", json={"name": "three", "url": f"{mcp_server.url}/mcp"})
        assert error(third) == (409, "too_many_mcp_servers")
        assert [s["name"] for s in http.get("/api/v1/mcp-servers").json()] == ["one", "two"]
    with client(stack.web_url, stack.api_keys["bob"]) as http:  # another tenant's limit is its own
        created = http.post("/api/v1/mcp-servers", json={"name": "one", "url": f"{mcp_server.url}/mcp"})
        assert created.status_code == 201
