/*
 * virtio-mmio (version 2) transport, split virtqueue and the virtio-mem driver, following
 * Linux 6.1's drivers/virtio/virtio_mem.c: Sub Block Mode (subblocks of max(device block,
 * pageblock) inside the guest's memory blocks) or Big Block Mode; plug fills partly plugged
 * memory blocks first, then adds new ones lowest first (plug before add); unplug goes by
 * memory block state (offline, ZONE_MOVABLE, kernel zones; partly plugged first) in reverse
 * address order; the offline threshold; and virtio_mem_run_wq()'s answer to every error.
 */
#include "guest.h"
#include "virtio_mmio.h"

#define VIRTIO_MEM_F_ACPI_PXM 0
#define VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE 1
#define VIRTIO_MEM_F_PERSISTENT_SUSPEND 2 /* virtio 1.4 drafts; Linux 6.10 */

/* config space (struct virtio_mem_config) */
#define C_BLOCK_SIZE 0
#define C_NODE_ID 8
#define C_ADDR 16
#define C_REGION_SIZE 24
#define C_USABLE_REGION_SIZE 32
#define C_PLUGGED_SIZE 40
#define C_REQUESTED_SIZE 48

#define REQ_PLUG 0
#define REQ_UNPLUG 1
#define REQ_UNPLUG_ALL 2
#define REQ_STATE 3
#define RESP_ACK 0
#define RESP_NACK 1
#define RESP_BUSY 2
#define RESP_ERROR 3
#define STATE_PLUGGED 0
#define STATE_UNPLUGGED 1

#define QSIZE 8

struct vmem_req { /* 24 bytes */
    u16 type;
    u16 padding[3];
    u64 addr;
    u16 nb_blocks;
    u16 padding2[3];
};

struct vmem_resp { /* 10 bytes */
    u16 type;
    u16 padding[3];
    u16 state;
};

struct vq_mem {
    struct vring_desc desc[QSIZE] __attribute__((aligned(16)));
    VRING_AVAIL(QSIZE) avail __attribute__((aligned(16)));
    VRING_USED(QSIZE) used __attribute__((aligned(16)));
    struct vmem_req req __attribute__((aligned(16)));
    struct vmem_resp resp __attribute__((aligned(16)));
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct vmem_req) == 24, "virtio_mem_req is 24 bytes");
_Static_assert(sizeof(struct vmem_resp) == 10, "virtio_mem_resp is 10 bytes");

struct vmem_dev {
    int idx;
    int present; /* a virtio-mem device answers at this transport */
    int enabled; /* the driver is bound to it */
    int broken;
    u64 mmio;
    u64 bi_node;
    struct abi_device_view *v;
    struct area z;
    u64 block_size, addr, region_size, usable, cfg_plugged, requested;
    u16 node_id;
    int nid;
    int bbm;          /* Big Block Mode */
    u64 mbs;          /* SBM: the Linux memory block; BBM: the big block */
    u64 sb_size;      /* SBM: the subblock; BBM: the big block */
    u64 sb_blocks;    /* device blocks per subblock */
    u64 sbs_per_mb;   /* subblocks per memory block (BBM: 1) */
    u64 first_mb_id;  /* Linux id of memory block 0 */
    u64 usable_mbs;   /* memory blocks [0, usable_mbs) lie wholly inside the usable region */
    u64 offline_size, offline_threshold;
    u64 memmap_pages; /* per memory block */
    u64 features;
    u16 qsize, avail_idx, last_used;
    struct vq_mem *vq;
    u64 retry_cur_ms, deadline_ns;
    int unplug_all_pending, adopt_pending, config_changed, wq_active, requeue;
    u64 short_reported, short_requested;
};

struct cmdline_opts opts;
static struct vmem_dev devs[ABI_MAX_DEVICES];
static struct vq_mem vqs[ABI_MAX_DEVICES];
static int nr_devs;

#define dev_info(d, fmt, ...) printk("virtio_mem virtio%d: " fmt "\n", (d)->idx, ##__VA_ARGS__)

static u32 rd(struct vmem_dev *d, u64 off)
{
    return mmio_read32(d->mmio + off);
}
static void wr(struct vmem_dev *d, u64 off, u32 v)
{
    mmio_write32(d->mmio + off, v);
}
static u64 cfg64(struct vmem_dev *d, u64 off)
{
    u64 lo = rd(d, VM_CONFIG + off), hi = rd(d, VM_CONFIG + off + 4);
    return lo | hi << 32;
}

static void read_config(struct vmem_dev *d)
{
    u32 gen;
    do {
        gen = rd(d, VM_CONFIG_GENERATION);
        d->block_size = cfg64(d, C_BLOCK_SIZE);
        d->node_id = mmio_read16(d->mmio + VM_CONFIG + C_NODE_ID);
        d->addr = cfg64(d, C_ADDR);
        d->region_size = cfg64(d, C_REGION_SIZE);
        d->usable = cfg64(d, C_USABLE_REGION_SIZE);
        d->cfg_plugged = cfg64(d, C_PLUGGED_SIZE);
        d->requested = cfg64(d, C_REQUESTED_SIZE);
    } while (gen != rd(d, VM_CONFIG_GENERATION));
    d->v->requested_size = d->requested;
}

static void set_state(struct vmem_dev *d, unsigned st, u64 detail)
{
    if (d->v->state == st)
        return;
    d->v->state = st;
    report(ABI_STATUS_DRIVER, (u64)d->idx, st, detail, 0);
}

static void mark_broken(struct vmem_dev *d, u64 err)
{
    d->broken = 1;
    d->deadline_ns = 0;
    set_state(d, ABI_DRV_BROKEN, err);
}

static void check_needs_reset(struct vmem_dev *d)
{
    if (!d->broken && (rd(d, VM_STATUS) & S_NEEDS_RESET)) {
        dev_info(d, "device needs reset, marking device broken");
        mark_broken(d, EIO);
    }
}

/* The config-change interrupt, as the driver sees it between two requests. */
static void poll_config_change(struct vmem_dev *d)
{
    u32 isr = rd(d, VM_INTERRUPT_STATUS);
    if (isr) {
        wr(d, VM_INTERRUPT_ACK, isr);
        if (isr & INT_CONFIG)
            d->config_changed = 1;
    }
}

/* ---- requests ---- */

/* Send one request and wait for its response: RESP_* or -EIO when the device is broken. */
static long vm_send(struct vmem_dev *d, u16 type, u64 addr, u64 nb, u16 *state)
{
    struct vq_mem *q = d->vq;
    if (d->broken)
        return -EIO;
    memset(&q->req, 0, sizeof(q->req));
    q->req.type = type;
    q->req.addr = addr;
    q->req.nb_blocks = (u16)nb;
    memset(&q->resp, 0, sizeof(q->resp));
    q->resp.type = 0xffff;
    vring_req_resp(q->desc, &q->req, sizeof(q->req), &q->resp, sizeof(q->resp));
    q->avail.ring[d->avail_idx % d->qsize] = 0;
    wmb();
    d->avail_idx++;
    *(volatile u16 *)&q->avail.idx = d->avail_idx;
    mb();
    d->v->requests++;
    wr(d, VM_QUEUE_NOTIFY, 0);
    while (*(volatile u16 *)&q->used.idx == d->last_used) {
        check_needs_reset(d);
        if (d->broken)
            return -EIO;
        guest_wait(0);
    }
    rmb();
    d->last_used++;
    poll_config_change(d);
    u16 t = *(volatile u16 *)&q->resp.type;
    switch (t) {
    case RESP_ACK:
        d->v->acks++;
        break;
    case RESP_NACK:
        d->v->nacks++;
        break;
    case RESP_BUSY:
        d->v->busies++;
        break;
    default:
        d->v->errors++;
        break;
    }
    if (state)
        *state = *(volatile u16 *)&q->resp.state;
    return t;
}

