"""Budgets: PARLEY_TENANT_BUDGETS parsing, the UTC day and its counter, ACCEPT_TURN's refusal (fakeredis's Lua),
a running turn's check and count (worker/turn/budget.py), and the per-turn caps of agents."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from pydantic import ValidationError

from parley.shared import budgets, telemetry
from parley.shared.clock import now_ms
from parley.shared.errors import BudgetExceeded
from parley.shared.schema import AgentCreate, AgentUpdate
from parley.shared.settings import Settings, parse_budgets
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore
from parley.worker.providers.base import ToolCall
from parley.worker.turn.budget import OverBudget, TurnBudget, day_spent, estimate, max_steps, turn_cap

T = "acme"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# --- PARLEY_TENANT_BUDGETS ------------------------------------------------------------------


def test_budgets_parse_with_a_default(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PARLEY_TENANT_BUDGETS=" acme:1000 , beta.co:0,*:50 ")
    assert settings.tenant_budget("acme") == 1000
    assert settings.tenant_budget("beta.co") == 0
    assert settings.tenant_budget("gamma") == 50


def test_no_budget_without_an_entry_or_a_default(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PARLEY_TENANT_BUDGETS="acme:1000")
    assert settings.tenant_budget("acme") == 1000
    assert settings.tenant_budget("other") is None
    assert make_settings(PARLEY_TENANT_BUDGETS="").tenant_budget("acme") is None


@pytest.mark.parametrize(("value", "says"), [
    ("acme", "is not `tenant:tokens_per_day`"), ("acme:", "is not"), (":5", "is not"), ("acme:-1", "is not"),
    ("acme:1.5", "is not"), ("acme:ten", "is not"), ("acme:١٢", "is not"), ("acme:1,acme:2", "names 'acme' twice"),
    ("_file:5", "is not a tenant name"), ("a b:5", "is not a tenant name"), (f"acme:{10**16}", "at most"),
])  # fmt: skip
def test_bad_budgets_fail_at_start(make_settings: Callable[..., Settings], value: str, says: str) -> None:
    with pytest.raises(ValidationError, match="PARLEY_TENANT_BUDGETS") as raised:
        make_settings(PARLEY_TENANT_BUDGETS=value)
    assert says in str(raised.value)


def test_max_turn_tokens_setting_is_not_negative(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().max_turn_tokens == 0
    with pytest.raises(ValidationError):
        make_settings(PARLEY_MAX_TURN_TOKENS="-1")


def test_parse_is_a_pure_function_of_the_text() -> None:
    assert parse_budgets("") == {}
    assert parse_budgets("a:1,*:2") == {"a": 1, "*": 2}


# --- the day and its counter -----------------------------------------------------------------


def test_the_utc_day_and_the_seconds_to_its_end() -> None:
    assert budgets.utc_day(ms("2026-12-03T23:59:59.999")) == "2026-12-03"
    assert budgets.utc_day(ms("2026-12-04T00:00:00")) == "2026-12-04"
    assert budgets.seconds_to_next_day(ms("2026-12-03T23:59:59.999")) == 1
    assert budgets.seconds_to_next_day(ms("2026-12-03T23:59:58.5")) == 2
    assert budgets.seconds_to_next_day(ms("2026-12-04T00:00:00")) == 86_400
    assert budgets.next_day(ms("2026-12-03T10:00:00")) == "2026-12-04T00:00:00Z"
    assert budgets.spent_key(T, ms("2026-12-03T10:00:00")) == "parley:budget-spent:acme:2026-12-03"


def test_usage_tokens_are_prompt_plus_completion() -> None:
    assert budgets.usage_tokens({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}) == 10
    assert budgets.usage_tokens({"prompt_tokens": 7, "cached_tokens": 5}) == 7
    assert budgets.usage_tokens({}) == 0


def test_add_spent_counts_and_expires_after_the_day() -> None:
    aio = fakeredis.FakeAsyncRedis(decode_responses=True)
    at = ms("2026-12-03T23:00:00")

    async def run() -> tuple[int, int, int, int]:
        first = await budgets.add_spent(aio, T, 40, at)
        second = await budgets.add_spent(aio, T, 2, at + 1000)
        ttl = await aio.ttl(budgets.spent_key(T, at))
        return first, second, ttl, await budgets.spent(aio, T, at)

    first, second, ttl, total = asyncio.run(run())
    assert (first, second, total) == (40, 42, 42)
    assert 3600 < ttl <= 3600 + budgets.KEEP_AFTER_DAY_S  # an hour to midnight, then the hour kept after it
    assert asyncio.run(budgets.spent(aio, T, ms("2026-12-04T00:00:01"))) == 0  # a new day starts from nothing


# --- ACCEPT_TURN -----------------------------------------------------------------------------


def _accept(turns: TurnStore, agent: dict[str, Any], tenant: str = T, session_id: str = "s1",
            idempotency_key: str | None = None) -> Any:  # fmt: skip
    return turns.accept(tenant=tenant, agent=agent, session_id=session_id, message="hi", images=[],
                        idempotency_key=idempotency_key, request_hash="h")  # fmt: skip


@pytest.fixture
def budgeted(clients: RedisClients, make_settings: Callable[..., Settings]) -> TurnStore:
    return TurnStore(clients, make_settings(PARLEY_TENANT_BUDGETS="acme:100,*:1000"))


def test_accept_refuses_a_tenant_at_its_budget_and_writes_nothing(budgeted: TurnStore, clients: RedisClients,
                                                                   chef: dict[str, Any]) -> None:  # fmt: skip
    key = budgets.spent_key(T, now_ms())
    clients.text.set(key, 99)
    assert _accept(budgeted, chef, session_id="s1").job_id  # under: accepted
    clients.text.set(key, 100)
    before = sorted(clients.text.keys("*"))
    telemetry.PENDING.take()
    with pytest.raises(BudgetExceeded) as refused:
        _accept(budgeted, chef, session_id="s2")
    assert refused.value.status == 429 and refused.value.code == "budget_exceeded"
    assert 1 <= refused.value.retry_after_s <= 86_400
    assert abs(refused.value.retry_after_s - budgets.seconds_to_next_day(now_ms())) <= 1
    assert "100 of 100" in refused.value.message
    assert sorted(clients.text.keys("*")) == before  # no session, job, RQ job or counter written
    assert (telemetry.BUDGET_STOPS.name, telemetry.labels_field(("refused",)), 1) in telemetry.PENDING.take()


def test_accept_goes_on_for_other_tenants_and_for_yesterday_s_spending(budgeted: TurnStore, clients: RedisClients,
                                                                      chef: dict[str, Any]) -> None:  # fmt: skip
    clients.text.set(budgets.spent_key(T, now_ms()), 100)
    clients.text.set(budgets.spent_key("beta", now_ms() - budgets.DAY_MS), 5000)  # yesterday's
    clients.text.set(budgets.spent_key("beta", now_ms()), 999)
    assert _accept(budgeted, chef, tenant="beta").job_id
    clients.text.set(budgets.spent_key("beta", now_ms()), 1000)  # the `*` budget holds for beta too
    with pytest.raises(BudgetExceeded):
        _accept(budgeted, chef, tenant="beta", session_id="s3")


def test_a_replayed_request_is_answered_even_past_the_budget(budgeted: TurnStore, clients: RedisClients,
                                                            chef: dict[str, Any]) -> None:  # fmt: skip
    first = _accept(budgeted, chef, idempotency_key="k1")
    clients.text.set(budgets.spent_key(T, now_ms()), 500)
    again = _accept(budgeted, chef, idempotency_key="k1")
    assert again.replayed and again.job_id == first.job_id


def test_no_budget_means_no_refusal(turns: TurnStore, clients: RedisClients, chef: dict[str, Any]) -> None:
    clients.text.set(budgets.spent_key(T, now_ms()), 10**12)
    assert _accept(turns, chef).job_id


def test_a_zero_budget_refuses_every_turn(clients: RedisClients, make_settings: Callable[..., Settings],
                                          chef: dict[str, Any]) -> None:  # fmt: skip
    with pytest.raises(BudgetExceeded):
        _accept(TurnStore(clients, make_settings(PARLEY_TENANT_BUDGETS="acme:0")), chef)


# --- a running turn ---------------------------------------------------------------------------


def test_a_turn_stops_before_a_model_call_once_the_day_is_spent(make_settings: Callable[..., Settings]) -> None:
    aio = fakeredis.FakeAsyncRedis(decode_responses=True)
    settings = make_settings(PARLEY_TENANT_BUDGETS="acme:100")
    budget = TurnBudget(aio=aio, settings=settings, tenant=T, agent={}, model="test-model")

    async def run() -> None:
        await budget.check()
        await budget.count({"prompt_tokens": 60, "completion_tokens": 30}, [], "", [])
        await budget.check()  # 90 of 100: goes on
        await budget.count({"prompt_tokens": 8, "completion_tokens": 2}, [], "", [])
        with pytest.raises(OverBudget, match="100 of 100"):
            await budget.check()

    telemetry.PENDING.take()
    asyncio.run(run())
    assert budget.used == 100
    assert asyncio.run(aio.get(keys.budget_spent(T, budgets.utc_day(now_ms())))) == "100"
    assert (telemetry.BUDGET_STOPS.name, telemetry.labels_field(("stopped",)), 1) in telemetry.PENDING.take()


def test_a_call_without_reported_usage_is_estimated(make_settings: Callable[..., Settings]) -> None:
    aio = fakeredis.FakeAsyncRedis(decode_responses=True)
    budget = TurnBudget(aio=aio, settings=make_settings(PARLEY_TENANT_BUDGETS=f"{T}:1000000"), tenant=T, agent={},
                        model="some-local-model")  # fmt: skip
    messages = [{"role": "user", "content": "x" * 400}]
    calls = [ToolCall(id="c1", name="calculator", arguments='{"expression": "1+1"}')]
    asyncio.run(budget.count({}, messages, "y" * 40, calls))
    assert budget.used == estimate(messages, "y" * 40, calls, "some-local-model") > 110  # 100 + 10 + overheads
    assert asyncio.run(budgets.spent(aio, T, now_ms())) == budget.used


# --- per-turn caps ----------------------------------------------------------------------------


def test_turn_cap_is_the_lower_of_agent_and_setting(make_settings: Callable[..., Settings]) -> None:
    off = make_settings()
    assert turn_cap({}, off) == 0
    assert turn_cap({"max_turn_tokens": 500}, off) == 500
    on = make_settings(PARLEY_MAX_TURN_TOKENS="1000")
    assert turn_cap({}, on) == 1000
    assert turn_cap({"max_turn_tokens": 500}, on) == 500
    assert turn_cap({"max_turn_tokens": 5000}, on) == 1000


def test_capped_once_the_turn_used_its_tokens(make_settings: Callable[..., Settings]) -> None:
    budget = TurnBudget(aio=None, settings=make_settings(), tenant=T, agent={"max_turn_tokens": 50},
                        model="m", used=49)  # fmt: skip
    assert not budget.capped()
    budget.used = 50
    assert budget.capped()
    assert "50 tokens" in budget.cap_answer()
    uncapped = TurnBudget(aio=None, settings=make_settings(), tenant=T, agent={}, model="m", used=10**9)
    assert not uncapped.capped()


def test_max_steps_is_the_agent_s_else_the_setting(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PARLEY_MAX_TOOL_STEPS="8")
    assert max_steps({}, settings) == 8
    assert max_steps({"max_tool_steps": None}, settings) == 8
    assert max_steps({"max_tool_steps": 3}, settings) == 3


@pytest.mark.parametrize(("field", "value"), [
    ("max_tool_steps", 0), ("max_tool_steps", 101), ("max_tool_steps", "many"), ("max_turn_tokens", 0),
    ("max_turn_tokens", -5), ("max_turn_tokens", 10**10),
])  # fmt: skip
def test_agent_caps_are_bounded(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        AgentCreate.model_validate({"name": "x", field: value})
    with pytest.raises(ValidationError):
        AgentUpdate.model_validate({field: value})


def test_agent_max_tool_steps_bound_is_the_setting_s() -> None:
    bound = next(m.le for m in Settings.model_fields["max_tool_steps"].metadata if hasattr(m, "le"))
    assert AgentCreate.model_validate({"name": "x", "max_tool_steps": bound}).max_tool_steps == bound
    assert AgentCreate.model_validate({"name": "x", "max_turn_tokens": 1}).max_turn_tokens == 1


# --- other protocols' shapes ------------------------------------------------------------------


def test_budget_exceeded_in_a2a_terms() -> None:
    from parley.api.adapters.a2a import routes

    refused = routes._from_parley(BudgetExceeded("spent", retry_after_s=5))
    assert (refused.http_status, refused.code, refused.headers) == (429, -32603, {"Retry-After": "5"})
    assert refused.metadata == {"parley_code": "budget_exceeded"}


def test_budget_exceeded_defaults_to_the_next_utc_day() -> None:
    error = BudgetExceeded("spent")
    assert abs(error.retry_after_s - budgets.seconds_to_next_day(now_ms())) <= 1
    assert (error.status, error.code) == (429, "budget_exceeded")


def test_budget_exceeded_as_an_mcp_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`/mcp`'s tools/call refused by the budget: a tool error with the code and when to call again."""
    from types import SimpleNamespace

    import mcp_types as types

    from parley.api.adapters.mcp_server import server

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise BudgetExceeded("this tenant's tokens for today are spent", retry_after_s=42)

    monkeypatch.setattr(server.turns, "accept", refuse)
    agents = SimpleNamespace(visible=lambda tenant: [{"id": "agent-1", "name": "Chef", "description": "",
                                                      "response_shape": None}])  # fmt: skip
    caller = server.Caller(rt=SimpleNamespace(agents=agents), tenant=T, key="k")  # type: ignore[arg-type]
    ctx = SimpleNamespace(lifespan_context=caller, request_id=1, protocol_version="2025-06-18")
    params = types.CallToolRequestParams(name="Chef", arguments={"message": "hi"})
    result = asyncio.run(server.call_tool(ctx, params))  # type: ignore[arg-type]
    assert result.is_error
    assert result.meta == {"parley": {"code": "budget_exceeded", "retry_after_s": "42"}}


