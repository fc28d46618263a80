/*
 * The machine/guest contract of vmemlab (mirrored in emulator/abi.py; docs/abi.md explains it).
 *
 * This is the sandbox's "platform": where RAM and devices live, what the machine tells the guest
 * at boot (the role a device tree has on arm64), and the few paravirtual calls (SMC, SMCCC
 * numbering) the guest uses for things real hardware would do with a GIC, a timer or firmware.
 * Everything virtio-mem itself does goes through virtio-mmio registers and the virtqueue.
 */
#ifndef VMEMLAB_ABI_H
#define VMEMLAB_ABI_H

/* ---- guest-physical memory map (QEMU "virt"-like) ---- */
#define ABI_UART_BASE         0x09000000UL /* console: write a byte to offset 0 */
#define ABI_VIRTIO_MMIO_BASE  0x0a000000UL /* transport i at BASE + i * ABI_VIRTIO_MMIO_STRIDE */
#define ABI_VIRTIO_MMIO_STRIDE 0x200UL
#define ABI_RAM_BASE          0x40000000UL /* boot RAM; the boot-info page is its first page */
#define ABI_IMAGE_BASE        0x40080000UL /* the guest image is loaded and entered here */
#define ABI_PAGE_SIZE         4096UL

#define ABI_MAX_DEVICES 8
#define ABI_MAX_NODES   8
#define ABI_CMDLINE_LEN 256

/* ACPI memory hotplug, as on QEMU's arm "virt" machine (VIRT_ACPI_GED, VIRT_PCDIMM_ACPI) */
#define ABI_GED_BASE          0x09080000UL /* GED event selector: read returns and clears it */
#define ABI_GED_MEM_HOTPLUG_EVT 0x1UL
#define ABI_MHP_BASE          0x090a0000UL /* QEMU's 24-byte memory hotplug register block */
#define ABI_MHP_LEN           24
#define ABI_MAX_DIMM_SLOTS    256          /* ACPI_MAX_RAM_SLOTS */
#define ABI_DIMM_BLOCK_SIZE   0x200000UL   /* a DIMM's counter blocks: 2 MiB (pageblocks) */

/* ---- boot info: at ABI_RAM_BASE, its address is passed in x0 ---- */
#define ABI_BOOTINFO_MAGIC 0x544f4f424d454d56UL /* "VMEMBOOT" */
#define ABI_BOOTINFO_VERSION 2

struct abi_bootinfo_node {
    unsigned long node_id;
    unsigned long ram_base; /* boot RAM of this node */
    unsigned long ram_size;
};

struct abi_bootinfo_virtio {
    unsigned long mmio_base; /* virtio-mmio transport window */
    unsigned long node_id;   /* NUMA node the firmware (ACPI SRAT in real life) puts it on */
};

/* behaviour models (-machine x-behaviour-model=): the RFC's Q&A comparisons, not emulations */
#define ABI_MODEL_NONE   0
#define ABI_MODEL_XEN    1 /* RAM seen = maxmem; only part of it is given; a balloon gives the rest back */
#define ABI_MODEL_HYPERV 2 /* hot-added memory stays across reboots; a balloon gives memory back */

struct abi_bootinfo_hotplug { /* what ACPI (SRAT, the DSDT's memory hotplug device) tells Linux */
    unsigned long mhp_base;      /* memory hotplug registers (ABI_MHP_BASE) */
    unsigned long ged_base;      /* GED event selector (ABI_GED_BASE) */
    unsigned long area_base;     /* the device-memory area (SRAT's hotpluggable range) */
    unsigned long area_size;
    unsigned int nr_dimm_slots;  /* -m ...,slots=N (0: no memory hotplug) */
    unsigned int behaviour_model; /* ABI_MODEL_* */
};

struct abi_bootinfo {
    unsigned long magic;
    unsigned int version;
    unsigned int size;
    unsigned long ram_base;
    unsigned long ram_size;
    unsigned long image_end; /* first byte after the loaded image (guest computes bss itself) */
    unsigned long uart_base;
    unsigned int nr_nodes;
    unsigned int nr_virtio;
    struct abi_bootinfo_node nodes[ABI_MAX_NODES];
    struct abi_bootinfo_virtio virtio[ABI_MAX_DEVICES];
    char cmdline[ABI_CMDLINE_LEN]; /* e.g. "modprobe.blacklist=virtio_mem memory_block_size=128M" */
    struct abi_bootinfo_hotplug hotplug; /* version 2 */
};

