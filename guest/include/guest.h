/* Shared declarations of the vmemlab guest kernel. */
#ifndef VMEMLAB_GUEST_H
#define VMEMLAB_GUEST_H

#include "abi.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long s64;

#define NULL ((void *)0)
#define PAGE_SIZE ABI_PAGE_SIZE
#define PAGE_SHIFT 12
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((u64)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((u64)(a) - 1))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* errno values (Linux numbering) used inside the driver only */
#define EIO 5
#define EAGAIN 11
#define ETXTBSY 26
#define ENOSPC 28

/* ---- MMIO and barriers ---- */
static inline u32 mmio_read32(u64 a)
{
    u32 v;
    __asm__ volatile("ldr %w0, [%1]" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline u16 mmio_read16(u64 a)
{
    u16 v;
    __asm__ volatile("ldrh %w0, [%1]" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline void mmio_write32(u64 a, u32 v)
{
    __asm__ volatile("str %w0, [%1]" : : "r"(v), "r"(a) : "memory");
}
static inline void mmio_write8(u64 a, u8 v)
{
    __asm__ volatile("strb %w0, [%1]" : : "r"(v), "r"(a) : "memory");
}
#define mb() __asm__ volatile("dsb sy" ::: "memory")
#define wmb() __asm__ volatile("dmb ishst" ::: "memory")
#define rmb() __asm__ volatile("dmb ishld" ::: "memory")
#define barrier() __asm__ volatile("" ::: "memory")

/* ---- start.S ---- */
struct smc_regs {
    u64 x[6];
};
void smc_call(struct smc_regs *r);
long rogue_store(u64 addr, u64 value);  /* 0, or -EFAULT if the store faulted */
long probe_load(u64 addr, u64 *value);  /* 0, or -EFAULT if the load faulted */
/* page.S */
void copy_page(void *dst, const void *src);
void fill_page_asm(void *dst, u64 seed, u64 mul);
u64 check_page_asm(const void *src, u64 seed, u64 mul);
u64 or_page(const void *src);
void fill_words(void *dst, u64 word, u64 bytes);
extern char __image_start[], __image_end[], __bss_start[], __bss_end[], __end[];

struct ex_entry {
    u64 insn;  /* address of the instruction that may fault */
    u64 fixup; /* where to continue (returns -EFAULT) */
    u64 kind;  /* EX_* */
};
#define EX_STORE 1
#define EX_LOAD 2
extern struct ex_entry __start_ex_table[], __stop_ex_table[];

struct exc_frame {
    u64 x[31];
    u64 elr, spsr, esr, far, vector;
};

/* ---- lib.c ---- */
void *memset(void *d, int c, u64 n);
void *memcpy(void *d, const void *s, u64 n);
void memset16(u16 *p, u16 v, u64 n);
u64 strlen(const char *s);
int strncmp(const char *a, const char *b, u64 n);
void console_init(u64 uart_base);
int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
u64 smc0(u64 fn, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5);
void cond_resched(void);
void cpu_yield(void);
u64 now_ns(void);
void report(u64 what, u64 a, u64 b, u64 c, u64 d);

/* ---- mm.c: page allocator ---- */
#define OWN_FREE 0x0000
#define OWN_NA 0xffff       /* not available: unplugged, offline or not present */
#define OWN_ISOLATED 0xfffe /* being offlined */
#define OWN_KERNEL 0xfffd   /* kernel data: memory maps, driver metadata */
#define OWN_BALLOON 0xfffc  /* given to the host by virtio-balloon (movable, like Linux's) */
#define OWN_PV_BALLOON 0xfffb /* given back by the Xen/Hyper-V models' balloon (never moved) */

#define MEMMAP_BYTES_PER_PAGE 64 /* sizeof(struct page) on 64-bit Linux */
#define PAGEBLOCK_SIZE (2UL << 20) /* pageblock_order 9 with 4 KiB pages */

/* areas the allocator knows by index: virtio-mem devices, then DIMM slots */
#define MAX_AREAS (ABI_MAX_DEVICES + ABI_MAX_DIMM_SLOTS)
#define DIMM_AREA(slot) (ABI_MAX_DEVICES + (slot))

/*
 * An "area" is memory the allocator manages: boot RAM, or one virtio-mem device region. It is
 * cut into counter blocks (device blocks; 2 MiB chunks of boot RAM) and, for devices, into the
 * guest's memory blocks, each with its own page owner array (part of its memory map) while
 * added. Every device block carries the zone of its memory block.
 */
struct area {
    int present;
    int dev;                  /* device index, -1 for boot RAM */
    int huge;                 /* memory type RAM_HUGE (vmemlab's experimental config field) */
    int nid;                  /* NUMA node */
    u64 base;                 /* address of block 0 */
    u64 npages;               /* pages that exist (boot RAM: managed pages) */
    u64 nblocks;
    u64 block_pages;          /* pages per counter block (device block / 2 MiB chunk) */
    u64 mb_blocks;            /* blocks per memory block */
    u64 mb_first;             /* block where memory block 0 starts */
    u64 nmbs;                 /* memory blocks wholly inside the area */
    struct abi_block_usage *usage;
    u16 **owners;             /* per memory block, NULL while not added */
    u8 *mb_state;             /* per memory block: ABI_MB_* (devices) */
    u32 *mb_plugged;          /* devices: plugged device blocks per memory block */
    u64 free_total;           /* sum of usage[].free */
    u64 free_zone[4];         /* the same, per ABI_ZONE_* */
    u64 cursor[4];            /* migration, per zone: lowest block that may have a free page */
    u8 *reported;             /* free page reporting: per block, its free pages were reported
                                 (NULL: reporting is off); cleared when a page is taken */
};

extern struct abi_guest_view guest_view;
extern struct abi_alloc_record allocs[ABI_MAX_ALLOCS];
extern struct area boot_area;

void mm_init(const struct abi_bootinfo *bi);
void *kalloc_pages(u64 n);     /* zeroed, boot RAM */
void kfree_pages(void *p, u64 n);
void *kalloc_memmap(u64 n);    /* n contiguous kernel pages: boot RAM, then ZONE_NORMAL */
void kfree_memmap(void *p, u64 n);
u64 boot_node_pages(int nid);  /* boot RAM pages of a node (all nodes: nid < 0) */
u16 *blk_owner(struct area *z, u64 b);
u64 mb_of_block(struct area *z, u64 b);
void mb_block_range(struct area *z, u64 m, u64 *b0, u64 *b1);
u64 block_addr(struct area *z, u64 b);
u64 block_valid_pages(struct area *z, u64 b);
void mm_register_area(struct area *z);
void mm_unregister_area(struct area *z);
u64 first_unmovable_pfn(struct area *z, u64 b0, u64 b1); /* 0: none */
u64 mm_balloon_inflate(u64 want, long (*give)(u64 pa, u64 pages));
u64 mm_balloon_deflate(u64 want, long (*take)(u64 pa, u64 pages));
struct area *area_of_dev(int dev);
void set_blocks_zone(struct area *z, u64 b0, u64 b1, u32 zone);
void online_blocks_pages(struct area *z, u64 b0, u64 b1);
int isolate_and_migrate(struct area *z, u64 b0, u64 b1, u64 *migrated);
void unisolate(struct area *z, u64 b0, u64 b1);

u32 *page_links(u64 pa);      /* a page's two u32 list links, in its memory map (page->lru) */
u64 balloon_take_pages(u64 n, u64 *pas); /* up to n movable pages, owner OWN_BALLOON */
void balloon_put_page(u64 pa);          /* a balloon page back to the free pages */
u64 mm_managed_pages(void);   /* Linux's totalram_pages (before the balloon adjusts it) */
u64 mm_present_pages(void);   /* RAM present: boot RAM and online device blocks, all pages */
u64 mm_free_pages(void);
extern u64 pgfault_count;     /* pages first touched by workloads: minor faults */

long cmd_alloc(u64 bytes, u64 flags, u64 seed, u64 *v0, u64 *v1);
long cmd_free(u64 id, u64 *v0);
long cmd_touch(u64 id, u64 *v0);
long cmd_verify(u64 id, u64 *v0, u64 *v1);
void mm_stats(void);

/* ---- memory_hotplug.c ---- */
long mhp_add_memory(struct area *z, u64 m, u64 memmap_pages);
void mhp_remove_memory(struct area *z, u64 m, u64 memmap_pages);
u32 mhp_online_memory(struct area *z, u64 m, u32 online_type);
long mhp_offline_memory(struct area *z, u64 m, u64 *migrated);

/* ---- acpi_memhp.c: ACPI memory hotplug (DIMMs) ---- */
void acpi_memhp_init(const struct abi_bootinfo *bi);
void acpi_memhp_handle_irq(void);
void acpi_memhp_run_timers(void);
u64 acpi_memhp_next_deadline_ns(void); /* 0: none */
long acpi_memhp_online(u64 slot, u64 type, u64 *v0);
void acpi_memhp_stats(void);

/* ---- pv_balloon.c: the behaviour models' balloon (Xen, Hyper-V) ---- */
void pv_balloon_init(const struct abi_bootinfo *bi);
void pv_balloon_target_changed(void);
void pv_balloon_memory_changed(void);
void pv_balloon_stats(void);

/* ---- virtio_mem.c ---- */
struct cmdline_opts {
    int blacklisted;
    int balloon_blacklisted; /* modprobe.blacklist=virtio_balloon */
    int no_pv_balloon;  /* modprobe.blacklist=xen_balloon / hv_balloon: no balloon driver */
    int no_memhotplug;  /* acpi_no_memhotplug: no ACPI memory hotplug driver */
    u64 memory_block_size;
    u64 retry_ms;
    int adopt;         /* virtio_mem.adopt=1: keep memory found plugged at probe (the RFC's reboot) */
    int unplug_online; /* virtio_mem.unplug_online (Linux default: 1) */
    u32 online_type;   /* memhp_default_state= (ABI_MMOP_*; Linux's default: offline) */
    u32 online_policy; /* memory_hotplug.online_policy= (ABI_POLICY_*) */
    u64 auto_movable_ratio;      /* memory_hotplug.auto_movable_ratio= (Linux: 301) */
    int auto_movable_numa_aware; /* memory_hotplug.auto_movable_numa_aware= (Linux: 1) */
};
extern struct cmdline_opts opts;

void vmem_probe_all(const struct abi_bootinfo *bi);
void vmem_handle_irq(void);
void vmem_run_timers(void);
u64 vmem_next_timeout_us(void);
long vmem_dump(u64 which, u64 flags, u64 *v0, u64 *v1);
long vmem_rogue_target(u64 dev, u64 *addr);
long vmem_online(u64 which, u64 type, u64 *v0);
void vmem_stats(void);
/* what vmem_requests.c and pm.c need to know of a device (0: no such bound device) */
struct vmem_info {
    u64 mmio, node, block_size, plugged, requested, features;
    int broken;
    unsigned state; /* ABI_DRV_* */
};
int vmem_info(int i, struct vmem_info *out);
int vmem_nr_devs(void);
long vmem_freeze(void);  /* virtio_mem_freeze(): -EPERM with plugged memory, no PERSISTENT_SUSPEND */
void vmem_restore(void); /* virtio_mem_restore(): the queues again, DRIVER_OK, catch up */

/* ---- vmem_requests.c: vmemlab's experimental x-host-request queue (not in any spec) ---- */
#define VIRTIO_MEM_F_X_GUEST_REQUESTS 62
#define VIRTIO_MEM_F_X_MEMORY_TYPE 61 /* config offset 56: le16 memory_type (0 RAM, 1 RAM_HUGE) */
void xreq_setup(int dev, u64 mmio); /* queue 1 of a device that negotiated the bit */
long cmd_grow(u64 chunk, u64 limit, u64 flags, u64 *v0, u64 *v1);

/* ---- pm.c ---- */
long pm_suspend(void);

/* ---- virtio_balloon.c ---- */
extern struct abi_balloon_view balloon_view;
void balloon_probe(const struct abi_bootinfo *bi, int slot);
void balloon_handle_irq(void);
void balloon_run_timers(void);
u64 balloon_next_timeout_us(void);
int balloon_work(void);            /* one step of inflating/deflating; 0: nothing to do */
u64 balloon_oom_notify(void);      /* DEFLATE_ON_OOM: pages given back (0: none) */
void balloon_page_migrated(u64 old_pa, u64 new_pa);
void balloon_migrate_flush(void);
void page_reporting_notify(void);  /* a block became wholly free */
long balloon_rogue(u64 pages, u64 *v0, u64 *v1);
void balloon_stats(void);

/* ---- main.c ---- */
struct command {
    u64 seq, cmd, a0, a1, a2;
};
u64 guest_wait(u64 timeout_us); /* returns ABI_EV_* bits; commands are queued */
void do_exception(struct exc_frame *f);

#endif
