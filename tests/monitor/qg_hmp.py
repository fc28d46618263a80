"""The HMP reader of the transcripts' recording client, copied verbatim.

From ``reference/qemu-transcripts/tools/qg.py`` (``ANSI``, ``_connect``, ``HMP``): the code
that recorded every ``(qemu)`` line of the transcripts from a real QEMU 7.2 ``-monitor
unix:…,server,nowait`` socket. It strips QEMU's readline echo (up to the first CRLF) and the
ANSI escapes; run against vmemlab's socket it must read back the same texts.
"""
# ruff: noqa
# mypy: ignore-errors
import re
import socket
import time

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _connect(path, timeout=30):
    end = time.time() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > end:
                raise
            time.sleep(0.05)


class HMP:
    def __init__(self, path, tr):
        self.tr = tr
        self.s = _connect(path)
        self.s.settimeout(0.2)
        self.banner = self._read_until_prompt(10)

    def _read_until_prompt(self, timeout):
        buf = b""
        end = time.time() + timeout
        while not buf.endswith(b"(qemu) "):
            if time.time() > end:
                raise TimeoutError("HMP prompt timeout; got %r" % buf[-500:])
            try:
                d = self.s.recv(65536)
                if not d:
                    break
                buf += d
            except socket.timeout:
                pass
        return buf.decode(errors="replace")

    def cmd(self, c, timeout=60, log=True, quiet=False):
        self.s.sendall(c.encode() + b"\n")
        try:
            raw = self._read_until_prompt(timeout)
        except (TimeoutError, OSError) as e:
            raw = f"<<{e}>>"
        # strip readline echo (up to first CRLF) and trailing prompt
        out = raw
        i = out.find("\r\n")
        out = out[i + 2:] if i >= 0 else ""
        if out.endswith("(qemu) "):
            out = out[: -len("(qemu) ")]
        out = ANSI.sub("", out.replace("\r\n", "\n").replace("\r", ""))
        if log:
            if quiet:
                self.tr.w(f"(qemu) {c}  ->  {out.strip()}")
            else:
                self.tr.w(f"(qemu) {c}")
                self.tr.w(out.rstrip("\n") if out.strip() else "<no output>", stamp=False)
        return out

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass
