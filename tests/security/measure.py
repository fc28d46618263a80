"""Resource bounds for security tests: run an attack in a fresh Python and measure it.

Memory is the growth of the child's peak RSS (``VmHWM`` in ``/proc/self/status``) from just
before the attack to just after it, so imports and interpreter start-up do not count; time
is the attack's wall time. Both are measured in a separate process so that one test's
allocations cannot hide another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PRELUDE = """
import json, sys, time
def _hwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
"""


@dataclass
class Measured:
    seconds: float
    rss_growth_mb: float
    result: str  # what the attack printed as its result (e.g. the error message)


def measure(setup: str, attack: str, timeout: float = 60.0) -> Measured:
    """Run ``setup`` (imports, data), then time ``attack``, which must set ``result``."""
    code = "\n".join([
        _PRELUDE, textwrap.dedent(setup),
        "_h0 = _hwm_kb(); _t0 = time.monotonic()",
        "result = None",
        "try:",
        textwrap.indent(textwrap.dedent(attack).strip("\n"), "    "),
        "except BaseException as _err:",
        "    result = 'CRASH ' + type(_err).__name__ + ': ' + str(_err)[:300]",
        "_t1 = time.monotonic(); _h1 = _hwm_kb()",
        "print(json.dumps({'seconds': _t1 - _t0, 'growth_kb': _h1 - _h0, "
        "'result': str(result)}))",
    ])
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=tempfile.gettempdir())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Measured(data["seconds"], data["growth_kb"] / 1024, data["result"])


def vmemlab(args: list[str], stdin: str = "", timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
    """``python -m vmemlab ARGS`` as a user runs it (a real process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=tempfile.gettempdir())
    return subprocess.run([sys.executable, "-m", "vmemlab", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
