"""Structured logs (shared/logs.py) and the request id (api/middleware.py): one JSON object per
line with the ids of what the line is about, kept apart between concurrent requests."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from parley.api.middleware import RequestContext
from parley.shared import logs
from parley.shared.settings import Settings


@pytest.fixture(autouse=True)
def fresh_context() -> Iterator[None]:
    logs.set_context()
    yield
    logs.set_context()


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """A JSON handler on a test logger; call the fixture's value for the lines logged so far."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("parley.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_json_line_has_the_decided_fields(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    logs.set_context(request_id="r1", tenant="acme")
    logs.bind(session_id="s1", job_id="job_1")
    logging.getLogger("parley.test").warning("turn %s failed: %s", "job_1", "é \"quoted\"\nnext")
    [line] = json_lines()
    assert set(line) == {"ts", "level", "logger", "msg", "request_id", "tenant", "session_id", "job_id"}
    assert line["level"] == "WARNING" and line["logger"] == "parley.test"
    assert line["msg"] == 'turn job_1 failed: é "quoted"\nnext'
    assert (line["request_id"], line["tenant"], line["session_id"], line["job_id"]) == ("r1", "acme", "s1", "job_1")
    assert line["ts"].endswith("Z") and "T" in line["ts"]


def test_unknown_ids_are_left_out_and_exceptions_kept(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("parley.test").exception("oops")
    [line] = json_lines()
    assert "request_id" not in line and "job_id" not in line
    assert "ValueError: bad" in line["exc"]


def test_bind_adds_and_set_context_replaces() -> None:
    logs.set_context(tenant="acme", job_id="job_1")
    logs.bind(session_id="s1", job_id=None)
    assert logs.context() == {"tenant": "acme", "job_id": "job_1", "session_id": "s1"}
    logs.set_context(job_id="job_2")  # the next turn on this thread: nothing of the last one stays
    assert logs.context() == {"job_id": "job_2"}


def test_a_turn_sets_its_ids_and_leaves_none_behind() -> None:
    """Two turns awaited one after the other in one task (as a job runner may): each logs its own ids only, and
    the task's ids are as they were after each."""
    seen: list[dict[str, str]] = []

    @logs.turn_context
    async def run_turn(tenant: str, job_id: str) -> str:
        logs.bind(session_id=f"s_{job_id}")
        await asyncio.sleep(0)
        seen.append(logs.context())
        return "finished"

    async def one_task() -> list[dict[str, str]]:
        logs.set_context(job_id="job_before")
        after: list[dict[str, str]] = []
        for job_id in ("job_1", "job_2"):
            assert await run_turn("acme", job_id) == "finished"
            after.append(logs.context())
        return after

    assert asyncio.run(one_task()) == [{"job_id": "job_before"}] * 2
    assert seen == [{"tenant": "acme", "job_id": "job_1", "session_id": "s_job_1"},
                    {"tenant": "acme", "job_id": "job_2", "session_id": "s_job_2"}]  # fmt: skip
    assert run_turn.__name__ == "run_turn"


def test_concurrent_tasks_keep_their_own_ids(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    async def request(request_id: str) -> None:
        logs.set_context(request_id=request_id)
        await asyncio.sleep(0.01)
        logging.getLogger("parley.test").info("handled %s", request_id)

    async def both() -> None:
        await asyncio.gather(request("a"), request("b"))

    asyncio.run(both())
    assert sorted((line["msg"], line["request_id"]) for line in json_lines()) == [("handled a", "a"),
                                                                                 ("handled b", "b")]  # fmt: skip


def test_configure_logging_json_and_text(make_settings: Callable[..., Settings]) -> None:
    root = logging.getLogger()
    uvicorn_access = logging.getLogger("uvicorn.access")
    before_root, before_level, before_uvicorn = list(root.handlers), root.level, list(uvicorn_access.handlers)
    uvicorn_access.handlers = [logging.StreamHandler(io.StringIO())]  # as uvicorn sets itself up
    try:
        logs.configure_logging(make_settings(PARLEY_LOG_FORMAT="json", PARLEY_LOG_LEVEL="debug"))
        logs.configure_logging(make_settings(PARLEY_LOG_FORMAT="json", PARLEY_LOG_LEVEL="debug"))
        ours = [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert root.level == logging.DEBUG
        assert uvicorn_access.handlers == ours  # uvicorn's lines are JSON too
        logs.configure_logging(make_settings(PARLEY_LOG_FORMAT="text"))
        [text] = [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]
        assert not isinstance(text.formatter, logs.JsonFormatter)
        assert text.formatter._fmt == logs.TEXT_FORMAT  # type: ignore[union-attr]
    finally:
        root.handlers, uvicorn_access.handlers = before_root, before_uvicorn
        root.setLevel(before_level)


def test_log_format_setting_refuses_others(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().log_format == "text"
    with pytest.raises(ValueError):
        make_settings(PARLEY_LOG_FORMAT="xml")


# --- the request id --------------------------------------------------------------------------


def _app() -> Starlette:
    async def where(request: Request) -> JSONResponse:
        return JSONResponse(logs.context())

    return Starlette(routes=[Route("/where", where)], middleware=[])


@pytest.fixture
def http() -> Iterator[TestClient]:
    app = RequestContext(_app())
    with TestClient(app) as client:  # type: ignore[arg-type]
        yield client


def test_a_request_gets_an_id_in_context_and_header(http: TestClient) -> None:
    first, second = http.get("/where"), http.get("/where")
    assert first.json()["request_id"] == first.headers["X-Request-ID"]
    assert len(first.headers["X-Request-ID"]) == 32
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_a_sane_incoming_id_is_kept_and_others_replaced(http: TestClient) -> None:
    kept = http.get("/where", headers={"X-Request-ID": "edge-7f3a:01"})
    assert kept.headers["X-Request-ID"] == "edge-7f3a:01" == kept.json()["request_id"]
    for bad in ("x" * 129, "has space", "new\\nline", "{json}"):
        replaced = http.get("/where", headers={"X-Request-ID": bad})
        assert replaced.headers["X-Request-ID"] != bad
        assert len(replaced.headers["X-Request-ID"]) == 32
