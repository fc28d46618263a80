"""QEMU's readline for an HMP socket: echo, line editing, history, completion.

QEMU's ``-monitor unix:…,server,nowait`` runs every received byte through ``util/readline.c``
(one byte at a time: ``monitor_can_read`` answers 1) and redraws the line after each one, so
a client that types ``info status`` reads back ``i\\e[K``, ``\\e[Din\\e[K``, ``\\e[D\\e[Dinf\\e[K``
… and, at Enter, ``\\r\\n`` (the monitor turns every ``\\n`` it prints into ``\\r\\n``). Recording
clients such as the transcripts' ``tools/qg.py`` strip that echo up to the first ``\\r\\n``.
:class:`ReadLine` is that state machine, ported function by function (``readline_update``,
``readline_insert_char``, the ESC/CSI/SS3 states, history, ``readline_completion``), so the
bytes are QEMU's.

Where vmemlab differs, on purpose:

* QEMU keeps the first ``READLINE_CMD_BUF_SIZE`` (4095) bytes of a longer line and runs them;
  here such a line is refused whole (:class:`~monitor.hmp_line.Overlong`).
* QEMU redraws the whole line for every typed byte, which costs O(n²) bytes for an n-byte line
  (33 MB for 4095 bytes). Past :data:`EXACT_ECHO_BYTES` bytes of line, a byte appended at the
  end is echoed by itself: the terminal shows the same line, the bytes differ. And a line's
  echo stops at :data:`ECHO_BUDGET` bytes (cursor keys on a long line cost 12 KiB each);
  its ``\r\n`` and its output still come.
* History is kept per connection (QEMU keeps one per monitor, across reconnects).

The stdio console and QMP's ``human-monitor-command`` never echo (a terminal echoes for
itself; QMP returns only the output), as in QEMU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from monitor.hmp_line import MAX_LINE_BYTES, Overlong

READLINE_MAX_CMDS = 64
READLINE_MAX_COMPLETIONS = 256
EXACT_ECHO_BYTES = 256  # QEMU's full redraw below this line length (<= 128 KiB of echo)
ECHO_BUDGET = 256 * 1024  # echo bytes one line may cause
FLUSH_BYTES = 64 * 1024  # echo handed out in pieces of about this size
_MAX_ESC_PARAM = 1 << 31
_SPACE = frozenset(b" \t\n\v\f\r")  # qemu_isspace() in the C locale

IS_NORM, IS_ESC, IS_CSI, IS_SS3 = range(4)

#: ``before -> (completions, completion index)``: full words for the word being typed and
#: how many of its bytes are typed already (QEMU's ``readline_set_completion_index``)
Completer = Callable[[str], tuple[list[str], int]]
Item = bytes | str | Overlong  # echo to send | a line to run | a refused line


class ReadLine:
    """One monitor connection's ``ReadLineState`` (``util/readline.c``)."""

    def __init__(self, prompt: str = "(qemu) ", completer: Completer | None = None) -> None:
        self.prompt = prompt.encode()
        self.completer = completer
        self.cmd = bytearray()  # cmd_buf[0:cmd_buf_size]
        self.index = 0  # cmd_buf_index
        self.last = b""  # last_cmd_buf[0:last_cmd_buf_size]
        self.last_index = 0  # last_cmd_buf_index
        self.esc_state = IS_NORM
        self.esc_param = 0
        self.history: list[bytes] = []
        self.hist_entry = -1
        self.typed = 0  # bytes typed into this line, dropped ones included
        self.dropped = False  # a byte was dropped: the line is over-long
        self._dirty = False  # cmd or last changed since the last redraw
        self._echoed = 0  # echo bytes this line has caused
        self._out = bytearray()

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes) -> Iterator[Item]:
        """Handle received bytes: the echo to send (in pieces) and the lines to run, in
        order. A generator, so the caller can send each piece before the rest is made."""
        for ch in data:
            line = self._handle_byte(ch)
            if line is not None:
                if self._out:
                    yield self._take()
                yield line
            elif len(self._out) >= FLUSH_BYTES:
                yield self._take()
        if self._out:
            yield self._take()

    def _take(self) -> bytes:
        out = bytes(self._out).replace(b"\n", b"\r\n")  # monitor_puts: every \n is \r\n
        self._out.clear()
        return out

    def _printf(self, data: bytes) -> None:
        if self._echoed + len(data) <= ECHO_BUDGET:
            self._out += data
        self._echoed = min(self._echoed + len(data), ECHO_BUDGET + 1)  # once over: silent

    def _handle_byte(self, ch: int) -> str | Overlong | None:  # readline_handle_byte
        line: str | Overlong | None = None
        state = self.esc_state
        if state == IS_NORM:
            if ch == 1:
                self.index = 0
            elif ch == 4:
                self._delete_char()
            elif ch == 5:
                self.index = len(self.cmd)
            elif ch == 9:
                self._completion()
            elif ch in (10, 13):
                line = self._enter()
            elif ch == 23:
                self._backword()
            elif ch == 27:
                self.esc_state = IS_ESC
            elif ch in (127, 8):
                if self.index > 0:
                    self.index -= 1
                    self._delete_char()
            elif ch == 155:
                self.esc_state = IS_CSI  # QEMU keeps the old esc_param here
            elif ch >= 32:
                self._insert_char(ch)
        elif state == IS_ESC:
            if ch == ord("["):
                self.esc_state, self.esc_param = IS_CSI, 0
            elif ch == ord("O"):
                self.esc_state, self.esc_param = IS_SS3, 0
            else:
                self.esc_state = IS_NORM
        elif state == IS_CSI:
            if ord("0") <= ch <= ord("9"):
                self.esc_param = min(self.esc_param * 10 + ch - ord("0"), _MAX_ESC_PARAM)
                self._update()
                return None
            self._csi(ch)
            self.esc_state = IS_NORM
        else:  # IS_SS3
            if ch == ord("F"):
                self.index = len(self.cmd)
            elif ch == ord("H"):
                self.index = 0
            self.esc_state = IS_NORM
        self._update()
        return line

    def _csi(self, ch: int) -> None:
        if ch in (ord("A"), ord("F")):
            self._up()
        elif ch in (ord("B"), ord("E")):
            self._down()
        elif ch == ord("D"):
            self.index = max(0, self.index - 1)
        elif ch == ord("C"):
            self.index = min(len(self.cmd), self.index + 1)
        elif ch == ord("~"):
            if self.esc_param == 1:
                self.index = 0
            elif self.esc_param == 3:
                self._delete_char()
            elif self.esc_param == 4:
                self.index = len(self.cmd)

    def _enter(self) -> str | Overlong:
        text = bytes(self.cmd)
        self._hist_add(text)
        self._out += b"\n"  # always, even past the echo budget
        self._echoed = 0
        typed, dropped = self.typed, self.dropped
        self.cmd.clear()
        self.index = self.last_index = 0
        self.last = b""
        self.typed, self.dropped = 0, False
        self._dirty = True
        if dropped:  # QEMU would run the first 4095 bytes: vmemlab runs nothing
            return Overlong(typed)
        return text.decode("utf-8", "replace")

    # ------------------------------------------------------------------ editing

    def _insert_char(self, ch: int) -> None:
        self.typed += 1
        if len(self.cmd) < MAX_LINE_BYTES:
            self.cmd.insert(self.index, ch)
            self.index += 1
            self._dirty = True
        else:
            self.dropped = True

    def _delete_char(self) -> None:
        if self.index < len(self.cmd):
            del self.cmd[self.index]
            self._dirty = True

    def _backword(self) -> None:  # readline_backword (^W)
        if self.index == 0 or self.index > len(self.cmd):
            return
        start = self.index - 1
        while start > 0 and self.cmd[start] in _SPACE:
            start -= 1
        while start > 0:
            if self.cmd[start] in _SPACE:
                start += 1
                break
            start -= 1
        if start < self.index:
            del self.cmd[start:self.index]
            self.index = start
            self._dirty = True

    # ------------------------------------------------------------------ history

    def _hist_add(self, line: bytes) -> None:  # readline_hist_add
        if not line:
            return
        if self.hist_entry != -1 and self.history[self.hist_entry] == line:
            del self.history[self.hist_entry]
        elif line in self.history:
            self.history.remove(line)
        if len(self.history) == READLINE_MAX_CMDS:
            del self.history[0]
        self.history.append(line)
        self.hist_entry = -1

    def _up(self) -> None:
        if self.hist_entry == 0:
            return
        if self.hist_entry == -1:
            self.hist_entry = len(self.history)
        self.hist_entry -= 1
        if self.hist_entry >= 0:
            self.cmd[:] = self.history[self.hist_entry][:MAX_LINE_BYTES]
            self.index = len(self.cmd)
            self._dirty = True

    def _down(self) -> None:
        if self.hist_entry == -1:
            return
        if self.hist_entry < READLINE_MAX_CMDS - 1 and self.hist_entry + 1 < len(self.history):
            self.hist_entry += 1
            self.cmd[:] = self.history[self.hist_entry]
        else:
            self.cmd.clear()
            self.hist_entry = -1
        self.index = len(self.cmd)
        self._dirty = True

    # ------------------------------------------------------------------ completion

    def _completion(self) -> None:  # readline_completion
        if self.completer is None:
            return
        before = bytes(self.cmd[:self.index]).decode("utf-8", "replace")
        found, done = self.completer(before)
        words = [w.encode() for w in found[:READLINE_MAX_COMPLETIONS]]
        if not words:
            return
        if len(words) == 1:
            word = words[0]
            for ch in word[done:]:
                self._insert_char(ch)
            if word and not word.endswith(b"/"):
                self._insert_char(ord(" "))
            return
        self._printf(b"\n")
        max_prefix = len(words[0])
        for other in words[1:]:
            max_prefix = min(max_prefix, len(other))
            max_prefix = next((j for j in range(max_prefix) if other[j] != words[0][j]),
                              max_prefix)
        for ch in words[0][done:max_prefix]:
            self._insert_char(ch)
        width = min(max(max(len(w) for w in words) + 2, 10), 80)
        columns = 80 // width
        for i, word in enumerate(words):
            self._printf(word.ljust(width))
            if (i + 1) % columns == 0 or i == len(words) - 1:
                self._printf(b"\n")
        self.show_prompt()

    def show_prompt(self) -> None:  # readline_show_prompt
        self._printf(self.prompt)
        self.last_index = 0
        self.last = b""
        self.esc_state = IS_NORM
        self._dirty = True

    # ------------------------------------------------------------------ display

    def _update(self) -> None:  # readline_update
        cmd = bytes(self.cmd) if self._dirty else self.last
        self._dirty = False
        if cmd != self.last:
            if (len(cmd) > EXACT_ECHO_BYTES and cmd[:-1] == self.last
                    and self.last_index == len(self.last) and self.index == len(cmd)):
                self._printf(cmd[-1:])  # appended at the end: the same line, fewer bytes
            else:
                self._printf(b"\033[D" * self.last_index + cmd + b"\033[K")
            self.last = cmd
            self.last_index = len(cmd)
        if self.index != self.last_index:
            delta = self.index - self.last_index
            self._printf((b"\033[C" if delta > 0 else b"\033[D") * abs(delta))
            self.last_index = self.index
