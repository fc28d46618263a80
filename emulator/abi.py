"""The machine/guest contract, mirrored from guest/include/abi.h (docs/abi.md explains it).

Both sides must agree byte for byte; tests/guest/test_abi_mirror.py parses the header and
checks every constant here against it, so a change on one side cannot go unnoticed.
"""

from __future__ import annotations

import struct

UART_BASE = 0x0900_0000
VIRTIO_MMIO_BASE = 0x0A00_0000
VIRTIO_MMIO_STRIDE = 0x200
RAM_BASE = 0x4000_0000
IMAGE_BASE = 0x4008_0000
PAGE_SIZE = 4096
PAGE_SHIFT = 12

MAX_DEVICES = 8
MAX_NODES = 8
CMDLINE_LEN = 256

GED_BASE = 0x0908_0000
GED_MEM_HOTPLUG_EVT = 0x1
MHP_BASE = 0x090A_0000
MHP_LEN = 24
MAX_DIMM_SLOTS = 256
DIMM_BLOCK_SIZE = 0x20_0000

BOOTINFO_MAGIC = 0x544F4F424D454D56  # "VMEMBOOT"
BOOTINFO_VERSION = 2

MODEL_NONE = 0
MODEL_XEN = 1
MODEL_HYPERV = 2
MODELS = {"": MODEL_NONE, "xen": MODEL_XEN, "hyperv": MODEL_HYPERV}

PSCI_SYSTEM_OFF = 0x84000008
PSCI_SYSTEM_RESET = 0x84000009
PSCI_SYSTEM_SUSPEND = 0xC400000E
VMEM_CALL_WAIT = 0xC6000000
VMEM_CALL_DONE = 0xC6000001
VMEM_CALL_STATUS = 0xC6000002
VMEM_CALL_TIME = 0xC6000003
VMEM_CALL_YIELD = 0xC6000004
VMEM_CALL_PVBALLOON = 0xC6000005
PVB_OP_TARGET = 0
PVB_OP_GIVE = 1
PVB_OP_TAKE = 2
SMCCC_NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1

EV_VIRTIO = 1 << 0
EV_COMMAND = 1 << 1
EV_TIMEOUT = 1 << 2
EV_ACPI = 1 << 3
EV_PVBALLOON = 1 << 4

STATUS_BOOTED = 1
STATUS_DRIVER = 2
STATUS_PANIC = 3
STATUS_FAULT = 4
STATUS_BALLOON = 5

DRIVER_STATES = {
    0: "probing",
    1: "idle",
    2: "plugging",
    3: "unplugging",
    4: "stopped-short",
    5: "broken",
    6: "failed",
    7: "disabled",
    8: "retrying",
    9: "no-memory",
    10: "no-space",
    11: "inflating",
    12: "deflating",
}
DRV_PROBING = 0
DRV_IDLE = 1
DRV_PLUGGING = 2
DRV_UNPLUGGING = 3
DRV_STOPPED_SHORT = 4
DRV_BROKEN = 5
DRV_FAILED = 6
DRV_DISABLED = 7
DRV_RETRYING = 8
DRV_NO_MEMORY = 9
DRV_NO_SPACE = 10
DRV_INFLATING = 11
DRV_DEFLATING = 12

CMD_ALLOC = 1
CMD_FREE = 2
CMD_TOUCH = 3
CMD_VERIFY = 4
CMD_DUMP = 5
CMD_ROGUE_WRITE = 6
CMD_READ = 7
CMD_STATS = 8
CMD_REBOOT = 9
CMD_POWEROFF = 10
CMD_ONLINE = 11
DUMP_LEGACY = 1
CMD_BALLOON_ROGUE = 12
CMD_GROW = 13  # "grow until it fails" (+ GROW_ASK_HOST: vmemlab's x-host-request queue)
CMD_SUSPEND = 14  # echo mem > /sys/power/state
GROW_ASK_HOST = 1

# online types (Linux's enum mmop, memhp_default_state=) and online policies
MMOP_OFFLINE = 0
MMOP_ONLINE = 1
MMOP_ONLINE_KERNEL = 2
MMOP_ONLINE_MOVABLE = 3
ONLINE_TYPES = {0: "offline", 1: "online", 2: "online_kernel", 3: "online_movable"}
POLICY_CONTIG_ZONES = 0
POLICY_AUTO_MOVABLE = 1
ONLINE_POLICIES = {0: "contig-zones", 1: "auto-movable"}

ALLOC_UNMOVABLE = 1
ALLOC_HUGE = 2  # prefers RAM_HUGE devices (vmemlab's experimental memory type)
TARGET_ANY = 0xFF
TARGET_BOOT = 0xFE
TARGET_DIMM = 0x1000  # + slot

EFAULT = 14
ENOMEM = 12
EINVAL = 22
ENOENT = 2
EBUSY = 16
ENODEV = 19
EPERM = 1

