/*
 * The virtio-balloon driver, following Linux 6.1's drivers/virtio/virtio_balloon.c.
 *
 * The host sets num_pages in the config space (QEMU: "balloon N"); update_balloon_size_func()
 * then fills or leaks the balloon one array of at most 256 PFNs at a time, tells the host on
 * the inflate/deflate queue, writes `actual` and goes again until it matches. Balloon pages
 * come from the page allocator like any movable allocation (balloon_page_alloc(): ZONE_MOVABLE
 * first, any node, boot RAM included) and are threaded through the memory map (page->lru); a
 * virtio-mem unplug may migrate them (balloon compaction: inflate the new page, deflate the
 * old). Without DEFLATE_ON_OOM each balloon page leaves MemTotal (adjust_managed_page_count);
 * with it, they stay counted and the OOM notifier takes 256 pages back per call. Statistics go
 * to the host whenever it hands the stats buffer back; free page reporting reports wholly free
 * 2 MiB pageblocks 2 s after memory became free (mm/page_reporting.c).
 */
#include "guest.h"
#include "virtio_mmio.h"

#define F_MUST_TELL_HOST 0
#define F_STATS_VQ 1
#define F_DEFLATE_ON_OOM 2
#define F_PAGE_POISON 4
#define F_REPORTING 5

#define C_NUM_PAGES 0
#define C_ACTUAL 4

#define Q_INFLATE 0
#define Q_DEFLATE 1
#define Q_STATS 2
#define Q_REPORTING 3
#define NQ 4

#define QSZ 32                  /* every ring's size (the reporting queue's is 32 in QEMU) */
#define ARRAY_PFNS_MAX 256      /* VIRTIO_BALLOON_ARRAY_PFNS_MAX */
#define OOM_NR_PAGES 256        /* VIRTIO_BALLOON_OOM_NR_PAGES */
#define PUFF_RETRY_MS 200       /* "Sleep for at least 1/5 of a second before retry." */
#define REPORTING_DELAY_MS 2000 /* PAGE_REPORTING_DELAY: 2 * HZ */
#define REPORTING_CAPACITY 32   /* PAGE_REPORTING_CAPACITY: scatterlist entries a request */
#define REPORTING_BUDGET 4      /* requests a run, then the rest 2 s later */
#define REPORT_UNIT (2UL << 20) /* page_reporting_order: pageblock_order (2 MiB) */
#define REPORT_MAX (4UL << 20)  /* the largest buddy page (MAX_ORDER - 1 = 4 MiB) */
#define NSTATS 10
#define NIL 0                   /* no PFN: RAM starts at 1 GiB, PFN 0 is never a page */

struct vb_stat {
    u16 tag;
    u64 val;
} __attribute__((packed));

struct bvq {
    struct vring_desc desc[QSZ] __attribute__((aligned(16)));
    VRING_AVAIL(QSZ) avail __attribute__((aligned(16)));
    VRING_USED(QSZ) used __attribute__((aligned(16)));
} __attribute__((aligned(64)));

struct abi_balloon_view balloon_view;

static struct bvq vqs[NQ];
static u32 pfns[ARRAY_PFNS_MAX] __attribute__((aligned(16)));
static struct vb_stat stats[NSTATS] __attribute__((aligned(16)));

static struct {
    int present, enabled, broken, slot;
    u64 mmio, features;
    u16 qsize[NQ], avail_idx[NQ], last_used[NQ];
    u32 head;              /* the balloon's page list (PFNs, linked through the memory map) */
    int work;              /* update_balloon_size_work queued */
    u64 puff_deadline_ns;  /* out of puff: retry then */
    int report_wanted;     /* page_reporting_notify() since the last run was scheduled */
    u64 report_deadline_ns;
    u64 mig_old[ARRAY_PFNS_MAX], mig_new[ARRAY_PFNS_MAX];
    u32 nmig;
} vb;

