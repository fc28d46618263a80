/*
 * Page allocator over boot RAM and plugged device memory (4 KiB pages), with Linux's zones.
 *
 * Every page has a u16 owner: OWN_FREE, OWN_NA (unplugged / offline / not present),
 * OWN_ISOLATED (being offlined), OWN_KERNEL (memory maps, metadata) or an allocation slot
 * 1..ABI_MAX_ALLOCS. The owner arrays are part of each memory block's memory map, which costs
 * 64 bytes per 4 KiB page like Linux's struct page: boot RAM's is carved out of boot RAM at
 * boot, a device memory block's is allocated when the block is added (kalloc_memmap), from
 * boot RAM or ZONE_NORMAL memory. Per-block counters (struct abi_block_usage; for boot RAM per
 * 2 MiB chunk) let the allocator skip full blocks and are what the host shows as the "guest
 * view".
 *
 * Zones follow Linux: boot RAM and device memory blocks onlined "online_kernel" are
 * ZONE_NORMAL, blocks onlined "online_movable" ZONE_MOVABLE. Movable allocations may use both
 * (ZONE_MOVABLE first, like GFP_HIGHUSER_MOVABLE's zonelist); unmovable ones (kernel data,
 * long-term pinned pages) only ZONE_NORMAL.
 */
#include "guest.h"

struct abi_guest_view guest_view;
struct abi_alloc_record allocs[ABI_MAX_ALLOCS];
struct area boot_area;
static u16 *boot_owner_ptr[1];
static struct area *dev_areas[MAX_AREAS]; /* virtio-mem devices, then DIMM slots */
static u64 next_alloc_id;
static u64 boot_reserved; /* boot RAM pages the memory map and metadata took at boot */
u64 pgfault_count;
static struct abi_bootinfo_node boot_nodes[ABI_MAX_NODES];
static u32 nr_boot_nodes;
static u64 boot_ram_pages; /* all of boot RAM, kernel image included */

#define BOOT_BLOCK_PAGES 512 /* 2 MiB counter chunks in boot RAM */
#define PATTERN_MUL 0x9E3779B97F4A7C15UL
#define ZMASK(zone) (1U << (zone))

/* ---- geometry helpers ---- */
u64 mb_of_block(struct area *z, u64 b)
{
    return (b - z->mb_first) / z->mb_blocks;
}

u16 *blk_owner(struct area *z, u64 b)
{
    if (b < z->mb_first)
        return NULL;
    u64 i = b - z->mb_first, m = i / z->mb_blocks;
    if (m >= z->nmbs)
        return NULL;
    u16 *o = z->owners[m];
    return o ? o + (i % z->mb_blocks) * z->block_pages : NULL;
}

void mb_block_range(struct area *z, u64 m, u64 *b0, u64 *b1)
{
    *b0 = z->mb_first + m * z->mb_blocks;
    *b1 = MIN(*b0 + z->mb_blocks, z->nblocks);
}

u64 block_addr(struct area *z, u64 b)
{
    return z->base + b * z->block_pages * PAGE_SIZE;
}

u64 block_valid_pages(struct area *z, u64 b)
{
    u64 first = b * z->block_pages;
    if (first >= z->npages)
        return 0;
    return MIN(z->block_pages, z->npages - first);
}

void mm_register_area(struct area *z)
{
    if (z->dev >= 0 && z->dev < MAX_AREAS)
        dev_areas[z->dev] = z;
}

void mm_unregister_area(struct area *z)
{
    if (z->dev >= 0 && z->dev < MAX_AREAS && dev_areas[z->dev] == z)
        dev_areas[z->dev] = NULL;
}

struct area *area_of_dev(int dev)
{
    return (dev >= 0 && dev < MAX_AREAS) ? dev_areas[dev] : NULL;
}

u64 boot_node_pages(int nid)
{
    u64 pages = 0;
    for (u32 i = 0; i < nr_boot_nodes; i++)
        if (nid < 0 || boot_nodes[i].node_id == (u64)nid)
            pages += boot_nodes[i].ram_size >> PAGE_SHIFT;
    return pages;
}

/* ---- accounting ---- */
enum { C_FREE, C_MOV, C_UNMOV, C_KERN, C_NA, C_BALLOON };

static int owner_cat(u16 o)
{
    if (o == OWN_FREE || o == OWN_ISOLATED)
        return C_FREE;
    if (o == OWN_NA)
        return C_NA;
    if (o == OWN_BALLOON)
        return C_BALLOON;
    if (o == OWN_PV_BALLOON)
        return C_UNMOV; /* nothing migrates a ballooned page (Xen's and Hyper-V's are not movable) */
    if (o == OWN_KERNEL || o > ABI_MAX_ALLOCS)
        return C_KERN;
    return (allocs[o - 1].flags & ABI_ALLOC_UNMOVABLE) ? C_UNMOV : C_MOV;
}

