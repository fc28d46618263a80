/*
 * Native stage-2 TLB fill: the decisions of emulator/stage2.py's Stage2.fill, in C.
 *
 * Unicorn calls a UC_HOOK_TLB_FILL callback on every guest TLB miss. Through the Python
 * binding each miss is a ctypes callback that takes the GIL; with thirty machines streaming
 * through memory they queue for it on every fill. This function is registered directly on the
 * engine (uc_hook_add through ctypes, see emulator/native_stage2.py) and reads a plain C
 * description of the memory map, so a miss never enters Python.
 *
 * The description (struct s2_map) is owned by Python (ctypes structures with the same
 * layout; vmemlab_stage2_layout() lets Python check it). The device bitmaps it points to are
 * the device models' own bytearrays, pinned by a buffer export so they cannot move. The
 * decisions must stay exactly those of Stage2.fill: tests/emulator/test_stage2_native.py
 * runs random access streams through both and compares every answer.
 *
 * Built by setup.py as an optional extension (a plain shared library, no Python API), loaded
 * with ctypes; without a C compiler the Python fill is used.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__has_include)
#if __has_include(<unicorn/unicorn.h>)
#include <unicorn/unicorn.h>
#define VMEMLAB_HAVE_UNICORN_H 1
#endif
#endif

#ifndef VMEMLAB_HAVE_UNICORN_H
#ifdef VMEMLAB_REQUIRE_UNICORN_H
#error "unicorn/unicorn.h not found (the signature check needs it)"
#endif
/* The types of unicorn/unicorn.h (Unicorn 2.1.x) the callback's signature uses. The pip
 * build is isolated from the installed unicorn package, so its header is usually out of
 * reach; a test compiles this file against the real header to check these mirrors. */
typedef struct uc_struct uc_engine;
typedef enum uc_mem_type {
    UC_MEM_READ = 16,
    UC_MEM_WRITE,
    UC_MEM_FETCH,
    UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE_PROT,
    UC_MEM_READ_PROT,
    UC_MEM_FETCH_PROT,
    UC_MEM_READ_AFTER,
} uc_mem_type;
typedef enum uc_prot {
    UC_PROT_NONE = 0,
    UC_PROT_READ = 1,
    UC_PROT_WRITE = 2,
    UC_PROT_EXEC = 4,
    UC_PROT_ALL = 7,
} uc_prot;
typedef struct uc_tlb_entry {
    uint64_t paddr;
    uc_prot perms;
} uc_tlb_entry;
#endif

/* Keep in step with emulator/stage2.py (POLICY_*, DENY_*) and emulator/native_stage2.py. */
#define S2_MAX_IDENTITY 16
#define S2_MAX_DEVICES 16

/* Per-device policy byte: what an access to an UNPLUGGED block does. Plugged blocks are
 * always read/write and never executable; a fetch from an unplugged block is always refused.
 * No bit set: shipped QEMU (reads see the host's memory, writes go through). The decision is
 * stage2.policy_for() and one branch here and one in Stage2._fill_device. */
#define S2_POLICY_WRITE_PROTECT 0x01      /* x-rfc-write-protect=on: writes refused */
#define S2_POLICY_MEMSLOTS 0x02           /* dynamic-memslots=on: unmapped memslots hold nothing */
#define S2_POLICY_UNASSIGNED_IGNORED 0x04 /* x86: nothing mapped reads 0, drops the write */

#define S2_WRITTEN_NEW 2 /* written while unplugged, not yet reported (Python marks it seen) */

enum s2_deny_reason {
    S2_DENY_NONE = 0,
    S2_DENY_UNMAPPED = 1,            /* "unmapped address" */
    S2_DENY_FETCH_DEVICE = 2,        /* "instruction fetch from device memory" */
    S2_DENY_WRITE_UNPLUGGED = 3,     /* "write to unplugged block (x-rfc-write-protect)" */
    S2_DENY_FETCH_UNPLUGGED = 4,     /* "instruction fetch from unplugged block" */
    S2_DENY_NO_MEMSLOT = 5,          /* dynamic-memslots, arm: an external abort */
    S2_DENY_NO_MEMSLOT_WRITE_DROPPED = 6, /* dynamic-memslots, x86: the write is dropped */
};

struct s2_identity {
    uint64_t start, end; /* [start, end), aligned to the TLB page */
    uint32_t perms;      /* uc_prot */
    uint32_t pad;
};

struct s2_device {
    uint64_t base, end;        /* the device's region [base, end) */
    uint32_t shift;            /* log2(block size) */
    uint8_t policy;            /* S2_POLICY_* */
    uint8_t zero_dirty;        /* set with any zero_reads byte; Python clears both */
    uint8_t written_dirty;     /* set with any written byte set to S2_WRITTEN_NEW */
    uint8_t pad;
    const uint8_t *bitmap;     /* the device model's block states, 1 = plugged */
    uint8_t *zero_reads;       /* one byte per block: read through the zero page */
    uint8_t *written;          /* one byte per block: written while unplugged (0: never) */
    const uint8_t *memslots;   /* the device model's memslots, 1 = mapped */
    uint64_t memslot_size;     /* bytes per memslot (the last may be smaller) */
};

