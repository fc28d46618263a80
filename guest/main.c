/* kmain, command line, the event loop, workload commands and the exception handler. */
#include "guest.h"
#include "virtio_mmio.h"

#define CMDQ_LEN 16
static struct command cmdq[CMDQ_LEN];
static unsigned cq_head, cq_tail;
static int irq_pending;
static int acpi_pending;
static int pv_balloon_pending; /* the behaviour model's balloon target changed */
static int panicked;
static char cmdline[ABI_CMDLINE_LEN];

/* ---- events ---- */
static void done(u64 seq, long status, u64 v0, u64 v1)
{
    smc0(VMEM_CALL_DONE, seq, (u64)status, v0, v1, 0);
}

u64 guest_wait(u64 timeout_us)
{
    struct smc_regs r = {{VMEM_CALL_WAIT, timeout_us, 0, 0, 0, 0}};
    smc_call(&r);
    u64 ev = r.x[0];
    if (ev & ABI_EV_COMMAND) {
        if (cq_tail - cq_head >= CMDQ_LEN) {
            done(r.x[1], -ABI_EBUSY, 0, 0);
        } else {
            struct command *c = &cmdq[cq_tail++ % CMDQ_LEN];
            c->seq = r.x[1];
            c->cmd = r.x[2];
            c->a0 = r.x[3];
            c->a1 = r.x[4];
            c->a2 = r.x[5];
        }
    }
    if (ev & ABI_EV_VIRTIO)
        irq_pending = 1;
    if (ev & ABI_EV_ACPI)
        acpi_pending = 1;
    if (ev & ABI_EV_PVBALLOON)
        pv_balloon_pending = 1;
    return ev;
}

/* ---- command line ---- */
static int parse_u64(const char *s, u64 len, u64 *out, int suffixes)
{
    u64 v = 0, base = 10, i = 0;
    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    }
    if (i >= len)
        return -1;
    for (; i < len; i++) {
        char c = s[i];
        u64 dgt;
        if (c >= '0' && c <= '9')
            dgt = (u64)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            dgt = (u64)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            dgt = (u64)(c - 'A' + 10);
        else
            break;
        v = v * base + dgt;
    }
    if (i < len && suffixes && i + 1 == len) {
        switch (s[i]) {
        case 'k': case 'K': v <<= 10; i++; break;
        case 'm': case 'M': v <<= 20; i++; break;
        case 'g': case 'G': v <<= 30; i++; break;
        default: break;
        }
    }
    if (i != len)
        return -1;
    *out = v;
    return 0;
}

static int has_prefix(const char *tok, u64 len, const char *p)
{
    u64 n = strlen(p);
    return len >= n && !strncmp(tok, p, n);
}

static int token_is(const char *tok, u64 len, const char *word)
{
    return len == strlen(word) && !strncmp(tok, word, len);
}