static void acct(struct area *z, u64 b, int c, long d)
{
    struct abi_block_usage *u = &z->usage[b];
    int boot = z->dev < 0;
    switch (c) {
    case C_FREE:
        u->free = (u32)((long)u->free + d);
        z->free_total = (u64)((long)z->free_total + d);
        z->free_zone[u->zone & 3] = (u64)((long)z->free_zone[u->zone & 3] + d);
        if (boot)
            guest_view.boot_free = (u64)((long)guest_view.boot_free + d);
        if (z->reported) { /* free page reporting: a taken page is no longer reported */
            if (d < 0)
                z->reported[b] = 0;
            else if (u->free == block_valid_pages(z, b))
                page_reporting_notify();
        }
        break;
    case C_BALLOON: /* movable (balloon compaction migrates it), counted by the balloon */
        u->movable = (u32)((long)u->movable + d);
        if (boot)
            balloon_view.pages_boot = (u64)((long)balloon_view.pages_boot + d);
        else if (z->dev >= 0 && z->dev < ABI_MAX_DEVICES)
            balloon_view.pages_dev[z->dev] = (u64)((long)balloon_view.pages_dev[z->dev] + d);
        break;
    case C_MOV:
        u->movable = (u32)((long)u->movable + d);
        if (boot)
            guest_view.boot_movable = (u64)((long)guest_view.boot_movable + d);
        break;
    case C_UNMOV:
        u->unmovable = (u32)((long)u->unmovable + d);
        if (boot)
            guest_view.boot_unmovable = (u64)((long)guest_view.boot_unmovable + d);
        break;
    case C_KERN:
        u->unmovable = (u32)((long)u->unmovable + d); /* nothing can migrate kernel data */
        u->kernel = (u32)((long)u->kernel + d);
        if (boot)
            guest_view.boot_kernel = (u64)((long)guest_view.boot_kernel + d);
        break;
    default:
        break;
    }
}

static void set_owner(struct area *z, u64 b, u16 *o, u16 v)
{
    acct(z, b, owner_cat(*o), -1);
    acct(z, b, owner_cat(v), 1);
    *o = v;
}

/* ---- zones of device blocks ---- */
void set_blocks_zone(struct area *z, u64 b0, u64 b1, u32 zone)
{
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        z->free_zone[u->zone & 3] -= u->free;
        z->free_zone[zone & 3] += u->free;
        u->zone = zone;
    }
}

/* Online the plugged device blocks of [b0, b1): their pages become free (generic_online_page
 * hands them to the buddy). Unplugged ones stay fake-offline (OWN_NA). */
void online_blocks_pages(struct area *z, u64 b0, u64 b1)
{
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        u16 *o = blk_owner(z, b);
        if (u->state != ABI_BLOCK_PLUGGED || !o || u->free || u->movable || u->unmovable)
            continue;
        memset16(o, OWN_FREE, z->block_pages);
        acct(z, b, C_FREE, (long)z->block_pages);
    }
}

/* ---- boot RAM ---- */
void mm_init(const struct abi_bootinfo *bi)
{
    struct area *z = &boot_area;
    u64 start = ALIGN_UP((u64)__end, PAGE_SIZE);
    if (bi->image_end > start)
        start = ALIGN_UP(bi->image_end, PAGE_SIZE);
    u64 end = ALIGN_DOWN(bi->ram_base + bi->ram_size, PAGE_SIZE);
    u64 npages = end > start ? (end - start) >> PAGE_SHIFT : 0;
    u64 nblocks = (npages + BOOT_BLOCK_PAGES - 1) / BOOT_BLOCK_PAGES;
    /* the memory map of all boot RAM (64 bytes per page); the owner array is part of it */
    u64 memmap_bytes = (bi->ram_size >> PAGE_SHIFT) * MEMMAP_BYTES_PER_PAGE;
    u64 owners_bytes = ALIGN_UP(MAX(nblocks * BOOT_BLOCK_PAGES * 2, memmap_bytes), 16);
    u64 usage_bytes = nblocks * sizeof(struct abi_block_usage);
    u64 meta = ALIGN_UP(owners_bytes + usage_bytes, PAGE_SIZE) >> PAGE_SHIFT;

    boot_ram_pages = bi->ram_size >> PAGE_SHIFT;
    nr_boot_nodes = MIN(bi->nr_nodes, ABI_MAX_NODES);
    for (u32 i = 0; i < nr_boot_nodes; i++)
        boot_nodes[i] = bi->nodes[i];
    if (!nr_boot_nodes) {
        nr_boot_nodes = 1;
        boot_nodes[0].node_id = 0;
        boot_nodes[0].ram_base = bi->ram_base;
        boot_nodes[0].ram_size = bi->ram_size;
    }
    z->present = 1;
    z->dev = -1;
    z->nid = -1;
    z->base = start;
    z->npages = npages;
    z->nblocks = nblocks;
    z->block_pages = BOOT_BLOCK_PAGES;
    z->mb_blocks = nblocks ? nblocks : 1;
    z->mb_first = 0;
    z->nmbs = 1;
    z->owners = boot_owner_ptr;
    z->mb_state = NULL;
    z->mb_plugged = NULL;
    guest_view.allocs_addr = (u64)allocs;
    next_alloc_id = 1;
    if (meta >= npages) {
        printk("Kernel panic - not syncing: boot RAM too small (%lu pages)\n", npages);
        z->npages = z->nblocks = 0;
        return;
    }
    boot_owner_ptr[0] = (u16 *)start;
    z->usage = (struct abi_block_usage *)(start + owners_bytes);
    u16 *own = boot_owner_ptr[0];
    memset16(own, OWN_KERNEL, meta);
    memset16(own + meta, OWN_FREE, npages - meta);
    memset16(own + npages, OWN_NA, nblocks * BOOT_BLOCK_PAGES - npages);
    for (u64 b = 0; b < nblocks; b++) {
        u64 first = b * BOOT_BLOCK_PAGES, valid = block_valid_pages(z, b);
        u64 kern = meta > first ? MIN(meta - first, valid) : 0;
        z->usage[b].movable = 0;
        z->usage[b].unmovable = (u32)kern;
        z->usage[b].kernel = (u32)kern;
        z->usage[b].free = (u32)(valid - kern);
        z->usage[b].state = ABI_BLOCK_PLUGGED;
        z->usage[b].zone = ABI_ZONE_NORMAL;
    }
    z->free_total = npages - meta;
    z->free_zone[ABI_ZONE_NORMAL] = npages - meta;
    guest_view.boot_pages = npages;
    guest_view.boot_free = npages - meta;
    guest_view.boot_kernel = meta;
    boot_reserved = meta;
}

