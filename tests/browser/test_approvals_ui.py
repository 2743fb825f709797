"""Approvals and MCP servers in the web UI, in a real headless Chromium against the real stack (issue 14):
a tool call that waits for a person is shown with its arguments and Approve / Deny, after a reload and in
another browser too, and the decision made in one browser reaches the other; MCP servers are added and removed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import UI

pytestmark = pytest.mark.integration

QUESTION = "What is six times seven?"
CALL = {"reply": "Let me work it out.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    box.press("Enter")


def approval(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_role("region", name="Approval needed: calculator")


def open_session(ui: UI, agent: dict[str, Any], session_id: str) -> Page:
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    return page


def waiting_job(ui: UI, session_id: str) -> dict[str, Any]:
    """The session's waiting turn, as the API shows it."""
    [job_id] = ui.http.get(f"/api/v1/sessions/{session_id}").json()["active_jobs"]
    return ui.http.get(f"/api/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]


def test_approve_after_a_reload_and_from_another_browser(ui: UI) -> None:
    agent = ui.create_agent(tools=["calculator"], approval=["*"])
    session_id = ui.create_session(agent, "Approve")
    page = open_session(ui, agent, session_id)
    ui.script(CALL, {"reply": "It is **42**."})
    send(page, QUESTION)

    card = approval(page)
    expect(card).to_be_visible()
    expect(card.locator(".approval-args")).to_contain_text('"expression": "6*7"')
    expect(card.get_by_role("button", name="Approve")).to_be_enabled()
    expect(card.get_by_role("button", name="Deny")).to_be_enabled()
    expect(page.locator(".msg-answer.is-live .status-line")).to_contain_text("Waiting for your decision")
    job = waiting_job(ui, session_id)
    assert job["status"] == "waiting", job
    [pending] = job["pending"]
    assert pending["tool_name"] == "calculator" and pending["kind"] == "approval"
    assert len(ui.model_requests()) == 1, "nothing runs while the call waits"

    page.reload()  # the same browser: the kept turn, resumed after its last event
    expect(approval(page)).to_be_visible()
    expect(approval(page).locator(".approval-args")).to_contain_text('"expression": "6*7"')
    expect(page.locator(".msg-user")).to_have_text([QUESTION])

    other = open_session(ui, agent, session_id)  # another browser: found from the session's active_jobs
    expect(approval(other)).to_be_visible()
    expect(approval(other).locator(".approval-args")).to_contain_text('"expression": "6*7"')

    approval(other).get_by_role("button", name="Approve").click()
    for shown in (other, page):  # the decision reaches both: the card gives way to the tool's step and the answer
        expect(shown.locator(".msg-answer").last.locator(".markdown")).to_have_text("It is 42.", timeout=20_000)
        expect(approval(shown)).to_have_count(0)
        step = shown.locator(".msg-answer").last.locator("details[data-step=tool]")
        expect(step).to_have_count(1)
        step.locator("summary").click()
        expect(step.locator(".step-body")).to_contain_text("42")
    roles = [m["role"] for m in ui.messages(session_id)]
    assert roles == ["assistant", "user", "assistant", "tool", "assistant"], roles
    assert len(ui.model_requests()) == 2
    assert ui.http.get(f"/api/v1/jobs/{job['job_id']}").json()["status"] == "finished"


def test_deny_with_a_reason_the_model_is_told_and_goes_on(ui: UI) -> None:
    agent = ui.create_agent(tools=["calculator"], approval=["calculator"])
    session_id = ui.create_session(agent, "Deny")
    page = open_session(ui, agent, session_id)
    ui.script(CALL, {"reply": "Fine, I will not compute it."})
    send(page, QUESTION)

    card = approval(page)
    card.get_by_label("Reason").fill("do it in your head")
    card.get_by_role("button", name="Deny").click()
    answer = page.locator(".msg-answer").last
    expect(answer.locator(".markdown")).to_have_text("Fine, I will not compute it.", timeout=20_000)
    step = answer.locator("details[data-step=tool]")
    expect(step).to_have_class(re.compile(r"\bstep-denied\b"))
    expect(step.locator("summary")).to_contain_text("denied")
    tool_messages = [m for m in ui.model_requests()[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1 and "denied" in tool_messages[0]["content"], tool_messages
    assert "do it in your head" in tool_messages[0]["content"]
    page.reload()  # from the stored history: still drawn as denied
    expect(page.locator(".msg-answer").last.locator("details[data-step=tool]")).to_have_class(
        re.compile(r"\bstep-denied\b"))  # fmt: skip


def test_a_call_decided_elsewhere_is_explained_and_the_other_one_still_waits(ui: UI) -> None:
    agent = ui.create_agent(tools=["calculator"], approval=["*"])
    session_id = ui.create_session(agent, "Twice")
    page = open_session(ui, agent, session_id)
    ui.script({"reply": "Two sums.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}},
                                                    {"name": "calculator", "arguments": {"expression": "1+1"}}]},
              {"reply": "42 and 2."})  # fmt: skip
    send(page, QUESTION)
    cards = page.locator("[data-step=approval]")
    expect(cards).to_have_count(2)
    job = waiting_job(ui, session_id)
    first, second = job["pending"]
    # Someone else approves the first call: the turn still waits for the second, so this page's stream is quiet
    # and the first card is still up. Deciding it here too gets the API's 409, said in words.
    decided = ui.http.post(f"/api/v1/jobs/{job['job_id']}/approvals",
                           json={"call_id": first["call_id"], "approve": True})  # fmt: skip
    assert decided.status_code == 202, decided.text
    card = page.locator(f"[data-call='{first['call_id']}']")
    card.get_by_role("button", name="Deny").click()
    expect(card.locator(".field-error")).to_contain_text("decided already")
    page.locator(f"[data-call='{second['call_id']}']").get_by_role("button", name="Approve").click()
    expect(page.locator(".msg-answer").last.locator(".markdown")).to_have_text("42 and 2.", timeout=20_000)
    expect(cards).to_have_count(0)
    assert [m["role"] for m in ui.messages(session_id)].count("tool") == 2


@pytest.mark.parametrize("web_env", [{"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}])
def test_mcp_servers_are_added_listed_and_removed(ui: UI, mcp_server) -> None:  # type: ignore[no-untyped-def]
    agent = ui.create_agent()
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}")
    panel = page.get_by_role("region", name="MCP servers")
    expect(panel).to_contain_text("None yet")
    panel.get_by_role("button", name="Manage").click()
    dialog = page.get_by_role("dialog", name="MCP servers")
    dialog.get_by_role("button", name="Add server").click()
    expect(dialog.locator("#mcp-name-error")).to_contain_text("required")

    dialog.get_by_label("Name", exact=True).fill("testtools")
    dialog.get_by_label("URL").fill(f"{mcp_server.url}/mcp")
    dialog.get_by_role("button", name="Add a header").click()
    dialog.get_by_label("Header 1 name").fill("X-Api-Key")
    dialog.get_by_label("Header 1 value").fill("s3cret-value")
    dialog.get_by_label("Allowed tools").fill("echo, weather")
    dialog.get_by_role("button", name="Add server").click()

    server = dialog.locator("li[data-server=testtools]")
    expect(server).to_contain_text("Headers: X-Api-Key (values hidden)")
    expect(server).to_contain_text("Allowed tools: echo, weather")
    expect(server.locator(".mcp-tools code").first).to_be_visible()
    assert "s3cret-value" not in dialog.inner_text()
    expect(panel.locator(".item-title")).to_have_text(["testtools"])
    stored = ui.http.get("/api/v1/mcp-servers/testtools").json()
    assert stored["header_names"] == ["X-Api-Key"] and "s3cret-value" not in str(stored)

    dialog.get_by_label("Name", exact=True).fill("testtools")  # the same name again: the API's 409 on its field
    dialog.get_by_label("URL").fill(f"{mcp_server.url}/mcp")
    dialog.get_by_role("button", name="Add server").click()
    expect(dialog.locator("#mcp-name-error")).not_to_be_empty()

    dialog.get_by_role("button", name="Close").click()
    page.get_by_role("button", name=f"Edit agent {agent['name']}").click()
    form = page.get_by_role("dialog", name=f"Edit {agent['name']}")
    expect(form.get_by_label(re.compile(r"^mcp:testtools/\*"))).to_be_visible()  # the server's tools to tick
    form.get_by_label(re.compile(r"^mcp:testtools/\*")).check()
    form.get_by_label("Ask before running").fill("mcp:testtools/*")
    form.get_by_role("button", name="Save").click()
    expect(form).to_be_hidden()
    saved = ui.http.get(f"/api/v1/agents/{agent['id']}").json()
    assert "mcp:testtools/*" in saved["tools"] and saved["approval"] == ["mcp:testtools/*"]

    panel.get_by_role("button", name="Manage").click()
    dialog.get_by_role("button", name="Remove MCP server testtools").click()  # confirm() is accepted
    expect(dialog.locator("li[data-server=testtools]")).to_have_count(0)
    expect(panel).to_contain_text("None yet")
    assert ui.http.get("/api/v1/mcp-servers/testtools").status_code == 404
    assert any("Remove the MCP server “testtools”" in d for d in ui.dialogs)
