"""Device nodes of our own for runs of other OCI runtimes (the benchmarks'
peers, the conformance run): crun 1.8 chowns the host's /dev/null to a
user-namespace container's root when it binds it in (the machine's
/dev/null became 1000000000:1000000000).  In a private mount namespace,
nodes of the same devices on a tmpfs are bound over the host's: what a
runtime does to them stays there."""

from __future__ import annotations

import os
import stat
import subprocess

__all__ = ["DEVICES", "bind_private_devices"]

# The device nodes an OCI runtime binds into a container with a user namespace.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def bind_private_devices(directory: str = "/mnt") -> None:
    """In the caller's private mount namespace: a tmpfs at ``directory``
    (hidden there alone) holding a node per device, bound over ``/dev/NAME``."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64k", "sbx-devnodes", directory], check=True)
    for name in DEVICES:
        host = os.stat(f"/dev/{name}")
        node = os.path.join(directory, name)
        os.mknod(node, stat.S_IFCHR | 0o600, host.st_rdev)
        os.chmod(node, stat.S_IMODE(host.st_mode))
        subprocess.run(["mount", "--bind", node, f"/dev/{name}"], check=True)