#define dev_info(fmt, ...) printk("virtio_balloon virtio%d: " fmt "\n", vb.slot, ##__VA_ARGS__)

static u32 rd(u64 off)
{
    return mmio_read32(vb.mmio + off);
}

static void wr(u64 off, u32 v)
{
    mmio_write32(vb.mmio + off, v);
}

static int has(int bit)
{
    return (vb.features >> bit) & 1;
}

static void set_state(unsigned st, u64 detail)
{
    if (balloon_view.state == st)
        return;
    balloon_view.state = st;
    report(ABI_STATUS_DRIVER, (u64)vb.slot, st, detail, 0);
}

static void check_needs_reset(void)
{
    if (!vb.broken && (rd(VM_STATUS) & S_NEEDS_RESET)) {
        dev_info("device needs reset");
        vb.broken = 1;
        vb.work = 0;
        set_state(ABI_DRV_BROKEN, EIO);
    }
}

/* ---- the queues ---- */

/* Publish chain `head` on queue q and notify the device. */
static void vq_kick(int q, u16 head)
{
    struct bvq *v = &vqs[q];
    v->avail.ring[vb.avail_idx[q] % vb.qsize[q]] = head;
    wmb();
    vb.avail_idx[q]++;
    *(volatile u16 *)&v->avail.idx = vb.avail_idx[q];
    mb();
    wr(VM_QUEUE_NOTIFY, (u32)q);
}

/* wait_event(vb->acked, virtqueue_get_buf(vq, &len)): 0, or -EIO once the device broke */
static long vq_wait(int q)
{
    struct bvq *v = &vqs[q];
    while (*(volatile u16 *)&v->used.idx == vb.last_used[q]) {
        check_needs_reset();
        if (vb.broken)
            return -EIO;
        guest_wait(0);
    }
    rmb();
    vb.last_used[q]++;
    return 0;
}

/* tell_host(): the PFN array on the inflate or deflate queue, until the device used it. */
static long tell_host(int q, u32 n)
{
    if (vb.broken || !n)
        return vb.broken ? -EIO : 0;
    struct bvq *v = &vqs[q];
    v->desc[0].addr = (u64)pfns;
    v->desc[0].len = n * 4;
    v->desc[0].flags = 0;
    v->desc[0].next = 0;
    balloon_view.requests++;
    vq_kick(q, 0);
    return vq_wait(q);
}

/* update_balloon_size(): write `actual` (little-endian, as Linux's virtio_cwrite_le) */
static void update_balloon_size(void)
{
    wr(VM_CONFIG + C_ACTUAL, (u32)balloon_view.actual);
}

static void refresh_meminfo(void);

/* ---- the page list ---- */
static u32 pfn_of(u64 pa)
{
    return (u32)(pa >> PAGE_SHIFT);
}

static u64 pa_of(u32 pfn)
{
    return (u64)pfn << PAGE_SHIFT;
}

static void list_push(u64 pa)
{
    u32 *l = page_links(pa), pfn = pfn_of(pa);
    l[0] = NIL;
    l[1] = vb.head;
    if (vb.head != NIL)
        page_links(pa_of(vb.head))[0] = pfn;
    vb.head = pfn;
}

static void list_del(u64 pa)
{
    u32 *l = page_links(pa);
    u32 prev = l[0], next = l[1];
    if (prev != NIL)
        page_links(pa_of(prev))[1] = next;
    else
        vb.head = next;
    if (next != NIL)
        page_links(pa_of(next))[0] = prev;
}

/* ---- inflate / deflate ---- */
static u64 page_pas[ARRAY_PFNS_MAX];

