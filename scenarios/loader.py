"""Load a scenario file: YAML with line numbers, the JSON Schema, then meaning checks.

``load_scenario(path)`` returns a :class:`Scenario` whose steps are parsed and checked against
the machines they target, or raises :class:`ScenarioError` listing every problem as
``FILE:LINE: message``. Nothing is run while loading, so a scenario never stops half-way
because of a typo in step 12.

Line numbers come from PyYAML's node tree (``yaml.compose``): a jsonschema error's
``absolute_path`` is walked down the nodes to the offending value (or, for an unknown key, to
the key itself). The machine's command line is parsed by ``monitor.cmdline.parse_args``, sizes
by ``control.sizes.strtosz``, HMP lines by ``monitor.hmp.parse`` and QMP arguments by
``monitor.qmp.check_arguments``: the same code that runs them later.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema
import yaml

from control.sizes import U64_MAX, SizeError, strtosz
from device.errors import ConfigError
from emulator.config import (
    DEFAULT_BLOCK_SIZE,
    BalloonConfig,
    MachineConfig,
    MemoryDeviceConfig,
    NumaNodeConfig,
)
from scenarios import safe_yaml
from scenarios.patterns import Pattern, PatternError, compile_pattern
from scenarios.predictions import MEASURES, Prediction
from scenarios.textfile import TextFileError, read_text

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(HERE, "scenario.schema.json")
BUNDLED_DIR = os.path.join(HERE, "bundled")
LESSONS_DIR = os.path.join(BUNDLED_DIR, "lessons")
STEP_KINDS = ("say", "pause", "monitor", "qmp", "set-requested-size", "guest", "reboot",
              "migrate", "balloon", "pace", "wait-until", "expect")
GUEST_KEYS: dict[str, tuple[str, ...]] = {
    "alloc": ("size", "unmovable", "target", "as", "huge"),
    "free": ("alloc",),
    "touch": ("alloc",),
    "verify": ("alloc",),
    "dump": ("device", "legacy"),
    "rogue-write": ("device", "addr", "offset"),
    "read": ("device", "addr", "offset"),
    "stats": (),
    "balloon-rogue": ("pages",),
    "pressure": ("size",),
}
GUEST_COMMON = ("guest", "expect", "expect-error", "timeout", "machine")
SIZE_KEYS = ("plugged", "requested", "usable", "resident", "unplugged-resident", "node-size",
             "node-plugged", "boot-resident")
BALLOON_SIZE_KEYS = ("actual", "target", "resident", "in-boot", "oom-deflated", "reported",
                     "memtotal")
COUNT_KEYS = ("plugged-blocks", "guest-faults", "violations", "dimms")
DEVICE_KEYS = ("plugged", "requested", "usable", "plugged-blocks", "resident", "driver",
               "unplugged-inaccessible", "unplugged-resident")
# HMP / QMP commands after which "settled" waits for the guest to answer again
MUTATING_HMP = ("virtio-mem", "qom-set", "system_reset", "balloon", "mem-set", "system_wakeup",
                "x-virtio-mem-request-policy", "x-virtio-mem-request-answer",
                "x-virtio-mem-autoscale")
MUTATING_QMP = ("qom-set", "system_reset", "human-monitor-command", "balloon", "x-mem-set")
_COMPARE_OPS = ("<=", ">=", "==", "!=", "<", ">")


# ------------------------------------------------------------------------------ errors

@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 = the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else \
            f"{self.file}: {self.message}"


class ScenarioError(Exception):
    """The scenario cannot be played; ``problems`` says where and why (file, line, text)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# ------------------------------------------------------------------------------ model

@dataclass(frozen=True)
class Compare:
    """``>= 1G``-style expectation on a number."""

    op: str
    value: int
    text: str

    def check(self, actual: int) -> bool:
        return {
            "==": actual == self.value, "!=": actual != self.value,
            "<": actual < self.value, "<=": actual <= self.value,
            ">": actual > self.value, ">=": actual >= self.value,
        }[self.op]

    def __str__(self) -> str:
        return self.text


@dataclass
class MachineSpec:
    """One machine of the scenario: its configuration and where it was written."""

    name: str
    config: MachineConfig
    argv: list[str] | None  # the QEMU-style arguments, when given that way
    line: int
    pace_ms: int = 0  # vmemlab's teaching pace from the start (machine field ``pace``)
    pause_after_reset: bool = False


