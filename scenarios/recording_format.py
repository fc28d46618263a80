"""What a well-formed recording line is: bounded JSON, then the fields the replay uses.

A recording can be a visitor's upload (``POST /share``), so :class:`scenarios.recording.
Recording` reads every line through :func:`decode_line` and checks it with
:func:`check_header` / :func:`check_entry` before anything is replayed. Every failure is a
:class:`FormatError` whose message names the field; the reader adds the line number.

Bounds: nesting at most :data:`MAX_DEPTH` levels, integers of at most :data:`MAX_INT_DIGITS`
digits (Python's own limit, 4300, would raise ``ValueError``), only finite numbers (no
``NaN``/``Infinity``, no ``1e400``), device bitmaps of at most :data:`MAX_BLOCKS` blocks.
Machine names and device ids must be identifiers as QEMU defines them
(:func:`emulator.config.id_wellformed`): they end up in pages and file names.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable
from typing import Any

from emulator.config import id_wellformed

MAX_DEPTH = 16
MAX_INT_DIGITS = 40
MAX_BLOCKS = 1 << 22  # a 2 TiB region of 512 KiB blocks; QEMU's regions are far smaller
_HEX = frozenset(string.hexdigits)

Check = Callable[[Any, str], object]


class FormatError(ValueError):
    """A line that is not what the recording format says (the message names the field)."""


# ------------------------------------------------------------------------------ JSON

def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise FormatError(f"an integer of {len(text.lstrip('-'))} digits "
                          f"(at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FormatError(f"the number {text[:40]} is out of range")
    return value


def _parse_constant(text: str) -> Any:
    raise FormatError(f"{text} is not a number here")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def decode_line(line: str) -> Any:
    """One JSON value with the bounds above; raises FormatError."""
    try:
        value = json.loads(line, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_parse_constant)
    except json.JSONDecodeError as err:
        raise FormatError(f"not JSON: {err.msg}") from None
    except RecursionError:
        raise FormatError(f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth(value) > MAX_DEPTH:
        raise FormatError(f"nested more than {MAX_DEPTH} levels deep")
    return value


# ------------------------------------------------------------------------------ field checks

def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


def _fail(where: str, want: str, value: Any) -> None:
    raise FormatError(f"'{where}' must be {want}, not {_type_name(value)}")


def _int(value: Any, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(where, "an integer", value)


def _count(value: Any, where: str) -> None:
    _int(value, where)
    if value < 0:
        raise FormatError(f"'{where}' must not be negative")


def _blocks(value: Any, where: str) -> None:
    _count(value, where)
    if value > MAX_BLOCKS:
        raise FormatError(f"'{where}' is {value} (at most {MAX_BLOCKS} blocks)")


def _number(value: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _fail(where, "a number", value)
    if value < 0:
        raise FormatError(f"'{where}' must not be negative")


def _str(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _fail(where, "a string", value)


def _bool(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        _fail(where, "true or false", value)


def _name(value: Any, where: str) -> None:
    _str(value, where)
    if not id_wellformed(value):  # (the value is not repeated: it is hostile text)
        raise FormatError(f"'{where}' expects an identifier (letters, digits, '-', '.', "
                          "'_', starting with a letter)")


def _opt(check: Check) -> Check:
    def run(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)
    return run


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, "an object", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(where, "a list", value)
    return value


def _fields(obj: dict[str, Any], where: str, required: dict[str, Check],
            optional: dict[str, Check] | None = None) -> None:
    for key, check in required.items():
        if key not in obj:
            raise FormatError(f"'{where}{key}' is missing")
        check(obj[key], where + key)
    for key, check in (optional or {}).items():
        if key in obj:
            check(obj[key], where + key)


# ------------------------------------------------------------------------------ header

def _machine_config(value: Any, where: str) -> None:
    config = _obj(value, where)
    for i, dev in enumerate(_list(config.get("devices", []), where + ".devices")):
        at = f"{where}.devices[{i}]."
        _fields(_obj(dev, at[:-1]), at, {"id": _name}, {"memdev": _opt(_str)})
        if dev.get("memdev"):  # "" (the default) or an identifier
            _name(dev["memdev"], at + "memdev")


def check_header(obj: Any) -> dict[str, Any]:
    header = _obj(obj, "header")
    _fields(header, "", {}, {"machines": _obj, "title": _str, "summary": _str,
                             "scenario": _opt(_str), "created": _number})
    for name, spec in header.get("machines", {}).items():
        _name(name, "machines (a machine name)")
        spec = _obj(spec, f"machines.{name}")
        _fields(spec, f"machines.{name}.", {"config": _machine_config},
                {"argv": _opt(_list)})
        for i, arg in enumerate(spec.get("argv") or []):
            _str(arg, f"machines.{name}.argv[{i}]")
    return header


# ------------------------------------------------------------------------------ entries

_EVENT_FIELDS: dict[str, dict[str, Check]] = {
    "block_state": {"device": _str, "first_block": _blocks, "count": _blocks,
                    "plugged": _bool},
    "config_change": {"device": _str, "fields": _obj},
    "guest_status": {"status": _str},
    "runstate": {"state": _str},
}
_SIZE_FIELDS = ("plugged_size", "requested_size", "usable_region_size")


def _event(value: Any, where: str) -> None:
    event = _obj(value, where)
    _fields(event, where + ".", {"kind": _str}, {"seq": _int, "device": _opt(_str),
                                                 "cmdline": _str})
    _fields(event, where + ".", _EVENT_FIELDS.get(event["kind"], {}))
    if event["kind"] == "config_change":
        for key in _SIZE_FIELDS:
            if key in event["fields"]:
                _count(event["fields"][key], f"{where}.fields.{key}")


def _device_state(value: Any, where: str) -> None:
    dev = _obj(value, where)
    at = where + "."
    _fields(dev, at, {"node": _count, "nb_blocks": _blocks, "plugged_size": _count,
                      "requested_size": _count, "usable_region_size": _count,
                      "driver_state": _str, "bitmap": _str},
            {"addr": _count, "region_size": _count, "block_size": _count,
             "unplugged_inaccessible": _bool, "held": _str})
    for key in ("bitmap", "held"):
        value = dev.get(key)
        if value is not None and (len(value) != 2 * dev["nb_blocks"] or
                                  not _HEX.issuperset(value)):
            raise FormatError(f"'{at}{key}' must be {dev['nb_blocks']} blocks in hex")


def _keyframe_state(value: Any, where: str) -> None:
    state = _obj(value, where)
    at = where + "."
    _fields(state, at, {"seq": _int, "devices": _obj},
            {"runstate": _str, "cmdline": _str, "guest_booted": _bool, "guest_faults": _count,
             "boot_ram_size": _count, "nodes": _list})
    for i, node in enumerate(state.get("nodes", [])):
        _fields(_obj(node, f"{at}nodes[{i}]"), f"{at}nodes[{i}].",
                {"node_id": _count, "boot_ram": _count, "plugged": _count})
    for dev_id, dev in state["devices"].items():
        _name(dev_id, f"{at}devices (a device id)")
        _device_state(dev, f"{at}devices.{dev_id}")


_ENTRY_FIELDS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "event": ({"machine": _name, "event": _event}, {}),
    "keyframe": ({"machine": _name, "state": _keyframe_state}, {}),
    "step": ({"index": _int, "kind": _str, "machine": _name, "ok": _bool},
             {"line": _int, "title": _str, "summary": _str, "output": _str,
              "elapsed": _number}),
    "say": ({"text": _str}, {"index": _int, "machine": _name}),
    "marker": ({"marker": _str}, {"machine": _name, "device": _opt(_str), "addr": _int,
                                  "access": _str, "bytes": _count}),
    "end": ({"ok": _bool}, {}),
}


def check_entry(obj: Any) -> dict[str, Any]:
    entry = _obj(obj, "line")
    _fields(entry, "", {"type": _str}, {"t": _number})
    kind = entry["type"]
    if kind not in _ENTRY_FIELDS:
        raise FormatError(f"unknown line type '{kind[:40]}' (known: "
                          + ", ".join(_ENTRY_FIELDS) + ")")
    required, optional = _ENTRY_FIELDS[kind]
    _fields(entry, "", required, optional)
    return entry
