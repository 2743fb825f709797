"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

AGENT = {
    "name": "Chef",
    "context": "You are a chef.",
    "first_message": "Hello, I am your chef.",
    "instructions": "Keep it short.",
}


def client(base_url: str, key: str | None, timeout: float = 30.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout)


def create_agent(http: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = http.post("/api/v1/agents", json={**AGENT, **overrides})
    assert response.status_code == 201, response.text
    return response.json()


def wait_job(http: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a job until its status is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("finished", "failed", "canceled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {job}")


def messages(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/api/v1/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def model_requests(stack: Any) -> list[dict[str, Any]]:
    return stack.model_server.control("requests")  # type: ignore[no-any-return]


def user_contents(request_body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request_body["messages"] if m["role"] == "user"]
