"""The web's machine form (and save files) keep the machine type and the named options, so a
saved lesson machine (-machine pc, dynamic-memslots, x-rfc-write-protect) loads as itself."""

from __future__ import annotations

import shlex

import pytest

from emulator.config import GiB
from monitor.cmdline import parse_args
from webapp.inputs import InputError, config_to_form, machine_config


def test_the_form_round_trips_machine_type_and_options() -> None:
    cfg = parse_args(shlex.split(
        "-machine pc -m 1G,maxmem=4G -object memory-backend-ram,id=mem0,size=2G "
        "-device virtio-mem-pci,id=vm0,memdev=mem0,dynamic-memslots=on,"
        "unplugged-inaccessible=on,x-rfc-write-protect=on")).config
    form = config_to_form(cfg)
    back = machine_config(form, max_memory=8 * GiB, max_blocks=1 << 20)
    assert back.machine == "pc" and form["machine"] == "pc"
    assert back.devices[0].dynamic_memslots and back.devices[0].rfc_write_protect
    assert back.layout().devices[0].addr == cfg.layout().devices[0].addr == 0x1_0000_0000


def test_an_unknown_machine_type_is_refused() -> None:
    with pytest.raises(InputError, match="machine: expected one of virt, pc, q35"):
        machine_config({"machine": "microvm"}, max_memory=8 * GiB, max_blocks=1 << 20)