VIEW_MAGIC = 0x5745495643454D56  # "VMEMVIEW"
VIEW_VERSION = 3
MAX_ALLOCS = 1024

BLOCK_UNPLUGGED = 0
BLOCK_PLUGGED = 1
BLOCK_OFFLINING = 2

# zone of a device block's memory block (as `valid_zones`/sysfs would name it)
ZONE_NONE = 0
ZONE_OFFLINE = 1
ZONE_NORMAL = 2
ZONE_MOVABLE = 3
ZONE_NAMES = {0: "none", 1: "offline", 2: "Normal", 3: "Movable"}

# memory block states (Linux's enum virtio_mem_sbm_mb_state)
MB_UNUSED = 0
MB_PLUGGED = 1
MB_OFFLINE = 2
MB_OFFLINE_PARTIAL = 3
MB_KERNEL = 4
MB_KERNEL_PARTIAL = 5
MB_MOVABLE = 6
MB_MOVABLE_PARTIAL = 7
MB_STATES = {0: "unused", 1: "plugged", 2: "offline", 3: "offline-partial", 4: "kernel",
             5: "kernel-partial", 6: "movable", 7: "movable-partial"}

DIMM_NONE = 0
DIMM_ADDED = 1
DIMM_EJECTING = 2
DIMM_FAILED = 3
DIMM_STATES = {0: "none", 1: "added", 2: "ejecting", 3: "failed"}

PVB_ABSENT = 0
PVB_DISABLED = 1
PVB_IDLE = 2
PVB_WORKING = 3
PVB_SHORT = 4
PVB_STATES = {0: "absent", 1: "disabled", 2: "idle", 3: "working", 4: "short"}

# struct layouts (LP64, natural alignment: every struct here is a multiple of 8 bytes)
BOOTINFO_HEAD = struct.Struct("<QIIQQQQII")  # magic .. nr_virtio
BOOTINFO_NODE = struct.Struct("<QQQ")
BOOTINFO_VIRTIO = struct.Struct("<QQ")
BOOTINFO_HOTPLUG = struct.Struct("<QQQQII")  # mhp_base .. behaviour_model
BOOTINFO_SIZE = (
    BOOTINFO_HEAD.size
    + MAX_NODES * BOOTINFO_NODE.size
    + MAX_DEVICES * BOOTINFO_VIRTIO.size
    + CMDLINE_LEN
    + BOOTINFO_HOTPLUG.size
)

BLOCK_USAGE = struct.Struct("<IIIIII")  # movable, unmovable, free, state, kernel, zone
ALLOC_RECORD = struct.Struct("<IIQQQ")  # id, flags, pages, seed, target
DEVICE_VIEW = struct.Struct("<" + "Q" * 16 + "II" + "Q" * 9)
VIEW_HEAD = struct.Struct("<QII" + "Q" * 8 + "IIQ")
VIEW_V2_SIZE = VIEW_HEAD.size + MAX_DEVICES * DEVICE_VIEW.size
VIEW_V3_HEAD = struct.Struct("<II")  # nr_dimm_slots, pad
PVB_VIEW = struct.Struct("<QQQQQII")
DIMM_VIEW = struct.Struct("<QQQQQQQIIQQ")
VIEW_SIZE = VIEW_V2_SIZE + VIEW_V3_HEAD.size + PVB_VIEW.size + MAX_DIMM_SLOTS * DIMM_VIEW.size
PVB_VIEW_FIELDS = ("target", "ram_pages", "ballooned_pages", "gives", "takes", "state",
                       "model")
DIMM_VIEW_FIELDS = ("addr", "size", "usage_addr", "mb_states_addr", "nr_mbs", "first_mb_id",
                    "memmap_pages", "state", "last_ost", "attempts", "failures")

BALLOON_VIEW_MAGIC = 0x4E4F4F4C4C414256  # "VBALLOON"
BALLOON_VIEW = struct.Struct("<QQIIQQQ" + "Q" * MAX_DEVICES + "Q" * 12)
BALLOON_VIEW_FIELDS = (
    "magic", "mmio_base", "state", "features", "num_pages", "actual", "pages_boot",
    *(f"pages_dev{i}" for i in range(MAX_DEVICES)),
    "inflated", "deflated", "requests", "oom_deflated", "out_of_puff", "migrated", "reports",
    "reported_bytes", "rogue_pages", "stats_sent", "total_pages", "free_pages",
)

DEVICE_VIEW_FIELDS = (
    "mmio_base", "addr", "region_size", "block_size", "nb_blocks", "usage_addr",
    "memory_block_size", "memory_blocks_added", "plugged_size", "requested_size",
    "requests", "acks", "nacks", "busies", "errors", "migrated_pages",
    "state", "features",
    "subblock_size", "first_mb_id", "first_mb_block", "nr_mbs", "mb_states_addr",
    "offline_size", "offline_threshold", "memmap_pages", "linux_mb_size",
)