@dataclass
class Step:
    """One parsed step. ``params`` holds the kind's checked values (see docs/scenarios.md)."""

    index: int  # 1-based
    kind: str
    machine: str
    line: int
    raw: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        p = self.params
        if self.kind in ("say", "pause"):
            return str(p.get("text") or "")
        if self.kind == "monitor":
            return str(p["line"])
        if self.kind == "qmp":
            args = json.dumps(p["args"]) if p["args"] else ""
            return f"{p['name']} {args}".strip()
        if self.kind == "set-requested-size":
            return f"{p['device']} {self.raw['set-requested-size']['size']}"
        if self.kind == "guest":
            words = [p["action"]] + [f"{k}={self.raw[k]}" for k in GUEST_KEYS[p["action"]]
                                     if k in self.raw]
            return " ".join(words)
        if self.kind == "reboot":
            how = "without the driver" if p["driver"] is False else (
                "with the driver" if p["driver"] else "")
            if p.get("balloon_driver") is not None:
                how += (" with" if p["balloon_driver"] else " without") + " virtio_balloon"
            return f"by the {p['by']} {how.strip()}".strip()
        if self.kind == "migrate":
            return "save, load into a fresh machine, continue there"
        if self.kind == "balloon":
            return ", ".join(f"{k}: {_show(v)}" for k, v in self.raw["balloon"].items())
        if self.kind == "pace":
            words = [] if p["ms"] is None else [f"{p['ms']} ms per request"]
            if p["pause_after_reset"] is not None:
                words.append(f"pause after reset {'on' if p['pause_after_reset'] else 'off'}")
            return ", ".join(words)
        if self.kind in ("wait-until", "expect"):
            return ", ".join(f"{k}: {_show(v)}" for k, v in self.raw[self.kind].items())
        return ""


@dataclass
class Goal:
    """A lesson goal: a condition on the (default) machine the learner has to bring about.

    ``hints`` are shown one at a time (nudge, pointer, answer), ``debrief`` once the goal is
    reached, ``predict`` asks a question before it (scenarios/predictions.py).
    """

    title: str
    hints: tuple[str, ...]
    condition: dict[str, Any]
    line: int
    debrief: str = ""
    predict: Prediction | None = None

    @property
    def hint(self) -> str:
        """The last (most explicit) hint."""
        return self.hints[-1] if self.hints else ""


@dataclass
class Scenario:
    title: str
    summary: str
    path: str
    machines: dict[str, MachineSpec]
    steps: list[Step]
    goals: list[Goal] = field(default_factory=list)

    @property
    def default_machine(self) -> str:
        return next(iter(self.machines))


def split_compare(text: str) -> tuple[str, str] | None:
    """``'>= 512M'`` -> ``('>=', '512M')``; no operator means ``==``; None if malformed.

    Plain string operations, no regex: the text comes from the scenario file (linear time).
    """
    rest = text.strip()
    op = next((o for o in _COMPARE_OPS if rest.startswith(o)), None)
    if op is not None:
        rest = rest[len(op):].strip()
    if not rest or "\n" in rest:
        return None
    return op or "==", rest


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


# ------------------------------------------------------------------------------ YAML + lines

@cache
def schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _child(node: yaml.Node | None, key: Any) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) of ``key`` inside a mapping or sequence node."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                return k, v
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and \
            0 <= key < len(node.value):
        item = node.value[key]
        return item, item
    return None, None


def node_at(root: yaml.Node | None, path: Iterable[Any]) -> yaml.Node | None:
    node = root
    for key in path:
        _k, child = _child(node, key)
        if child is None:
            return node
        node = child
    return node


def line_at(root: yaml.Node | None, path: Iterable[Any], key: str | None = None) -> int:
    node = node_at(root, path)
    if key is not None:
        knode, _v = _child(node, key)
        if knode is not None:
            return _line(knode)
    return _line(node)