/* ---- paravirtual calls: "smc #0", function id in x0, arguments x1..x5, results x0..x5 ---- */
#define PSCI_SYSTEM_OFF   0x84000008UL
#define PSCI_SYSTEM_RESET 0x84000009UL
#define PSCI_SYSTEM_SUSPEND 0xC400000EUL /* SMC64; returns 0 after the host's system_wakeup */

/* Vendor-specific hypervisor service range of SMCCC. */
#define VMEM_CALL_WAIT    0xC6000000UL /* x1 = timeout in us (0: none) -> x0 = ABI_EV_* bits;
                                          with ABI_EV_COMMAND: x1 = seq, x2 = cmd, x3..x5 = args */
#define VMEM_CALL_DONE    0xC6000001UL /* x1 = seq, x2 = status (0 or -errno), x3, x4 = values */
#define VMEM_CALL_STATUS  0xC6000002UL /* x1 = ABI_STATUS_*, x2..x5 = details */
#define VMEM_CALL_TIME    0xC6000003UL /* -> x0 = nanoseconds since this boot */
#define VMEM_CALL_YIELD   0xC6000004UL /* nothing; a safe point where the host may stop the vCPU.
                                          Long loops call it every few milliseconds of work */
#define VMEM_CALL_PVBALLOON 0xC6000005UL /* behaviour models' balloon (Xen, Hyper-V): x1 = ABI_PVB_OP_*,
                                          x2 = address, x3 = pages -> x0 = result */

#define ABI_PVB_OP_TARGET 0 /* -> x0 = bytes of RAM the host wants the guest to have; ~0: no model */
#define ABI_PVB_OP_GIVE   1 /* the guest gives pages [x2, x2 + x3 pages) back -> 0 or -errno */
#define ABI_PVB_OP_TAKE   2 /* the guest takes pages back (Xen: populate_physmap) -> 0 or -errno */

#define ABI_EV_VIRTIO  (1UL << 0) /* some virtio-mmio transport raised its interrupt line */
#define ABI_EV_COMMAND (1UL << 1) /* a workload command is handed over in x1..x5 */
#define ABI_EV_TIMEOUT (1UL << 2) /* the wait's timeout expired */
#define ABI_EV_ACPI    (1UL << 3) /* the ACPI GED interrupt (read the GED event selector) */
#define ABI_EV_PVBALLOON (1UL << 4) /* the behaviour models' balloon target changed */

#define ABI_STATUS_BOOTED  1 /* x2 = address of struct abi_guest_view, x3 = driver enabled */
#define ABI_STATUS_DRIVER  2 /* x2 = device index, x3 = ABI_DRV_*, x4 = detail (errno) */
#define ABI_STATUS_PANIC   3 /* x2 = ESR, x3 = FAR, x4 = ELR */
#define ABI_STATUS_FAULT   4 /* a fault the guest recovered from: x2 = ESR, x3 = FAR, x4 = ELR */
#define ABI_STATUS_BALLOON 5 /* the virtio-balloon driver bound: x2 = address of
                                struct abi_balloon_view */

#define ABI_DRV_PROBING      0
#define ABI_DRV_IDLE         1 /* plugged_size == requested_size */
#define ABI_DRV_PLUGGING     2
#define ABI_DRV_UNPLUGGING   3
#define ABI_DRV_STOPPED_SHORT 4 /* could not unplug enough: blocks still in use (the RFC's "vm-oom") */
#define ABI_DRV_BROKEN       5 /* the device answered ERROR or needs reset: driver stopped */
#define ABI_DRV_FAILED       6 /* probe failed (e.g. features) */
#define ABI_DRV_DISABLED     7 /* booted without the driver */
#define ABI_DRV_RETRYING     8 /* BUSY or nothing to do now: waiting for the retry timer */
#define ABI_DRV_NO_MEMORY    9 /* adding memory failed (-ENOMEM: no room for its memory map):
                                    waiting for the retry timer */
#define ABI_DRV_NO_SPACE    10 /* -ENOSPC: no more memory can be added (no usable memory block
                                  left, or the offline threshold is reached); no timer, resumes
                                  when memory gets onlined or the config changes */
#define ABI_DRV_INFLATING   11 /* virtio-balloon: giving pages to the host */
#define ABI_DRV_DEFLATING   12 /* virtio-balloon: taking pages back */

