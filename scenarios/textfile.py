"""Read a text file that anyone may have written: regular files only, bounded, UTF-8.

``vmemlab play`` is pointed at files from workshops and the internet. ``open().read()``
blocks forever on a FIFO, grows without end on ``/dev/zero`` and raises
``UnicodeDecodeError`` on a binary file. :func:`read_text` opens without blocking, refuses
anything that is not a regular file, reads at most ``max_bytes`` and decodes strictly, and
says what is wrong in one line (with the line of a bad byte).
"""

from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR,
          "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class TextFileError(ValueError):
    """The file cannot be used; ``line`` is 1-based, 0 for the file as a whole."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def read_text(path: str, max_bytes: int) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``max_bytes`` bytes of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise TextFileError(f"cannot read: {err.strerror or err}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise TextFileError(f"cannot read: {kind}, not a regular file")
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as err:
        raise TextFileError(f"cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise TextFileError(f"the file is larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TextFileError(f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset "
                            f"{err.start}", line) from None
