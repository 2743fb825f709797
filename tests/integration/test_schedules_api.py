"""`/api/v1/schedules` on real web and worker processes: create, list, read and delete; every hostile or
mistaken request refused with a clear JSON error and nothing created; tenants never see each other's; a
schedule firing every second runs its turns in its own session, and stops when it is deleted or its agent is."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.integration.helpers import client, create_agent, messages, model_requests, user_contents, wait_job


def job_records(stack: Any, tenant: str = "alice") -> list[dict[str, str]]:
    r = stack.redis()
    return [r.hgetall(key) for key in r.scan_iter(f"parley:job:{tenant}:*")]


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def next_nine_in_paris() -> str:
    paris = ZoneInfo("Europe/Paris")
    now = datetime.now(paris)
    nine = now.replace(hour=9, minute=0, second=0, microsecond=0)
    if nine <= now:
        nine = (now + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    return nine.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_schedules_crud_validation_and_isolation(stack: Any) -> None:
    stack.start_web(env={"PARLEY_MAX_SCHEDULES": "2", "PARLEY_MAX_MESSAGE_CHARS": "100"})
    with client(stack.web_url, stack.api_key) as http:
        chef = create_agent(http)
        other = create_agent(http, name="Other")
        assert http.post("/api/v1/sessions", json={"agent": "Other", "session_id": "others"}).status_code == 201
        sessions_before = http.get("/api/v1/sessions").json()["data"]

        base = {"agent": "Chef", "message": "Suggest today's soup."}
        refusals: list[tuple[dict[str, Any], int, str]] = [
            (base, 422, "exactly one"),
            ({**base, "cron": "0 9 * * *", "interval_s": 60}, 422, "exactly one"),
            ({**base, "cron": "0 9 * *"}, 422, "5 fields"),
            ({**base, "cron": "0 9 * * * *"}, 422, "5 fields"),
            ({**base, "cron": "0 25 * * *"}, 422, "cron"),
            ({**base, "cron": "0 0 30 2 *"}, 422, "cron"),
            ({**base, "cron": "@daily"}, 422, "fields"),
            ({**base, "cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons"}, 422, "time zone"),
            ({**base, "cron": "0 9 * * *", "timezone": "../../../etc/passwd"}, 422, "time zone"),
            ({**base, "interval_s": 0}, 422, "interval_s"),
            ({**base, "interval_s": "60"}, 422, "interval_s"),
            ({**base, "interval_s": 1.5}, 422, "interval_s"),
            ({**base, "interval_s": 10**12}, 422, "interval_s"),
            ({**base, "message": "   ", "interval_s": 60}, 422, "blank"),
            ({**base, "message": "x" * 101, "interval_s": 60}, 413, "longer than 100"),
            ({**base, "agent": "Nobody", "interval_s": 60}, 404, "Nobody"),
            ({**base, "interval_s": 60, "every": "day"}, 422, "every"),
            ({**base, "interval_s": 60, "session_id": "bad id with spaces"}, 422, "session_id"),
            ({**base, "interval_s": 60, "session_id": "others"}, 409, "another agent"),
        ]  # fmt: skip
        for body, status, says in refusals:
            refused = http.post("/api/v1/schedules", json=body)
            assert refused.status_code == status, (body, refused.text)
            assert says.lower() in refused.json()["error"]["message"].lower(), (body, refused.text)
        assert http.post("/api/v1/schedules", content=b"{not json", headers={"Content-Type": "application/json"}
                         ).status_code == 400  # fmt: skip
        assert http.get("/api/v1/schedules").json() == []
        assert http.get("/api/v1/sessions").json()["data"] == sessions_before  # a refused request creates nothing

        daily = http.post("/api/v1/schedules", json={**base, "cron": " 0  9 * * * ", "timezone": "Europe/Paris"})
        assert daily.status_code == 201, daily.text
        shown = daily.json()
        assert set(shown) >= {"id", "agent_id", "message", "session_id", "cron", "interval_s", "timezone",
                              "next_run_at", "created_at", "last_run_at", "last_job_id", "runs"}  # fmt: skip
        assert shown["agent_id"] == chef["id"] and shown["cron"] == "0 9 * * *" and shown["interval_s"] is None
        assert shown["timezone"] == "Europe/Paris" and shown["next_run_at"] == next_nine_in_paris()
        assert (shown["last_run_at"], shown["last_job_id"], shown["runs"]) == (None, None, 0)
        own_session = http.get(f"/api/v1/sessions/{shown['session_id']}")
        assert own_session.status_code == 200 and own_session.json()["agent_id"] == chef["id"]
        assert own_session.json()["metadata"] == {"schedule_id": shown["id"]}

        hourly = http.post("/api/v1/schedules", json={"agent": other["id"], "message": "Ping", "interval_s": 3600,
                                                      "session_id": "others"})  # fmt: skip
        assert hourly.status_code == 201 and hourly.json()["session_id"] == "others"
        full = http.post("/api/v1/schedules", json={**base, "interval_s": 60})
        assert full.status_code == 409 and full.json()["error"]["code"] == "too_many_schedules"

        assert [s["id"] for s in http.get("/api/v1/schedules").json()] == [shown["id"], hourly.json()["id"]]
        assert http.get(f"/api/v1/schedules/{shown['id']}").json() == shown

    with client(stack.web_url, stack.api_keys["bob"]) as bob:
        assert bob.get("/api/v1/schedules").json() == []
        assert bob.get(f"/api/v1/schedules/{shown['id']}").status_code == 404
        assert bob.delete(f"/api/v1/schedules/{shown['id']}").status_code == 404
        assert bob.post("/api/v1/schedules", json={**base, "interval_s": 60}).status_code == 404  # alice's agent
        create_agent(bob)
        assert bob.post("/api/v1/schedules", json={**base, "interval_s": 60}).status_code == 201  # its own cap

    with client(stack.web_url, stack.api_key) as http:
        assert http.delete(f"/api/v1/schedules/{shown['id']}").status_code == 204
        assert http.get(f"/api/v1/schedules/{shown['id']}").status_code == 404
        assert http.delete(f"/api/v1/schedules/{shown['id']}").status_code == 404
        assert http.get(f"/api/v1/sessions/{shown['session_id']}").status_code == 200  # its session stays
        assert http.post("/api/v1/schedules", json={**base, "interval_s": 60}).status_code == 201  # room again
    assert httpx.get(f"{stack.web_url}/api/v1/schedules").status_code == 401


def test_a_schedule_fires_every_second_into_its_session_and_stops_when_deleted(stack: Any) -> None:
    stack.start_web()
    stack.start_workers(1)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        created = http.post("/api/v1/schedules", json={"agent": "Chef", "message": "Status?", "interval_s": 1})
        assert created.status_code == 201, created.text
        schedule = created.json()
        ran = wait_for(lambda: (s := http.get(f"/api/v1/schedules/{schedule['id']}").json())["runs"] >= 3 and s,
                       timeout=20, what="three firings")  # fmt: skip
        assert ran["last_job_id"] and ran["last_run_at"] and ran["next_run_at"] > ran["last_run_at"]
        assert ran["last_error"] is None
        wait_job(http, ran["last_job_id"])

        assert http.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 204
        fired = len(job_records(stack))
        time.sleep(2.5)
        assert len(job_records(stack)) == fired  # deleted: it fires no more
        assert {job["session_id"] for job in job_records(stack)} == {schedule["session_id"]}
        for key in stack.redis().scan_iter("parley:job:alice:*"):
            assert wait_job(http, key.rsplit(":", 1)[1])["status"] == "finished"
        history = messages(http, schedule["session_id"])
        asked = [m for m in history if m["role"] == "user"]
        assert len(asked) == fired and all(m["content"] == "Status?" for m in asked)
        answers = [m for m in history if m["role"] == "assistant"][1:]  # after the agent's first message
        assert len(answers) == fired and all("Status?" in m["content"] for m in answers)
        # the turns share the session's memory: the last model call saw every earlier firing's message
        assert user_contents(model_requests(stack)[-1]["body"]) == ["Status?"] * fired


def test_a_schedule_whose_agent_is_deleted_stops_and_says_why(stack: Any) -> None:
    stack.start_web()
    stack.start_workers(1)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, name="Gone")
        schedule = http.post("/api/v1/schedules", json={"agent": "Gone", "message": "Hi", "interval_s": 1}).json()
        assert http.delete("/api/v1/agents/Gone").status_code == 204
        stopped = wait_for(lambda: (s := http.get(f"/api/v1/schedules/{schedule['id']}").json())["stopped_reason"]
                           and s, timeout=10, what="the schedule stopping")  # fmt: skip
        assert stopped["next_run_at"] is None and "deleted" in stopped["stopped_reason"]
        assert stopped["runs"] == 0 and job_records(stack) == []