/*
 * n contiguous free pages of zone `zone` in z, highest address first, marked OWN_KERNEL, or
 * NULL. (Kernel data from the top, workload data from the bottom: they meet late.)
 */
static void *run_alloc(struct area *z, u64 n, u32 zone)
{
    u64 run = 0;
    if (!n || !z->nblocks)
        return NULL;
    for (u64 b = z->nblocks; b-- > 0;) {
        struct abi_block_usage *u = &z->usage[b];
        u64 valid = block_valid_pages(z, b);
        u16 *o = blk_owner(z, b);
        if (!u->free || u->zone != zone || u->state != ABI_BLOCK_PLUGGED || !o) {
            run = 0;
            continue;
        }
        if (u->free == valid && valid == z->block_pages && run + valid < n) {
            run += valid;
            continue;
        }
        for (u64 p = z->block_pages; p-- > 0;) {
            if (p >= valid || o[p] != OWN_FREE) {
                run = 0;
                continue;
            }
            if (++run == n) {
                u64 first = b * z->block_pages + p;
                for (u64 i = 0; i < n; i++) {
                    u64 pg = first + i, bb = pg / z->block_pages;
                    set_owner(z, bb, blk_owner(z, bb) + pg % z->block_pages, OWN_KERNEL);
                }
                return (void *)(z->base + first * PAGE_SIZE);
            }
        }
    }
    return NULL;
}

static struct area *area_of_addr(u64 pa)
{
    struct area *z = &boot_area;
    if (pa >= z->base && pa < z->base + z->nblocks * z->block_pages * PAGE_SIZE)
        return z;
    for (int i = 0; i < MAX_AREAS; i++) {
        z = dev_areas[i];
        if (z && pa >= z->base && pa < z->base + z->nblocks * z->block_pages * PAGE_SIZE)
            return z;
    }
    return NULL;
}

static void run_free(void *ptr, u64 n)
{
    struct area *z = area_of_addr((u64)ptr);
    if (!z)
        return;
    u64 first = ((u64)ptr - z->base) >> PAGE_SHIFT;
    for (u64 i = 0; i < n; i++) {
        u64 pg = first + i, b = pg / z->block_pages;
        u16 *o = blk_owner(z, b);
        if (o)
            set_owner(z, b, o + pg % z->block_pages, OWN_FREE);
    }
}

/* Driver metadata: boot RAM, zeroed. */
void *kalloc_pages(u64 n)
{
    void *p = run_alloc(&boot_area, n, ABI_ZONE_NORMAL);
    if (p)
        memset(p, 0, n * PAGE_SIZE);
    return p;
}

void kfree_pages(void *ptr, u64 n)
{
    run_free(ptr, n);
}

/*
 * A memory block's memory map: GFP_KERNEL memory, i.e. ZONE_NORMAL only (boot RAM first, then
 * device memory onlined to ZONE_NORMAL), never ZONE_MOVABLE. Not zeroed: only the owner array
 * at its start is used (and initialized by the caller).
 */
void *kalloc_memmap(u64 n)
{
    void *p = run_alloc(&boot_area, n, ABI_ZONE_NORMAL);
    for (int i = 0; i < MAX_AREAS && !p; i++)
        if (dev_areas[i])
            p = run_alloc(dev_areas[i], n, ABI_ZONE_NORMAL);
    return p;
}

void kfree_memmap(void *ptr, u64 n)
{
    run_free(ptr, n);
}

/* ---- patterns ---- */
/* word i of every page of an allocation = seed ^ (i * PATTERN_MUL) */
static void fill_page(u64 pa, u64 seed)
{
    fill_page_asm((void *)pa, seed, PATTERN_MUL);
    cond_resched();
}

static int check_page(u64 pa, u64 seed)
{
    cond_resched();
    return (int)check_page_asm((const void *)pa, seed, PATTERN_MUL);
}

/* ---- where pages may go: (area, zone) pairs in preference order ---- */
struct pick {
    struct area *z;
    u32 zone;
};

#define MAX_PICKS (2 * MAX_AREAS + 2)

static int add_devs(struct pick *out, int n, u32 zone, int nid, int same_node, struct area *skip)
{
    for (int i = 0; i < MAX_AREAS; i++) {
        struct area *z = dev_areas[i];
        if (!z || z == skip)
            continue;
        if (nid >= 0 && (z->nid == nid) != same_node)
            continue;
        out[n].z = z;
        out[n++].zone = zone;
    }
    return n;
}

/* An allocation's target: a virtio-mem device index, or ABI_TARGET_DIMM + slot. */
static struct area *target_area(u64 target)
{
    if (target < ABI_MAX_DEVICES)
        return dev_areas[target];
    if (target >= ABI_TARGET_DIMM && target < ABI_TARGET_DIMM + ABI_MAX_DIMM_SLOTS)
        return dev_areas[DIMM_AREA(target - ABI_TARGET_DIMM)];
    return NULL;
}

/*
 * Movable allocations follow GFP_HIGHUSER_MOVABLE's zonelist (ZONE_MOVABLE, then ZONE_NORMAL);
 * unmovable ones GFP_KERNEL's (ZONE_NORMAL only). A target narrows where the pages start.
 */
