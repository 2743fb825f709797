"""Usage figures: what one turn adds to its tenant's usage counters, and what it cost.

A worker counts a turn in the step that commits it (FINISH_TURN, shared/store/scripts/lib_usage.lua), so a
turn is counted exactly once, with the tokens the model reported over the turn's run; a summary job's model
call adds its tokens (no turn) when it answers (ADD_USAGE); `GET /api/v1/usage` reads the counters back
(shared/store/usage.py). Cost is priced here, from PARLEY_MODEL_PRICES, and kept as an
integer of micro-units of PARLEY_CURRENCY, so adding millions of turns never drifts as floats would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

COUNTERS = ("turns", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")
"""What each group counts, in this order; `cost` in micro-units of the currency."""
MICROS = 1_000_000
"""Micro-units in one unit of the currency (a cost of 1_500_000 is 1.5 USD)."""
DAY_MS = 86_400_000
MAX_PRICE = Decimal(1_000_000)
"""Most a price per 1M tokens may be: a typo (a missing '.') is refused at start rather than billed."""


@dataclass(frozen=True)
class Price:
    """A model's prices per 1M tokens: prompt tokens, completion tokens, and prompt tokens the provider served
    from its cache (the input price when not given)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal

    def cost_micros(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> int:
        """The cost in micro-units: a price per 1M tokens times a count of tokens is already micro-units.
        `prompt_tokens` includes `cached_tokens` (as providers report them)."""
        cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
        exact = (Decimal(max(prompt_tokens, 0) - cached) * self.input + Decimal(cached) * self.cached_input
                 + Decimal(max(completion_tokens, 0)) * self.output)  # fmt: skip
        return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


def parse_prices(text: str) -> dict[str, Price]:
    """PARLEY_MODEL_PRICES: `model=input/output[/cached_input],...` (prices per 1M tokens), or a JSON object
    `{"model": [input, output, cached_input?], ...}`. A model name may hold ':' and '/' (the price is what
    follows its last '='). ValueError names the entry that is wrong."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        return _parse_json_prices(text)
    prices: dict[str, Price] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        model, sep, numbers = entry.rpartition("=")
        model = model.strip()
        if not sep or not model:
            raise ValueError(f"PARLEY_MODEL_PRICES entry {entry!r} is not `model=input/output[/cached_input]`")
        prices[model] = _price(numbers.split("/"), entry)
    return prices


def _parse_json_prices(text: str) -> dict[str, Price]:
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ValueError(f"PARLEY_MODEL_PRICES is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError("PARLEY_MODEL_PRICES as JSON must be an object of model -> [input, output, cached_input?]")
    prices: dict[str, Price] = {}
    for model, numbers in raw.items():
        if not model.strip() or not isinstance(numbers, list):
            raise ValueError(f"PARLEY_MODEL_PRICES entry {model!r}: give [input, output] or [input, output, cached]")
        prices[model.strip()] = _price([str(number) for number in numbers], model)
    return prices


def _price(numbers: list[str], entry: str) -> Price:
    if len(numbers) not in (2, 3):
        raise ValueError(f"PARLEY_MODEL_PRICES entry {entry!r}: give input/output or input/output/cached_input")
    values: list[Decimal] = []
    for number in numbers:
        try:
            value = Decimal(number.strip())
        except InvalidOperation:
            raise ValueError(f"PARLEY_MODEL_PRICES entry {entry!r}: {number!r} is not a number") from None
        if not value.is_finite() or value < 0 or value > MAX_PRICE:
            raise ValueError(f"PARLEY_MODEL_PRICES entry {entry!r}: a price is a number from 0 to {MAX_PRICE}")
        values.append(value)
    return Price(values[0], values[1], values[2] if len(values) == 3 else values[0])


def turn_counts(usage: dict[str, Any] | None, model: str, prices: dict[str, Price], turns: int = 1
                ) -> dict[str, int]:  # fmt: skip
    """What one turn adds to its groups' counters: one turn, the tokens of `usage` (the turn's flat usage
    dict; what a provider did not report counts 0) and, when `model` has a price, its cost in micro-units.
    `turns=0`: a model call outside any turn (a summary job's), which adds its tokens and cost only."""
    usage = usage or {}

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    counts = {"turns": turns, "prompt_tokens": count("prompt_tokens"), "completion_tokens": count("completion_tokens"),
              "cached_tokens": count("cached_tokens")}  # fmt: skip
    price = prices.get(model)
    counts["cost"] = price.cost_micros(counts["prompt_tokens"], counts["completion_tokens"],
                                       counts["cached_tokens"]) if price else 0  # fmt: skip
    return counts


def day_of(ms: int) -> date:
    """The UTC day of a time in ms: usage is counted by UTC day."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def days(since: date, until: date) -> list[date]:
    """Every day from `since` to `until`, both included, in order."""
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def cost_units(micros: int) -> float:
    """A cost in micro-units as a number of units of the currency, for JSON (exact to the micro-unit)."""
    return round(micros / MICROS, 6)
