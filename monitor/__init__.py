"""QEMU's monitor interfaces for vmemlab: HMP (text), QMP (JSON) and the command line.

* ``monitor.commands`` -- one command layer (QOM model, memory devices, run state, migration,
  guest workload) shared by HMP and QMP; errors carry QEMU's class and text.
* ``monitor.hmp`` -- HMP parser and formatter; ``run_hmp(machine, line) -> str`` is the entry
  point the web console reuses.
* ``monitor.info`` / ``monitor.virtio_status`` -- the memory and virtio views (``info
  ramblock``, ``info mtree``, ``info memdev``, ``info virtio-status`` and their QMP twins).
* ``monitor.hmp_readline`` -- QEMU's readline for an HMP socket (echo, editing, history).
* ``monitor.qmp`` / ``monitor.qmp_events`` -- a QMP server real QEMU clients (``qemu.qmp``,
  ``qmp-shell``) can drive, with QEMU's event throttling.
* ``monitor.cmdline`` -- QEMU-style argv to ``MachineConfig`` with QEMU's startup errors.
"""

from monitor.commands import MonitorContext, MonitorError, context_for
from monitor.hmp import run_hmp

__all__ = ["MonitorContext", "MonitorError", "context_for", "run_hmp"]
