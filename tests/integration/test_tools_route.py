"""`GET /api/v1/tools` on a real web process: the built-ins plus the deployment's own, behind the API key;
agents may name those tools and no other; a tool module that fails to import stops web at start."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.helpers import client

BUILTINS = ["calculator", "current_time", "http_get", "recall", "remember"]

DEPLOYMENT_TOOLS = '''
from parley.tools import tool


@tool
def greet(name: str, formal: bool = False) -> str:
    """Greet someone by name.

    Args:
        name: whom to greet.
    """
    return ("Good day, " if formal else "Hi, ") + name
'''


def test_tools_lists_builtins_and_configured_modules_to_key_holders(stack, tmp_path: Path) -> None:
    (tmp_path / "tooltest_deploy.py").write_text(DEPLOYMENT_TOOLS)
    stack.start_web(env={"PARLEY_TOOL_MODULES": "tooltest_deploy", "PYTHONPATH": str(tmp_path)})

    refused = httpx.get(f"{stack.web_url}/api/v1/tools")
    assert refused.status_code == 401 and refused.json()["error"]["code"]

    with client(stack.web_url, stack.api_key) as http:
        response = http.get("/api/v1/tools")
        assert response.status_code == 200
        tools = {spec["name"]: spec for spec in response.json()}
        assert sorted(tools) == sorted([*BUILTINS, "greet"])
        assert tools["greet"] == {
            "name": "greet",
            "description": "Greet someone by name.",
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "description": "whom to greet."},
                    "formal": {"type": "boolean", "default": False},
                },
                "required": ["name"],
            },
        }
        assert tools["calculator"]["parameters"]["required"] == ["expression"]
        assert set(tools["recall"]["parameters"]["properties"]) == {"query"}  # the ToolContext is not shown

        made = http.post("/api/v1/agents", json={"name": "Greeter", "tools": ["greet", "calculator"]})
        assert made.status_code == 201, made.text
        assert made.json()["tools"] == ["greet", "calculator"]
        unknown = http.post("/api/v1/agents", json={"name": "Searcher", "tools": ["calculator", "web_search"]})
        assert unknown.status_code == 422
        assert "web_search" in unknown.json()["error"]["message"]
        changed = http.patch(f"/api/v1/agents/{made.json()['id']}", json={"tools": ["no_such_tool"]})
        assert changed.status_code == 422
        assert http.get(f"/api/v1/agents/{made.json()['id']}").json()["tools"] == ["greet", "calculator"]

    other = httpx.get(f"{stack.web_url}/api/v1/tools", headers=stack.headers("bob"))
    assert other.status_code == 200 and len(other.json()) == len(BUILTINS) + 1


def test_a_tool_module_that_fails_to_import_stops_web_at_start(stack) -> None:
    [web] = stack.start_web(env={"PARLEY_TOOL_MODULES": "tooltest_not_installed"}, wait=False)
    code = web.wait(timeout=30)
    assert code is not None and code != 0, "web started although its tool module does not exist"
    log = web.read_log()
    assert "PARLEY_TOOL_MODULES module 'tooltest_not_installed' failed to import: ModuleNotFoundError" in log
