"""OCI hooks: each program runs with the container's state JSON on its stdin.

They run in the runtime's namespaces, all of them (createContainer and
startContainer too, which runc runs in the container's mount namespace:
this runtime starts no Python and no helper inside the container)."""

from __future__ import annotations

import json
import subprocess
from typing import Any, Mapping, Sequence

from ..errors import SandboxError

__all__ = ["HookError", "run_hooks"]


class HookError(SandboxError):
    """A hook failed or timed out."""


def run_hooks(phase: str, hooks: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> None:
    """Run ``hooks`` in order; HookError naming ``hooks.PHASE[i]`` on the first failure."""
    data = json.dumps(state).encode()
    for i, hook in enumerate(hooks):
        args = list(hook.get("args") or [hook["path"]])
        env = {k: v for k, _, v in (e.partition("=") for e in hook.get("env") or ())}
        try:
            proc = subprocess.run(
                args,
                executable=hook["path"],
                input=data,
                env=env,
                capture_output=True,
                timeout=hook.get("timeout"),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HookError(f"hooks.{phase}[{i}] ({hook['path']}): {err}") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            raise HookError(f"hooks.{phase}[{i}] ({hook['path']}) exited with {proc.returncode}: {detail}")
