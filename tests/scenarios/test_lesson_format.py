"""Lessons that teach (issue 12 §5): progressive hints, predict-then-check, debriefs.

The bundled lessons must all use them, each prediction must be measurable on the machine
when its goal is reached (the worked solution shows it), and a hostile or careless lesson
file gets a clear ``FILE:LINE: message``.
"""

from __future__ import annotations

import os
import textwrap

import pytest

from scenarios import ScenarioError, parse_scenario
from scenarios.loader import lessons, load_scenario
from scenarios.runner import Player

MACHINE = ("-m 256M,maxmem=4G -object memory-backend-ram,id=mem0,size=1G "
           "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=256M")
TWO = (MACHINE + " -object memory-backend-ram,id=mem1,size=1G "
       "-device virtio-mem-pci,id=vm1,memdev=mem1")


def lesson(goal: str, machine: str = MACHINE) -> str:
    return (f"title: t\nmachine: {machine}\nsteps:\n  - say: hi\ngoals:\n"
            + textwrap.indent(textwrap.dedent(goal), "  "))


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "lesson.yaml")
    return [(p.line, p.message) for p in info.value.problems]


@pytest.mark.parametrize("path", lessons(), ids=[os.path.basename(p) for p in lessons()])
def test_every_bundled_goal_has_three_hint_levels_and_a_debrief(path: str) -> None:
    scenario = load_scenario(path)
    for goal in scenario.goals:
        assert len(goal.hints) == 3, goal.title
        assert len(set(goal.hints)) == 3, goal.title  # nudge, pointer, answer differ
        assert len(goal.debrief) > 40, goal.title
    assert any(g.predict is not None for g in scenario.goals)


def test_every_bundled_prediction_is_measured_when_its_goal_is_reached() -> None:
    """The worked solution reaches each goal; the machine then has a value to check the
    learner's prediction against (never a value from the lesson file)."""
    seen = {}
    for path in lessons():
        scenario = load_scenario(path)
        player = Player(scenario)
        assert player.run(), path
        for i, goal in enumerate(scenario.goals):
            if goal.predict is not None:
                assert player.measured.get(i) is not None, (path, goal.title)
                seen[(os.path.basename(path), goal.predict.measure)] = player.measured[i]
    # what the debriefs explain: 41M pinned in 2 MiB blocks keeps 21 blocks (42M); 16M keeps
    # 16M; 512M is 256 blocks; balloon 128 on 256M is 32768 pages of 4 KiB
    assert seen[("01-rfc-walkthrough.yaml", "plugged")] == 42 << 20
    assert seen[("05-make-it-stop-short.yaml", "plugged")] == 16 << 20
    assert seen[("02-reboot.yaml", "plugged-blocks")] == 256
    assert seen[("08-why-not-virtio-balloon.yaml", "balloon-pages")] == 32768
    assert seen[("09-the-addendum.yaml", "plugged-blocks")] == 128  # the cap: 256M of 2 MiB


def test_a_goal_parses_hints_predict_and_debrief() -> None:
    scenario = parse_scenario(lesson("""\
        - goal: g
          hints: [nudge, pointer, answer]
          predict: {question: "how much?", measure: plugged, tolerance: 2M}
          debrief: because
          when: {device: vm0, plugged: 0}
        """), "lesson.yaml")
    goal = scenario.goals[0]
    assert goal.hints == ("nudge", "pointer", "answer")
    assert goal.hint == "answer"
    assert goal.debrief == "because"
    assert goal.predict is not None
    assert (goal.predict.measure, goal.predict.device, goal.predict.tolerance,
            goal.predict.unit) == ("plugged", "vm0", 2 << 20, "bytes")


def test_an_old_single_hint_still_loads() -> None:
    goal = parse_scenario(lesson("- {goal: g, hint: h, when: {device: vm0, plugged: 0}}\n"),
                          "l.yaml").goals[0]
    assert goal.hints == ("h",) and goal.predict is None and goal.debrief == ""


@pytest.mark.parametrize(("goal", "machine", "line", "words"), [
    ("- {goal: g, hint: a, hints: [b], when: {plugged: 0}}", MACHINE, 6,
     "either 'hint' or 'hints'"),
    ("- {goal: g, hints: [a, b, c, d], when: {plugged: 0}}", MACHINE, 6, "is too long"),
    ("- {goal: g, hints: [], when: {plugged: 0}}", MACHINE, 6, "should be non-empty"),
    ("- {goal: g, debrief: " + "x" * 2001 + ", when: {plugged: 0}}", MACHINE, 6,
     "is too long"),
    ("- {goal: g, predict: {question: q, measure: rss}, when: {plugged: 0}}", MACHINE, 6,
     "'rss' is not one of"),
    ("- {goal: g, predict: {question: q, measure: plugged}, when: {device: vm0}}", TWO, 6,
     "measure 'plugged' needs 'device'"),
    ("- {goal: g, predict: {question: q, measure: plugged, device: vm9}, when: {plugged: 0}}",
     MACHINE, 6, "has no device 'vm9'"),
    ("- {goal: g, predict: {question: q, measure: dimms, device: vm0}, when: {plugged: 0}}",
     MACHINE, 6, "of the machine, not of a device"),
    ("- {goal: g, predict: {question: q, measure: balloon-pages}, when: {plugged: 0}}",
     MACHINE, 6, "has no balloon"),
    ("- {goal: g, predict: {question: q, measure: plugged-blocks, tolerance: 2M},\n"
     "   when: {plugged: 0}}", MACHINE, 6, "is not a count"),
    ("- {goal: g, predict: {question: q, measure: plugged, tolerance: lots},\n"
     "   when: {plugged: 0}}", MACHINE, 6, "is not a size"),
    ("- {goal: g, predict: {measure: plugged}, when: {plugged: 0}}", MACHINE, 6,
     "missing key 'question'"),
    ("- {goal: g, predict: {question: q, measure: plugged, answer: 3}, when: {plugged: 0}}",
     MACHINE, 6, "unknown key 'answer'"),
])
def test_a_bad_lesson_says_where_and_why(goal: str, machine: str, line: int,
                                         words: str) -> None:
    found = problems(lesson(goal + "\n", machine))
    assert any(words in message for _line, message in found), found
    assert all(n >= line for n, _m in found), found