/* ---- geometry ---- */
static u64 sb_block(struct vmem_dev *d, u64 m, u64 sb)
{
    return d->z.mb_first + m * d->z.mb_blocks + sb * d->sb_blocks;
}

static u64 sb_addr(struct vmem_dev *d, u64 m, u64 sb)
{
    return block_addr(&d->z, sb_block(d, m, sb));
}

static int sb_plugged(struct vmem_dev *d, u64 m, u64 sb)
{
    return d->z.usage[sb_block(d, m, sb)].state != ABI_BLOCK_UNPLUGGED;
}

static int mb_all_plugged(struct vmem_dev *d, u64 m)
{
    return d->z.mb_plugged[m] == d->z.mb_blocks;
}

static int mb_all_unplugged(struct vmem_dev *d, u64 m)
{
    return d->z.mb_plugged[m] == 0;
}

static u8 mb_state(struct vmem_dev *d, u64 m)
{
    return d->z.mb_state[m];
}

static void set_mb_state(struct vmem_dev *d, u64 m, u8 st)
{
    d->z.mb_state[m] = st;
}

static int mb_online(u8 st)
{
    return st >= ABI_MB_KERNEL;
}

/* ---- plugged/unplugged bookkeeping ---- */
static void plug_done(struct vmem_dev *d, u64 s, u64 n)
{
    struct area *z = &d->z;
    for (u64 b = s; b < s + n; b++) {
        struct abi_block_usage *u = &z->usage[b];
        u16 *o = blk_owner(z, b);
        if (o)
            memset16(o, OWN_NA, z->block_pages); /* fake-offline until onlined */
        u->movable = u->unmovable = u->kernel = u->free = 0;
        u->state = ABI_BLOCK_PLUGGED;
    }
    if (s >= z->mb_first && mb_of_block(z, s) < z->nmbs)
        z->mb_plugged[mb_of_block(z, s)] += (u32)n;
    d->v->plugged_size += n * d->block_size;
}

static void unplug_done(struct vmem_dev *d, u64 s, u64 n)
{
    struct area *z = &d->z;
    for (u64 b = s; b < s + n; b++) {
        struct abi_block_usage *u = &z->usage[b];
        u16 *o = blk_owner(z, b);
        z->free_total -= u->free;
        z->free_zone[u->zone & 3] -= u->free;
        if (o && u->free)
            memset16(o, OWN_NA, z->block_pages);
        u->free = u->movable = u->unmovable = u->kernel = 0;
        u->state = ABI_BLOCK_UNPLUGGED;
    }
    if (s >= z->mb_first && mb_of_block(z, s) < z->nmbs)
        z->mb_plugged[mb_of_block(z, s)] -= (u32)n;
    d->v->plugged_size -= n * d->block_size;
}

/* virtio_mem_send_plug_request() */
static long send_plug(struct vmem_dev *d, u64 b0, u64 nb)
{
    poll_config_change(d);
    if (d->config_changed)
        return -EAGAIN;
    set_state(d, ABI_DRV_PLUGGING, 0);
    long resp = vm_send(d, REQ_PLUG, block_addr(&d->z, b0), nb, NULL);
    switch (resp) {
    case RESP_ACK:
        plug_done(d, b0, nb);
        return 0;
    case RESP_NACK:
        return -EAGAIN;
    case RESP_BUSY:
        return -ETXTBSY;
    case RESP_ERROR:
        return -ABI_EINVAL;
    default:
        return resp < 0 ? resp : -ABI_ENOMEM;
    }
}

/* virtio_mem_send_unplug_request(): a NACK is not expected, it ends as -ENOMEM */
static long send_unplug(struct vmem_dev *d, u64 b0, u64 nb)
{
    poll_config_change(d);
    if (d->config_changed)
        return -EAGAIN;
    set_state(d, ABI_DRV_UNPLUGGING, 0);
    long resp = vm_send(d, REQ_UNPLUG, block_addr(&d->z, b0), nb, NULL);
    switch (resp) {
    case RESP_ACK:
        unplug_done(d, b0, nb);
        return 0;
    case RESP_BUSY:
        return -ETXTBSY;
    case RESP_ERROR:
        return -ABI_EINVAL;
    default:
        return resp < 0 ? resp : -ABI_ENOMEM;
    }
}

static long plug_sb(struct vmem_dev *d, u64 m, u64 sb, u64 count)
{
    return send_plug(d, sb_block(d, m, sb), count * d->sb_blocks);
}

static long unplug_sb(struct vmem_dev *d, u64 m, u64 sb, u64 count)
{
    return send_unplug(d, sb_block(d, m, sb), count * d->sb_blocks);
}

/* ---- adding, onlining and removing memory blocks ---- */

/* virtio_mem_could_add_memory(): not too much added memory may stay offline */
static int could_add_memory(struct vmem_dev *d, u64 size)
{
    return d->offline_size + size <= d->offline_threshold;
}

static void online_mb(struct vmem_dev *d, u64 m, u32 type)
{
    u32 zone = mhp_online_memory(&d->z, m, type);
    u8 st = mb_state(d, m); /* OFFLINE or OFFLINE_PARTIAL */
    u8 base = zone == ABI_ZONE_MOVABLE ? ABI_MB_MOVABLE : ABI_MB_KERNEL;
    set_mb_state(d, m, (u8)(base + (st == ABI_MB_OFFLINE_PARTIAL)));
    d->offline_size -= d->mbs; /* MEM_ONLINE */
    d->v->offline_size = d->offline_size;
}

/* virtio_mem_add_memory(): add_memory_driver_managed(), then onlined per memhp_default_state */
static long add_mb(struct vmem_dev *d, u64 m)
{
    long rc = mhp_add_memory(&d->z, m, d->memmap_pages);
    if (rc) {
        dev_info(d, "adding memory failed: %ld", rc);
        return rc;
    }
    d->offline_size += d->mbs;
    d->v->offline_size = d->offline_size;
    d->v->memory_blocks_added++;
    d->v->memmap_pages += d->memmap_pages;
    if (opts.online_type != ABI_MMOP_OFFLINE)
        online_mb(d, m, opts.online_type);
    return 0;
}

/* (offline_and_)remove_memory(): the memory map is freed; retry at once, as Linux does */
static void remove_mb(struct vmem_dev *d, u64 m)
{
    if (!mb_online(mb_state(d, m)))
        d->offline_size -= d->mbs;
    d->v->offline_size = d->offline_size;
    mhp_remove_memory(&d->z, m, d->memmap_pages);
    d->v->memory_blocks_added--;
    d->v->memmap_pages -= d->memmap_pages;
    d->requeue = 1;
}

