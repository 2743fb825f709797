"""Hostile input to `http_get`: compression bombs and content codings, against a REAL local HTTP server.

Decompression is bounded by bytes out: whatever a server stacks, no layer gives more than
PARLEY_HTTP_GET_MAX_BYTES + 1 bytes, so memory stays a small multiple of that bound (tracemalloc's
peak, a bound and not a timing).
"""

from __future__ import annotations

import gzip
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from parley.tools import ToolError
from parley.tools.http_get import fetch_text

MAX_BYTES = 100_000
TEXT = b"plain words, " * 2000


def _gzip_of_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, made a megabyte at a time (the test itself must not hold `size` bytes)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    return b"".join([*parts, packer.flush()])


BOMB_INNER_SIZE = 256 << 20
BOMB = gzip.compress(_gzip_of_zeros(BOMB_INNER_SIZE), 9)
"""gzip of gzip of 256 MB of zeros: a few hundred bytes on the wire."""


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


ROUTES: dict[str, tuple[str, bytes]] = {
    "/bomb": ("gzip, gzip", BOMB),
    "/plain": ("identity", TEXT),
    "/gzip": ("gzip", gzip.compress(TEXT)),
    "/x-gzip": ("x-gzip", gzip.compress(TEXT)),
    "/members": ("gzip", gzip.compress(TEXT[:1000]) + gzip.compress(TEXT[1000:])),
    "/deflate": ("deflate", zlib.compress(TEXT)),
    "/raw-deflate": ("deflate", _raw_deflate(TEXT)),
    "/stacked": ("deflate, gzip", gzip.compress(zlib.compress(TEXT))),
    "/brotli": ("br", b"\x0b\x02\x80hello\x03"),
    "/four-layers": ("gzip, gzip, gzip, gzip", gzip.compress(gzip.compress(gzip.compress(gzip.compress(TEXT))))),
    "/broken": ("gzip", b"\x1f\x8b\x08\x00not gzip at all"),
}


class Handler(BaseHTTPRequestHandler):
    accept_encodings: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        Handler.accept_encodings.append(self.headers.get("Accept-Encoding", ""))
        coding, body = ROUTES[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Encoding", coding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, max_bytes: int = MAX_BYTES) -> str:
    return fetch_text(url, allow_private=True, max_bytes=max_bytes, timeout_s=10)


def body_of(text: str) -> str:
    return text.split("\n\n", 1)[1]


def test_a_gzip_of_gzip_bomb_is_cut_at_max_bytes_within_a_small_multiple_of_it_in_memory(server: str) -> None:
    assert len(BOMB) < 2_000
    fetch(f"{server}/plain")  # warm up: imports, the SSL context's first build
    tracemalloc.start()
    try:
        text = fetch(f"{server}/bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text.startswith(f"HTTP 200 {server}/bomb\ntext/plain, first {MAX_BYTES} bytes\n\n")
    assert body_of(text) == "\0" * MAX_BYTES
    assert peak < 20 * MAX_BYTES, f"decoding the bomb peaked at {peak} bytes for a limit of {MAX_BYTES}"


@pytest.mark.parametrize("path", ["/plain", "/gzip", "/x-gzip", "/members", "/deflate", "/raw-deflate", "/stacked"])
def test_identity_gzip_and_deflate_are_decoded(server: str, path: str) -> None:
    text = fetch(f"{server}{path}")
    assert text == f"HTTP 200 {server}{path}\ntext/plain, {len(TEXT)} bytes\n\n{TEXT.decode()}"
    assert Handler.accept_encodings[-1] == "gzip, deflate"


def test_a_compressed_body_is_cut_at_max_bytes(server: str) -> None:
    text = fetch(f"{server}/stacked", max_bytes=1000)
    assert text == f"HTTP 200 {server}/stacked\ntext/plain, first 1000 bytes\n\n{TEXT[:1000].decode()}"


@pytest.mark.parametrize(("path", "message"), [
    ("/brotli", "Content-Encoding br, which http_get does not decode"),
    ("/four-layers", "compressed 4 times over; http_get decodes at most 3 layers"),
    ("/broken", "sent a body that does not decompress"),
])  # fmt: skip
def test_other_codings_too_many_layers_and_broken_bodies_are_refused(server: str, path: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        fetch(f"{server}{path}")
