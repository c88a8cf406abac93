"""``RUN``: the command in a container on the image so far, with a
container's default security (seccomp, capabilities) plus ``NET_RAW``, as
``docker build``'s default set has it (``RUN ping``; raw sockets reach only
the step's own network namespace), and the build's
network (none by default) and the build's extra hosts in its
``/etc/hosts``; its writable layer becomes the step's layer
(deletions as whiteouts, owners kept; rootless, files of other users
owned by your sub-ids)."""

from __future__ import annotations

import collections
import select
import threading
from typing import Dict, Optional, Tuple

from ..errors import BuildError, BuildStepFailed
from ..images import ImageStore, Layer
from ..runtime import Container
from ..runtime.commit import PLAIN
from ..streams import PIPE
from .parser import Instruction
from .progress import BuildEvent, Reporter

__all__ = ["run_command", "TAIL_LINES", "RUN_CAPABILITIES"]

TAIL_LINES = 20  # of a failed RUN's output, in its exception
RUN_CAPABILITIES = ("NET_RAW",)  # added to the default set: docker build's RUN has them


def run_command(
    store: ImageStore,
    manifest: str,
    argv: list,
    *,
    env: Dict[str, str],
    user: Optional[str],
    cwd: Optional[str],
    network: str,
    extra_hosts: Tuple[Tuple[str, str], ...] = (),
    ins: Instruction,
    report: Reporter,
    stage: str,
    cancelled: threading.Event,
) -> Layer:
    """Run ``argv`` on the image ``manifest``; returns the stored layer of what it wrote."""
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    with Container(
        image=manifest,
        image_store=store.path,
        network=network,
        extra_hosts=dict(extra_hosts),
        cap_add=RUN_CAPABILITIES,
        pull="never",
    ) as container:
        process = container.spawn(argv, stdout=PIPE, stderr=PIPE, env=env, cwd=cwd, user=user or None)
        with process:
            assert process.stdout is not None and process.stderr is not None
            pending = {process.stdout: b"", process.stderr: b""}
            names = {process.stdout: "stdout", process.stderr: "stderr"}

            def lines_of(pipe, data: bytes) -> None:
                pending[pipe] += data
                *lines, pending[pipe] = pending[pipe].split(b"\n")
                if not data and pending[pipe]:  # (the end: its last line without a newline)
                    lines, pending[pipe] = [pending[pipe]], b""
                for line in lines:
                    text = line.decode(errors="replace")
                    tail.append(text)
                    report(BuildEvent(kind="output", stage=stage, text=text, stream=names[pipe]))

            open_pipes = [process.stdout, process.stderr]
            while open_pipes:
                ready = select.select(open_pipes, [], [], 0.2)[0]
                if cancelled.is_set():
                    process.kill()
                    process.wait()
                    raise BuildError(ins.file, ins.line, "RUN cancelled: another stage failed")
                for pipe in ready:
                    chunk = pipe.read(65536)
                    lines_of(pipe, chunk)
                    if not chunk:
                        open_pipes.remove(pipe)
            code = process.wait()
        if code != 0:
            raise BuildStepFailed(
                ins.file,
                ins.line,
                f"RUN {argv!r} failed",
                code if code >= 0 else 128 - code,
                "\n".join(tail),
                argv,
            )
        digest, size, diff_id = container.commit_layer()
    return Layer(digest=digest, diff_id=diff_id, size=size, media_type=PLAIN)
