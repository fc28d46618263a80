"""``vmemlab play FILE``: play a scenario headless and print a transcript.

Exit status: 0 when every step passed, 1 at the first failed step, 2 when the file cannot be
loaded (every problem is printed as ``FILE:LINE: message`` before anything runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from scenarios.loader import Scenario, ScenarioError, bundled, load_scenario
from scenarios.recording import Recorder
from scenarios.runner import Player, StepReport

MAX_OUTPUT_LINES = 40


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vmemlab play",
        description="Play a vmemlab scenario (YAML, see docs/scenarios.md) against real "
                    "machines, headless, and print a transcript. Exits non-zero at the first "
                    "failed expectation, so it can run in CI.")
    ap.add_argument("scenario", nargs="?",
                    help="a scenario file, or the name of a bundled one (see --list)")
    ap.add_argument("--record", metavar="FILE",
                    help="write a recording (NDJSON: header, events, steps, keyframes)")
    ap.add_argument("--keyframe-events", type=int, default=500, metavar="N",
                    help="take a keyframe every N events (default 500)")
    ap.add_argument("--keyframe-seconds", type=float, default=2.0, metavar="T",
                    help="... or every T seconds with events (default 2)")
    ap.add_argument("--interactive", action="store_true",
                    help="wait for Enter at every 'pause' step (headless default: continue)")
    ap.add_argument("--check", action="store_true",
                    help="only load and validate the file; run nothing")
    ap.add_argument("--list", action="store_true", help="list the bundled scenarios")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="print only failures and the result line")
    ap.add_argument("--no-color", action="store_true", help="plain text output")
    return ap


def _title(scenario: Scenario) -> str:
    return scenario.title


class Transcript:
    """Prints step reports as they arrive."""

    def __init__(self, console: Console, scenario: Scenario, quiet: bool) -> None:
        self.console = console
        self.scenario = scenario
        self.quiet = quiet
        self.multi = len(scenario.machines) > 1

    def header(self) -> None:
        if self.quiet:
            return
        sc = self.scenario
        body = escape(sc.summary.strip()) if sc.summary else ""
        machines = "\n".join(
            f"[dim]{escape(name)}:[/] " + escape(" ".join(spec.argv) if spec.argv else
                                                   _describe_config(spec))
            for name, spec in sc.machines.items())
        self.console.print(Panel(f"{body}\n\n{machines}".strip(), title=escape(sc.title),
                                 title_align="left"), soft_wrap=False)

    def __call__(self, r: StepReport) -> None:
        if self.quiet and r.ok:
            return
        mark = "[green]✓[/]" if r.ok else "[bold red]✗[/]"
        who = f"[magenta]{escape(r.machine)}[/] " if self.multi else ""
        if r.kind == "say":
            self.console.print(f"[dim]{r.index:>3}[/] [italic cyan]» {escape(r.title)}[/]")
            return
        self.console.print(f"[dim]{r.index:>3}[/] {mark} {who}[bold]{r.kind}[/] "
                           f"{escape(r.title)} [dim]({r.elapsed:.2f} s)[/]")
        if r.output and not self.quiet:
            lines = r.output.rstrip("\n").splitlines()
            if len(lines) > MAX_OUTPUT_LINES:
                lines = [*lines[:MAX_OUTPUT_LINES], f"... ({len(lines) - MAX_OUTPUT_LINES} more)"]
            for line in lines:
                self.console.print(f"      [dim]│[/] {escape(line)}", highlight=False)
        if r.summary and (r.kind not in ("monitor",) or not r.ok):
            style = "" if r.ok else "red"
            text = escape(r.summary)
            self.console.print(f"      → [{style}]{text}[/]" if style else f"      → {text}")
        if not r.ok:
            self.console.print(f"      [red]at {escape(self.scenario.path)}:{r.line}[/]")


def _describe_config(spec: object) -> str:
    from control.sizes import format_mib

    cfg = getattr(spec, "config")  # noqa: B009
    devs = ", ".join(f"{d.id} {format_mib(d.requested_size)}/{format_mib(d.size)} "
                     f"node {d.node} blocks {format_mib(d.block_size)}" for d in cfg.devices)
    extra = " rfc_shrink_on_reboot" if cfg.rfc_shrink_on_reboot else ""
    append = f" append '{cfg.cmdline}'" if cfg.cmdline else ""
    return f"boot RAM {format_mib(cfg.boot_ram)}; {devs}{extra}{append}"


def main(argv: list[str] | None = None, *, stdout: IO[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = stdout or sys.stdout
    console = Console(file=out, no_color=args.no_color, highlight=False,
                      force_terminal=False if args.no_color else None, soft_wrap=True)
    if args.list:
        for path in bundled():
            try:
                title = load_scenario(path).title
            except ScenarioError as err:
                title = f"(invalid: {err.problems[0].message})"
            name = os.path.basename(path).rsplit(".", 1)[0]
            console.print(f"{escape(name):<28} {escape(title)}")
        return 0
    if not args.scenario:
        _parser().print_usage(sys.stderr)
        sys.stderr.write("vmemlab play: error: a scenario file is required (or --list)\n")
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as err:
        for problem in err.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    if args.check:
        console.print(f"{escape(scenario.path)}: ok ({len(scenario.steps)} steps, "
                      f"{len(scenario.machines)} machine(s))")
        return 0
    transcript = Transcript(console, scenario, args.quiet)
    transcript.header()
    try:
        record_file = open(args.record, "w", encoding="utf-8") if args.record else None  # noqa: SIM115
    except OSError as err:
        sys.stderr.write(f"vmemlab play: cannot write {args.record}: {err.strerror}\n")
        return 2
    recorder = (Recorder(record_file, keyframe_events=args.keyframe_events,
                         keyframe_seconds=args.keyframe_seconds)
                if record_file is not None else None)
    player = Player(scenario, recorder=recorder, interactive=args.interactive,
                    on_step=transcript)
    try:
        ok = player.run()
    except Exception as err:  # a machine that cannot be built or started: say so, no traceback
        console.print(f"[bold red]ERROR[/] {escape(type(err).__name__)}: {escape(str(err))}")
        return 1
    finally:
        if record_file is not None:
            record_file.close()
    passed = sum(1 for r in player.reports if r.ok)
    total = len(scenario.steps) + len(scenario.goals)
    if ok:
        console.print(f"[bold green]PASS[/] {escape(scenario.title)}: {passed}/{total} steps"
                      + (f" (incl. {len(scenario.goals)} goals)" if scenario.goals else ""))
    else:
        failed = player.reports[-1]
        console.print(f"[bold red]FAIL[/] {escape(scenario.title)}: step {failed.index} "
                      f"({failed.kind}) failed after {passed} passed")
    if args.record:
        console.print(f"[dim]recording: {escape(args.record)}[/]")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
