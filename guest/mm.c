/*
 * Page allocator over boot RAM and plugged device memory (4 KiB pages).
 *
 * Every page has a u16 owner: OWN_FREE, OWN_NA (unplugged / not present), OWN_ISOLATED (being
 * offlined), OWN_KERNEL (metadata) or an allocation slot 1..ABI_MAX_ALLOCS. Owner arrays exist
 * per guest "memory block" (Linux's memmap): boot RAM has one, allocated out of boot RAM itself;
 * device memory gets one per memory block when the block is added. Per-block counters
 * (struct abi_block_usage; for boot RAM per 2 MiB chunk) let the allocator skip full blocks and
 * are what the host shows as the "guest view".
 */
#include "guest.h"

struct abi_guest_view guest_view;
struct abi_alloc_record allocs[ABI_MAX_ALLOCS];
struct zone boot_zone;
static u16 *boot_owner_ptr[1];
static struct zone *dev_zones[ABI_MAX_DEVICES];
static u64 next_alloc_id;

#define BOOT_BLOCK_PAGES 512 /* 2 MiB counter chunks in boot RAM */
#define PATTERN_MUL 0x9E3779B97F4A7C15UL

/* ---- geometry helpers ---- */
u64 mb_of_block(struct zone *z, u64 b)
{
    return (b + z->mb_off) / z->mb_blocks;
}

u16 *blk_owner(struct zone *z, u64 b)
{
    u64 i = b + z->mb_off;
    u16 *o = z->owners[i / z->mb_blocks];
    return o ? o + (i % z->mb_blocks) * z->block_pages : NULL;
}

void mb_block_range(struct zone *z, u64 m, u64 *b0, u64 *b1)
{
    u64 s = m * z->mb_blocks, e = (m + 1) * z->mb_blocks - z->mb_off;
    *b0 = s > z->mb_off ? s - z->mb_off : 0;
    *b1 = e < z->nblocks ? e : z->nblocks;
}

u64 block_addr(struct zone *z, u64 b)
{
    return z->base + b * z->block_pages * PAGE_SIZE;
}

u64 block_valid_pages(struct zone *z, u64 b)
{
    u64 first = b * z->block_pages;
    if (first >= z->npages)
        return 0;
    return MIN(z->block_pages, z->npages - first);
}

void mm_register_zone(struct zone *z)
{
    if (z->dev >= 0 && z->dev < ABI_MAX_DEVICES)
        dev_zones[z->dev] = z;
}

struct zone *zone_of_dev(int dev)
{
    return (dev >= 0 && dev < ABI_MAX_DEVICES) ? dev_zones[dev] : NULL;
}

/* ---- accounting ---- */
enum { C_FREE, C_MOV, C_UNMOV, C_KERN, C_NA };

static int owner_cat(u16 o)
{
    if (o == OWN_FREE || o == OWN_ISOLATED)
        return C_FREE;
    if (o == OWN_NA)
        return C_NA;
    if (o == OWN_KERNEL || o > ABI_MAX_ALLOCS)
        return C_KERN;
    return (allocs[o - 1].flags & ABI_ALLOC_UNMOVABLE) ? C_UNMOV : C_MOV;
}

static void acct(struct zone *z, u64 b, int c, long d)
{
    struct abi_block_usage *u = &z->usage[b];
    int boot = z->dev < 0;
    switch (c) {
    case C_FREE:
        u->free = (u32)((long)u->free + d);
        z->free_total = (u64)((long)z->free_total + d);
        if (boot)
            guest_view.boot_free = (u64)((long)guest_view.boot_free + d);
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
        if (boot)
            guest_view.boot_kernel = (u64)((long)guest_view.boot_kernel + d);
        break;
    default:
        break;
    }
}

static void set_owner(struct zone *z, u64 b, u16 *o, u16 v)
{
    acct(z, b, owner_cat(*o), -1);
    acct(z, b, owner_cat(v), 1);
    *o = v;
}

