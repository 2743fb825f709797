"""shared/store/memory.py and worker/memory/ on fakeredis: a long session's window is summary + the newest
whole turns within the budget, read in O(window) whatever the history's length; the summariser
folds the oldest turns, keeps about half the budget, and writes only over the summary it read."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import pytest

from parley.shared.errors import SummaryRunning
from parley.shared.store import keys, memory
from parley.shared.store.sessions import message_json
from parley.shared.store.stores import Stores
from parley.worker.memory import summary as summary_job
from parley.worker.memory import window as memory_window
from parley.worker.providers.base import TEXT, ModelError, ModelStream

MODEL = "test-model"  # no tiktoken encoding: the estimate, bytes / 4
TENANT, SESSION = "acme", "s1"


def build_session(r: Any, turns: int, *, first: bool = True, with_tokens: bool = True, words: int = 10,
                  session_id: str = SESSION, agent_id: str = "agent-1") -> int:  # fmt: skip
    """A session of `turns` user+assistant turns (each message `words` x 'word ' plus its number),
    written straight into Redis as committed turns leave it. Returns its token total (turns only)."""
    r.hset(keys.session(TENANT, session_id), mapping={"agent_id": agent_id, "created_at": 1, "metadata": "{}",
                                                      "exchanges": turns})  # fmt: skip
    rows, total = [], 0
    if first:
        rows.append(message_json("assistant", "Hello! I am the first message.", job_id=None, created_at=0))
    for turn in range(turns):
        for role in ("user", "assistant"):
            content = f"{role} {turn}: " + "word " * words
            tokens = memory.message_tokens({"role": role, "content": content}, MODEL)
            total += tokens
            extra = {"tokens": tokens} if with_tokens else {}
            rows.append(message_json(role, content, job_id=f"job_{turn}", created_at=turn, **extra))
    for start in range(0, len(rows), 10_000):
        r.rpush(keys.messages(TENANT, session_id), *rows[start : start + 10_000])
    r.hset(keys.session(TENANT, session_id), memory.TOKENS_FIELD, total)
    return total


class Counting:
    """Counts LRANGE calls and the items they returned."""

    def __init__(self, r: Any) -> None:
        self._r = r
        self.lranged = 0
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)

    def lrange(self, key: str, start: int, end: int) -> Any:
        items = self._r.lrange(key, start, end)
        self.calls["lrange"] += 1
        self.lranged += len(items)
        return items


def turn_tokens(words: int = 10) -> int:
    return sum(memory.message_tokens({"role": role, "content": f"{role} 0: " + "word " * words}, MODEL)
               for role in ("user", "assistant"))  # fmt: skip


def test_a_short_session_fits_whole(clients) -> None:
    build_session(clients.text, 3)
    window = memory.read_window(clients.text, TENANT, SESSION, budget_tokens=10_000, model=MODEL)
    assert window.first is not None and window.first["content"] == "Hello! I am the first message."
    names = [m["content"].split(":")[0] for m in window.messages]
    assert names == ["user 0", "assistant 0", "user 1", "assistant 1", "user 2", "assistant 2"]
    assert window.start_index == 1 and window.total == 7 and window.summary == "" and window.exchanges == 3


def test_the_window_is_the_newest_whole_turns_within_the_budget(clients) -> None:
    build_session(clients.text, 50)
    per_turn = turn_tokens()
    first = memory.message_tokens({"role": "assistant", "content": "Hello! I am the first message."}, MODEL)
    budget = first + 5 * per_turn + per_turn // 2  # room for five and a half turns: five whole ones
    window = memory.read_window(clients.text, TENANT, SESSION, budget_tokens=budget, model=MODEL)
    assert len(window.messages) == 10
    assert window.messages[0]["role"] == "user" and window.messages[0]["content"].startswith("user 45:")
    assert window.messages[-1]["content"].startswith("assistant 49:")
    assert window.start_index == 1 + 2 * 45 and window.tokens <= budget


def test_a_long_session_window_is_summary_plus_tail_and_never_reads_below_the_summary(clients) -> None:
    r = clients.text
    build_session(r, 40)
    r.hset(keys.session(TENANT, SESSION), mapping={memory.SUMMARY_FIELD: "They talked about words.",
                                                   memory.SUMMARY_UPTO_FIELD: 1 + 2 * 37,
                                                   memory.SUMMARY_TOKENS_FIELD: 12})  # fmt: skip
    counting = Counting(r)
    window = memory.read_window(counting, TENANT, SESSION, budget_tokens=100_000, model=MODEL)
    assert window.summary == "They talked about words."
    assert window.first is not None
    names = [m["content"].split(":")[0] for m in window.messages]
    assert names == ["user 37", "assistant 37", "user 38", "assistant 38", "user 39", "assistant 39"]
    assert counting.lranged == 6  # nothing below summary_upto was read


def test_rebuilding_reads_o_window_items_from_a_huge_history(clients) -> None:
    r = clients.text
    build_session(r, 50_000)  # 100,001 messages
    counting = Counting(r)
    budget = 20 * turn_tokens()
    window = memory.read_window(counting, TENANT, SESSION, budget_tokens=budget, model=MODEL)
    assert window.total == 100_001
    assert 30 <= len(window.messages) <= 40
    # Chunks of 32 then 64: at most what the window used, plus the next chunk it had to look into.
    assert counting.lranged <= len(window.messages) + 2 * memory.FIRST_CHUNK + 1
    assert counting.calls["lrange"] <= 3


def test_messages_stored_without_tokens_are_counted(clients) -> None:
    build_session(clients.text, 30, with_tokens=False)
    budget = 10 * turn_tokens() + 20
    window = memory.read_window(clients.text, TENANT, SESSION, budget_tokens=budget, model=MODEL)
    assert 8 <= len(window.messages) // 2 <= 10
    assert window.tokens <= budget


def test_a_turn_bigger_than_the_budget_leaves_an_empty_tail(clients) -> None:
    build_session(clients.text, 3, words=400)
    window = memory.read_window(clients.text, TENANT, SESSION, budget_tokens=300, model=MODEL)
    assert window.messages == [] and window.start_index == window.total


def test_a_session_without_first_message_starts_at_zero(clients) -> None:
    build_session(clients.text, 2, first=False)
    window = memory.read_window(clients.text, TENANT, SESSION, budget_tokens=10_000, model=MODEL)
    assert window.first is None and window.start_index == 0 and len(window.messages) == 4


def test_history_budget_leaves_room_for_the_system_prompt() -> None:
    agent = {"context": "x" * 4000, "instructions": "y" * 400, "response_shape": {"answer": "string"}}
    assert memory.context_budget(agent, 16_000) == 16_000
    assert memory.context_budget({**agent, "context_budget": 2000}, 16_000) == 2000
    budget = memory.history_budget(agent, 16_000, MODEL)
    assert 16_000 - 1200 < budget < 16_000 - 1100
    assert memory.history_budget({**agent, "context_budget": 300}, 16_000, MODEL) == memory.MIN_HISTORY_TOKENS


def test_needs_summary_near_the_budget() -> None:
    assert not memory.needs_summary(700, 50, 20, 1000)
    assert memory.needs_summary(750, 50, 20, 1000)


def test_plan_fold_keeps_about_half_the_budget_and_cuts_at_a_user_message(clients) -> None:
    r = clients.text
    build_session(r, 20)
    per_turn = turn_tokens()
    budget = 10 * per_turn
    snap = memory.snapshot(r, TENANT, SESSION, MODEL)
    fold = memory.plan_fold(r, TENANT, SESSION, snap, budget, MODEL)
    assert fold is not None
    assert fold.cut == 1 + 2 * 15  # turns 15..19 kept: five turns, half the budget
    assert fold.start == 1 and fold.skipped == 0 and len(fold.messages) == 30
    assert json.loads(r.lindex(keys.messages(TENANT, SESSION), fold.cut))["role"] == "user"
    assert fold.kept_tokens == 5 * per_turn and fold.folded_tokens == 15 * per_turn


def test_plan_fold_reads_at_most_two_budgets_of_an_unsummarised_legacy_history(clients) -> None:
    r = clients.text
    build_session(r, 5_000, with_tokens=False)
    budget = 10 * turn_tokens()
    counting = Counting(r)
    snap = memory.snapshot(counting, TENANT, SESSION, MODEL)
    fold = memory.plan_fold(counting, TENANT, SESSION, snap, budget, MODEL)
    assert fold is not None and fold.skipped > 0
    assert fold.folded_tokens <= 2 * budget and fold.messages[0]["role"] == "user"
    assert counting.lranged < 200


def test_nothing_to_fold_when_only_the_newest_turn_is_there(clients) -> None:
    build_session(clients.text, 1, words=500)
    snap = memory.snapshot(clients.text, TENANT, SESSION, MODEL)
    assert memory.plan_fold(clients.text, TENANT, SESSION, snap, 200, MODEL) is None


def test_write_summary_only_over_the_summary_it_read(clients) -> None:
    r = clients.text
    build_session(r, 4)
    key = keys.session(TENANT, SESSION)
    r.hset(key, memory.TOKENS_FIELD, 400)
    assert memory.write_summary(r, TENANT, SESSION, expected_upto=0, summary="S1", summary_tokens=5, upto=5,
                                tokens_then=380, kept_tokens=100)  # fmt: skip
    assert r.hmget(key, "summary", "summary_upto", "summary_tokens", "tokens") == ["S1", "5", "5", "120"]
    # A second writer that read the old boundary loses.
    assert not memory.write_summary(r, TENANT, SESSION, expected_upto=0, summary="S2", summary_tokens=5, upto=7,
                                    tokens_then=380, kept_tokens=50)  # fmt: skip
    assert r.hget(key, "summary") == "S1"
    r.delete(key)
    assert not memory.write_summary(r, TENANT, SESSION, expected_upto=5, summary="S3", summary_tokens=5, upto=7,
                                    tokens_then=0, kept_tokens=0)  # fmt: skip
    assert r.exists(key) == 0  # a deleted session is not brought back


# --- the summariser job, with a fake model ---------------------------------------------------------


class FakeProvider:
    def __init__(self, answers: list[str | Exception]) -> None:
        self.answers = answers
        self.requests: list[list[dict[str, Any]]] = []

    @asynccontextmanager
    async def stream(self, *, model: str, messages: list[dict[str, Any]], temperature: float | None,
                     max_tokens: int | None, tools: Any = None,
                     response_format: Any = None) -> AsyncIterator[ModelStream]:  # fmt: skip
        self.requests.append(messages)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield ModelStream(_pieces(answer[: len(answer) // 2], answer[len(answer) // 2 :]))


async def _pieces(*texts: str) -> AsyncIterator[tuple[str, str]]:
    for text in texts:
        yield TEXT, text


@pytest.fixture
def worker_rt(clients, server: fakeredis.FakeServer, make_settings) -> Iterator[Any]:
    """The parts the summary jobs use: the stores, a fake model, the sync pool and the event loop's client."""
    settings = make_settings(PARLEY_MODEL=MODEL, PARLEY_CONTEXT_TOKENS="2000")

    class Rt(Stores):
        provider: Any = None
        threads: Any = None
        aio: Any = None

    rt = Rt(**Stores.parts(settings, clients))
    rt.provider = FakeProvider([])
    rt.threads = ThreadPoolExecutor(2, thread_name_prefix="sync")
    rt.aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    clients.text.hset(keys.agent(TENANT, "agent-1"), mapping={
        "id": json.dumps("agent-1"), "name": json.dumps("Chef"), "context": json.dumps("You are a chef."),
        "first_message": json.dumps("Hello! I am the first message."), "model": json.dumps(None),
    })  # fmt: skip
    yield rt
    rt.threads.shutdown(wait=True)


