"""``info virtio``, ``info virtio-status``, ``info ramblock``, ``info mtree``, ``info memdev``
and the QMP queries ``query-memory-size-summary``, ``query-memdev``, ``query-events``,
``x-query-virtio(-status)`` against the transcripts.

The machines are built from the transcripts' command lines (REPORT.md; conftest.REFERENCE is
01's, on ``-machine q35`` as recorded; NUMA is 07's on the default ``-machine virt``). The
expected texts are copied from 01_main_lifecycle.txt, 06_variants.txt, 07_numa.txt and
12_dimm.txt; where vmemlab differs on purpose the test says how: the board's low memory map is
always arm virt's (RAM at 1 GiB, pl011, virtio-mmio: docs/personalities.md), arm ``virt``'s
addresses and names on that machine (device memory at 0x80000000, ``mach-virt.ram``), and the
virtio features its virtio-mmio transport does not offer (docs/model.md).
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from emulator import Machine
from monitor import run_hmp
from monitor.commands import context_for
from monitor.qmp import MonitorServer
from monitor.qmp_events import EVENTS, EventTranslator, make_event
from monitor.qobject_order import qdict

from .conftest import NUMA, REFERENCE, Builder, wait_settled

BACKEND = "/machine/peripheral/vm0/virtio-backend"
ARM_SHIFT = 0x80000000 - 0x100000000  # arm virt's device memory base minus q35's

# 01_main_lifecycle.txt, "info virtio-status /machine/peripheral/vm0/virtio-backend"
VIRTIO_STATUS_01 = """\
/machine/peripheral/vm0/virtio-backend:
  device_name:             virtio-mem\x20
  device_id:               24
  vhost_started:           false
  bus_name:                (null)
  broken:                  false
  disabled:                false
  disable_legacy_check:    false
  started:                 true
  use_started:             true
  start_on_kick:           false
  use_guest_notifier_mask: true
  vm_running:              true
  num_vqs:                 1
  queue_sel:               0
  isr:                     0
  endianness:              little
  status:
\tVIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found,
\tVIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device,
\tVIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete,
\tVIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready
  Guest features:
\tVIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled,
\tVIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported,
\tVIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)
  unknown-features(0x0000010000000001)
  Host features:
\tVIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled,
\tVIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported,
\tVIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy),
\tVIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts,
\tVIRTIO_F_NOTIFY_ON_EMPTY: Notify when device runs out of avail. descs. on VQ
  unknown-features(0x0000010040000001)
  Backend features:

