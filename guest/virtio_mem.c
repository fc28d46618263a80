/*
 * virtio-mmio (version 2) transport, split virtqueue and the virtio-mem driver, modelled on
 * Linux's drivers/virtio/virtio_mem.c scaled down: plug lowest address first, one request per
 * guest memory block; unplug highest address first, partly plugged memory blocks first, moving
 * movable pages away; BUSY -> retry timer with backoff; ERROR -> device broken.
 */
#include "guest.h"

/* ---- virtio-mmio registers ---- */
#define VM_MAGIC 0x000
#define VM_VERSION 0x004
#define VM_DEVICE_ID 0x008
#define VM_DEVICE_FEATURES 0x010
#define VM_DEVICE_FEATURES_SEL 0x014
#define VM_DRIVER_FEATURES 0x020
#define VM_DRIVER_FEATURES_SEL 0x024
#define VM_QUEUE_SEL 0x030
#define VM_QUEUE_NUM_MAX 0x034
#define VM_QUEUE_NUM 0x038
#define VM_QUEUE_READY 0x044
#define VM_QUEUE_NOTIFY 0x050
#define VM_INTERRUPT_STATUS 0x060
#define VM_INTERRUPT_ACK 0x064
#define VM_STATUS 0x070
#define VM_QUEUE_DESC_LOW 0x080
#define VM_QUEUE_DESC_HIGH 0x084
#define VM_QUEUE_DRIVER_LOW 0x090
#define VM_QUEUE_DRIVER_HIGH 0x094
#define VM_QUEUE_DEVICE_LOW 0x0a0
#define VM_QUEUE_DEVICE_HIGH 0x0a4
#define VM_CONFIG_GENERATION 0x0fc
#define VM_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_ID_MEM 24

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40
#define S_FAILED 0x80

#define F_VERSION_1 (1UL << 32)
#define VIRTIO_MEM_F_ACPI_PXM 0
#define VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE 1

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

#define INT_VRING 1
#define INT_CONFIG 2

#define QSIZE 8
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define MAX_NACK_RETRIES 3

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

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
    struct {
        u16 flags, idx, ring[QSIZE], used_event;
    } avail __attribute__((aligned(16)));
    struct {
        u16 flags, idx;
        struct {
            u32 id, len;
        } ring[QSIZE];
        u16 avail_event;
    } used __attribute__((aligned(16)));
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
    struct zone z;
    u64 block_size, addr, region_size, usable, cfg_plugged, requested;
    u16 node_id;
    int nid;
    u64 mbs;
    int bbm;
    u64 features;
    u16 qsize, avail_idx, last_used;
    struct vq_mem *vq;
    u64 retry_cur_ms, deadline_ns;
    int unplug_all_pending, adopt_pending, config_changed, nack_retries;
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
    q->desc[0].addr = (u64)&q->req;
    q->desc[0].len = sizeof(q->req);
    q->desc[0].flags = DESC_F_NEXT;
    q->desc[0].next = 1;
    q->desc[1].addr = (u64)&q->resp;
    q->desc[1].len = sizeof(q->resp);
    q->desc[1].flags = DESC_F_WRITE;
    q->desc[1].next = 0;
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
    u32 isr = rd(d, VM_INTERRUPT_STATUS);
    if (isr) {
        wr(d, VM_INTERRUPT_ACK, isr);
        if (isr & INT_CONFIG)
            d->config_changed = 1;
    }
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

/* ---- memory blocks (owner arrays = "memmap") ---- */
static u64 mb_owner_pages(struct vmem_dev *d)
{
    return ALIGN_UP(d->z.mb_blocks * d->z.block_pages * 2, PAGE_SIZE) >> PAGE_SHIFT;
}

static long mb_add(struct vmem_dev *d, u64 m)
{
    u16 *o = kalloc_pages_raw(mb_owner_pages(d));
    if (!o) {
        dev_info(d, "adding memory block 0x%lx failed: -12 (no boot RAM for its memory map)",
                 ALIGN_DOWN(d->addr, d->mbs) + m * d->mbs);
        return -ABI_ENOMEM;
    }
    memset16(o, OWN_NA, d->z.mb_blocks * d->z.block_pages);
    d->z.owners[m] = o;
    d->v->memory_blocks_added++;
    return 0;
}

static void mb_remove(struct vmem_dev *d, u64 m)
{
    if (!d->z.owners[m])
        return;
    kfree_pages(d->z.owners[m], mb_owner_pages(d));
    d->z.owners[m] = NULL;
    d->v->memory_blocks_added--;
}

