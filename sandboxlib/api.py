"""One-shot ``run()``: a fresh container for one command."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

from .config import Limits, Mount, Network, WritableLayer
from .container import Container
from .process import Result
from .seccomp import DEFAULT, SeccompOption
from .streams import PIPE, StdioSpec

__all__ = ["run"]


def run(argv: Optional[Sequence[str]], *, input: Optional[bytes] = None, timeout: Optional[float] = None,
        stdin: StdioSpec = None, stdout: StdioSpec = PIPE, stderr: StdioSpec = PIPE,
        rootfs: Union[str, os.PathLike, None] = None, read_only: bool = False,
        hostname: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
        mounts: Sequence[Mount] = (), user: Optional[str] = None, cwd: Optional[str] = None,
        limits: Optional[Limits] = None, userns: bool = True,
        network: Union[Network, str] = Network.NONE, cap_add: Sequence[str] = (),
        cap_drop: Sequence[str] = (), seccomp: SeccompOption = DEFAULT, image: Optional[str] = None,
        image_store: Union[str, os.PathLike, None] = None,
        writable_layer: Union[WritableLayer, str] = WritableLayer.TMPFS,
        writable_layer_size: Union[int, str, None] = None, container: Optional[Container] = None) -> Result:
    """Run ``argv`` as the main process of a fresh, fully isolated container.

    The container ends with the command: whatever it left running is
    killed.  On ``timeout`` everything in the container is killed and the
    result says ``timed_out``.  Output is captured unless told otherwise.
    ``seccomp`` is the syscall filter: Docker's default policy unless given a
    :class:`~sandboxlib.Seccomp` or None (no filter).  With ``image``, the
    command is the image's Entrypoint followed by ``argv``, or by its Cmd when
    ``argv`` is None or empty (``docker run``).
    """
    box = container or Container(rootfs=rootfs, read_only=read_only, hostname=hostname, env=env,
                                 mounts=mounts, user=user, cwd=cwd, limits=limits, userns=userns,
                                 network=network, cap_add=cap_add, cap_drop=cap_drop, seccomp=seccomp,
                                 image=image, image_store=image_store, writable_layer=writable_layer,
                                 writable_layer_size=writable_layer_size)
    try:
        return box._run(argv, input=input, timeout=timeout, stdin=stdin, stdout=stdout, stderr=stderr,
                        env=None, cwd=None, user=None, main=True)
    finally:
        box.close()
