"""vmemlab device layer: virtio-mem model, virtio-mmio transport, split virtqueue.

Pure Python (no Unicorn, no Flask) so the device semantics can be tested, replayed and
reasoned about without an emulator; the machine plugs in guest memory, host backing and IRQs.
"""

from device.errors import (
    BackendError,
    ConfigError,
    GuestMemoryError,
    MigrationError,
    ProtocolViolation,
    VirtqueueError,
    VmemError,
)
from device.events import (
    BlockStateChange,
    ConfigChange,
    DeviceBroken,
    DeviceReset,
    Event,
    VirtioRequest,
    VirtioResponse,
)
from device.virtio_mem import MemoryBackend, VirtioMemDevice, VirtioMemOptions
from device.virtio_mmio import VirtioMmioTransport
from device.virtqueue import Chain, GuestMemory, SplitVirtqueue

__all__ = [
    "BackendError",
    "BlockStateChange",
    "Chain",
    "ConfigChange",
    "ConfigError",
    "DeviceBroken",
    "DeviceReset",
    "Event",
    "GuestMemory",
    "GuestMemoryError",
    "MemoryBackend",
    "MigrationError",
    "ProtocolViolation",
    "SplitVirtqueue",
    "VirtioMemDevice",
    "VirtioMemOptions",
    "VirtioMmioTransport",
    "VirtioRequest",
    "VirtioResponse",
    "VirtqueueError",
    "VmemError",
]