/* drop repeated (area, zone) picks, keeping the first */
static int dedup(struct pick *out, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < m; j++)
            if (out[j].z == out[i].z && out[j].zone == out[i].zone)
                seen = 1;
        if (!seen)
            out[m++] = out[i];
    }
    return m;
}

/* devices whose memory type (vmemlab's experimental config field) is, or is not, RAM_HUGE */
static int add_typed(struct pick *out, int n, u32 zone, int huge)
{
    for (int i = 0; i < ABI_MAX_DEVICES; i++) {
        struct area *z = dev_areas[i];
        if (z && z->huge == huge) {
            out[n].z = z;
            out[n++].zone = zone;
        }
    }
    return n;
}

static int alloc_order(u64 target, int unmovable, int huge, struct pick *out)
{
    int n = 0;
    if (target == ABI_TARGET_ANY && huge && !unmovable) {
        /* a huge-page allocation prefers RAM_HUGE devices (the RFC addendum's idea) */
        n = add_typed(out, n, ABI_ZONE_MOVABLE, 1);
        n = add_typed(out, n, ABI_ZONE_NORMAL, 1);
        n = add_typed(out, n, ABI_ZONE_MOVABLE, 0);
        n = add_typed(out, n, ABI_ZONE_NORMAL, 0);
        n = add_devs(out, n, ABI_ZONE_MOVABLE, -1, 1, NULL); /* DIMMs */
        out[n].z = &boot_area;
        out[n++].zone = ABI_ZONE_NORMAL;
        return dedup(out, n);
    }
    if (target == ABI_TARGET_ANY) {
        if (unmovable) {
            out[n].z = &boot_area;
            out[n++].zone = ABI_ZONE_NORMAL;
            n = add_devs(out, n, ABI_ZONE_NORMAL, -1, 1, NULL);
        } else {
            n = add_devs(out, n, ABI_ZONE_MOVABLE, -1, 1, NULL);
            n = add_devs(out, n, ABI_ZONE_NORMAL, -1, 1, NULL);
            out[n].z = &boot_area;
            out[n++].zone = ABI_ZONE_NORMAL;
        }
    } else if (target == ABI_TARGET_BOOT) {
        out[n].z = &boot_area;
        out[n++].zone = ABI_ZONE_NORMAL;
    } else if (target_area(target)) {
        if (!unmovable) {
            out[n].z = target_area(target);
            out[n++].zone = ABI_ZONE_MOVABLE;
        }
        out[n].z = target_area(target);
        out[n++].zone = ABI_ZONE_NORMAL;
    }
    return n;
}

/*
 * Where a movable page goes when its block is emptied: alloc_contig_range() migrates with a
 * movable GFP mask, preferring the node of the range (ZONE_MOVABLE, ZONE_NORMAL, boot RAM),
 * then any other node. The allocation's own target does not matter any more.
 */
static int migrate_order(struct area *src, struct pick *out)
{
    int n = 0, nid = src->nid;
    n = add_devs(out, n, ABI_ZONE_MOVABLE, nid, 1, NULL);
    n = add_devs(out, n, ABI_ZONE_NORMAL, nid, 1, NULL);
    out[n].z = &boot_area;
    out[n++].zone = ABI_ZONE_NORMAL;
    if (nid >= 0) {
        n = add_devs(out, n, ABI_ZONE_MOVABLE, nid, 0, NULL);
        n = add_devs(out, n, ABI_ZONE_NORMAL, nid, 0, NULL);
    }
    return n;
}

static u64 picks_free(struct pick *p, int n)
{
    u64 sum = 0;
    for (int i = 0; i < n; i++)
        sum += p[i].z->free_zone[p[i].zone];
    return sum;
}

/* The first free page at or after page *p of block *b in `zone`, lowest address first. */
static u16 *next_free_page(struct area *z, u32 zone, u64 *b, u64 *p)
{
    for (; *b < z->nblocks; (*b)++, *p = 0) {
        struct abi_block_usage *u = &z->usage[*b];
        if (u->state != ABI_BLOCK_PLUGGED || !u->free || u->zone != zone)
            continue;
        u16 *o = blk_owner(z, *b);
        if (!o)
            continue;
        for (; *p < z->block_pages; (*p)++)
            if (o[*p] == OWN_FREE)
                return &o[*p];
    }
    return NULL;
}

static u64 pick_take(struct pick *pk, u64 want, u16 slot, u64 seed)
{
    u64 got = 0, b = 0, p = 0;
    u16 *o;
    while (got < want && (o = next_free_page(pk->z, pk->zone, &b, &p))) {
        set_owner(pk->z, b, o, slot);
        fill_page(block_addr(pk->z, b) + p * PAGE_SIZE, seed);
        got++;
    }
    return got;
}

/* ---- walking the pages of allocations ---- */
typedef void (*page_cb)(struct area *z, u64 b, u16 *o, u64 pa, void *ctx);

