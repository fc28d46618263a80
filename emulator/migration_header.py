"""The migration stream's JSON header: decoded with bounds, checked field by field.

A stream comes from a file (``-incoming "exec:cat FILE"``) or a browser upload (the web's
*load*), so nothing in it is trusted. Before the machine is touched the header must decode
with bounded integers (at most :data:`MAX_INT_DIGITS` digits) and only finite numbers (no
``NaN``/``Infinity``/``1e400``: an infinite ``wait_remaining`` once killed the vCPU thread),
and must match :data:`SCHEMA`: every field the loader uses, its type and its range. The
device model then runs its own (QEMU's) checks on its part of the state.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema

from emulator.states import DriverState

MAX_INT_DIGITS = 40
U64 = {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}
U32 = {"type": "integer", "minimum": 0, "maximum": (1 << 32) - 1}
S64 = {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1}
MAX_WAIT_S = (1 << 64) / 1e6  # the longest WAIT a guest can ask for (a u64 of microseconds)
CPU_REGS = [*(f"x{i}" for i in range(31)), "sp", "pc", "pstate", "sp_el0", "sp_el1",
            "vbar_el1", "elr_el1", "esr_el1", "far_el1", "tpidr_el1", "cpacr_el1", "spsr_el1"]
_DEVICE = {
    "type": "object",
    "required": ["format", "addr", "region_size", "block_size", "node_id", "requested_size",
                 "usable_region_size", "plugged_size", "driver_features", "bitmap", "broken",
                 "broken_reason"],
    "properties": {
        "format": {"type": "string", "maxLength": 64}, "id": {"type": "string"},
        **{key: U64 for key in ("addr", "region_size", "block_size", "requested_size",
                                "usable_region_size", "plugged_size", "driver_features")},
        "node_id": U32,
        "bitmap": {"type": "string", "maxLength": 1 << 20},
        "broken": {"type": "boolean"},
        "broken_reason": {"type": ["string", "null"], "maxLength": 4096},
    },
}
_TRANSPORT = {
    "type": "object",
    "required": ["status", "interrupt_status", "device_features_sel", "driver_features_sel",
                 "driver_features", "queue_sel", "queue_num", "queue_desc", "queue_driver",
                 "queue_device", "queue_ready", "last_avail_idx", "used_idx"],
    "properties": {
        **{key: U32 for key in ("status", "interrupt_status", "device_features_sel",
                                "driver_features_sel", "queue_sel", "queue_num",
                                "last_avail_idx", "used_idx")},
        **{key: U64 for key in ("driver_features", "queue_desc", "queue_driver",
                                "queue_device")},
        "queue_ready": {"type": "boolean"},
    },
}
_QUEUE = {
    "type": "object",
    "required": ["num", "desc", "driver", "device", "ready", "last_avail_idx", "used_idx"],
    "properties": {**{key: U32 for key in ("num", "last_avail_idx", "used_idx")},
                   **{key: U64 for key in ("desc", "driver", "device")},
                   "ready": {"type": "boolean"}},
}
_BALLOON = {
    "type": "object",
    "required": ["device", "transport"],
    "additionalProperties": False,
    "properties": {
        "device": {
            "type": "object",
            "required": ["format", "id", "num_pages", "actual", "poison_val",
                         "driver_features", "stats", "stats_last_update",
                         "stats_poll_interval", "stats_held", "broken", "broken_reason"],
            "properties": {
                "format": {"type": "string", "maxLength": 64},
                "id": {"type": "string", "maxLength": 128},
                **{key: U32 for key in ("num_pages", "actual", "poison_val",
                                        "stats_poll_interval")},
                **{key: U64 for key in ("driver_features", "stats_last_update")},
                "stats": {"type": "array", "maxItems": 16, "items": U64},
                "stats_held": {"type": "boolean"}, "broken": {"type": "boolean"},
                "broken_reason": {"type": ["string", "null"], "maxLength": 4096},
            },
        },
        "transport": {**_TRANSPORT, "properties": {
            **_TRANSPORT["properties"],  # type: ignore[dict-item]
            "queues": {"type": "array", "maxItems": 8, "items": _QUEUE}}},
    },
}
_MEMORY_HOTPLUG = {
    "type": "object",
    "required": ["acpi"],
    "properties": {
        "acpi": {
            "type": "object", "required": ["selector", "devs"],
            "properties": {
                "selector": U32,
                "devs": {"type": "array", "maxItems": 256, "items": {
                    "type": "object",
                    "required": ["is_enabled", "is_inserting", "is_removing", "ost_event",
                                 "ost_status"],
                    "properties": {
                        "is_enabled": {"type": "boolean"}, "is_inserting": {"type": "boolean"},
                        "is_removing": {"type": "boolean"}, "ost_event": U32,
                        "ost_status": U32}}},
            },
        },
        "dimms": {"type": "array", "maxItems": 256},
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "ramblocks", "cpu", "devices", "machine"],
    "properties": {
        "version": {"type": "integer"},
        "ramblocks": {"type": "object", "maxProperties": 320, "additionalProperties": U64},
        "memory_hotplug": _MEMORY_HOTPLUG,
        "cpu": {"type": "object", "required": CPU_REGS, "additionalProperties": False,
                "properties": {reg: U64 for reg in CPU_REGS}},
        "devices": {"type": "object", "maxProperties": 64, "additionalProperties": {
            "type": "object", "required": ["device", "transport"],
            "additionalProperties": False,
            "properties": {"device": _DEVICE, "transport": _TRANSPORT}}},
        "balloon": _BALLOON,
        "machine": {
            "type": "object",
            "required": ["cmdline", "waiting", "wait_remaining", "pending_events", "view_addr",
                         "guest_booted", "guest_faults", "guest_states", "uptime_ns",
                         "next_cmd_seq"],
            "properties": {
                "cmdline": {"type": "string", "maxLength": 1 << 16},
                "waiting": {"type": "boolean"},
                "wait_remaining": {"anyOf": [{"type": "null"}, {
                    "type": "number", "minimum": 0, "maximum": MAX_WAIT_S}]},
                "pending_events": U64, "view_addr": U64, "balloon_view_addr": U64,
                "guest_faults": S64,
                "guest_booted": {"type": "boolean"},
                "guest_states": {"type": "object", "maxProperties": 64,
                                 "additionalProperties": {
                                     "enum": [str(state) for state in DriverState]}},
                "uptime_ns": S64,
                "next_cmd_seq": {**S64, "minimum": 1},
            },
        },
    },
}
_STRICT = jsonschema.validators.extend(  # "integer" means an int, never 1.0 or true
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and
        not isinstance(value, bool)))
_VALIDATOR = _STRICT(SCHEMA)


class HeaderError(ValueError):
    """The header is malformed; the message names the field."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise HeaderError(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise HeaderError(f"the number {text[:40]} is out of range")
    return value


def _constant(text: str) -> Any:
    raise HeaderError(f"{text} is not a number here")


def decode(raw: bytes) -> dict[str, Any]:
    """Decode and check the header; raises HeaderError."""
    try:
        header = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        if isinstance(err, HeaderError):
            raise
        raise HeaderError(f"not JSON: {err}") from None
    error = next(iter(_VALIDATOR.iter_errors(header)), None)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "header"
        raise HeaderError(f"{where}: {error.message[:200]}")
    pstate = header["cpu"]["pstate"]
    if pstate >> 32 or pstate & 0x10 or pstate & 0xF not in (0b0000, 0b0100, 0b0101):
        raise HeaderError(f"cpu.pstate: 0x{pstate:x} is not an AArch64 EL0/EL1 state")
    return header
