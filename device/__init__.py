"""vmemlab device layer: virtio-mem and virtio-balloon, virtio-mmio transport, split virtqueue.

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
    BalloonActual,
    BalloonPages,
    BalloonReport,
    BalloonStats,
    BlockStateChange,
    ConfigChange,
    DeviceBroken,
    DeviceReset,
    Event,
    VirtioRequest,
    VirtioResponse,
)
from device.virtio_balloon import BalloonBackend, BalloonOptions, VirtioBalloonDevice
from device.virtio_mem import MemoryBackend, VirtioMemDevice, VirtioMemOptions
from device.virtio_mmio import QueueDevice, VirtioMmioTransport
from device.virtqueue import Chain, GuestMemory, SplitVirtqueue

__all__ = [
    "BackendError",
    "BalloonActual",
    "BalloonBackend",
    "BalloonOptions",
    "BalloonPages",
    "BalloonReport",
    "BalloonStats",
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
    "QueueDevice",
    "SplitVirtqueue",
    "VirtioBalloonDevice",
    "VirtioMemDevice",
    "VirtioMemOptions",
    "VirtioMmioTransport",
    "VirtioRequest",
    "VirtioResponse",
    "VirtqueueError",
    "VmemError",
]
