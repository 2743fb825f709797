"""The web UI in a real headless Chromium against real web + worker + Redis + the scripted model."""

from __future__ import annotations

import base64
import re
import time

import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import UI

pytestmark = pytest.mark.integration

LONG_REPLY = " ".join(f"word{i}" for i in range(60))


def answers(page: Page):  # type: ignore[no-untyped-def]
    return page.locator(".msg-answer")


LIVE_TEXT = """() => {
  const live = document.querySelector('.msg-answer.is-live');
  return live ? (live.querySelector('.markdown')?.innerText ?? '') : null;
}"""


def live_text(page: Page) -> str | None:
    """The text of the answer streaming in ('' before its first words), None when none is."""
    return page.evaluate(LIVE_TEXT)  # type: ignore[no-any-return]  # one atomic read of the page


def message_box(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_label("Message", exact=True)


def send(page: Page, text: str) -> None:
    """Type a message and press Enter once the page takes one (Send is enabled)."""
    message_box(page).fill(text)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    message_box(page).press("Enter")


def test_sign_in_create_an_agent_and_watch_the_answer_grow(ui: UI) -> None:
    page = ui.page()
    page.goto("/")
    # Keyboard only: the key box has the focus, Enter signs in.
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(ui.stack.api_key)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Create an agent").click()

    dialog = page.get_by_role("dialog", name="New agent")
    dialog.get_by_label("Name", exact=True).fill("Chef")
    dialog.get_by_label("First message").fill("Hello, I am your chef.")
    dialog.get_by_label("Response shape").fill("{not json")
    dialog.get_by_role("button", name="Create agent").click()
    expect(dialog.locator("#agent-response_shape-error")).to_contain_text("Not valid JSON")
    dialog.get_by_label("Response shape").fill("")
    dialog.get_by_label("Max turns").fill("0")
    dialog.get_by_role("button", name="Create agent").click()
    # The API's own 422 detail, on its field.
    expect(dialog.locator("#agent-max_turns-error")).to_contain_text("greater than or equal to 1")
    expect(dialog.get_by_label("Max turns")).to_have_attribute("aria-invalid", "true")
    dialog.get_by_label("Max turns").fill("")
    dialog.get_by_role("button", name="Create agent").click()
    expect(dialog).to_be_hidden()

    expect(answers(page).first).to_have_text("Hello, I am your chef.")
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 60})
    send(page, "What shall we cook?")

    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = live_text(page)
        if text is None and seen:
            break
        words = len((text or "").split())
        if words and (not seen or words != seen[-1]):
            seen.append(words)
        time.sleep(0.05)
    assert len(seen) >= 3 and seen == sorted(seen), f"the answer did not grow live: {seen}"
    assert seen[0] < 60
    expect(answers(page).last).to_have_text(LONG_REPLY)
    expect(page.locator(".msg-user")).to_have_text(["What shall we cook?"])

    # The URL names the agent and the session; a reload lands on the same conversation.
    assert re.search(r"[?&]agent=[^&]+&session=[^&]+", page.url), page.url
    session_id = re.search(r"session=([^&]+)", page.url).group(1)  # type: ignore[union-attr]
    expect(page.get_by_role("link", name=re.compile("What shall we cook"))).to_have_attribute("aria-current", "page")
    page.reload()
    expect(answers(page)).to_have_text(["Hello, I am your chef.", LONG_REPLY])
    assert [m["role"] for m in ui.messages(session_id)] == ["assistant", "user", "assistant"]


