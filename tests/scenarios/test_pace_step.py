"""The scenario side of the teaching pace: a ``pace`` step and the ``pace`` /
``pause-after-reset`` machine fields, checked by the schema and loader, played for real."""

from __future__ import annotations

import textwrap

import pytest

from scenarios import Player, ScenarioError, parse_scenario

MACHINE = """\
title: pace
machine:
  boot-ram: 64M
  devices: [{id: vm0, size: 512M, requested-size: 0}]
"""


def _play(text: str) -> list:
    reports: list = []
    scenario = parse_scenario(textwrap.dedent(text), "pace.yaml")
    ok = Player(scenario, on_step=reports.append).run()
    assert ok, [(r.kind, r.summary) for r in reports]
    return reports


def test_a_pace_step_holds_each_request_and_counts_them() -> None:
    reports = _play(MACHINE + """\
steps:
  - wait-until: {settled: true}
  - pace: 100
  - set-requested-size: {device: vm0, size: 384M}
  - wait-until: {plugged: 384M, settled: true}
  - expect: {events: {request_held: 3, response: 3}}
  - pace: {ms: 0, pause-after-reset: true}
  - reboot:
  - expect: {runstate: paused, plugged: 0}
""")
    assert reports[1].summary == ("teaching pace (vmemlab): 100 ms per request, pause after "
                                  "reset off")
    assert reports[5].summary.endswith("pause after reset on")


def test_the_machine_fields_set_the_pace_from_the_start() -> None:
    _play(MACHINE + """\
  pace: 50
  pause-after-reset: true
steps:
  - wait-until: {booted: true}
  - qmp: x-vmemlab-pace
    expect: {pace-ms: 50, pause-after-reset: true}
""")


@pytest.mark.parametrize("step, why", [
    ("pace: -1", "pace"),
    ("pace: 20000", "pace"),
    ("pace: fast", "pace"),
    ("pace: {ms: 5, speed: 2}", "speed"),
])
def test_a_bad_pace_step_is_refused_before_anything_runs(step: str, why: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(MACHINE + f"steps:\n  - {step}\n", "pace.yaml")
    assert any(why in p.message for p in info.value.problems), info.value.problems