def run_job(job: Any, *args: str, rt: Any) -> str:
    """A summary job (a coroutine function) run as the worker's engine awaits it."""
    return asyncio.run(job(*args, rt=rt))  # type: ignore[no-any-return]


def test_a_long_session_is_rolled_into_a_summary_and_the_next_window_is_summary_plus_tail(worker_rt) -> None:
    r = worker_rt.clients.text
    build_session(r, 60)
    agent = worker_rt.agents.get_by_id(TENANT, "agent-1")
    assert memory_window.maybe_schedule_summary(worker_rt, TENANT, SESSION, agent)
    assert not memory_window.maybe_schedule_summary(worker_rt, TENANT, SESSION, agent)  # one at a time
    queued = worker_rt.turns.queue.jobs
    assert len(queued) == 1 and queued[0].func_name == memory.SUMMARY_FUNCTION
    token = queued[0].args[2]
    assert r.get(keys.summary_lock(TENANT, SESSION)) == token

    worker_rt.provider.answers.append("The user and the assistant exchanged many words.")
    assert run_job(summary_job.roll_summary, TENANT, SESSION, token, rt=worker_rt) == "written"
    assert r.exists(keys.summary_lock(TENANT, SESSION)) == 0
    sent = worker_rt.provider.requests[0]
    assert sent[0]["role"] == "system" and "running summary" in sent[0]["content"]
    assert "Summary so far:\n(none yet)" in sent[1]["content"] and "user: user 0: word" in sent[1]["content"]

    fields = r.hgetall(keys.session(TENANT, SESSION))
    upto = int(fields["summary_upto"])
    assert json.loads(r.lindex(keys.messages(TENANT, SESSION), upto))["role"] == "user"
    budget = memory.history_budget(agent, 2000, MODEL)
    assert int(fields["tokens"]) <= budget // 2 + 1
    window = memory.read_window(r, TENANT, SESSION, budget_tokens=budget, model=MODEL)
    assert window.summary == "The user and the assistant exchanged many words."
    assert window.start_index == upto and window.messages[-1]["content"].startswith("assistant 59:")
    assert not memory_window.maybe_schedule_summary(worker_rt, TENANT, SESSION, agent)  # fits again

    # The next run folds on from the boundary and sends the old summary along.
    build_more = [message_json(role, f"{role} {t}: " + "word " * 10, job_id="j", created_at=1,
                               tokens=memory.message_tokens({"role": role, "content": f"{role} {t}: " + "word " * 10},
                                                            MODEL))
                  for t in range(60, 90) for role in ("user", "assistant")]  # fmt: skip
    r.rpush(keys.messages(TENANT, SESSION), *build_more)
    r.hincrby(keys.session(TENANT, SESSION), "tokens", 30 * turn_tokens())
    assert memory_window.maybe_schedule_summary(worker_rt, TENANT, SESSION, agent)
    worker_rt.provider.answers.append("Even more words.")
    token = r.get(keys.summary_lock(TENANT, SESSION))
    assert run_job(summary_job.roll_summary, TENANT, SESSION, token, rt=worker_rt) == "written"
    second = worker_rt.provider.requests[1][1]["content"]
    assert "Summary so far:\nThe user and the assistant exchanged many words." in second
    assert f"user {int(fields['summary_upto']) // 2}:" in second and "user 0:" not in second
    assert int(r.hget(keys.session(TENANT, SESSION), "summary_upto")) > upto


