"""Build: the cffi extension ``sandboxlib.native._native`` and the static init
executable ``sandboxlib/native/sbx-init`` (the PID 1 of every container)."""
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
import build_native  # noqa: E402  (csrc/ is not a package)


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
    statically next to the extension."""

    def run(self):
        super().run()
        target_dir = os.path.dirname(self.get_ext_fullpath("sandboxlib.native._native"))
        os.makedirs(target_dir, exist_ok=True)
        output = os.path.join(target_dir, "sbx-init")
        sources = [os.path.join("csrc", name) for name in build_native.INIT_SOURCES]
        subprocess.check_call(
            [*init_compiler(), "-static", "-s", *build_native.STRICT_FLAGS, "-Icsrc",
             f'-DSBX_SOURCE_HASH="{build_native.source_hash()}"', "-o", output, *sources]
        )


setup(
    name="sandboxlib",
    version="0.1.0",
    description="Run code in Linux containers from Python: no daemon, milliseconds per sandbox.",
    packages=find_packages(include=["sandboxlib", "sandboxlib.*"]),
    package_data={"sandboxlib.security": ["data/*.json", "data/*.md"]},  # the default seccomp profile
    python_requires=">=3.9",
    setup_requires=["cffi>=1.15"],
    install_requires=["cffi>=1.15", "attrs>=23.1", "psutil>=5.9", "zstandard>=0.19", "cloudpickle>=2.0"],
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithInit},
    entry_points={"console_scripts": ["sandboxlib = sandboxlib.frontends.cli:main"],
                  "pytest11": ["sandboxlib = sandboxlib.frontends.pytest_plugin"]},
    zip_safe=False,
)
