"""How long one HMP command line may be, and reading lines so that none is ever cut.

QEMU's monitor reads a line into ``cmd_buf[READLINE_CMD_BUF_SIZE + 1]`` with
``READLINE_CMD_BUF_SIZE = 4095`` (include/qemu/readline.h); ``readline_insert_char()``
silently drops every character past that, and Enter runs what is left -- a truncated
command. vmemlab keeps QEMU's limit but refuses an over-long line *as a whole*, in every HMP
path (stdio, ``-monitor`` sockets, QMP's ``human-monitor-command``, a scenario's ``monitor:``
step, the web console): it answers :func:`too_long` and runs nothing. The old socket reader
split a long line into pieces and ran the tail as a command; the socket's readline
(``monitor.hmp_readline``) holds at most ``MAX_LINE_BYTES`` bytes of a line, counts the rest
and answers :class:`Overlong` at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

MAX_LINE_BYTES = 4095  # QEMU's READLINE_CMD_BUF_SIZE


def too_long(size: int) -> str:
    """The refusal for a line of ``size`` bytes (our text: QEMU truncates silently)."""
    return (f"line too long: {size} bytes (the monitor reads at most {MAX_LINE_BYTES} bytes "
            "a line); nothing was run")


def line_error(line: str) -> str | None:
    """:func:`too_long`'s text if ``line`` (without its newline) is over the limit."""
    if len(line) <= MAX_LINE_BYTES // 4:  # cannot be over the limit: skip the encoding
        return None
    size = len(line.encode("utf-8", "replace"))
    return too_long(size) if size > MAX_LINE_BYTES else None


@dataclass(frozen=True)
class Overlong:
    """An input line that was too long and was dropped; ``size`` counts its bytes."""

    size: int


def read_line(stream: TextIO) -> str | Overlong | None:
    """One line from a text stream (None at its end); an over-long one is read to its end
    and dropped, holding at most MAX_LINE_BYTES + 2 characters of it at a time."""
    line = stream.readline(MAX_LINE_BYTES + 2)
    if not line:
        return None
    if line.endswith("\n") or len(line) <= MAX_LINE_BYTES:
        text = line.rstrip("\r\n")
        return Overlong(len(text.encode("utf-8", "replace"))) if line_error(text) else text
    size = len(line.encode("utf-8", "replace"))
    while not line.endswith("\n"):
        line = stream.readline(1 << 16)
        if not line:
            break
        size += len(line.rstrip("\r\n").encode("utf-8", "replace"))
    return Overlong(size)
