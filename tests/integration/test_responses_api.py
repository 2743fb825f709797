"""The Responses API (`/v1/responses`) with the official `openai` SDK, unmodified, against the real stack: create
(string and items), memory through previous_response_id, stream events and their sequence numbers, a resumed stream
(`retrieve(stream=True, starting_after=n)`) giving exactly the same events, background + retrieve, cancel, delete,
input items, a function tool round trip and structured output; the agent's own tool calls and approval waits as
Parley's extension items (`parley:tool_call`, `parley:approval_request`) through the SDK; `input_file` text read or
refused; the offline demo model calling a client tool. The scripted model records what it was sent."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import openai
import pytest

from tests.integration.helpers import client, create_agent, model_requests, user_contents


def _sdk(stack: Any) -> Any:
    """The official client, typed loosely: the tests send what the SDK's overloads do not spell (agent names)."""
    return openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=stack.api_key, max_retries=0)


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _start(stack: Any) -> None:
    stack.start_web()
    stack.start_workers()


def _raw(events: list[Any]) -> list[dict[str, Any]]:
    return [event.model_dump(mode="json", exclude_unset=True) for event in events]


def test_create_memory_input_items_and_delete(stack) -> None:
    _start(stack)
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        first = sdk.responses.create(model="Chef", input="Something with basil?")
        assert first.status == "completed" and first.id.startswith("resp_")
        assert first.output_text == "echo: Something with basil?"
        assert first.usage is not None and first.conversation is not None
        session_id = first.conversation.id
        assert http.get(f"/api/v1/sessions/{session_id}").status_code == 200  # a response is a turn of a session

        second = sdk.responses.create(
            model="Chef", previous_response_id=first.id, instructions="Answer in French.",
            input=[{"role": "developer", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "input_text", "text": "And with mint?"}]}],
        )  # fmt: skip
        assert second.output_text == "echo: And with mint? | earlier: Something with basil?"
        assert second.conversation is not None and second.conversation.id == session_id
        sent = model_requests(stack)[-1]["body"]["messages"]
        system = "\n".join(m["content"] for m in sent if m["role"] == "system")
        assert "Keep it short.\n\nAnswer in French.\n\nBe brief." in system  # the agent's, then this turn's

        retrieved = sdk.responses.retrieve(second.id)
        assert retrieved.status == "completed" and retrieved.output_text == second.output_text
        assert retrieved.previous_response_id == first.id  # kept with the job, not only echoed at create
        assert [item.id for item in retrieved.output] == [item.id for item in second.output]

        items = sdk.responses.input_items.list(second.id)
        assert [(item.type, item.role) for item in items.data] == [("message", "user")]
        assert items.data[0].content[0].text == "And with mint?"

        deleted = sdk.responses.delete(first.id)
        assert deleted is None  # the SDK returns nothing; the route answered 200
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.responses.retrieve(first.id)
        error: Any = missing.value.body  # the SDK hands over the body's "error" object
        assert error["type"] == "invalid_request_error" and error["code"] == "not_found" and error["message"]
        third = sdk.responses.create(model="Chef", input="Still there?", conversation=session_id)
        assert "earlier: Something with basil? / And with mint?" in third.output_text  # memory outlives the delete