/* ---- boot RAM ---- */
void mm_init(const struct abi_bootinfo *bi)
{
    struct zone *z = &boot_zone;
    u64 start = ALIGN_UP((u64)__end, PAGE_SIZE);
    if (bi->image_end > start)
        start = ALIGN_UP(bi->image_end, PAGE_SIZE);
    u64 end = ALIGN_DOWN(bi->ram_base + bi->ram_size, PAGE_SIZE);
    u64 npages = end > start ? (end - start) >> PAGE_SHIFT : 0;
    u64 nblocks = (npages + BOOT_BLOCK_PAGES - 1) / BOOT_BLOCK_PAGES;
    u64 owners_bytes = ALIGN_UP(nblocks * BOOT_BLOCK_PAGES * 2, 16);
    u64 usage_bytes = nblocks * sizeof(struct abi_block_usage);
    u64 meta = ALIGN_UP(owners_bytes + usage_bytes, PAGE_SIZE) >> PAGE_SHIFT;

    z->present = 1;
    z->dev = -1;
    z->base = start;
    z->npages = npages;
    z->nblocks = nblocks;
    z->block_pages = BOOT_BLOCK_PAGES;
    z->mb_blocks = nblocks ? nblocks : 1;
    z->mb_off = 0;
    z->nmbs = 1;
    z->owners = boot_owner_ptr;
    z->mb_plugged = NULL;
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
        z->usage[b].unmovable = 0;
        z->usage[b].free = (u32)(valid - kern);
        z->usage[b].state = ABI_BLOCK_PLUGGED;
    }
    z->free_total = npages - meta;
    guest_view.boot_pages = npages;
    guest_view.boot_free = npages - meta;
    guest_view.boot_kernel = meta;
    guest_view.allocs_addr = (u64)allocs;
    next_alloc_id = 1;
}

