"""Regular expressions from scenario files, bounded in time and memory.

A scenario (and so a lesson) can come from anyone: ``vmemlab play`` runs files from the
internet and the web server plays shared uploads. Python's ``re`` backtracks, so a pattern
such as ``^(?:.|.)*@@@`` takes exponential time and holds the GIL while it does. Every
pattern a scenario carries (``expect``, ``expect-not``, ``expect-error``, a condition's
``console``) is therefore compiled here, with RE2 (``google-re2``): matching is linear in
the text, whatever the pattern, and releases the GIL.

What cannot be bounded is refused when the file is loaded, with a message the loader turns
into ``FILE:LINE: ...``:

* RE2 syntax only: no backreferences (``\\1``), no lookaround (``(?=``, ``(?!``,
  ``(?<=``, ``(?<!``), ``\\z`` instead of Python's ``\\Z``; RE2 itself caps a repetition
  count at 1000;
* a pattern of at most :data:`MAX_PATTERN_CHARS` characters whose compiled program has at
  most :data:`MAX_PROGRAM_SIZE` instructions.

Linear is not yet cheap: when RE2's DFA runs out of its memory (``[ab]*a[ab]{30}``-style
patterns have exponentially many DFA states) it falls back to its NFA, which costs about
12 ns per character *per instruction* (measured). So the work of one search is bounded by
bounding both factors: the program size above, and the text searched, at most
:data:`MAX_SUBJECT_CHARS` characters per search (HMP output is far shorter; the guest console
is a deque of 2000 lines of at most 4096 characters, searched newest line first until that
many characters were looked at). Worst case: 300 x 128 Ki x 12 ns = 0.5 s, without the GIL.
Memory: a pattern is compiled afresh for each search with RE2's default budget
(:data:`MAX_MEMORY`), so no DFA cache outlives the search that built it.

Patterns are multi-line (``^``/``$`` at every line), as they were with ``re.MULTILINE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import re2

MAX_PATTERN_CHARS = 512
MAX_PROGRAM_SIZE = 300
MAX_MEMORY = 8 << 20
MAX_SUBJECT_CHARS = 128 << 10

_HINTS = {
    "invalid escape sequence: \\Z": "use \\z for the end of the text",
    "invalid perl operator: (?=": "lookahead is not supported",
    "invalid perl operator: (?!": "lookahead is not supported",
    "invalid perl operator: (?<": "lookbehind is not supported",
    "invalid escape sequence: \\": "backreferences are not supported",
}


class PatternError(ValueError):
    """The pattern is not valid RE2 syntax or is too large; the message says which."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_MEMORY
    options.log_errors = False  # errors become PatternError, not lines on stderr
    return options


@dataclass(frozen=True)
class Pattern:
    """A checked, bounded pattern; ``pattern`` is the text as the scenario wrote it."""

    pattern: str

    def _compile(self) -> re2._Regexp:
        return re2.compile("(?m)" + self.pattern, _options())

    def search(self, text: str) -> bool:
        """Does the pattern match somewhere in (the first MAX_SUBJECT_CHARS of) ``text``?"""
        return self._compile().search(text[:MAX_SUBJECT_CHARS]) is not None

    def search_lines(self, lines: Sequence[str]) -> bool:
        """Does some line match? Newest (last) line first, MAX_SUBJECT_CHARS in all."""
        compiled = self._compile()
        budget = MAX_SUBJECT_CHARS
        for line in reversed(lines):
            if budget <= 0:
                return False
            if compiled.search(line[:budget]) is not None:
                return True
            budget -= max(1, len(line))
        return False


def compile_pattern(text: str) -> Pattern:
    """Compile ``text`` as a bounded multi-line pattern; raises :class:`PatternError`."""
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"the pattern is {len(text)} characters long "
                           f"(at most {MAX_PATTERN_CHARS})")
    pattern = Pattern(text)
    try:
        compiled = pattern._compile()
    except re2.error as err:
        raise PatternError(_describe(err)) from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise PatternError(f"the pattern is too complex ({compiled.programsize} RE2 "
                           f"instructions, at most {MAX_PROGRAM_SIZE})")
    return pattern


def _describe(err: re2.error) -> str:
    raw = err.args[0] if err.args else ""
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if message.startswith("pattern too large"):
        return f"the pattern is too complex ({message})"
    for prefix, hint in _HINTS.items():
        if message.startswith(prefix):
            if prefix.endswith("\\") and not message[len(prefix):][:1].isdigit():
                continue
            return f"{message} ({hint}: scenario patterns use RE2 syntax)"
    return message