"""
# 06_variants.txt, ram_unplugged_inaccessible_on, "[feature section only]" (indent stripped)
FEATURES_06_UI_ON = """\
Guest features:
VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled,
VIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported,
VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)
VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE: Unplugged memory cannot be accessed
unknown-features(0x0000010000000001)
Host features:
VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled,
VIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported,
VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy),
VIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts,
VIRTIO_F_NOTIFY_ON_EMPTY: Notify when device runs out of avail. descs. on VQ
VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE: Unplugged memory cannot be accessed
unknown-features(0x0000010040000001)
Backend features:"""
# what QEMU's virtio-pci offers and vmemlab's virtio-mmio transport does not
NOT_OFFERED = ("VIRTIO_RING_F_EVENT_IDX", "VIRTIO_RING_F_INDIRECT_DESC", "VIRTIO_F_ANY_LAYOUT",
               "VIRTIO_F_NOTIFY_ON_EMPTY")
RING_RESET, BAD_FEATURE, ACPI_PXM = 1 << 40, 1 << 30, 1 << 0


def _vmemlab_view(transcript_lines: list[str], numa: bool) -> list[str]:
    """The transcript's feature lines as vmemlab's transport would print them: without the
    features it does not offer and without their bits. QEMU prints each list (transport
    features, then device features) as entries joined by ",\\n": an entry without a comma
    ends its list, so the commas are re-joined per list after the filtering."""
    out: list[str] = []
    run: list[str] = []
    for line in transcript_lines:
        if re.fullmatch(r"\s*[A-Z][A-Z0-9_]+: .*", line):  # a feature entry
            run.append(line.rstrip(","))
            if not line.endswith(","):  # the list ends here
                kept = [e for e in run if not e.lstrip().startswith(NOT_OFFERED)]
                out += [e + "," for e in kept[:-1]] + kept[-1:]
                run = []
            continue
        match = re.fullmatch(r"(\s*)unknown-features\(0x([0-9a-f]{16})\)", line)
        if match:
            bits = int(match.group(2), 16) & ~(RING_RESET | BAD_FEATURE)
            if not numa:  # QEMU offers ACPI_PXM on any NUMA-capable machine, vmemlab
                bits &= ~ACPI_PXM  # only with -numa (docs/model.md)
            if bits:
                out.append(f"{match.group(1)}unknown-features(0x{bits:016x})")
            continue
        out.append(line)
    return out


def test_info_virtio(machine: Machine, build: Builder) -> None:
    assert run_hmp(machine, "info virtio") == f"{BACKEND} [virtio-mem]\n"  # 01
    numa = build(NUMA)
    assert run_hmp(numa, "info virtio") == (  # 07_numa.txt: the last created first
        "/machine/peripheral/vm1/virtio-backend [virtio-mem]\n"
        "/machine/peripheral/vm0/virtio-backend [virtio-mem]\n")


def test_info_virtio_status_01(machine: Machine) -> None:
    out = run_hmp(machine, f"info virtio-status {BACKEND}")
    head, features = VIRTIO_STATUS_01.split("  Guest features:\n")
    assert out.startswith(head)  # every field and the status bits: byte for byte
    assert out[len(head):].splitlines() == _vmemlab_view(
        ("  Guest features:\n" + features).splitlines(), numa=False)
    assert out == (head + "  Guest features:\n"
                   "\tVIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)\n"
                   "  Host features:\n"
                   "\tVIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)\n"
                   "  Backend features:\n\n")


def test_info_virtio_status_numa_bits(build: Builder) -> None:
    """07: with -numa the device offers ACPI_PXM, which QEMU 7.2 (built with ACPI) has no
    name for: an unknown bit, as in the transcript."""
    machine = build(["-machine", "q35", *NUMA])  # recorded on q35: no UNPLUGGED_INACCESSIBLE
    out = run_hmp(machine, "info virtio-status /machine/peripheral/vm1/virtio-backend")
    features = out[out.index("  Guest features:"):].splitlines()
    transcript = VIRTIO_STATUS_01[VIRTIO_STATUS_01.index("  Guest features:"):].splitlines()
    assert features == _vmemlab_view(transcript, numa=True)
    assert "  unknown-features(0x0000000000000001)" in features


@pytest.mark.parametrize("variant,negotiated", [("on", True), ("off", False)])
def test_unplugged_inaccessible_shows_when_negotiated(build: Builder, variant: str,
                                                      negotiated: bool) -> None:
    """06: unplugged-inaccessible=on/off; the feature section in the transcript's words."""
    argv = [a.replace("requested-size=512M", f"requested-size=0,unplugged-inaccessible={variant}")
            for a in REFERENCE]
    machine = build(argv)
    out = run_hmp(machine, f"info virtio-status {BACKEND}")
    section = [line.strip() for line in out[out.index("  Guest features:"):].splitlines()]
    transcript = FEATURES_06_UI_ON.splitlines()
    if not negotiated:
        transcript = [t for t in transcript if "UNPLUGGED_INACCESSIBLE" not in t]
    expected = [line.strip() for line in _vmemlab_view(transcript, numa=False)]
    assert section[:-1] == expected and section[-1] == ""  # the empty backend feature list
    assert ("VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE: Unplugged memory cannot be accessed"
            in section) is negotiated


def test_offered_but_not_negotiated(build: Builder) -> None:
    """Without a driver nothing is negotiated: the host offers UNPLUGGED_INACCESSIBLE, the
    guest features stay empty, the status has no bit."""
    argv = [*[a.replace("requested-size=512M", "unplugged-inaccessible=on") for a in REFERENCE],
            "-append", "modprobe.blacklist=virtio_mem"]
    machine = build(argv, settle=False)
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    out = run_hmp(machine, f"info virtio-status {BACKEND}")
    assert "  started:                 false\n" in out
    assert out.endswith(
        "  status:\n\n"
        "  Guest features:\n\n"
        "  Host features:\n"
        "\tVIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)\n"
        "\tVIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE: Unplugged memory cannot be accessed\n"
        "  Backend features:\n\n")


