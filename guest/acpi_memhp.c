/*
 * ACPI memory hotplug: the guest side of DIMM hot(un)plug, after Linux 6.1's
 * drivers/acpi/acpi_memhotplug.c and the eject path of drivers/acpi/scan.c.
 *
 * QEMU's AML (MSCN, _OST, _EJ0) drives a 24-byte register block (ABI_MHP_BASE); here the
 * guest does what the AML interpreter would. A GED interrupt (ABI_EV_ACPI, event selector at
 * ABI_GED_BASE) starts a scan of every slot:
 *
 *  - insert (device check): add the DIMM's memory blocks (memory maps from ZONE_NORMAL),
 *    online them per memhp_default_state, _OST(1, 0) -- or _OST(1, 1) if add_memory failed;
 *  - eject request: _OST(3, 0x84 "ejection in progress"), then acpi_scan_try_to_offline():
 *    offline every memory block, in two passes; one block that cannot be offlined (a page
 *    nothing can migrate: ZONE_NORMAL) makes the whole DIMM stay: "Offline failed.", the
 *    blocks offlined so far are onlined again, _OST(3, 0x82 "device busy"). When every block
 *    is offline: remove the memory (free the memory maps), _EJ0 (QEMU unplugs the DIMM and
 *    emits DEVICE_DELETED), _OST(3, 0). Linux's offline_pages() loops for as long as the
 *    pages find no room (-ENOMEM, "page allocation failure"); here the eject stays in
 *    progress and is retried on a timer, with the range released between attempts (Linux
 *    keeps it isolated, which starves the rest of the guest).
 *
 * At boot the DIMMs already present are added without any _OST, as Linux's ACPI scan does.
 */
#include "guest.h"

#define MHP_ADDR_LO 0x00
#define MHP_ADDR_HI 0x04
#define MHP_SIZE_LO 0x08
#define MHP_SIZE_HI 0x0c
#define MHP_PXM 0x10
#define MHP_FLAGS 0x14
#define MHP_SEL 0x00
#define MHP_OST_EVENT 0x04
#define MHP_OST_STATUS 0x08
#define MHP_F_ENABLED 1
#define MHP_F_INSERTING 2
#define MHP_F_REMOVING 4
#define MHP_F_EJECT 8

#define OST_SRC_INSERT 1          /* ACPI_NOTIFY_DEVICE_CHECK */
#define OST_SRC_EJECT 3           /* ACPI_NOTIFY_EJECT_REQUEST */
#define OST_SUCCESS 0
#define OST_FAILURE 1             /* ACPI_OST_SC_NON_SPECIFIC_FAILURE */
#define OST_DEVICE_BUSY 0x82      /* ACPI_OST_SC_DEVICE_BUSY */
#define OST_EJECT_IN_PROGRESS 0x84 /* ACPI_OST_SC_EJECT_IN_PROGRESS */

struct dimm {
    int added;
    int ejecting;
    struct area z;
    u64 mbs;          /* memory block size */
    u64 memmap_pages; /* per memory block */
    u64 deadline_ns;  /* eject retry (offline_pages still looping), 0: none */
    u8 *put_online;   /* per memory block: offlined by this eject request (after mb_state) */
};

static struct dimm dimms[ABI_MAX_DIMM_SLOTS];
static u64 mhp_base, ged_base;
static u32 nr_slots;

#define dimm_info(slot, fmt, ...) printk("acpi PNP0C80:%02x: " fmt "\n", (slot), ##__VA_ARGS__)

static u32 mhp_rd(u64 off)
{
    return mmio_read32(mhp_base + off);
}

static void mhp_wr(u64 off, u32 v)
{
    mmio_write32(mhp_base + off, v);
}

/* QEMU's MOST method behind _OST: select the slot, store event and status */
static void ost(u32 slot, u32 source, u32 status)
{
    mhp_wr(MHP_SEL, slot);
    mhp_wr(MHP_OST_EVENT, source);
    mhp_wr(MHP_OST_STATUS, status);
    guest_view.dimm[slot].last_ost = source << 16 | status;
}

static struct abi_dimm_view *view(u32 slot)
{
    return &guest_view.dimm[slot];
}

/* ---- adding (acpi_memory_device_add -> acpi_memory_enable_device -> __add_memory) ---- */

static void free_meta(struct dimm *d)
{
    struct area *z = &d->z;
    if (z->usage)
        kfree_pages(z->usage, ALIGN_UP(z->nblocks * sizeof(*z->usage), PAGE_SIZE) >> PAGE_SHIFT);
    if (z->owners)
        kfree_pages(z->owners, ALIGN_UP(z->nmbs * sizeof(u16 *), PAGE_SIZE) >> PAGE_SHIFT);
    if (z->mb_state)
        kfree_pages(z->mb_state, ALIGN_UP(2 * z->nmbs, PAGE_SIZE) >> PAGE_SHIFT);
    z->usage = NULL;
    z->owners = NULL;
    z->mb_state = NULL;
    d->put_online = NULL;
}

