"""The one build step pyproject.toml cannot declare stably: the native stage-2 fill.

``emulator/native/stage2_fill.c`` becomes ``emulator/_stage2_fill*.so``, a plain shared
library (no Python API) that ``emulator.native_stage2`` loads with ctypes. ``optional``: where
no C compiler works the install goes on and the machine uses the Python fill instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "emulator._stage2_fill",
            sources=["emulator/native/stage2_fill.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
