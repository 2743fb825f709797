"""A session's images: checked on the way in, stored once, referred to by content hash.

Messages in Redis hold refs (`img_<sha256 hex of the data URI>`), never the image itself, so a
history holds an image once however many messages or rebuilt contexts use it. The images live in
one hash per session (`keys.session_images`), written with HSETNX and deleted with the session;
a page of messages or a context window resolves its refs with one HMGET.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from parley.shared.store import keys

REF_PREFIX = "img_"
MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),  # and b"WEBP" at offset 8, checked below
}
"""The first bytes each accepted image type starts with."""


class ImageError(ValueError):
    """An image the API refuses: `too_large` tells 413 (too big) from 422 (malformed)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def image_ref(data_uri: str) -> str:
    """The ref a stored message holds for this image: `img_` + SHA-256 hex of the data URI."""
    return REF_PREFIX + hashlib.sha256(data_uri.encode()).hexdigest()


def is_ref(value: str) -> bool:
    return value.startswith(REF_PREFIX)


def check(data_uri: str, max_bytes: int) -> None:
    """Raise ImageError unless `data_uri` is `data:image/<type>;base64,...` whose decoded bytes are
    at most `max_bytes` and really are an image of that type (their magic bytes say so).

    The size is judged from the base64 length first, so an oversized image is refused before
    it is decoded."""
    head, comma, encoded = data_uri.partition(",")
    kind = head.removeprefix("data:image/").removesuffix(";base64")
    if not comma or not head.startswith("data:image/") or not head.endswith(";base64") or kind not in MAGIC:
        raise ImageError("is not a data:image/(png|jpeg|gif|webp);base64 URI")
    compact = "".join(encoded.split())
    if len(compact) * 3 // 4 > max_bytes + 2:  # the padding's worth of slack; the decoded size decides
        raise ImageError(f"is larger than {max_bytes} bytes", too_large=True)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("is not valid base64") from None
    if len(data) > max_bytes:
        raise ImageError(f"is larger than {max_bytes} bytes", too_large=True)
    if not data.startswith(MAGIC[kind]) or (kind == "webp" and data[8:12] != b"WEBP"):
        raise ImageError(f"is not a {kind.upper()} image (its bytes do not start as one does)")


def store(r: Any, tenant: str, session_id: str, data_uris: list[str]) -> list[str]:
    """Store each image once (HSETNX) in the session's image hash; returns their refs, in order.

    `r` may be a pipeline (the writes then go with it)."""
    refs = [image_ref(uri) for uri in data_uris]
    key = keys.session_images(tenant, session_id)
    for ref, uri in zip(refs, data_uris, strict=True):
        r.hsetnx(key, ref, uri)
    return refs


def lookup(r: Any, tenant: str, session_id: str, refs: list[str]) -> dict[str, str]:
    """ref -> data URI for those of `refs` that are stored, in one HMGET (none for no refs).

    For a page of messages or a context window: gather every message's refs, look them up once."""
    wanted = sorted({ref for ref in refs if is_ref(ref)})
    if not wanted:
        return {}
    found = r.hmget(keys.session_images(tenant, session_id), wanted)
    return {ref: uri for ref, uri in zip(wanted, found, strict=True) if uri}


def with_uris(refs: list[str], found: dict[str, str]) -> list[str]:
    """`refs` with each ref replaced by its URI from `found` (missing ones dropped, URIs kept)."""
    return [uri for uri in (found.get(ref) if is_ref(ref) else ref for ref in refs) if uri]
