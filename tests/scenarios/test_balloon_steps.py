"""The balloon's scenario vocabulary: steps, guest actions and conditions are checked when the
file loads (file, line, cause), then played on the real machine."""

from __future__ import annotations

import textwrap

import pytest

from scenarios import Player, ScenarioError, parse_scenario

BALLOON = "-m 128M -device virtio-balloon-pci,id=balloon0,deflate-on-oom=on"
PLAIN = "-m 128M"


def doc(steps: str, machine: str = BALLOON) -> str:
    return f"title: t\nmachine: {machine}\nsteps:\n" + textwrap.indent(
        textwrap.dedent(steps), "  ")


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "story.yaml")
    return [(p.line, p.message) for p in info.value.problems]


NO_BALLOON = ("machine 'main' has no balloon (add -device virtio-balloon-pci,"
              "id=balloon0)")


@pytest.mark.parametrize(("steps", "machine", "expected"), [
    ("- balloon: {target: 64M}\n", PLAIN, (4, NO_BALLOON)),
    ("- wait-until: {balloon: {actual: 64M}}\n", PLAIN, (4, NO_BALLOON)),
    ("- guest: balloon-rogue\n  pages: 3\n", PLAIN, (4, NO_BALLOON)),
    ("- balloon: {target: 0}\n", BALLOON, (4, "Parameter 'target' expects a size")),
    ("- balloon: {target: lots}\n", BALLOON,
     (4, "'target': 'lots' is not a size (e.g. 512M, 1G, 0x8000000)")),
    ("- balloon: {}\n", BALLOON, (4, "'balloon': {} should be non-empty")),
    ("- balloon: {size: 1G}\n", BALLOON,
     (4, "unknown key 'size' in 'balloon' (allowed: poll-interval, target)")),
    ("- guest: balloon-rogue\n", BALLOON, (4, "'guest: balloon-rogue' needs 'pages'")),
    ("- guest: pressure\n", BALLOON, (4, "'guest: pressure' needs 'size'")),
    ("- expect: {balloon: {in: {vm9: 0}}}\n", BALLOON,
     (4, "machine 'main' has no device 'vm9' (it has: none)")),
    ("- expect: {balloon: {colour: red}}\n", BALLOON, None),
    ("- reboot: {by: guest, balloon-driver: false}\n", BALLOON,
     (4, "a guest reboot keeps its kernel command line: 'driver' needs 'by: host'")),
])
def test_bad_balloon_steps_are_reported_with_their_line(steps: str, machine: str,
                                                         expected: tuple[int, str] | None
                                                         ) -> None:
    found = problems(doc(steps, machine))
    if expected is None:
        assert found and found[0][0] == 4
    else:
        assert expected in found, found


def test_balloon_steps_play() -> None:
    scenario = parse_scenario(doc("""\
        - wait-until: {settled: true}
        - balloon: {target: 64M, poll-interval: 1}
        - wait-until: {balloon: {actual: 64M, pages: 16384, driver: idle, settled: true}}
        - expect: {balloon: {target: 64M, in-boot: 64M, memtotal: '> 100M', resident: 0},
                   events: {balloon_actual: 64, balloon_pages: 64}}
        - guest: balloon-rogue
          pages: 256
          expect: {pages: 256, bad: 0}
        - expect: {balloon: {resident: 1M}, events: {balloon_actual: 0}}
        - guest: pressure
          size: 80M
          expect: {balloon-deflated: '> 0'}
        - expect: {balloon: {oom-deflated: '> 0', actual: '> 64M', settled: true}}
        - qmp: query-balloon
          expect: {actual: '> 67108864'}
        - reboot: {balloon-driver: false}
        - wait-until: {balloon: {driver: disabled}, booted: true}
        """))
    reports: list = []
    assert Player(scenario, on_step=reports.append).run(), [r.summary for r in reports
                                                            if not r.ok]
    assert reports[1].summary == "balloon: target 64 MiB, stats every 1 s"