/* virtio_mem_fake_offline(): alloc_contig_range() on [b0, b0 + nb) */
static long fake_offline(struct vmem_dev *d, u64 b0, u64 nb, u64 *migrated)
{
    return isolate_and_migrate(&d->z, b0, b0 + nb, migrated);
}

/* ---- SBM: plug ---- */

/* virtio_mem_sbm_plug_and_add_mb(): plug first, so that onlining onlines the plugged part */
static long sbm_plug_and_add_mb(struct vmem_dev *d, u64 m, u64 *nb_sb)
{
    u64 count = MIN(*nb_sb, d->sbs_per_mb);
    long rc = plug_sb(d, m, 0, count);
    if (rc)
        return rc;
    set_mb_state(d, m, count == d->sbs_per_mb ? ABI_MB_OFFLINE : ABI_MB_OFFLINE_PARTIAL);
    rc = add_mb(d, m);
    if (rc) {
        u8 st = ABI_MB_UNUSED;
        if (unplug_sb(d, m, 0, count))
            st = ABI_MB_PLUGGED;
        set_mb_state(d, m, st);
        return rc;
    }
    *nb_sb -= count;
    return 0;
}

/* virtio_mem_sbm_plug_any_sb(): fill the holes of an added memory block, lowest first */
static long sbm_plug_any_sb(struct vmem_dev *d, u64 m, u64 *nb_sb)
{
    u8 old = mb_state(d, m);
    while (*nb_sb) {
        u64 sb = 0;
        while (sb < d->sbs_per_mb && sb_plugged(d, m, sb))
            sb++;
        if (sb >= d->sbs_per_mb)
            break;
        u64 count = 1;
        while (count < *nb_sb && sb + count < d->sbs_per_mb && !sb_plugged(d, m, sb + count))
            count++;
        long rc = plug_sb(d, m, sb, count);
        if (rc)
            return rc;
        *nb_sb -= count;
        if (old == ABI_MB_OFFLINE_PARTIAL)
            continue;
        /* fake-online the pages if the memory block is online */
        online_blocks_pages(&d->z, sb_block(d, m, sb), sb_block(d, m, sb + count));
    }
    if (mb_all_plugged(d, m))
        set_mb_state(d, m, (u8)(old - 1));
    return 0;
}

/* virtio_mem_sbm_plug_request() */
static long sbm_plug_request(struct vmem_dev *d, u64 diff)
{
    static const u8 partial[] = {ABI_MB_KERNEL_PARTIAL, ABI_MB_MOVABLE_PARTIAL,
                                 ABI_MB_OFFLINE_PARTIAL};
    u64 nb_sb = diff / d->sb_size;
    long rc;
    if (!nb_sb)
        return 0;
    for (u64 i = 0; i < ARRAY_SIZE(partial); i++)
        for (u64 m = 0; m < d->z.nmbs; m++) {
            if (mb_state(d, m) != partial[i])
                continue;
            rc = sbm_plug_any_sb(d, m, &nb_sb);
            if (rc || !nb_sb)
                return rc;
        }
    /* unused and new memory blocks, lowest first */
    for (u64 m = 0; m < d->usable_mbs; m++) {
        if (mb_state(d, m) != ABI_MB_UNUSED)
            continue;
        if (!could_add_memory(d, d->mbs))
            return -ENOSPC;
        rc = sbm_plug_and_add_mb(d, m, &nb_sb);
        if (rc || !nb_sb)
            return rc;
    }
    return -ENOSPC; /* virtio_mem_sbm_prepare_next_mb(): past the last usable memory block */
}

/* ---- SBM: unplug ---- */

/* virtio_mem_sbm_unplug_any_sb_raw(): highest first, neighbours in one request */
static long sbm_unplug_any_sb_raw(struct vmem_dev *d, u64 m, u64 *nb_sb)
{
    long sb = (long)d->sbs_per_mb - 1;
    while (*nb_sb) {
        while (sb >= 0 && !sb_plugged(d, m, (u64)sb))
            sb--;
        if (sb < 0)
            break;
        u64 count = 1;
        while (count < *nb_sb && sb > 0 && sb_plugged(d, m, (u64)sb - 1)) {
            count++;
            sb--;
        }
        long rc = unplug_sb(d, m, (u64)sb, count);
        if (rc)
            return rc;
        *nb_sb -= count;
        sb--;
    }
    return 0;
}

/* virtio_mem_sbm_unplug_any_sb_offline() */
static long sbm_unplug_any_sb_offline(struct vmem_dev *d, u64 m, u64 *nb_sb)
{
    u32 before = d->z.mb_plugged[m];
    long rc = sbm_unplug_any_sb_raw(d, m, nb_sb);
    if (d->z.mb_plugged[m] != before)
        dev_info(d, "unplugged %u blocks of offline memory block memory%lu",
                 before - d->z.mb_plugged[m], d->first_mb_id + m);
    if (!mb_all_plugged(d, m))
        set_mb_state(d, m, ABI_MB_OFFLINE_PARTIAL);
    if (rc)
        return rc;
    if (mb_all_unplugged(d, m)) {
        remove_mb(d, m);
        set_mb_state(d, m, ABI_MB_UNUSED);
    }
    return 0;
}

/* virtio_mem_sbm_unplug_sb_online() */
static long sbm_unplug_sb_online(struct vmem_dev *d, u64 m, u64 sb, u64 count, u64 *migrated)
{
    u64 b0 = sb_block(d, m, sb), nb = count * d->sb_blocks;
    u8 old = mb_state(d, m);
    long rc = fake_offline(d, b0, nb, migrated);
    if (rc)
        return rc;
    rc = unplug_sb(d, m, sb, count);
    if (rc) {
        unisolate(&d->z, b0, b0 + nb); /* return the memory to the buddy */
        return rc;
    }
    if (old == ABI_MB_KERNEL)
        set_mb_state(d, m, ABI_MB_KERNEL_PARTIAL);
    else if (old == ABI_MB_MOVABLE)
        set_mb_state(d, m, ABI_MB_MOVABLE_PARTIAL);
    return 0;
}

static void unplug_log(struct vmem_dev *d, u64 done, u64 lo, u64 hi, u64 requests, u64 migrated)
{
    if (!done)
        return;
    dev_info(d, "unplugged 0x%lx-0x%lx (%lu block%s, %lu request%s, %lu pages migrated)", lo,
             hi, done, done == 1 ? "" : "s", requests, requests == 1 ? "" : "s", migrated);
}

