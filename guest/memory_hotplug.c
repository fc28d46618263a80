/*
 * Memory hotplug core, scaled down from Linux's mm/memory_hotplug.c: adding a memory block
 * (allocating its memory map), removing it, onlining it to a zone, and the zone policy
 * (memhp_default_state=, memory_hotplug.online_policy=, memory_hotplug.auto_movable_ratio=).
 *
 * A memory block here is one of a device area's memory blocks (in Big Block Mode: a big block,
 * whose Linux memory blocks are always onlined alike). Its zone is kept in every one of its
 * device blocks' usage counters (ABI_ZONE_*), which is also what the host shows.
 */
#include "guest.h"

static u32 mb_zone(struct area *z, u64 m)
{
    return z->usage[z->mb_first + m * z->mb_blocks].zone;
}

static u64 mb_pages(struct area *z)
{
    return z->mb_blocks * z->block_pages;
}

/*
 * add_memory_driver_managed(): the memory map comes from existing ZONE_NORMAL memory; virtio-mem
 * never asks for MHP_MEMMAP_ON_MEMORY. The block is added offline, nothing of it usable yet.
 */
long mhp_add_memory(struct area *z, u64 m, u64 memmap_pages)
{
    u64 b0, b1;
    u16 *memmap = kalloc_memmap(memmap_pages);
    if (!memmap)
        return -ABI_ENOMEM;
    memset16(memmap, OWN_NA, mb_pages(z));
    z->owners[m] = memmap;
    mb_block_range(z, m, &b0, &b1);
    set_blocks_zone(z, b0, b1, ABI_ZONE_OFFLINE);
    return 0;
}

/* remove_memory() (after offlining): whatever the blocks held is gone, the memory map freed. */
void mhp_remove_memory(struct area *z, u64 m, u64 memmap_pages)
{
    u64 b0, b1;
    mb_block_range(z, m, &b0, &b1);
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        z->free_total -= u->free;
        z->free_zone[u->zone & 3] -= u->free;
        u->free = 0;
    }
    set_blocks_zone(z, b0, b1, ABI_ZONE_NONE);
    if (z->owners[m])
        kfree_memmap(z->owners[m], memmap_pages);
    z->owners[m] = NULL;
}

/* ---- the zone policy ---- */

struct span {
    u64 start, end; /* end == 0: the zone is empty */
};

static void span_add(struct span *s, u64 start, u64 end)
{
    if (!s->end || start < s->start)
        s->start = start;
    if (end > s->end)
        s->end = end;
}

static int span_intersects(const struct span *s, u64 start, u64 end)
{
    return s->end && start < s->end && s->start < end;
}

/*
 * default_zone_for_pfn() (memory_hotplug.online_policy=contig-zones): inherit the zone whose
 * span the block lies in if exactly one does, else the kernel zone (movable_node is off).
 * Spans are per node: ZONE_NORMAL starts with the node's boot RAM.
 */
static u32 default_zone(struct area *z, u64 m)
{
    struct span kernel = {0, 0}, movable = {0, 0};
    u64 start = block_addr(z, z->mb_first + m * z->mb_blocks);
    u64 end = start + mb_pages(z) * PAGE_SIZE;
    if (boot_node_pages(z->nid))
        span_add(&kernel, boot_area.base, boot_area.base + 1); /* boot RAM lies below */
    for (int i = 0; i < MAX_AREAS; i++) {
        struct area *a = area_of_dev(i);
        if (!a || a->nid != z->nid)
            continue;
        for (u64 k = 0; k < a->nmbs; k++) {
            u64 s = block_addr(a, a->mb_first + k * a->mb_blocks);
            u64 e = s + mb_pages(a) * PAGE_SIZE;
            if (mb_zone(a, k) == ABI_ZONE_NORMAL)
                span_add(&kernel, s, e);
            else if (mb_zone(a, k) == ABI_ZONE_MOVABLE)
                span_add(&movable, s, e);
        }
    }
    int in_kernel = span_intersects(&kernel, start, end);
    int in_movable = span_intersects(&movable, start, end);
    if (in_kernel ^ in_movable)
        return in_kernel ? ABI_ZONE_NORMAL : ABI_ZONE_MOVABLE;
    return ABI_ZONE_NORMAL;
}