def test_virtio_status_path_errors(machine: Machine) -> None:
    """QEMU 7.2 compares canonical paths: neither ``vm0`` nor the PCI proxy is one."""
    for path in ("vm0", "/machine/peripheral/vm0", "/nope"):
        assert run_hmp(machine, f"info virtio-status {path}") == (
            f"Error: Path {path} is not a VirtIODevice\n")
    assert run_hmp(machine, "info virtio-status") == (
        'info virtio-status: string expected\nTry "help info virtio-status" for more '
        "information\n")


# 01_main_lifecycle.txt, "info ramblock": the header and the two rows vmemlab has
RAMBLOCK_01 = """\
              Block Name    PSize              Offset               Used              Total
       0000:00:03.0/mem0    4 KiB  0x0000000000000000 0x0000000080000000 0x0000000080000000
                  pc.ram    4 KiB  0x0000000080000000 0x0000000040000000 0x0000000040000000
"""


def test_info_ramblock(machine: Machine, build: Builder) -> None:
    # q35: the transcript's rows byte for byte (firmware, VGA, NIC and ACPI blocks are not
    # modelled); on arm virt the RAM block is mach-virt.ram (the machine's default_ram_id)
    assert run_hmp(machine, "info ramblock") == RAMBLOCK_01
    virt = build([a for a in REFERENCE if a not in ("-machine", "q35")])
    assert run_hmp(virt, "info ramblock") == RAMBLOCK_01.replace(
        "                  pc.ram", "           mach-virt.ram")
    numa = build(NUMA)  # 07: the nodes' backends are RAM blocks; no default RAM block
    assert run_hmp(numa, "info ramblock").splitlines()[1:] == [
        "       0000:00:03.0/mem0    4 KiB  0x0000000040000000 0x0000000080000000 "
        "0x0000000080000000",
        "       0000:00:04.0/mem1    4 KiB  0x00000000c0000000 0x0000000080000000 "
        "0x0000000080000000",
        "                      m0    4 KiB  0x0000000000000000 0x0000000020000000 "
        "0x0000000020000000",
        "                      m1    4 KiB  0x0000000020000000 0x0000000020000000 "
        "0x0000000020000000"]


# 01_main_lifecycle.txt, the "info mtree" excerpt: root and device-memory lines
MTREE_01 = """\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000100000000-00000001bfffffff (prio 0, i/o): device-memory
      0000000100000000-000000017fffffff (prio 0, ram): mem0
"""


def _shift(line: str, by: int) -> str:
    def move(m: re.Match[str]) -> str:
        return f"{int(m.group(1), 16) + by:016x}-{int(m.group(2), 16) + by:016x}"
    return re.sub(r"([0-9a-f]{16})-([0-9a-f]{16})", move, line)


def test_info_mtree(machine: Machine, build: Builder) -> None:
    # q35: the transcript's root and device-memory lines byte for byte
    lines = run_hmp(machine, "info mtree").splitlines()
    head, root, dev_mem, mem0 = MTREE_01.splitlines()
    assert [head, root, dev_mem, mem0] == [
        line for line in lines if line in (head, root, dev_mem, mem0)]
    assert "    0000000040000000-000000007fffffff (prio 0, ram): pc.ram" in lines
    # arm virt: the device's region where virt puts it, same size, same words
    machine = build([a for a in REFERENCE if a not in ("-machine", "q35")])
    out = run_hmp(machine, "info mtree")
    lines = out.splitlines()
    assert root in lines and head in lines
    assert _shift(dev_mem, ARM_SHIFT) in lines and _shift(mem0, ARM_SHIFT) in lines
    assert out == (
        "address-space: cpu-memory-0\naddress-space: cpu-memory-1\naddress-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n"
        "    0000000009000000-0000000009000fff (prio 0, i/o): pl011\n"
        "    000000000a000000-000000000a0001ff (prio 0, i/o): virtio-mmio\n"
        "    0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram\n"
        "    0000000080000000-000000013fffffff (prio 0, i/o): device-memory\n"
        "      0000000080000000-00000000ffffffff (prio 0, ram): mem0\n\n"
        "address-space: I/O\n"
        "  0000000000000000-000000000000ffff (prio 0, i/o): io\n\n")
    # QEMU 7.2 maps the whole backend whatever is plugged: the tree does not change
    assert run_hmp(machine, "qom-set vm0 requested-size 0") == ""
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 0, 30)
    assert run_hmp(machine, "info mtree") == out == run_hmp(machine, "info mtree -D")
    assert run_hmp(machine, "info mtree -f").startswith("Error: vmemlab models the memory "
                                                        "tree only")