/* Visit every page owned by `slot` (0: by any allocation), lowest address first per area. */
static u64 walk_pages(u16 slot, page_cb cb, void *ctx)
{
    struct area *zs[MAX_AREAS + 1];
    int nz = 0;
    u64 found = 0;
    zs[nz++] = &boot_area;
    for (int i = 0; i < MAX_AREAS; i++)
        if (dev_areas[i])
            zs[nz++] = dev_areas[i];
    for (int i = 0; i < nz; i++) {
        struct area *z = zs[i];
        for (u64 b = 0; b < z->nblocks; b++) {
            struct abi_block_usage *u = &z->usage[b];
            if (u->state == ABI_BLOCK_UNPLUGGED || !(u->movable + u->unmovable - u->kernel))
                continue;
            u16 *o = blk_owner(z, b);
            if (!o)
                continue;
            u64 base = block_addr(z, b);
            for (u64 p = 0; p < z->block_pages; p++) {
                u16 v = o[p];
                if (v == 0 || v > ABI_MAX_ALLOCS || (slot && v != slot))
                    continue;
                cb(z, b, &o[p], base + p * PAGE_SIZE, ctx);
                found++;
            }
        }
    }
    return found;
}

static struct abi_alloc_record *find_alloc(u64 id)
{
    for (int i = 0; i < ABI_MAX_ALLOCS; i++)
        if (allocs[i].id && allocs[i].id == id)
            return &allocs[i];
    return NULL;
}

static u16 slot_of(struct abi_alloc_record *r)
{
    return (u16)(r - allocs + 1);
}

static u64 free_in_zone(u32 zone)
{
    u64 sum = boot_area.free_zone[zone];
    for (int i = 0; i < MAX_AREAS; i++)
        if (dev_areas[i])
            sum += dev_areas[i]->free_zone[zone];
    return sum;
}

/* Pages an allocation can get from `order`, plus (for a pin aimed at a device without
 * enough ZONE_NORMAL memory) from the ZONE_NORMAL picks it fills `out` with. */
static u64 alloc_avail(struct pick *order, int n, int unmovable, u64 target, u64 pages,
                       struct pick *out, int *nout)
{
    u64 avail = picks_free(order, n);
    *nout = 0;
    if (unmovable && target_area(target) && avail < pages) {
        struct area *dz = target_area(target);
        out[(*nout)].z = &boot_area;
        out[(*nout)++].zone = ABI_ZONE_NORMAL;
        *nout = add_devs(out, *nout, ABI_ZONE_NORMAL, -1, 1, dz);
        avail += MIN(pages - avail, MIN(dz->free_zone[ABI_ZONE_MOVABLE], picks_free(out, *nout)));
    }
    return avail;
}

/*
 * ALLOC. An unmovable allocation aimed at a device that has no (or too little) ZONE_NORMAL
 * memory is a long-term pin of pages that would first be faulted in there: Linux migrates
 * pages out of ZONE_MOVABLE before pinning them (FOLL_LONGTERM), so those end up in ZONE_NORMAL
 * elsewhere: boot RAM first, then other devices.
 */
long cmd_alloc(u64 bytes, u64 flags, u64 seed, u64 *v0, u64 *v1)
{
    u64 pages = (bytes + PAGE_SIZE - 1) / PAGE_SIZE;
    int unmovable = (flags & ABI_ALLOC_UNMOVABLE) != 0;
    u64 target = (flags >> 8) & 0xffff;
    struct pick order[MAX_PICKS], out[MAX_PICKS];
    struct abi_alloc_record *r = NULL;
    int nout = 0;

    if (!pages)
        return -ABI_EINVAL;
    int n = alloc_order(target, unmovable, (flags & ABI_ALLOC_HUGE) != 0, order);
    if (!n)
        return -ABI_ENODEV;
    for (int i = 0; i < ABI_MAX_ALLOCS; i++)
        if (!allocs[i].id) {
            r = &allocs[i];
            break;
        }
    if (!r)
        return -ABI_ENOMEM;
    u64 avail = alloc_avail(order, n, unmovable, target, pages, out, &nout);
    /* out_of_memory(): the OOM notifiers run first; virtio-balloon's (DEFLATE_ON_OOM) gives
     * back up to 256 pages a call, and the allocation is retried while that helps */
    while (avail < pages && balloon_oom_notify())
        avail = alloc_avail(order, n, unmovable, target, pages, out, &nout);
    if (avail < pages) {
        printk("alloc: 0x%lx bytes %s: page allocation failure (%lu pages free in ZONE_NORMAL, "
               "%lu in ZONE_MOVABLE)\n", bytes, unmovable ? "unmovable" : "movable",
               free_in_zone(ABI_ZONE_NORMAL), free_in_zone(ABI_ZONE_MOVABLE));
        return -ABI_ENOMEM;
    }
    r->flags = (u32)(flags & ABI_ALLOC_UNMOVABLE);
    r->pages = pages;
    r->seed = seed;
    r->target = target;
    r->id = (u32)next_alloc_id++;
    u16 slot = slot_of(r);
    u64 got = 0;
    for (int i = 0; i < n && got < pages; i++)
        got += pick_take(&order[i], pages - got, slot, seed);
    u64 direct = got;
    for (int i = 0; i < nout && got < pages; i++)
        got += pick_take(&out[i], pages - got, slot, seed);
    *v0 = r->id;
    *v1 = got;
    pgfault_count += got;
    if (got > direct)
        printk("alloc: id %u, %lu pages unmovable; %lu of them pinned outside ZONE_MOVABLE "
               "(long-term pins are migrated out of ZONE_MOVABLE first)\n", r->id, got,
               got - direct);
    else
        printk("alloc: id %u, %lu pages %s\n", r->id, got, unmovable ? "unmovable" : "movable");
    return 0;
}

static void free_cb(struct area *z, u64 b, u16 *o, u64 pa, void *ctx)
{
    (void)pa;
    (void)ctx;
    set_owner(z, b, o, OWN_FREE);
}

