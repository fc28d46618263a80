/*
 * vmemlab's experimental guest -> host request queue for virtio-mem: the 2017 RFC addendum's
 * "guest -> host command queue ... to request more/less memory". NOT in any virtio
 * specification and not in Linux: docs/extensions.md, device/virtio_mem_requests.py.
 *
 * Queue 1 of a device that negotiated bit 62. One request at a time: a 64-byte request
 * ("need N bytes on node K, because ...") and a 24-byte response (granted / partial /
 * denied, the bytes granted and the device's requested_size after the decision). A grant
 * only raises requested_size: the memory then arrives through the driver's ordinary PLUG
 * path (the config-change interrupt), like after the host's qom-set.
 */
#include "guest.h"
#include "virtio_mmio.h"

#define XQSIZE 2
#define X_REQ_NEED 0
#define X_REQ_OFFER 1
#define X_RESP_GRANTED 0
#define X_RESP_PARTIAL 1
#define X_RESP_DENIED 2
#define GROW_WAIT_NS 5000000000UL /* how long to wait for granted memory to be plugged */

struct xreq { /* 64 bytes */
    u16 type;
    u16 node_id;
    u8 padding[4];
    u64 size;
    char reason[48];
};

struct xresp { /* 24 bytes */
    u16 type;
    u8 padding[6];
    u64 granted;
    u64 requested_size;
};

_Static_assert(sizeof(struct xreq) == 64, "x-host-request request is 64 bytes");
_Static_assert(sizeof(struct xresp) == 24, "x-host-request response is 24 bytes");

struct xq {
    struct vring_desc desc[XQSIZE] __attribute__((aligned(16)));
    VRING_AVAIL(XQSIZE) avail __attribute__((aligned(16)));
    VRING_USED(XQSIZE) used __attribute__((aligned(16)));
    struct xreq req __attribute__((aligned(16)));
    struct xresp resp __attribute__((aligned(16)));
} __attribute__((aligned(64)));

static struct xq xqs[ABI_MAX_DEVICES];
static u16 x_avail[ABI_MAX_DEVICES], x_used[ABI_MAX_DEVICES];
static int x_ready[ABI_MAX_DEVICES];

static void xwr(u64 mmio, u64 off, u32 v)
{
    mmio_write32(mmio + off, v);
}

void xreq_setup(int dev, u64 mmio)
{
    x_ready[dev] = 0;
    xwr(mmio, VM_QUEUE_SEL, 1);
    u32 qmax = mmio_read32(mmio + VM_QUEUE_NUM_MAX);
    if (qmax < XQSIZE || mmio_read32(mmio + VM_QUEUE_READY)) {
        printk("virtio_mem virtio%d: x-host-request queue not available\n", dev);
        return;
    }
    struct xq *q = &xqs[dev];
    memset(q, 0, sizeof(*q));
    x_avail[dev] = x_used[dev] = 0;
    xwr(mmio, VM_QUEUE_NUM, XQSIZE);
    u64 desc = (u64)q->desc, drv = (u64)&q->avail, devr = (u64)&q->used;
    xwr(mmio, VM_QUEUE_DESC_LOW, (u32)desc);
    xwr(mmio, VM_QUEUE_DESC_HIGH, (u32)(desc >> 32));
    xwr(mmio, VM_QUEUE_DRIVER_LOW, (u32)drv);
    xwr(mmio, VM_QUEUE_DRIVER_HIGH, (u32)(drv >> 32));
    xwr(mmio, VM_QUEUE_DEVICE_LOW, (u32)devr);
    xwr(mmio, VM_QUEUE_DEVICE_HIGH, (u32)(devr >> 32));
    xwr(mmio, VM_QUEUE_READY, 1);
    x_ready[dev] = 1;
    printk("virtio_mem virtio%d: x-host-request queue ready (vmemlab experiment)\n", dev);
}

/* Send one request and wait for the answer (the host may hold it while a presenter decides).
 * Returns X_RESP_* or -EIO. */
static long xreq_send(int dev, u16 type, u64 size, u64 node, const char *reason,
                      struct xresp *out)
{
    struct vmem_info info;
    if (!x_ready[dev] || !vmem_info(dev, &info) || info.broken)
        return -EIO;
    struct xq *q = &xqs[dev];
    memset(&q->req, 0, sizeof(q->req));
    q->req.type = type;
    q->req.node_id = (u16)node;
    q->req.size = size;
    for (u64 i = 0; i + 1 < sizeof(q->req.reason) && reason[i]; i++)
        q->req.reason[i] = reason[i];
    memset(&q->resp, 0, sizeof(q->resp));
    q->resp.type = 0xffff;
    vring_req_resp(q->desc, &q->req, sizeof(q->req), &q->resp, sizeof(q->resp));
    q->avail.ring[x_avail[dev] % XQSIZE] = 0;
    wmb();
    x_avail[dev]++;
    *(volatile u16 *)&q->avail.idx = x_avail[dev];
    mb();
    xwr(info.mmio, VM_QUEUE_NOTIFY, 1);
    while (*(volatile u16 *)&q->used.idx == x_used[dev]) {
        if (mmio_read32(info.mmio + VM_STATUS) & S_NEEDS_RESET)
            return -EIO;
        guest_wait(0); /* the answer may take a presenter's while: sleep until an event */
        if (!vmem_info(dev, &info) || info.broken)
            return -EIO;
    }
    rmb();
    x_used[dev]++;
    *out = q->resp;
    return out->type;
}

/* the first bound device that negotiated the queue (the guest's memory lives on its node) */
static int pick_device(struct vmem_info *info)
{
    for (int i = 0; i < vmem_nr_devs(); i++)
        if (x_ready[i] && vmem_info(i, info) && !info->broken &&
            (info->features & (1UL << VIRTIO_MEM_F_X_GUEST_REQUESTS)))
            return i;
    return -1;
}

/* Wait until the driver plugged up to `target` (it does so on the config interrupt). */
static int wait_plugged(int dev, u64 target)
{
    u64 deadline = now_ns() + GROW_WAIT_NS;
    struct vmem_info info;
    for (;;) {
        /* the config interrupt may have come while we waited for the answer: look at the
         * interrupt status every time, not only after a new virtio event */
        vmem_handle_irq();
        vmem_run_timers();
        if (!vmem_info(dev, &info) || info.broken)
            return 0;
        if (info.plugged >= target)
            return 1;
        if (info.state == ABI_DRV_NO_SPACE || now_ns() >= deadline)
            return 0;
        guest_wait(10000);
    }
}

static void size_text(char *buf, u64 len, u64 bytes)
{
    static const char digits[] = "0123456789";
    char tmp[24];
    u64 n = bytes >> 20, i = 0, o = 0;
    do {
        tmp[i++] = digits[n % 10];
        n /= 10;
    } while (n && i < sizeof(tmp));
    while (i && o + 1 < len)
        buf[o++] = tmp[--i];
    const char *unit = " MiB";
    for (u64 k = 0; unit[k] && o + 1 < len; k++)
        buf[o++] = unit[k];
    buf[o] = 0;
}

/*
 * "Grow until it fails": allocate `chunk` bytes (movable) again and again. When an allocation
 * fails and ABI_GROW_ASK_HOST is set, ask the host for the chunk on the device's node, wait for
 * the granted memory to be plugged, and try again; a denial ends the workload.
 */
long cmd_grow(u64 chunk, u64 limit, u64 flags, u64 *v0, u64 *v1)
{
    u64 total = 0, sent = 0, granted = 0, denied = 0, id, pages;
    if (!chunk)
        return -ABI_EINVAL;
    for (;;) {
        if (limit && total >= limit)
            break;
        long rc = cmd_alloc(chunk, 0, 0x9e3779b97f4a7c15UL + total, &id, &pages);
        if (!rc) {
            total += chunk;
            cpu_yield(); /* a safe point between allocations */
            continue;
        }
        if (rc != -ABI_ENOMEM || !(flags & ABI_GROW_ASK_HOST))
            break;
        struct vmem_info info;
        int dev = pick_device(&info);
        if (dev < 0) {
            printk("grow: allocation failed and no device takes requests\n");
            break;
        }
        char reason[48] = "grow: alloc of ";
        size_text(reason + 15, sizeof(reason) - 15, chunk);
        u64 n = strlen(reason);
        const char *tail = " failed";
        for (u64 k = 0; tail[k] && n + 1 < sizeof(reason); k++)
            reason[n++] = tail[k];
        reason[n] = 0;
        u64 ask = (chunk + info.block_size - 1) / info.block_size * info.block_size;
        struct xresp resp;
        long t = xreq_send(dev, X_REQ_NEED, ask, info.node, reason, &resp);
        sent++;
        if (t < 0)
            break;
        if (t == X_RESP_DENIED) {
            denied++;
            printk("virtio_mem virtio%d: host denied 0x%lx bytes on node %lu\n", dev, ask,
                   info.node);
            break;
        }
        granted++;
        printk("virtio_mem virtio%d: host granted 0x%lx bytes (requested size 0x%lx)\n", dev,
               resp.granted, resp.requested_size);
        if (!wait_plugged(dev, resp.requested_size)) {
            printk("virtio_mem virtio%d: granted memory did not arrive\n", dev);
            break;
        }
    }
    printk("grow: 0x%lx bytes allocated, %lu requests to the host (%lu granted, %lu denied)\n",
           total, sent, granted, denied);
    *v0 = total;
    *v1 = sent | granted << 16 | denied << 32;
    return 0;
}
