"""QEMU-style command line: the startup errors of 08_startup_errors and the RFC's line."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.config import GiB, MiB
from monitor.cmdline import CmdlineError, parse_args

BASE = "-m 1G,maxmem=4G -object memory-backend-ram,id=mem0,size=2G"

# (extra options, failing option, message) -- 08_startup_errors.txt
STARTUP_ERRORS = [
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=3M",
     "'block-size' property has to be a power of two"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=3000000",
     "'block-size' property has to be a power of two"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=512K",
     "'block-size' property has to be at least 0x100000"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=4K",
     "'block-size' property has to be at least 0x100000"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=0",
     "'block-size' property has to be at least 0x100000"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=abc",
     "Parameter 'block-size' expects size"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=-2M",
     "Parameter 'block-size' expects size"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=3M",
     "'requested-size' property has to be multiples of 'block-size' (0x200000)"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=-1",
     "Parameter 'requested-size' expects size"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=abc",
     "Parameter 'requested-size' expects size"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,size=1G",
     "Property 'virtio-mem.size' is not writable"),
    ("-device virtio-mem-pci,id=vm0", "'memdev' property must be set"),
    ("-device virtio-mem-pci,id=vm0,memdev=nope", "Device 'nope' not found"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,node=1",
     "'node' property has value '1', which exceedsthe number of numa nodes: 1"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,memaddr=0x80100000",
     "address must be aligned to 0x200000 bytes"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,memaddr=0x200000",
     "can't add memory device [0x200000:0x80000000], usable range for memory devices "
     "[0x80000000:0xc0000000]"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,unplugged-inaccessible=maybe",
     "Parameter 'unplugged-inaccessible' does not accept value 'maybe'"),
    ("-device virtio-mem-pci,id=vm0,memdev=mem0,foo=1",
     "Property 'virtio-mem-pci.foo' not found"),
]


def fail(argv: str) -> str:
    with pytest.raises(CmdlineError) as err:
        parse_args(shlex.split(argv))
    return str(err.value)


@pytest.mark.parametrize(("extra", "message"), STARTUP_ERRORS)
def test_startup_errors(extra: str, message: str) -> None:
    option = extra.split(" ", 1)[1]
    assert fail(f"{BASE} {extra}") == f"vmemlab: -device {option}: {message}"


def test_errors_that_need_other_options() -> None:
    assert fail("-m 1G,maxmem=8G -object memory-backend-ram,id=mem0,size=2G "
                "-device virtio-mem-pci,id=vm0,memdev=mem0,block-size=4G") == (
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0,block-size=4G: backend memory "
        "size must be multiple of 0x100000000")
    assert fail("-m 1G,maxmem=4G -object memory-backend-ram,id=mem0,size=3M "
                "-device virtio-mem-pci,id=vm0,memdev=mem0") == (
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0: backend memory size must be "
        "multiple of 0x200000")
    assert fail("-m 1G,maxmem=8G -object memory-backend-ram,id=mem0,size=2G "
                "-device virtio-mem-pci,id=vm0,memdev=mem0 "
                "-device virtio-mem-pci,id=vm1,memdev=mem0") == (
        "vmemlab: -device virtio-mem-pci,id=vm1,memdev=mem0: 'memdev' property specifies a "
        "busy memdev: mem0")
    assert fail("-m 1G -object memory-backend-ram,id=mem0,size=2G "
                "-device virtio-mem-pci,id=vm0,memdev=mem0") == (
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0: memory devices (e.g. for memory "
        "hotplug) are not enabled, please specify the maxmem option")
    assert fail("-m 1G,maxmem=2G -object memory-backend-ram,id=mem0,size=2G "
                "-device virtio-mem-pci,id=vm0,memdev=mem0") == (
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0: not enough space, currently 0x0 "
        "in use of total space for memory devices 0x40000000")
    assert fail(f"{BASE} -device virtio-mem-pci,id=vm0,memdev=mem0 -overcommit mem-lock=on") == (
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0: Incompatible with mlock")
    assert fail("-m 1G,maxmem=8G -smp 2 -numa node,nodeid=0,cpus=0,memdev=m0 "
                "-object memory-backend-ram,id=m0,size=256M "
                "-numa node,nodeid=1,cpus=1,mem=256M") == (
        "vmemlab: total memory for NUMA nodes (0x20000000) should equal RAM size "
        "(0x40000000)")
    assert fail("-frobnicate") == "vmemlab: -frobnicate: invalid option"
    assert fail("-qmp tcp:0.0.0.0:4444,server,nowait") == (
        "vmemlab: -qmp tcp:0.0.0.0:4444,server,nowait: vmemlab listens only on 127.0.0.1 or "
        "unix sockets, not '0.0.0.0'")
    assert fail("-m") == "vmemlab: -m: requires an argument"
    assert fail("-qmp stdio") == ("vmemlab: -qmp stdio: QMP on stdio is not supported by "
                                  "vmemlab; use unix:PATH or tcp:127.0.0.1:PORT")


def test_warnings_and_accepted() -> None:
    opts = parse_args(shlex.split(f"{BASE} -device virtio-mem-pci,id=vm0,memdev=mem0,"
                                  "block-size=1M"))
    assert opts.warnings == [
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0,block-size=1M: warning: "
        "'block-size' property is smaller than the default block size (2 MiB)"]
    opts = parse_args(shlex.split(f"{BASE} -device virtio-mem-pci,id=vm0,memdev=mem0,"
                                  "requested-size=3G"))
    assert opts.config.devices[0].requested_size == 3 * GiB  # accepted, as QEMU does
    opts = parse_args(shlex.split(
        f"{BASE} -device virtio-mem-pci,id=vm0,memdev=mem0,node=0,requested-size=512M "
        "-qmp unix:/tmp/x.sock,server,nowait -monitor tcp:127.0.0.1:4444,server=on,wait=off "
        "-append modprobe.blacklist=virtio_mem -incoming 'exec:cat /tmp/vm.img' -S"))
    assert [(m.protocol, m.address) for m in opts.monitors] == [
        ("qmp", "unix:/tmp/x.sock"), ("hmp", "tcp:127.0.0.1:4444")]
    assert opts.config.cmdline == "modprobe.blacklist=virtio_mem"
    assert opts.incoming == "exec:cat /tmp/vm.img" and opts.start_paused
    cfg = opts.config
    assert (cfg.boot_ram, cfg.maxmem, cfg.devices[0].size) == (GiB, 4 * GiB, 2 * GiB)
    assert parse_args(["-m", "1024"]).config.boot_ram == 1024 * MiB


RFC_LINE = r"""--enable-kvm
      -m 4G,maxmem=20G
      -smp sockets=2,cores=2
      -numa node,nodeid=0,cpus=0-1 -numa node,nodeid=1,cpus=2-3
      -machine pc
      -kernel linux/arch/x86_64/boot/bzImage
      -nodefaults
      -chardev stdio,id=serial
      -device isa-serial,chardev=serial
      -append "console=ttyS0 rd.shell rd.luks=0 rd.lvm=0"
      -initrd /boot/initramfs-4.10.8-200.fc25.x86_64.img
      -chardev socket,id=monitor,path=/var/tmp/monitor,server,nowait
      -mon chardev=monitor,mode=readline
      -object memory-backend-ram,id=mem0,size=4G,max-size=8G
      -device virtio-mem-pci,id=reg0,memdev=mem0,node=0
      -object memory-backend-ram,id=mem1,size=3G,max-size=8G
      -device virtio-mem-pci,id=reg1,memdev=mem1,node=1"""


def test_rfc_command_line() -> None:
    """The RFC's command line says ``-machine pc``: x86 QEMU's rules. hw/i386/pc_piix.c: "qemu
    -M pc -m 4G (new default) -> 3072M low, 1024M high", so pc_memory_init puts the device
    area at ROUND_UP(4G + 1G, 1 GiB) = 0x140000000 -- the RFC's own addresses."""
    opts = parse_args(shlex.split(RFC_LINE))
    cfg = opts.config
    assert (cfg.boot_ram, cfg.maxmem, cfg.smp) == (4 * GiB, 20 * GiB, 4)
    assert [(n.node_id, n.cpus) for n in cfg.nodes] == [(0, [0, 1]), (1, [2, 3])]
    assert [(d.id, d.size, d.requested_size, d.node) for d in cfg.devices] == [
        ("reg0", 8 * GiB, 4 * GiB, 0), ("reg1", 8 * GiB, 3 * GiB, 1)]
    assert [(m.protocol, m.address) for m in opts.monitors] == [
        ("hmp", "unix:/var/tmp/monitor")]
    layout = cfg.layout()
    assert cfg.machine == "pc" and layout.machine.qemu_machine == "pc-i440fx-7.2"
    assert layout.device_area_base == 0x1_4000_0000
    assert [hex(d.addr) for d in layout.devices] == ["0x140000000", "0x340000000"]
    assert all("\n" not in note for note in opts.notes)
    ignored = " ".join(opts.notes)
    for option in ("--enable-kvm", "-kernel", "-nodefaults", "-initrd", "isa-serial"):
        assert option in ignored
    assert "-machine" not in ignored


OPTION_WORDS = ["-m", "-smp", "-numa", "-object", "-device", "-qmp", "-monitor", "-append",
                "-incoming", "-chardev", "-mon", "-S", "-machine", "--enable-kvm", "-overcommit"]
VALUE_WORDS = ["1G,maxmem=4G", "node,nodeid=0,cpus=0-1", "memory-backend-ram,id=mem0,size=2G",
               "virtio-mem-pci,id=vm0,memdev=mem0", "virtio-mem-pci,memdev=mem0,node=3",
               "unix:/tmp/x,server,nowait", "tcp:127.0.0.1:0,server,nowait", "stdio", "none",
               "socket,id=m,path=/tmp/m", "chardev=m", "mem-lock=on", "2", "sockets=2,cores=2",
               "memory-backend-ram,id=mem0,size=4G,max-size=8G", "exec:cat /x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(OPTION_WORDS), st.sampled_from(VALUE_WORDS),
                          st.text(max_size=20)), max_size=12))
def test_cmdline_fuzz(argv: list[str]) -> None:
    try:
        opts = parse_args(argv)
    except CmdlineError as err:
        assert str(err).startswith("vmemlab: ")
        return
    opts.config.layout()  # whatever parses also lays out


# ------------------------------------------------------------------ -machine: whose QEMU rules