static u8 mb_state_of_zone(u32 zone)
{
    if (zone == ABI_ZONE_MOVABLE)
        return ABI_MB_MOVABLE;
    if (zone == ABI_ZONE_NORMAL)
        return ABI_MB_KERNEL;
    return ABI_MB_OFFLINE;
}

static void online_mb(struct dimm *d, u64 m, u32 type)
{
    u32 zone = mhp_online_memory(&d->z, m, type);
    d->z.mb_state[m] = mb_state_of_zone(zone);
}

/* 0, or -errno: the memory is added (and onlined per memhp_default_state) */
static long dimm_add(u32 slot)
{
    struct dimm *d = &dimms[slot];
    struct area *z = &d->z;
    struct abi_dimm_view *v = view(slot);

    mhp_wr(MHP_SEL, slot);
    u64 addr = mhp_rd(MHP_ADDR_LO) | (u64)mhp_rd(MHP_ADDR_HI) << 32;
    u64 size = mhp_rd(MHP_SIZE_LO) | (u64)mhp_rd(MHP_SIZE_HI) << 32;
    u32 node = mhp_rd(MHP_PXM);
    d->mbs = MAX(opts.memory_block_size, ABI_DIMM_BLOCK_SIZE);
    v->addr = addr;
    v->size = size;
    /* check_hotplug_memory_range(): whole memory blocks only */
    if (!size || addr % d->mbs || size % d->mbs) {
        printk("Block size [0x%lx-0x%lx] not aligned\n", addr, addr + size - 1);
        dimm_info(slot, "add_memory failed");
        v->state = ABI_DIMM_FAILED;
        return -ABI_EINVAL;
    }
    memset(z, 0, sizeof(*z));
    z->present = 1;
    z->dev = DIMM_AREA(slot);
    z->nid = (int)node;
    z->base = addr;
    z->block_pages = ABI_DIMM_BLOCK_SIZE >> PAGE_SHIFT;
    z->nblocks = size / ABI_DIMM_BLOCK_SIZE;
    z->npages = size >> PAGE_SHIFT;
    z->mb_blocks = d->mbs / ABI_DIMM_BLOCK_SIZE;
    z->mb_first = 0;
    z->nmbs = size / d->mbs;
    z->usage = kalloc_pages(ALIGN_UP(z->nblocks * sizeof(*z->usage), PAGE_SIZE) >> PAGE_SHIFT);
    z->owners = kalloc_pages(ALIGN_UP(z->nmbs * sizeof(u16 *), PAGE_SIZE) >> PAGE_SHIFT);
    z->mb_state = kalloc_pages(ALIGN_UP(2 * z->nmbs, PAGE_SIZE) >> PAGE_SHIFT);
    if (!z->usage || !z->owners || !z->mb_state) {
        free_meta(d);
        dimm_info(slot, "add_memory failed");
        v->state = ABI_DIMM_FAILED;
        return -ABI_ENOMEM;
    }
    d->put_online = z->mb_state + z->nmbs;
    for (u64 b = 0; b < z->nblocks; b++)
        z->usage[b].state = ABI_BLOCK_PLUGGED;
    d->memmap_pages = ALIGN_UP(MAX(d->mbs / PAGE_SIZE * MEMMAP_BYTES_PER_PAGE,
                                   z->mb_blocks * z->block_pages * 2), PAGE_SIZE) >> PAGE_SHIFT;
    mm_register_area(z);
    for (u64 m = 0; m < z->nmbs; m++) {
        long rc = mhp_add_memory(z, m, d->memmap_pages);
        if (rc) {
            while (m-- > 0)
                mhp_remove_memory(z, m, d->memmap_pages);
            mm_unregister_area(z);
            free_meta(d);
            dimm_info(slot, "add_memory failed");
            v->state = ABI_DIMM_FAILED;
            return rc;
        }
        z->mb_state[m] = ABI_MB_OFFLINE;
    }
    v->memmap_pages = z->nmbs * d->memmap_pages;
    if (opts.online_type != ABI_MMOP_OFFLINE)
        for (u64 m = 0; m < z->nmbs; m++)
            online_mb(d, m, opts.online_type);
    d->added = 1;
    d->ejecting = 0;
    d->deadline_ns = 0;
    v->usage_addr = (u64)z->usage;
    v->mb_states_addr = (u64)z->mb_state;
    v->nr_mbs = z->nmbs;
    v->first_mb_id = addr / opts.memory_block_size;
    v->state = ABI_DIMM_ADDED;
    return 0;
}