long cmd_free(u64 id, u64 *v0)
{
    if (id == 0) {
        *v0 = walk_pages(0, free_cb, NULL);
        memset(allocs, 0, sizeof(allocs));
        printk("free: all allocations, %lu pages\n", *v0);
        return 0;
    }
    struct abi_alloc_record *r = find_alloc(id);
    if (!r)
        return -ABI_ENOENT;
    *v0 = walk_pages(slot_of(r), free_cb, NULL);
    memset(r, 0, sizeof(*r));
    return 0;
}

static void touch_cb(struct area *z, u64 b, u16 *o, u64 pa, void *ctx)
{
    (void)z;
    (void)b;
    (void)ctx;
    fill_page(pa, allocs[*o - 1].seed);
}

long cmd_touch(u64 id, u64 *v0)
{
    u16 slot = 0;
    if (id) {
        struct abi_alloc_record *r = find_alloc(id);
        if (!r)
            return -ABI_ENOENT;
        slot = slot_of(r);
    }
    *v0 = walk_pages(slot, touch_cb, NULL);
    return 0;
}

struct verify_ctx {
    u64 bad;
    u64 *count; /* per slot */
};

static void verify_cb(struct area *z, u64 b, u16 *o, u64 pa, void *ctx)
{
    struct verify_ctx *v = ctx;
    (void)z;
    (void)b;
    v->count[*o - 1]++;
    if (!check_page(pa, allocs[*o - 1].seed))
        v->bad++;
}

static u64 verify_counts[ABI_MAX_ALLOCS];

long cmd_verify(u64 id, u64 *v0, u64 *v1)
{
    u16 slot = 0;
    if (id) {
        struct abi_alloc_record *r = find_alloc(id);
        if (!r)
            return -ABI_ENOENT;
        slot = slot_of(r);
    }
    memset(verify_counts, 0, sizeof(verify_counts));
    struct verify_ctx v = {0, verify_counts};
    u64 checked = walk_pages(slot, verify_cb, &v);
    u64 missing = 0;
    for (int i = 0; i < ABI_MAX_ALLOCS; i++) {
        if (!allocs[i].id || (slot && i != slot - 1))
            continue;
        u64 want = allocs[i].pages, have = verify_counts[i];
        if (have != want) {
            missing += have > want ? have - want : want - have;
            printk("verify: id %u has %lu pages, expected %lu\n", allocs[i].id, have, want);
        }
    }
    *v0 = v.bad + missing;
    *v1 = checked;
    if (*v0)
        printk("verify: %lu bad pages of %lu\n", *v0, checked);
    return 0;
}

/* ---- isolation and migration (alloc_contig_range, scaled down) ---- */
static int find_dest(struct pick *order, int n, struct pick **dp, u64 *db, u16 **dop, u64 *dpa)
{
    for (int i = 0; i < n; i++) {
        struct area *z = order[i].z;
        u32 zone = order[i].zone;
        u64 b = z->cursor[zone], p = 0;
        u16 *o = next_free_page(z, zone, &b, &p);
        if (o) {
            z->cursor[zone] = b;
            *dp = &order[i];
            *db = b;
            *dop = o;
            *dpa = block_addr(z, b) + p * PAGE_SIZE;
            return 0;
        }
        z->cursor[zone] = z->nblocks; /* nothing free here for the rest of this attempt */
    }
    return -ABI_ENOMEM;
}

void unisolate(struct area *z, u64 b0, u64 b1)
{
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        if (u->state != ABI_BLOCK_OFFLINING)
            continue;
        u16 *o = blk_owner(z, b);
        if (u->free == z->block_pages) {
            memset16(o, OWN_FREE, z->block_pages);
        } else {
            for (u64 p = 0; p < z->block_pages; p++)
                if (o[p] == OWN_ISOLATED)
                    o[p] = OWN_FREE;
        }
        u->state = ABI_BLOCK_PLUGGED;
    }
}

/*
 * The balloon's pages (guest/pv_balloon.c): inflate takes free pages, highest address first
 * (DIMM memory before boot RAM), without touching them, and hands each run to `give`;
 * deflate returns ballooned pages, lowest address first, after `take` got them back from the
 * host. Both stop when the host refuses (the callback returns non-zero). Page counts out.
 */