def _fails(argv: str) -> CmdlineError:
    with pytest.raises(CmdlineError) as info:
        parse_args(shlex.split(argv))
    return info.value


def test_machine_selects_the_qemu_rules() -> None:
    """``-machine virt`` (the default), ``pc``/``q35`` or their versioned names; anything else
    is QEMU's vl.c error: "unsupported machine type" + "Use -machine help to list supported
    machines"."""
    assert parse_args(shlex.split(BASE)).config.machine == "virt"
    for value, name in (("q35", "q35"), ("pc", "pc"), ("type=pc-q35-7.2", "q35"),
                        ("pc-i440fx-7.2,accel=kvm", "pc"), ("virt-7.2", "virt")):
        opts = parse_args(shlex.split(f"-machine {value} {BASE}"))
        assert opts.config.machine == name, value
    err = _fails(f"-machine microvm {BASE}")
    assert str(err) == "vmemlab: -machine microvm: unsupported machine type"
    assert err.hint == "Use -machine help to list supported machines"
    assert "accel=kvm: ignored" in " ".join(
        parse_args(shlex.split(f"-M pc,accel=kvm {BASE}")).notes)


def test_unplugged_inaccessible_exists_only_on_x86() -> None:
    """hw/virtio/virtio-mem.c declares the property ``#if
    defined(VIRTIO_MEM_HAS_LEGACY_GUESTS)`` (x86 only): on arm QEMU refuses it like any unknown
    device property; on x86 "off" with a memdev lacking the shared zero page warns
    ("'%s' property set to 'off' with a memdev that does not support the shared zeropage.")."""
    dev = "-device virtio-mem-pci,id=vm0,memdev=mem0,unplugged-inaccessible=on"
    err = _fails(f"{BASE} {dev}")
    assert str(err) == (f"vmemlab: {dev.split()[0]} {dev.split()[1]}: "
                        "Property 'virtio-mem-pci.unplugged-inaccessible' not found")
    cfg = parse_args(shlex.split(f"-machine q35 {BASE} {dev}")).config
    assert cfg.layout().devices[0].unplugged_inaccessible is True
    memfd = ("-machine q35 -m 1G,maxmem=4G -object memory-backend-memfd,id=mem0,size=2G,share=on "
             "-device virtio-mem-pci,id=vm0,memdev=mem0")
    opts = parse_args(shlex.split(memfd))
    assert opts.config.layout().devices[0].unplugged_inaccessible is True  # auto -> on
    opts = parse_args(shlex.split(memfd + ",unplugged-inaccessible=off"))
    assert opts.warnings == [
        "vmemlab: -device virtio-mem-pci,id=vm0,memdev=mem0,unplugged-inaccessible=off: "
        "warning: 'unplugged-inaccessible' property set to 'off' with a memdev that does not "
        "support the shared zeropage."]


def test_dynamic_memslots_and_the_rfc_write_protection() -> None:
    """QEMU 8.2's ``dynamic-memslots`` ("'%s' property set to 'on' requires '%s' to be 'on'"
    on x86 7.2 machine types, where auto gives off) and the RFC's ``x-rfc-write-protect``."""
    dev = "-device virtio-mem-pci,id=vm0,memdev=mem0,dynamic-memslots=on"
    cfg = parse_args(shlex.split(f"{BASE} {dev},x-rfc-write-protect=on")).config
    assert cfg.devices[0].dynamic_memslots and cfg.devices[0].rfc_write_protect
    assert cfg.layout().devices[0].nb_memslots == 2  # 2G: 1 GiB memslots
    err = _fails(f"-machine pc {BASE} {dev}")
    assert err.message == ("'dynamic-memslots' property set to 'on' requires "
                           "'unplugged-inaccessible' to be 'on'")
    assert err.option is not None and err.option.endswith("dynamic-memslots=on")
    assert parse_args(shlex.split(f"-machine pc {BASE} {dev},unplugged-inaccessible=on"))
    assert _fails(f"{BASE} {dev[:-2]}maybe").message == \
        "Parameter 'dynamic-memslots' expects 'on' or 'off'"


def test_the_cpu_limit_is_the_machines() -> None:
    """hw/core/machine-smp.c with ``mc->max_cpus``: i440fx 255 in QEMU 7.2."""
    err = _fails(f"-smp 300 -machine pc {BASE}")
    assert err.message == ("Invalid SMP CPUs 300. The max CPUs supported by machine "
                           "'pc-i440fx-7.2' is 255")
    assert parse_args(shlex.split(f"-smp 300 {BASE}")).config.smp == 300  # virt: 512
