"""The calculator is exact, understands arithmetic only, and refuses what could hang or escape."""

from __future__ import annotations

import pytest

from parley.tools import ToolError
from parley.tools.calculator import MAX_BITS, calculator


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0.1 + 0.2", "0.3"),
        ("(0.1 + 0.2) * 3", "0.9"),
        ("1 - 0.9", "0.1"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("-3 ** 2", "-9"),
        ("(-3) ** 2", "9"),
        ("+5 - -5", "10"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("5.5 % 2", "1.5"),
        ("2 ** -2", "0.25"),
        ("1 / 8", "0.125"),
        ("-1 / 8", "-0.125"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("1e3 + 1_000", "2000"),
        ("0x10 + 1", "17"),
        ("1 / 3", "1/3 (≈ 0.33333333333333333333)"),
        ("-2 / 3", "-2/3 (≈ -0.66666666666666666667)"),
        ("4 ** 0.5", "2"),
        ("(2**9999) ** (1/9999)", "2"),
        ("(1/1024) ** 0.1", "0.5"),
        ("(8/27) ** (1/3)", "2/3 (≈ 0.66666666666666666667)"),
        ("(-8) ** (1/3)", "-2"),
        ("1 ** 10**10", "1"),
        ("0 ** 5", "0"),
        ("0.1 * 3", "0.3"),
        ("99999999999999999999 + 1", "100000000000000000000"),
        ("0.30000000000000004 - 0.3", "0.00000000000000004"),
        ("2 ** -10", "0.0009765625"),
        ("2 ** -101", f"1/{2**101} (≈ 3.9443045261050590271E-31)"),
    ],
)
def test_exact_results(expression: str, expected: str) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "function calls are not allowed"),
        ("__import__('os').system('true')", "not allowed"),
        ("f()", "function calls are not allowed"),
        ("a.b", "attributes such as 'b' are not allowed"),
        ("(1).real", "attributes such as 'real' are not allowed"),
        ("x + 1", "names such as 'x' are not allowed"),
        ("2**10**10", "too large"),
        ("10 ** 100000", "too large"),
        ("(2**5000) * (2**5000) * 4", "too large"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 ^ 8", "write **"),
        ("1 << 2", "not allowed"),
        ("'a' * 3", "is not a number"),
        ("True + 1", "is not a number"),
        ("1j * 2", "is not a number"),
        ("[1, 2]", "not allowed"),
        ("1 if 1 else 2", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 +", "not an arithmetic expression"),
        ("x = 1", "not an arithmetic expression"),
        ("2 ** 0.5", "irrational"),
        ("2 ** (1 / 1000000000)", "irrational"),
        ("(2**9999) ** (1 / 10**3000)", "irrational"),
        ("(-4) ** 0.5", "not a real number"),
        ("(1/2) ** 0.5", "irrational"),
        ("1e999999999", "too large or too precise"),
        ("1" * 1001, "longer than 1000"),
    ],
)
def test_refusals(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace("*", r"\*")):
        calculator(expression)


def test_results_are_bounded_before_they_are_computed() -> None:
    """`2**10**10` would need over a gigabyte; the estimate refuses it without computing it."""
    with pytest.raises(ToolError, match=f"more than {MAX_BITS} bits"):
        calculator("(3 ** 10**9) + 1")


def test_the_largest_values_still_print() -> None:
    """Python refuses to print ints over 4300 digits; no result gets near that."""
    assert len(calculator("2 ** 9999")) == 3010
    assert calculator("(1/2) ** 9999").startswith("1/9975315584403791924")
    assert calculator("(2**9999) ** (1/9999)") == "2"


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ToolError):
        calculator("(" * 400 + "1" + ")" * 400)