def test_info_mtree_numa(build: Builder) -> None:
    """07's machine: the RAM container holds the nodes' memdevs; two devices, two windows."""
    lines = run_hmp(build(NUMA), "info mtree").splitlines()
    assert lines[5:13] == [
        "    000000000a000000-000000000a0001ff (prio 0, i/o): virtio-mmio",
        "    000000000a000200-000000000a0003ff (prio 0, i/o): virtio-mmio",
        "    0000000040000000-000000007fffffff (prio 0, i/o): mach-virt.ram",
        "      0000000040000000-000000005fffffff (prio 0, ram): m0",
        "      0000000060000000-000000007fffffff (prio 0, ram): m1",
        "    0000000080000000-000000023fffffff (prio 0, i/o): device-memory",
        "      0000000080000000-00000000ffffffff (prio 0, ram): mem0",
        "      0000000100000000-000000017fffffff (prio 0, ram): mem1"]


# 12_dimm.txt, "info memdev" (the DIMM's backend d1 and the default RAM backend)
MEMDEV_12 = """\
memory backend: d1
  size:  1073741824
  merge: true
  dump: true
  prealloc: false
  share: false
  reserve: true
  policy: default
  host nodes:\x20
memory backend: pc.ram
  size:  1073741824
  merge: true
  dump: true
  prealloc: false
  share: false
  reserve: true
  policy: default
  host nodes:\x20
"""


def test_info_memdev(machine: Machine) -> None:
    d1, ram = MEMDEV_12.split("memory backend: pc.ram\n")
    assert run_hmp(machine, "info memdev") == (  # q35, as recorded: QEMU's pc.ram
        "memory backend: pc.ram\n" + ram
        + d1.replace("d1", "mem0").replace("1073741824", "2147483648"))


# ------------------------------------------------------------------------------ QMP

def test_qdict_order_is_qemus() -> None:
    """The order QEMU's QDict prints, from the QAPI field order: the transcripts' orders."""
    memory_device = {"id": 0, "memaddr": 0, "requested-size": 0, "size": 0, "max-size": 0,
                     "block-size": 0, "node": 0, "memdev": 0}  # VirtioMEMDeviceInfo
    assert list(qdict(memory_device)) == ["memdev", "memaddr", "block-size", "size", "node",
                                          "max-size", "requested-size", "id"]
    dimm = {"id": 0, "addr": 0, "size": 0, "slot": 0, "node": 0, "memdev": 0,
            "hotplugged": 0, "hotpluggable": 0}  # PCDIMMDeviceInfo
    assert list(qdict(dimm)) == ["memdev", "hotplugged", "addr", "hotpluggable", "size",
                                 "slot", "node", "id"]
    assert list(qdict({"id": 0, "size": 0, "qom-path": 0})) == ["size", "qom-path", "id"]
    # "status" and "singlestep" share a bucket: the later one comes first
    assert list(qdict({"running": 0, "singlestep": 0, "status": 0})) == [
        "status", "singlestep", "running"]


@pytest.fixture
def qmp_path(server: MonitorServer, tmp_path: Path) -> str:
    path = str(tmp_path / "qmp.sock")
    server.listen("qmp", f"unix:{path}")
    return path


def _qmp(path: str, *calls: tuple[str, dict[str, Any] | None]) -> list[Any]:
    async def run() -> list[Any]:
        qmp = QMPClient("info-test")
        await qmp.connect(path)
        try:
            out = []
            for name, args in calls:
                try:
                    out.append(await qmp.execute(name, args))
                except ExecuteError as err:
                    out.append(err)
            return out
        finally:
            await qmp.disconnect()
    return asyncio.run(run())


