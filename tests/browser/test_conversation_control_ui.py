"""Conversation control in the web UI (issue 16), in a real headless Chromium against the real stack: typing
while a turn runs (Steer, Stop and send), regenerating the last answer, editing a message and forking at one
(each a new conversation), thumbs up and down that outlive a reload, and the schedules dialog."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import UI

pytestmark = pytest.mark.integration

LONG_REPLY = " ".join(f"word{i}" for i in range(40))
QUESTION = "What is six times seven?"
# A first model call that thinks aloud slowly, then calls a tool: time for a person to steer before the second call.
SLOW_CALL = {"reply": "Let me work it out with the calculator, one step at a time.", "chunk_delay_ms": 150,
             "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}  # fmt: skip


def box(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_label("Message", exact=True)


def send(page: Page, text: str) -> None:
    box(page).fill(text)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    box(page).press("Enter")


def answers(page: Page):  # type: ignore[no-untyped-def]
    return page.locator(".msg-answer")


def open_session(ui: UI, agent: dict[str, Any], session_id: str) -> Page:
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    return page


def session_in_url(page: Page) -> str:
    found = re.search(r"[?&]session=([^&]+)", page.url)
    assert found, page.url
    return found.group(1)


def settled(page: Page) -> None:
    """No turn streams and the stored history is drawn."""
    expect(page.locator(".msg-answer.is-live")).to_have_count(0, timeout=20_000)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()


def announced(page: Page, words: str) -> None:
    """The page's polite status region said `words` (once the request behind them got its answer)."""
    expect(page.locator(".visually-hidden[role=status]")).to_contain_text(words)


def user_messages(ui: UI, session_id: str) -> list[str]:
    return [m["content"] for m in ui.messages(session_id) if m["role"] == "user"]


def test_steer_joins_the_running_turn_where_it_came(ui: UI) -> None:
    agent = ui.create_agent(tools=["calculator"])
    session_id = ui.create_session(agent, "Steer")
    page = open_session(ui, agent, session_id)
    ui.script(SLOW_CALL, {})
    send(page, QUESTION)
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("Let me")
    # The box stays open while the answer streams: Enter steers.
    expect(page.get_by_role("button", name="Steer", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Stop and send", exact=True)).to_be_visible()
    box(page).fill("Then add one")
    box(page).press("Enter")
    expect(box(page)).to_have_value("")

    live = page.locator(".msg-answer").last
    expect(live.locator("[data-step=steered]")).to_have_text(re.compile("Then add one"))
    settled(page)
    final = answers(page).last
    expect(final.locator(".markdown")).to_have_text(f"echo: Then add one | earlier: {QUESTION}")
    # Drawn where it joined: after the tool's step, before the answer's text; the same from the stored history.
    for _ in range(2):
        steps = answers(page).last.locator("[data-step]")
        expect(steps).to_have_count(3)
        assert [steps.nth(i).get_attribute("data-step") for i in range(3)] == ["thought", "tool", "steered"]
        expect(page.locator(".msg-user")).to_have_text([QUESTION])
        page.reload()
        settled(page)
    roles = [m["role"] for m in ui.messages(session_id)]
    assert roles == ["assistant", "user", "assistant", "tool", "user", "assistant"], roles
    assert user_messages(ui, session_id) == [QUESTION, "Then add one"]
    assert len(ui.model_requests()) == 2, "the steer joined the turn: no turn of its own"


def test_a_steer_too_late_for_the_turn_becomes_the_next_turn(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Late steer")
    page = open_session(ui, agent, session_id)
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 80}, {})
    send(page, "Tell me a long story")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word2")
    box(page).fill("And one more thing")
    page.get_by_role("button", name="Steer", exact=True).click()
    # The turn makes no further model call: the message is answered next, followed live by the page.
    expect(answers(page).last.locator(".markdown")).to_have_text(
        "echo: And one more thing | earlier: Tell me a long story", timeout=30_000)
    settled(page)
    expect(page.locator(".msg-user")).to_have_text(["Tell me a long story", "And one more thing"])
    expect(answers(page)).to_have_count(3)
    assert user_messages(ui, session_id) == ["Tell me a long story", "And one more thing"]


def test_a_turn_queued_elsewhere_is_followed_when_this_one_ends(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Queued elsewhere")
    page = open_session(ui, agent, session_id)
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 60}, {"chunk_delay_ms": 200})
    send(page, "Tell me a long story")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word2")
    queued = ui.http.post("/api/v1/chat/jobs", json={"session_id": session_id, "message": "Sent from my phone"})
    assert queued.status_code == 202, queued.text
    # No reload: when the first turn ends, the page follows the next one of the session live.
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("echo:", timeout=30_000)
    settled(page)
    expect(answers(page).last.locator(".markdown")).to_have_text(
        "echo: Sent from my phone | earlier: Tell me a long story")
    expect(page.locator(".msg-user")).to_have_text(["Tell me a long story", "Sent from my phone"])