struct s2_denied {
    uint64_t addr;   /* the faulting guest address */
    int32_t access;  /* uc_mem_type of the access */
    int32_t device;  /* device index, -1 outside every device */
    int32_t reason;  /* enum s2_deny_reason, S2_DENY_NONE when nothing was refused */
    int32_t pad;
};

struct s2_map {
    uint64_t page_mask;    /* ~(TLB page size - 1) */
    uint64_t zero_page_pa; /* host-physical address of the shared zero page */
    uint32_t n_identity, n_devices;
    struct s2_identity identity[S2_MAX_IDENTITY];
    struct s2_device devices[S2_MAX_DEVICES];
    struct s2_denied denied; /* the last refused access */
    uint64_t fills;          /* TLB fills answered, refused ones included */
};

static bool deny(struct s2_map *m, uint64_t vaddr, uc_mem_type type, int32_t device,
                 int32_t reason)
{
    m->denied.addr = vaddr;
    m->denied.access = (int32_t)type;
    m->denied.device = device;
    m->denied.reason = reason;
    return false;
}

static bool fill_device(struct s2_map *m, int32_t index, uint64_t vaddr, uint64_t page,
                        uc_mem_type type, uc_tlb_entry *result)
{
    struct s2_device *d = &m->devices[index];
    uint64_t block = (vaddr - d->base) >> d->shift;

    if (d->bitmap[block]) {
        if (type == UC_MEM_FETCH)
            return deny(m, vaddr, type, index, S2_DENY_FETCH_DEVICE);
        result->paddr = page;
        result->perms = UC_PROT_READ | UC_PROT_WRITE;
        return true;
    }
    /* an unplugged block: the device's policy decides */
    if (type == UC_MEM_FETCH)
        return deny(m, vaddr, type, index, S2_DENY_FETCH_UNPLUGGED);
    if ((d->policy & S2_POLICY_MEMSLOTS) && !d->memslots[(vaddr - d->base) / d->memslot_size]) {
        /* no memslot: nothing in the guest-physical address space here */
        if (!(d->policy & S2_POLICY_UNASSIGNED_IGNORED))
            return deny(m, vaddr, type, index, S2_DENY_NO_MEMSLOT);
        if (type == UC_MEM_WRITE)
            return deny(m, vaddr, type, index, S2_DENY_NO_MEMSLOT_WRITE_DROPPED);
        result->paddr = m->zero_page_pa; /* unassigned_mem_read(): 0 */
        result->perms = UC_PROT_READ;
        return true;
    }
    if (type == UC_MEM_WRITE) {
        if (d->policy & S2_POLICY_WRITE_PROTECT)
            return deny(m, vaddr, type, index, S2_DENY_WRITE_UNPLUGGED);
        if (!d->written[block]) {
            d->written[block] = S2_WRITTEN_NEW;
            d->written_dirty = 1;
        }
        result->paddr = page; /* the host backs this page again */
        result->perms = UC_PROT_READ | UC_PROT_WRITE;
        return true;
    }
    if (d->written[block]) {
        result->paddr = page; /* what the rogue write left there */
        result->perms = UC_PROT_READ;
        return true;
    }
    d->zero_reads[block] = 1;
    d->zero_dirty = 1;
    result->paddr = m->zero_page_pa;
    result->perms = UC_PROT_READ;
    return true;
}

/* The UC_HOOK_TLB_FILL callback (uc_cb_tlbevent_t); user_data is the struct s2_map. */
bool vmemlab_stage2_fill(uc_engine *uc, uint64_t vaddr, uc_mem_type type,
                         uc_tlb_entry *result, void *user_data)
{
    struct s2_map *m = user_data;
    uint64_t page = vaddr & m->page_mask;
    uint32_t i;

    (void)uc;
    m->fills++;
    for (i = 0; i < m->n_identity; i++) {
        const struct s2_identity *w = &m->identity[i];
        if (w->start <= vaddr && vaddr < w->end) {
            result->paddr = page;
            result->perms = (uc_prot)w->perms;
            return true;
        }
    }
    for (i = 0; i < m->n_devices; i++) {
        const struct s2_device *d = &m->devices[i];
        if (d->base <= vaddr && vaddr < d->end)
            return fill_device(m, (int32_t)i, vaddr, page, type, result);
    }
    return deny(m, vaddr, type, -1, S2_DENY_UNMAPPED);
}

#ifdef VMEMLAB_HAVE_UNICORN_H
/* the compiler checks the signature against Unicorn's own callback type */
static const uc_cb_tlbevent_t vmemlab_stage2_fill_type_check __attribute__((unused)) =
    vmemlab_stage2_fill;
#endif

/* Layout facts Python compares with its ctypes mirror before trusting the library. */
uint64_t vmemlab_stage2_layout(int what)
{
    switch (what) {
    case 0: return sizeof(struct s2_map);
    case 1: return sizeof(struct s2_device);
    case 2: return sizeof(struct s2_identity);
    case 3: return offsetof(struct s2_map, denied);
    case 4: return offsetof(struct s2_map, fills);
    case 5: return offsetof(struct s2_device, bitmap);
    case 6: return sizeof(uc_tlb_entry);
    case 7: return S2_MAX_IDENTITY;
    case 8: return S2_MAX_DEVICES;
    case 9: return offsetof(struct s2_device, written);
    case 10: return offsetof(struct s2_device, memslot_size);
    default: return 0;
    }
}
