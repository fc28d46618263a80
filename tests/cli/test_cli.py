"""The ``vmemlab`` command: help on every subcommand, ``run`` end to end in a subprocess."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vmemlab.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ("-m 1G,maxmem=4G -smp 2 -object memory-backend-ram,id=mem0,size=2G "
             "-device virtio-mem-pci,id=vm0,memdev=mem0,node=0,requested-size=512M")


def vmemlab(args: list[str], stdin: str = "", timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=tempfile.gettempdir())
    return subprocess.run([sys.executable, "-m", "vmemlab", "run", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


_STDERR_FILES: list[Path] = []  # stderr of spawned machines, shown when a test fails


def spawn(args: list[str], stderr: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=tempfile.gettempdir())
    err: object = subprocess.PIPE
    if stderr is not None:
        _STDERR_FILES.append(stderr)
        err = stderr.open("w")
    return subprocess.Popen([sys.executable, "-m", "vmemlab", "run", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True,  # type: ignore[arg-type]
                            cwd=ROOT, env=env)


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "serve", "play"):
        assert f"  {name} " in out
    assert main(["run", "--help"]) == 0
    assert "-device virtio-mem-pci" in capsys.readouterr().out
    for name in ("serve", "play"):
        assert main([name, "--help"]) == 0
        assert f"usage: vmemlab {name}" in capsys.readouterr().out
    assert set(SUBCOMMANDS) == {"run", "serve", "play"}
    assert main(["frob"]) == 2


def test_missing_subcommand_module(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vmemlab import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "serve",
                        cli.Subcommand("no_such_module_xyz:main", "serve", "vmemlab serve"))
    assert main(["serve"]) == 1
    assert "'serve' is not available in this build" in capsys.readouterr().err
    assert main(["serve", "--help"]) == 0
    assert "not available in this build" in capsys.readouterr().out


def test_run_stdio_session() -> None:
    proc = vmemlab(shlex.split(REFERENCE), "info status\nqom-get vm0 requested-size\n"
                   "qom-set vm0 requested-size 3M\nfoo\nquit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("QEMU 7.2.22 monitor - type 'help' for more information\n"
                                  "(qemu) VM status: running\n(qemu) 536870912\n(qemu) Error: "
                                  "'requested-size' has to be multiples of 'block-size' "
                                  "(0x200000)\n(qemu) unknown command: 'foo'\n(qemu) ")


def test_startup_error_exit_code() -> None:
    proc = vmemlab(shlex.split(REFERENCE.replace("requested-size=512M", "block-size=3M")))
    assert proc.returncode == 1
    assert proc.stderr == ("vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0,node=0,"
                           "block-size=3M: 'block-size' property has to be a power of two\n")
    assert proc.stdout == ""


def _hmp(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    buf = b""
    while not buf.endswith(b"(qemu) "):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode().replace("\r\n", "\n").removesuffix("(qemu) ")


def _connect(path: str, timeout: float = 20) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_rfc_command_line_runs(tmp_path: Path) -> None:
    """The RFC's V.1 command line starts; its monitor socket is served; quit ends it."""
    from tests.monitor.test_rfc_walkthrough import RFC_GUEST_LINE

    line = RFC_GUEST_LINE.replace("/var/tmp/monitor", str(tmp_path / "monitor"))
    proc = spawn(shlex.split(line))
    try:
        sock = _connect(str(tmp_path / "monitor"))
        buf = b""
        while not buf.endswith(b"(qemu) "):
            buf += sock.recv(4096)
        deadline = time.monotonic() + 20
        while "node 1 plugged: 3072 MB" not in (out := _hmp(sock, "info numa")) or \
                "node 0 plugged: 4096 MB" not in out:
            assert time.monotonic() < deadline, out + _hmp(sock, "info status") + _hmp(
                sock, "info guest")
            time.sleep(0.05)
        assert _hmp(sock, "info numa") == (
            "2 nodes\nnode 0 cpus: 0 1\nnode 0 size: 6144 MB\nnode 0 plugged: 4096 MB\n"
            "node 1 cpus: 2 3\nnode 1 size: 5120 MB\nnode 1 plugged: 3072 MB\n")
        sock.sendall(b"quit\n")
        assert proc.wait(20) == 0
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
    notes = [line for line in err.splitlines() if "note:" in line]
    assert any("--enable-kvm: ignored" in n for n in notes)
    assert all(n.startswith("vmemlab: note: ") for n in notes)


def _line(f: object) -> object:
    raw = f.readline()  # type: ignore[attr-defined]
    if not raw:
        logs = "".join(f"--- {p.name}\n{p.read_text()}" for p in _STDERR_FILES if p.exists())
        raise AssertionError(f"vmemlab closed the QMP connection\n{logs}")
    return json.loads(raw)


def _qmp(path: str) -> tuple[socket.socket, object]:
    sock = _connect(path)
    f = sock.makefile("rwb")
    _line(f)
    f.write(b'{"execute": "qmp_capabilities"}\n')
    f.flush()
    assert _line(f) == {"return": {}}
    return sock, f


def _qmp_call(f: object, cmd: str, args: dict | None = None) -> object:
    msg = {"execute": cmd, "id": "x"}
    if args:
        msg["arguments"] = args
    f.write(json.dumps(msg).encode() + b"\n")  # type: ignore[attr-defined]
    f.flush()  # type: ignore[attr-defined]
    while True:
        reply = _line(f)
        if "event" not in reply:  # type: ignore[operator]
            return reply


