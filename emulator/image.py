"""Where the guest image comes from.

The built image is committed under ``guest/`` (as QEMU ships its firmware blobs), so running
vmemlab needs no cross compiler. ``VMEMLAB_GUEST_IMAGE`` points at another build.
"""

from __future__ import annotations

import os
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
DEFAULT_IMAGE = GUEST_DIR / "vmemlab-guest.bin"


def guest_image_path() -> Path:
    return Path(os.environ.get("VMEMLAB_GUEST_IMAGE", DEFAULT_IMAGE))


def load_guest_image() -> bytes:
    path = guest_image_path()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"guest image {path} is missing: run 'make guest' (needs clang, lld, llvm)"
        ) from None
