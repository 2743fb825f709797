"""`calculator`: exact arithmetic on an expression, read with `ast` (never `eval`).

Numbers become `Fraction`s (decimal literals through `Decimal`, so `0.1 + 0.2` is exactly `0.3`);
only numbers, `+ - * / // % **`, unary signs and parentheses are understood. Every intermediate
value is bounded (`MAX_BITS`), and a power's size is estimated before it is computed, so
`2**10**10` is refused at once instead of filling the memory.
"""

from __future__ import annotations

import ast
import decimal
import math
from fractions import Fraction

from parley.tools.context import ToolError
from parley.tools.registry import tool

MAX_EXPRESSION_CHARS = 1_000
MAX_BITS = 10_000
"""Largest numerator or denominator of any value, in bits (about 3,000 decimal digits)."""
MAX_DECIMAL_PLACES = 100
"""A finite decimal with more places is shown as a fraction with its approximation."""
APPROXIMATION_DIGITS = 20
"""Significant digits of the decimal shown beside a fraction that has no finite decimal form."""

_ALLOWED = "only numbers, + - * / // % **, unary minus and parentheses are allowed"


@tool(timeout_s=5)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (fractions, no rounding), e.g. `(0.1 + 0.2) * 3` or `2**100 / 7`.

    Args:
        expression: numbers with + - * / // % ** and parentheses; ** is the power (not ^).
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ToolError(f"not an arithmetic expression ({error.msg}); {_ALLOWED}") from error
    except (RecursionError, MemoryError) as error:
        raise ToolError("the expression is nested too deeply") from error
    try:
        return format_number(evaluate(tree.body, expression.strip()))
    except RecursionError as error:
        raise ToolError("the expression is nested too deeply") from error


def evaluate(node: ast.expr, source: str) -> Fraction:
    """The exact value of an expression node (raises ToolError for anything but arithmetic)."""
    if isinstance(node, ast.Constant):
        return _number(node, source)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = evaluate(node.operand, source)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _bounded(_binary(node.op, evaluate(node.left, source), evaluate(node.right, source)))
    if isinstance(node, ast.Name):
        raise ToolError(f"names such as {node.id!r} are not allowed; {_ALLOWED}")
    if isinstance(node, ast.Call):
        raise ToolError(f"function calls are not allowed; {_ALLOWED}")
    if isinstance(node, ast.Attribute):
        raise ToolError(f"attributes such as {node.attr!r} are not allowed; {_ALLOWED}")
    raise ToolError(f"{ast.get_source_segment(source, node) or type(node).__name__!r} is not allowed; {_ALLOWED}")


def _number(node: ast.Constant, source: str) -> Fraction:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"{value!r} is not a number; {_ALLOWED}")
    if isinstance(value, int):
        return _bounded(Fraction(value))
    # A float literal is read from its source text, so `0.1` is exactly one tenth.
    text = (ast.get_source_segment(source, node) or repr(value)).replace("_", "")
    exact = decimal.Decimal(text)
    sign, digits, exponent = exact.as_tuple()
    if not isinstance(exponent, int) or abs(exponent) + len(digits) > MAX_BITS // 3:
        raise ToolError(f"the number {text} is too large or too precise")
    return _bounded(Fraction(exact))


def _binary(op: ast.operator, left: Fraction, right: Fraction) -> Fraction:
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div | ast.FloorDiv | ast.Mod):
        if right == 0:
            raise ToolError("division by zero")
        if isinstance(op, ast.Div):
            return left / right
        return Fraction(left // right) if isinstance(op, ast.FloorDiv) else left % right
    if isinstance(op, ast.Pow):
        return _power(left, right)
    if isinstance(op, ast.BitXor):
        raise ToolError("^ is not a power here: write ** (2**8 is 256)")
    raise ToolError(f"the operator {type(op).__name__} is not allowed; {_ALLOWED}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    """`base ** exponent` when it is a rational number small enough; a ToolError otherwise."""
    if base == 0:
        if exponent < 0:
            raise ToolError("division by zero (0 to a negative power)")
        return Fraction(1) if exponent == 0 else Fraction(0)
    p, q = exponent.numerator, exponent.denominator
    if base == 1 or (base == -1 and q == 1):
        return Fraction(1) if base == 1 or p % 2 == 0 else Fraction(-1)
    size = max(math.log2(abs(base.numerator)), math.log2(base.denominator))  # bits of the larger part
    if size * abs(p) > MAX_BITS * q:  # compared exactly, whatever the size of q
        raise ToolError(f"the result is too large (more than {MAX_BITS} bits)")
    if q == 1:
        return base**p
    if base < 0 and q % 2 == 0:
        raise ToolError("an even root of a negative number is not a real number")
    numerator, denominator = _exact_root(abs(base.numerator), q), _exact_root(base.denominator, q)
    if numerator is None or denominator is None:
        raise ToolError("the power is irrational (as 2 ** 0.5 is): there is no exact result")
    root = Fraction(numerator, denominator) * (-1 if base < 0 else 1)
    return root**p


def _exact_root(n: int, k: int) -> int | None:
    """The integer r with r**k == n, or None when n is not a perfect k-th power."""
    if n < 2:
        return n
    if k >= n.bit_length():  # 1 < root < 2 (this also keeps a huge k from being computed with)
        return None
    x = 1 << -(-n.bit_length() // k)  # 2**ceil(bits/k) >= the root
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            break
        x = y
    return x if x**k == n else None


def _bounded(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise ToolError(f"the result is too large (more than {MAX_BITS} bits)")
    return value


def format_number(value: Fraction) -> str:
    """An integer as is, a finite decimal (up to `MAX_DECIMAL_PLACES`) in full, else `p/q (≈ decimal)`."""
    if value.denominator == 1:
        return str(value.numerator)
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    places = max(twos, fives)
    if rest == 1 and places <= MAX_DECIMAL_PLACES:
        digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
        sign = "-" if value < 0 else ""
        return f"{sign}{digits[:-places]}.{digits[-places:]}"
    with decimal.localcontext() as context:
        context.prec = APPROXIMATION_DIGITS
        approximation = decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)
    return f"{value.numerator}/{value.denominator} (≈ {approximation})"
