/*
 * The behaviour models' balloon driver: what the 2017 RFC's Q&A says of the Xen balloon and
 * the Hyper-V balloon, on this guest. NOT the Linux drivers (drivers/xen/balloon.c,
 * drivers/hv/hv_balloon.c) and not their hypervisor protocols: one small paravirtual protocol
 * (VMEM_CALL_PVBALLOON) shared by both models (bootinfo.hotplug.behaviour_model):
 *
 *  - TARGET: the bytes of RAM the host wants this guest to have (Xen: the toolstack's
 *    memory/target; Hyper-V: what Dynamic Memory assigns);
 *  - GIVE: pages the balloon took from the allocator, never touched, handed back
 *    (Xen: decrease_reservation);
 *  - TAKE: pages asked back before the balloon frees them (Xen: populate_physmap).
 *
 * The driver keeps (RAM it manages - ballooned) == target: it inflates at boot (Xen: the
 * guest boots seeing maxmem and must give the difference back at once), when the target
 * changes (ABI_EV_PVBALLOON) and when memory is hot-added (Hyper-V: hot-add, then balloon the
 * excess). Booted without it (modprobe.blacklist=xen_balloon / hv_balloon), nothing is given
 * back: under the Xen model the guest is killed once it touches memory it was never given.
 */
#include "guest.h"

static int model, enabled;

static u64 bcall(u64 op, u64 a, u64 b)
{
    return smc0(VMEM_CALL_PVBALLOON, op, a, b, 0, 0);
}

static long give(u64 pa, u64 pages)
{
    guest_view.pvballoon.gives++;
    return (long)bcall(ABI_PVB_OP_GIVE, pa, pages);
}

static long take(u64 pa, u64 pages)
{
    guest_view.pvballoon.takes++;
    return (long)bcall(ABI_PVB_OP_TAKE, pa, pages);
}

static const char *name(void)
{
    return model == ABI_MODEL_XEN ? "xen:balloon (model)" : "hv_balloon (model)";
}

static void converge(void)
{
    struct abi_pvballoon_view *v = &guest_view.pvballoon;
    u64 target = bcall(ABI_PVB_OP_TARGET, 0, 0);
    if (target == ~0UL)
        return;
    v->target = target;
    v->ram_pages = mm_present_pages();
    u64 want_pages = target >> PAGE_SHIFT;
    u64 have = v->ram_pages - v->ballooned_pages;
    v->state = ABI_PVB_WORKING;
    if (have > want_pages) {
        u64 n = mm_balloon_inflate(have - want_pages, give);
        v->ballooned_pages += n;
        if (n)
            printk("%s: gave back %lu pages (%lu MiB); %lu pages ballooned\n", name(), n,
                   n >> 8, v->ballooned_pages);
        if (n < have - want_pages) {
            printk("%s: could inflate only %lu of %lu pages\n", name(), n, have - want_pages);
            v->state = ABI_PVB_SHORT;
            return;
        }
    } else if (have < want_pages && v->ballooned_pages) {
        u64 n = mm_balloon_deflate(MIN(want_pages - have, v->ballooned_pages), take);
        v->ballooned_pages -= n;
        if (n)
            printk("%s: took back %lu pages (%lu MiB); %lu pages ballooned\n", name(), n,
                   n >> 8, v->ballooned_pages);
    }
    v->state = ABI_PVB_IDLE;
}

void pv_balloon_init(const struct abi_bootinfo *bi)
{
    model = (int)bi->hotplug.behaviour_model;
    memset(&guest_view.pvballoon, 0, sizeof(guest_view.pvballoon));
    guest_view.pvballoon.model = (u32)model;
    if (model != ABI_MODEL_XEN && model != ABI_MODEL_HYPERV) {
        model = 0;
        return;
    }
    guest_view.pvballoon.ram_pages = mm_present_pages();
    if (opts.no_pv_balloon) {
        guest_view.pvballoon.state = ABI_PVB_DISABLED;
        printk("%s: driver blacklisted on the command line: nothing is given back\n", name());
        return;
    }
    enabled = 1;
    printk("%s: initialising balloon driver (%lu MiB of RAM seen)\n", name(),
           guest_view.pvballoon.ram_pages >> 8);
    converge();
}

void pv_balloon_target_changed(void)
{
    if (enabled)
        converge();
}

void pv_balloon_memory_changed(void)
{
    if (enabled)
        converge();
}

void pv_balloon_stats(void)
{
    struct abi_pvballoon_view *v = &guest_view.pvballoon;
    if (!model)
        return;
    printk("%s: target 0x%lx, RAM %lu pages, ballooned %lu pages, state %u\n", name(),
           v->target, v->ram_pages, v->ballooned_pages, v->state);
}