/* ---- workload commands (ABI_EV_COMMAND) ---- */
#define ABI_CMD_ALLOC    1 /* a0 = bytes, a1 = ABI_ALLOC_* | target << 8 (16 bits), a2 = seed -> v0 = id, v1 = pages */
#define ABI_CMD_FREE     2 /* a0 = id (0: all) -> v0 = pages freed */
#define ABI_CMD_TOUCH    3 /* a0 = id (0: all) -> v0 = pages written */
#define ABI_CMD_VERIFY   4 /* a0 = id (0: all) -> v0 = bad pages, v1 = pages checked */
#define ABI_CMD_DUMP     5 /* a0 = device index (~0: all), a1 = ABI_DUMP_* -> v0 = bytes read,
                             v1 = non-zero pages */
#define ABI_CMD_ROGUE_WRITE 6 /* a0 = address (0: first unplugged block of device a1) -> v0 = addr,
                                 v1 = the value read back after the store */
#define ABI_CMD_READ     7 /* a0 = address -> v0 = the 64-bit value read, v1 = address */
#define ABI_CMD_STATS    8 /* prints the allocator view on the console */
#define ABI_CMD_REBOOT   9 /* the guest reboots itself (PSCI SYSTEM_RESET) */
#define ABI_CMD_POWEROFF 10
#define ABI_CMD_ONLINE   11 /* a0 = device index (~0: all), a1 = ABI_MMOP_* -> v0 = memory blocks
                               onlined (echo online > /sys/devices/system/memory/memoryN/state) */
#define ABI_CMD_BALLOON_ROGUE 12 /* a0 = pages: write to that many pages the balloon holds, without
                                    telling the host (a rogue deflate) -> v0 = pages written,
                                    v1 = pages that did not read back what was written */
#define ABI_CMD_GROW     13 /* "grow until it fails": a0 = chunk bytes, a1 = limit bytes (0: none),
                               a2 = ABI_GROW_* -> v0 = bytes allocated, v1 = requests sent
                               | granted << 16 | denied << 32 (vmemlab's experimental
                               x-host-request queue; docs/extensions.md) */
#define ABI_CMD_SUSPEND  14 /* echo mem > /sys/power/state: the drivers freeze, PSCI
                               SYSTEM_SUSPEND, then resume; done after the wake-up, or -EPERM
                               when a driver refuses (virtio_mem without PERSISTENT_SUSPEND) */

#define ABI_GROW_ASK_HOST 1UL /* when an allocation fails, ask the host for memory first */

/* dump flags: the default is Linux >= 5.16's kdump (virtio_mem_vmcore_pfn_is_ram: a STATE
 * request per device block, only plugged blocks are read) */
#define ABI_DUMP_LEGACY 1 /* the RFC's / pre-5.16 kdump: read every page of the added memory */

/* online types (Linux's enum mmop; memhp_default_state=) */
#define ABI_MMOP_OFFLINE        0
#define ABI_MMOP_ONLINE         1
#define ABI_MMOP_ONLINE_KERNEL  2
#define ABI_MMOP_ONLINE_MOVABLE 3
/* memory_hotplug.online_policy= */
#define ABI_POLICY_CONTIG_ZONES 0
#define ABI_POLICY_AUTO_MOVABLE 1

#define ABI_ALLOC_UNMOVABLE 1UL
#define ABI_ALLOC_HUGE      2UL /* huge-page allocation: prefers RAM_HUGE devices (vmemlab's
                                   experimental memory type; docs/extensions.md) */
#define ABI_TARGET_ANY  0xffUL
#define ABI_TARGET_BOOT 0xfeUL /* else: a device index */
#define ABI_TARGET_DIMM 0x1000UL /* + slot: the memory of the DIMM in that slot (a1 bits 8..23) */

/* errno values the guest reports (Linux numbering) */
#define ABI_EFAULT 14
#define ABI_ENOMEM 12
#define ABI_EINVAL 22
#define ABI_ENOENT 2
#define ABI_EBUSY  16
#define ABI_ENODEV 19
#define ABI_EPERM  1

/* ---- what the guest exports for the host's "guest view" (read-only for the host) ---- */
#define ABI_VIEW_MAGIC 0x5745495643454d56UL /* "VMEMVIEW" */
#define ABI_VIEW_VERSION 3
#define ABI_MAX_ALLOCS 1024

