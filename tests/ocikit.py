"""Helpers of the OCI runtime tests: bundles on the session's busybox root,
the runtime as a program (``python -m sandboxlib.oci``, or a wrapper script
for callers that want one executable: podman, ctr)."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Dict, Optional, Sequence

from sandboxlib.oci.default_spec import default_spec

RUNTIME = [sys.executable, "-P", "-m", "sandboxlib.oci"]  # -P: not the cwd first in sys.path


def cgroup_path_of(container_id: str) -> str:
    """Below our own cgroup (relative), so a test leaves no parent directory behind."""
    return f"sandboxlib-oci-test-{container_id}"


def apply_changes(spec: Dict[str, Any], changes: Dict[str, Any]) -> None:
    """Set dotted keys (``process.cwd``) of ``spec``; None removes the key."""
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value


def make_bundle(path: str, rootfs: str, args: Sequence[str], **changes: Any) -> str:
    """A bundle at ``path`` running ``args`` in ``rootfs`` (read-only): the
    default spec with ``changes`` (dotted keys: ``process.cwd``) applied."""
    os.makedirs(path, exist_ok=True)
    spec: Dict[str, Any] = copy.deepcopy(default_spec())
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["linux"]["cgroupsPath"] = cgroup_path_of(os.path.basename(path))
    apply_changes(spec, changes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f)
    return path


def runtime(root: str, *args: str, input: Optional[bytes] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a verb; its output goes through files, not pipes: a created
    container's process keeps the runtime's stdio (so a pipe would not end)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            [*RUNTIME, "--root", root, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=timeout,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def ok(root: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    proc = runtime(root, *args, **kw)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def state(root: str, container_id: str) -> Dict[str, Any]:
    return json.loads(ok(root, "state", container_id).stdout)


def wrapper_script(directory: str) -> str:
    """An executable ``sandboxlib-runtime`` (the installed console script when
    there is one beside the interpreter, else a shell wrapper) with this
    session's environment (PYTHONPATH, SANDBOXLIB_DEV) written in."""
    installed = os.path.join(os.path.dirname(sys.executable), "sandboxlib-runtime")
    path = os.path.join(directory, "sandboxlib-runtime")
    names = ("PYTHONPATH", "SANDBOXLIB_DEV", "SANDBOXLIB_EXPECT_INSTALLED")
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in names if k in os.environ)
    target = installed if os.path.exists(installed) else f"{sys.executable} -P -m sandboxlib.oci"
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec env {env} {target} "$@"\n')
    os.chmod(path, 0o755)
    return path


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def rootless_run(rootfs: str, args: Sequence[str], changes: Optional[Dict[str, Any]] = None) -> tuple:
    """(exit status, stdout, stderr) of ``run`` by this (unprivileged) user, in a
    bundle of ``default_spec(rootless=True)`` with ``changes`` (as
    :func:`make_bundle`'s); its state and bundle removed after."""
    base = tempfile.mkdtemp(prefix="oci-rootless-")
    try:
        spec: Dict[str, Any] = default_spec(rootless=True)
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"].update(terminal=False, args=list(args))
        apply_changes(spec, changes or {})
        bundle = os.path.join(base, "bundle")
        os.mkdir(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        proc = runtime(os.path.join(base, "state"), "run", "--bundle", bundle, unique_id())
        state_dir = os.path.join(base, "state")
        left = os.listdir(state_dir) if os.path.exists(state_dir) else []
        return proc.returncode, proc.stdout, proc.stderr, left
    finally:
        shutil.rmtree(base, ignore_errors=True)


ROOTLESS_CONTAINERS_CONF = """[engine]
runtime = "sandboxlib"
cgroup_manager = "cgroupfs"
events_logger = "none"
[engine.runtimes]
sandboxlib = ["{runtime}"]
"""


def rootless_podman(base: str, image_tar: str) -> tuple:
    """As this (unprivileged) user: podman's storage in ``base``, the image
    imported from ``image_tar``, ``podman run --rm`` through sandboxlib-runtime
    (podman runs it as root of its own user namespace).  (status, stdout, stderr)."""
    runtime_path = wrapper_script(base)
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write(ROOTLESS_CONTAINERS_CONF.format(runtime=runtime_path))
    os.makedirs(os.path.join(base, "xdg"), mode=0o700)
    env = dict(os.environ, HOME=base, XDG_RUNTIME_DIR=os.path.join(base, "xdg"), CONTAINERS_CONF=conf)
    podman = ["podman", "--root", f"{base}/storage", "--runroot", f"{base}/run", "--storage-driver", "vfs"]
    imported = subprocess.run([*podman, "import", image_tar, "localhost/bb:rootless"], env=env, capture_output=True)
    if imported.returncode != 0:
        return imported.returncode, b"", b"podman import: " + imported.stderr
    argv = [*podman, "run", "--rm", "--network", "none", "localhost/bb:rootless", "sh", "-c", "id -u; exit 3"]
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    subprocess.run([*podman, "system", "reset", "--force"], env=env, capture_output=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr
