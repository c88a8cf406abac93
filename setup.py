"""Build: the cffi extension ``sandboxlib._native`` and the static init
executable ``sandboxlib/sbx-init`` (the PID 1 of every container)."""
import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
import build_native  # noqa: E402  (csrc/ is not a package)


class BuildWithInit(build_ext):
    """build_ext that also links csrc/init.c statically next to the extension."""

    def run(self):
        super().run()
        target_dir = os.path.dirname(self.get_ext_fullpath("sandboxlib._native"))
        os.makedirs(target_dir, exist_ok=True)
        output = os.path.join(target_dir, "sbx-init")
        sources = [os.path.join("csrc", name) for name in build_native.INIT_SOURCES]
        compiler = os.environ.get("CC", "cc")
        subprocess.check_call(
            [compiler, "-static", "-s", *build_native.STRICT_FLAGS, "-Icsrc",
             f'-DSBX_SOURCE_HASH="{build_native.source_hash()}"', "-o", output, *sources]
        )


setup(
    name="sandboxlib",
    version="0.1.0",
    description="Run code in Linux containers from Python: no daemon, milliseconds per sandbox.",
    packages=["sandboxlib"],
    python_requires=">=3.9",
    setup_requires=["cffi>=1.15"],
    install_requires=["cffi>=1.15", "attrs>=23.1", "psutil>=5.9"],
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithInit},
    entry_points={"console_scripts": ["sandboxlib = sandboxlib.cli:main"]},
    zip_safe=False,
)