/* Guest state of one device block. */
#define ABI_BLOCK_UNPLUGGED 0
#define ABI_BLOCK_PLUGGED   1
#define ABI_BLOCK_OFFLINING 2 /* isolated, being emptied before an UNPLUG request */

/* Zone of the memory block a device block belongs to. */
#define ABI_ZONE_NONE    0 /* not added to the guest's memory (no memmap) */
#define ABI_ZONE_OFFLINE 1 /* added, offline: no page of it is usable */
#define ABI_ZONE_NORMAL  2 /* online, ZONE_NORMAL: kernel and pinned data can land here */
#define ABI_ZONE_MOVABLE 3 /* online, ZONE_MOVABLE: movable data only */

/* State of a memory block (Linux's enum virtio_mem_sbm_mb_state; in Big Block Mode a "memory
 * block" is a big block and only UNUSED, PLUGGED, OFFLINE, KERNEL and MOVABLE occur). */
#define ABI_MB_UNUSED          0
#define ABI_MB_PLUGGED         1 /* plugged, not added (adding failed and so did unplugging) */
#define ABI_MB_OFFLINE         2
#define ABI_MB_OFFLINE_PARTIAL 3
#define ABI_MB_KERNEL          4
#define ABI_MB_KERNEL_PARTIAL  5
#define ABI_MB_MOVABLE         6
#define ABI_MB_MOVABLE_PARTIAL 7

struct abi_block_usage {        /* one per device block */
    unsigned int movable;       /* pages holding movable workload data */
    unsigned int unmovable;     /* pages nothing can migrate: pinned workload data + kernel */
    unsigned int free;          /* free pages (only while plugged and online) */
    unsigned int state;         /* ABI_BLOCK_* */
    unsigned int kernel;        /* of the unmovable pages: kernel data (memory maps) */
    unsigned int zone;          /* ABI_ZONE_* */
};

struct abi_alloc_record {
    unsigned int id;            /* 0: slot unused */
    unsigned int flags;         /* ABI_ALLOC_* */
    unsigned long pages;
    unsigned long seed;
    unsigned long target;
};

struct abi_device_view {
    unsigned long mmio_base;
    unsigned long addr;
    unsigned long region_size;
    unsigned long block_size;
    unsigned long nb_blocks;
    unsigned long usage_addr;     /* struct abi_block_usage[nb_blocks], 0 until probed */
    unsigned long memory_block_size; /* the guest's own "memory block" (Linux: 128 MiB) */
    unsigned long memory_blocks_added;
    unsigned long plugged_size;   /* as the driver believes it */
    unsigned long requested_size; /* as the driver last read it */
    unsigned long requests, acks, nacks, busies, errors;
    unsigned long migrated_pages; /* movable pages moved away to empty blocks */
    unsigned int state;           /* ABI_DRV_* */
    unsigned int features;        /* negotiated VIRTIO_MEM_F_* bits */
    unsigned long subblock_size;  /* SBM: max(device block, pageblock); BBM: the big block */
    unsigned long first_mb_id;    /* Linux id of the first memory block ("memory32" at 4 GiB) */
    unsigned long first_mb_block; /* device block where memory block 0 starts */
    unsigned long nr_mbs;         /* memory blocks wholly inside the region */
    unsigned long mb_states_addr; /* unsigned char[nr_mbs] of ABI_MB_* */
    unsigned long offline_size;   /* added but offline memory, bytes */
    unsigned long offline_threshold;
    unsigned long memmap_pages;   /* kernel pages holding the memory maps of added blocks */
    unsigned long linux_mb_size;  /* the guest's memory block (BBM: a big block spans several) */
};

/* A DIMM slot as the guest's ACPI memory hotplug driver sees it (drivers/acpi/acpi_memhotplug.c) */
#define ABI_DIMM_NONE     0 /* empty slot (or never seen) */
#define ABI_DIMM_ADDED    1 /* memory added, its memory blocks onlined per memhp_default_state */
#define ABI_DIMM_EJECTING 2 /* an eject request is being worked on (offlining, retrying) */
#define ABI_DIMM_FAILED   3 /* add_memory failed (e.g. not aligned to the memory block size) */

