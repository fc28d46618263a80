"""Loading: the whole file is checked first; every problem names the file, line and cause."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenarios import ScenarioError, parse_scenario
from scenarios.loader import SCHEMA_PATH, bundled, load_scenario, schema

MACHINE = ("-m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=1G "
           "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=256M")


def doc(steps: str, head: str = f"machine: {MACHINE}") -> str:
    return f"title: t\n{head}\nsteps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "story.yaml")
    assert all(p.file == "story.yaml" for p in info.value.problems)
    return [(p.line, p.message) for p in info.value.problems]


def test_schema_is_valid_2020_12_and_every_bundled_file_validates_against_it() -> None:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        data = json.load(f)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(data)
    for path in bundled():
        with open(path, encoding="utf-8") as f:
            jsonschema.validate(yaml.safe_load(f), schema(),
                                cls=jsonschema.Draft202012Validator)


def test_a_valid_file_parses_into_steps() -> None:
    sc = parse_scenario(doc("""\
        - say: hello
        - set-requested-size: {device: vm0, size: 512M}
        - wait-until: {device: vm0, plugged: ">= 512M", settled: true}
          timeout: 5
        - guest: alloc
          size: 0x100000
          as: a
        - guest: verify
          alloc: a
          expect: {bad: 0}
        - monitor: info numa
          expect: 'node 0'
        - qmp: query-status
          expect: {status: running}
        - reboot: {driver: false}
        - migrate:
        - expect: {violations: 0, events: {violation: 0}}
        - pause:
        """))
    assert [s.kind for s in sc.steps] == [
        "say", "set-requested-size", "wait-until", "guest", "guest", "monitor", "qmp",
        "reboot", "migrate", "expect", "pause"]
    assert sc.steps[1].params == {"device": "vm0", "size": 512 << 20}
    assert sc.steps[2].params["condition"]["plugged"].op == ">="
    assert sc.steps[2].line == 6
    assert sc.machines["main"].config.devices[0].requested_size == 256 << 20


@pytest.mark.parametrize(("steps", "line", "message"), [
    ("- say: hi\n  colour: red\n", 5,
     "unknown key 'colour' in a 'say' step (allowed: machine, say)"),
    ("- set-requested-size: {device: vm0, size: [1]}\n", 4,
     "'size' must be a size (e.g. 512M, 1G or an integer), not a list"),
    ("- set-requested-size: {device: vm0, size: 1X}\n", 4,
     "'size': '1X' is not a size (e.g. 512M, 1G, 0x8000000)"),
    ("- set-requested-size: {device: vm0, size: 3G}\n", 4,
     "'requested-size' 3G is larger than vm0 (0x40000000 bytes)"),
    ("- set-requested-size: {device: vm0, size: 3M}\n", 4,
     "'requested-size' has to be a multiple of the block size (0x200000)"),
    ("- set-requested-size: {device: vm9, size: 2M}\n", 4,
     "machine 'main' has no device 'vm9' (it has: vm0)"),
    ("- wait-until: {device: vm0, driver: sleepy}\n", 4,
     "'driver': 'sleepy' is not one of: absent, probing, idle, plugging, unplugging, "
     "stopped-short, broken, failed, disabled, retrying, no-memory, no-space, inflating, "
     "deflating"),
    ("- wait-until: {settled: yes}\n  timeout: -1\n", 5,
     "'timeout': -1 is less than or equal to the minimum of 0"),
    ("- monitor: frobnicate now\n", 4, "HMP: unknown command: 'frobnicate'"),
    ("- monitor: info numa\n  expect: '(unclosed'\n", 5, None),
    ("- qmp: query-nothing\n", 4, "QMP: The command query-nothing has not been found"),
    ("- qmp: qom-get\n  args: {path: /machine}\n", 5,
     "QMP qom-get: Parameter 'property' is missing"),
    ("- guest: verify\n  alloc: never\n", 5,
     "no earlier 'guest: alloc' on machine 'main' has 'as: never'"),
    ("- guest: read\n  size: 4M\n  addr: 0\n", 5,
     "'size' has no meaning for 'guest: read' (allowed: device, addr, offset, expect, "
     "expect-error, timeout, machine)"),
    ("- guest: explode\n", 4, None),
    ("- reboot: {by: guest, driver: false}\n", 4,
     "a guest reboot keeps its kernel command line: 'driver' needs 'by: host'"),
    ("- say: hi\n  machine: other\n", 5, "no machine 'other' (machines: main)"),
    ("- colour: red\n", 4, "a step needs one of the keys: say, pause, monitor, qmp, "
     "set-requested-size, guest, reboot, migrate, balloon, pace, wait-until, expect"),
    ("- say: hi\n  monitor: info numa\n", 5,
     "a step does one thing: it has both 'say' and 'monitor'"),
    ("- say: x\n- say: y\n  say: z\n", 6, "duplicate key 'say'"),
])
def test_bad_steps_are_reported_with_their_line(steps: str, line: int,
                                                message: str | None) -> None:
    found = problems(doc(steps))
    if message is None:
        assert found and found[0][0] == line, found
    else:
        assert (line, message) in found, found


def test_expect_condition_needs_a_device_only_when_ambiguous() -> None:
    two = ("-m 256M,maxmem=4G -object memory-backend-ram,id=m0,size=1G "
           "-device virtio-mem-pci,id=a,memdev=m0 -object memory-backend-ram,id=m1,size=1G "
           "-device virtio-mem-pci,id=b,memdev=m1")
    assert problems(doc("- expect: {plugged: 0}\n", f"machine: {two}")) == [
        (4, "'plugged' needs 'device' (the machine has 2 devices)")]
    parse_scenario(doc("- expect: {plugged: 0}\n"))  # one device: it is implied


def test_machine_errors_use_the_qemu_command_line_parser() -> None:
    found = problems(doc("- say: x\n", "machine: -m 1G -device virtio-mem-pci,id=vm0"))
    assert found[0][0] == 2
    assert found[0][1].startswith("machine 'main': vmemlab: -device virtio-mem-pci,id=vm0:")
    structured = """machine:
  boot-ram: 256M
  devices:
    - {id: vm0, size: 1G, block-size: 3M}"""
    found = problems(doc("- say: x\n", structured))
    assert found == [(3, "machine 'main': 'block-size' property has to be a power of two")]
    found = problems(doc("- say: x\n", "machine:\n  boot-ram: 256M\n  disks: 2"))
    assert found == [(4, "unknown key 'disks' in 'machine' (allowed: append, balloon, boot-ram, "
                         "devices, machine, maxmem, nodes, pace, pause-after-reset, "
                         "persistent-suspend, "
                         "rfc-shrink-on-reboot, "
                         "smp)")]


def test_top_level_problems() -> None:
    assert problems("title: t\nsteps: []\n")[0][1] == \
        "give either 'machine' or 'machines' (one of them)"
    found = problems(f"title: t\nmachine: {MACHINE}\nsteps:\n  - say: x\nextra: 1\n")
    assert found == [(5, "unknown key 'extra' at the top level (allowed: goals, machine, machines, "
                         "steps, summary, title)")]
    assert problems("title: [\n")[0][1].startswith("not valid YAML")
    assert problems("- just a list\n") == [
        (1, "a scenario is a mapping with 'title', 'machine' and 'steps'")]


def test_every_problem_is_reported_before_anything_runs() -> None:
    text = doc("""\
        - say: fine
        - set-requested-size: {device: vm0, size: 1X}
        - monitor: nope
        """)
    lines = [line for line, _ in problems(text)]
    assert lines == [5, 6]


def test_missing_file_and_bundled_names(tmp_path: object) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("/nonexistent/story.yaml")
    assert load_scenario("rfc-walkthrough").title.startswith("The RFC walkthrough")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(
        ["vm0", "1G", "say", "guest", "alloc", "", "info numa", "expect"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["title", "machine", "steps", "say", "guest", "size", "device",
                         "expect", "wait-until", "set-requested-size", "reboot", "x"]),
        inner, max_size=4),
    max_leaves=12))
def test_anything_fails_only_with_scenario_error(data: object) -> None:
    text = yaml.safe_dump(data)
    try:
        parse_scenario(text, "fuzz.yaml")
    except ScenarioError as err:
        assert err.problems and all(p.file == "fuzz.yaml" for p in err.problems)


def test_errors_inside_a_structured_machine_are_all_reported() -> None:
    text = """title: bad
machine:
  boot-ram: 256M
  devices:
    - {id: vm0, size: 1G, node: "x"}
    - {id: vm1}
steps:
  - wait-until: {device: vm0, plugged: 1G}
    timeout: soon
  - reboot: yes
"""
    assert problems(text) == [
        (5, "'node' must be an integer, not 'x'"),
        (6, "missing key 'size'"),
        (9, "'timeout' must be a number, not 'soon'"),
        (10, "'reboot' must be a mapping or empty, not 'true'"),
    ]