/* virtio_mem_sbm_unplug_any_sb_online(): whole block in one shot, else single subblocks */
static long sbm_unplug_any_sb_online(struct vmem_dev *d, u64 m, u64 *nb_sb)
{
    u64 migrated = 0, done = 0, requests = 0, lo = 0, hi = 0;
    long rc;
    if (*nb_sb >= d->sbs_per_mb && mb_all_plugged(d, m)) {
        rc = sbm_unplug_sb_online(d, m, 0, d->sbs_per_mb, &migrated);
        if (!rc) {
            *nb_sb -= d->sbs_per_mb;
            unplug_log(d, d->z.mb_blocks, sb_addr(d, m, 0), sb_addr(d, m, d->sbs_per_mb) - 1, 1,
                       migrated);
            goto unplugged;
        } else if (rc != -ABI_EBUSY) {
            return rc;
        }
    }
    for (long sb = (long)d->sbs_per_mb - 1; sb >= 0 && *nb_sb; sb--) {
        while (sb >= 0 && !sb_plugged(d, m, (u64)sb))
            sb--;
        if (sb < 0)
            break;
        rc = sbm_unplug_sb_online(d, m, (u64)sb, 1, &migrated);
        if (rc == -ABI_EBUSY)
            continue;
        if (rc) {
            unplug_log(d, done, lo, hi, requests, migrated);
            return rc;
        }
        *nb_sb -= 1;
        if (!done)
            hi = sb_addr(d, m, (u64)sb + 1) - 1;
        lo = sb_addr(d, m, (u64)sb);
        done += d->sb_blocks;
        requests++;
    }
    unplug_log(d, done, lo, hi, requests, migrated);
unplugged:
    if (mb_all_unplugged(d, m)) {
        remove_mb(d, m); /* offline_and_remove_memory() */
        set_mb_state(d, m, ABI_MB_UNUSED);
    }
    return 0;
}

/* virtio_mem_sbm_unplug_request(): partly plugged first, ZONE_MOVABLE before kernel zones */
static long sbm_unplug_request(struct vmem_dev *d, u64 diff)
{
    static const u8 order[] = {ABI_MB_OFFLINE_PARTIAL, ABI_MB_OFFLINE, ABI_MB_MOVABLE_PARTIAL,
                               ABI_MB_KERNEL_PARTIAL, ABI_MB_MOVABLE, ABI_MB_KERNEL};
    u64 nb_sb = diff / d->sb_size;
    if (!nb_sb)
        return 0;
    for (u64 i = 0; i < ARRAY_SIZE(order); i++) {
        for (u64 m = d->z.nmbs; m-- > 0;) {
            if (mb_state(d, m) != order[i])
                continue;
            long rc = mb_online(order[i]) ? sbm_unplug_any_sb_online(d, m, &nb_sb)
                                          : sbm_unplug_any_sb_offline(d, m, &nb_sb);
            if (rc || !nb_sb)
                return rc;
        }
        if (!opts.unplug_online && i == 1)
            return 0;
    }
    return nb_sb ? -ABI_EBUSY : 0;
}

/* ---- BBM ---- */

/* virtio_mem_bbm_plug_and_add_bb() */
static long bbm_plug_and_add_bb(struct vmem_dev *d, u64 m)
{
    long rc = plug_sb(d, m, 0, 1);
    if (rc)
        return rc;
    set_mb_state(d, m, ABI_MB_OFFLINE);
    rc = add_mb(d, m);
    if (rc) {
        set_mb_state(d, m, unplug_sb(d, m, 0, 1) ? ABI_MB_PLUGGED : ABI_MB_UNUSED);
        return rc;
    }
    return 0;
}

/* virtio_mem_bbm_plug_request() */
static long bbm_plug_request(struct vmem_dev *d, u64 diff)
{
    u64 nb_bb = diff / d->mbs;
    if (!nb_bb)
        return 0;
    for (u64 m = 0; m < d->usable_mbs; m++) {
        if (mb_state(d, m) != ABI_MB_UNUSED)
            continue;
        if (!could_add_memory(d, d->mbs))
            return -ENOSPC;
        long rc = bbm_plug_and_add_bb(d, m);
        if (!rc)
            nb_bb--;
        if (rc || !nb_bb)
            return rc;
    }
    return -ENOSPC;
}

/* virtio_mem_bbm_offline_remove_and_unplug_bb(): fake-offline, remove, then UNPLUG */
static long bbm_offline_remove_and_unplug_bb(struct vmem_dev *d, u64 m)
{
    u64 b0 = sb_block(d, m, 0), migrated = 0;
    if (mb_online(mb_state(d, m))) {
        long rc = fake_offline(d, b0, d->sb_blocks, &migrated);
        if (rc)
            return rc;
    }
    remove_mb(d, m);
    long rc = unplug_sb(d, m, 0, 1);
    set_mb_state(d, m, rc ? ABI_MB_PLUGGED : ABI_MB_UNUSED);
    if (!rc)
        dev_info(d, "unplugged 0x%lx-0x%lx (%lu block%s, 1 request, %lu pages migrated)",
                 sb_addr(d, m, 0), sb_addr(d, m, 1) - 1, d->sb_blocks,
                 d->sb_blocks == 1 ? "" : "s", migrated);
    return rc;
}

/* virtio_mem_bbm_unplug_request(): offline big blocks, then ZONE_MOVABLE ones, then any */
static long bbm_unplug_request(struct vmem_dev *d, u64 diff)
{
    u64 nb_bb = diff / d->mbs;
    if (!nb_bb)
        return 0;
    for (int pass = 0; pass < 3; pass++) {
        for (u64 m = d->z.nmbs; m-- > 0;) {
            u8 st = mb_state(d, m);
            if (st != ABI_MB_OFFLINE && !mb_online(st))
                continue;
            if (pass == 0 && st != ABI_MB_OFFLINE)
                continue;
            if (pass == 1 && st == ABI_MB_KERNEL)
                continue;
            long rc = bbm_offline_remove_and_unplug_bb(d, m);
            if (rc == -ABI_EBUSY)
                continue;
            if (!rc)
                nb_bb--;
            if (rc || !nb_bb)
                return rc;
        }
        if (pass == 0 && !opts.unplug_online)
            return 0;
    }
    return nb_bb ? -ABI_EBUSY : 0;
}

/* virtio_mem_cleanup_pending_mb(): blocks left plugged after adding them failed */
static long cleanup_pending(struct vmem_dev *d)
{
    for (u64 m = 0; m < d->z.nmbs; m++) {
        if (mb_state(d, m) != ABI_MB_PLUGGED)
            continue;
        u64 nb_sb = d->sbs_per_mb;
        long rc = sbm_unplug_any_sb_raw(d, m, &nb_sb);
        if (rc)
            return rc;
        set_mb_state(d, m, ABI_MB_UNUSED);
    }
    return 0;
}

/* ---- UNPLUG_ALL and the RFC's adopt ---- */
static long vm_unplug_all(struct vmem_dev *d)
{
    long resp = vm_send(d, REQ_UNPLUG_ALL, 0, 0, NULL);
    if (resp == RESP_ACK) {
        struct area *z = &d->z;
        for (u64 b = 0; b < z->nblocks; b++)
            if (z->usage[b].state != ABI_BLOCK_UNPLUGGED)
                unplug_done(d, b, 1);
        for (u64 m = 0; m < z->nmbs; m++) {
            if (z->owners[m])
                remove_mb(d, m);
            set_mb_state(d, m, ABI_MB_UNUSED);
        }
        d->v->plugged_size = 0;
        d->unplug_all_pending = 0;
        d->config_changed = 1; /* usable_region_size may have shrunk */
        dev_info(d, "unplugged all memory");
        return 0;
    }
    if (resp < 0)
        return resp;
    return resp == RESP_BUSY ? -ETXTBSY : -ABI_ENOMEM;
}

