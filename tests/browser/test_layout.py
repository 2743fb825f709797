"""Light and dark, desktop and phone width: the page fits, follows the system theme, and the
screenshots in docs/screenshots/ come from here:

    PARLEY_SCREENSHOTS_DIR=docs/screenshots make test PYTEST_ARGS="tests/browser/test_layout.py"
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import DESKTOP, PHONE, UI

pytestmark = pytest.mark.integration

RICH_REPLY = """Here is a **quick tomato pasta** for two:

1. Boil 200 g of spaghetti.
2. Warm olive oil with *garlic* and chilli.
3. Add tomatoes and basil.

```python
def portions(people: int) -> int:
    return 100 * people  # grams of pasta
```

| ingredient | amount |
| --- | --- |
| spaghetti | 200 g |
| tomatoes | 400 g |
"""


def _shots_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("PARLEY_SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _fits_width(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def _background_is_dark(page: Page) -> bool:
    rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) < 100


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_views_fit_and_follow_the_system_theme(ui: UI, tmp_path: Path, dark: bool, width: str) -> None:
    shots = _shots_dir(tmp_path)
    theme = "dark" if dark else "light"
    agent = ui.create_agent(name="Chef", description="Mediterranean recipes, short and simple",
                            first_message="Hello! What shall we cook today?")  # fmt: skip
    ui.create_session(agent, "Something with basil?")
    session_id = ui.create_session(agent, "A quick pasta for two")
    page = ui.page(viewport=PHONE if width == "phone" else DESKTOP, dark=dark)

    page.goto("/")
    expect(page.get_by_label("API key")).to_be_visible()
    assert _background_is_dark(page) is dark
    assert _fits_width(page)
    page.screenshot(path=str(shots / f"signin-{width}-{theme}.png"))

    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script({"reply": RICH_REPLY})
    page.get_by_label("Message", exact=True).fill("A quick pasta for two, please")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(".msg-answer").last.locator("pre code.hljs")).to_be_visible()  # highlighted
    expect(page.locator(".msg-answer .markdown table")).to_be_visible()
    page.get_by_label("Message", exact=True).fill("And a dessert?")
    assert _fits_width(page)
    page.screenshot(path=str(shots / f"chat-{width}-{theme}.png"))

    sidebar = page.get_by_role("navigation", name="Agents and conversations")
    toggle = page.get_by_role("button", name="Agents and conversations")
    if width == "phone":
        expect(sidebar).to_be_hidden()
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(sidebar).to_be_visible()
        expect(sidebar.get_by_role("button", name="New agent")).to_be_focused()  # focus moves into the drawer
        assert page.evaluate("document.querySelector('main').inert")  # and the chat behind it is out of reach
        page.wait_for_timeout(300)  # the slide-in transition
        page.screenshot(path=str(shots / f"sidebar-{width}-{theme}.png"))
        sidebar.get_by_role("link", name="Something with basil?").click()
        expect(sidebar).to_be_hidden()
        expect(page.locator(".msg-answer")).to_have_text(["Hello! What shall we cook today?"])
    else:
        expect(toggle).to_be_hidden()
        expect(sidebar.get_by_role("link", name="A quick pasta for two")).to_have_attribute("aria-current", "page")
        page.get_by_role("button", name="Edit agent Chef").click()
        expect(page.get_by_role("dialog", name="Edit Chef")).to_be_visible()
        page.screenshot(path=str(shots / f"agent-form-{width}-{theme}.png"))
        page.keyboard.press("Escape")
        expect(page.get_by_role("dialog")).to_be_hidden()
    assert _fits_width(page)


@pytest.mark.parametrize("web_env", [{"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}])
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_approval_and_mcp_servers_fit(ui: UI, mcp_server, tmp_path: Path, dark: bool,  # type: ignore[no-untyped-def]
                                      width: str) -> None:  # fmt: skip
    """A tool call waiting for a decision, and the MCP servers dialog with a server: they fit, in both themes."""
    shots = _shots_dir(tmp_path)
    theme = "dark" if dark else "light"
    created = ui.http.post("/api/v1/mcp-servers", json={"name": "tools", "url": f"{mcp_server.url}/mcp",
                                                         "headers": {"Authorization": "Bearer s3cret"}})  # fmt: skip
    assert created.status_code == 201, created.text
    agent = ui.create_agent(name="Chef", description="Mediterranean recipes, short and simple", tools=["http_get"],
                            approval=["http_get"], first_message="Hello! What shall we cook today?")  # fmt: skip
    session_id = ui.create_session(agent, "Today's market prices")
    page = ui.page(viewport=PHONE if width == "phone" else DESKTOP, dark=dark)
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script({"reply": "Let me look at the market's price list.",
               "tool_calls": [{"name": "http_get", "arguments": {"url": "https://market.example.com/prices.json"}}]})
    page.get_by_label("Message", exact=True).fill("What do tomatoes cost today?")
    page.get_by_label("Message", exact=True).press("Enter")
    card = page.get_by_role("region", name="Approval needed: http_get")
    expect(card.get_by_role("button", name="Approve")).to_be_visible()
    card.get_by_label("Reason").fill("Use last week's prices instead")
    assert _fits_width(page)
    page.screenshot(path=str(shots / f"approval-{width}-{theme}.png"))

    if width == "phone":
        page.get_by_role("button", name="Agents and conversations").click()
    page.get_by_role("region", name="MCP servers").get_by_role("button", name="Manage").click()
    dialog = page.get_by_role("dialog", name="MCP servers")
    expect(dialog.locator("li[data-server=tools]")).to_contain_text("Authorization (values hidden)")
    dialog.get_by_role("button", name="Add a header").click()
    assert _fits_width(page)
    page.screenshot(path=str(shots / f"mcp-servers-{width}-{theme}.png"))


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_typing_while_an_answer_streams_fits(ui: UI, tmp_path: Path, dark: bool, width: str) -> None:
    """Conversation control: each message's actions, and the box while an answer streams (Steer, Stop and send,
    Stop, a steered message waiting to join): they fit, in both themes."""
    shots = _shots_dir(tmp_path)
    theme = "dark" if dark else "light"
    agent = ui.create_agent(name="Chef", description="Mediterranean recipes, short and simple",
                            first_message="Hello! What shall we cook today?")  # fmt: skip
    session_id = ui.create_session(agent, "A quick pasta for two")
    page = ui.page(viewport=PHONE if width == "phone" else DESKTOP, dark=dark)
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script({"reply": "Spaghetti with tomatoes, garlic and basil: twenty minutes."},
              {"reply": RICH_REPLY, "chunk_delay_ms": 150})  # fmt: skip
    box = page.get_by_label("Message", exact=True)
    box.fill("A quick pasta for two, please")
    box.press("Enter")
    expect(page.get_by_role("button", name="Regenerate", exact=True)).to_be_visible()
    box.fill("And a dessert?")
    box.press("Enter")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("quick tomato")
    box.fill("Without nuts, please")
    box.press("Enter")
    expect(page.locator(".msg-steer")).to_contain_text("Without nuts")
    box.fill("Actually, something with lemons")
    expect(page.get_by_role("button", name="Stop and send", exact=True)).to_be_enabled()
    assert _fits_width(page)
    page.screenshot(path=str(shots / f"steer-{width}-{theme}.png"))
    page.get_by_role("button", name="Stop", exact=True).click()


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_schedules_dialog_fits(ui: UI, tmp_path: Path, dark: bool, width: str) -> None:
    """The schedules dialog with two schedules and the form: it fits, in both themes."""
    shots = _shots_dir(tmp_path)
    theme = "dark" if dark else "light"
    agent = ui.create_agent(name="Chef", first_message="Hello! What shall we cook today?")
    for body in ({"message": "Suggest three dinners for the week", "cron": "0 9 * * 1", "timezone": "Europe/Paris"},
                 {"message": "Check what is in season", "interval_s": 86400}):  # fmt: skip
        created = ui.http.post("/api/v1/schedules", json={"agent": agent["id"], **body})
        assert created.status_code == 201, created.text
    page = ui.page(viewport=PHONE if width == "phone" else DESKTOP, dark=dark)
    ui.sign_in(page, f"/?agent={agent['id']}")
    if width == "phone":
        page.get_by_role("button", name="Agents and conversations").click()
    page.get_by_role("region", name="Schedules").get_by_role("button", name="Manage schedules").click()
    dialog = page.get_by_role("dialog", name="Schedules")
    expect(dialog.locator("li.schedule")).to_have_count(2)
    dialog.get_by_label("On a cron schedule").check()
    expect(dialog.get_by_label("Timezone")).to_be_visible()
    dialog.evaluate("dialog => { dialog.scrollTop = 0; }")  # the list first
    assert _fits_width(page)
    page.screenshot(path=str(shots / f"schedules-{width}-{theme}.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
