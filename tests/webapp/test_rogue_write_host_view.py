"""The host view of a rogue write: shipped QEMU lets it through, the block shows as
"unplugged but resident" and the page's residency numbers go up by the page it cost.

hw/virtio/virtio-mem.c keeps the whole memdev mapped ("With "dynamic-memslots=off" (old
behavior) we always map the whole RAM memory region directly"): the host has to back the page
the guest wrote, and pagemap (present and exclusive) shows it.
"""

from __future__ import annotations

from emulator import Machine
from emulator.config import MiB
from emulator.workload import Workload
from tests.conftest import MachineFactory, wait_settled
from webapp import view_model
from webapp.block_states import STATES, BlockState


def _view(machine: Machine) -> view_model.MachineView:
    return view_model.machine_view(machine.snapshot(residency=True))


def test_a_rogue_write_shows_as_unplugged_but_resident(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    before = _view(machine)
    block = 300 * MiB // dev.block_size
    assert Workload(machine).rogue_write(dev.addr + 300 * MiB).status == 0
    snap = machine.snapshot(residency=True)
    codes = view_model.host_codes(snap.device("vm0"))
    assert codes[block] == BlockState.HOST_UNPLUGGED_RESIDENT
    assert STATES[BlockState.HOST_UNPLUGGED_RESIDENT].label.startswith("unplugged but resident")
    assert [i for i, c in enumerate(codes) if c == BlockState.HOST_UNPLUGGED_RESIDENT] == [block]
    after = _view(machine)
    assert after["resident"] == before["resident"] + 4096
    assert snap.device("vm0").unplugged_resident == 4096
    # a reset discards the whole region: the block is no longer resident
    machine.system_reset()
    wait_settled(machine)
    codes = view_model.host_codes(machine.snapshot(residency=True).device("vm0"))
    assert BlockState.HOST_UNPLUGGED_RESIDENT not in codes