def _duplicates(node: yaml.Node | None, out: list[tuple[int, str]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.value in seen:
                    out.append((_line(k), f"duplicate key '{k.value}'"))
                seen.add(k.value)
            _duplicates(v, out)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicates(item, out)


# ------------------------------------------------------------------------------ schema errors

_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "object": "a mapping", "array": "a list",
               "null": "empty"}


def _what(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _where(path: Sequence[Any]) -> str:
    named = [str(p) for p in path if isinstance(p, str)]
    return f"'{named[-1]}'" if named else "the value"


def _refine(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """Descend into anyOf/oneOf to the branch that fits the value's type (all its errors)."""
    if error.validator not in ("anyOf", "oneOf") or not error.context or \
            _is_kind_choice(error) or not error.absolute_path:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [errs for errs in branches.values()
               if not any(e.validator == "type" and not e.relative_path for e in errs)]
    if len(fitting) != 1:
        return [error]
    return [r for sub in fitting[0] for r in _refine(sub)]


def _is_kind_choice(error: jsonschema.ValidationError) -> bool:
    branches = error.schema.get("oneOf") if isinstance(error.schema, dict) else None
    return error.validator == "oneOf" and isinstance(branches, list) and any(
        isinstance(b, dict) and b.get("required") == ["say"] for b in branches)


def _message(error: jsonschema.ValidationError, data: Any) -> tuple[list[Any], str | None, str]:
    """(path, key to point at, message) for one schema error."""
    path = list(error.absolute_path)
    v, inst = error.validator, error.instance
    if _is_kind_choice(error):
        present = [k for k in STEP_KINDS if isinstance(inst, dict) and k in inst]
        if len(present) > 1:
            return path, present[1], (f"a step does one thing: it has both '{present[0]}' and "
                                      f"'{present[1]}'")
        return path, None, "a step needs one of the keys: " + ", ".join(STEP_KINDS)
    if v == "oneOf" and not path:
        return path, "machines" if "machines" in inst else None, \
            "give either 'machine' or 'machines' (one of them)"
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in inst if k not in allowed]
        where = _kind_of(data, path)
        return path, extra[0] if extra else None, (
            f"unknown key '{extra[0] if extra else '?'}'{where} (allowed: {', '.join(allowed)})")
    if v == "required":
        missing = re.match(r"'([^']*)'", error.message)
        return path, None, f"missing key '{missing.group(1) if missing else error.message}'"
    if v == "type":
        types = error.validator_value
        types = types if isinstance(types, list) else [types]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        return path, None, f"{_where(path)} must be {words}, not {_what(inst)}"
    if v == "enum":
        return path, None, (f"{_where(path)}: {_what(inst)} is not one of: "
                            + ", ".join(str(x) for x in error.validator_value))
    if v in ("anyOf", "oneOf"):
        if (path and path[-1] in ("machine", "destination")) or (
                len(path) == 2 and path[0] == "machines"):
            return path, None, ("a machine is a QEMU-style command line (a string or a list of "
                                "arguments) or a mapping of fields, not " + _what(inst))
        return path, None, f"{_where(path)} must be a size (e.g. 512M, 1G or an integer), " \
                           f"not {_what(inst)}"
    if v == "pattern":
        return path, None, f"{_where(path)}: {_what(inst)} is not a valid name"
    if v == "propertyNames":
        return path, None, f"{_where(path)}: {error.message}"
    return path, None, f"{_where(path)}: {error.message}"


def _kind_of(data: Any, path: Sequence[Any]) -> str:
    if len(path) == 2 and path[0] == "steps" and isinstance(data, dict):
        steps = data.get("steps")
        if isinstance(steps, list) and isinstance(path[1], int) and path[1] < len(steps):
            step = steps[path[1]]
            kind = next((k for k in STEP_KINDS if isinstance(step, dict) and k in step), None)
            if kind:
                return f" in a '{kind}' step"
    if not path:
        return " at the top level"
    return f" in {_where(path)}"


# ------------------------------------------------------------------------------ loading

class _Checker:
    """Collects problems with line numbers while the document is turned into a Scenario."""

    def __init__(self, path: str, root: yaml.Node | None) -> None:
        self.path = path
        self.root = root
        self.problems: list[Problem] = []

    def fail(self, where: Sequence[Any], message: str, key: str | None = None) -> None:
        self.problems.append(Problem(self.path, line_at(self.root, where, key), message))

    def size(self, value: Any, where: Sequence[Any]) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            if value > U64_MAX:
                name = f"'{where[-1]}'" if where and isinstance(where[-1], str) else "size"
                self.fail(where, f"{name}: {value} is larger than 2^64-1")
                return None
            return value
        try:
            return strtosz(str(value).strip())
        except SizeError:
            name = f"'{where[-1]}'" if where and isinstance(where[-1], str) else "size"
            self.fail(where, f"{name}: '{value}' is not a size (e.g. 512M, 1G, 0x8000000)")
            return None

    def compare(self, value: Any, where: Sequence[Any], sizes: bool) -> Compare | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return Compare("==", value, str(value))
        parts = split_compare(str(value))
        if parts is None:
            self.fail(where, f"'{value}' is not a comparison (e.g. 1G, '>= 512M', '!= 0')")
            return None
        op, text = parts
        if sizes:
            number = self.size(text, where)
        else:
            try:
                number = int(text, 0)
            except ValueError:
                self.fail(where, f"'{value}' is not a count (e.g. 3, '>= 1')")
                number = None
        return None if number is None else Compare(op, number, str(value))

    def regex(self, value: str, where: Sequence[Any]) -> Pattern | None:
        try:
            return compile_pattern(value)
        except PatternError as err:
            shown = value if len(value) <= 80 else value[:77] + "..."
            self.fail(where, f"bad regular expression '{shown}': {err}")
            return None


def _machine(chk: _Checker, name: str, spec: Any, where: list[Any]) -> MachineSpec | None:
    from monitor.cmdline import CmdlineError, parse_args

    line = line_at(chk.root, where)
    if isinstance(spec, (str, list)):
        try:
            argv = shlex.split(spec) if isinstance(spec, str) else list(spec)
        except ValueError as err:
            chk.fail(where, f"cannot split the command line: {err}")
            return None
        try:
            opts = parse_args(argv)
        except CmdlineError as err:
            chk.fail(where, f"machine '{name}': {err}")
            return None
        if opts.incoming is not None:
            chk.fail(where, f"machine '{name}': -incoming has no meaning in a scenario "
                            "(use a 'migrate' step)")
        return MachineSpec(name, opts.config, argv, line)
    cfg = MachineConfig()
    if "boot-ram" in spec:
        cfg.boot_ram = chk.size(spec["boot-ram"], [*where, "boot-ram"]) or 0
    if "maxmem" in spec:
        cfg.maxmem = chk.size(spec["maxmem"], [*where, "maxmem"])
    cfg.smp = spec.get("smp", 1)
    cfg.cmdline = spec.get("append", cfg.cmdline)  # no append: the default guest command line
    cfg.rfc_shrink_on_reboot = spec.get("rfc-shrink-on-reboot", False)
    cfg.persistent_suspend = spec.get("persistent-suspend", False)
    cfg.machine = spec.get("machine", cfg.machine)
    if "balloon" in spec:
        b = spec["balloon"]
        cfg.balloon = BalloonConfig(
            id=b.get("id", "balloon0"), deflate_on_oom=b.get("deflate-on-oom", False),
            free_page_reporting=b.get("free-page-reporting", False),
            page_poison=b.get("page-poison", True),
            stats_polling_interval=b.get("guest-stats-polling-interval", 0))
    for i, node in enumerate(spec.get("nodes", [])):
        mem = chk.size(node["mem"], [*where, "nodes", i, "mem"]) if "mem" in node else None
        cfg.nodes.append(NumaNodeConfig(i, list(node.get("cpus", [])), mem))
    for i, dev in enumerate(spec.get("devices", [])):
        dwhere = [*where, "devices", i]
        sizes = {k: chk.size(dev[k], [*dwhere, k]) for k in
                 ("size", "requested-size", "block-size", "memaddr") if k in dev}
        cfg.devices.append(MemoryDeviceConfig(
            id=dev["id"], memdev=dev.get("memdev", f"mem{i}"), size=sizes.get("size") or 0,
            node=dev.get("node", 0), requested_size=sizes.get("requested-size") or 0,
            block_size=sizes.get("block-size") or DEFAULT_BLOCK_SIZE,
            memaddr=sizes.get("memaddr"),
            unplugged_inaccessible=dev.get("unplugged-inaccessible"),
            dynamic_memslots=dev.get("dynamic-memslots", False),
            rfc_write_protect=dev.get("x-rfc-write-protect", False),
            guest_requests=dev.get("x-guest-requests", False),
            memory_type=dev.get("x-memory-type", "")))
    if chk.problems:
        return None
    try:
        cfg.layout()
    except ConfigError as err:
        chk.fail(where, f"machine '{name}': {err}")
        return None
    for dev_cfg in cfg.devices:
        if dev_cfg.requested_size > dev_cfg.size:
            chk.fail(where, f"machine '{name}': device '{dev_cfg.id}': requested-size is larger "
                            "than the device")
    return MachineSpec(name, cfg, None, line, spec.get("pace", 0),
                       spec.get("pause-after-reset", False))


def _devices(spec: MachineSpec) -> dict[str, MemoryDeviceConfig]:
    return {d.id: d for d in spec.config.devices}


def _condition(chk: _Checker, cond: dict[str, Any], where: list[Any], spec: MachineSpec
               ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    devs = _devices(spec)
    device = cond.get("device")
    if device is not None and device not in devs:
        chk.fail([*where, "device"], f"machine '{spec.name}' has no device '{device}' "
                                     f"(it has: {', '.join(devs) or 'none'})")
    if device is None:
        needs = [k for k in DEVICE_KEYS if k in cond]
        if needs and len(devs) == 1:
            device = next(iter(devs))
        elif needs:
            chk.fail(where, f"'{needs[0]}' needs 'device' (the machine has "
                            f"{len(devs)} devices)", key=needs[0])
    if ("node-size" in cond or "node-plugged" in cond) and "node" not in cond:
        chk.fail(where, "'node-size'/'node-plugged' need 'node'")
    if "node" in cond:
        nodes = max(1, len(spec.config.nodes))
        if cond["node"] >= nodes:
            chk.fail([*where, "node"], f"machine '{spec.name}' has {nodes} NUMA node(s)")
    out["device"] = device
    if "balloon" in cond:
        out["balloon"] = _balloon_condition(chk, cond["balloon"], [*where, "balloon"], spec)
    for key, value in cond.items():
        if key == "balloon":
            continue
        if key in SIZE_KEYS:
            out[key] = chk.compare(value, [*where, key], sizes=True)
        elif key in COUNT_KEYS:
            out[key] = chk.compare(value, [*where, key], sizes=False)
        elif key == "events":
            out[key] = {k: chk.compare(v, [*where, key, k], sizes=False)
                        for k, v in value.items()}
        elif key == "console":
            out[key] = chk.regex(value, [*where, key])
        elif key != "device":
            out[key] = value
    return out


def _goal(chk: _Checker, raw: dict[str, Any], where: list[Any], spec: MachineSpec) -> Goal:
    cond = _condition(chk, raw["when"], [*where, "when"], spec)
    if "hint" in raw and "hints" in raw:
        chk.fail(where, "give either 'hint' or 'hints' (a list: nudge, pointer, answer)",
                 key="hints")
    hints = tuple(raw["hints"]) if "hints" in raw else (raw["hint"],) if "hint" in raw else ()
    predict = _prediction(chk, raw["predict"], [*where, "predict"], spec) \
        if "predict" in raw else None
    return Goal(raw["goal"], hints, cond, line_at(chk.root, where),
                debrief=raw.get("debrief", ""), predict=predict)


def _prediction(chk: _Checker, raw: dict[str, Any], where: list[Any], spec: MachineSpec
                ) -> Prediction | None:
    """A goal's ``predict:``: the measure must exist on this machine."""
    name = raw["measure"]
    devs = _devices(spec)
    device = raw.get("device")
    if MEASURES[name].per_device:
        if device is None and len(devs) == 1:
            device = next(iter(devs))
        elif device is None:
            chk.fail(where, f"measure '{name}' needs 'device' (the machine has "
                            f"{len(devs)} devices)", key="measure")
            return None
        elif device not in devs:
            chk.fail([*where, "device"], f"machine '{spec.name}' has no device '{device}' "
                                         f"(it has: {', '.join(devs) or 'none'})")
            return None
    elif device is not None:
        chk.fail([*where, "device"], f"measure '{name}' is of the machine, not of a device")
        return None
    if name.startswith("balloon-") and spec.config.balloon is None:
        chk.fail([*where, "measure"], _no_balloon(spec))
        return None
    tolerance = 0
    if "tolerance" in raw:
        if MEASURES[name].unit == "count":
            value = raw["tolerance"]
            if not isinstance(value, int) or isinstance(value, bool):
                chk.fail([*where, "tolerance"], f"'tolerance': '{value}' is not a count")
                return None
            tolerance = value
        else:
            size = chk.size(raw["tolerance"], [*where, "tolerance"])
            if size is None:
                return None
            tolerance = size
    return Prediction(raw["question"], name, device, tolerance)


def _no_balloon(spec: MachineSpec) -> str:
    return (f"machine '{spec.name}' has no balloon (add -device virtio-balloon-pci,"
            "id=balloon0)")


def _balloon_condition(chk: _Checker, cond: dict[str, Any], where: list[Any],
                       spec: MachineSpec) -> dict[str, Any]:
    """The ``balloon:`` part of a condition: sizes in bytes, ``pages`` a count."""
    if spec.config.balloon is None:
        chk.fail(where, _no_balloon(spec))
    out: dict[str, Any] = {}
    devs = _devices(spec)
    for key, value in cond.items():
        if key in BALLOON_SIZE_KEYS:
            out[key] = chk.compare(value, [*where, key], sizes=True)
        elif key == "pages":
            out[key] = chk.compare(value, [*where, key], sizes=False)
        elif key == "in":
            out[key] = {}
            for dev, want in value.items():
                if dev not in devs:
                    chk.fail([*where, "in", dev], f"machine '{spec.name}' has no device "
                                                  f"'{dev}' (it has: {', '.join(devs) or 'none'})")
                out[key][dev] = chk.compare(want, [*where, "in", dev], sizes=True)
        else:
            out[key] = value
    return out


def _step(chk: _Checker, index: int, raw: dict[str, Any], machines: dict[str, MachineSpec],
          allocs: dict[str, set[str]], dimm_ids: dict[str, set[str]]) -> Step | None:
    from monitor.commands import MonitorError
    from monitor.hmp import ParseError, parse
    from monitor.hmp_line import line_error
    from monitor.qmp import QMP_COMMANDS, check_arguments

    where: list[Any] = ["steps", index]
    kind = next(k for k in STEP_KINDS if k in raw)
    name = raw.get("machine", next(iter(machines)))
    step = Step(index + 1, kind, name, line_at(chk.root, where), raw)
    if name not in machines:
        chk.fail([*where, "machine"], f"no machine '{name}' (machines: {', '.join(machines)})")
        return None
    spec = machines[name]
    devs = _devices(spec)
    p = step.params
    value = raw[kind]

    def device(dev: str, at: list[Any]) -> str:
        if dev in dimm_ids.get(name, set()):
            return dev  # a pc-dimm's memory: the guest can allocate in it too
        if dev not in devs:
            chk.fail(at, f"machine '{name}' has no device '{dev}' "
                         f"(it has: {', '.join(devs) or 'none'})")
        return dev

    if kind in ("say", "pause"):
        p["text"] = value
    elif kind == "monitor":
        p["line"] = value
        refused = line_error(value)
        try:
            if refused is not None:
                raise ParseError(refused)
            _cmd, _args, shown = parse(value)
        except (ParseError, MonitorError) as err:
            chk.fail([*where, "monitor"], f"HMP: {getattr(err, 'desc', None) or err}")
            shown = ""
        p["mutates"] = shown in MUTATING_HMP
        if shown == "device_add":  # a DIMM the later steps may name
            dimm_ids.setdefault(name, set()).update(_added_dimms(value))
        p["expect"] = chk.regex(raw["expect"], [*where, "expect"]) if "expect" in raw else None
        p["expect_not"] = (chk.regex(raw["expect-not"], [*where, "expect-not"])
                           if "expect-not" in raw else None)
        p["show"] = raw.get("show", True)
    elif kind == "qmp":
        p["name"], p["args"] = value, raw.get("args", {})
        if value not in QMP_COMMANDS or value == "qmp_capabilities":
            chk.fail([*where, "qmp"], f"QMP: The command {value} has not been found")
        else:
            try:
                check_arguments(QMP_COMMANDS[value][0], p["args"])
            except MonitorError as err:
                chk.fail([*where, "args"] if "args" in raw else [*where, "qmp"],
                         f"QMP {value}: {err.desc}")
        p["mutates"] = value in MUTATING_QMP
        args = p["args"]
        if value == "device_add" and isinstance(args, dict) and isinstance(args.get("id"), str):
            dimm_ids.setdefault(name, set()).add(args["id"])
        p["expect"] = raw.get("expect")
        p["has_expect"] = "expect" in raw
        p["expect_error"] = (chk.regex(raw["expect-error"], [*where, "expect-error"])
                             if "expect-error" in raw else None)
    elif kind == "set-requested-size":
        dev = device(value["device"], [*where, kind, "device"])
        size = chk.size(value["size"], [*where, kind, "size"])
        p["device"], p["size"] = dev, size
        cfg = devs.get(dev)
        if cfg is not None and size is not None:
            if size % cfg.block_size:
                chk.fail([*where, kind, "size"],
                         f"'requested-size' has to be a multiple of the block size "
                         f"(0x{cfg.block_size:x})")
            elif size > cfg.size:
                chk.fail([*where, kind, "size"],
                         f"'requested-size' {value['size']} is larger than {dev} "
                         f"(0x{cfg.size:x} bytes)")
    elif kind == "guest":
        p["action"] = value
        allowed = GUEST_KEYS[value]
        for key in raw:
            if key not in allowed and key not in GUEST_COMMON:
                chk.fail(where, f"'{key}' has no meaning for 'guest: {value}' (allowed: "
                                f"{', '.join(allowed + GUEST_COMMON[1:]) })", key=key)
        if value == "alloc":
            if "size" not in raw:
                chk.fail(where, "'guest: alloc' needs 'size'")
            else:
                p["size"] = chk.size(raw["size"], [*where, "size"])
            target = raw.get("target", "any")
            if target not in ("any", "boot"):
                device(target, [*where, "target"])
            p["target"], p["unmovable"] = target, raw.get("unmovable", False)
            p["huge"] = raw.get("huge", False)
            if "as" in raw:
                allocs.setdefault(name, set()).add(raw["as"])
                p["as"] = raw["as"]
        if "alloc" in raw:
            ref = raw["alloc"]
            if isinstance(ref, str) and ref not in allocs.get(name, set()):
                chk.fail([*where, "alloc"], f"no earlier 'guest: alloc' on machine '{name}' "
                                            f"has 'as: {ref}'")
            p["alloc"] = ref
        if "device" in raw:
            p["device"] = device(raw["device"], [*where, "device"])
        if "addr" in raw and "offset" in raw:
            chk.fail(where, "give 'addr' or 'offset', not both", key="offset")
        if "addr" in raw:
            p["addr"] = chk.size(raw["addr"], [*where, "addr"])
        if "offset" in raw:
            if "device" not in raw:
                chk.fail(where, "'offset' is relative to a device: add 'device'", key="offset")
            p["offset"] = chk.size(raw["offset"], [*where, "offset"])
            cfg = devs.get(raw.get("device", ""))
            if cfg is not None and p["offset"] is not None and p["offset"] >= cfg.size:
                chk.fail([*where, "offset"], f"offset is outside {cfg.id} (0x{cfg.size:x} bytes)")
        if value == "read" and "addr" not in raw and "offset" not in raw:
            chk.fail(where, "'guest: read' needs 'addr' or 'device' + 'offset'")
        if value == "dump":
            p["legacy"] = raw.get("legacy", False)
        if value == "balloon-rogue":
            if spec.config.balloon is None:
                chk.fail(where, _no_balloon(spec))
            if "pages" not in raw:
                chk.fail(where, "'guest: balloon-rogue' needs 'pages'")
            p["pages"] = raw.get("pages", 1)
        if value == "pressure":
            if "size" not in raw:
                chk.fail(where, "'guest: pressure' needs 'size'")
            else:
                p["size"] = chk.size(raw["size"], [*where, "size"])
        p["expect"] = raw.get("expect")
        p["expect_error"] = (chk.regex(raw["expect-error"], [*where, "expect-error"])
                             if "expect-error" in raw else None)
        p["timeout"] = raw.get("timeout", 60.0)
    elif kind == "reboot":
        opts = value or {}
        p["driver"], p["by"] = opts.get("driver"), opts.get("by", "host")
        p["balloon_driver"] = opts.get("balloon-driver")
        p["driver_name"] = opts.get("driver-name")  # None: the machine's own (control/)
        if p["by"] == "guest" and (p["driver"] is not None or p["balloon_driver"] is not None):
            chk.fail([*where, "reboot"], "a guest reboot keeps its kernel command line: "
                                         "'driver' needs 'by: host'")
    elif kind == "balloon":
        if spec.config.balloon is None:
            chk.fail([*where, "balloon"], _no_balloon(spec))
        if "target" in value:
            p["target"] = chk.size(value["target"], [*where, kind, "target"])
            if p["target"] == 0:
                chk.fail([*where, kind, "target"], "Parameter 'target' expects a size")
        if "poll-interval" in value:
            p["poll_interval"] = value["poll-interval"]
    elif kind == "migrate":
        opts = value or {}
        dest = None
        if "destination" in opts:
            dest = _machine(chk, name, opts["destination"], [*where, "migrate", "destination"])
        p["destination"] = dest
        p["expect_error"] = (chk.regex(raw["expect-error"], [*where, "expect-error"])
                             if "expect-error" in raw else None)
    elif kind == "pace":
        opts = value if isinstance(value, dict) else {"ms": value}
        p["ms"], p["pause_after_reset"] = opts.get("ms"), opts.get("pause-after-reset")
    elif kind in ("wait-until", "expect"):
        p["condition"] = _condition(chk, value, [*where, kind], spec)
        p["timeout"] = raw.get("timeout", 30.0)
    return step


def _added_dimms(line: str) -> set[str]:
    """The id of ``device_add pc-dimm,id=X,...`` (an HMP line), if it has one."""
    from monitor.cmdline import split_opts

    words = line.split(None, 1)
    if len(words) != 2 or not words[1].startswith("pc-dimm"):
        return set()
    return {str(v) for k, v in split_opts(words[1]) if k == "id" and v}


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Parse and check scenario ``text``; ``path`` names it in error messages."""
    name = os.path.basename(path) if path.startswith(BUNDLED_DIR) else path
    try:
        root, data = safe_yaml.load(text)
    except safe_yaml.YamlLimitError as err:
        raise ScenarioError([Problem(name, err.line, err.message)]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise ScenarioError([Problem(name, mark.line + 1 if mark else 0,
                                     f"not valid YAML: {problem}")]) from None
    except (ValueError, OverflowError) as err:  # e.g. a timestamp such as 2001-02-30
        raise ScenarioError([Problem(name, 0, f"not valid YAML: {err}")]) from None
    chk = _Checker(name, root)
    dups: list[tuple[int, str]] = []
    _duplicates(root, dups)
    for line, msg in dups:
        chk.problems.append(Problem(name, line, msg))
    if not isinstance(data, dict):
        chk.problems.append(Problem(name, _line(root), "a scenario is a mapping with 'title', "
                                                       "'machine' and 'steps'"))
        raise ScenarioError(chk.problems)
    validator = jsonschema.Draft202012Validator(schema())
    seen: set[tuple[int, str]] = set()
    for top in validator.iter_errors(data):
        for error in _refine(top):
            where, key, message = _message(error, data)
            item = (line_at(root, where, key), message)
            if item not in seen:
                seen.add(item)
                chk.problems.append(Problem(name, item[0], message))
    if chk.problems:
        raise ScenarioError(sorted(chk.problems, key=lambda p: p.line))

    machines: dict[str, MachineSpec] = {}
    if "machine" in data:
        spec = _machine(chk, "main", data["machine"], ["machine"])
        if spec:
            machines["main"] = spec
    else:
        for mname, mspec in data["machines"].items():
            spec = _machine(chk, mname, mspec, ["machines", mname])
            if spec:
                machines[mname] = spec
    if chk.problems:
        raise ScenarioError(chk.problems)
    steps: list[Step] = []
    allocs: dict[str, set[str]] = {}
    dimm_ids = {mname: {d.id for d in spec.config.dimms} for mname, spec in machines.items()}
    for i, raw in enumerate(data["steps"]):
        step = _step(chk, i, raw, machines, allocs, dimm_ids)
        if step is not None:
            steps.append(step)
    goals: list[Goal] = []
    first = machines[next(iter(machines))]
    for i, raw_goal in enumerate(data.get("goals", [])):
        goals.append(_goal(chk, raw_goal, ["goals", i], first))
    if chk.problems:
        raise ScenarioError(sorted(chk.problems, key=lambda p: p.line))
    return Scenario(data["title"], data.get("summary", ""), path, machines, steps, goals)


def load_scenario(path: str) -> Scenario:
    """Read and check the scenario file at ``path`` (a bundled name works too)."""
    resolved = resolve_path(path)
    try:
        text = read_text(resolved, safe_yaml.MAX_TEXT_BYTES)
    except TextFileError as err:
        raise ScenarioError([Problem(path, err.line, err.message)]) from None
    return parse_scenario(text, resolved)


def bundled(folder: str = BUNDLED_DIR) -> list[str]:
    """Paths of the scenarios shipped with vmemlab, in story order."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith((".yaml", ".yml")))


def lessons() -> list[str]:
    """Paths of the bundled lessons (scenarios with goals), in order."""
    return bundled(LESSONS_DIR)


def resolve_path(path: str) -> str:
    """``path`` itself if it exists, else a bundled scenario by name (``rfc-walkthrough``)."""
    if os.path.exists(path) or os.sep in path:
        return path
    for candidate in bundled() + lessons():
        base = os.path.basename(candidate).rsplit(".", 1)[0]
        if path in (base, base.split("-", 1)[-1], os.path.basename(candidate)):
            return candidate
    return path