def test_stateless_input_and_hostile_requests(stack) -> None:
    _start(stack)
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        sessions_before = http.get("/api/v1/sessions").json()["data"]
        answer = sdk.responses.create(model="Chef", store=False, input=[
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Pasta?"}])  # fmt: skip
        assert answer.output_text == "echo: Pasta? | earlier: Hi" and answer.conversation is None
        assert http.get("/api/v1/sessions").json()["data"] == sessions_before  # nothing stored
        items = sdk.responses.input_items.list(answer.id, order="asc")
        assert [item.content[0].text for item in items.data] == ["Hi", "Hello", "Pasta?"]
        with pytest.raises(openai.BadRequestError) as stateless:
            sdk.responses.create(model="Chef", input="More", previous_response_id=answer.id)
        refusal: Any = stateless.value.body
        assert refusal["param"] == "previous_response_id"

        jobs_before = sorted(stack.redis().keys("*job*"))
        bad: list[tuple[dict[str, Any], int, str | None]] = [
            ({"model": "Chef", "input": [{"role": "assistant", "content": "no user"}]}, 422, "input"),
            ({"model": "Chef", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools.0.type"),
            ({"model": "Chef", "input": "x", "text": {"format": {"type": "xml"}}}, 400, "text.format"),
            ({"model": "Chef", "input": "x", "background": True, "store": False}, 400, "store"),
            ({"model": "Chef", "input": "x", "conversation": "a b"}, 422, "conversation"),
            ({"model": "Chef", "input": "x", "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
            ({"model": "Nobody", "input": "x"}, 404, None),
            ({"model": "Chef", "input": "   "}, 422, "input.message"),
            ({"model": "Chef"}, 422, "input"),
        ]
        for body, status, param in bad:
            response = http.post("/v1/responses", json=body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["message"] and error["code"] and error["type"] and error["param"] == param, (body, error)
        with client(stack.web_url, "wrong") as stranger:
            unauthorized = stranger.post("/v1/responses", json={"model": "Chef", "input": "x"})
        assert unauthorized.status_code == 401 and unauthorized.json()["error"]["type"] == "authentication_error"
        assert http.get("/v1/responses/job_123").status_code == 404
        assert sorted(stack.redis().keys("*job*")) == jobs_before  # a refused request queued nothing

        key = {"Idempotency-Key": "order-1"}
        once = http.post("/v1/responses", json={"model": "Chef", "input": "Soup?"}, headers=key).json()
        twice = http.post("/v1/responses", json={"model": "Chef", "input": "Soup?"}, headers=key).json()
        assert once["id"] == twice["id"] and once["output"] == twice["output"]  # one turn, answered twice
        reused = http.post("/v1/responses", json={"model": "Chef", "input": "Stew?"}, headers=key)
        assert reused.status_code == 409 and reused.json()["error"]["type"] == "invalid_request_error"

        # the wire as Open Responses sets it: each `event:` names its data's type, and `data: [DONE]` ends the stream
        with http.stream("POST", "/v1/responses", json={"model": "Chef", "input": "Raw?", "stream": True}) as raw:
            assert raw.headers["content-type"].startswith("text/event-stream")
            blocks = [b for b in raw.read().decode().split("\n\n") if b.startswith(("event:", "data:"))]
        assert blocks[-1] == "data: [DONE]" and blocks.count("data: [DONE]") == 1
        sent = [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
                for b in blocks[:-1]]  # fmt: skip
        assert all(event == data["type"] for event, data in sent) and sent[-1][0] == "response.completed"
        resumed = http.get(
            f"/v1/responses/{sent[0][1]['response']['id']}", params={"stream": "true", "starting_after": 2}
        )
        assert resumed.text.rstrip("\n").endswith("data: [DONE]")  # a resumed stream of an ended response too
        with client(stack.web_url, stack.api_keys["bob"]) as bob:  # another tenant: it does not exist
            for path in (f"/v1/responses/{once['id']}", f"/v1/responses/{once['id']}/input_items",
                         f"/v1/conversations/{once['conversation']['id']}"):  # fmt: skip
                assert bob.get(path).status_code == 404, path
            assert bob.post(f"/v1/responses/{once['id']}/cancel").status_code == 404
            assert bob.delete(f"/v1/responses/{once['id']}").status_code == 404
            taken = bob.post("/v1/responses", json={"model": "Chef", "input": "x", "previous_response_id": once["id"]})
            assert taken.status_code == 404


def test_stream_sequence_numbers_and_resume(stack) -> None:
    _start(stack)
    _script(stack, {"reply": "Try a tomato and basil pasta.", "chunks": 4})
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        events = list(sdk.responses.create(model="Chef", input="Dinner?", stream=True))
        numbers = [event.sequence_number for event in events]
        assert numbers == list(range(len(events)))
        kinds = [event.type for event in events]
        assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
        assert kinds[3:5] == ["response.output_item.added", "response.content_part.added"]
        assert kinds.count("response.output_text.delta") >= 4
        assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                              "response.completed"]  # fmt: skip
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == "Try a tomato and basil pasta."
        completed = events[-1].response
        assert completed.status == "completed" and completed.output_text == deltas

        for after in (-1, 0, 4, len(events) - 2):
            resumed = list(sdk.responses.retrieve(completed.id, stream=True, starting_after=after))
            assert _raw(resumed) == _raw(events[after + 1 :]), after  # the same numbered events, from any web

        with sdk.responses.stream(model="Chef", input="Again?") as stream:  # the SDK's own accumulator
            final = stream.get_final_response()
        assert final.output_text == "echo: Again?" and final.status == "completed"


def test_background_cancel_and_resume_while_running(stack) -> None:
    _start(stack)
    _script(stack, {"reply": "one two three four five six", "chunks": 6, "chunk_delay_ms": 300})
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        started = sdk.responses.create(model="Chef", input="Slowly", background=True, metadata={"run": "7"})
        assert started.status in ("queued", "in_progress") and started.background is True
        with pytest.raises(openai.ConflictError):
            sdk.responses.delete(started.id)  # it runs: 409
        seen: list[Any] = []
        with sdk.responses.retrieve(started.id, stream=True, starting_after=-1) as live:
            for event in live:
                seen.append(event)
                if event.type == "response.output_text.delta":
                    break  # the client goes away mid-answer
        resumed = list(sdk.responses.retrieve(started.id, stream=True, starting_after=seen[-1].sequence_number))
        assert [e.sequence_number for e in resumed] == list(range(len(seen), len(seen) + len(resumed)))
        assert resumed[-1].type == "response.completed"
        done = sdk.responses.retrieve(started.id)
        assert done.output_text == "one two three four five six"
        assert done.background is True and done.metadata == {"run": "7"}

        _script(stack, {"hang": True})
        waiting = sdk.responses.create(model="Chef", input="Never mind", background=True)
        deadline = time.monotonic() + 10
        while sdk.responses.retrieve(waiting.id).status != "in_progress" and time.monotonic() < deadline:
            time.sleep(0.05)
        cancelled = sdk.responses.cancel(waiting.id)
        assert cancelled.status == "cancelled" and cancelled.error is not None
        assert sdk.responses.retrieve(waiting.id).status == "cancelled"
        ended = list(sdk.responses.retrieve(waiting.id, stream=True))
        assert ended[-1].type == "response.failed" and ended[-1].response.status == "cancelled"
        assert sdk.responses.delete(waiting.id) is None


def test_function_tool_round_trip(stack) -> None:
    _start(stack)
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    _script(stack, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"reply": "Sunny in Oslo."})  # fmt: skip
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        first = sdk.responses.create(model="Chef", input="Weather in Oslo?", tools=[weather],
                                     tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Oslo"}
        sent = model_requests(stack)[-1]["body"]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        second = sdk.responses.create(model="Chef", previous_response_id=first.id, tools=[weather],
                                      input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                              "output": "Sunny, 21 C"}])  # fmt: skip
        assert second.output_text == "Sunny in Oslo."
        heard = model_requests(stack)[-1]["body"]["messages"]
        assert {"role": "tool", "tool_call_id": calls[0].call_id, "content": "Sunny, 21 C"}.items() <= heard[-1].items()
        with pytest.raises(openai.BadRequestError):  # no call waits for a result any more
            sdk.responses.create(
                model="Chef",
                previous_response_id=second.id,
                input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "x"}],
            )


def test_structured_output(stack) -> None:
    _start(stack)
    schema = {"type": "object", "properties": {"dish": {"type": "string"}}, "required": ["dish"],
              "additionalProperties": False}  # fmt: skip
    _script(stack, {"reply": '{"dish": "pesto"}'})
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        answer = sdk.responses.create(
            model="Chef", input="A dish?", text={"format": {"type": "json_schema", "name": "dish", "schema": schema}}
        )
        assert json.loads(answer.output_text) == {"dish": "pesto"}
        assert answer.text is not None and answer.text.format.type == "json_schema"
        sent = model_requests(stack)[-1]["body"]
        assert sent["response_format"]["json_schema"]["schema"] == schema
        assert user_contents(sent)[-1] == "A dish?"


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # the SDK has no type for Parley's
# own items: it keeps them as sent, and pydantic warns when the SDK serializes them again (the stream helper does)
def test_an_approval_wait_streams_as_a_parley_approval_request(stack) -> None:
    _start(stack)
    _script(stack, {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}, {"reply": "It is 42."})
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http, tools=["calculator"], approval=["calculator"])
        started = sdk.responses.create(model="Chef", input="6 times 7?", background=True)
        seen: list[Any] = []
        with sdk.responses.retrieve(started.id, stream=True) as live:
            for event in live:
                seen.append(event)
                if event.type == "response.output_item.done" and event.item.type == "parley:approval_request":
                    break
        request = seen[-1].item
        assert request.name == "calculator" and json.loads(request.arguments) == {"expression": "6*7"}
        waiting = sdk.responses.retrieve(started.id)
        assert waiting.status == "in_progress"  # the spec's closest to Parley's "waiting"
        assert [item.type for item in waiting.output] == ["parley:tool_call", "parley:approval_request"]
        assert waiting.output[0].status == "in_progress" and request.call_id == request.id
        job_id = "job_" + started.id.removeprefix("resp_")
        decided = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": request.id, "approve": True})
        assert decided.status_code == 202, decided.text
        rest = list(sdk.responses.retrieve(started.id, stream=True, starting_after=seen[-1].sequence_number))
        assert rest[0].sequence_number == seen[-1].sequence_number + 1 and rest[-1].type == "response.completed"
        done = rest[-1].response
        assert done.output_text == "It is 42."
        call = next(item for item in done.output if item.type == "parley:tool_call")
        assert call.output == "42" and call.status == "completed" and call.name == "calculator"
        assert call.call_id == request.id and json.loads(call.arguments) == {"expression": "6*7"}
        # only the spec's event types: a Parley item is streamed by output_item.added / .done
        assert all(event.type.startswith("response.") and "mcp" not in event.type for event in [*seen, *rest])
        # the SDK's stream helper takes the whole stream, Parley's items included, and rebuilds the response
        _script(stack, {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                {"reply": "It is 42."})  # fmt: skip
        with sdk.responses.stream(model="Chef", input="6 times 7?") as live:
            for event in live:
                if event.type == "response.created":
                    job_id = "job_" + event.response.id.removeprefix("resp_")
                if event.type == "response.output_item.done" and event.item.type == "parley:approval_request":
                    decided = http.post(f"/api/v1/jobs/{job_id}/approvals",
                                        json={"call_id": event.item.id, "approve": True})  # fmt: skip
                    assert decided.status_code == 202, decided.text
            final = live.get_final_response()
        assert [item.type for item in final.output] == ["parley:tool_call", "parley:approval_request", "message"]
        assert final.output_text == "It is 42." and final.output[0].to_dict(warnings=False)["output"] == "42"
        # a stateless client sending the output back as input: Parley's items are skipped, the messages kept
        _script(stack, {"reply": "You are welcome."})
        again = sdk.responses.create(model="Chef", store=False, input=[
            {"role": "user", "content": "6 times 7?"}, *[item.to_dict(warnings=False) for item in final.output],
            {"role": "user", "content": "Thanks"}])  # fmt: skip
        assert again.output_text == "You are welcome."
        sent = model_requests(stack)[-1]["body"]["messages"]
        assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [
            ("user", "6 times 7?"),
            ("assistant", "It is 42."),
            ("user", "Thanks"),
        ]


def test_input_files_text_read_into_the_message_others_refused(stack) -> None:
    _start(stack)
    notes = base64.b64encode("Title: Rye bread\nBake at 230 °C.".encode()).decode()
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        answer = sdk.responses.create(
            model="Chef",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "The title?"},
                        {
                            "type": "input_file",
                            "filename": "notes.md",
                            "file_data": f"data:text/markdown;base64,{notes}",
                        },
                    ],
                }
            ],
        )
        assert answer.status == "completed"
        sent = user_contents(model_requests(stack)[-1]["body"])[-1]
        assert sent == 'The title?\n\n<file name="notes.md">\nTitle: Rye bread\nBake at 230 °C.\n</file>\n\n'
        items = sdk.responses.input_items.list(answer.id)
        assert "Title: Rye bread" in items.data[0].content[0].text  # what the model read is what the turn kept

        pdf = {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjEK"}
        for part, param in ((pdf, "input.0.content.0.file_data"),
                            ({"type": "input_file", "file_id": "file-abc"}, "input.0.content.0.file_id"),
                            ({"type": "input_file", "file_url": "https://example.com/a.txt"},
                             "input.0.content.0.file_url")):  # fmt: skip
            with pytest.raises(openai.BadRequestError) as refused:
                sdk.responses.create(model="Chef", input=[{"role": "user", "content": [part]}])
            error: Any = refused.value.body
            assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
        big = base64.b64encode(b"x" * 40_000).decode()  # read, then over PARLEY_MAX_MESSAGE_CHARS
        with pytest.raises(openai.APIStatusError) as too_large:
            sdk.responses.create(
                model="Chef",
                input=[{"role": "user", "content": [{"type": "input_file", "filename": "big.txt", "file_data": big}]}],
            )
        assert too_large.value.status_code == 413
        assert len(http.get("/api/v1/sessions").json()["data"]) == 1  # the refused requests made nothing


def test_the_demo_model_calls_a_client_tool_when_forced_or_named(stack) -> None:
    env = {"PARLEY_LLM": "demo", "PARLEY_DEMO_CHUNK_DELAY_MS": "0"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a place",
        "parameters": {
            "type": "object",
            "required": ["location", "unit"],
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
        },
    }
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        first = sdk.responses.create(
            model="Chef",
            input="Weather in Oslo?",
            tools=[weather],
            tool_choice={"type": "function", "name": "get_weather"},
        )
        assert [item.type for item in first.output] == ["function_call"]
        call = first.output[0]
        assert call.name == "get_weather" and call.call_id
        assert json.loads(call.arguments) == {"location": "Weather in Oslo?", "unit": "celsius"}
        second = sdk.responses.create(
            model="Chef",
            previous_response_id=first.id,
            tools=[weather],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "4 °C, rain"}],
        )
        assert second.status == "completed" and "get_weather said: 4 °C, rain" in second.output_text
        required = sdk.responses.create(model="Chef", input="Anything", tools=[weather], tool_choice="required")
        assert [item.type for item in required.output] == ["function_call"]
        assert required.output[0].name == "get_weather"
        named = sdk.responses.create(model="Chef", input="What's the weather like in Oslo?", tools=[weather])
        assert [item.type for item in named.output] == ["function_call"]  # not forced: the message names it
        other = sdk.responses.create(model="Chef", input="Hello there", tools=[weather])
        assert [item.type for item in other.output] == ["message"]  # neither forced nor named: it answers
        none = sdk.responses.create(model="Chef", input="The weather?", tools=[weather], tool_choice="none")
        assert [item.type for item in none.output] == ["message"]
