"""Helpers of the OCI runtime tests: bundles on the session's busybox root,
the runtime as a program: ``sandboxlib-runtime``, the C front, as installed
(the venv's, beside the interpreter) or, for the checkout, its build copied
into a directory beside a ``sandboxlib-runtime-python`` script; and
``python -m sandboxlib.oci``, the Python implementation alone."""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from sandboxlib.oci.default_spec import default_spec

PYTHON_RUNTIME = [sys.executable, "-P", "-m", "sandboxlib.oci"]  # -P: not the cwd first in sys.path
FRONT, PYTHON_PROGRAM = "sandboxlib-runtime", "sandboxlib-runtime-python"


def installed_front() -> Optional[str]:
    """The venv's ``sandboxlib-runtime`` (the wheel's C front), when the tested sandboxlib is installed."""
    path = os.path.join(os.path.dirname(sys.executable), FRONT)
    return path if os.path.exists(path) else None


def install_front(directory: str, python_prefix: str = "") -> str:
    """The checkout's C front as ``DIRECTORY/sandboxlib-runtime``, beside a
    ``sandboxlib-runtime-python`` that runs ``python -m sandboxlib.oci`` with
    this session's environment written in (and ``python_prefix``, shell
    text run first: a test's record of the calls); the front's path."""
    import sandboxlib.native

    shutil.copy(
        os.path.join(os.path.dirname(sandboxlib.native.__file__), "sbx-runtime"), os.path.join(directory, FRONT)
    )
    names = ("PYTHONPATH", "SANDBOXLIB_DEV", "SANDBOXLIB_EXPECT_INSTALLED")
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in names if k in os.environ)
    script = os.path.join(directory, PYTHON_PROGRAM)
    with open(script, "w") as f:
        f.write(f'#!/bin/sh\n{python_prefix}exec env {env} {shlex.join(PYTHON_RUNTIME)} "$@"\n')
    os.chmod(script, 0o755)
    return os.path.join(directory, FRONT)


@functools.cache
def runtime_command() -> List[str]:
    """``sandboxlib-runtime`` as the tests run it: the installed front, or the checkout's in a temporary directory."""
    front = installed_front()
    if front is None:
        directory = tempfile.mkdtemp(prefix="sbx-front-")
        atexit.register(shutil.rmtree, directory, True)
        front = install_front(directory)
    return [front]


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


def runtime(
    root: str, *args: str, input: Optional[bytes] = None, timeout: float = 60, program: Optional[List[str]] = None
) -> subprocess.CompletedProcess:
    """Run a verb (with ``sandboxlib-runtime``, or ``program``); its output goes through files, not
    pipes: a created container's process keeps the runtime's stdio (so a pipe would not end)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            [*(program or runtime_command()), "--root", root, *args],
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
    """An executable ``sandboxlib-runtime`` for callers (podman, ctr): the
    installed front, or the checkout's installed into ``directory``."""
    return installed_front() or install_front(directory)


def containers_in(root: str) -> List[str]:
    """What ``root`` holds but the compiled filters the runtime keeps there (oci/filters.py)."""
    return [n for n in os.listdir(root) if n != ".filters"] if os.path.exists(root) else []


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
        left = containers_in(state_dir)
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


def rootless_lifecycle(rootfs: str) -> tuple:
    """As this (unprivileged) user: create, start, kill and delete a container
    of ``default_spec(rootless=True)`` through ``sandboxlib-runtime``, with
    ``state`` after each step from it and from the Python implementation.
    ([(step, exit status, front's state, Python's state)], what is left in the state root)."""
    base = tempfile.mkdtemp(prefix="oci-rootless-")
    try:
        spec: Dict[str, Any] = default_spec(rootless=True)
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"].update(terminal=False, args=["sleep", "30"])
        bundle = os.path.join(base, "bundle")
        os.mkdir(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        root, cid, steps = os.path.join(base, "state"), unique_id(), []
        for step in (["create", "--bundle", bundle, cid], ["start", cid], ["kill", cid, "KILL"]):
            code = runtime(root, *step).returncode
            if step[0] == "kill":
                time.sleep(0.5)  # (the init exits with its main process)
            front, python = (runtime(root, "state", cid, program=p).stdout for p in (None, PYTHON_RUNTIME))
            steps.append((step[0], code, front, python))
        steps.append(("delete", runtime(root, "delete", cid).returncode, b"", b""))
        return steps, containers_in(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def rootless_default_root(rootfs: str) -> tuple:
    """As this (unprivileged) user, without --root (so under $XDG_RUNTIME_DIR):
    a container created by the Python implementation, then ``state`` and
    ``delete`` through the front.  (the front's state, Python's, the calls
    that reached Python, what is left in the default root)."""
    base = tempfile.mkdtemp(prefix="oci-rootless-")
    try:
        spec: Dict[str, Any] = default_spec(rootless=True)
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"].update(terminal=False, args=["sleep", "30"])
        bundle = os.path.join(base, "bundle")
        os.makedirs(os.path.join(base, "bin"))
        os.mkdir(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        calls = os.path.join(base, "calls")
        front = install_front(os.path.join(base, "bin"), python_prefix=f'echo "$*" >> {shlex.quote(calls)}\n')
        env = dict(os.environ, XDG_RUNTIME_DIR=os.path.join(base, "xdg"))
        cid = unique_id()

        def call(program: List[str], *args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*program, *args], env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

        with open(os.devnull, "w") as null:  # (the created container holds its stdio: no pipes)
            subprocess.run([*PYTHON_RUNTIME, "create", "--bundle", bundle, cid], env=env, stdout=null, stderr=null)
        states = [call(p, "state", cid).stdout for p in ([front], PYTHON_RUNTIME)]
        deleted = call([front], "delete", cid).returncode
        with open(calls, "a") as f:
            pass
        with open(calls) as f:
            reached = f.read().split()
        return states, deleted, reached, containers_in(os.path.join(base, "xdg", "sandboxlib-runtime"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def planted_default_root(victim_uid: int, kind: str) -> List[str]:
    """As another (unprivileged) user: what it could leave in /tmp before ``victim_uid`` first
    runs the runtime without --root and XDG_RUNTIME_DIR: a "symlink" to a directory of its own,
    or its own "directory" (0777, the runtime's root made in it).  The paths made, to remove."""
    path = f"/tmp/sandboxlib-runtime-{victim_uid}"
    if kind == "symlink":
        target = tempfile.mkdtemp(prefix="planted-")
        os.chmod(target, 0o777)
        os.symlink(target, path)
        return [path, target]
    os.mkdir(path)
    os.mkdir(os.path.join(path, "sandboxlib-runtime"))
    for made in (path, os.path.join(path, "sandboxlib-runtime")):
        os.chmod(made, 0o777)
    return [path]


def default_root_answers(xdg_runtime_dir: str = "") -> List[tuple]:
    """As this (unprivileged) user, without --root: (exit status, stderr) of the front's
    ``delete --force`` of a missing container (which it answers itself) and of the Python
    implementation's ``list``."""
    base = tempfile.mkdtemp(prefix="oci-default-root-")
    try:
        front = install_front(base)
        env = dict(os.environ, XDG_RUNTIME_DIR=xdg_runtime_dir)
        answers = []
        for argv in ([front, "delete", "--force", unique_id()], [*PYTHON_RUNTIME, "list", "-q"]):
            proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
            answers.append((proc.returncode, proc.stderr.decode()))
        return answers
    finally:
        shutil.rmtree(base, ignore_errors=True)
