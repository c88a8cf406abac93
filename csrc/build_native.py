"""The cffi builder of ``sandboxlib.native._native`` (out-of-line API mode).

Named in setup.py's ``cffi_modules``.  The extension embeds a hash of every
file in csrc/ so that ``sandboxlib.native.binding`` can refuse a stale build.
"""
import hashlib
import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
EXTENSION_SOURCES = ["spawn.c", "clone.c", "resolve.c", "report.c", "seccomp_compile.c"]
INIT_SOURCES = ["init.c", "setup.c", "plan.c", "mounts.c", "resolve.c", "command.c", "launcher.c", "fdmsg.c", "clone.c", "report.c"]
STRICT_FLAGS = ["-D_GNU_SOURCE", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing"]


def source_hash(directory: pathlib.Path = HERE) -> str:
    """Hash of csrc/ (C sources, headers, cdef): what the build was made from."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.suffix in {".c", ".h", ".cdef"}:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


ffibuilder = FFI()
ffibuilder.cdef((HERE / "native.cdef").read_text())
ffibuilder.set_source(
    "sandboxlib.native._native",
    '#include <sched.h>\n#include "sbx.h"\n#include "spawn.h"\n#include "resolve.h"\n#include "seccomp_compile.h"\n'
    f'static const char SBX_SOURCE_HASH[] = "{source_hash()}";\n',
    sources=[os.path.relpath(HERE / name) for name in EXTENSION_SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    libraries=["seccomp"],  # Debian's libseccomp-dev; only the host process compiles filters
    extra_compile_args=STRICT_FLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