static struct area *areas_by_address(struct area **out)
{
    int n = 0;
    out[n++] = &boot_area;
    for (int i = 0; i < MAX_AREAS; i++)
        if (dev_areas[i] && dev_areas[i]->usage)
            out[n++] = dev_areas[i];
    for (int i = 1; i < n; i++) /* insertion sort by base: few areas */
        for (int j = i; j > 0 && out[j - 1]->base > out[j]->base; j--) {
            struct area *t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    out[n] = NULL;
    return out[0];
}

u64 mm_balloon_inflate(u64 want, long (*give)(u64 pa, u64 pages))
{
    static struct area *zs[MAX_AREAS + 2];
    u64 got = 0;
    int n = 0;
    areas_by_address(zs);
    while (zs[n])
        n++;
    for (int i = n - 1; i >= 0 && got < want; i--) {
        struct area *z = zs[i];
        for (u64 b = z->nblocks; b-- > 0 && got < want;) {
            struct abi_block_usage *u = &z->usage[b];
            u16 *o = blk_owner(z, b);
            if (!u->free || u->state != ABI_BLOCK_PLUGGED || !o)
                continue;
            u64 p = z->block_pages;
            while (p > 0 && got < want) {
                while (p > 0 && o[p - 1] != OWN_FREE)
                    p--;
                u64 end = p;
                while (p > 0 && o[p - 1] == OWN_FREE && got + (end - p) < want)
                    p--;
                if (end == p)
                    break;
                for (u64 q = p; q < end; q++)
                    set_owner(z, b, &o[q], OWN_PV_BALLOON);
                if (give(block_addr(z, b) + p * PAGE_SIZE, end - p)) {
                    for (u64 q = p; q < end; q++)
                        set_owner(z, b, &o[q], OWN_FREE);
                    return got;
                }
                got += end - p;
                cond_resched();
            }
        }
    }
    return got;
}

u64 mm_balloon_deflate(u64 want, long (*take)(u64 pa, u64 pages))
{
    static struct area *zs[MAX_AREAS + 2];
    u64 got = 0;
    areas_by_address(zs);
    for (int i = 0; zs[i] && got < want; i++) {
        struct area *z = zs[i];
        for (u64 b = 0; b < z->nblocks && got < want; b++) {
            struct abi_block_usage *u = &z->usage[b];
            u16 *o = blk_owner(z, b);
            if (!u->unmovable || !o)
                continue;
            u64 p = 0;
            while (p < z->block_pages && got < want) {
                while (p < z->block_pages && o[p] != OWN_PV_BALLOON)
                    p++;
                u64 start = p;
                while (p < z->block_pages && o[p] == OWN_PV_BALLOON && got + (p - start) < want)
                    p++;
                if (p == start)
                    break;
                if (take(block_addr(z, b) + start * PAGE_SIZE, p - start))
                    return got;
                for (u64 q = start; q < p; q++)
                    set_owner(z, b, &o[q], OWN_FREE);
                got += p - start;
                cond_resched();
            }
        }
    }
    return got;
}

/* pages of RAM the guest has online: all of boot RAM and online DIMM/device memory */
/* Pages of RAM present: all of boot RAM and every online block of every device area (what
 * the behaviour models' balloons count: the populated physmap, reserved pages included) */
u64 mm_present_pages(void)
{
    u64 pages = boot_ram_pages;
    for (int i = 0; i < MAX_AREAS; i++) {
        struct area *z = dev_areas[i];
        if (!z || !z->usage)
            continue;
        for (u64 b = 0; b < z->nblocks; b++)
            if (z->usage[b].zone == ABI_ZONE_NORMAL || z->usage[b].zone == ABI_ZONE_MOVABLE)
                pages += block_valid_pages(z, b);
    }
    return pages;
}

/* has_unmovable_pages(): the first page of [b0, b1) nothing can migrate (0: none) */
u64 first_unmovable_pfn(struct area *z, u64 b0, u64 b1)
{
    for (u64 b = b0; b < b1; b++) {
        if (!z->usage[b].unmovable)
            continue;
        u16 *o = blk_owner(z, b);
        for (u64 p = 0; o && p < z->block_pages; p++)
            if (owner_cat(o[p]) == C_UNMOV || owner_cat(o[p]) == C_KERN)
                return (block_addr(z, b) >> PAGE_SHIFT) + p;
    }
    return 0;
}

static void reset_cursors(void)
{
    for (int zone = 0; zone < 4; zone++) {
        boot_area.cursor[zone] = 0;
        for (int i = 0; i < MAX_AREAS; i++)
            if (dev_areas[i])
                dev_areas[i]->cursor[zone] = 0;
    }
}

/*
 * alloc_contig_range() on device blocks [b0, b1) of an online memory block: isolate them and
 * migrate their movable pages elsewhere. -EBUSY when a page cannot move (unmovable data or
 * kernel data: only possible in ZONE_NORMAL; start_isolate_page_range() finds it before
 * migrating anything), -ENOMEM when the pages find no room elsewhere (migrate_pages() bails out
 * with -ENOMEM). On success every page of them is OWN_ISOLATED and the blocks are OFFLINING; on
 * failure they are un-isolated again (pages migrated so far stay where they went, as in Linux).
 */
int isolate_and_migrate(struct area *z, u64 b0, u64 b1, u64 *migrated)
{
    u64 movable = 0, inside_free = 0;
    for (u64 b = b0; b < b1; b++) {
        if (z->usage[b].unmovable || z->usage[b].state != ABI_BLOCK_PLUGGED)
            return -ABI_EBUSY;
        movable += z->usage[b].movable;
        inside_free += z->usage[b].free;
    }
    struct pick order[MAX_PICKS];
    int n = migrate_order(z, order);
    u64 room = picks_free(order, n);
    u32 zone = z->usage[b0].zone;
    for (int i = 0; i < n; i++)
        if (order[i].z == z && order[i].zone == zone)
            room -= inside_free; /* the range's own free pages are no destination */
    if (movable > room)
        return -ABI_ENOMEM; /* fail fast: no pointless migrations */
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        u16 *o = blk_owner(z, b);
        u->state = ABI_BLOCK_OFFLINING;
        if (u->free == z->block_pages) {
            memset16(o, OWN_ISOLATED, z->block_pages);
        } else {
            for (u64 p = 0; p < z->block_pages; p++)
                if (o[p] == OWN_FREE)
                    o[p] = OWN_ISOLATED;
        }
    }
    reset_cursors();
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        if (!u->movable)
            continue;
        u16 *o = blk_owner(z, b);
        u64 base = block_addr(z, b);
        for (u64 p = 0; p < z->block_pages && u->movable; p++) {
            u16 v = o[p];
            if (v == 0 || (v > ABI_MAX_ALLOCS && v != OWN_BALLOON))
                continue;
            struct pick *dp;
            u64 db, dpa;
            u16 *dop;
            if (find_dest(order, n, &dp, &db, &dop, &dpa)) {
                balloon_migrate_flush();
                unisolate(z, b0, b1);
                return -ABI_ENOMEM;
            }
            if (v == OWN_BALLOON) /* balloon compaction: no contents to copy, tell the host */
                balloon_page_migrated(base + p * PAGE_SIZE, dpa);
            else
                copy_page((void *)dpa, (const void *)(base + p * PAGE_SIZE));
            cond_resched();
            set_owner(dp->z, db, dop, v);
            set_owner(z, b, &o[p], OWN_ISOLATED);
            (*migrated)++;
            if (z->dev >= 0 && z->dev < ABI_MAX_DEVICES)
                guest_view.dev[z->dev].migrated_pages++;
        }
    }
    balloon_migrate_flush();
    return 0;
}

