"""The ``vmemlab`` command: ``run`` (QEMU-style machine + monitors), ``serve``, ``play``.

Subcommands are registered by name as ``module:function`` strings and imported lazily, so
``serve`` (the web issue) and ``play`` (the scenario issue) plug in by providing their module;
until then ``vmemlab serve --help`` still prints help and running it says it is not available
in this build. Every subcommand function takes ``argv: list[str]`` and returns an exit code.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    target: str  # "module:function"
    summary: str
    usage: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand(
        "vmemlab.cli:run_main",
        "start a machine headless, QEMU style, with HMP on stdio and optional QMP/HMP sockets",
        "vmemlab run [QEMU-style options]   (vmemlab run --help for the list)"),
    "serve": Subcommand(
        "webapp.serve:main",
        "serve the browser sandbox (Flask + Socket.IO)",
        "vmemlab serve [--host 127.0.0.1] [--port PORT]"),
    "play": Subcommand(
        "scenarios.cli:main",
        "play a scripted scenario against a machine",
        "vmemlab play SCENARIO [options]"),
}


def _usage() -> str:
    lines = ["usage: vmemlab {" + ",".join(SUBCOMMANDS) + "} [options]", "",
             "vmemlab: a sandbox for teaching virtio-mem (paravirtualized memory hot(un)plug).",
             "", "subcommands:"]
    for name, sub in SUBCOMMANDS.items():
        lines.append(f"  {name:<7} {sub.summary}")
    lines += ["", "Run 'vmemlab SUBCOMMAND --help' for the options of one subcommand."]
    return "\n".join(lines) + "\n"


def _load(sub: Subcommand) -> Callable[[list[str]], int] | None:
    module_name, _, func = sub.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            return None
        raise
    fn = getattr(module, func, None)
    return fn if callable(fn) else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    if args[0].startswith("-"):  # QEMU style: "vmemlab -m 1G,maxmem=4G ..." means "run"
        args = ["run", *args]
    name, rest = args[0], args[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        sys.stderr.write(f"vmemlab: unknown subcommand '{name}'\n" + _usage())
        return 2
    fn = _load(sub)
    if fn is None:
        if any(a in ("-h", "--help") for a in rest):
            sys.stdout.write(f"usage: {sub.usage}\n\n{sub.summary}.\n\n"
                             f"(not available in this build: {sub.target} is missing)\n")
            return 0
        sys.stderr.write(f"vmemlab: '{name}' is not available in this build "
                         f"({sub.target.partition(':')[0]} is missing)\n")
        return 1
    try:
        return int(fn(rest) or 0)
    except SystemExit as done:  # argparse's --help / usage errors inside a subcommand
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)


# ------------------------------------------------------------------------------ run

def run_main(argv: list[str]) -> int:
    """``vmemlab run``: parse QEMU-style options, start the machine and its monitors."""
    from device.errors import ConfigError
    from emulator.machine import Machine
    from monitor import commands as c
    from monitor.cmdline import DEFAULT_ARGS, CmdlineError, help_text, parse_args
    from monitor.qmp import MonitorServer
    from monitor.readline_console import run_console

    if any(a in ("-h", "--help", "-help") for a in argv):
        sys.stdout.write(help_text())
        return 0
    if not argv:
        sys.stderr.write("vmemlab: note: no options: running the reference machine "
                         f"({' '.join(DEFAULT_ARGS)})\n")
        argv = list(DEFAULT_ARGS)
    try:
        opts = parse_args(argv)
    except CmdlineError as err:
        sys.stderr.write(f"{err}\n" + (f"{err.hint}\n" if err.hint else ""))
        return 1
    for warning in opts.warnings:
        sys.stderr.write(warning + "\n")
    for note in opts.notes:
        sys.stderr.write(f"vmemlab: note: {note}\n")
    try:
        machine = Machine(opts.config, incoming=opts.incoming is not None)
    except (ConfigError, FileNotFoundError) as err:
        sys.stderr.write(f"vmemlab: {err}\n")
        return 1
    ctx = c.context_for(machine)
    _ = ctx.events  # start translating events before anything happens
    done = threading.Event()
    ctx.quit_handler = done.set
    server = MonitorServer(ctx)
    try:
        for spec in opts.monitors:
            try:
                bound = server.listen(spec.protocol, spec.address)
            except (OSError, ValueError) as err:
                sys.stderr.write(f"vmemlab: {spec.option}: Failed to bind socket: {err}\n")
                return 1
            if spec.address.endswith(":0"):  # tell the user which port the system chose
                sys.stderr.write(f"vmemlab: {spec.protocol.upper()} listening on {bound}\n")
        if opts.incoming is not None:
            try:
                c.incoming(ctx, opts.incoming)
            except c.MonitorError as err:
                # QEMU: -ENOTSUP for a stream version it does not read, else -EINVAL
                reason = ("Operation not supported" if err.desc.startswith(
                    "Unsupported migration stream version") else "Invalid argument")
                # QEMU: the RAM section (ram_load) names the device it was loading
                ram = err.desc.startswith(("Unknown ramblock", "Size mismatch"))
                sys.stderr.write(f"vmemlab: {err.desc}\n" + (
                    "vmemlab: error while loading state for instance 0x0 of device 'ram'\n"
                    if ram else "") + f"vmemlab: load of migration failed: {reason}\n")
                return 1
            machine.start()
        else:
            machine.start(paused=opts.start_paused)  # -S: the vCPU waits in prelaunch for cont

        def on_signal(signum: int, _frame: object) -> None:
            sys.stderr.write(f"vmemlab: terminating on signal {signum}\n")
            ctx.announce_shutdown("host-signal")
            ctx.quitting = True
            done.set()

        def on_record(record: object) -> None:
            event = getattr(record, "event", None)
            if opts.exit_on_shutdown and getattr(event, "kind", "") == "runstate" and \
                    getattr(event, "state", "") == "shutdown":
                ctx.quitting = True
                done.set()

        machine.bus.subscribe(on_record)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
        if opts.stdio_monitor:
            # the console runs beside the main thread so that 'quit' from any monitor (or a
            # signal) ends the process even while stdin is waiting for a line
            def console() -> None:
                run_console(ctx)
                if not ctx.quitting and not opts.monitors:
                    c.quit_machine(ctx)

            threading.Thread(target=console, name="hmp-stdio", daemon=True).start()
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            on_signal(signal.SIGINT, None)
    finally:
        server.close()
        ctx.close()
        machine.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