/* ---- removing (acpi_scan_hot_remove) ---- */

static void remove_all(struct dimm *d)
{
    struct area *z = &d->z;
    for (u64 m = 0; m < z->nmbs; m++)
        mhp_remove_memory(z, m, d->memmap_pages);
    mm_unregister_area(z);
    free_meta(d);
    d->added = 0;
    d->ejecting = 0;
    d->deadline_ns = 0;
}

static int mb_is_online(u8 st)
{
    return st == ABI_MB_KERNEL || st == ABI_MB_MOVABLE;
}

/*
 * acpi_scan_try_to_offline(): two passes over the memory blocks (the first ignores errors);
 * 0 when all are offline, -EBUSY (the failing block in *bad), or -ENOMEM (offline_pages()
 * keeps looping: try again later). put_online[] marks blocks this eject request offlined.
 */
static long offline_all(u32 slot, u64 *bad)
{
    struct dimm *d = &dimms[slot];
    struct area *z = &d->z;
    long last = 0;
    for (int pass = 0; pass < 2; pass++) {
        last = 0;
        for (u64 m = 0; m < z->nmbs; m++) {
            if (!mb_is_online(z->mb_state[m]))
                continue;
            u64 migrated = 0;
            long rc = mhp_offline_memory(z, m, &migrated);
            if (!rc) {
                z->mb_state[m] = ABI_MB_OFFLINE;
                d->put_online[m] = 1;
                continue;
            }
            if (rc == -ABI_ENOMEM)
                return rc;
            u64 b0, b1;
            mb_block_range(z, m, &b0, &b1);
            u64 pfn = first_unmovable_pfn(z, b0, b1);
            if (pfn)
                printk("page:pfn:0x%lx\npage dumped because: unmovable page\n", pfn);
            *bad = m;
            last = rc;
            if (pass == 1)
                return rc;
        }
        if (!last)
            return 0;
    }
    return last;
}

/* acpi_bus_online() for the blocks this eject request offlined */
static void put_back_online(struct dimm *d)
{
    for (u64 m = 0; m < d->z.nmbs; m++) {
        if (!d->put_online[m])
            continue;
        d->put_online[m] = 0;
        if (d->z.mb_state[m] == ABI_MB_OFFLINE)
            online_mb(d, m, ABI_MMOP_ONLINE); /* memory_subsys_online(): MMOP_ONLINE */
    }
}

static void eject_work(u32 slot)
{
    struct dimm *d = &dimms[slot];
    struct abi_dimm_view *v = view(slot);
    u64 bad = 0;
    v->attempts++;
    long rc = offline_all(slot, &bad);
    if (rc == -ABI_ENOMEM) {
        printk("kworker/u4:0: page allocation failure: order:0, "
               "mode:0x144cca(GFP_HIGHUSER_MOVABLE|__GFP_RETRY_MAYFAIL|__GFP_COMP)\n");
        printk("Workqueue: kacpi_hotplug acpi_hotplug_work_fn\n");
        d->deadline_ns = now_ns() + opts.retry_ms * 1000000UL;
        return; /* still in progress: no _OST until it ends */
    }
    d->deadline_ns = 0;
    if (rc) {
        printk("memory memory%lu: Offline failed.\n", v->first_mb_id + bad);
        put_back_online(d);
        d->ejecting = 0;
        v->failures++;
        v->state = ABI_DIMM_ADDED;
        ost(slot, OST_SRC_EJECT, OST_DEVICE_BUSY);
        return;
    }
    for (u64 m = 0; m < d->z.nmbs; m++)
        d->put_online[m] = 0;
    remove_all(d); /* acpi_bus_trim(): acpi_memory_device_remove() */
    memset(v, 0, sizeof(*v));
    mhp_wr(MHP_SEL, slot); /* _EJ0 */
    mhp_wr(MHP_FLAGS, MHP_F_EJECT);
    ost(slot, OST_SRC_EJECT, OST_SUCCESS);
    v->state = ABI_DIMM_NONE;
}

/* ---- notifications (acpi_device_hotplug) ---- */

static void handle_insert(u32 slot)
{
    struct dimm *d = &dimms[slot];
    long rc = d->added ? 0 : dimm_add(slot);
    ost(slot, OST_SRC_INSERT, rc ? OST_FAILURE : OST_SUCCESS);
}

