"""HMP on stdio: QEMU's ``(qemu)`` prompt with readline history and tab completion.

Completion covers command names, ``info`` subcommands, device ids/QOM paths and property
names (``monitor.hmp.complete``). History is kept in ``~/.vmemlab_history`` when that is
writable. Without a terminal (a pipe, a test) the same loop reads lines with no prompt
editing, so ``printf 'info status\\nquit\\n' | vmemlab run`` works. Lines are bounded as
QEMU's readline bounds them (``monitor.hmp_line``): an over-long one is refused whole.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO

from monitor.commands import MonitorContext
from monitor.hmp import complete, execute
from monitor.hmp_line import Overlong, read_line, too_long

PROMPT = "(qemu) "
BANNER = "QEMU 7.2.22 monitor - type 'help' for more information"
HISTORY = os.path.expanduser("~/.vmemlab_history")


class Completer:
    """A readline completer over ``monitor.hmp.complete``."""

    def __init__(self, ctx: MonitorContext | None) -> None:
        self.ctx = ctx
        self._matches: list[str] = []

    def __call__(self, text: str, state: int) -> str | None:
        if state == 0:
            try:
                import readline

                before = readline.get_line_buffer()[: readline.get_endidx()]
            except Exception:  # no readline: complete the word alone
                before = text
            if not before.endswith(text):  # not called from an active readline prompt
                before = text
            self._matches = [m + " " for m in complete(self.ctx, before)]
        return self._matches[state] if state < len(self._matches) else None


def _setup_readline(ctx: MonitorContext) -> bool:
    try:
        import readline
    except ImportError:
        return False
    readline.set_completer(Completer(ctx))
    readline.set_completer_delims(" \t\n")
    readline.parse_and_bind("tab: complete")
    readline.set_history_length(1000)
    with contextlib.suppress(OSError):
        readline.read_history_file(HISTORY)
        readline.write_history_file(HISTORY)  # trims the file to the history length
    return True


def _append_history() -> None:
    """Keep the history file current (the process may end right after ``quit``)."""
    with contextlib.suppress(Exception):
        import readline

        if not os.path.exists(HISTORY):
            readline.write_history_file(HISTORY)
        else:
            readline.append_history_file(1, HISTORY)


def run_console(ctx: MonitorContext, stdin: TextIO | None = None,
                stdout: TextIO | None = None) -> None:
    """Read HMP lines until ``quit`` (or end of input); print each command's output."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin is sys.stdin and stdin.isatty() and stdout.isatty()
    use_readline = interactive and _setup_readline(ctx)
    stdout.write(BANNER + "\n")
    stdout.flush()
    try:
        while not ctx.quitting:
            try:
                if use_readline:
                    line = input(PROMPT)
                else:
                    stdout.write(PROMPT)
                    stdout.flush()
                    got = read_line(stdin)  # bounded: an over-long line is dropped whole
                    if got is None:
                        stdout.write("\n")
                        break
                    if isinstance(got, Overlong):
                        stdout.write(f"Error: {too_long(got.size)}\n")
                        stdout.flush()
                        continue
                    line = got
            except EOFError:
                stdout.write("\n")
                break
            except KeyboardInterrupt:
                stdout.write("\n")
                continue
            if use_readline and line.strip():
                _append_history()
            out = execute(ctx, line)
            stdout.write(out)
            stdout.flush()
    finally:
        stdout.flush()