static long state_of(struct vmem_dev *d, u64 b0, u64 nb, u16 *st)
{
    *st = 0xffff;
    long resp = vm_send(d, REQ_STATE, block_addr(&d->z, b0), nb, st);
    if (resp != RESP_ACK)
        return resp < 0 ? resp : -ABI_EINVAL;
    return 0;
}

/*
 * virtio_mem.adopt=1, the 2017 RFC's reboot: the device kept the plugged memory (compacted
 * to the start of a shrunk area), and this guest keeps it too instead of UNPLUG_ALL. The spec
 * lets a driver re-initialize with STATE requests: one per memory block, per subblock where a
 * memory block is mixed (and per device block where a subblock is: those are unplugged, a
 * subblock is the driver's unit). The RFC's area may end inside a memory block: every memory
 * block that starts inside the usable region is asked about. Adopted memory blocks are added
 * and onlined as usual.
 */
static long vm_adopt(struct vmem_dev *d)
{
    u64 ublocks = MIN(d->usable / d->block_size, d->z.nblocks), adopted = 0;
    long rc;
    for (u64 m = 0; m < d->z.nmbs && sb_block(d, m, 0) < ublocks; m++) {
        u16 st;
        u64 count = 0, b0 = sb_block(d, m, 0);
        if ((rc = state_of(d, b0, MIN(d->z.mb_blocks, ublocks - b0), &st)))
            return rc;
        if (st == STATE_UNPLUGGED)
            continue;
        for (u64 sb = 0; sb < d->sbs_per_mb && sb_block(d, m, sb) < ublocks; sb++) {
            u64 s0 = sb_block(d, m, sb), n = MIN(d->sb_blocks, ublocks - s0);
            u16 one = STATE_PLUGGED;
            if ((st != STATE_PLUGGED || n < d->sb_blocks) && (rc = state_of(d, s0, n, &one)))
                return rc;
            if (one == STATE_PLUGGED && n == d->sb_blocks) {
                plug_done(d, s0, d->sb_blocks);
                count++;
                continue;
            }
            for (u64 b = s0; one != STATE_UNPLUGGED && b < s0 + n; b++) {
                u16 dev_block;
                if ((rc = state_of(d, b, 1, &dev_block)))
                    return rc;
                if (dev_block == STATE_PLUGGED && vm_send(d, REQ_UNPLUG, block_addr(&d->z, b), 1,
                                                          NULL) != RESP_ACK)
                    return -ABI_EINVAL;
            }
        }
        if (!count)
            continue;
        set_mb_state(d, m, count == d->sbs_per_mb ? ABI_MB_OFFLINE : ABI_MB_OFFLINE_PARTIAL);
        if (add_mb(d, m)) {
            set_mb_state(d, m, ABI_MB_PLUGGED); /* cleanup_pending() unplugs it */
            continue;
        }
        adopted += count * d->sb_blocks;
    }
    d->adopt_pending = 0;
    dev_info(d, "adopted 0x%lx of plugged memory (%lu blocks)", adopted * d->block_size,
             adopted);
    return 0;
}

/* ---- the worker: virtio_mem_run_wq() ---- */
static void refresh_config(struct vmem_dev *d)
{
    read_config(d);
    /* the plugged_size is just a reflection of what the driver did previously */
    if (d->cfg_plugged != d->v->plugged_size) {
        dev_info(d, "plugged size mismatch: device 0x%lx, driver 0x%lx", d->cfg_plugged,
                 d->v->plugged_size);
        d->v->plugged_size = d->cfg_plugged;
    }
    /* the last usable memory block: only blocks wholly inside the usable region */
    u64 end_mb = (d->addr + d->usable) / d->mbs;
    d->usable_mbs = end_mb > d->first_mb_id ? MIN(end_mb - d->first_mb_id, d->z.nmbs) : 0;
    dev_info(d, "plugged size: 0x%lx", d->v->plugged_size);
    dev_info(d, "requested size: 0x%lx", d->requested);
}

/* hrtimer_start(): Linux's 50 s .. 300 s scaled by virtio_mem.retry_ms (1/50 by default) */
static void arm_timer(struct vmem_dev *d)
{
    d->deadline_ns = now_ns() + d->retry_cur_ms * 1000000UL;
}

static void report_short(struct vmem_dev *d, long rc)
{
    if (d->short_reported != d->v->plugged_size + 1 || d->v->state != ABI_DRV_STOPPED_SHORT ||
        d->short_requested != d->requested) {
        dev_info(d, "unplug stopped short: 0x%lx still plugged, 0x%lx requested (%s)",
                 d->v->plugged_size, d->requested,
                 rc == -ABI_ENOMEM ? "no room to migrate to" : "blocks in use");
        d->short_reported = d->v->plugged_size + 1;
        d->short_requested = d->requested;
    }
}

static void vm_run_once(struct vmem_dev *d)
{
    long rc;

    d->deadline_ns = 0; /* hrtimer_cancel() */
    d->wq_active = 1;
retry:
    rc = 0;
    if (d->adopt_pending)
        rc = vm_adopt(d);
    if (!rc && d->unplug_all_pending)
        rc = vm_unplug_all(d);
    if (d->config_changed) {
        d->config_changed = 0;
        refresh_config(d);
    }
    if (!rc)
        rc = cleanup_pending(d);
    if (!rc && d->requested != d->v->plugged_size) {
        if (d->requested > d->v->plugged_size) {
            u64 diff = d->requested - d->v->plugged_size;
            rc = d->bbm ? bbm_plug_request(d, diff) : sbm_plug_request(d, diff);
        } else {
            u64 diff = d->v->plugged_size - d->requested;
            rc = d->bbm ? bbm_unplug_request(d, diff) : sbm_unplug_request(d, diff);
        }
    }
    switch (rc) {
    case 0:
        d->retry_cur_ms = opts.retry_ms;
        set_state(d, ABI_DRV_IDLE, 0);
        break;
    case -ENOSPC: /* cannot add more memory: alignment, or too much offline memory */
        set_state(d, ABI_DRV_NO_SPACE, ENOSPC);
        break;
    case -ETXTBSY: /* the device cannot process our request right now */
        arm_timer(d);
        set_state(d, ABI_DRV_RETRYING, ABI_EBUSY);
        break;
    case -ABI_EBUSY: /* all plugged memory is busy */
        arm_timer(d);
        report_short(d, rc);
        set_state(d, ABI_DRV_STOPPED_SHORT, ABI_EBUSY);
        break;
    case -ABI_ENOMEM: /* out of memory, try again later */
        arm_timer(d);
        if (d->requested > d->v->plugged_size) {
            set_state(d, ABI_DRV_NO_MEMORY, ABI_ENOMEM);
        } else {
            report_short(d, rc);
            set_state(d, ABI_DRV_STOPPED_SHORT, ABI_ENOMEM);
        }
        break;
    case -EAGAIN: /* retry immediately (e.g., the config changed) */
        cpu_yield(); /* a NACK loop lasts until the config interrupt: let it in */
        goto retry;
    case -EIO:
        mark_broken(d, EIO);
        break;
    default:
        dev_info(d, "unknown error, marking device broken: %ld", rc);
        mark_broken(d, (u64)-rc);
        break;
    }
    d->wq_active = 0;
}

