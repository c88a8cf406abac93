"""Build: the cffi extension ``sandboxlib.native._native``, the static init
executable ``sandboxlib/native/sbx-init`` (the PID 1 of every container) and
the OCI runtime's C front ``sandboxlib/native/sbx-runtime``, installed as the
``sandboxlib-runtime`` command (csrc/front.c)."""

import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.install_scripts import install_scripts

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
    """build_ext that also links sbx-init (csrc/init.c and friends) and
    sbx-runtime (csrc/front.c) statically next to the extension: in the
    build directory for a wheel, in sandboxlib/ for an in-place build."""

    def native_path(self, name):
        return os.path.join(os.path.dirname(self.get_ext_fullpath("sandboxlib.native._native")), name)

    def link(self, output, sources):
        os.makedirs(os.path.dirname(output), exist_ok=True)
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
                *(os.path.join("csrc", name) for name in sources),
            ]
        )

    def run(self):
        super().run()
        self.link(self.native_path("sbx-init"), build_native.INIT_SOURCES)
        self.link(self.native_path(FRONT), [build_native.FRONT_SOURCE])

    def get_outputs(self):
        return [*super().get_outputs(), self.native_path("sbx-init"), self.native_path(FRONT)]


FRONT = "sbx-runtime"


class InstallFront(install_scripts):
    """The console scripts, and the C front as the ``sandboxlib-runtime``
    command beside them (in a wheel: its .data/scripts); it runs the
    ``sandboxlib-runtime-python`` console script for what it does not serve."""

    def run(self):
        super().run()
        target = os.path.join(self.install_dir, "sandboxlib-runtime")
        self.mkpath(self.install_dir)
        self.copy_file(self.get_finalized_command("build_ext").native_path(FRONT), target)
        os.chmod(target, 0o755)
        self.outfiles.append(target)


# The project's metadata, packages, data and entry points are in pyproject.toml;
# only what needs code stays here: the cffi extension and the sbx-init build.
setup(
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithInit, "install_scripts": InstallFront},
)