def test_migrate_and_incoming(tmp_path: Path) -> None:
    img = tmp_path / "vm.img"
    src_qmp = str(tmp_path / "src.sock")
    src = spawn([*shlex.split(REFERENCE), "-qmp", f"unix:{src_qmp},server,nowait",
                 "-monitor", "none"], tmp_path / "src.err")
    try:
        _, f = _qmp(src_qmp)
    except AssertionError as err:
        src.kill()
        raise AssertionError(src.communicate(timeout=10)[1]) from err
    try:
        assert _qmp_call(f, "qom-set", {"path": "vm0", "property": "requested-size",
                                        "value": 805306368}) == {"return": {}, "id": "x"}
        deadline = time.monotonic() + 20
        while _qmp_call(f, "qom-get", {"path": "vm0", "property": "size"})["return"] != \
                805306368:  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        out = _qmp_call(f, "human-monitor-command",
                        {"command-line": f'migrate "exec:cat > {img}"'})
        assert out == {"return": "", "id": "x"}
        status = _qmp_call(f, "query-migrate")["return"]  # type: ignore[index]
        assert status["status"] == "completed"
        assert _qmp_call(f, "query-status")["return"]["status"] == "postmigrate"  # type: ignore[index]
        assert _qmp_call(f, "quit") == {"return": {}, "id": "x"}
        assert src.wait(20) == 0
    finally:
        if src.poll() is None:
            src.kill()
        src.communicate(timeout=10)
    dst_qmp = str(tmp_path / "dst.sock")
    dst = spawn([*shlex.split(REFERENCE), "-qmp", f"unix:{dst_qmp},server,nowait",
                 "-incoming", f"exec:cat {img}"], tmp_path / "dst.err")
    try:
        _, f = _qmp(dst_qmp)
    except AssertionError as err:
        dst.kill()
        raise AssertionError(dst.communicate(timeout=10)[1]) from err
    try:
        # QMP answers while the stream loads (QEMU's "inmigrate"), as QEMU's does: wait
        deadline = time.monotonic() + 20
        while _qmp_call(f, "query-status")["return"]["status"] == "inmigrate":  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        devs = _qmp_call(f, "query-memory-devices")["return"]  # type: ignore[index]
        assert devs[0]["data"]["requested-size"] == devs[0]["data"]["size"] == 805306368
        assert _qmp_call(f, "query-status")["return"]["status"] == "running"  # type: ignore[index]
        _qmp_call(f, "quit")
        assert dst.wait(20) == 0
    finally:
        if dst.poll() is None:
            dst.kill()
        dst.communicate(timeout=10)
    bad = vmemlab([*shlex.split(REFERENCE.replace("requested-size=512M", "block-size=4M")),
                   "-incoming", f"exec:cat {img}"])
    assert bad.returncode == 1
    assert bad.stderr.endswith("vmemlab: load of migration failed: Invalid argument\n")


def test_guest_poweroff_ends_the_process() -> None:
    proc = vmemlab(shlex.split(REFERENCE), "guest poweroff\n", timeout=20)
    assert proc.returncode == 0
    kept = spawn([*shlex.split(REFERENCE), "-no-shutdown"])
    try:
        assert kept.stdin is not None
        kept.stdin.write("guest poweroff\n")
        kept.stdin.flush()
        time.sleep(3.0)  # start-up, boot and the poweroff, with room for a loaded machine
        assert kept.poll() is None
        kept.stdin.write("info status\nquit\n")
        kept.stdin.flush()
        out, _ = kept.communicate(timeout=20)
        assert "VM status: paused (shutdown)" in out
    finally:
        if kept.poll() is None:
            kept.kill()


def test_readline_tab_completion_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the console uses readline: TAB completes commands and device ids."""
    import pty
    import select
    import signal

    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(tmp_path), TERM="dumb",
               PYTHONFAULTHANDLER="1")
    fd, child_fd = pty.openpty()
    errlog = tmp_path / "stderr.txt"
    with errlog.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vmemlab", "run",
                                 *shlex.split(REFERENCE)], stdin=child_fd, stdout=child_fd,
                                stderr=err, cwd=ROOT, env=env, start_new_session=True)
    os.close(child_fd)

    def diagnose(buf: bytes) -> str:
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            proc.wait(10)
        return f"{buf!r}\n{errlog.read_text()}"

    pending = [b""]  # output read past the last marker, for the next read_until

    def read_until(marker: bytes, timeout: float = 30) -> bytes:
        buf = pending[0]
        deadline = time.monotonic() + timeout
        while marker not in buf:
            left = deadline - time.monotonic()
            assert left > 0, diagnose(buf)
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
        end = buf.find(marker) + len(marker) if marker in buf else len(buf)
        pending[0] = buf[end:]
        return buf[:end]

    try:
        try:
            read_until(b"(qemu) ", timeout=15)
        except AssertionError as err:
            # seen twice under heavy CPU load (never standalone): the child sits in input()
            # after printing its banner, yet nothing arrives on the pty master
            pytest.skip(f"no output from the pseudo-terminal: {err}")
        # type like a person: each TAB once readline has echoed what came before (under load
        # the terminal may still be in cooked mode right after the prompt appears)
        time.sleep(0.3)
        os.write(fd, b"info memory-dev\t")
        read_until(b"memory-devices")
        os.write(fd, b"\n")
        out = read_until(b"memdev: /objects/mem0")
        assert b'Memory device [virtio-mem]: "vm0"' in out
        read_until(b"(qemu) ")
        time.sleep(0.3)
        os.write(fd, b"qom-get v\t")
        read_until(b"vm0")
        os.write(fd, b" requested-si\t")
        read_until(b"requested-size")
        os.write(fd, b"\n")
        assert b"536870912" in read_until(b"536870912")
        os.write(fd, b"quit\n")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(fd)
    assert (tmp_path / ".vmemlab_history").exists()
