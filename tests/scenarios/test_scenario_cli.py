"""``vmemlab play``: transcript, exit codes for CI, --record, --check, --list, --help."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from scenarios.cli import main
from scenarios.recording import Recording
from vmemlab.cli import main as vmemlab_main

MACHINE = ("-m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=1G "
           "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=128M")


def write(tmp_path: Path, steps: str, machine: str = MACHINE) -> str:
    path = tmp_path / "story.yaml"
    path.write_text(f"title: A small story\nmachine: {machine}\nsteps:\n{steps}",
                    encoding="utf-8")
    return str(path)


def play(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main([*argv, "--no-color"], stdout=out), out.getvalue()


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert vmemlab_main(["play", "--help"]) == 0
    text = capsys.readouterr().out
    assert "usage: vmemlab play" in text and "--record" in text and "--interactive" in text


def test_passing_scenario_prints_a_transcript_and_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, """\
  - say: Plug more.
  - set-requested-size: {device: vm0, size: 256M}
  - wait-until: {device: vm0, plugged: 256M, settled: true}
  - monitor: info virtio-mem vm0
    expect: 'Request status: finished'
  - pause: look at the grid
""")
    code, out = play([path])
    assert code == 0, out
    assert "» Plug more." in out
    assert "✓ set-requested-size vm0 256M" in out
    assert "│ Request status: finished" in out
    assert "headless: continuing" in out
    assert "PASS A small story: 5/5 steps" in out


def test_first_failed_expectation_stops_with_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path, """\
  - wait-until: {settled: true}
  - expect: {device: vm0, plugged: 1G}
  - say: never reached
""")
    code, out = play([path])
    assert code == 1
    assert "✗ expect device: vm0, plugged: 1G" in out
    assert "vm0 plugged size is 128 MiB (134217728), expected 1G" in out
    assert f"at {path}:5" in out
    assert "never reached" not in out
    assert "FAIL A small story: step 2 (expect) failed after 1 passed" in out


def test_wait_until_times_out(tmp_path: Path) -> None:
    path = write(tmp_path, "  - wait-until: {device: vm0, plugged: 512M}\n    timeout: 0.3\n")
    code, out = play([path])
    assert code == 1 and "timed out after 0.3 s" in out


def test_invalid_file_exits_2_before_running(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "  - say: fine\n  - guest: alloc\n    sise: 4M\n")
    code, out = play([path])
    assert code == 2 and out == ""
    err = capsys.readouterr().err
    assert f"{path}:6: unknown key 'sise' in a 'guest' step (allowed: addr, alloc, as," in err


def test_check_and_list(tmp_path: Path) -> None:
    code, out = play([write(tmp_path, "  - say: x\n"), "--check"])
    assert code == 0 and "ok (1 steps, 1 machine(s))" in out
    code, out = play(["--list"])
    assert code == 0 and "01-rfc-walkthrough" in out and "08-block-size-and-numa" in out


def test_record_writes_a_seekable_recording(tmp_path: Path) -> None:
    path = write(tmp_path, """\
  - wait-until: {settled: true}
  - say: A rogue write.
  - guest: rogue-write
    device: vm0
    offset: 300M
    expect: {blocked: true}
  - set-requested-size: {device: vm0, size: 0}
  - wait-until: {device: vm0, plugged: 0, settled: true}
""", MACHINE + ",x-rfc-write-protect=on")  # the RFC's protection: a refused write to record
    record = tmp_path / "run.ndjson"
    code, out = play([path, "--record", str(record), "--keyframe-events", "20"])
    assert code == 0, out
    rec = Recording.load(str(record))
    assert rec.header["format"] == "vmemlab-recording" and rec.header["version"] == 1
    assert rec.header["machines"]["main"]["argv"][:2] == ["-m", "256M,maxmem=2G"]
    markers = rec.markers()
    assert [m.get("marker", m["type"]) for m in markers] == ["say", "violation"]
    assert markers[1]["access"] == "write"
    assert len([e for e in rec.entries if e["type"] == "keyframe"]) >= 3
    first = next(e for e in rec.entries if e["type"] == "keyframe")
    assert rec.state_at(0.0) == {} or first["t"] == 0.0
    assert rec.state_at(first["t"])["main"]["devices"]["vm0"]["plugged_size"] == 0
    at_say = rec.state_at(markers[0]["t"])["main"]["devices"]["vm0"]
    assert at_say["plugged_size"] == 128 << 20
    assert bytes.fromhex(at_say["bitmap"]).count(1) == 64
    assert rec.state_at(rec.duration)["main"]["devices"]["vm0"]["plugged_size"] == 0


def test_interactive_pause_waits_for_the_presenter() -> None:
    from scenarios import Player, parse_scenario

    asked: list[str] = []
    scenario = parse_scenario(f"title: p\nmachine: {MACHINE}\nsteps:\n  - pause: look\n"
                              "  - pause:\n")

    def prompt(text: str) -> str:
        asked.append(text)
        return ""

    player = Player(scenario, interactive=True, prompt=prompt)
    assert player.run()
    assert asked == ["look -- press Enter to continue ", "paused -- press Enter to continue "]
    assert [r.summary for r in player.reports] == ["continued", "continued"]