/* The work item; virtio_mem_retry() while it ran (after removing memory) queues it again. */
static void vm_run(struct vmem_dev *d)
{
    if (!d->enabled)
        return;
    do {
        if (d->broken)
            return;
        d->requeue = 0;
        vm_run_once(d);
    } while (d->requeue);
}

/* ---- probe ---- */
static int detect(struct vmem_dev *d)
{
    if (rd(d, VM_MAGIC) != VIRTIO_MMIO_MAGIC)
        return 0;
    if (rd(d, VM_VERSION) != 2) {
        printk("virtio-mmio: 0x%lx: unsupported version %u\n", d->mmio, rd(d, VM_VERSION));
        return 0;
    }
    if (rd(d, VM_DEVICE_ID) != VIRTIO_ID_MEM)
        return 0;
    return 1;
}

static void probe_fail(struct vmem_dev *d, const char *why, u64 err)
{
    dev_info(d, "%s", why);
    wr(d, VM_STATUS, rd(d, VM_STATUS) | S_FAILED);
    set_state(d, ABI_DRV_FAILED, err);
}

static u64 is_pow2(u64 x)
{
    return x && !(x & (x - 1));
}

/* virtio_mem_init_hotplug(): modes, sizes, the first memory block, the offline threshold */
static void init_hotplug(struct vmem_dev *d)
{
    struct area *z = &d->z;
    u64 memory_block_size = opts.memory_block_size;
    /* alloc_contig_range() works reliably with pageblock granularity on ZONE_NORMAL */
    d->sb_size = MAX(d->block_size, PAGEBLOCK_SIZE);
    d->offline_threshold = MAX(2 * memory_block_size, 1UL << 30);
    if (d->sb_size < memory_block_size) {
        d->bbm = 0; /* SBM: at least two subblocks per Linux memory block */
        d->mbs = memory_block_size;
    } else {
        d->bbm = 1; /* BBM: at least one Linux memory block */
        d->mbs = MAX(d->block_size, memory_block_size);
        d->sb_size = d->mbs;
        d->offline_threshold = MAX(2 * d->mbs, d->offline_threshold);
    }
    d->sbs_per_mb = d->mbs / d->sb_size;
    d->sb_blocks = d->sb_size / d->block_size;
    /* round up to the next full memory block */
    d->first_mb_id = (d->addr + d->mbs - 1) / d->mbs;
    u64 end_mb = (d->addr + d->region_size) / d->mbs;
    z->mb_blocks = d->mbs / d->block_size;
    z->mb_first = (d->first_mb_id * d->mbs - d->addr) / d->block_size;
    z->nmbs = end_mb > d->first_mb_id ? end_mb - d->first_mb_id : 0;
    d->memmap_pages = ALIGN_UP(MAX(d->mbs / PAGE_SIZE * MEMMAP_BYTES_PER_PAGE,
                                   z->mb_blocks * z->block_pages * 2), PAGE_SIZE) >> PAGE_SHIFT;
    if (d->addr % memory_block_size)
        dev_info(d, "The alignment of the physical start address can make some memory "
                 "unusable.");
    if ((d->addr + d->region_size) % memory_block_size)
        dev_info(d, "The alignment of the physical end address can make some memory unusable.");
}

/* virtio_mem_init_vq(): queue 0, guest-request (and vmemlab's experimental queue 1) */
static int init_vq(struct vmem_dev *d)
{
    wr(d, VM_QUEUE_SEL, 0);
    u32 qmax = rd(d, VM_QUEUE_NUM_MAX);
    if (!qmax || rd(d, VM_QUEUE_READY))
        return -1;
    d->qsize = (u16)MIN(qmax, QSIZE);
    d->vq = &vqs[d->idx];
    memset(d->vq, 0, sizeof(*d->vq));
    d->avail_idx = d->last_used = 0;
    wr(d, VM_QUEUE_NUM, d->qsize);
    u64 desc = (u64)d->vq->desc, drv = (u64)&d->vq->avail, dev = (u64)&d->vq->used;
    wr(d, VM_QUEUE_DESC_LOW, (u32)desc);
    wr(d, VM_QUEUE_DESC_HIGH, (u32)(desc >> 32));
    wr(d, VM_QUEUE_DRIVER_LOW, (u32)drv);
    wr(d, VM_QUEUE_DRIVER_HIGH, (u32)(drv >> 32));
    wr(d, VM_QUEUE_DEVICE_LOW, (u32)dev);
    wr(d, VM_QUEUE_DEVICE_HIGH, (u32)(dev >> 32));
    wr(d, VM_QUEUE_READY, 1);
    if (d->features & (1UL << VIRTIO_MEM_F_X_GUEST_REQUESTS))
        xreq_setup(d->idx, d->mmio);
    return 0;
}