static void set_plugged(struct vmem_dev *d, u64 plugged)
{
    d->v->plugged_size = plugged;
}

static void plug_done(struct vmem_dev *d, u64 s, u64 n)
{
    struct zone *z = &d->z;
    for (u64 b = s; b < s + n; b++) {
        memset16(blk_owner(z, b), OWN_FREE, z->block_pages);
        z->usage[b].movable = 0;
        z->usage[b].unmovable = 0;
        z->usage[b].free = (u32)z->block_pages;
        z->usage[b].state = ABI_BLOCK_PLUGGED;
    }
    z->free_total += n * z->block_pages;
    z->mb_plugged[mb_of_block(z, s)] += (u32)n;
    set_plugged(d, d->v->plugged_size + n * d->block_size);
}

static void unplug_done(struct vmem_dev *d, u64 s, u64 n)
{
    struct zone *z = &d->z;
    u64 m = mb_of_block(z, s);
    for (u64 b = s; b < s + n; b++) {
        struct abi_block_usage *u = &z->usage[b];
        z->free_total -= u->free;
        u->free = 0;
        u->movable = 0;
        u->unmovable = 0;
        u->state = ABI_BLOCK_UNPLUGGED;
    }
    z->mb_plugged[m] -= (u32)n;
    if (!z->mb_plugged[m]) {
        mb_remove(d, m);
    } else {
        for (u64 b = s; b < s + n; b++)
            memset16(blk_owner(z, b), OWN_NA, z->block_pages);
    }
    set_plugged(d, d->v->plugged_size - n * d->block_size);
}

/* ---- plug ---- */
static long vm_plug(struct vmem_dev *d)
{
    struct zone *z = &d->z;
    u64 bs = d->block_size;
    u64 need = (d->requested - d->v->plugged_size) / bs;
    u64 ublocks = MIN(d->usable / bs, z->nblocks);

    for (u64 m = 0; m < z->nmbs && need; m++) {
        u64 b0, b1;
        mb_block_range(z, m, &b0, &b1);
        if (b0 >= ublocks)
            break;
        b1 = MIN(b1, ublocks);
        u64 b = b0;
        while (b < b1 && need) {
            if (z->usage[b].state != ABI_BLOCK_UNPLUGGED) {
                b++;
                continue;
            }
            u64 s = b, n = 0;
            while (b < b1 && z->usage[b].state == ABI_BLOCK_UNPLUGGED && n < need && n < 0xffff) {
                n++;
                b++;
            }
            if (!z->owners[m]) {
                long rc = mb_add(d, m);
                if (rc)
                    return rc;
            }
            set_state(d, ABI_DRV_PLUGGING, 0);
            long resp = vm_send(d, REQ_PLUG, block_addr(z, s), n, NULL);
            if (resp == RESP_ACK) {
                plug_done(d, s, n);
                need -= n;
                dev_info(d, "plugged 0x%lx-0x%lx (%lu block%s)", block_addr(z, s),
                         block_addr(z, s + n) - 1, n, n == 1 ? "" : "s");
            } else {
                if (!z->mb_plugged[m])
                    mb_remove(d, m);
                if (resp == RESP_NACK)
                    return -EAGAIN;
                if (resp == RESP_BUSY)
                    return -ETXTBSY;
                if (resp < 0)
                    return resp;
                return -ABI_EINVAL;
            }
            if (d->config_changed)
                return -ERESTART;
        }
    }
    return need ? -ETXTBSY : 0; /* only if requested_size > usable_region_size */
}

/* ---- unplug ---- */
static long unplug_req(struct vmem_dev *d, u64 s, u64 n)
{
    set_state(d, ABI_DRV_UNPLUGGING, 0);
    long resp = vm_send(d, REQ_UNPLUG, block_addr(&d->z, s), n, NULL);
    if (resp == RESP_ACK) {
        unplug_done(d, s, n);
        return 0;
    }
    unisolate(&d->z, s, s + n);
    if (resp == RESP_NACK || resp == RESP_BUSY)
        return -ETXTBSY;
    if (resp < 0)
        return resp;
    return -ABI_EINVAL;
}