def test_stop_and_send_cancels_the_running_turn_and_sends_the_new_message(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Interrupt")
    page = open_session(ui, agent, session_id)
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 100}, {})
    send(page, "Tell me a long story")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word2")
    box(page).fill("Never mind, just say hi")
    box(page).press("Alt+Enter")  # the keyboard way to Stop and send
    expect(answers(page).last.locator(".markdown")).to_have_text("echo: Never mind, just say hi", timeout=20_000)
    settled(page)
    # Nothing of the canceled turn is stored or drawn.
    expect(page.locator(".msg-user")).to_have_text(["Never mind, just say hi"])
    assert [m["role"] for m in ui.messages(session_id)] == ["assistant", "user", "assistant"]
    assert "word39" not in page.locator(".log").inner_text()


def test_regenerate_replaces_the_last_answer(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Regenerate")
    page = open_session(ui, agent, session_id)
    ui.script({"reply": "First answer."}, {"reply": "Second answer.", "chunk_delay_ms": 100})
    send(page, "Hi")
    expect(answers(page).last).to_contain_text("First answer.")
    settled(page)
    regenerate = page.get_by_role("button", name="Regenerate", exact=True)
    expect(regenerate).to_have_count(1)  # on the last answer only
    regenerate.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".log")).not_to_contain_text("First answer.")  # replaced while the new one streams
    settled(page)
    expect(answers(page).locator(".markdown")).to_have_text(["Hello, I am your chef.", "Second answer."])
    expect(page.locator(".msg-user")).to_have_text(["Hi"])
    page.reload()
    expect(answers(page).locator(".markdown")).to_have_text(["Hello, I am your chef.", "Second answer."])
    assert [m["content"] for m in ui.messages(session_id)] == ["Hello, I am your chef.", "Hi", "Second answer."]
    replaced = ui.http.get(f"/api/v1/sessions/{session_id}/messages", params={"include": "replaced"}).json()["data"]
    assert "First answer." in [m["content"] for m in replaced]
    last_request = ui.model_requests()[-1]["body"]["messages"]
    assert last_request[-1]["content"] == "Hi" and "First answer." not in str(last_request)


