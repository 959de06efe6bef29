"""Number formats that reproduce the authors' table files byte for byte.

Two writers made the pinned tables (found by studying them; each rule reproduces every cell):

- `g15` (airfoil, concrete, energy, yacht, bikesharing, protein): C's ``%.15g`` -- 15 significant
  digits, trailing zeros dropped, integers without a decimal point (``0.150`` -> ``0.15``,
  ``540.0`` -> ``540``, the .xls double 40.269535256000005 -> ``40.269535256``).
- `grisu3` (ionosphere): shortest round-trip digits from the Grisu3 algorithm (Loitsch 2010), falling
  back to ``%.17g`` for the ~0.4 % of doubles where Grisu3 gives up (that is why the table holds
  ``0.065310000000000007`` next to ``0.06531``-style cells); the digits are printed in plain or
  exponent notation (unpadded exponent: ``-3.9e-4``, ``-3e-5``), whichever is shorter, plain on a tie.
  The 26 fallback cells of the pinned table are exactly the Grisu3 failures of this implementation.
- `repr` (the synthetic toy set): Python's shortest round-trip ``repr`` (``-3.0``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

_MASK_32 = (1 << 32) - 1
_MASK_64 = (1 << 64) - 1
# Grisu's target window for the scaled binary exponent (as in the double-conversion library).
_MIN_TARGET_EXPONENT = -60
_CACHED_POWER_STEP = 8
_CACHED_POWER_MIN = -348


def format_g15(value: float) -> str:
    """``%.15g`` with ``-0`` printed as ``0``."""
    text = f"{value:.15g}"
    return "0" if text == "-0" else text


def format_repr(value: float) -> str:
    return repr(float(value))


def _cached_power(k: int) -> tuple[int, int]:
    """10**k as a normalised 64-bit significand f and binary exponent e (f * 2**e), rounded to nearest."""
    if k >= 0:
        n = 10**k
        e = n.bit_length() - 64
        f = ((n + (1 << (e - 1))) >> e) if e > 0 else n << -e
    else:
        d = 10**-k
        e = -(64 + d.bit_length())
        f = ((1 << (1 - e)) + d) // (2 * d)  # round(2**-e / d)
        while f >= 1 << 64:
            e += 1
            f = ((1 << (1 - e)) + d) // (2 * d)
        while f < 1 << 63:
            e -= 1
            f = ((1 << (1 - e)) + d) // (2 * d)
    if f == 1 << 64:
        f, e = f >> 1, e + 1
    return f, e


_CACHED_POWERS = {k: _cached_power(k) for k in range(_CACHED_POWER_MIN, 341, _CACHED_POWER_STEP)}


def _multiply(f1: int, e1: int, f2: int, e2: int) -> tuple[int, int]:
    """DiyFp product: the upper 64 bits of the 128-bit product, rounded (Grisu's `Times`)."""
    a, b, c, d = f1 >> 32, f1 & _MASK_32, f2 >> 32, f2 & _MASK_32
    middle = ((b * d) >> 32) + ((a * d) & _MASK_32) + ((b * c) & _MASK_32) + (1 << 31)
    return (a * c + ((a * d) >> 32) + ((b * c) >> 32) + (middle >> 32)) & _MASK_64, e1 + e2 + 64


def _normalise(f: int, e: int) -> tuple[int, int]:
    shift = 64 - f.bit_length()
    return f << shift, e - shift


def _round_weed(
    digits: list[int], distance_high_w: int, unsafe: int, rest: int, ten_kappa: int, unit: int
) -> bool:
    """Move the last digit towards w; False when the result cannot be proven shortest and closest."""
    small, big = distance_high_w - unit, distance_high_w + unit
    while (
        rest < small
        and unsafe - rest >= ten_kappa
        and (rest + ten_kappa < small or small - rest >= rest + ten_kappa - small)
    ):
        digits[-1] -= 1
        rest += ten_kappa
    if (
        rest < big
        and unsafe - rest >= ten_kappa
        and (rest + ten_kappa < big or big - rest > rest + ten_kappa - big)
    ):
        return False
    return 2 * unit <= rest <= unsafe - 4 * unit


def grisu3(value: float) -> tuple[str, int] | None:
    """Shortest digits and exponent (value = int(digits) * 10**exponent) of a finite value > 0.

    Returns None where Grisu3 gives up (it then cannot prove its digits shortest).
    """
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"grisu3 needs a finite positive value, got {value!r}")
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    biased_exponent, mantissa = (bits >> 52) & 0x7FF, bits & ((1 << 52) - 1)
    if biased_exponent == 0:
        f, e = mantissa, -1074
    else:
        f, e = mantissa | (1 << 52), biased_exponent - 1075
    w = _normalise(f, e)
    plus = _normalise((f << 1) + 1, e - 1)
    lower_closer = mantissa == 0 and biased_exponent > 1
    minus_f, minus_e = ((f << 2) - 1, e - 2) if lower_closer else ((f << 1) - 1, e - 1)
    minus = (minus_f << (minus_e - plus[1]), plus[1])

    k = math.ceil((_MIN_TARGET_EXPONENT - (w[1] + 64) + 63) * 0.30102999566398114)
    index = (-_CACHED_POWER_MIN + k - 1) // _CACHED_POWER_STEP + 1
    decimal_exponent = _CACHED_POWER_MIN + index * _CACHED_POWER_STEP
    power = _CACHED_POWERS[decimal_exponent]
    scaled_w = _multiply(*w, *power)
    scaled_minus = _multiply(*minus, *power)
    scaled_plus = _multiply(*plus, *power)

    # DigitGen: generate digits of the upper boundary until inside the unsafe interval.
    unit = 1
    too_low, too_high = scaled_minus[0] - unit, scaled_plus[0] + unit
    unsafe = too_high - too_low
    shift = -scaled_w[1]
    one = 1 << shift
    integrals, fractionals = too_high >> shift, too_high & (one - 1)
    kappa = len(str(integrals)) if integrals else 0
    divisor = 10 ** (kappa - 1) if integrals else 0
    digits: list[int] = []
    while kappa > 0:
        digits.append(integrals // divisor)
        integrals %= divisor
        kappa -= 1
        rest = (integrals << shift) + fractionals
        if rest < unsafe:
            ok = _round_weed(digits, too_high - scaled_w[0], unsafe, rest, divisor << shift, unit)
            return ("".join(map(str, digits)), kappa - decimal_exponent) if ok else None
        divisor //= 10
    while True:
        fractionals *= 10
        unit *= 10
        unsafe *= 10
        digits.append(fractionals >> shift)
        fractionals &= one - 1
        kappa -= 1
        if fractionals < unsafe:
            ok = _round_weed(digits, (too_high - scaled_w[0]) * unit, unsafe, fractionals, one, unit)
            return ("".join(map(str, digits)), kappa - decimal_exponent) if ok else None


def _plain(digits: str, exponent: int) -> str:
    if exponent >= 0:
        return digits + "0" * exponent
    point = len(digits) + exponent
    if point > 0:
        return f"{digits[:point]}.{digits[point:]}"
    return "0." + "0" * -point + digits


def _scientific(digits: str, exponent: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{exponent + len(digits) - 1}"


def format_grisu3(value: float) -> str:
    """Shortest digits (Grisu3, else ``%.17g``) in the shorter of plain and exponent notation."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write non-finite value {value!r} to a table")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    shortest = grisu3(abs(value))
    if shortest is None:
        return f"{sign}{abs(value):.17g}"
    digits, exponent = shortest
    plain, scientific = _plain(digits, exponent), _scientific(digits, exponent)
    return sign + (scientific if len(scientific) < len(plain) else plain)


NUMBER_FORMATS: dict[str, Callable[[float], str]] = {
    "g15": format_g15,
    "grisu3": format_grisu3,
    "repr": format_repr,
}


def format_rows(rows, number_format: str) -> str:
    """Table text: one line per row, cells separated by one space, a newline after every row."""
    fmt = NUMBER_FORMATS[number_format]
    return "".join(" ".join(fmt(value) for value in row) + "\n" for row in rows)