def test_a_summary_s_model_call_counts_against_the_tenant_s_day(make_settings: Callable[..., Settings]) -> None:
    """The rolling summary (and a requested one) ask the model through `_ask` with their payer: counted."""
    from contextlib import asynccontextmanager
    from types import SimpleNamespace

    from parley.worker.memory import summary
    from parley.worker.providers.base import TEXT, ModelStream

    async def pieces() -> Any:
        yield (TEXT, "a short summary")

    @asynccontextmanager
    async def stream(**kwargs: Any) -> Any:
        yield ModelStream(pieces(), usage={"prompt_tokens": 300, "completion_tokens": 20})

    aio = fakeredis.FakeAsyncRedis(decode_responses=True)
    rt = SimpleNamespace(settings=make_settings(PARLEY_TENANT_BUDGETS=f"{T}:1000000"),
                         provider=SimpleNamespace(stream=stream), aio=aio, threads=None)  # fmt: skip
    prompt = [{"role": "user", "content": "fold these"}]
    payer = summary.Payer(T, "agent-1", "s1")
    assert asyncio.run(summary._ask(rt, ["m"], prompt, payer=payer)) == "a short summary"  # type: ignore[arg-type]
    assert asyncio.run(budgets.spent(aio, T, now_ms())) == 320
    asyncio.run(summary._ask(rt, ["m"], prompt))  # type: ignore[arg-type]  # no payer: not counted
    assert asyncio.run(budgets.spent(aio, T, now_ms())) == 320


