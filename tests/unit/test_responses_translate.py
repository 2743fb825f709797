"""A `POST /v1/responses` request as one Parley turn (api/adapters/responses/translate.py): where each input item
goes, what a session allows, the stateless conversation, tools and text.format, and the 400s for the rest."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from parley.api.adapters.responses import translate
from parley.api.adapters.responses.translate import ResponseCreate
from parley.shared.errors import NotFound, ParleyError
from parley.shared.settings import Settings

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def _read(session_id: str | None = None, **body: Any) -> translate.Turn:
    return translate.read(ResponseCreate.model_validate({"model": "Chef", **body}), SETTINGS, session_id)


def _refused(session_id: str | None = None, **body: Any) -> ParleyError:
    with pytest.raises(ParleyError) as error:
        _read(session_id, **body)
    return error.value


def test_ids_map_both_ways_and_anything_else_is_not_found() -> None:
    job_id = "job_" + "0f" * 16
    assert translate.job_id_of(translate.response_id(job_id)) == job_id
    for bad in ("resp_x", "job_" + "0f" * 16, "resp_" + "0F" * 16, "resp_" + "0f" * 16 + "\n"):
        with pytest.raises(NotFound):
            translate.job_id_of(bad)


def test_system_and_developer_items_join_the_instructions_and_the_last_user_message_is_the_turn() -> None:
    turn = _read("s1", instructions="Be kind.", input=[
        {"role": "developer", "content": "Be brief."}, {"type": "message", "role": "system", "content": [
            {"type": "input_text", "text": "In French."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi "}, {"type": "input_text", "text": "there"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}])  # fmt: skip
    assert turn.this_turn.instructions == "Be kind.\n\nBe brief.\n\nIn French."
    assert turn.request.message == "Hi there" and turn.request.images == ["data:image/png;base64,AAAA"]
    assert turn.request.session_id == "s1" and turn.history is None and turn.client_tools is None


def test_with_a_session_only_what_is_new_is_taken() -> None:
    assert _refused("s1", input="x", store=False).extra["field"] == "store"  # it would be stored in the session
    error = _refused("s1", input=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                  {"role": "user", "content": "c"}])  # fmt: skip
    assert error.status == 400 and error.extra["field"] == "input"
    call = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    turn = _read(
        "s1", tools=[WEATHER], input=[call, {"type": "function_call_output", "call_id": "c1", "output": "sun"}]
    )
    assert turn.request.message == "" and turn.history is None  # the echoed call is the session's already
    assert turn.client_tools is not None and turn.client_tools.results == [{"tool_call_id": "c1", "content": "sun"}]


def test_without_a_session_earlier_items_are_the_conversation() -> None:
    turn = _read(input=[
        {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sun"}], tools=[WEATHER])  # fmt: skip
    assert turn.history == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
    ]  # fmt: skip
    assert turn.client_tools is not None and turn.client_tools.results == [{"tool_call_id": "c1", "content": "sun"}]
    assert _read(input="Hi").history is None  # a new session per response
    assert _read(input="Hi", store=False).history == []  # stateless: nothing stored
    orphan = _refused(input=[{"type": "function_call_output", "call_id": "zz", "output": "x"}])
    assert orphan.status == 400  # answers a call the conversation did not make


def test_tools_tool_choice_and_text_format() -> None:
    turn = _read(input="x", tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
    assert turn.client_tools is not None
    assert turn.client_tools.tools == [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}
    ]
    assert turn.client_tools.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    schema = {"type": "object", "properties": {"dish": {"type": "string"}}}
    shaped = _read(input="x", text={"format": {"type": "json_schema", "name": "d", "schema": schema}})
    assert shaped.this_turn.response_shape == schema
    assert _read(input="x", text={"format": {"type": "json_object"}}).this_turn.response_shape == {"type": "object"}
    assert _read(input="x", text={"format": {"type": "text"}}).this_turn.response_shape is None


@pytest.mark.parametrize(("body", "field"), [
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}},
     "tool_choice.function.name"),
    ({"input": "x", "tools": [WEATHER], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"input": "x", "text": {"format": {"type": "grammar"}}}, "text.format"),
    ({"input": "x", "text": "json"}, "text.format"),
    ({"input": "x", "prompt": {"id": "p1"}}, "prompt"),
    ({"input": "x", "background": True, "store": False}, "store"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.0.content.0.file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.txt"}]}]},
     "input.0.content.0.file_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.pdf",
                                              "file_data": "data:application/pdf;base64,JVBERi0xLjEK"}]}]},
     "input.0.content.0.file_data"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.txt", "file_data": "%%%"}]}]},
     "input.0.content.0.file_data"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.txt",
                                              "file_data": "data:text/plain;base64,//4A"}]}]},
     "input.0.content.0.file_data"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.bin",
                                              "file_data": "AAECAw=="}]}]}, "input.0.content.0.file_data"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_file", "file_data": "eA=="}]},
                {"role": "user", "content": "x"}]}, "input.0.content.0"),
    ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input.0.content.0.file_data"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
     "input.0.content.0.image_url"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input.0.arguments"),
    ({"input": [7]}, "input.0"),
])  # fmt: skip
def test_what_cannot_be_honoured_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    error = _refused(**body)
    assert error.status == 400 and error.extra["field"] == field, error.message


def test_text_files_are_read_into_the_message() -> None:
    """`input_file` with base64 `file_data`: a text file (by its data URL's type, else its filename) joins the
    message as text, marked with its name; a UTF-8 BOM is dropped."""
    notes = base64.b64encode("\ufeffTitle: Rye bread\nBake at 230 °C.".encode()).decode()
    turn = _read(input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Title?"},
        {"type": "input_file", "filename": "notes.txt", "file_data": f"data:text/plain;base64,{notes}"},
        {"type": "input_file", "filename": "data.json", "file_data": base64.b64encode(b'{"a": 1}').decode()},
        {"type": "input_file", "filename": "r.csv",
         "file_data": "data:application/octet-stream;base64," + base64.b64encode(b"a,b").decode()}]}])  # fmt: skip
    assert turn.request.message == ('Title?\n\n<file name="notes.txt">\nTitle: Rye bread\nBake at 230 °C.\n</file>\n\n'
                                    '\n\n<file name="data.json">\n{"a": 1}\n</file>\n\n'
                                    '\n\n<file name="r.csv">\na,b\n</file>\n\n')  # fmt: skip


def test_parley_s_own_output_items_sent_back_are_skipped() -> None:
    """A client that sends a response's output back as input (the stateless pattern) may include Parley's own
    items: they are receipts of calls that ran, skipped, while the messages around them are the conversation."""
    turn = _read(input=[
        {"role": "user", "content": "6*7?"},
        {"type": "parley:tool_call", "id": "ptc_1", "status": "completed", "call_id": "c1", "name": "calculator",
         "arguments": "{}", "output": "42", "error": None},
        {"type": "parley:approval_request", "id": "c2", "status": "completed", "call_id": "c2", "name": "x",
         "arguments": "{}"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "42"}]},
        {"role": "user", "content": "Thanks"}])  # fmt: skip
    assert turn.history == [{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": "42"}]
    assert turn.request.message == "Thanks"
    assert _refused(input=[{"type": "acme:thing", "id": "x"}]).extra["field"] == "input.0.type"


def test_input_must_end_with_a_user_message_or_results_and_stay_in_bounds() -> None:
    assert _refused(input=[{"role": "assistant", "content": "x"}]).status == 422
    assert _refused(input=[]).status == 422
    many = [{"role": "user", "content": "x"}] * (SETTINGS.max_history_messages + 1)
    assert _refused(input=many).status == 413
    assert _refused(input="x" * (SETTINGS.max_history_chars + 1)).status == 413
    with pytest.raises(ParleyError):
        translate.conversation_id(ResponseCreate(model="Chef", input="x", conversation="c", previous_response_id="r"))