def test_qmp_queries_with_the_real_client(qmp_path: str) -> None:
    summary, memdev, events, virtio, status, bad = _qmp(
        qmp_path, ("query-memory-size-summary", None), ("query-memdev", None),
        ("query-events", None), ("x-query-virtio", None),
        ("x-query-virtio-status", {"path": BACKEND}),
        ("x-query-virtio-status", {"path": "vm0"}))
    # the HMP view of 01 (info memory_size_summary) as QMP
    assert summary == {"base-memory": 1073741824, "plugged-memory": 536870912}
    assert list(summary) == ["base-memory", "plugged-memory"]
    assert memdev == [
        {"share": False, "reserve": True, "prealloc": False, "host-nodes": [],
         "size": 1073741824, "merge": True, "dump": True, "policy": "default",
         "id": "pc.ram"},
        {"share": False, "reserve": True, "prealloc": False, "host-nodes": [],
         "size": 2147483648, "merge": True, "dump": True, "policy": "default", "id": "mem0"}]
    assert [list(m) for m in memdev] == [list(qdict(m)) for m in memdev]
    assert [e["name"] for e in events] == list(reversed(EVENTS))
    assert virtio == [{"name": "virtio-mem", "path": BACKEND}]
    assert status["name"] == "virtio-mem" and status["device-id"] == 24
    assert status["guest-features"] == {
        "dev-features": [], "transports": [
            "VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)"]}
    assert status["status"]["statuses"][0] == (
        "VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found")
    assert isinstance(bad, ExecuteError)
    assert (bad.error.error.class_, bad.error.error.desc) == (
        "GenericError", "Path vm0 is not a VirtIODevice")


def test_query_events_lists_what_is_emitted(build: Builder) -> None:
    """Every event a real run produces is declared; an undeclared one is refused."""
    machine = build(start=False)
    seen: list[str] = []
    translator = EventTranslator(machine, period=0.05)
    translator.add_sink(lambda msg: seen.append(msg["event"]))
    try:
        machine.start()
        wait_settled(machine)
        for line in ("stop", "cont", "system_reset", "qom-set vm0 requested-size 1G"):
            run_hmp(machine, line)
        wait_settled(machine)
        context_for(machine).quit_handler = lambda: None
        translator.emit_now("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    finally:
        translator.close()
    assert {"STOP", "RESUME", "RESET", "MEMORY_DEVICE_SIZE_CHANGE", "SHUTDOWN"} <= set(seen)
    assert set(seen) <= set(EVENTS)
    with pytest.raises(ValueError, match="NIC_RX_FILTER_CHANGED is not declared"):
        make_event("NIC_RX_FILTER_CHANGED", {"path": "/machine/peripheral/net0"})


def test_help_labels_the_rfc_request_status() -> None:
    from monitor.hmp import execute

    text = execute(None, "help info virtio-mem")  # type: ignore[arg-type]
    assert "the 2017 RFC's command" in text and "guest's own report" in text
    assert "shipped virtio-mem has no channel for it" in text


def test_raw_json_key_order(qmp_path: str) -> None:
    """On the wire (not through a client's dict): QEMU's order, ``return`` before ``id``."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(qmp_path)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(b'{"execute": "qmp_capabilities"}\r\n')
    reader.readline()
    sock.sendall(b'{"execute": "query-memory-size-summary", "id": 7}\r\n')
    assert reader.readline() == (b'{"return": {"base-memory": 1073741824, '
                                 b'"plugged-memory": 536870912}, "id": 7}\r\n')
    sock.close()


def test_a_machine_without_devices(build: Builder) -> None:
    machine = build(["-m", "1G,maxmem=2G"], settle=False)
    assert run_hmp(machine, "info virtio") == "No VirtIO devices\n"
    assert run_hmp(machine, "info ramblock").splitlines()[1:] == [
        "           mach-virt.ram    4 KiB  0x0000000000000000 0x0000000040000000 "
        "0x0000000040000000"]
    lines = run_hmp(machine, "info mtree").splitlines()
    assert lines[3:7] == [  # maxmem > RAM: an empty device-memory region, as in QEMU
        "    0000000009000000-0000000009000fff (prio 0, i/o): pl011",
        "    0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram",
        "    0000000080000000-00000000bfffffff (prio 0, i/o): device-memory",
        ""]
