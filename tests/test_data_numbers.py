"""Number formats of the study tables: %.15g and Grisu3 shortest digits with a %.17g fallback."""

import math
import random
import struct
from decimal import Decimal

import pytest

from interplay.data.numbers import format_g15, format_grisu3, format_repr, grisu3


def shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of a positive double from Python's repr (David Gay's algorithm)."""
    _, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    return stripped, exponent + len(text) - len(stripped)


def normalised(result: tuple[str, int]) -> tuple[str, int]:
    digits, exponent = result
    stripped = digits.rstrip("0")
    return stripped, exponent + len(digits) - len(stripped)


def random_doubles(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    values = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:  # decimals with few digits, like the UCI files
            values.append(float(f"{rng.randint(1, 99999)}e{rng.randint(-12, 6)}"))
        elif kind < 0.9:  # arbitrary bit patterns of normal doubles
            bits = (rng.randint(1, 2046) << 52) | rng.getrandbits(52)
            values.append(struct.unpack("<d", struct.pack("<Q", bits))[0])
        else:  # powers of two (the lower boundary is closer) and subnormals
            values.append(
                math.ldexp(1.0, rng.randint(-1070, 1020)) if kind < 0.95 else rng.randint(1, 2**52) * 5e-324
            )
    return values


def test_g15_examples_from_the_tables():
    assert format_g15(float("0.150")) == "0.15"  # yacht's original prints trailing zeros
    assert format_g15(540.0) == "540"  # integers without a decimal point
    assert format_g15(40.269535256000005) == "40.269535256"  # the .xls double, 15 significant digits
    assert format_g15(79.98611076) == "79.98611076"
    assert format_g15(1872790.507) == "1872790.507"
    assert format_g15(-0.0) == "0"


def test_grisu3_gives_the_shortest_closest_digits_or_gives_up():
    values = random_doubles(4000, seed=1)
    failures = 0
    for value in values:
        result = grisu3(value)
        if result is None:
            failures += 1
            continue
        assert normalised(result) == shortest_digits(value), value
    # Grisu3 gives up on roughly 0.5 % of doubles (Loitsch 2010); never on most, never on all.
    assert 0 < failures < 0.02 * len(values)


def test_grisu3_fallback_prints_17_digits_that_round_trip():
    failing = [v for v in random_doubles(4000, seed=2) if grisu3(v) is None]
    assert failing
    for value in failing:
        assert format_grisu3(value) == f"{value:.17g}"
        assert format_grisu3(-value) == f"-{value:.17g}"
        assert float(format_grisu3(value)) == value


def test_grisu3_fails_on_a_cell_of_the_ionosphere_table():
    # The authors' table prints 0.06531 as 0.065310000000000007: Grisu3 gives up on this double.
    assert grisu3(0.06531) is None
    assert format_grisu3(0.06531) == "0.065310000000000007"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.00039, "3.9e-4"),  # exponent notation is shorter than 0.00039
        (-3e-5, "-3e-5"),
        (0.0376, "0.0376"),  # plain is shorter than 3.76e-2
        (0.0047, "0.0047"),  # a tie goes to plain notation
        (-0.00166, "-0.00166"),
        (1.0, "1"),
        (-1.0, "-1"),
        (0.0, "0"),
        (123456.0, "123456"),
        (1e22, "1e22"),
        (0.5, "0.5"),
    ],
)
def test_grisu3_notation(value, text):
    assert format_grisu3(value) == text
    assert float(text) == value


def test_formats_round_trip_where_promised():
    for value in random_doubles(500, seed=3):
        assert float(format_grisu3(value)) == value
        assert float(format_repr(value)) == value


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        format_grisu3(float("nan"))
    with pytest.raises(ValueError, match="positive"):
        grisu3(-1.0)
