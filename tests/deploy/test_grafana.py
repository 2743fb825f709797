"""deploy/grafana/parley-dashboard.json: valid JSON Grafana imports, every query parses as PromQL, and
the dashboard charts exactly Parley's metrics (the names fixed for the project and listed in
docs/deploy.md), each the way its type allows: counters through rate(), histograms through
histogram_quantile() over `_bucket` by `le`, gauges as they are."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
import yaml

from .validators import DEPLOY, REPO_ROOT

DASHBOARD = DEPLOY / "grafana" / "parley-dashboard.json"

#: Parley's metrics and their Prometheus types (as fixed for the project; docs/deploy.md lists them).
METRICS = {
    "parley_queue_depth": "gauge",
    "parley_queue_oldest_job_age_seconds": "gauge",
    "parley_queue_wait_seconds": "histogram",
    "parley_turn_seconds": "histogram",
    "parley_time_to_first_token_seconds": "histogram",
    "parley_tokens_total": "counter",
    "parley_model_errors_total": "counter",
    "parley_tool_calls_total": "counter",
    "parley_jobs_total": "counter",
    "parley_active_streams": "gauge",
    "parley_http_requests_total": "counter",
    "parley_http_request_seconds": "histogram",
    "parley_redis_up": "gauge",
}

#: Grafana's own variables, replaced by what Grafana would put there before a query is parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def parse(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def selectors(node: Any, functions: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """(metric name, the functions and aggregations around it, innermost last, the node) of every selector."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        yield node.name, functions, node
    elif kind == "MatrixSelector":
        yield from selectors(node.vector_selector, functions)
    elif kind == "Call":
        for arg in node.args:
            yield from selectors(arg, (*functions, node.func.name))
    elif kind == "AggregateExpr":
        yield from selectors(node.expr, (*functions, f"agg:{sorted(node.modifier.labels) if node.modifier else []}"))
    elif kind == "BinaryExpr":
        yield from selectors(node.lhs, functions)
        yield from selectors(node.rhs, functions)
    elif kind in {"ParenExpr", "UnaryExpr", "SubqueryExpr"}:
        yield from selectors(node.expr, functions)


def base_name(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) in METRICS:
            return series.removesuffix(suffix)
    return series


def check_query(expr: str) -> list[str]:
    """What is wrong with one query (empty when nothing is)."""
    try:
        tree = parse(expr)
    except ValueError as error:
        return [f"not PromQL ({error})"]
    problems = []
    for series, functions, _ in selectors(tree):
        name = base_name(series)
        kind = METRICS.get(name)
        if kind is None:
            problems.append(f"{series} is not one of Parley's metrics")
        elif kind == "counter" and "rate" not in functions and "increase" not in functions:
            problems.append(f"counter {series} outside rate()/increase()")
        elif kind == "histogram" and (not series.endswith("_bucket") or "histogram_quantile" not in functions
                                      or not any("'le'" in f for f in functions if f.startswith("agg:"))):
            problems.append(f"histogram {series} must be histogram_quantile() over _bucket aggregated by le")
        elif kind == "gauge" and {"rate", "increase"} & set(functions):
            problems.append(f"gauge {series} inside rate()")
        if '$job' not in expr:
            problems.append("query ignores the dashboard's $job variable")
    return problems


def test_every_query_parses_and_uses_its_metric_by_type(dashboard: dict[str, Any]) -> None:
    problems = [f"{title}: {problem}" for title, expr in queries(dashboard) for problem in check_query(expr)]
    assert problems == []


@pytest.mark.parametrize("expr, complaint", [
    ("max(parley_queue_depth{job=~\"$job\"}", "not PromQL"),
    ("max(parley_jobs_total{job=~\"$job\"})", "outside rate"),
    ("histogram_quantile(0.9, max by (outcome) (rate(parley_turn_seconds_bucket{job=~\"$job\"}[5m])))", "by le"),
    ("rate(parley_queue_depth{job=~\"$job\"}[5m])", "inside rate"),
    ("max(parley_queue_lenght{job=~\"$job\"})", "not one of"),
    ("max(parley_queue_depth)", "$job"),
])  # fmt: skip
def test_the_checks_refuse_a_bad_query(expr: str, complaint: str) -> None:
    assert any(complaint in problem for problem in check_query(expr)), check_query(expr)


def test_dashboard_charts_every_metric(dashboard: dict[str, Any]) -> None:
    charted = {base_name(series) for _, expr in queries(dashboard) for series, _, _ in selectors(parse(expr))}
    assert charted == set(METRICS)


def test_dashboard_imports_into_grafana(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert ref_ids == [chr(ord("A") + index) for index in range(len(ref_ids))]


def test_docs_list_the_metrics_the_dashboard_charts() -> None:
    documented = set(re.findall(r"`(parley_[a-z_]+)`", (REPO_ROOT / "docs" / "deploy.md").read_text()))
    assert set(METRICS) <= documented


def test_alert_rules_in_the_docs_parse_and_use_parley_metrics() -> None:
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```yaml\n(groups:.*?)```", text, re.S)
    assert block, "docs/deploy.md suggests alert rules in a ```yaml block"
    rules = yaml.safe_load(block.group(1))["groups"][0]["rules"]
    assert len(rules) >= 4
    for rule in rules:
        tree = parse(rule["expr"])
        names = {base_name(series) for series, _, _ in selectors(tree)}
        assert names and names <= set(METRICS), (rule["alert"], names)
