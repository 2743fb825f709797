"""shared/store/images.py and its use by SessionStore: images are checked by their bytes, stored once per
session by content hash, resolved with one HMGET per page, and deleted with their session."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from parley.shared.store import images, keys
from parley.shared.store.sessions import SessionStore, message_json


def uri(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


PNG = uri("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
JPEG = uri("jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 32)
GIF = uri("gif", b"GIF89a" + b"\x00" * 32)
WEBP = uri("webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32)


class Counting:
    """A Redis client that counts the commands called on it (pipelines are not used by these reads)."""

    def __init__(self, r: Any) -> None:
        self._r = r
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._r, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def test_ref_is_the_sha256_of_the_data_uri() -> None:
    assert images.image_ref(PNG) == "img_" + hashlib.sha256(PNG.encode()).hexdigest()
    assert images.image_ref(PNG) != images.image_ref(GIF)


@pytest.mark.parametrize("image", [PNG, JPEG, GIF, WEBP, uri("gif", b"GIF87a..."), PNG[:40] + "\n" + PNG[40:]])
def test_real_images_of_each_type_pass(image: str) -> None:
    images.check(image, max_bytes=1000)


@pytest.mark.parametrize(
    "image",
    [
        uri("png", b"\xff\xd8\xff\xe0 a JPEG declared as PNG"),
        uri("jpeg", b"just some text, not an image"),
        uri("gif", b"GIF90a not a real version"),
        uri("webp", b"RIFF\x24\x00\x00\x00WAVEfmt a WAV file"),
        "data:image/png;base64,***",
        "data:image/png;base64,iVBORw0KGgo",  # bad padding
        "data:image/bmp;base64," + base64.b64encode(b"BM").decode(),
        "data:text/plain;base64,aGk=",
        "http://example.org/cat.png",
    ],
)
def test_malformed_images_are_refused_as_invalid_not_too_large(image: str) -> None:
    with pytest.raises(images.ImageError) as raised:
        images.check(image, max_bytes=1000)
    assert not raised.value.too_large


def test_size_limit_counts_decoded_bytes() -> None:
    exact = uri("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 92)  # 100 bytes
    images.check(exact, max_bytes=100)
    with pytest.raises(images.ImageError) as raised:
        images.check(exact, max_bytes=99)
    assert raised.value.too_large
    huge = "data:image/png;base64," + "A" * 4_000_000  # refused by its length, before decoding
    with pytest.raises(images.ImageError) as raised:
        images.check(huge, max_bytes=1000)
    assert raised.value.too_large


def test_an_image_is_stored_once_however_often_it_is_sent(clients) -> None:
    r = clients.text
    first = images.store(r, "acme", "s1", [PNG, GIF])
    again = images.store(r, "acme", "s1", [PNG])
    assert again == [first[0]]
    stored = r.hgetall(keys.session_images("acme", "s1"))
    assert stored == {images.image_ref(PNG): PNG, images.image_ref(GIF): GIF}
    assert r.exists(keys.session_images("acme", "s2")) == 0
    assert keys.session_images("acme", "s1") == "parley:images:acme:s1"


def test_lookup_and_with_uris_keep_order_drop_missing_pass_data_uris_in_one_hmget(clients) -> None:
    refs = images.store(clients.text, "acme", "s1", [PNG, GIF])
    r = Counting(clients.text)
    wanted = [refs[1], "img_" + "0" * 64, JPEG, refs[0], refs[1]]
    assert images.with_uris(wanted, images.lookup(r, "acme", "s1", wanted)) == [GIF, JPEG, PNG, GIF]
    assert r.calls == Counter({"hmget": 1})
    assert images.with_uris([JPEG], images.lookup(r, "acme", "s1", [JPEG])) == [JPEG]
    assert r.calls["hmget"] == 1  # no ref: no read


def _session_with_images(clients) -> SessionStore:
    sessions = SessionStore(clients.text)
    sessions.create("acme", {"id": "agent-1", "first_message": "Hi!"}, "s1", {})
    refs = images.store(clients.text, "acme", "s1", [PNG, GIF])
    stored = [
        message_json("user", "two pictures", job_id="job_1", created_at=1, images=refs, tokens=1550),
        message_json("assistant", "nice", job_id="job_1", created_at=2, tokens=5),
        message_json("user", "an old one", job_id="job_2", created_at=3, images=[JPEG]),  # stored before refs
        message_json("user", "same again", job_id="job_3", created_at=4, images=[refs[0]], tokens=780),
    ]
    clients.text.rpush(keys.messages("acme", "s1"), *stored)
    return sessions


def test_messages_page_shows_data_uris_resolved_with_one_hmget(clients) -> None:
    _session_with_images(clients)
    r = Counting(clients.text)
    page = SessionStore(r).messages("acme", "s1", limit=100, before=None)  # type: ignore[arg-type]
    shown = [m.model_dump() for m in page]
    assert [m.get("images") for m in shown] == [None, [PNG, GIF], None, [JPEG], [PNG]]
    assert r.calls["hmget"] == 1
    assert all("tokens" not in m for m in shown)  # bookkeeping stays inside
    raw = [json.loads(item) for item in clients.text.lrange(keys.messages("acme", "s1"), 0, -1)]
    assert raw[1]["images"] == [images.image_ref(PNG), images.image_ref(GIF)]  # Redis keeps refs only


def test_deleting_a_session_deletes_its_images(clients) -> None:
    sessions = _session_with_images(clients)
    sessions.delete("acme", "s1")
    assert clients.text.exists(keys.session_images("acme", "s1")) == 0