def test_a_rolling_summary_makes_no_model_call_once_the_day_is_spent(
        make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from types import SimpleNamespace

    from parley.worker.memory import summary

    server = fakeredis.FakeServer()
    aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    asked: list[Any] = []

    def stream(**kwargs: Any) -> Any:
        asked.append(kwargs)
        raise AssertionError("no model call on a spent day")

    def rt(budgets_setting: str) -> Any:
        return SimpleNamespace(settings=make_settings(PARLEY_TENANT_BUDGETS=budgets_setting), aio=aio, threads=None,
                               provider=SimpleNamespace(stream=stream),
                               clients=SimpleNamespace(text=fakeredis.FakeRedis(server=server, decode_responses=True)))
    monkeypatch.setattr(summary, "_plan", lambda *_: ("agent-1", ["m"], SimpleNamespace(summary=""),
                                                       SimpleNamespace(messages=[]), 1000))  # fmt: skip
    asyncio.run(budgets.add_spent(aio, T, 1000, now_ms()))
    assert asyncio.run(summary.roll_summary(T, "s1", "token", rt=rt(f"{T}:1000"))) == "over_budget"
    assert asyncio.run(day_spent(aio, make_settings(PARLEY_TENANT_BUDGETS=""), T)) is False  # no budget: never
    assert asyncio.run(day_spent(aio, make_settings(PARLEY_TENANT_BUDGETS=f"{T}:1001"), T)) is False
    assert asyncio.run(day_spent(aio, make_settings(PARLEY_TENANT_BUDGETS="*:1000"), T)) is True
    assert asyncio.run(day_spent(aio, make_settings(PARLEY_TENANT_BUDGETS="*:1000"), "other")) is False
    assert asked == []


def test_with_no_budget_and_no_cap_a_call_costs_no_count_and_no_redis(make_settings: Callable[..., Settings]) -> None:
    aio = fakeredis.FakeAsyncRedis(decode_responses=True)
    budget = TurnBudget(aio=aio, settings=make_settings(), tenant=T, agent={}, model="some-local-model")
    asyncio.run(budget.check())
    asyncio.run(budget.count({}, [{"role": "user", "content": "x" * 400}], "y" * 40, []))
    assert budget.used == 0 and not budget.capped()
    assert asyncio.run(aio.keys("*")) == []


def test_a_cap_without_a_budget_counts_the_turn_only(make_settings: Callable[..., Settings]) -> None:
    aio = fakeredis.FakeAsyncRedis(decode_responses=True)
    budget = TurnBudget(aio=aio, settings=make_settings(), tenant=T, agent={"max_turn_tokens": 50}, model="m")
    asyncio.run(budget.count({"prompt_tokens": 40, "completion_tokens": 20}, [], "", []))
    assert budget.used == 60 and budget.capped()
    assert asyncio.run(aio.keys("*")) == []