/* present pages of a dynamic memory group (one device) per zone */
static void group_pages(struct area *a, u64 *movable, u64 *kernel)
{
    *movable = *kernel = 0;
    for (u64 k = 0; k < a->nmbs; k++) {
        if (mb_zone(a, k) == ABI_ZONE_MOVABLE)
            *movable += mb_pages(a);
        else if (mb_zone(a, k) == ABI_ZONE_NORMAL)
            *kernel += mb_pages(a);
    }
}

/* auto_movable_can_online_movable(): nid < 0 stands for NUMA_NO_NODE */
static int can_online_movable(int nid, struct area *group, u64 nr_pages)
{
    u64 ratio = opts.auto_movable_ratio;
    u64 kernel_early = boot_node_pages(nid), movable = 0, req = 0, others_movable = 0;
    u64 gm, gk;
    for (int i = 0; i < MAX_AREAS; i++) {
        struct area *a = area_of_dev(i);
        if (!a || (nid >= 0 && a->nid != nid))
            continue;
        group_pages(a, &gm, &gk);
        movable += gm; /* auto_movable_stats_account_zone(): ZONE_MOVABLE present pages */
        if (a == group)
            continue;
        /* auto_movable_stats_account_group(): what the other groups need */
        long pages = (long)(gm * 100 / ratio) - (long)gk;
        if (pages > 0)
            req += (u64)pages;
        others_movable += gm;
    }
    if (kernel_early <= req)
        return 0;
    kernel_early -= req;
    movable -= others_movable;
    group_pages(group, &gm, &gk);
    kernel_early += gk; /* kernel memory in a dynamic group allows for more movable in it */
    movable += nr_pages;
    return movable <= ratio * kernel_early / 100;
}

/* auto_movable_zone_for_pfn(): ZONE_MOVABLE while MOVABLE:KERNEL stays within the ratio */
static u32 auto_movable_zone(struct area *z)
{
    u64 nr_pages = mb_pages(z);
    if (!opts.auto_movable_ratio)
        return ABI_ZONE_NORMAL;
    if (!can_online_movable(-1, z, nr_pages))
        return ABI_ZONE_NORMAL;
    if (opts.auto_movable_numa_aware && !can_online_movable(z->nid, z, nr_pages))
        return ABI_ZONE_NORMAL;
    return ABI_ZONE_MOVABLE;
}

/* zone_for_pfn_range() */
static u32 zone_for(struct area *z, u64 m, u32 online_type)
{
    if (online_type == ABI_MMOP_ONLINE_KERNEL)
        return ABI_ZONE_NORMAL;
    if (online_type == ABI_MMOP_ONLINE_MOVABLE)
        return ABI_ZONE_MOVABLE;
    if (opts.online_policy == ABI_POLICY_AUTO_MOVABLE)
        return auto_movable_zone(z);
    return default_zone(z, m);
}

/* online_pages(): pick the zone, hand the plugged pages to the allocator. */
u32 mhp_online_memory(struct area *z, u64 m, u32 online_type)
{
    u64 b0, b1;
    u32 zone = zone_for(z, m, online_type);
    mb_block_range(z, m, &b0, &b1);
    set_blocks_zone(z, b0, b1, zone);
    online_blocks_pages(z, b0, b1);
    return zone;
}

/*
 * offline_pages() of one online memory block: isolate its pages and migrate the movable ones
 * away (-EBUSY: a page nothing can migrate, -ENOMEM: no room for them elsewhere), then the
 * block is offline: none of its pages is usable, its memory map stays until it is removed.
 */
long mhp_offline_memory(struct area *z, u64 m, u64 *migrated)
{
    u64 b0, b1;
    mb_block_range(z, m, &b0, &b1);
    long rc = isolate_and_migrate(z, b0, b1, migrated);
    if (rc)
        return rc;
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        u16 *o = blk_owner(z, b);
        z->free_total -= u->free;
        z->free_zone[u->zone & 3] -= u->free;
        u->free = 0;
        if (o)
            memset16(o, OWN_NA, z->block_pages);
        u->state = ABI_BLOCK_PLUGGED;
    }
    set_blocks_zone(z, b0, b1, ABI_ZONE_OFFLINE);
    return 0;
}
