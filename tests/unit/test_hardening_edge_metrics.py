"""`/metrics` carries no tenant data by default, and tenants cannot grow its label sets (issue 11 item 9).

Token counts lose agent and model names unless the operator opts in (PARLEY_METRICS_AGENT_LABELS), and then
hold at most AGENT_LABEL_SETS label sets deployment-wide, on both write paths (pipelines and the turn
scripts); tool names the deployment does not have, model statuses that are not HTTP statuses and raw
request paths never become label values."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from parley.api import metrics
from parley.api.middleware import BodyGuard, HttpMetrics
from parley.shared import telemetry
from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    telemetry.PENDING.take()
    telemetry.configure(agent_labels=False)
    yield
    telemetry.PENDING.take()
    telemetry.configure(agent_labels=False)


def flush(clients: RedisClients) -> None:
    with clients.text.pipeline(transaction=False) as pipe:
        telemetry.write(pipe, telemetry.PENDING.take())
        pipe.execute()


def token_samples(clients: RedisClients, settings: Settings) -> dict[tuple[tuple[str, str], ...], float]:
    body, _ = metrics.render(SimpleNamespace(clients=clients, settings=settings), 0)  # type: ignore[arg-type]
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(body.decode())
            if family.name == "parley_tokens" for s in family.samples}  # fmt: skip


def test_by_default_token_counts_carry_no_agent_or_model_name(clients: RedisClients, settings: Settings) -> None:
    telemetry.tokens("AcmeSecretProject", "acme-finetune-7", 10, 3)
    telemetry.tokens("OtherTenantBot", "gpt-4o", 5, None)
    assert {field for _, field, _ in telemetry.PENDING.take()} == {'["","","in"]', '["","","out"]'}


def test_by_default_a_scrape_shows_tokens_by_direction_only(clients: RedisClients, settings: Settings) -> None:
    telemetry.configure(agent_labels=True)  # a worker that had it on wrote names into Redis
    telemetry.tokens("AcmeSecretProject", "acme-finetune-7", 10, 3)
    telemetry.tokens("OtherTenantBot", "gpt-4o", 5, None)
    flush(clients)
    body, _ = metrics.render(SimpleNamespace(clients=clients, settings=settings), 0)  # type: ignore[arg-type]
    assert b"AcmeSecret" not in body and b"acme-finetune" not in body and b"OtherTenantBot" not in body
    assert token_samples(clients, settings) == {(("direction", "in"),): 15, (("direction", "out"),): 3}


def test_opted_in_a_scrape_shows_agent_and_model(clients: RedisClients,
                                                  make_settings: Callable[..., Settings]) -> None:  # fmt: skip
    telemetry.configure(agent_labels=True)
    telemetry.tokens("Chef", "m", 10, 3)
    flush(clients)
    samples = token_samples(clients, make_settings(PARLEY_METRICS_AGENT_LABELS="true"))
    assert samples[(("agent", "Chef"), ("direction", "in"), ("model", "m"))] == 10


def test_agent_labels_follow_the_setting_when_never_configured(monkeypatch: pytest.MonkeyPatch,
                                                               make_settings: Callable[..., Settings]) -> None:
    monkeypatch.setattr(telemetry, "_agent_labels", None)
    opted_in = make_settings(PARLEY_METRICS_AGENT_LABELS="1")
    monkeypatch.setattr("parley.shared.settings.get_settings", lambda: opted_in)
    assert telemetry.agent_labels() is True


def test_opted_in_label_sets_are_bounded_on_the_pipeline_path(clients: RedisClients) -> None:
    telemetry.configure(agent_labels=True)
    for n in range(telemetry.AGENT_LABEL_SETS + 50):
        telemetry.tokens(f"agent-{n}", "m", 1, None)
        flush(clients)  # one delta at a time, as many processes would write them
    stored = clients.text.hgetall(telemetry.TOKENS.key)
    assert len(stored) == telemetry.AGENT_LABEL_SETS + 1
    assert stored['["other","other","in"]'] == "50"
    assert sum(int(count) for count in stored.values()) == telemetry.AGENT_LABEL_SETS + 50
    telemetry.tokens("agent-7", "m", 4, None)  # a label set already held keeps counting as itself
    flush(clients)
    assert clients.text.hget(telemetry.TOKENS.key, '["agent-7","m","in"]') == "5"


def test_opted_in_label_sets_are_bounded_on_the_turn_script_path(clients: RedisClients, turns: TurnStore) -> None:
    telemetry.configure(agent_labels=True)
    full = {telemetry.labels_field((f"a{n}", "m", "in")): 1 for n in range(telemetry.AGENT_LABEL_SETS)}
    clients.text.hset(telemetry.TOKENS.key, mapping=full)
    telemetry.tokens("a3", "m", 2, None)
    telemetry.tokens("brand-new", "m", 7, 1)
    # FINISH_TURN of a job that is gone ends nothing, but still writes the deltas it carries (finish_turn.lua).
    assert turns.finish("t", "job_gone", status="finished", attempt=None, events_out=[], session_id="s") is False
    stored = clients.text.hgetall(telemetry.TOKENS.key)
    assert stored['["a3","m","in"]'] == "3"
    assert stored['["other","other","in"]'] == "7" and stored['["other","other","out"]'] == "1"
    assert '["brand-new","m","in"]' not in stored


def test_tools_the_deployment_does_not_have_count_as_other() -> None:
    telemetry.tool_call("calculator", ok=True)
    telemetry.tool_call("exfiltrate_acme_payroll", ok=False)  # a name the model made up
    fields = {field for name, field, _ in telemetry.PENDING.take() if name == "parley_tool_calls"}
    assert fields == {'["calculator","ok"]', '["other","error"]'}


def test_model_error_labels_are_http_statuses_or_other() -> None:
    for status in (503, "429", "acme-internal-error", 99999, None):
        telemetry.model_error(status)
    fields = {field for name, field, _ in telemetry.PENDING.take() if name == "parley_model_errors"}
    assert fields == {'["503"]', '["429"]', '["other"]', '["connection"]'}


def test_http_routes_are_templates_never_raw_paths() -> None:
    app = FastAPI()

    @app.get("/api/v1/agents/{agent}")
    def read(agent: str) -> dict[str, str]:
        return {"agent": agent}

    @app.post("/echo")
    def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    app.add_middleware(BodyGuard, max_body_bytes=1024)
    app.add_middleware(HttpMetrics)
    with TestClient(app) as http:
        assert http.get("/api/v1/agents/AcmeSecretProject").status_code == 200
        assert http.get("/acme/secret/path").status_code == 404
        assert http.post("/echo", content=json.dumps({"x": "y" * 2000})).status_code == 413
        lone = http.post("/echo", content=rb'{"x": "\ud800"}', headers={"content-type": "application/json"})
        assert lone.json() == {"x": "\ufffd"}
    fields = {field for name, field, _ in telemetry.PENDING.take() if name == "parley_http_requests"}
    assert fields == {'["GET","/api/v1/agents/{agent}","200"]', '["GET","unmatched","404"]',
                      '["POST","unmatched","413"]', '["POST","/echo","200"]'}  # fmt: skip
