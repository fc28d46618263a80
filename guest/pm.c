/*
 * Suspend to RAM ("echo mem > /sys/power/state"), scaled down: the drivers' freeze callbacks,
 * PSCI SYSTEM_SUSPEND (the host's run state becomes "suspended" until system_wakeup), then the
 * restore callbacks. virtio_mem refuses to freeze with plugged memory unless the device offers
 * VIRTIO_MEM_F_PERSISTENT_SUSPEND (Linux 6.10+, virtio 1.4 drafts), as Linux does.
 * Only virtio_mem has a freeze callback here; the other drivers simply carry on.
 */
#include "guest.h"

long pm_suspend(void)
{
    printk("PM: suspend entry (deep)\n");
    printk("Freezing user space processes ... (elapsed 0.000 seconds) done.\n");
    long rc = vmem_freeze();
    if (rc) {
        printk("PM: Some devices failed to suspend, or early wake event detected\n");
        printk("PM: suspend exit\n");
        return rc;
    }
    printk("PM: suspend-to-RAM: entering sleep\n");
    smc0(PSCI_SYSTEM_SUSPEND, 0, 0, 0, 0, 0); /* returns after the host's system_wakeup */
    printk("PM: resume: waking up\n");
    vmem_restore();
    printk("PM: suspend exit\n");
    return 0;
}