static void vm_probe(struct vmem_dev *d)
{
    struct area *z = &d->z;

    set_state(d, ABI_DRV_PROBING, 0);
    wr(d, VM_STATUS, 0);
    wr(d, VM_STATUS, S_ACKNOWLEDGE);
    wr(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER);
    wr(d, VM_DEVICE_FEATURES_SEL, 0);
    u64 offered = rd(d, VM_DEVICE_FEATURES);
    wr(d, VM_DEVICE_FEATURES_SEL, 1);
    offered |= (u64)rd(d, VM_DEVICE_FEATURES) << 32;
    if (!(offered & F_VERSION_1))
        return probe_fail(d, "device does not offer VIRTIO_F_VERSION_1", ABI_ENODEV);
    u64 want = F_VERSION_1 | (offered & ((1UL << VIRTIO_MEM_F_ACPI_PXM) |
                                         (1UL << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE) |
                                         (1UL << VIRTIO_MEM_F_PERSISTENT_SUSPEND) |
                                         (1UL << VIRTIO_MEM_F_X_GUEST_REQUESTS) |
                                         (1UL << VIRTIO_MEM_F_X_MEMORY_TYPE)));
    wr(d, VM_DRIVER_FEATURES_SEL, 0);
    wr(d, VM_DRIVER_FEATURES, (u32)want);
    wr(d, VM_DRIVER_FEATURES_SEL, 1);
    wr(d, VM_DRIVER_FEATURES, (u32)(want >> 32));
    wr(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if (!(rd(d, VM_STATUS) & S_FEATURES_OK))
        return probe_fail(d, "features not accepted (FEATURES_OK not set)", ABI_ENODEV);
    d->features = want;
    d->v->features = (u32)want;

    read_config(d);
    if (!is_pow2(d->block_size) || d->block_size < PAGE_SIZE || d->addr % d->block_size ||
        d->region_size % d->block_size || !d->region_size)
        return probe_fail(d, "invalid device configuration", ABI_EINVAL);

    if (init_vq(d))
        return probe_fail(d, "virtqueue 0 not available", ABI_ENODEV);

    d->nid = (d->features & (1UL << VIRTIO_MEM_F_ACPI_PXM)) ? d->node_id : (int)d->bi_node;
    dev_info(d, "start address: 0x%lx", d->addr);
    dev_info(d, "region size: 0x%lx", d->region_size);
    dev_info(d, "device block size: 0x%lx", d->block_size);
    dev_info(d, "nid: %d", d->nid);

    /* the area and its metadata */
    z->present = 1;
    z->dev = d->idx;
    z->nid = d->nid;
    z->base = d->addr;
    z->block_pages = d->block_size >> PAGE_SHIFT;
    z->nblocks = d->region_size / d->block_size;
    z->npages = z->nblocks * z->block_pages;
    init_hotplug(d);
    if (d->features & (1UL << VIRTIO_MEM_F_X_MEMORY_TYPE)) {
        /* vmemlab's experiment of the RFC addendum's memory types: not in virtio */
        u16 type = mmio_read16(d->mmio + VM_CONFIG + 56);
        z->huge = type == 1;
        dev_info(d, "memory type: %s (vmemlab experiment)", type == 1 ? "RAM_HUGE" : "RAM");
        if (z->huge)
            dev_info(d, "backed by huge pages: huge-page allocations will prefer this device");
    }
    u64 nmbs = z->nmbs ? z->nmbs : 1;
    z->usage = kalloc_pages(ALIGN_UP(z->nblocks * sizeof(*z->usage), PAGE_SIZE) >> PAGE_SHIFT);
    z->owners = kalloc_pages(ALIGN_UP(nmbs * sizeof(u16 *), PAGE_SIZE) >> PAGE_SHIFT);
    z->mb_plugged = kalloc_pages(ALIGN_UP(nmbs * sizeof(u32), PAGE_SIZE) >> PAGE_SHIFT);
    z->mb_state = kalloc_pages(ALIGN_UP(nmbs, PAGE_SIZE) >> PAGE_SHIFT);
    if (!z->usage || !z->owners || !z->mb_plugged || !z->mb_state)
        return probe_fail(d, "out of memory for the device block map", ABI_ENOMEM);
    z->free_total = 0;

    struct abi_device_view *v = d->v;
    v->addr = d->addr;
    v->region_size = d->region_size;
    v->block_size = d->block_size;
    v->nb_blocks = z->nblocks;
    v->memory_block_size = d->mbs;
    v->memory_blocks_added = 0;
    v->plugged_size = 0;
    v->usage_addr = (u64)z->usage;
    v->subblock_size = d->sb_size;
    v->first_mb_id = d->first_mb_id * (d->mbs / opts.memory_block_size);
    v->linux_mb_size = opts.memory_block_size;
    v->first_mb_block = z->mb_first;
    v->nr_mbs = z->nmbs;
    v->mb_states_addr = (u64)z->mb_state;
    v->offline_threshold = d->offline_threshold;
    v->memmap_pages = 0;
    mm_register_area(z);

    dev_info(d, "memory block size: 0x%lx", opts.memory_block_size);
    if (d->bbm)
        dev_info(d, "big block size: 0x%lx", d->mbs);
    else
        dev_info(d, "subblock size: 0x%lx", d->sb_size);

    wr(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    d->enabled = 1;
    d->retry_cur_ms = opts.retry_ms;
    if (d->cfg_plugged && opts.adopt) {
        dev_info(d, "adopting plugged memory (virtio_mem.adopt=1)");
        d->adopt_pending = 1;
    } else if (d->cfg_plugged) {
        dev_info(d, "unplugging all memory is required");
        d->unplug_all_pending = 1;
    }
    d->config_changed = 1; /* trigger a config update to start processing requested_size */
    vm_run(d);
}

void vmem_probe_all(const struct abi_bootinfo *bi)
{
    nr_devs = (int)MIN(bi->nr_virtio, ABI_MAX_DEVICES);
    guest_view.nr_devices = (u32)nr_devs;
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        d->idx = i;
        d->mmio = bi->virtio[i].mmio_base;
        d->bi_node = bi->virtio[i].node_id;
        d->v = &guest_view.dev[i];
        d->v->mmio_base = d->mmio;
        d->present = detect(d);
        if (!d->present)
            continue;
        if (opts.blacklisted) {
            /* the unmodified guest: it never touches the device or its memory */
            d->v->state = ABI_DRV_DISABLED;
            report(ABI_STATUS_DRIVER, (u64)i, ABI_DRV_DISABLED, 0, 0);
            continue;
        }
        d->v->state = 0xffffffff;
        vm_probe(d);
    }
}

/* ---- events ---- */
void vmem_handle_irq(void)
{
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if (!d->present || !d->enabled)
            continue;
        u32 isr = rd(d, VM_INTERRUPT_STATUS);
        if (!isr)
            continue;
        wr(d, VM_INTERRUPT_ACK, isr);
        check_needs_reset(d);
        if ((isr & INT_CONFIG) && !d->broken) {
            d->config_changed = 1; /* virtio_mem_config_changed() */
            vm_run(d);
        }
    }
}

u64 vmem_next_timeout_us(void)
{
    u64 best = 0;
    for (int i = 0; i < nr_devs; i++)
        if (devs[i].deadline_ns && (!best || devs[i].deadline_ns < best))
            best = devs[i].deadline_ns;
    if (!best)
        return 0;
    u64 now = now_ns();
    return best > now ? (best - now + 999) / 1000 : 1;
}

void vmem_run_timers(void)
{
    u64 now = 0;
    for (int i = 0; i < nr_devs; i++) {
        if (devs[i].deadline_ns && !now)
            now = now_ns();
        struct vmem_dev *d = &devs[i];
        if (d->deadline_ns && now >= d->deadline_ns) {
            /* virtio_mem_timer_expired(): retry, and double the next period (capped) */
            d->deadline_ns = 0;
            d->retry_cur_ms = MIN(d->retry_cur_ms * 2, opts.retry_ms * 6);
            vm_run(d);
        }
    }
}

/*
 * ONLINE: what `echo online_movable > /sys/devices/system/memory/memoryN/state` does for each
 * offline memory block of the device. The MEM_ONLINE notifier then restarts the driver once
 * half of the offline threshold is free again.
 */
long vmem_online(u64 which, u64 type, u64 *v0)
{
    u64 n = 0;
    if (type > ABI_MMOP_ONLINE_MOVABLE || type == ABI_MMOP_OFFLINE)
        return -ABI_EINVAL;
    if (which != ~0UL && (which >= (u64)nr_devs || !devs[which].present))
        return -ABI_ENODEV;
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        u64 mine = 0;
        if ((which != ~0UL && (u64)i != which) || !d->enabled)
            continue;
        for (u64 m = 0; m < d->z.nmbs; m++) {
            u8 st = mb_state(d, m);
            if (st != ABI_MB_OFFLINE && st != ABI_MB_OFFLINE_PARTIAL)
                continue;
            online_mb(d, m, (u32)type);
            mine++;
        }
        n += mine;
        if (mine)
            dev_info(d, "%lu memory block%s onlined", mine, mine == 1 ? "" : "s");
        if (mine && !d->wq_active && !d->broken && could_add_memory(d, d->offline_threshold / 2))
            vm_run(d);
    }
    *v0 = n;
    return 0;
}

/* ---- commands ---- */
static void dump_page(u64 pa, u64 *bytes, u64 *nonzero, u64 *skipped)
{
    u64 w;
    if (probe_load(pa, &w)) {
        (*skipped)++;
        return;
    }
    *bytes += PAGE_SIZE;
    if (w | or_page((const void *)pa))
        (*nonzero)++;
}

