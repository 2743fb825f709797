"""The usage dialog of the web UI, in a real headless Chromium against the real stack: reached from the sidebar's
Usage panel, it shows the tokens the scripted model reported and their cost, by day, agent or conversation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import UI
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

PRICES = {"PARLEY_MODEL_PRICES": "test-model=1/2", "PARLEY_CURRENCY": "EUR"}


@pytest.fixture
def web_env(stack: Stack) -> dict[str, str]:
    """Prices in every process: the workers cost each turn, the web names the currency."""
    stack.env.update(PRICES)
    return PRICES


def _turn(ui: UI, agent: dict[str, Any], session_id: str, prompt: int, completion: int) -> None:
    ui.script({"reply": "Done.", "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    answer = ui.http.post("/api/v1/chat", json={"message": "hi", "agent": agent["id"], "session_id": session_id})
    assert answer.status_code == 200, answer.text


def test_usage_dialog_by_day_agent_and_conversation(ui: UI) -> None:
    agent = ui.create_agent(model="test-model")
    _turn(ui, agent, "first", 1000, 100)
    _turn(ui, agent, "second", 3000, 300)
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}")
    panel = page.get_by_role("region", name="Usage")
    expect(panel).to_contain_text("4,400 tokens in 30 days")
    panel.get_by_role("button", name="Show usage").click()

    dialog = page.get_by_role("dialog", name="Usage")
    table = dialog.get_by_role("table", name="Usage")
    today = datetime.now(UTC).date().isoformat()
    expect(table.locator(f"tr[data-key='{today}']")).to_contain_text("4,000")
    expect(table.get_by_role("columnheader", name="Cost (EUR)")).to_be_visible()
    expect(table.locator(".usage-total")).to_contain_text("4,000")
    expect(table.locator(".usage-total")).to_contain_text("0.0048")  # 4000 x 1 + 400 x 2 per 1M tokens

    dialog.get_by_label("Group by").select_option("agent")
    expect(table.locator(f"tr[data-key='{agent['id']}'] th")).to_have_text("Chef")
    dialog.get_by_label("Group by").select_option("session")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("tr[data-key='second']")).to_contain_text("3,000")

    dialog.get_by_label("From").fill("2020-01-01")  # more than 366 days: the service's refusal is shown
    dialog.get_by_label("From").dispatch_event("change")
    expect(dialog.get_by_role("alert")).to_contain_text("366")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
