"""The agents `make run` writes, served by the offline demo model, show the whole agent loop:
tools, a response shape and images, with no key and no network (the README's quick start)."""

from __future__ import annotations

from pathlib import Path

from parley.local.__main__ import EXAMPLE_AGENTS_YAML
from tests.integration.helpers import client, messages
from tests.integration.test_memory_turns import PNG
from tests.sse_client import collect


def test_the_example_agents_use_tools_a_shape_and_images_offline(stack, tmp_path: Path) -> None:
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(EXAMPLE_AGENTS_YAML)
    env = {"PARLEY_LLM": "demo", "PARLEY_DEMO_CHUNK_DELAY_MS": "0", "PARLEY_AGENTS_FILE": str(agents_file)}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    with client(stack.web_url, stack.api_key) as http:
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "calc: 2+2*10", "session_id": "g"})
        types = [e.type for e in events]
        assert types.index("tool_execution") < types.index("tool_result") < types.index("response")
        result = next(e.data for e in events if e.type == "tool_result")
        assert (result["preview"], result["ok"]) == ("22", True)
        assert "calculator said: 22" in events[-2].data["content"]

        noted = http.post("/api/v1/chat", json={"message": "remember: I like basil", "session_id": "g"}).json()
        assert "remember said" in noted["response"]
        recalled = http.post("/api/v1/chat", json={"message": "What do you remember?", "session_id": "g"}).json()
        assert "I like basil" in recalled["response"]

        seen = http.post("/api/v1/chat", json={"message": "what is in this picture?", "session_id": "g",
                                               "images": [PNG]})  # fmt: skip
        assert seen.status_code == 200, seen.text
        assert messages(http, "g")[-2]["images"] == [PNG]

        planned = http.post("/api/v1/chat", json={"agent": "Trip Planner", "message": "Two days in Lisbon?",
                                                  "session_id": "p"}).json()  # fmt: skip
        assert set(planned["structured"]) == {"answer", "intent"}
        assert planned["structured"]["intent"] in ("plan", "question", "other")
        assert "Two days in Lisbon?" in planned["structured"]["answer"]