static long unplug_mb(struct vmem_dev *d, u64 b0, u64 b1, int full, u64 *need)
{
    struct zone *z = &d->z;
    u64 migrated = 0;
    long rc;

    if (full && *need >= b1 - b0 && b1 - b0 <= 0xffff) {
        /* the whole memory block in one shot */
        if (!isolate_and_migrate(z, b0, b1, &migrated)) {
            rc = unplug_req(d, b0, b1 - b0);
            if (rc)
                return rc;
            *need -= b1 - b0;
            if (migrated)
                dev_info(d, "unplugged 0x%lx-0x%lx (%lu block%s, %lu pages migrated)",
                         block_addr(z, b0), block_addr(z, b1) - 1, b1 - b0,
                         b1 - b0 == 1 ? "" : "s", migrated);
            else
                dev_info(d, "unplugged 0x%lx-0x%lx (%lu block%s)", block_addr(z, b0),
                         block_addr(z, b1) - 1, b1 - b0, b1 - b0 == 1 ? "" : "s");
            return d->config_changed ? -ERESTART : 0;
        }
    }
    /* single device blocks from the end, skipping the busy ones */
    u64 done = 0, lo = 0, hi = 0;
    rc = 0;
    for (u64 b = b1; b-- > b0 && *need;) {
        if (z->usage[b].state != ABI_BLOCK_PLUGGED)
            continue;
        if (isolate_and_migrate(z, b, b + 1, &migrated))
            continue;
        rc = unplug_req(d, b, 1);
        if (rc)
            break;
        (*need)--;
        if (!done)
            hi = block_addr(z, b + 1) - 1;
        lo = block_addr(z, b);
        done++;
        if (d->config_changed) {
            rc = -ERESTART;
            break;
        }
    }
    if (done)
        dev_info(d, "unplugged %lu block%s in 0x%lx-0x%lx (%lu request%s, %lu pages migrated)",
                 done, done == 1 ? "" : "s", lo, hi, done, done == 1 ? "" : "s", migrated);
    return rc;
}

static long vm_unplug(struct vmem_dev *d)
{
    struct zone *z = &d->z;
    u64 need = (d->v->plugged_size - d->requested) / d->block_size;

    /* Linux's order: partly plugged memory blocks first, then whole ones; within each class
     * blocks without unmovable pages first; highest address first. */
    for (int pass = 0; pass < 4 && need; pass++) {
        for (u64 m = z->nmbs; m-- > 0 && need;) {
            if (!z->mb_plugged[m])
                continue;
            u64 b0, b1, unmov = 0;
            mb_block_range(z, m, &b0, &b1);
            int full = z->mb_plugged[m] == b1 - b0;
            for (u64 b = b0; b < b1; b++)
                unmov += z->usage[b].unmovable;
            int cls = (full ? 2 : 0) + (unmov ? 1 : 0);
            if (cls != pass)
                continue;
            long rc = unplug_mb(d, b0, b1, full, &need);
            if (rc)
                return rc;
        }
    }
    if (!need)
        return 0;
    if (d->short_reported != d->v->plugged_size + 1 || d->v->state != ABI_DRV_STOPPED_SHORT ||
        d->short_requested != d->requested) {
        dev_info(d, "unplug stopped short: 0x%lx still plugged, 0x%lx requested (blocks in use)",
                 d->v->plugged_size, d->requested);
        d->short_reported = d->v->plugged_size + 1;
        d->short_requested = d->requested;
    }
    return -ABI_EBUSY;
}

static long vm_unplug_all(struct vmem_dev *d)
{
    long resp = vm_send(d, REQ_UNPLUG_ALL, 0, 0, NULL);
    if (resp == RESP_ACK) {
        struct zone *z = &d->z;
        for (u64 m = 0; m < z->nmbs; m++) {
            u64 b0, b1;
            mb_block_range(z, m, &b0, &b1);
            for (u64 b = b0; b < b1; b++) {
                struct abi_block_usage *u = &z->usage[b];
                if (u->state != ABI_BLOCK_UNPLUGGED) {
                    z->free_total -= u->free;
                    u->free = u->movable = u->unmovable = 0;
                    u->state = ABI_BLOCK_UNPLUGGED;
                }
            }
            z->mb_plugged[m] = 0;
            mb_remove(d, m);
        }
        set_plugged(d, 0);
        d->unplug_all_pending = 0;
        d->config_changed = 1; /* usable_region_size may have shrunk */
        dev_info(d, "unplugged all memory");
        return 0;
    }
    if (resp < 0)
        return resp;
    return -ETXTBSY; /* BUSY (or anything else): retry later */
}