/* fill_balloon(): up to 256 pages into the balloon; how many it got. */
static u64 fill_balloon(u64 num)
{
    num = MIN(num, ARRAY_PFNS_MAX);
    u64 got = balloon_take_pages(num, page_pas);
    if (got < num) {
        if (balloon_view.out_of_puff++ % 64 == 0) /* dev_info_ratelimited() */
            dev_info("Out of puff! Can't get %u pages", 1);
        vb.puff_deadline_ns = now_ns() + PUFF_RETRY_MS * 1000000UL;
    }
    for (u64 i = 0; i < got; i++) {
        list_push(page_pas[i]);
        pfns[i] = pfn_of(page_pas[i]);
    }
    balloon_view.actual += got;
    balloon_view.inflated += got;
    tell_host(Q_INFLATE, (u32)got);
    return got;
}

/* leak_balloon(): up to 256 pages out of the balloon -- the host is told before they are
 * used again (the order MUST_TELL_HOST requires; Linux always keeps it). */
static u64 leak_balloon(u64 num)
{
    u64 n = 0;
    num = MIN(MIN(num, ARRAY_PFNS_MAX), balloon_view.actual);
    while (n < num && vb.head != NIL) {
        u64 pa = pa_of(vb.head);
        list_del(pa);
        page_pas[n] = pa;
        pfns[n++] = pfn_of(pa);
    }
    balloon_view.actual -= n;
    balloon_view.deflated += n;
    tell_host(Q_DEFLATE, (u32)n);
    for (u64 i = 0; i < n; i++)
        balloon_put_page(page_pas[i]);
    return n;
}

/* towards_target() */
static long towards_target(void)
{
    u64 target = rd(VM_CONFIG + C_NUM_PAGES);
    balloon_view.num_pages = target;
    return (long)target - (long)balloon_view.actual;
}

/* update_balloon_size_func(): one step; queued again while there is a difference. */
int balloon_work(void)
{
    if (!vb.work || vb.broken || vb.puff_deadline_ns)
        return 0;
    long diff = towards_target();
    if (!diff) {
        vb.work = 0;
        refresh_meminfo();
        set_state(ABI_DRV_IDLE, 0);
        return 1;
    }
    if (diff > 0) {
        set_state(ABI_DRV_INFLATING, 0);
        diff -= (long)fill_balloon((u64)diff);
    } else {
        set_state(ABI_DRV_DEFLATING, 0);
        diff += (long)leak_balloon((u64)-diff);
    }
    update_balloon_size();
    if (vb.puff_deadline_ns) {
        refresh_meminfo();
        set_state(ABI_DRV_RETRYING, 0);
    } else if (!diff) {
        vb.work = 0;
        refresh_meminfo();
        set_state(ABI_DRV_IDLE, 0);
    }
    return 1;
}

/* virtio_balloon_oom_notify(): DEFLATE_ON_OOM gives memory back without asking the host. */
u64 balloon_oom_notify(void)
{
    if (!vb.enabled || vb.broken || !has(F_DEFLATE_ON_OOM) || !balloon_view.actual)
        return 0;
    u64 freed = leak_balloon(OOM_NR_PAGES);
    balloon_view.oom_deflated += freed;
    update_balloon_size();
    refresh_meminfo();
    return freed;
}

/* balloon compaction (virtballoon_migratepage()): the new page joins the balloon, the old one
 * leaves it; the host is told in batches, inflate first. */
void balloon_page_migrated(u64 old_pa, u64 new_pa)
{
    list_del(old_pa);
    list_push(new_pa);
    balloon_view.migrated++;
    vb.mig_old[vb.nmig] = old_pa;
    vb.mig_new[vb.nmig++] = new_pa;
    if (vb.nmig == ARRAY_PFNS_MAX)
        balloon_migrate_flush();
}

void balloon_migrate_flush(void)
{
    if (!vb.nmig)
        return;
    for (u32 i = 0; i < vb.nmig; i++)
        pfns[i] = pfn_of(vb.mig_new[i]);
    tell_host(Q_INFLATE, vb.nmig);
    for (u32 i = 0; i < vb.nmig; i++)
        pfns[i] = pfn_of(vb.mig_old[i]);
    tell_host(Q_DEFLATE, vb.nmig);
    vb.nmig = 0;
}

