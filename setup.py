"""Build: the cffi extension ``sandboxlib.native._native`` and the static init
executable ``sandboxlib/native/sbx-init`` (the PID 1 of every container)."""

import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
import build_native


def init_compiler():
    """musl-gcc when there is one (a 40 KB sbx-init instead of 800 KB with
    glibc: less to exec and to keep resident per container), else cc.
    musl's headers lack the kernel's: those come after musl's own."""
    musl = shutil.which("musl-gcc")
    if musl and not os.environ.get("SBX_INIT_CC"):
        return [musl, "-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu"]
    return [os.environ.get("SBX_INIT_CC") or os.environ.get("CC", "cc")]


class BuildWithInit(build_ext):
    """build_ext that also links sbx-init (csrc/init.c and friends)
    statically next to the extension: in the build directory for a wheel,
    in sandboxlib/ for an in-place build."""

    def init_path(self):
        return os.path.join(os.path.dirname(self.get_ext_fullpath("sandboxlib.native._native")), "sbx-init")

    def run(self):
        super().run()
        output = self.init_path()
        os.makedirs(os.path.dirname(output), exist_ok=True)
        sources = [os.path.join("csrc", name) for name in build_native.INIT_SOURCES]
        subprocess.check_call(
            [
                *init_compiler(),
                "-static",
                "-s",
                *build_native.STRICT_FLAGS,
                "-Icsrc",
                f'-DSBX_SOURCE_HASH="{build_native.source_hash()}"',
                "-o",
                output,
                *sources,
            ]
        )

    def get_outputs(self):
        return [*super().get_outputs(), self.init_path()]


# The project's metadata, packages, data and entry points are in pyproject.toml;
# only what needs code stays here: the cffi extension and the sbx-init build.
setup(
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithInit},
)