/*
 * A crash dump of device memory, as the kdump kernel's /proc/vmcore reads it: every page of
 * the memory blocks the crashed kernel had added (its System RAM), here through the running
 * kernel's mappings.
 *
 * Linux >= 5.16 (the default) registers virtio_mem_vmcore_pfn_is_ram() whatever the
 * features: "if (!vm->plugged_size) return false;", then per device block "rc =
 * virtio_mem_send_state_request(vm, addr, vm->device_block_size);" (the last block's answer is
 * cached) and "On any kind of error, we're going to signal !ram." Only plugged blocks are read.
 *
 * ABI_DUMP_LEGACY: the 2017 RFC's / a pre-5.16 kdump ("Unplugged memory can be read. This
 * allows e.g. kexec()"): every page of every added memory block is read, unplugged subblocks
 * included -- what UNPLUGGED_INACCESSIBLE forbids a driver to do.
 */
long vmem_dump(u64 which, u64 flags, u64 *v0, u64 *v1)
{
    u64 bytes = 0, nonzero = 0, skipped = 0, states = 0;
    int legacy = (flags & ABI_DUMP_LEGACY) != 0;
    if (flags & ~(u64)ABI_DUMP_LEGACY)
        return -ABI_EINVAL;
    if (which != ~0UL && (which >= (u64)nr_devs || !devs[which].present))
        return -ABI_ENODEV;
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if ((which != ~0UL && (u64)i != which) || !d->present || !d->enabled)
            continue;
        if (!legacy && d->broken) {
            dev_info(d, "kdump: device broken, cannot query block states");
            continue;
        }
        u64 plugged_size = legacy ? 0 : cfg64(d, C_PLUGGED_SIZE);
        for (u64 m = 0; m < d->z.nmbs; m++) {
            if (mb_state(d, m) < ABI_MB_OFFLINE) /* not added: not in the vmcore */
                continue;
            u64 b0, b1;
            mb_block_range(&d->z, m, &b0, &b1);
            for (u64 b = b0; b < b1; b++) {
                u64 base = block_addr(&d->z, b);
                if (!legacy) {
                    u16 st = 0xffff;
                    if (!plugged_size)
                        continue;
                    long resp = vm_send(d, REQ_STATE, base, 1, &st);
                    states++;
                    if (resp != RESP_ACK || st != STATE_PLUGGED)
                        continue;
                }
                for (u64 p = 0; p < d->z.block_pages; p++) {
                    dump_page(base + p * PAGE_SIZE, &bytes, &nonzero, &skipped);
                    cond_resched();
                }
            }
        }
    }
    for (int i = 0; i < nr_devs; i++) /* a config change seen between the STATE requests */
        if (devs[i].enabled && devs[i].config_changed && !devs[i].wq_active)
            vm_run(&devs[i]);
    *v0 = bytes;
    *v1 = nonzero;
    printk("kdump%s: read 0x%lx bytes of device memory: %lu non-zero pages, %lu STATE requests, "
           "%lu unreadable pages\n", legacy ? " (legacy: reads unplugged memory)" : "", bytes,
           nonzero, states, skipped);
    return 0;
}

long vmem_rogue_target(u64 dev, u64 *addr)
{
    if (dev >= (u64)nr_devs || !devs[dev].present)
        return -ABI_ENODEV;
    struct vmem_dev *d = &devs[dev];
    if (!d->enabled) {
        /* driverless guest: every block is unplugged as far as it knows */
        d->addr = cfg64(d, C_ADDR);
        *addr = d->addr;
        return 0;
    }
    for (u64 b = 0; b < d->z.nblocks; b++)
        if (d->z.usage[b].state == ABI_BLOCK_UNPLUGGED) {
            *addr = block_addr(&d->z, b);
            return 0;
        }
    return -ABI_ENOENT;
}

void vmem_stats(void)
{
    static const char *const names[] = {"probing", "idle", "plugging", "unplugging",
                                        "stopped short", "broken", "failed", "disabled",
                                        "retrying", "no memory", "no space"};
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if (!d->present)
            continue;
        struct abi_device_view *v = d->v;
        const char *st = v->state < ARRAY_SIZE(names) ? names[v->state] : "?";
        printk("virtio_mem virtio%d: %s: plugged 0x%lx requested 0x%lx, %lu memory blocks added "
               "(0x%lx offline, memory maps %lu pages), requests %lu (ack %lu nack %lu busy %lu "
               "error %lu), migrated %lu pages\n",
               i, st, v->plugged_size, v->requested_size, v->memory_blocks_added,
               d->offline_size, v->memmap_pages, v->requests, v->acks, v->nacks, v->busies,
               v->errors, v->migrated_pages);
    }
}

/* ---- what the request queue and power management need ---- */
int vmem_nr_devs(void)
{
    return nr_devs;
}

int vmem_info(int i, struct vmem_info *out)
{
    if (i < 0 || i >= nr_devs || !devs[i].present || !devs[i].enabled)
        return 0;
    struct vmem_dev *d = &devs[i];
    out->mmio = d->mmio;
    out->node = (u64)d->nid;
    out->block_size = d->block_size;
    out->plugged = d->v->plugged_size;
    out->requested = d->requested;
    out->features = d->features;
    out->broken = d->broken;
    out->state = d->v->state;
    return 1;
}

/*
 * virtio_mem_freeze() (Linux 6.10+): hibernation is refused elsewhere; suspend only when
 * nothing is plugged or the device keeps plugged memory across the wake-up
 * (VIRTIO_MEM_F_PERSISTENT_SUSPEND). Then the device is reset and its queues are gone.
 */
long vmem_freeze(void)
{
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if (!d->present || !d->enabled || d->broken)
            continue;
        if (d->v->plugged_size && !(d->features & (1UL << VIRTIO_MEM_F_PERSISTENT_SUSPEND))) {
            dev_info(d, "suspending with plugged memory is not supported");
            return -ABI_EPERM;
        }
    }
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if (d->present && d->enabled && !d->broken) {
            d->deadline_ns = 0;
            wr(d, VM_STATUS, 0); /* virtio_reset_device(); del_vqs() */
        }
    }
    return 0;
}

/* virtio_mem_restore(): the virtio core negotiated again; queues, DRIVER_OK, catch up */
void vmem_restore(void)
{
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if (!d->present || !d->enabled || d->broken)
            continue;
        wr(d, VM_STATUS, S_ACKNOWLEDGE);
        wr(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER);
        wr(d, VM_DRIVER_FEATURES_SEL, 0);
        wr(d, VM_DRIVER_FEATURES, (u32)d->features);
        wr(d, VM_DRIVER_FEATURES_SEL, 1);
        wr(d, VM_DRIVER_FEATURES, (u32)(d->features >> 32));
        wr(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        if (!(rd(d, VM_STATUS) & S_FEATURES_OK) || init_vq(d)) {
            dev_info(d, "restore failed");
            mark_broken(d, ABI_ENODEV);
            continue;
        }
        wr(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        d->config_changed = 1;
        vm_run(d);
    }
}