def test_a_model_failure_leaves_the_old_summary_and_frees_the_lock(worker_rt) -> None:
    r = worker_rt.clients.text
    build_session(r, 60)
    r.hset(keys.session(TENANT, SESSION), mapping={"summary": "old", "summary_upto": 3})
    r.set(keys.summary_lock(TENANT, SESSION), "sum_1")
    worker_rt.provider.answers.append(ModelError("the model answered 500", status=500))
    assert run_job(summary_job.roll_summary, TENANT, SESSION, "sum_1", rt=worker_rt) == "model_failed"
    assert r.hmget(keys.session(TENANT, SESSION), "summary", "summary_upto") == ["old", "3"]
    assert r.exists(keys.summary_lock(TENANT, SESSION)) == 0


def test_a_report_is_admitted_once_per_session_and_its_end_frees_the_session(worker_rt) -> None:
    r, queue, settings = worker_rt.clients.text, worker_rt.turns.queue, worker_rt.settings
    build_session(r, 2)
    memory.admit_report(queue, settings, TENANT, SESSION, "job_1", "key-1")
    assert r.lrange(keys.rq_queue(settings.queue_name), 0, -1) == ["job_1"]
    assert r.hget(keys.rq_job("job_1"), "status") == "queued" and r.ttl(keys.rq_job("job_1")) == -1
    assert r.get(keys.summary_report(TENANT, SESSION)) == "job_1"
    with pytest.raises(SummaryRunning):
        memory.admit_report(queue, settings, TENANT, SESSION, "job_2", "key-1")
    assert r.lrange(keys.rq_queue(settings.queue_name), 0, -1) == ["job_1"]
    assert r.exists(keys.rq_job("job_2")) == 0  # the refused job's RQ hash is gone too
    memory.admit_report(queue, settings, TENANT, "other", "job_3", "key-1")  # another session is not held

    assert not memory.release_report(r, TENANT, SESSION, "job_2")  # only its holder frees it
    worker_rt.provider.answers.append("They talked.")
    assert run_job(summary_job.summarise_session, TENANT, SESSION, "job_1", rt=worker_rt) == "finished"
    assert r.exists(keys.summary_report(TENANT, SESSION)) == 0
    answered = [json.loads(fields["e"]) for _id, fields in r.xrange(keys.events(TENANT, "job_1"))]
    assert [event["type"] for event in answered] == ["response", "done"]  # the waiting request's answer
    assert answered[0]["content"] == "They talked." and 0 < r.pttl(keys.events(TENANT, "job_1"))
    worker_rt.provider.answers.append(RuntimeError("boom"))
    memory.admit_report(queue, settings, TENANT, SESSION, "job_4", "key-1")
    assert run_job(summary_job.summarise_session, TENANT, SESSION, "job_4", rt=worker_rt) == "failed"
    assert r.exists(keys.summary_report(TENANT, SESSION)) == 0  # a failed report frees it as well


def test_parse_summary_takes_fenced_json_in_the_shape_and_refuses_the_rest() -> None:
    assert summary_job.parse_summary({"summary": "string"}, '```json\n{"summary": "x"}\n```') == {"summary": "x"}
    assert summary_job.parse_summary("an object", '{"a": 1}') == {"a": 1}
    for text in ("not json", "[1, 2]", '"text"', '{"other": 1}'):
        with pytest.raises(ModelError):
            summary_job.parse_summary({"summary": "string"}, text)


def test_transcript_names_tools_and_images() -> None:
    text = summary_job.transcript([
        {"role": "user", "content": "what is 2+2? see picture", "images": ["img_1"]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "calculator",
                                                                          "arguments": "{\"e\": \"2+2\"}"}}]},
        {"role": "tool", "name": "calculator", "content": "4"},
        {"role": "assistant", "content": "4"},
    ])  # fmt: skip
    assert text.splitlines() == ["user: what is 2+2? see picture [1 image(s)]",
                                 'assistant: [called calculator({"e": "2+2"})]', "tool calculator result: 4",
                                 "assistant: 4"]  # fmt: skip


def test_keys_are_pinned() -> None:
    assert keys.summary_lock("acme", "s1") == "parley:summary-lock:acme:s1"
