"""What the monitor shows of the machine type: QEMU's texts where QEMU shows them.

Transcript 06 (QEMU 7.2, ``-machine q35``): ``qom-get /machine/peripheral/vm0/virtio-backend
unplugged-inaccessible`` answers "off" for memory-backend-ram (auto) and "on" when set; on arm
QEMU has no such property (``#if defined(VIRTIO_MEM_HAS_LEGACY_GUESTS)``).
"""

from __future__ import annotations

from monitor import run_hmp

from .conftest import REFERENCE, Builder

BACKEND = "/machine/peripheral/vm0/virtio-backend"


def test_q35_answers_like_transcript_06(build: Builder) -> None:
    machine = build(REFERENCE)
    assert run_hmp(machine, f"qom-get {BACKEND} unplugged-inaccessible") == '"off"\n'
    assert "memaddr: 0x100000000\n" in run_hmp(machine, "info memory-devices")
    listing = run_hmp(machine, f"qom-list {BACKEND}")
    assert "unplugged-inaccessible (OnOffAuto)" in listing
    assert "dynamic-memslots" not in listing  # QEMU 8.2's, not set here
    on = build([a.replace("requested-size=512M", "requested-size=0,unplugged-inaccessible=on")
                for a in REFERENCE])
    assert run_hmp(on, f"qom-get {BACKEND} unplugged-inaccessible") == '"on"\n'


def test_arm_virt_has_no_unplugged_inaccessible_property(build: Builder) -> None:
    virt = [a for a in REFERENCE if a not in ("-machine", "q35")]
    machine = build(virt)
    assert run_hmp(machine, f"qom-get {BACKEND} unplugged-inaccessible") == \
        "Error: Property 'virtio-mem.unplugged-inaccessible' not found\n"
    assert "unplugged-inaccessible" not in run_hmp(machine, f"qom-list {BACKEND}")
    assert "memaddr: 0x80000000\n" in run_hmp(machine, "info memory-devices")


def test_the_named_options_are_listed_where_they_are_used(build: Builder) -> None:
    virt = [a.replace("requested-size=512M",
                      "requested-size=512M,dynamic-memslots=on,x-rfc-write-protect=on")
            for a in REFERENCE if a not in ("-machine", "q35")]
    machine = build(virt)
    listing = run_hmp(machine, f"qom-list {BACKEND}")
    assert "dynamic-memslots (bool)" in listing and "x-rfc-write-protect (bool)" in listing
    assert run_hmp(machine, f"qom-get {BACKEND} dynamic-memslots") == "true\n"
    assert run_hmp(machine, "qom-get vm0 x-rfc-write-protect") == "true\n"
