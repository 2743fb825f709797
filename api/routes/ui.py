"""The web UI: `GET /` (the page) and `GET /ui/{path}` (its files), shipped inside the package.

There is no build step: the page is ES modules served as they are in `api/ui/`. Every file is
read once, at import, into memory (with a gzip copy of the text ones), so serving costs a dict
lookup and no path from a request ever reaches the file system. Files under `ui/vendor/<name>-<version>/`
never change under one URL, so browsers keep them for a year; the page and the app's own modules
are revalidated on every load (`no-cache` + ETag), so a new release shows at once.

The page is public (the contract says so): it holds no data. The browser asks for the API key and
calls the public `/api/v1/` routes with it, like any other client. A strict Content-Security-Policy
lets the page run only its own files plus the one inline import map (allowed by its hash), talk
only to this origin, and show images only from itself or `data:` URIs.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from parley.shared.errors import NotFound

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
INDEX = "index.html"
VENDOR_DIR = "vendor/"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
}
TEXT_TYPES = ("text/", "image/svg+xml", "application/json")
GZIP_MIN_BYTES = 1024

CACHE_VENDOR = "public, max-age=31536000, immutable"
CACHE_REVALIDATE = "no-cache"

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.DOTALL)

router = APIRouter(tags=["ui"], include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the UI as it is sent."""

    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str
    cache_control: str


def _media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix, "text/plain; charset=utf-8")


def _asset(body: bytes, media_type: str, cache_control: str) -> Asset:
    compress = media_type.startswith(TEXT_TYPES) and len(body) >= GZIP_MIN_BYTES
    gzipped = gzip.compress(body, compresslevel=9, mtime=0) if compress else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, gzipped, media_type, etag, cache_control)


def load_assets(root: Path = UI_DIR) -> dict[str, Asset]:
    """Every file under `root` by its path relative to it (`app/main.js`), the page excluded."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or relative == INDEX:
            continue
        cache = CACHE_VENDOR if relative.startswith(VENDOR_DIR) else CACHE_REVALIDATE
        assets[relative] = _asset(path.read_bytes(), _media_type(path), cache)
    return assets


def content_security_policy(page: str) -> str:
    """The page's CSP: its own files only, plus its inline import map allowed by hash."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"
        for block in IMPORT_MAP.findall(page)
    ]
    return "; ".join([
        "default-src 'none'",
        "script-src 'self' " + " ".join(hashes),
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])  # fmt: skip


def _load_page(root: Path = UI_DIR) -> tuple[Asset, str]:
    text = (root / INDEX).read_text(encoding="utf-8")
    return _asset(text.encode(), MEDIA_TYPES[".html"], CACHE_REVALIDATE), content_security_policy(text)


ASSETS = load_assets()
PAGE, PAGE_CSP = _load_page()


def _send(request: Request, asset: Asset, extra: dict[str, str] | None = None) -> Response:
    """The asset, or 304 when the browser has it; gzip when the browser takes it."""
    headers = {"ETag": asset.etag, "Cache-Control": asset.cache_control, "Vary": "Accept-Encoding",
               **SECURITY_HEADERS, **(extra or {})}  # fmt: skip
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=asset.media_type)
    return Response(body, headers=headers, media_type=asset.media_type)


@router.api_route("/", methods=["GET", "HEAD"])
def page(request: Request) -> Response:
    """The chat app (public: it holds no data; the browser brings the API key)."""
    return _send(request, PAGE, {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"})


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"])
def ui_file(path: str, request: Request) -> Response:
    """One file of the app; only files shipped in the package exist here."""
    asset = ASSETS.get(path)
    if asset is None:
        raise NotFound(f"no UI file {path!r}")
    return _send(request, asset)
