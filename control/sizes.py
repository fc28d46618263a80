"""QEMU's size parsing (``qemu_strtosz``, util/cutils.c) and the error texts around it.

Three callers, three wordings, all as QEMU 7.2 prints them:

* HMP ``qom-set`` (string input visitor -> ``parse_option_size``)::

      Parameter 'requested-size' expects a non-negative number below 2^64
      Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-
      and exabytes, respectively.

  and ``Value '99999999999999999999' is out of range for parameter 'requested-size'``;
* ``-device``/``-object`` properties: ``Parameter 'block-size' expects size``;
* QMP/``qom-set -j`` JSON values: ``Parameter 'requested-size' expects uint64``.
"""

from __future__ import annotations

import re
from fractions import Fraction

U64_MAX = (1 << 64) - 1

SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively."
)

_U64_DIGITS = len(str(U64_MAX))
_FRACTION_DIGITS = 40  # more cannot change a byte count below 2^64 by a byte (QEMU: a double)
_SUFFIX = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_DEC = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_HEX = re.compile(r"[ \t\n\v\f\r]*([+-]?)0[xX]([0-9a-fA-F]+)")
_FRAC = re.compile(r"\.([0-9]*)")


class SizeError(ValueError):
    """``qemu_strtosz`` failed; ``out_of_range`` is QEMU's -ERANGE, else -EINVAL."""

    def __init__(self, text: str, out_of_range: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.out_of_range = out_of_range


def _suffix_mul(ch: str, unit: int) -> int:
    exp = _SUFFIX.get(ch.lower()) if ch else None
    return -1 if exp is None else unit**exp


def strtosz(text: str, default_suffix: str = "b", unit: int = 1024) -> int:
    """``qemu_strtosz`` (default suffix B) / ``qemu_strtosz_MiB`` (``default_suffix='M'``).

    Decimal integer, optional fraction (only with a suffix), optional suffix
    B/K/M/G/T/P/E (any case); ``0x`` hex without fraction or suffix; no sign; nothing
    after. Raises :class:`SizeError`.
    """
    m = _DEC.match(text)
    if m is None:
        raise SizeError(text)
    if m.group(1) == "-":
        raise SizeError(text)
    end = m.end()
    if len(m.group(2).lstrip("0")) > _U64_DIGITS:  # before int(): no 4300-digit ValueError
        raise SizeError(text, out_of_range=True)
    val = int(m.group(2).lstrip("0") or "0")
    if val > U64_MAX:
        raise SizeError(text, out_of_range=True)
    fraction = Fraction(0)
    rest = text[end:]
    if val == 0 and rest[:1] in ("x", "X"):
        h = _HEX.match(text)
        if h is None or h.group(1) == "-":
            raise SizeError(text)
        val = int(h.group(2), 16)
        if val > U64_MAX:
            raise SizeError(text, out_of_range=True)
        rest = text[h.end():]
        if rest[:1] == "." or _suffix_mul(rest[:1], unit) > 0:
            raise SizeError(text)
    elif rest[:1] == ".":
        f = _FRAC.match(rest)
        assert f is not None
        digits = f.group(1)[:_FRACTION_DIGITS]
        if digits:
            fraction = Fraction(int(digits), 10 ** len(digits))
        rest = rest[f.end():]
    mul = _suffix_mul(rest[:1], unit)
    if mul > 0:
        rest = rest[1:]
    else:
        mul = _suffix_mul(default_suffix, unit)
    if mul == 1 and fraction:
        raise SizeError(text)
    if rest:
        raise SizeError(text)
    valf = int(fraction * mul)
    if val > (U64_MAX - valf) // mul:
        raise SizeError(text, out_of_range=True)
    return val * mul + valf


def parse_option_size(name: str, text: str) -> int:
    """HMP ``qom-set`` / QemuOpts size parsing; raises ``ValueError`` with QEMU's text."""
    try:
        return strtosz(text)
    except SizeError as err:
        if err.out_of_range:
            raise ValueError(f"Value '{text}' is out of range for parameter '{name}'") from None
        raise ValueError(
            f"Parameter '{name}' expects a non-negative number below 2^64\n{SIZE_HINT}"
        ) from None


def parse_property_size(name: str, text: str) -> int:
    """``-device``/``-object`` size properties: ``Parameter 'X' expects size``."""
    try:
        return strtosz(text)
    except SizeError:
        raise ValueError(f"Parameter '{name}' expects size") from None


def json_to_uint64(name: str, value: object) -> int:
    """A JSON value as QEMU's QObject input visitor reads a uint64 (negatives wrap)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Parameter '{name}' expects uint64")
    if -(1 << 63) <= value < 0:
        return value & U64_MAX
    if 0 <= value <= U64_MAX:
        return value
    raise ValueError(f"Parameter '{name}' expects uint64")  # QEMU parsed it as a double


def format_mib(size: int) -> str:
    """Human size for teaching output: ``512 MiB``, ``1.5 GiB``, ``4 KiB``."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            value = size / unit
            return f"{value:.0f} {name}" if value == int(value) else f"{value:.1f} {name}"
    return f"{size} B"
