"""The cffi builder of ``sandboxlib.native._native`` (out-of-line API mode).

Named in setup.py's ``cffi_modules``.  The extension embeds a hash of every
file in csrc/ so that ``sandboxlib.native.binding`` can refuse a stale build.
"""

import importlib.util
import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
EXTENSION_SOURCES = ["spawn.c", "clone.c", "resolve.c", "report.c", "seccomp_compile.c", "idmap.c"]
INIT_SOURCES = [
    "init.c",
    "setup.c",
    "plan.c",
    "mounts.c",
    "resolve.c",
    "command.c",
    "launcher.c",
    "fdmsg.c",
    "clone.c",
    "report.c",
]
FRONT_SOURCE = "front.c"  # sbx-runtime, the sandboxlib-runtime command
STRICT_FLAGS = ["-D_GNU_SOURCE", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing"]


def _load_source_hash():
    """sandboxlib/native/source_hash.py, loaded by its path (the package is not importable while it builds)."""
    path = HERE.parent / "sandboxlib" / "native" / "source_hash.py"
    spec = importlib.util.spec_from_file_location("sbx_source_hash", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_hash


def source_hash(directory: pathlib.Path = HERE) -> str:
    """Hash of csrc/: what the build is made from."""
    return _load_source_hash()(directory)


ffibuilder = FFI()
ffibuilder.cdef((HERE / "native.cdef").read_text())
ffibuilder.set_source(
    "sandboxlib.native._native",
    "#include <sched.h>\n"
    + "".join(f'#include "{header}"\n' for header in ("sbx.h", "spawn.h", "resolve.h", "seccomp_compile.h", "idmap.h"))
    + f'static const char SBX_SOURCE_HASH[] = "{source_hash()}";\n',
    sources=[os.path.relpath(HERE / name) for name in EXTENSION_SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    libraries=["seccomp"],  # Debian's libseccomp-dev; only the host process compiles filters
    extra_compile_args=STRICT_FLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