struct abi_dimm_view {
    unsigned long addr;
    unsigned long size;
    unsigned long usage_addr;     /* struct abi_block_usage[size / ABI_DIMM_BLOCK_SIZE], 0: none */
    unsigned long mb_states_addr; /* unsigned char[nr_mbs] of ABI_MB_* (offline, kernel, movable) */
    unsigned long nr_mbs;         /* memory blocks (128 MiB) of the DIMM */
    unsigned long first_mb_id;    /* Linux id of the first ("memory32" at 4 GiB) */
    unsigned long memmap_pages;   /* kernel pages of their memory maps (in ZONE_NORMAL elsewhere) */
    unsigned int state;           /* ABI_DIMM_* */
    unsigned int last_ost;        /* source << 16 | status of the last _OST the guest sent */
    unsigned long attempts;       /* rounds of offlining for eject requests */
    unsigned long failures;       /* eject requests answered "device busy" */
};

/* The behaviour models' balloon driver (guest/pv_balloon.c) */
#define ABI_PVB_ABSENT   0 /* no behaviour model on this machine */
#define ABI_PVB_DISABLED 1 /* booted without the balloon driver */
#define ABI_PVB_IDLE     2 /* RAM seen - ballooned == target */
#define ABI_PVB_WORKING  3
#define ABI_PVB_SHORT    4 /* could not inflate enough: no free pages */

struct abi_pvballoon_view {
    unsigned long target;          /* bytes the host asked for */
    unsigned long ram_pages;       /* pages of RAM the guest manages (boot RAM + added DIMMs) */
    unsigned long ballooned_pages; /* pages given back (never touched by the guest) */
    unsigned long gives, takes;    /* calls to the host */
    unsigned int state;            /* ABI_PVB_* */
    unsigned int model;            /* ABI_MODEL_* */
};

struct abi_guest_view {
    unsigned long magic;
    unsigned int version;
    unsigned int nr_devices;
    unsigned long boot_pages;     /* boot RAM pages the allocator manages */
    unsigned long boot_free;
    unsigned long boot_movable;
    unsigned long boot_unmovable;
    unsigned long boot_kernel;    /* memory maps and driver metadata ("struct pages") */
    unsigned long allocs_addr;    /* struct abi_alloc_record[ABI_MAX_ALLOCS] */
    unsigned long faults;         /* synchronous faults taken and recovered */
    unsigned long last_fault_addr;
    unsigned int online_type;     /* memhp_default_state= (ABI_MMOP_*) */
    unsigned int online_policy;   /* memory_hotplug.online_policy= (ABI_POLICY_*) */
    unsigned long auto_movable_ratio; /* memory_hotplug.auto_movable_ratio= (percent) */
    struct abi_device_view dev[ABI_MAX_DEVICES];
    /* version 3 */
    unsigned int nr_dimm_slots;
    unsigned int pad;
    struct abi_pvballoon_view pvballoon;
    struct abi_dimm_view dimm[ABI_MAX_DIMM_SLOTS];
};

/* ---- what the virtio-balloon driver exports (ABI_STATUS_BALLOON) ---- */
#define ABI_BALLOON_VIEW_MAGIC 0x4e4f4f4c4c414256UL /* "VBALLOON" */

struct abi_balloon_view {
    unsigned long magic;
    unsigned long mmio_base;
    unsigned int state;            /* ABI_DRV_* */
    unsigned int features;         /* negotiated VIRTIO_BALLOON_F_* bits */
    unsigned long num_pages;       /* the host's target, as the driver last read it */
    unsigned long actual;          /* 4 KiB pages in the balloon (Linux: vb->num_pages) */
    unsigned long pages_boot;      /* of those: in boot RAM */
    unsigned long pages_dev[ABI_MAX_DEVICES]; /* ... in each virtio-mem device's memory */
    unsigned long inflated, deflated;   /* pages told to the host since boot */
    unsigned long requests;        /* inflate + deflate requests sent */
    unsigned long oom_deflated;    /* pages taken back by the OOM notifier (DEFLATE_ON_OOM) */
    unsigned long out_of_puff;     /* inflations that found no free page ("Out of puff!") */
    unsigned long migrated;        /* balloon pages moved (balloon compaction) */
    unsigned long reports;         /* free page reporting requests */
    unsigned long reported_bytes;
    unsigned long rogue_pages;     /* balloon pages written to without telling the host */
    unsigned long stats_sent;      /* statistics buffers handed to the host */
    unsigned long total_pages;     /* MemTotal, in pages */
    unsigned long free_pages;      /* MemFree, in pages */
};

#endif
