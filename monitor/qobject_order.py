"""The key order of QEMU's QMP JSON objects, computed the way QEMU's ``QDict`` produces it.

QEMU builds every QMP answer as a ``QDict`` and prints it by walking the dict's 512 hash
buckets in order (``qdict_first``/``qdict_next``); inside a bucket the last key inserted comes
first. The bucket is ``tdb_hash(key) % 512`` (``qobject/qdict.c``). So the order looks random
but is fixed: it is why ``query-memory-devices`` prints ``memdev, memaddr, block-size, size,
node, max-size, requested-size, id`` -- which this module reproduces from the QAPI field order
(``tests/monitor/test_info_commands.py`` checks it against the transcripts).
"""

from __future__ import annotations

from typing import Any

QDICT_BUCKET_MAX = 512


def tdb_hash(name: str) -> int:
    """``qobject/qdict.c: tdb_hash`` (unsigned 32-bit arithmetic)."""
    data = name.encode()
    value = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (in QAPI visit order, i.e. insertion order) re-ordered as QEMU prints them;
    nested objects and lists of objects too."""
    inserted = list(fields)
    keys = sorted(inserted, key=lambda k: (tdb_hash(k) % QDICT_BUCKET_MAX,
                                           -inserted.index(k)))
    return {key: qobject(fields[key]) for key in keys}


def qobject(value: Any) -> Any:
    """Any JSON value with every object in it ordered by :func:`qdict`."""
    if isinstance(value, dict):
        return qdict(value)
    if isinstance(value, list):
        return [qobject(item) for item in value]
    return value
