/* virtio-mmio (version 2) registers, status bits and the split ring's descriptor layout,
 * shared by the virtio-mem and virtio-balloon drivers (virtio 1.2 §4.2.2, §2.7). */
#ifndef VMEMLAB_VIRTIO_MMIO_H
#define VMEMLAB_VIRTIO_MMIO_H

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

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40
#define S_FAILED 0x80

#define F_VERSION_1 (1UL << 32)

#define INT_VRING 1
#define INT_CONFIG 2

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

/* The one chain a request/response queue uses: descriptor 0 the request (device-readable),
 * chained to descriptor 1 the response (device-writable). */
static inline void vring_req_resp(struct vring_desc *desc, const void *req, u32 req_len,
                                  void *resp, u32 resp_len)
{
    desc[0].addr = (u64)req;
    desc[0].len = req_len;
    desc[0].flags = DESC_F_NEXT;
    desc[0].next = 1;
    desc[1].addr = (u64)resp;
    desc[1].len = resp_len;
    desc[1].flags = DESC_F_WRITE;
    desc[1].next = 0;
}

/* A split virtqueue's driver area (avail ring) and device area (used ring) for a queue of
 * n entries (virtio 1.2, 2.7.6 and 2.7.8); each queue's structure embeds them. */
#define VRING_AVAIL(n)                            \
    struct {                                      \
        u16 flags, idx, ring[n], used_event;      \
    }
#define VRING_USED(n)                             \
    struct {                                      \
        u16 flags, idx;                           \
        struct {                                  \
            u32 id, len;                          \
        } ring[n];                                \
        u16 avail_event;                          \
    }

#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_MEM 24

#endif
