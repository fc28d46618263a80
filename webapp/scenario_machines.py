"""A session's machine replaced by a scenario's or lesson's machine: one way, whoever asks
(the lesson pages, a shared scenario's start button, a teacher's push to the class).

The machine is the scenario's first machine with its teaching pace applied from the start, as
``vmemlab play`` applies it; a machine larger than this server allows is refused.
"""

from __future__ import annotations

from control import control_for
from scenarios.loader import Scenario
from webapp.sessions import LimitError, MachineSession, SessionManager


class TooLargeError(LimitError):
    """The scenario's machine is larger than this server allows (a 400: the file asks it)."""

    status = 400


def check_fits(mgr: SessionManager, scenario: Scenario, what: str) -> None:
    """Refuse (``TooLargeError``) a scenario whose machine exceeds the per-machine limits."""
    cfg = scenario.machines[scenario.default_machine].config
    blocks = max((d.size // d.block_size for d in cfg.devices), default=0)
    total = cfg.boot_ram + sum(d.size for d in cfg.devices)
    if total > mgr.settings.max_machine_memory or blocks > mgr.settings.max_blocks:
        raise TooLargeError(f"{what}'s machine is larger than this server allows")


def start_scenario_machine(mgr: SessionManager, token: str, scenario: Scenario) -> MachineSession:
    """Give session ``token`` the scenario's machine (admission is the caller's: it differs
    between a visitor's own request and a teacher's push)."""
    spec = scenario.machines[scenario.default_machine]
    sess = mgr.replace(token, spec.config)
    if sess.machine is not None and (spec.pace_ms or spec.pause_after_reset):
        control_for(sess.machine).set_pace(spec.pace_ms,
                                           pause_after_reset=spec.pause_after_reset)
    return sess
