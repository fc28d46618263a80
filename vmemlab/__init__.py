"""vmemlab: a browser sandbox for teaching virtio-mem (the ``vmemlab`` command lives in ``cli``)."""

__version__ = "0.1.0"