/* Contiguous kernel pages from the top of boot RAM (memory maps, driver metadata). */
void *kalloc_pages_raw(u64 n)
{
    struct zone *z = &boot_zone;
    u64 run = 0;
    if (!n || !z->nblocks)
        return NULL;
    for (u64 b = z->nblocks; b-- > 0;) {
        struct abi_block_usage *u = &z->usage[b];
        u64 valid = block_valid_pages(z, b);
        if (!u->free) {
            run = 0;
            continue;
        }
        if (u->free == valid && valid == z->block_pages && run + valid < n) {
            run += valid;
            continue;
        }
        u16 *o = blk_owner(z, b);
        for (u64 p = z->block_pages; p-- > 0;) {
            if (o[p] != OWN_FREE) {
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

void *kalloc_pages(u64 n)
{
    void *p = kalloc_pages_raw(n);
    if (p)
        memset(p, 0, n * PAGE_SIZE);
    return p;
}

void kfree_pages(void *ptr, u64 n)
{
    struct zone *z = &boot_zone;
    u64 first = ((u64)ptr - z->base) >> PAGE_SHIFT;
    for (u64 i = 0; i < n; i++) {
        u64 pg = first + i, b = pg / z->block_pages;
        set_owner(z, b, blk_owner(z, b) + pg % z->block_pages, OWN_FREE);
    }
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

/* ---- zone order ---- */
static int zone_order(u64 target, int unmovable, struct zone **out)
{
    int n = 0;
    if (target == ABI_TARGET_ANY) {
        if (unmovable)
            out[n++] = &boot_zone;
        for (int i = 0; i < ABI_MAX_DEVICES; i++)
            if (dev_zones[i])
                out[n++] = dev_zones[i];
        if (!unmovable)
            out[n++] = &boot_zone;
    } else if (target == ABI_TARGET_BOOT) {
        out[n++] = &boot_zone;
    } else if (target < ABI_MAX_DEVICES && dev_zones[target]) {
        out[n++] = dev_zones[target];
    }
    return n;
}

/*
 * Where a movable page may go when its block is emptied. Like Linux's offline_pages(), which
 * migrates to any node with memory, the allocation's target only chose where it started: its own
 * device first, then device memory (lowest address first), then boot RAM.
 */
static int migrate_order(u64 target, struct zone **out)
{
    struct zone *any[ABI_MAX_DEVICES + 1];
    int n = 0, na = zone_order(ABI_TARGET_ANY, 0, any);
    struct zone *own = target < ABI_MAX_DEVICES ? dev_zones[target] : NULL;
    if (own)
        out[n++] = own;
    for (int i = 0; i < na; i++)
        if (any[i] != own)
            out[n++] = any[i];
    return n;
}

static u64 zone_avail(struct zone *z)
{
    return z->free_total; /* no block is isolated while commands run */
}

/* The first free page at or after page *p of block *b, lowest address first, or NULL. */
static u16 *next_free_page(struct zone *z, u64 *b, u64 *p)
{
    for (; *b < z->nblocks; (*b)++, *p = 0) {
        struct abi_block_usage *u = &z->usage[*b];
        if (u->state != ABI_BLOCK_PLUGGED || !u->free)
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

static u64 zone_take(struct zone *z, u64 want, u16 slot, u64 seed)
{
    u64 got = 0, b = 0, p = 0;
    u16 *o;
    while (got < want && (o = next_free_page(z, &b, &p))) {
        set_owner(z, b, o, slot);
        fill_page(block_addr(z, b) + p * PAGE_SIZE, seed);
        got++;
    }
    return got;
}

/* ---- walking the pages of allocations ---- */
typedef void (*page_cb)(struct zone *z, u64 b, u16 *o, u64 pa, void *ctx);

/* Visit every page owned by `slot` (0: by any allocation), lowest address first per zone. */
static u64 walk_pages(u16 slot, page_cb cb, void *ctx)
{
    struct zone *zs[ABI_MAX_DEVICES + 1];
    int nz = 0;
    u64 found = 0;
    zs[nz++] = &boot_zone;
    for (int i = 0; i < ABI_MAX_DEVICES; i++)
        if (dev_zones[i])
            zs[nz++] = dev_zones[i];
    for (int i = 0; i < nz; i++) {
        struct zone *z = zs[i];
        for (u64 b = 0; b < z->nblocks; b++) {
            struct abi_block_usage *u = &z->usage[b];
            if (u->state == ABI_BLOCK_UNPLUGGED || !(u->movable + u->unmovable))
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

long cmd_alloc(u64 bytes, u64 flags, u64 seed, u64 *v0, u64 *v1)
{
    u64 pages = (bytes + PAGE_SIZE - 1) / PAGE_SIZE;
    int unmovable = (flags & ABI_ALLOC_UNMOVABLE) != 0;
    u64 target = (flags >> 8) & 0xff;
    struct zone *order[ABI_MAX_DEVICES + 1];
    struct abi_alloc_record *r = NULL;

    if (!pages)
        return -ABI_EINVAL;
    int n = zone_order(target, unmovable, order);
    if (!n)
        return -ABI_ENODEV;
    for (int i = 0; i < ABI_MAX_ALLOCS; i++)
        if (!allocs[i].id) {
            r = &allocs[i];
            break;
        }
    if (!r)
        return -ABI_ENOMEM;
    u64 avail = 0;
    for (int i = 0; i < n; i++)
        avail += zone_avail(order[i]);
    if (avail < pages) {
        printk("alloc: 0x%lx bytes %s: out of memory (%lu pages free)\n", bytes,
               unmovable ? "unmovable" : "movable", avail);
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
        got += zone_take(order[i], pages - got, slot, seed);
    *v0 = r->id;
    *v1 = got;
    printk("alloc: id %u, %lu pages %s\n", r->id, got, unmovable ? "unmovable" : "movable");
    return 0;
}

static void free_cb(struct zone *z, u64 b, u16 *o, u64 pa, void *ctx)
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

static void touch_cb(struct zone *z, u64 b, u16 *o, u64 pa, void *ctx)
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

static void verify_cb(struct zone *z, u64 b, u16 *o, u64 pa, void *ctx)
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
static int find_dest(struct zone **order, int n, struct zone **dz, u64 *db, u16 **dop, u64 *dpa)
{
    for (int i = 0; i < n; i++) {
        struct zone *z = order[i];
        u64 b = z->cursor, p = 0;
        u16 *o = next_free_page(z, &b, &p);
        if (o) {
            z->cursor = b;
            *dz = z;
            *db = b;
            *dop = o;
            *dpa = block_addr(z, b) + p * PAGE_SIZE;
            return 0;
        }
        z->cursor = z->nblocks; /* nothing free here for the rest of this attempt */
    }
    return -ABI_ENOMEM;
}

void unisolate(struct zone *z, u64 b0, u64 b1)
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
 * Isolate device blocks [b0, b1) and migrate their movable pages elsewhere. On success every
 * page of them is OWN_ISOLATED and the blocks are OFFLINING; on failure (-EBUSY) they are
 * un-isolated again (pages migrated so far stay where they went, as in Linux).
 */
int isolate_and_migrate(struct zone *z, u64 b0, u64 b1, u64 *migrated)
{
    u64 movable = 0, inside_free = 0, free_elsewhere = boot_zone.free_total;
    for (u64 b = b0; b < b1; b++) {
        if (z->usage[b].unmovable || z->usage[b].state != ABI_BLOCK_PLUGGED)
            return -ABI_EBUSY;
        movable += z->usage[b].movable;
        inside_free += z->usage[b].free;
    }
    /* fail fast when the pages cannot fit anywhere else (no pointless migrations) */
    for (int i = 0; i < ABI_MAX_DEVICES; i++)
        if (dev_zones[i])
            free_elsewhere += dev_zones[i]->free_total;
    if (movable > free_elsewhere - inside_free)
        return -ABI_EBUSY;
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
    boot_zone.cursor = 0;
    for (int i = 0; i < ABI_MAX_DEVICES; i++)
        if (dev_zones[i])
            dev_zones[i]->cursor = 0;
    for (u64 b = b0; b < b1; b++) {
        struct abi_block_usage *u = &z->usage[b];
        if (!u->movable)
            continue;
        u16 *o = blk_owner(z, b);
        u64 base = block_addr(z, b);
        for (u64 p = 0; p < z->block_pages && u->movable; p++) {
            u16 v = o[p];
            if (v == 0 || v > ABI_MAX_ALLOCS)
                continue;
            struct abi_alloc_record *r = &allocs[v - 1];
            struct zone *order[ABI_MAX_DEVICES + 1], *dz;
            u64 db, dpa;
            u16 *dop;
            int n = migrate_order(r->target, order);
            if (find_dest(order, n, &dz, &db, &dop, &dpa)) {
                unisolate(z, b0, b1);
                return -ABI_EBUSY;
            }
            copy_page((void *)dpa, (const void *)(base + p * PAGE_SIZE));
            cond_resched();
            set_owner(dz, db, dop, v);
            set_owner(z, b, &o[p], OWN_ISOLATED);
            (*migrated)++;
            if (z->dev >= 0)
                guest_view.dev[z->dev].migrated_pages++;
        }
    }
    return 0;
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
    for (int i = 0; i < ABI_MAX_DEVICES; i++) {
        struct zone *z = dev_zones[i];
        if (!z)
            continue;
        u64 m = 0, um = 0, plugged = 0, off = 0;
        for (u64 b = 0; b < z->nblocks; b++) {
            m += z->usage[b].movable;
            um += z->usage[b].unmovable;
            plugged += z->usage[b].state != ABI_BLOCK_UNPLUGGED;
            off += z->usage[b].state == ABI_BLOCK_OFFLINING;
        }
        printk("mm: virtio%d %lu/%lu blocks plugged: %lu free, %lu movable, %lu unmovable pages\n",
               i, plugged, z->nblocks, z->free_total, m, um);
        (void)off;
    }
    printk("mm: %lu allocations: %lu movable, %lu unmovable pages; %lu faults\n", n, mov, unmov,
           guest_view.faults);
}