/* ---- statistics ---- */
static void update_stat(int i, u16 tag, u64 val)
{
    stats[i].tag = tag;
    stats[i].val = val;
}

/* MemTotal and MemFree as /proc/meminfo would say them, into the exported view */
static void refresh_meminfo(void)
{
    u64 total = mm_managed_pages();
    if (!has(F_DEFLATE_ON_OOM)) /* adjust_managed_page_count(page, -1) per balloon page */
        total -= MIN(total, balloon_view.actual);
    balloon_view.total_pages = total;
    balloon_view.free_pages = mm_free_pages();
}

/* update_balloon_stats(): Linux's order; no swap, no hugetlb, no page cache here */
static void update_balloon_stats(void)
{
    refresh_meminfo();
    u64 total = balloon_view.total_pages, free = balloon_view.free_pages;
    update_stat(0, 0, 0);                          /* SWAP_IN */
    update_stat(1, 1, 0);                          /* SWAP_OUT */
    update_stat(2, 2, 0);                          /* MAJFLT */
    update_stat(3, 3, pgfault_count);              /* MINFLT */
    update_stat(4, 8, 0);                          /* HTLB_PGALLOC */
    update_stat(5, 9, 0);                          /* HTLB_PGFAIL */
    update_stat(6, 4, free * PAGE_SIZE);           /* MEMFREE */
    update_stat(7, 5, total * PAGE_SIZE);          /* MEMTOT */
    update_stat(8, 6, free * PAGE_SIZE);           /* AVAIL */
    update_stat(9, 7, 0);                          /* CACHES */
}

/* stats_handle_request(): fresh statistics in the one buffer, back to the host */
static void send_stats(int kick)
{
    struct bvq *v = &vqs[Q_STATS];
    update_balloon_stats();
    v->desc[0].addr = (u64)stats;
    v->desc[0].len = sizeof(stats);
    v->desc[0].flags = 0;
    v->desc[0].next = 0;
    v->avail.ring[vb.avail_idx[Q_STATS] % vb.qsize[Q_STATS]] = 0;
    wmb();
    vb.avail_idx[Q_STATS]++;
    *(volatile u16 *)&v->avail.idx = vb.avail_idx[Q_STATS];
    mb();
    balloon_view.stats_sent++;
    if (kick)
        wr(VM_QUEUE_NOTIFY, Q_STATS);
}

/* ---- free page reporting ---- */
void page_reporting_notify(void)
{
    vb.report_wanted = 1;
}

/* One request: the queued scatterlist entries (device-writable), until the device used it;
 * then their pageblocks count as reported (Linux: PageReported). */
struct rentry {
    u64 addr, len;
    struct area *z;
    u64 b, nb; /* the unit: counter blocks [b, b + nb) */
    int last;  /* the unit's last entry: mark it reported once acknowledged */
};
static struct rentry rents[REPORTING_CAPACITY];
static u32 nrents;

static long report_flush(void)
{
    struct bvq *v = &vqs[Q_REPORTING];
    if (!nrents)
        return 0;
    for (u32 i = 0; i < nrents; i++) {
        v->desc[i].addr = rents[i].addr;
        v->desc[i].len = (u32)rents[i].len;
        v->desc[i].flags = DESC_F_WRITE | (i + 1 < nrents ? DESC_F_NEXT : 0);
        v->desc[i].next = (u16)(i + 1 < nrents ? i + 1 : 0);
    }
    balloon_view.reports++;
    vq_kick(Q_REPORTING, 0);
    long rc = vq_wait(Q_REPORTING);
    for (u32 i = 0; i < nrents && !rc; i++) {
        balloon_view.reported_bytes += rents[i].len;
        if (rents[i].last)
            memset(rents[i].z->reported + rents[i].b, 1, rents[i].nb);
    }
    nrents = 0;
    return rc;
}

static int unit_free(struct area *z, u64 b, u64 nb)
{
    for (u64 i = b; i < b + nb; i++) {
        struct abi_block_usage *u = &z->usage[i];
        u64 valid = block_valid_pages(z, i);
        if (u->state != ABI_BLOCK_PLUGGED || valid != z->block_pages || u->free != valid ||
            z->reported[i] || (u->zone != ABI_ZONE_NORMAL && u->zone != ABI_ZONE_MOVABLE))
            return 0;
    }
    return 1;
}

/*
 * page_reporting_process(): wholly free, unreported pageblocks (a counter block of 2 MiB or
 * more, or a pair of 1 MiB device blocks) of every zone, as buddy pages of at most 4 MiB, 32
 * a request; after REPORTING_BUDGET requests the rest waits for another run, 2 s later.
 */
static void report_free_pages(void)
{
    struct area *zs[ABI_MAX_DEVICES + 1];
    int nz = 0, requests = 0, left = 0;
    zs[nz++] = &boot_area;
    for (int i = 0; i < ABI_MAX_DEVICES; i++)
        if (area_of_dev(i) && area_of_dev(i)->reported)
            zs[nz++] = area_of_dev(i);
    nrents = 0;
    for (int k = 0; k < nz && !left; k++) {
        struct area *z = zs[k];
        u64 bytes = z->block_pages * PAGE_SIZE;
        u64 nb = bytes >= REPORT_UNIT ? 1 : REPORT_UNIT / bytes;
        for (u64 b = 0; b + nb <= z->nblocks; b += nb) {
            if (!unit_free(z, b, nb))
                continue;
            if (requests >= REPORTING_BUDGET) {
                left = 1;
                break;
            }
            u64 size = nb * bytes;
            for (u64 off = 0; off < size; off += REPORT_MAX) {
                struct rentry *e = &rents[nrents++];
                e->addr = block_addr(z, b) + off;
                e->len = MIN(REPORT_MAX, size - off);
                e->z = z;
                e->b = b;
                e->nb = nb;
                e->last = off + REPORT_MAX >= size;
                if (nrents == REPORTING_CAPACITY) {
                    if (report_flush())
                        return;
                    requests++;
                }
            }
        }
    }
    if (nrents && report_flush())
        return;
    if (left)
        vb.report_wanted = 1;
}

static void reporting_enable(void)
{
    struct area *boot = &boot_area;
    boot->reported = kalloc_pages(ALIGN_UP(boot->nblocks, PAGE_SIZE) >> PAGE_SHIFT);
    for (int i = 0; i < ABI_MAX_DEVICES; i++) {
        struct area *z = area_of_dev(i);
        if (z)
            z->reported = kalloc_pages(ALIGN_UP(z->nblocks, PAGE_SIZE) >> PAGE_SHIFT);
    }
    printk("Free page reporting enabled\n");
    vb.report_wanted = 1; /* page_reporting_register(): "begin initial flush of zones" */
}

/* ---- probe ---- */
static void probe_fail(const char *why, u64 err)
{
    dev_info("%s", why);
    wr(VM_STATUS, rd(VM_STATUS) | S_FAILED);
    set_state(ABI_DRV_FAILED, err);
}

static int setup_vq(int q)
{
    wr(VM_QUEUE_SEL, (u32)q);
    u32 qmax = rd(VM_QUEUE_NUM_MAX);
    if (!qmax || rd(VM_QUEUE_READY))
        return -1;
    vb.qsize[q] = (u16)MIN(qmax, QSZ);
    vb.avail_idx[q] = vb.last_used[q] = 0;
    memset(&vqs[q], 0, sizeof(vqs[q]));
    wr(VM_QUEUE_NUM, vb.qsize[q]);
    u64 desc = (u64)vqs[q].desc, drv = (u64)&vqs[q].avail, dev = (u64)&vqs[q].used;
    wr(VM_QUEUE_DESC_LOW, (u32)desc);
    wr(VM_QUEUE_DESC_HIGH, (u32)(desc >> 32));
    wr(VM_QUEUE_DRIVER_LOW, (u32)drv);
    wr(VM_QUEUE_DRIVER_HIGH, (u32)(drv >> 32));
    wr(VM_QUEUE_DEVICE_LOW, (u32)dev);
    wr(VM_QUEUE_DEVICE_HIGH, (u32)(dev >> 32));
    wr(VM_QUEUE_READY, 1);
    return 0;
}

/* virtballoon_probe() */
void balloon_probe(const struct abi_bootinfo *bi, int slot)
{
    memset(&vb, 0, sizeof(vb));
    vb.slot = slot;
    vb.mmio = bi->virtio[slot].mmio_base;
    vb.present = 1;
    balloon_view.magic = ABI_BALLOON_VIEW_MAGIC;
    balloon_view.mmio_base = vb.mmio;
    report(ABI_STATUS_BALLOON, (u64)&balloon_view, 0, 0, 0);
    if (opts.balloon_blacklisted) {
        balloon_view.state = ABI_DRV_DISABLED;
        report(ABI_STATUS_DRIVER, (u64)slot, ABI_DRV_DISABLED, 0, 0);
        return;
    }
    balloon_view.state = 0xffffffff;
    set_state(ABI_DRV_PROBING, 0);
    wr(VM_STATUS, 0);
    wr(VM_STATUS, S_ACKNOWLEDGE);
    wr(VM_STATUS, S_ACKNOWLEDGE | S_DRIVER);
    wr(VM_DEVICE_FEATURES_SEL, 0);
    u64 offered = rd(VM_DEVICE_FEATURES);
    wr(VM_DEVICE_FEATURES_SEL, 1);
    offered |= (u64)rd(VM_DEVICE_FEATURES) << 32;
    if (!(offered & F_VERSION_1))
        return probe_fail("device does not offer VIRTIO_F_VERSION_1", ABI_ENODEV);
    /* the driver's feature table, minus PAGE_POISON: virtballoon_validate() clears it when
     * the guest does not poison freed pages (Linux's default) */
    u64 want = F_VERSION_1 | (offered & ((1UL << F_MUST_TELL_HOST) | (1UL << F_STATS_VQ) |
                                         (1UL << F_DEFLATE_ON_OOM) | (1UL << F_REPORTING)));
    wr(VM_DRIVER_FEATURES_SEL, 0);
    wr(VM_DRIVER_FEATURES, (u32)want);
    wr(VM_DRIVER_FEATURES_SEL, 1);
    wr(VM_DRIVER_FEATURES, (u32)(want >> 32));
    wr(VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if (!(rd(VM_STATUS) & S_FEATURES_OK))
        return probe_fail("features not accepted (FEATURES_OK not set)", ABI_ENODEV);
    vb.features = want;
    balloon_view.features = (u32)want;

    /* init_vqs(): inflate, deflate, stats if negotiated, reporting if negotiated */
    int nq = has(F_REPORTING) ? 4 : 3;
    for (int q = 0; q < nq; q++)
        if (setup_vq(q))
            return probe_fail("virtqueue not available", ABI_ENODEV);
    if (has(F_REPORTING) && vb.qsize[Q_REPORTING] < REPORTING_CAPACITY)
        return probe_fail("reporting virtqueue too small", ENOSPC);
    if (has(F_STATS_VQ)) /* "Prime this virtqueue with one buffer" */
        send_stats(0);
    if (has(F_REPORTING))
        reporting_enable();

    wr(VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK); /* device_ready */
    vb.enabled = 1;
    if (has(F_STATS_VQ))
        wr(VM_QUEUE_NOTIFY, Q_STATS);
    long diff = towards_target();
    if (diff)
        vb.work = 1; /* virtballoon_changed() */
    refresh_meminfo();
    set_state(diff > 0 ? ABI_DRV_INFLATING : diff < 0 ? ABI_DRV_DEFLATING : ABI_DRV_IDLE, 0);
}

/* ---- events ---- */
void balloon_handle_irq(void)
{
    if (!vb.enabled)
        return;
    u32 isr = rd(VM_INTERRUPT_STATUS);
    if (!isr)
        return;
    wr(VM_INTERRUPT_ACK, isr);
    check_needs_reset();
    if (vb.broken)
        return;
    if (isr & INT_CONFIG)
        vb.work = 1; /* virtballoon_changed() */
    /* stats_request(): the host handed the stats buffer back */
    if (has(F_STATS_VQ) && *(volatile u16 *)&vqs[Q_STATS].used.idx != vb.last_used[Q_STATS]) {
        vb.last_used[Q_STATS] = *(volatile u16 *)&vqs[Q_STATS].used.idx;
        send_stats(1);
    }
}

u64 balloon_next_timeout_us(void)
{
    u64 best = vb.puff_deadline_ns;
    if (vb.report_deadline_ns && (!best || vb.report_deadline_ns < best))
        best = vb.report_deadline_ns;
    if (!best)
        return 0;
    u64 now = now_ns();
    return best > now ? (best - now + 999) / 1000 : 1;
}

void balloon_run_timers(void)
{
    if (!vb.enabled || vb.broken)
        return;
    if (!vb.puff_deadline_ns && !vb.report_deadline_ns && !vb.report_wanted)
        return;
    u64 now = now_ns();
    if (vb.puff_deadline_ns && now >= vb.puff_deadline_ns)
        vb.puff_deadline_ns = 0; /* the work goes on */
    if (vb.report_wanted && !vb.report_deadline_ns && has(F_REPORTING)) {
        vb.report_wanted = 0;
        vb.report_deadline_ns = now + REPORTING_DELAY_MS * 1000000UL;
    }
    if (vb.report_deadline_ns && now >= vb.report_deadline_ns) {
        vb.report_deadline_ns = 0;
        report_free_pages();
    }
}

/* ---- commands ---- */

/*
 * A rogue deflate: the guest writes to pages it gave to the balloon, without a deflate
 * request. Nothing stops it: the host discarded them, and the write simply backs them with
 * host memory again ("Nobody can hinder the guest from deflating/reusing inflated memory").
 */
long balloon_rogue(u64 pages, u64 *v0, u64 *v1)
{
    if (!vb.enabled)
        return -ABI_ENODEV;
    u64 n = 0, bad = 0;
    for (u32 pfn = vb.head; pfn != NIL && n < pages; pfn = page_links(pa_of(pfn))[1], n++) {
        fill_page_asm((void *)pa_of(pfn), 0x726f677565UL + n, 0x9E3779B97F4A7C15UL);
        if (!check_page_asm((const void *)pa_of(pfn), 0x726f677565UL + n,
                            0x9E3779B97F4A7C15UL))
            bad++;
        cond_resched();
    }
    balloon_view.rogue_pages += n;
    *v0 = n;
    *v1 = bad;
    dev_info("reused %lu balloon pages without telling the host", n);
    return 0;
}

void balloon_stats(void)
{
    if (!vb.present)
        return;
    printk("virtio_balloon virtio%d: %lu pages in the balloon (target %lu), %lu in boot RAM; "
           "inflated %lu, deflated %lu (%lu on OOM), reported %lu bytes, rogue %lu pages\n",
           vb.slot, balloon_view.actual, balloon_view.num_pages, balloon_view.pages_boot,
           balloon_view.inflated, balloon_view.deflated, balloon_view.oom_deflated,
           balloon_view.reported_bytes, balloon_view.rogue_pages);
}