/*
 * virtio_mem.adopt=1, the 2017 RFC's reboot: the device kept the plugged memory (compacted
 * to the start of a shrunk area), and this guest keeps it too instead of UNPLUG_ALL. The spec
 * lets a driver re-initialize with STATE requests: one per memory block, and per device block
 * where a memory block is mixed. Adopted blocks are added as free memory.
 */
static long vm_adopt(struct vmem_dev *d)
{
    struct zone *z = &d->z;
    u64 ublocks = MIN(d->usable / d->block_size, z->nblocks), adopted = 0;
    for (u64 m = 0; m < z->nmbs; m++) {
        u64 b0, b1;
        mb_block_range(z, m, &b0, &b1);
        if (b0 >= ublocks)
            break;
        b1 = MIN(b1, ublocks);
        u16 st = 0xffff;
        long resp = vm_send(d, REQ_STATE, block_addr(z, b0), b1 - b0, &st);
        if (resp != RESP_ACK)
            return resp < 0 ? resp : -ABI_EINVAL;
        if (st == STATE_UNPLUGGED)
            continue;
        for (u64 b = b0; b < b1; b++) {
            if (st != STATE_PLUGGED) { /* mixed: ask block by block */
                u16 one = 0xffff;
                resp = vm_send(d, REQ_STATE, block_addr(z, b), 1, &one);
                if (resp != RESP_ACK)
                    return resp < 0 ? resp : -ABI_EINVAL;
                if (one != STATE_PLUGGED)
                    continue;
            }
            if (!z->owners[m]) {
                long rc = mb_add(d, m);
                if (rc)
                    return rc;
            }
            plug_done(d, b, 1);
            adopted++;
        }
    }
    d->adopt_pending = 0;
    dev_info(d, "adopted 0x%lx of plugged memory (%lu blocks)", adopted * d->block_size,
             adopted);
    return 0;
}

/* ---- the worker: converge plugged_size toward requested_size ---- */
static void arm_timer(struct vmem_dev *d)
{
    d->deadline_ns = now_ns() + d->retry_cur_ms * 1000000UL;
    d->retry_cur_ms = MIN(d->retry_cur_ms * 2, opts.retry_ms * 6);
}