def test_edit_a_message_forks_before_it_and_sends_the_edit(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Original")
    page = open_session(ui, agent, session_id)
    send(page, "First question")
    settled(page)
    send(page, "Second question")
    settled(page)
    before = ui.messages(session_id)

    second = page.locator(".msg-user").nth(1)
    second.get_by_role("button", name="Edit").click()
    edit = page.get_by_label("Edited message")
    expect(edit).to_be_focused()
    edit.fill("Second question, edited")
    edit.press("Enter")
    expect(answers(page).last.locator(".markdown")).to_have_text(
        "echo: Second question, edited | earlier: First question", timeout=20_000)
    settled(page)
    forked = session_in_url(page)
    assert forked != session_id
    assert user_messages(ui, forked) == ["First question", "Second question, edited"]
    assert ui.messages(session_id) == before, "the original conversation is left as it was"
    # The conversation list shows the new one, as the current one.
    expect(page.locator(".sessions li")).to_have_count(2)
    expect(page.locator(".sessions a[aria-current=page]")).to_have_attribute("href", re.compile(re.escape(forked)))

    # Escape leaves an edit without a change.
    page.locator(".msg-user").first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited message").press("Escape")
    expect(page.get_by_label("Edited message")).to_have_count(0)
    assert session_in_url(page) == forked


def test_edit_the_first_message_starts_a_new_conversation(ui: UI) -> None:
    agent = ui.create_agent(first_message="")  # no greeting: the first user message has nothing before it
    session_id = ui.create_session(agent, "No greeting")
    page = open_session(ui, agent, session_id)
    send(page, "Hello there")
    settled(page)
    page.locator(".msg-user").first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited message").fill("Hello again")
    page.get_by_role("button", name="Send edited").click()
    expect(answers(page).last.locator(".markdown")).to_have_text("echo: Hello again", timeout=20_000)
    settled(page)
    created = session_in_url(page)
    assert created != session_id
    assert [(m["role"], m["content"]) for m in ui.messages(created)] == [
        ("user", "Hello again"), ("assistant", "echo: Hello again")]
    assert user_messages(ui, session_id) == ["Hello there"]


def test_fork_here_switches_to_a_conversation_ending_at_the_message(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Fork")
    page = open_session(ui, agent, session_id)
    send(page, "One")
    settled(page)
    send(page, "Two")
    settled(page)
    answers(page).nth(1).get_by_role("button", name="Fork here").click()
    expect(page).not_to_have_url(re.compile(f"session={re.escape(session_id)}"))
    forked = session_in_url(page)
    expect(answers(page).locator(".markdown")).to_have_text(["Hello, I am your chef.", "echo: One"])
    expect(page.locator(".msg-user")).to_have_text(["One"])
    assert [m["content"] for m in ui.messages(forked)] == ["Hello, I am your chef.", "One", "echo: One"]
    assert len(ui.messages(session_id)) == 5
    expect(page.locator(".sessions li")).to_have_count(2)
    # The fork goes on from there: the model sees only its messages.
    send(page, "Three")
    expect(answers(page).last.locator(".markdown")).to_have_text("echo: Three | earlier: One", timeout=20_000)


def test_thumbs_up_and_down_are_kept_and_toggle_off(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Feedback")
    page = open_session(ui, agent, session_id)
    send(page, "Rate me")
    settled(page)
    answer = answers(page).last
    good, bad = answer.get_by_role("button", name="Good answer"), answer.get_by_role("button", name="Bad answer")
    expect(good).to_have_attribute("aria-pressed", "false")

    def rating() -> Any:
        stored = ui.messages(session_id)[-1].get("feedback")
        return stored.get("rating") if isinstance(stored, dict) else stored

    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    announced(page, "Rated good")
    page.reload()
    answer = answers(page).last
    good, bad = answer.get_by_role("button", name="Good answer"), answer.get_by_role("button", name="Bad answer")
    expect(good).to_have_attribute("aria-pressed", "true")
    assert rating() == "up"
    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_attribute("aria-pressed", "false")
    announced(page, "Rated bad")
    assert rating() == "down"
    bad.click()  # pressing the one that is on clears it
    announced(page, "Rating cleared")
    assert rating() is None
    page.reload()
    answer = answers(page).last
    expect(answer.get_by_role("button", name="Bad answer")).to_have_attribute("aria-pressed", "false")
    expect(answer.get_by_role("button", name="Good answer")).to_have_attribute("aria-pressed", "false")


def test_schedules_are_created_listed_and_deleted(ui: UI) -> None:
    agent = ui.create_agent()
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}")
    page.get_by_role("region", name="Schedules").get_by_role("button", name="Manage schedules").click()
    dialog = page.get_by_role("dialog", name="Schedules")
    expect(dialog).to_contain_text("No schedule yet.")

    dialog.get_by_label("Message").fill("Post the daily digest")
    dialog.get_by_label("On a cron schedule").check()
    dialog.get_by_label("Cron expression").fill("0 9 * *")
    dialog.get_by_role("button", name="Create schedule").click()
    expect(dialog.locator("#sched-cron-error")).to_contain_text("Five fields")  # refused before sending
    expect(dialog.get_by_label("Cron expression")).to_be_focused()
    dialog.get_by_label("Cron expression").fill("61 9 * * *")  # five fields, but no minute 61: the API says so
    dialog.get_by_role("button", name="Create schedule").click()
    expect(dialog.locator(".field-error:not(:empty)").first).to_be_visible()
    assert _schedules(ui) == []

    dialog.get_by_label("Cron expression").fill("0 9 * * 1-5")
    dialog.get_by_label("Timezone").fill("Europe/Paris")
    dialog.get_by_role("button", name="Create schedule").click()
    item = dialog.locator("li.schedule")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Chef: cron 0 9 * * 1-5 (Europe/Paris)")
    expect(item).to_contain_text("Post the daily digest")
    expect(item).to_contain_text("Next run:")

    dialog.get_by_label("Every N seconds").check()
    dialog.get_by_label("Message").fill("Check the inbox")
    dialog.get_by_label("Interval (seconds)").fill("3600")
    dialog.get_by_role("button", name="Create schedule").click()
    expect(item).to_have_count(2)
    expect(item.nth(1)).to_contain_text("every 1 h")
    stored = _schedules(ui)
    assert sorted((s["message"], s.get("cron"), s.get("interval_s"), s.get("timezone")) for s in stored)[0][:3] == (
        "Check the inbox", None, 3600)
    assert any(s.get("cron") == "0 9 * * 1-5" and s.get("timezone") == "Europe/Paris" for s in stored)

    item.first.get_by_role("button", name=re.compile("Delete schedule")).click()  # confirmed by the fixture
    expect(item).to_have_count(1)
    assert [s["message"] for s in _schedules(ui)] == ["Check the inbox"]
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("region", name="Schedules")).to_contain_text("1 schedule")


def _schedules(ui: UI) -> list[dict[str, Any]]:
    answer = ui.http.get("/api/v1/schedules")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body if isinstance(body, list) else body["data"]  # type: ignore[no-any-return]
