"""Images on the real stack: an oversized image is 413, one whose bytes are not the declared type
is 422, on every chat route, before anything is queued or created."""

from __future__ import annotations

import base64

import pytest

from parley.shared.store import images, keys
from parley.shared.store.sessions import message_json
from tests.integration.helpers import client, create_agent

MAX_IMAGE_BYTES = 1000


def _uri(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


REAL_PNG = _uri("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
BIG_PNG = _uri("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_IMAGE_BYTES + 1))
JPEG_AS_PNG = _uri("png", b"\xff\xd8\xff\xe0" + b"\x00" * 64)
TEXT_AS_GIF = _uri("gif", b"hello, I am no picture at all")


def _everything(stack) -> dict[str, str]:
    """Every key with its type and size (RQ's queue and jobs included)."""
    r = stack.redis()
    sizes = {"hash": r.hlen, "list": r.llen, "zset": r.zcard, "stream": r.xlen, "set": r.scard}
    return {key: f"{r.type(key)}:{sizes.get(r.type(key), lambda k: len(r.get(k) or ''))(key)}"
            for key in r.scan_iter(count=1000)}  # fmt: skip


@pytest.mark.parametrize("route", ["/api/v1/chat", "/api/v1/chat/stream", "/api/v1/chat/jobs"])
@pytest.mark.parametrize(
    ("sent", "status", "code"),
    [
        ([BIG_PNG], 413, "too_large"),
        ([REAL_PNG, BIG_PNG], 413, "too_large"),
        ([JPEG_AS_PNG], 422, "invalid_request"),
        ([REAL_PNG, TEXT_AS_GIF], 422, "invalid_request"),
    ],
    ids=["oversized", "second-oversized", "jpeg-declared-png", "text-declared-gif"],
)
def test_bad_images_are_refused_before_anything_is_queued(stack, route, sent, status, code) -> None:
    stack.start_web(env={"PARLEY_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES)})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        before = _everything(stack)
        response = http.post(route, json={"message": "look", "session_id": "s1", "images": sent})
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert "images[" in response.json()["error"]["message"]
        assert _everything(stack) == before
    r = stack.redis()
    assert r.llen(keys.rq_queue("parley-turns")) == 0 and not r.exists(keys.session("alice", "s1"))


def test_a_real_image_within_the_limit_is_accepted(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES)})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        response = http.post("/api/v1/chat/jobs", json={"message": "look", "session_id": "s1", "images": [REAL_PNG]})
        assert response.status_code == 202, response.text


def test_messages_show_stored_refs_as_data_uris(stack) -> None:
    """A committed message holds refs (as the worker stores it); the API shows the images themselves."""
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        assert http.post("/api/v1/sessions", json={"agent": "Chef", "session_id": "s1"}).status_code == 201
        r = stack.redis()
        refs = images.store(r, "alice", "s1", [REAL_PNG, REAL_PNG])
        r.rpush(keys.messages("alice", "s1"), message_json("user", "look", job_id="job_1", created_at=1, images=refs),
                message_json("assistant", "a picture", job_id="job_1", created_at=2))  # fmt: skip
        assert r.hlen(keys.session_images("alice", "s1")) == 1
        shown = http.get("/api/v1/sessions/s1/messages").json()["data"]
        assert shown[1]["images"] == [REAL_PNG, REAL_PNG] and "images" not in shown[2]
        assert http.delete("/api/v1/sessions/s1").status_code == 204
        assert not r.exists(keys.session_images("alice", "s1"))
