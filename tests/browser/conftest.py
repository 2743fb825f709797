"""Browser tests: Debian's Chromium, driven by Playwright, against the REAL stack.

They reuse the integration fixtures (a real Redis, the scripted model server, real `web` and
`worker` processes from the Procfile) and add a headless Chromium. The browser is Debian's
`chromium` (`make test` installs it); Playwright never downloads one. Without a Chromium the
tests fail, they are never skipped. PARLEY_TEST_CHROMIUM names another binary.

    def test_x(ui):
        page = ui.page()                 # a fresh browser context on the stack's web
        ui.sign_in(page)
        agent = ui.create_agent(name="Chef")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, expect, sync_playwright

from tests.integration.conftest import (  # noqa: F401  (fixtures and the report hook, reused as they are)
    Stack,
    mcp_server,
    model_server,
    pytest_runtest_makereport,
    redis_server,
    stack,
)

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


def chromium_binary() -> str:
    found = os.environ.get("PARLEY_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the browser tests need Chromium and none is on PATH; `make test` installs Debian's "
                    "chromium (apt-get install chromium), or set PARLEY_TEST_CHROMIUM", pytrace=False)  # fmt: skip
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module. Not per session: while Playwright's sync API is open, its event
    loop counts as running in the main thread, and every later test calling asyncio.run() would fail."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_binary(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class UI:
    """The stack's web UI in a browser, with the test's shortcuts to the API."""

    def __init__(self, deployment: Stack, browser: Browser) -> None:
        self.stack = deployment
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.http = httpx.Client(base_url=deployment.web_url, headers=deployment.headers(), timeout=30)

    def page(self, viewport: dict[str, int] = DESKTOP, dark: bool = False) -> Page:
        """A page in a fresh context (its own localStorage), watched for dialogs, errors and CSP reports."""
        context = self.browser.new_context(base_url=self.stack.web_url, viewport=viewport,  # type: ignore[arg-type]
                                           color_scheme="dark" if dark else "light")  # fmt: skip
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._on_console)
        return page

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    # -- shortcuts --------------------------------------------------------------------

    def sign_in(self, page: Page, path: str = "/") -> None:
        page.goto(path)
        page.get_by_label("API key").fill(self.stack.api_key)
        page.get_by_label("API key").press("Enter")
        expect(page.get_by_role("button", name="Forget key")).to_be_visible()

    def create_agent(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Chef", "first_message": "Hello, I am your chef.", **fields}
        response = self.http.post("/api/v1/agents", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def create_session(self, agent: dict[str, Any], title: str = "") -> str:
        metadata = {"title": title} if title else {}
        response = self.http.post("/api/v1/sessions", json={"agent": agent["id"], "metadata": metadata})
        assert response.status_code == 201, response.text
        return response.json()["session_id"]  # type: ignore[no-any-return]

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/api/v1/sessions/{session_id}/messages")
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    def script(self, *steps: dict[str, Any]) -> None:
        self.stack.model_server.control("script", list(steps))

    def model_requests(self) -> list[dict[str, Any]]:
        return self.stack.model_server.control("requests")  # type: ignore[no-any-return]

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.http.close()


@pytest.fixture
def web_env() -> dict[str, str]:
    """Extra settings of the web process; a test overrides it with `@pytest.mark.parametrize("web_env", [...])`."""
    return {}


@pytest.fixture
def ui(stack: Stack, browser: Browser, web_env: dict[str, str]) -> Iterator[UI]:  # noqa: F811  (imported fixture)
    """One web and one worker of the real stack, and a browser to open pages on it."""
    stack.start_web(env=web_env)
    stack.start_workers()
    helper = UI(stack, browser)
    try:
        yield helper
        assert not helper.page_errors, f"uncaught errors in the page: {helper.page_errors}"
        assert not helper.csp_violations, f"the page broke its Content-Security-Policy: {helper.csp_violations}"
    finally:
        helper.close()
