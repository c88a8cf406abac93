"""``RUN``: the command in a container on the image so far, with a
container's default security (seccomp, capabilities) and the build's
network (none by default); its writable layer becomes the step's layer
(deletions as whiteouts, owners kept; rootless, files of other users
owned by your sub-ids)."""

from __future__ import annotations

import collections
import select
import threading
from typing import Dict, Optional

from ..errors import BuildError, BuildStepFailed
from ..images import ImageStore, Layer
from ..runtime import Container
from ..runtime.commit import PLAIN
from ..streams import PIPE, STDOUT
from .parser import Instruction
from .progress import BuildEvent, Reporter

__all__ = ["run_command", "TAIL_LINES"]

TAIL_LINES = 20  # of a failed RUN's output, in its exception


def run_command(
    store: ImageStore,
    manifest: str,
    argv: list,
    *,
    env: Dict[str, str],
    user: Optional[str],
    cwd: Optional[str],
    network: str,
    ins: Instruction,
    report: Reporter,
    stage: str,
    cancelled: threading.Event,
) -> Layer:
    """Run ``argv`` on the image ``manifest``; returns the stored layer of what it wrote."""
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    with Container(image=manifest, image_store=store.path, network=network, pull="never") as container:
        process = container.spawn(argv, stdout=PIPE, stderr=STDOUT, env=env, cwd=cwd, user=user or None)
        with process:
            assert process.stdout is not None
            pending = b""
            while True:
                if not select.select([process.stdout], [], [], 0.2)[0]:
                    if cancelled.is_set():
                        process.kill()
                        process.wait()
                        raise BuildError(ins.file, ins.line, "RUN cancelled: another stage failed")
                    continue
                chunk = process.stdout.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    tail.append(text)
                    report(BuildEvent(kind="output", stage=stage, text=text))
            if pending:
                tail.append(pending.decode(errors="replace"))
                report(BuildEvent(kind="output", stage=stage, text=tail[-1]))
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