def test_reload_mid_answer_reattaches_and_the_answer_finishes_once(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Reload")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 70})
    send(page, "Tell me a long story")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word5")
    assert "word59" not in (live_text(page) or "")

    resumed_after: list[str | None] = []
    page.on("request", lambda request: resumed_after.append(request.headers.get("last-event-id"))
            if request.url.endswith("/events") else None)  # fmt: skip
    page.reload()
    # Back on the same conversation, following the running turn live, not just reading history:
    # the text drawn before the reload comes back at once, the rest after its last event.
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word5")
    expect(page.locator(".msg-user")).to_have_text(["Tell me a long story"])
    expect(page.locator(".msg-answer.is-live")).to_have_count(0, timeout=20_000)
    expect(answers(page)).to_have_text(["Hello, I am your chef.", LONG_REPLY])
    assert page.locator(".msg-answer").last.inner_text().count("word17") == 1
    assert len(ui.model_requests()) == 1, "the turn ran once"
    assert len(resumed_after) == 1 and resumed_after[0], f"reattached without Last-Event-ID: {resumed_after}"
    assert [m["role"] for m in ui.messages(session_id)] == ["assistant", "user", "assistant"]


def test_html_from_the_user_and_the_model_is_shown_as_text_and_runs_nothing(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "XSS")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    attack = "<img src=x onerror=alert(1)>"
    model_attack = 'Look: <script>window.__pwned = 1; alert(2)</script> <img src=y onerror="window.__pwned = 2">'
    tracker = "\n\n![pixel](http://127.0.0.1:9/pixel.png)"  # an image elsewhere: shown as a link, never fetched
    ui.script({"reply": model_attack + tracker}, {})  # the second answer is the default echo of the user's message

    send(page, attack)
    expect(answers(page).last).to_contain_text("<script>window.__pwned = 1; alert(2)</script>")
    send(page, f"again {attack}")
    expect(answers(page).last).to_contain_text(f"echo: again {attack}")

    for _ in range(2):  # live, then as stored history after a reload
        expect(page.locator(".msg-user").first).to_have_text(attack)
        expect(answers(page).nth(1)).to_contain_text(model_attack)
        expect(answers(page).nth(1).get_by_role("link", name="pixel")).to_have_attribute(
            "href", "http://127.0.0.1:9/pixel.png")
        assert page.locator(".log script, .log img, .log [onerror]").count() == 0
        assert page.evaluate("window.__pwned") is None
        page.reload()
        expect(answers(page)).to_have_count(3)
    assert ui.dialogs == [], f"the page ran an injected script: {ui.dialogs}"


def test_a_wrong_key_shows_the_sign_in_again(ui: UI) -> None:
    page = ui.page()
    page.goto("/")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("refused")
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("localStorage.getItem('parley.apiKey')") is None

    # A kept key that stopped working (rotated): the next request sends the user back to the sign-in.
    ui.sign_in(page)
    page.evaluate("localStorage.setItem('parley.apiKey', 'rotated-key')")
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("refused the saved API key")
    expect(page.get_by_label("API key")).to_be_visible()

    # Forget key: gone from the browser, sign-in shown.
    ui.sign_in(page)
    page.evaluate("localStorage.setItem('parley.pending', '{}')")
    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("[localStorage.getItem('parley.apiKey'), localStorage.getItem('parley.pending')]") == [
        None, None]


def test_stop_cancels_the_running_turn_and_nothing_is_stored(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Stop")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 100})
    send(page, "Go on and on")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word2")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Stopped. This answer was not saved.")
    expect(page.get_by_role("button", name="Send again")).to_be_visible()
    assert [m["role"] for m in ui.messages(session_id)] == ["assistant"]


def test_a_failed_turn_is_explained_and_try_again_answers(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Failure")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script(*[{"status": 500} for _ in range(4)])  # the first attempt and the SDK's 3 retries
    send(page, "Are you there?")
    problem = page.locator(".problem")
    expect(problem).to_contain_text("The model failed to answer", timeout=30_000)
    problem.get_by_role("button", name="Try again").click()
    expect(answers(page).last).to_have_text("echo: Are you there?")
    expect(page.locator(".problem")).to_have_count(0)
    assert [m["content"] for m in ui.messages(session_id)][1:] == ["Are you there?", "echo: Are you there?"]


def test_a_dropped_stream_resumes_with_last_event_id_without_repeating_text(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Drop")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    # Reconnections that got an answer (attempts while no web listened have no response to look at).
    resumed_after: list[str | None] = []
    page.on("response", lambda response: resumed_after.append(response.request.headers.get("last-event-id"))
            if response.url.endswith("/events") else None)  # fmt: skip
    ui.script({"reply": LONG_REPLY, "chunk_delay_ms": 80})
    send(page, "Keep talking")
    expect(page.locator(".msg-answer.is-live .markdown")).to_contain_text("word3")

    web = ui.stack.webs[0]
    web.terminate()  # its streams end with a retry hint; the page reconnects to the new process
    web.restart()
    expect(page.locator(".msg-answer.is-live")).to_have_count(0, timeout=30_000)
    expect(answers(page).last).to_have_text(LONG_REPLY)
    assert resumed_after and all(resumed_after), f"resumed without Last-Event-ID: {resumed_after}"
    assert len(ui.model_requests()) == 1


PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2e7a1b80000000049454e44ae426082"
)


def test_images_are_previewed_size_checked_and_sent(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Images")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    file_input = page.locator("input[type=file]")
    dot: FilePayload = {"name": "dot.png", "mimeType": "image/png", "buffer": PNG_1PX}
    too_big: FilePayload = {"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * (5 * 1024 * 1024 + 1)}
    file_input.set_input_files([dot, too_big])
    expect(page.get_by_role("list", name="Attached images").get_by_role("img")).to_have_count(1)
    expect(page.locator(".composer .field-error")).to_contain_text("huge.png is 5.0 MB")
    send(page, "What is in this picture?")
    expect(answers(page).last).to_have_text("echo: What is in this picture?")
    expect(page.locator(".msg-user img")).to_have_count(1)
    stored = ui.messages(session_id)[1]
    assert stored["images"] == ["data:image/png;base64," + base64.b64encode(PNG_1PX).decode()]


def test_conversations_newest_first_page_by_page_new_and_delete(ui: UI) -> None:
    agent = ui.create_agent()
    for number in range(1, 23):
        ui.create_session(agent, f"Talk {number}")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}")
    sessions = page.locator(".sessions li .item-title")
    expect(sessions).to_have_count(20)
    expect(sessions.first).to_have_text("Talk 22")
    page.get_by_role("button", name="Load more").click()
    expect(sessions).to_have_count(22)
    expect(sessions.last).to_have_text("Talk 1")

    # A new conversation starts as a draft with the first message; sending creates it, titled after it.
    page.get_by_role("button", name="New", exact=True).click()
    expect(answers(page)).to_have_text(["Hello, I am your chef."])
    send(page, "Soup tonight?")
    expect(answers(page).last).to_have_text("echo: Soup tonight?")
    expect(sessions.first).to_have_text("Soup tonight?")
    session_id = re.search(r"session=([^&]+)", page.url).group(1)  # type: ignore[union-attr]

    page.get_by_role("button", name="Delete conversation “Soup tonight?”").click()  # confirm() is accepted
    expect(sessions.first).to_have_text("Talk 22")
    expect(page).not_to_have_url(re.compile("session="))
    assert ui.http.get(f"/api/v1/sessions/{session_id}").status_code == 404
    assert ui.dialogs == ["confirm: Delete “Soup tonight?” and all its messages?"]


@pytest.mark.parametrize("web_env", [{"PARLEY_RATE_LIMIT_TURNS": "1", "PARLEY_RATE_WINDOW_S": "3"}])
def test_too_many_requests_says_when_to_try_again_and_the_retry_is_stored_once(ui: UI) -> None:
    agent = ui.create_agent()
    session_id = ui.create_session(agent, "Busy")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    send(page, "One")
    expect(answers(page).last).to_have_text("echo: One")
    send(page, "Two")
    problem = page.locator(".problem")
    expect(problem).to_contain_text(re.compile(r"Parley is busy \(too many requests\)\. Try again in \d+ s\."))
    page.wait_for_timeout(3_500)  # the key's window passes
    problem.get_by_role("button", name="Try again").click()
    expect(answers(page).last).to_have_text("echo: Two | earlier: One")
    assert [m["content"] for m in ui.messages(session_id) if m["role"] == "user"] == ["One", "Two"]


def test_tool_steps_show_live_and_from_history_as_collapsible_steps(ui: UI) -> None:
    agent = ui.create_agent(tools=["calculator"])
    session_id = ui.create_session(agent, "Tools")
    page = ui.page()
    ui.sign_in(page, f"/?agent={agent['id']}&session={session_id}")
    ui.script(
        {"reply": "Let me work it out.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"reply": "It is **42**.", "chunk_delay_ms": 40},
    )  # fmt: skip
    message_box(page).fill("What is six times seven?")
    message_box(page).press("Enter")

    for _ in range(2):  # live, then as stored history after a reload
        answer = answers(page).last
        expect(answer.locator(".markdown")).to_have_text("It is 42.")
        thought = answer.locator("[data-step=thought]")
        expect(thought).to_have_text("Let me work it out.")  # the thought is a step, not part of the answer
        step = answer.locator("details[data-step=tool]")
        expect(step).to_have_count(1)
        expect(step.locator("summary")).to_contain_text("calculator")
        expect(step).not_to_have_attribute("open", "")  # collapsed until asked
        step.locator("summary").click()
        expect(step.locator(".step-body")).to_contain_text("42")
        expect(step.locator(".step-body")).to_contain_text('"expression": "6*7"')
        page.reload()
    assert [m["role"] for m in ui.messages(session_id)] == ["assistant", "user", "assistant", "tool", "assistant"]


def test_the_agent_form_edits_fallback_models_and_the_turn_caps(ui: UI) -> None:
    agent = ui.create_agent(fallback_models=["backup-a"], max_tool_steps=3, max_turn_tokens=5000)
    ui.create_session(agent, "Caps")
    page = ui.page()
    ui.sign_in(page)
    page.get_by_role("button", name="Edit agent Chef").click()
    dialog = page.get_by_role("dialog", name="Edit Chef")
    expect(dialog.get_by_label("Fallback models")).to_have_value("backup-a")
    expect(dialog.get_by_label("Max tool steps")).to_have_value("3")
    expect(dialog.get_by_label("Max tokens per turn")).to_have_value("5000")

    dialog.get_by_label("Max tool steps").fill("101")  # past the API's bound: its 422, on the field
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator("#agent-max_tool_steps-error")).to_contain_text("less than or equal to 100")
    dialog.get_by_label("Fallback models").fill("backup-a, backup-b")
    dialog.get_by_label("Max tool steps").fill("5")
    dialog.get_by_label("Max tokens per turn").fill("")  # cleared: the server's default again
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()

    saved = ui.http.get(f"/api/v1/agents/{agent['id']}").json()
    assert saved["fallback_models"] == ["backup-a", "backup-b"]
    assert saved["max_tool_steps"] == 5 and saved["max_turn_tokens"] is None