/* ---- virtio-balloon's pages ---- */

/* The page's two list links (prev, next PFN), in its memory map after the owner array: the
 * balloon threads its pages through the memory map as Linux does through page->lru. */
u32 *page_links(u64 pa)
{
    struct area *z = area_of_addr(pa);
    if (!z)
        return NULL;
    u64 pg = (pa - z->base) >> PAGE_SHIFT, b = pg / z->block_pages;
    if (b < z->mb_first)
        return NULL;
    u64 m = mb_of_block(z, b);
    if (m >= z->nmbs || !z->owners[m])
        return NULL;
    u64 mb_pages = z->mb_blocks * z->block_pages;
    u64 index = (b - z->mb_first - m * z->mb_blocks) * z->block_pages + pg % z->block_pages;
    u32 *links = (u32 *)((u8 *)z->owners[m] + ALIGN_UP(mb_pages * 2, 8));
    return links + 2 * index;
}

/*
 * balloon_page_alloc(): GFP_HIGHUSER_MOVABLE | __GFP_NORETRY -- any zone a movable page may
 * live in, ZONE_MOVABLE first, every node, boot RAM included; never the OOM killer. Up to n
 * pages, their addresses in `pas`.
 */
u64 balloon_take_pages(u64 n, u64 *pas)
{
    struct pick order[MAX_PICKS];
    int np = alloc_order(ABI_TARGET_ANY, 0, 0, order);
    u64 got = 0;
    for (int i = 0; i < np && got < n; i++) {
        u64 b = 0, p = 0;
        u16 *o;
        while (got < n && (o = next_free_page(order[i].z, order[i].zone, &b, &p))) {
            set_owner(order[i].z, b, o, OWN_BALLOON);
            pas[got++] = block_addr(order[i].z, b) + p * PAGE_SIZE;
        }
    }
    return got;
}

void balloon_put_page(u64 pa)
{
    run_free((void *)pa, 1);
}

/* totalram_pages(): boot RAM the kernel did not reserve at boot, plus online device memory */
/* Linux's totalram_pages: every page the allocator manages (boot RAM but what the kernel
 * reserved; the online blocks of every device area, virtio-mem and DIMMs) */
u64 mm_managed_pages(void)
{
    u64 pages = guest_view.boot_pages - boot_reserved;
    for (int i = 0; i < MAX_AREAS; i++) {
        struct area *z = dev_areas[i];
        if (!z)
            continue;
        for (u64 b = 0; b < z->nblocks; b++)
            pages += z->usage[b].free + z->usage[b].movable + z->usage[b].unmovable;
    }
    return pages;
}

u64 mm_free_pages(void)
{
    u64 pages = boot_area.free_total;
    for (int i = 0; i < MAX_AREAS; i++)
        if (dev_areas[i])
            pages += dev_areas[i]->free_total;
    return pages;
}

/* ---- STATS ---- */
void mm_stats(void)
{
    u64 n = 0, mov = 0, unmov = 0;
    for (int i = 0; i < ABI_MAX_ALLOCS; i++) {
        if (!allocs[i].id)
            continue;
        n++;
        if (allocs[i].flags & ABI_ALLOC_UNMOVABLE)
            unmov += allocs[i].pages;
        else
            mov += allocs[i].pages;
    }
    printk("mm: boot RAM %lu pages: %lu free, %lu movable, %lu unmovable, %lu kernel\n",
           guest_view.boot_pages, guest_view.boot_free, guest_view.boot_movable,
           guest_view.boot_unmovable, guest_view.boot_kernel);
    for (int i = 0; i < MAX_AREAS; i++) {
        struct area *z = dev_areas[i];
        if (!z)
            continue;
        u64 m = 0, um = 0, k = 0, plugged = 0;
        for (u64 b = 0; b < z->nblocks; b++) {
            m += z->usage[b].movable;
            um += z->usage[b].unmovable - z->usage[b].kernel;
            k += z->usage[b].kernel;
            plugged += z->usage[b].state != ABI_BLOCK_UNPLUGGED;
        }
        printk("mm: %s%d %lu/%lu blocks plugged: %lu free (%lu Normal, %lu Movable), "
               "%lu movable, %lu unmovable, %lu kernel pages\n",
               i < ABI_MAX_DEVICES ? "virtio" : "dimm slot ",
               i < ABI_MAX_DEVICES ? i : i - ABI_MAX_DEVICES, plugged, z->nblocks,
               z->free_total, z->free_zone[ABI_ZONE_NORMAL], z->free_zone[ABI_ZONE_MOVABLE], m,
               um, k);
    }
    printk("mm: %lu allocations: %lu movable, %lu unmovable pages; %lu faults\n", n, mov, unmov,
           guest_view.faults);
}
