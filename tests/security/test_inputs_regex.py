"""Every regex from a scenario file runs in bounded time (RE2) and off the GIL.

Before the fix a lesson goal ``console: '^(?:.|.)*@@@'`` ran in the web's request thread
with Python's backtracking ``re`` and held the GIL (29 of 30 ``/healthz`` calls timed out),
and ``expect-not: '(.*.*)*='`` made ``vmemlab play`` hang for more than 300 s: measured
here on the old code, ``(.*.*)*=`` took 35 s on a 16-character line.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import Machine
from emulator.snapshot import MachineSnapshot
from scenarios import ScenarioError, parse_scenario
from scenarios.loader import bundled, lessons, load_scenario
from scenarios.patterns import MAX_PROGRAM_SIZE, compile_pattern
from scenarios.runner import evaluate
from tests.conftest import small_config
from tests.security.measure import vmemlab

MACHINE = ("-m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=1G "
           "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=128M")
FULL_CONSOLE = ["a" * 4096] * 2000  # the machine's console: 2000 lines of at most 4096


def lesson(goal_regex: str) -> str:
    return (f"title: hostile lesson\nmachine: {MACHINE}\nsteps: [{{say: hi}}]\n"
            f"goals:\n  - goal: find it\n    when: {{console: '{goal_regex}'}}\n")


@pytest.fixture(scope="module")
def snapshot() -> Iterator[MachineSnapshot]:
    with Machine(small_config()) as machine:
        yield machine.snapshot()


def _no_settle(dev: object) -> bool:
    raise AssertionError("these goals ask nothing about settling")


def test_catastrophic_goal_on_a_full_console_is_fast_and_leaves_the_gil(
        snapshot: MachineSnapshot) -> None:
    goal = parse_scenario(lesson("^(?:.|.)*@@@")).goals[0]
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:  # another request thread: it must keep running meanwhile
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        why = [evaluate(snapshot, goal.condition, Counter(), FULL_CONSOLE, _no_settle)
               for _ in range(20)]
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        thread.join()
    assert why[0] == ["no console line matches /^(?:.|.)*@@@/"]
    assert elapsed < 2.0
    assert ticks > 0


def test_worst_pattern_within_the_limits_stays_bounded(
        snapshot: MachineSnapshot) -> None:
    """DFA blow-up ([ab]*a[ab]{45} has 2^45 states) falls back to RE2's NFA: still bounded."""
    pattern = "(?:[ab]*a[ab]{45}){6}x"
    compiled = compile_pattern(pattern)
    rng = random.Random(7)
    console = ["".join(rng.choice("ab") for _ in range(4096)) for _ in range(50)] * 40
    goal = parse_scenario(lesson(pattern)).goals[0]
    t0 = time.monotonic()
    assert evaluate(snapshot, goal.condition, Counter(), console, _no_settle)
    assert time.monotonic() - t0 < 5.0  # measured 0.65 s on this machine
    assert not compiled.search("\n".join(console))


@pytest.mark.parametrize(("pattern", "message"), [
    (r"(a)\\1", r"invalid escape sequence: \1 (backreferences are not supported"),
    ("(?=x)", "lookahead is not supported"),
    ("(?<!x)y", "lookbehind is not supported"),
    (r"end\\Z", r"use \z for the end of the text"),
    ("a{1001}", "invalid repetition size: {1001}"),
    ("((a{10}){10}){9}", "the pattern is too complex"),
    ("x" * 600, "the pattern is 600 characters long (at most 512)"),
    ("[unclosed", "missing ]"),
])
def test_unboundable_patterns_are_refused_at_load_with_a_line(pattern: str,
                                                              message: str) -> None:
    text = (f"title: t\nmachine: {MACHINE}\nsteps:\n  - monitor: info status\n"
            f"    expect-not: \"{pattern}\"\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "up.yaml")
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("up.yaml", 5)
    assert message in problem.message, problem.message


def test_every_bundled_pattern_passes_the_new_rules() -> None:
    patterns = 0
    for path in bundled() + lessons():
        scenario = load_scenario(path)
        for step in scenario.steps:
            for key in ("expect", "expect_not", "expect_error"):
                value = step.params.get(key)
                if value is not None and hasattr(value, "pattern"):
                    patterns += 1
                    assert compile_pattern(value.pattern)._compile().programsize \
                        <= MAX_PROGRAM_SIZE
        patterns += sum(1 for g in scenario.goals if "console" in g.condition)
    assert patterns >= 8


def test_vmemlab_play_with_a_catastrophic_expect_not_finishes(tmp_path: Path) -> None:
    story = tmp_path / "story.yaml"
    story.write_text(f"title: t\nmachine: {MACHINE}\nsteps:\n"
                     "  - monitor: info status\n    expect-not: '(.*.*)*='\n"
                     "  - monitor: help\n    expect-not: '(.*.*)*=@'\n", encoding="utf-8")
    t0 = time.monotonic()
    proc = vmemlab(["play", "--no-color", str(story)], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
    assert time.monotonic() - t0 < 60