static void vm_run(struct vmem_dev *d)
{
    long rc = 0;
    int restarts = 0;

    if (!d->enabled || d->broken)
        return;
    for (;;) {
        if (d->adopt_pending) {
            rc = vm_adopt(d);
            if (rc)
                break;
        }
        if (d->unplug_all_pending) {
            rc = vm_unplug_all(d);
            if (rc)
                break;
        }
        int changed = d->config_changed;
        d->config_changed = 0;
        read_config(d);
        if (changed) {
            dev_info(d, "plugged size: 0x%lx", d->cfg_plugged);
            dev_info(d, "requested size: 0x%lx", d->requested);
        }
        if (d->cfg_plugged != d->v->plugged_size)
            dev_info(d, "plugged size mismatch: device 0x%lx, driver 0x%lx", d->cfg_plugged,
                     d->v->plugged_size);
        /* PLUGGING / UNPLUGGING are reported when a request actually goes out, so a fruitless
         * retry does not make the state flicker */
        if (d->requested > d->v->plugged_size) {
            rc = vm_plug(d);
        } else if (d->v->plugged_size > d->requested) {
            rc = vm_unplug(d);
        } else {
            rc = 0;
        }
        if (rc == -EAGAIN && ++d->nack_retries > MAX_NACK_RETRIES) {
            rc = -ETXTBSY;
            break;
        }
        if ((rc == -ERESTART || rc == -EAGAIN) && ++restarts < 1000)
            continue;
        break;
    }
    switch (rc) {
    case 0:
        d->retry_cur_ms = opts.retry_ms;
        d->deadline_ns = 0;
        d->nack_retries = 0;
        set_state(d, ABI_DRV_IDLE, 0);
        break;
    case -ETXTBSY:
    case -ERESTART:
    case -EAGAIN:
        arm_timer(d);
        set_state(d, ABI_DRV_RETRYING, ABI_EBUSY);
        break;
    case -ABI_EBUSY:
        arm_timer(d);
        set_state(d, ABI_DRV_STOPPED_SHORT, ABI_EBUSY);
        break;
    case -ABI_ENOMEM:
        arm_timer(d);
        set_state(d, ABI_DRV_NO_MEMORY, ABI_ENOMEM);
        break;
    case -EIO:
        mark_broken(d, EIO);
        break;
    default:
        dev_info(d, "unknown error, marking device broken: %ld", rc);
        mark_broken(d, (u64)-rc);
        break;
    }
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

static void vm_probe(struct vmem_dev *d)
{
    struct zone *z = &d->z;

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
                                         (1UL << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE)));
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

    /* queue 0: guest-request */
    wr(d, VM_QUEUE_SEL, 0);
    u32 qmax = rd(d, VM_QUEUE_NUM_MAX);
    if (!qmax || rd(d, VM_QUEUE_READY))
        return probe_fail(d, "virtqueue 0 not available", ABI_ENODEV);
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

    /* the zone and its metadata */
    d->bbm = d->block_size >= opts.memory_block_size;
    d->mbs = MAX(opts.memory_block_size, d->block_size);
    z->present = 1;
    z->dev = d->idx;
    z->base = d->addr;
    z->block_pages = d->block_size >> PAGE_SHIFT;
    z->nblocks = d->region_size / d->block_size;
    z->npages = z->nblocks * z->block_pages;
    z->mb_blocks = d->mbs / d->block_size;
    z->mb_off = (d->addr % d->mbs) / d->block_size;
    z->nmbs = (z->mb_off + z->nblocks + z->mb_blocks - 1) / z->mb_blocks;
    z->usage = kalloc_pages(ALIGN_UP(z->nblocks * sizeof(*z->usage), PAGE_SIZE) >> PAGE_SHIFT);
    z->owners = kalloc_pages(ALIGN_UP(z->nmbs * sizeof(u16 *), PAGE_SIZE) >> PAGE_SHIFT);
    z->mb_plugged = kalloc_pages(ALIGN_UP(z->nmbs * sizeof(u32), PAGE_SIZE) >> PAGE_SHIFT);
    if (!z->usage || !z->owners || !z->mb_plugged)
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
    mm_register_zone(z);

    d->nid = (d->features & (1UL << VIRTIO_MEM_F_ACPI_PXM)) ? d->node_id : (int)d->bi_node;
    dev_info(d, "start address: 0x%lx", d->addr);
    dev_info(d, "region size: 0x%lx", d->region_size);
    dev_info(d, "device block size: 0x%lx", d->block_size);
    dev_info(d, "memory block size: 0x%lx", opts.memory_block_size);
    if (d->bbm)
        dev_info(d, "big block size: 0x%lx", d->mbs);
    else
        dev_info(d, "subblock size: 0x%lx", d->block_size);
    dev_info(d, "nid: %d", d->nid);

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
    d->config_changed = 1; /* print the sizes once, like the first config update */
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
            d->config_changed = 1;
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
            d->deadline_ns = 0;
            d->nack_retries = 0;
            vm_run(d);
        }
    }
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

long vmem_dump(u64 which, u64 *v0, u64 *v1)
{
    u64 bytes = 0, nonzero = 0, skipped = 0, states = 0;
    if (which != ~0UL && (which >= (u64)nr_devs || !devs[which].present))
        return -ABI_ENODEV;
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if ((which != ~0UL && (u64)i != which) || !d->present || !d->enabled)
            continue;
        int inacc = (d->features >> VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE) & 1;
        if (inacc && d->broken) {
            dev_info(d, "kdump: device broken, cannot query block states");
            continue;
        }
        u64 ublocks = MIN(d->usable / d->block_size, d->z.nblocks);
        for (u64 b = 0; b < ublocks; b++) {
            u64 base = block_addr(&d->z, b);
            if (inacc) {
                u16 st = 0xffff;
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
    *v0 = bytes;
    *v1 = nonzero;
    printk("kdump: read 0x%lx bytes of device memory: %lu non-zero pages, %lu STATE requests, "
           "%lu unreadable pages\n", bytes, nonzero, states, skipped);
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
                                        "retrying", "no memory"};
    for (int i = 0; i < nr_devs; i++) {
        struct vmem_dev *d = &devs[i];
        if (!d->present)
            continue;
        struct abi_device_view *v = d->v;
        const char *st = v->state < ARRAY_SIZE(names) ? names[v->state] : "?";
        printk("virtio_mem virtio%d: %s: plugged 0x%lx requested 0x%lx, %lu memory blocks added, "
               "requests %lu (ack %lu nack %lu busy %lu error %lu), migrated %lu pages\n",
               i, st, v->plugged_size, v->requested_size, v->memory_blocks_added, v->requests,
               v->acks, v->nacks, v->busies, v->errors, v->migrated_pages);
    }
}