/* kstrtobool(): 1/0, y/n, on/off */
static int parse_bool(const char *v, u64 len, int *out)
{
    if (token_is(v, len, "1") || token_is(v, len, "y") || token_is(v, len, "Y") ||
        token_is(v, len, "on")) {
        *out = 1;
        return 0;
    }
    if (token_is(v, len, "0") || token_is(v, len, "n") || token_is(v, len, "N") ||
        token_is(v, len, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

static void invalid_param(const char *module, const char *v, u64 len, const char *param)
{
    char val[ABI_CMDLINE_LEN];
    u64 n = MIN(len, sizeof(val) - 1);
    memcpy(val, v, n);
    val[n] = 0;
    printk("%s: '%s' invalid for parameter '%s'\n", module, val, param);
}

/* mhp_online_type_from_str() */
static int online_type_from_str(const char *v, u64 len)
{
    if (token_is(v, len, "offline"))
        return ABI_MMOP_OFFLINE;
    if (token_is(v, len, "online"))
        return ABI_MMOP_ONLINE;
    if (token_is(v, len, "online_kernel"))
        return ABI_MMOP_ONLINE_KERNEL;
    if (token_is(v, len, "online_movable"))
        return ABI_MMOP_ONLINE_MOVABLE;
    return -1;
}

static void parse_cmdline(void)
{
    opts.blacklisted = 0;
    opts.balloon_blacklisted = 0;
    opts.no_pv_balloon = 0;
    opts.no_memhotplug = 0;
    opts.memory_block_size = 128UL << 20;
    opts.retry_ms = 1000;
    opts.adopt = 0;
    opts.unplug_online = 1;
    opts.online_type = ABI_MMOP_OFFLINE; /* no CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE (Debian) */
    opts.online_policy = ABI_POLICY_CONTIG_ZONES;
    opts.auto_movable_ratio = 301;
    opts.auto_movable_numa_aware = 1;
    const char *s = cmdline;
    while (*s) {
        while (*s == ' ')
            s++;
        const char *tok = s;
        while (*s && *s != ' ')
            s++;
        u64 len = (u64)(s - tok);
        if (!len)
            continue;
        if (has_prefix(tok, len, "modprobe.blacklist=")) {
            const char *v = tok + 19, *end = tok + len;
            while (v < end) {
                const char *e = v;
                while (e < end && *e != ',')
                    e++;
                if (e - v == 10 && !strncmp(v, "virtio_mem", 10))
                    opts.blacklisted = 1;
                else if (e - v == 14 && !strncmp(v, "virtio_balloon", 14))
                    opts.balloon_blacklisted = 1;
                else if ((e - v == 11 && !strncmp(v, "xen_balloon", 11)) ||
                         (e - v == 10 && !strncmp(v, "hv_balloon", 10)))
                    opts.no_pv_balloon = 1;
                v = e + 1;
            }
        } else if (token_is(tok, len, "acpi_no_memhotplug")) {
            opts.no_memhotplug = 1;
        } else if (has_prefix(tok, len, "memory_block_size=")) {
            u64 v;
            if (parse_u64(tok + 18, len - 18, &v, 1) || v < PAGE_SIZE || (v & (v - 1)))
                printk("memory_block_size: invalid value, using 0x%lx\n", opts.memory_block_size);
            else
                opts.memory_block_size = v;
        } else if (len == 17 && has_prefix(tok, len, "virtio_mem.adopt=")) {
            printk("virtio_mem.adopt: expects 0 or 1\n");
        } else if (has_prefix(tok, len, "virtio_mem.adopt=")) {
            opts.adopt = tok[17] == '1';
        } else if (has_prefix(tok, len, "virtio_mem.retry_ms=")) {
            u64 v;
            if (parse_u64(tok + 20, len - 20, &v, 0) || !v)
                printk("virtio_mem.retry_ms: invalid value, using %lu\n", opts.retry_ms);
            else
                opts.retry_ms = v;
        } else if (has_prefix(tok, len, "virtio_mem.unplug_online=")) {
            if (parse_bool(tok + 25, len - 25, &opts.unplug_online))
                invalid_param("virtio_mem", tok + 25, len - 25, "unplug_online");
        } else if (has_prefix(tok, len, "memhp_default_state=")) {
            int type = online_type_from_str(tok + 20, len - 20);
            if (type >= 0) /* setup_memhp_default_state() ignores anything else */
                opts.online_type = (u32)type;
        } else if (has_prefix(tok, len, "memory_hotplug.online_policy=")) {
            const char *v = tok + 29;
            if (token_is(v, len - 29, "contig-zones"))
                opts.online_policy = ABI_POLICY_CONTIG_ZONES;
            else if (token_is(v, len - 29, "auto-movable"))
                opts.online_policy = ABI_POLICY_AUTO_MOVABLE;
            else
                invalid_param("memory_hotplug", v, len - 29, "online_policy");
        } else if (has_prefix(tok, len, "memory_hotplug.auto_movable_ratio=")) {
            u64 v;
            if (parse_u64(tok + 34, len - 34, &v, 0) || v > 0xffffffffUL)
                invalid_param("memory_hotplug", tok + 34, len - 34, "auto_movable_ratio");
            else
                opts.auto_movable_ratio = v;
        } else if (has_prefix(tok, len, "memory_hotplug.auto_movable_numa_aware=")) {
            if (parse_bool(tok + 39, len - 39, &opts.auto_movable_numa_aware))
                invalid_param("memory_hotplug", tok + 39, len - 39, "auto_movable_numa_aware");
        }
    }
}

/* ---- commands ---- */
static void run_command(struct command *c)
{
    long st = 0;
    u64 v0 = 0, v1 = 0;

    switch (c->cmd) {
    case ABI_CMD_ALLOC:
        st = cmd_alloc(c->a0, c->a1, c->a2, &v0, &v1);
        break;
    case ABI_CMD_FREE:
        st = cmd_free(c->a0, &v0);
        break;
    case ABI_CMD_TOUCH:
        st = cmd_touch(c->a0, &v0);
        break;
    case ABI_CMD_VERIFY:
        st = cmd_verify(c->a0, &v0, &v1);
        break;
    case ABI_CMD_DUMP:
        st = vmem_dump(c->a0, c->a1, &v0, &v1);
        break;
    case ABI_CMD_ROGUE_WRITE: {
        u64 addr = c->a0;
        if (!addr)
            st = vmem_rogue_target(c->a1, &addr);
        if (st)
            break;
        v0 = addr;
        if (rogue_store(addr, 0xdeadbeefdeadbeefUL)) {
            st = -ABI_EFAULT;
        } else if (probe_load(addr, &v1)) {
            st = -ABI_EFAULT; /* stored, but reading it back faulted */
        } else {
            printk("rogue write to 0x%lx went through: reads back 0x%lx\n", addr, v1);
        }
        break;
    }
    case ABI_CMD_READ:
        v1 = c->a0;
        if (probe_load(c->a0, &v0)) {
            st = -ABI_EFAULT;
            v0 = 0;
        }
        break;
    case ABI_CMD_ONLINE:
        if (c->a0 >= ABI_TARGET_DIMM && c->a0 != ~0UL) {
            st = acpi_memhp_online(c->a0 - ABI_TARGET_DIMM, c->a1, &v0);
        } else {
            st = vmem_online(c->a0, c->a1, &v0);
            if (!st && c->a0 == ~0UL) {
                u64 more = 0;
                acpi_memhp_online(~0UL, c->a1, &more);
                v0 += more;
            }
        }
        break;
    case ABI_CMD_BALLOON_ROGUE:
        st = balloon_rogue(c->a0, &v0, &v1);
        break;
    case ABI_CMD_GROW:
        st = cmd_grow(c->a0, c->a1, c->a2, &v0, &v1);
        break;
    case ABI_CMD_SUSPEND:
        st = pm_suspend();
        break;
    case ABI_CMD_STATS:
        mm_stats();
        vmem_stats();
        balloon_stats();
        acpi_memhp_stats();
        pv_balloon_stats();
        break;
    case ABI_CMD_REBOOT:
        printk("reboot: Restarting system\n");
        done(c->seq, 0, 0, 0);
        smc0(PSCI_SYSTEM_RESET, 0, 0, 0, 0, 0);
        return;
    case ABI_CMD_POWEROFF:
        printk("reboot: Power down\n");
        done(c->seq, 0, 0, 0);
        smc0(PSCI_SYSTEM_OFF, 0, 0, 0, 0, 0);
        return;
    default:
        st = -ABI_EINVAL;
        break;
    }
    done(c->seq, st, v0, v1);
}

/* ---- exceptions ---- */
static void halt_forever(void)
{
    /* the host stays in control: keep answering, with -EIO */
    for (;;) {
        while (cq_head != cq_tail) {
            struct command *c = &cmdq[cq_head++ % CMDQ_LEN];
            done(c->seq, -EIO, 0, 0);
        }
        guest_wait(0);
    }
}

void do_exception(struct exc_frame *f)
{
    u64 v = f->vector;
    if (v == 1 || v == 5) { /* IRQ: nothing is wired to it; the wait call reports events */
        irq_pending = 1;
        return;
    }
    if ((v & 3) == 0) { /* synchronous */
        for (struct ex_entry *e = __start_ex_table; e < __stop_ex_table; e++) {
            if (e->insn != f->elr)
                continue;
            u64 addr = f->far ? f->far : f->x[0];
            guest_view.faults++;
            guest_view.last_fault_addr = addr;
            printk("%s 0x%lx blocked (ESR 0x%lx, FAR 0x%lx)\n",
                   e->kind == EX_STORE ? "rogue write to" : "read from", f->x[0], f->esr, f->far);
            report(ABI_STATUS_FAULT, f->esr, f->far, f->elr, 0);
            f->elr = e->fixup;
            return;
        }
    }
    panicked = 1;
    printk("Unable to handle kernel exception (vector %lu) at virtual address 0x%lx\n", v, f->far);
    printk("Internal error: Oops: ESR 0x%lx FAR 0x%lx ELR 0x%lx SPSR 0x%lx\n", f->esr, f->far,
           f->elr, f->spsr);
    printk("Kernel panic - not syncing: Oops: Fatal exception\n");
    report(ABI_STATUS_PANIC, f->esr, f->far, f->elr, 0);
    halt_forever();
}

/* the nearest timer of the virtio-mem driver and of ACPI memory hotplug, in us (0: none) */
static u64 next_timeout_us(void)
{
    u64 us = vmem_next_timeout_us(), tb = balloon_next_timeout_us();
    if (tb && (!us || tb < us))
        us = tb;
    u64 deadline = acpi_memhp_next_deadline_ns();
    if (deadline) {
        u64 now = now_ns();
        u64 acpi_us = deadline > now ? (deadline - now + 999) / 1000 : 1;
        if (!us || acpi_us < us)
            us = acpi_us;
    }
    return us;
}

/* ---- boot ---- */
void kmain(const struct abi_bootinfo *bi)
{
    if (bi->magic != ABI_BOOTINFO_MAGIC || bi->version != ABI_BOOTINFO_VERSION) {
        console_init(ABI_UART_BASE);
        printk("Kernel panic - not syncing: bad boot info (magic 0x%lx version %u)\n", bi->magic,
               bi->version);
        report(ABI_STATUS_PANIC, 0, (u64)bi, 0, 0);
        halt_forever();
    }
    console_init(bi->uart_base);
    for (u64 i = 0; i + 1 < ABI_CMDLINE_LEN && bi->cmdline[i]; i++)
        cmdline[i] = bi->cmdline[i];

    guest_view.magic = ABI_VIEW_MAGIC;
    guest_view.version = ABI_VIEW_VERSION;
    guest_view.nr_devices = (u32)MIN(bi->nr_virtio, ABI_MAX_DEVICES);

    printk("Booting vmemlab guest kernel on AArch64 (EL1, MMU off)\n");
    printk("Machine model: vmemlab virt\n");
    for (u64 i = 0; i < bi->nr_nodes && i < ABI_MAX_NODES; i++)
        printk("NUMA: node %lu: [mem 0x%lx-0x%lx]\n", bi->nodes[i].node_id, bi->nodes[i].ram_base,
               bi->nodes[i].ram_base + bi->nodes[i].ram_size - 1);
    printk("Kernel command line: %s\n", cmdline);
    parse_cmdline();
    guest_view.online_type = opts.online_type;
    guest_view.online_policy = opts.online_policy;
    guest_view.auto_movable_ratio = opts.auto_movable_ratio;
    mm_init(bi);
    printk("Memory: %luK/%luK available (%luK kernel code+data, %luK reserved)\n",
           guest_view.boot_free * 4, bi->ram_size >> 10,
           ((u64)__end - (u64)__image_start) >> 10, guest_view.boot_kernel * 4);
    report(ABI_STATUS_BOOTED, (u64)&guest_view, !opts.blacklisted, 0, 0);
    if (opts.blacklisted)
        printk("virtio_mem: driver blacklisted on the command line, device memory stays unused\n");
    acpi_memhp_init(bi); /* ACPI's scan adds the DIMMs present at boot */
    pv_balloon_init(bi);
    vmem_probe_all(bi);
    /* the other drivers, by device id (virtio_mem bound its own above) */
    for (u64 i = 0; i < bi->nr_virtio && i < ABI_MAX_DEVICES; i++) {
        u64 mmio = bi->virtio[i].mmio_base;
        if (mmio_read32(mmio + VM_MAGIC) == VIRTIO_MMIO_MAGIC &&
            mmio_read32(mmio + VM_VERSION) == 2 &&
            mmio_read32(mmio + VM_DEVICE_ID) == VIRTIO_ID_BALLOON)
            balloon_probe(bi, (int)i);
    }

    for (;;) {
        if (cq_head != cq_tail) {
            struct command c = cmdq[cq_head++ % CMDQ_LEN];
            run_command(&c);
            continue;
        }
        if (irq_pending) {
            irq_pending = 0;
            vmem_handle_irq();
            balloon_handle_irq();
            continue;
        }
        if (acpi_pending) {
            acpi_pending = 0;
            acpi_memhp_handle_irq();
            pv_balloon_memory_changed();
            continue;
        }
        if (pv_balloon_pending) {
            pv_balloon_pending = 0;
            pv_balloon_target_changed();
            continue;
        }
        vmem_run_timers();
        balloon_run_timers();
        acpi_memhp_run_timers();
        if (cq_head != cq_tail || irq_pending || acpi_pending || pv_balloon_pending)
            continue;
        if (balloon_work()) /* the balloon's work item: one array of pages at a time */
            continue;
        guest_wait(next_timeout_us());
    }
}
