"""QEMU's HMP expression parser (``get_expr`` in monitor/hmp.c), for integer arguments.

``balloon 512`` reads its ``value:M`` argument with it, so the monitor answers what QEMU
answers: ``balloon abc`` -> ``invalid char 'a' in expression``, ``balloon`` -> ``unexpected
end of expression``, ``balloon 1G`` -> the expression ends at ``G`` and the caller reports
``extraneous characters at the end of line``. Numbers are ``strtoull(..., 0)`` (decimal,
``0x`` hex, leading-0 octal); ``+ - * / % & | ^ ~``, parentheses and ``'c'`` character
constants work; arithmetic wraps at 64 bits like QEMU's ``int64_t``. Registers (``$pc``) are
not offered: vmemlab's monitor has no CPU to name. Linear in the length of the line, with a
bounded nesting depth.
"""

from __future__ import annotations

_SPACE = " \t\n\r\v\f"
_U64 = 1 << 64
MAX_DEPTH = 64  # QEMU recurses without a bound; a line cannot exhaust our stack


class ExprError(Exception):
    """QEMU's ``expr_error`` text (printed before the ``Try "help ..."`` hint)."""


def _s64(value: int) -> int:
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


class _Parser:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos
        self.depth = 0

    @property
    def ch(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> None:
        if self.ch:
            self.pos += 1
            self.skip()

    def skip(self) -> None:
        while self.ch and self.ch in _SPACE:
            self.pos += 1

    def unary(self) -> int:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError("expression too deeply nested")
        try:
            return self._unary()
        finally:
            self.depth -= 1

    def _unary(self) -> int:
        ch = self.ch
        if ch == "+":
            self.next()
            return self.unary()
        if ch == "-":
            self.next()
            return _s64(-self.unary())
        if ch == "~":
            self.next()
            return _s64(~self.unary())
        if ch == "(":
            self.next()
            value = self.sum()
            if self.ch != ")":
                raise ExprError("')' expected")
            self.next()
            return value
        if ch == "'":
            self.pos += 1
            if not self.ch:
                raise ExprError("character constant expected")
            value = ord(self.ch) & 0xFF
            self.pos += 1
            if self.ch != "'":
                raise ExprError("missing terminating ' character")
            self.next()
            return value
        if ch == "$":
            raise ExprError("unknown register")
        if not ch:
            raise ExprError("unexpected end of expression")
        return self.number()

    def number(self) -> int:
        """``strtoull(pch, &p, 0)``: base from the prefix, ERANGE above 2^64-1."""
        text, start = self.text, self.pos
        pos = start
        base = 10
        if text.startswith(("0x", "0X"), pos) and pos + 2 < len(text) and \
                text[pos + 2] in "0123456789abcdefABCDEF":
            base, pos = 16, pos + 2
        elif text.startswith("0", pos):
            base = 8
        digits = "0123456789abcdef"[:base]
        end = pos
        while end < len(text) and text[end].lower() in digits:
            end += 1
        if end == start:
            raise ExprError(f"invalid char '{self.ch}' in expression")
        value = int(text[pos:end], base) if end > pos else 0
        if value >= _U64:
            raise ExprError("number too large")
        self.pos = end
        self.skip()
        return _s64(value)

    def prod(self) -> int:
        value = self.unary()
        while self.ch in ("*", "/", "%") and self.ch:
            op = self.ch
            self.next()
            other = self.unary()
            if op == "*":
                value = _s64(value * other)
            else:
                if other == 0:
                    raise ExprError("division by zero")
                quotient = abs(value) // abs(other) * (1 if (value < 0) == (other < 0) else -1)
                value = _s64(quotient) if op == "/" else _s64(value - quotient * other)
        return value

    def logic(self) -> int:
        value = self.prod()
        while self.ch in ("&", "|", "^") and self.ch:
            op = self.ch
            self.next()
            other = self.prod()
            value = _s64(value & other if op == "&" else value | other if op == "|"
                         else value ^ other)
        return value

    def sum(self) -> int:
        value = self.logic()
        while self.ch in ("+", "-") and self.ch:
            op = self.ch
            self.next()
            other = self.logic()
            value = _s64(value + other if op == "+" else value - other)
        return value


def get_expr(text: str, pos: int) -> tuple[int, int]:
    """QEMU's ``get_expr``: (value, position after it and its trailing spaces).

    Raises :class:`ExprError` with QEMU's message.
    """
    parser = _Parser(text, pos)
    parser.skip()
    return parser.sum(), parser.pos
