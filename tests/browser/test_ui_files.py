"""How `web` serves the page and its files: headers, caching, compression, nothing else (no browser)."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from parley.api import errors
from parley.api.routes import ui


def _client() -> TestClient:
    app = FastAPI()
    errors.install(app)
    app.include_router(ui.router)
    return TestClient(app)


def test_the_page_is_public_uncached_and_under_a_strict_csp() -> None:
    response = _client().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    import_map = re.search(r'<script type="importmap">(.*?)</script>', response.text, re.DOTALL)
    assert import_map is not None
    digest = base64.b64encode(hashlib.sha256(import_map.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp, "the import map must be allowed by its hash, and nothing else inline"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_every_file_the_page_names_exists_and_vendor_files_are_immutable() -> None:
    client = _client()
    page = client.get("/").text
    names = [name for name in re.findall(r'"(/ui/[^"]+)"', page) if not name.endswith("/")]
    assert any("/vendor/preact-" in name for name in names)
    for name in names:
        response = client.get(name)
        assert response.status_code == 200, name
        expected = "public, max-age=31536000, immutable" if "/vendor/" in name else "no-cache"
        assert response.headers["cache-control"] == expected, name
    for path in ui.ASSETS:
        if path.startswith("vendor/") and path.endswith((".js", ".mjs")):
            folder = path.rsplit("/", 1)[0].split("/")[1]
            assert f"vendor/{folder}/LICENSE" in ui.ASSETS, f"{folder} ships without its licence"


def test_revalidation_compression_and_unknown_files() -> None:
    client = _client()
    first = client.get("/ui/app/main.js", headers={"Accept-Encoding": "gzip"})
    assert first.status_code == 200 and first.headers["content-encoding"] == "gzip"
    assert first.headers["content-type"].startswith("text/javascript")
    again = client.get("/ui/app/main.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for path in ("/ui/nope.js", "/ui/../routes/ui.py", "/ui/%2e%2e/routes/ui.py"):
        missing = client.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["code"] == "not_found"
