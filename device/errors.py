"""Exception types of the device layer.

One base class so the machine can catch "anything the device model reports" without catching
its own bugs; the subclasses say which side misbehaved (host config, migration stream, guest
driver, guest ring, guest memory, host backend).
"""


class VmemError(Exception):
    """Base of every error the device layer raises on purpose."""


class ConfigError(VmemError):
    """Invalid device properties (QEMU realize / property-setter errors, same text)."""


class DeviceNotFound(ConfigError):
    """No device has this id (QEMU: "Device 'ID' not found", QMP class DeviceNotFound)."""

    def __init__(self, dev_id: str) -> None:
        super().__init__(f"Device '{dev_id}' not found")
        self.dev_id = dev_id


class MigrationError(VmemError):
    """A saved state cannot be loaded here (QEMU migration sanity-check errors, same text)."""


class ProtocolViolation(VmemError):
    """The guest driver broke the virtio-mem protocol; the device becomes broken."""


class VirtqueueError(VmemError):
    """The guest's split virtqueue is malformed; the device becomes broken."""


class GuestMemoryError(VmemError):
    """A guest-physical range is not accessible for DMA (raised by the emulator's accessor)."""


class BackendError(VmemError):
    """The host could not plug/discard backing memory; the request is answered BUSY."""