static void handle_eject_request(u32 slot)
{
    struct dimm *d = &dimms[slot];
    if (!d->added) { /* nothing of it is in use: eject at once */
        ost(slot, OST_SRC_EJECT, OST_EJECT_IN_PROGRESS);
        mhp_wr(MHP_SEL, slot);
        mhp_wr(MHP_FLAGS, MHP_F_EJECT);
        ost(slot, OST_SRC_EJECT, OST_SUCCESS);
        memset(view(slot), 0, sizeof(struct abi_dimm_view));
        return;
    }
    if (d->ejecting)
        return; /* one eject at a time: kacpi_hotplug is still at it */
    ost(slot, OST_SRC_EJECT, OST_EJECT_IN_PROGRESS);
    d->ejecting = 1;
    view(slot)->state = ABI_DIMM_EJECTING;
    eject_work(slot);
}

/* the GED interrupt: read (and clear) the event selector, then QEMU's MSCN over all slots */
void acpi_memhp_handle_irq(void)
{
    if (!nr_slots)
        return;
    u32 sel = mmio_read32(ged_base);
    if (!(sel & ABI_GED_MEM_HOTPLUG_EVT))
        return;
    for (u32 slot = 0; slot < nr_slots; slot++) {
        mhp_wr(MHP_SEL, slot);
        u32 flags = mhp_rd(MHP_FLAGS);
        if (flags & MHP_F_INSERTING) {
            mhp_wr(MHP_FLAGS, MHP_F_INSERTING);
            handle_insert(slot);
        } else if (flags & MHP_F_REMOVING) {
            mhp_wr(MHP_FLAGS, MHP_F_REMOVING);
            handle_eject_request(slot);
        }
    }
}

void acpi_memhp_run_timers(void)
{
    u64 now = 0;
    for (u32 slot = 0; slot < nr_slots; slot++) {
        struct dimm *d = &dimms[slot];
        if (!d->deadline_ns)
            continue;
        if (!now)
            now = now_ns();
        if (now >= d->deadline_ns)
            eject_work(slot);
    }
}

u64 acpi_memhp_next_deadline_ns(void)
{
    u64 best = 0;
    for (u32 slot = 0; slot < nr_slots; slot++)
        if (dimms[slot].deadline_ns && (!best || dimms[slot].deadline_ns < best))
            best = dimms[slot].deadline_ns;
    return best;
}

/* ---- boot ---- */
void acpi_memhp_init(const struct abi_bootinfo *bi)
{
    mhp_base = bi->hotplug.mhp_base;
    ged_base = bi->hotplug.ged_base;
    nr_slots = MIN(bi->hotplug.nr_dimm_slots, ABI_MAX_DIMM_SLOTS);
    if (!mhp_base || !ged_base)
        nr_slots = 0;
    if (opts.no_memhotplug && nr_slots) {
        printk("ACPI: memory hotplug disabled (acpi_no_memhotplug): DIMMs stay unused\n");
        nr_slots = 0;
    }
    guest_view.nr_dimm_slots = nr_slots;
    if (!nr_slots)
        return;
    printk("ACPI: memory hotplug: %u slots, hotpluggable range [mem 0x%lx-0x%lx]\n", nr_slots,
           bi->hotplug.area_base, bi->hotplug.area_base + bi->hotplug.area_size - 1);
    for (u32 slot = 0; slot < nr_slots; slot++) {
        mhp_wr(MHP_SEL, slot);
        if (mhp_rd(MHP_FLAGS) & MHP_F_ENABLED)
            dimm_add(slot); /* present at boot: no _OST, as Linux's ACPI scan */
    }
}

/* echo TYPE > /sys/devices/system/memory/memoryN/state for a DIMM's offline blocks */
long acpi_memhp_online(u64 slot, u64 type, u64 *v0)
{
    u64 n = 0;
    if (type > ABI_MMOP_ONLINE_MOVABLE || type == ABI_MMOP_OFFLINE)
        return -ABI_EINVAL;
    for (u32 s = 0; s < nr_slots; s++) {
        struct dimm *d = &dimms[s];
        if ((slot != ~0UL && slot != s) || !d->added || d->ejecting)
            continue;
        for (u64 m = 0; m < d->z.nmbs; m++)
            if (d->z.mb_state[m] == ABI_MB_OFFLINE) {
                online_mb(d, m, (u32)type);
                n++;
            }
    }
    if (slot != ~0UL && (slot >= nr_slots || !dimms[slot].added))
        return -ABI_ENODEV;
    *v0 = n;
    return 0;
}

void acpi_memhp_stats(void)
{
    for (u32 slot = 0; slot < nr_slots; slot++) {
        struct abi_dimm_view *v = view(slot);
        if (v->state == ABI_DIMM_NONE)
            continue;
        printk("acpi memory hotplug: slot %u: 0x%lx-0x%lx, %lu memory blocks, state %u, "
               "eject attempts %lu (%lu failed)\n", slot, v->addr, v->addr + v->size - 1,
               v->nr_mbs, v->state, v->attempts, v->failures);
    }
}
