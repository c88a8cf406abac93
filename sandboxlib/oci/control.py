"""The light OCI verbs: state, start, kill, delete, ps, events --stats, list,
and waiting for a container (``run``).  Callers run these once or more per
container (podman: state, start, kill, delete), so this module imports
neither the set-up side nor attrs-based configuration: a verb costs the
interpreter's start-up and little more (``lifecycle.py`` has create and exec).

The installed ``sandboxlib-runtime`` is a small C program (csrc/front.c)
that serves state, start, kill and delete of a container itself, from the
``front`` record written here at create (``front_record``: the state's three
possible texts, rendered by ``state_text``, the init's pid and start time,
the cgroup directories), and runs this implementation for everything else:
the other verbs, containers with hooks, and every error (so each message
has one definition, here)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from ..errors import ContainerStateError
from .hooks import run_hooks
from .state import ContainerDir, NotFound, start_time, status_of

__all__ = [
    "OCI_VERSION",
    "oci_state",
    "state_text",
    "front_record",
    "start_failed",
    "connect",
    "load",
    "state",
    "start",
    "kill",
    "delete",
    "destroy",
    "wait_exit",
    "ps",
    "stats",
    "list_ids",
    "now",
    "FORWARDED",
]

OCI_VERSION = "1.1.0"
_WALL = 0x40000000  # __WALL: the init has no exit signal while it is our child


def now() -> str:
    """RFC 3339 in UTC to the nanosecond, as runc's ``created`` (time's, not datetime's:
    its import is ~1 ms of each create)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def oci_state(cdir: ContainerDir, saved: Dict[str, Any], status: Optional[str] = None) -> Dict[str, Any]:
    """The runtime-spec's state of the container (in ``status``: its current one by default)."""
    status = status or status_of(cdir, saved)
    return {
        "ociVersion": OCI_VERSION,
        "id": cdir.id,
        "status": status,
        "pid": saved["pid"] if status != "stopped" else 0,
        "bundle": saved["bundle"],
        "rootfs": saved["rootfs"],
        "created": saved["created"],
        "owner": "",
        "annotations": saved.get("annotations", {}),
    }


def state_text(state: Dict[str, Any]) -> str:
    """What ``state`` prints: one line of JSON (the front prints these lines too)."""
    return json.dumps(state)


# The front serves a container only without the hooks its verbs would have to run.
_FRONT_HOOKS = ("startContainer", "poststart", "poststop")
FRONT_FORMAT = "sandboxlib-runtime front 1"


def front_record(cdir: ContainerDir, saved: Dict[str, Any]) -> Optional[str]:
    """The text of ``ROOT/ID/front``, what the C front reads (one ``key value``
    a line): the init's pid and start time, the cgroup directories (the first
    one's processes are ``kill --all``'s), and ``state`` in each status.
    None when the front must leave this container to Python (its hooks)."""
    if any(saved["hooks"].get(phase) for phase in _FRONT_HOOKS):
        return None
    lines = [FRONT_FORMAT, f"pid {saved['pid']}", f"init_start {saved['init_start']}"]
    lines += [f"cgroup {path}" for _version, path, _controllers in saved["cgroup"]]
    lines += [f"state {s} {state_text(oci_state(cdir, saved, s))}" for s in ("created", "running", "stopped")]
    if any("\n" in line for line in lines):
        return None  # (a cgroup path with a newline)
    return "\n".join(lines) + "\n"


def connect(cdir: ContainerDir) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        with cdir.socket_address() as address:
            sock.connect(address)
    except OSError as err:
        sock.close()
        raise ContainerStateError(f"container {cdir.id} is not running ({err.strerror})") from None
    return sock


def load(root: str, container_id: str) -> Tuple[ContainerDir, Dict[str, Any]]:
    cdir = ContainerDir(root, container_id)
    return cdir, cdir.read()


def state(root: str, container_id: str) -> Dict[str, Any]:
    cdir, saved = load(root, container_id)
    return oci_state(cdir, saved)


def start(root: str, container_id: str) -> None:
    # The protocol (the extension, attrs) only for this verb.
    from ..native import protocol
    from ..native.binding import Step

    cdir, saved = load(root, container_id)
    with cdir.locked():
        status = status_of(cdir, saved)
        if status != "created":
            raise ContainerStateError(f"cannot start a container in the {status} state")
        run_hooks("startContainer", saved["hooks"]["startContainer"], oci_state(cdir, saved))
        cdir.mark_started()
        ours, theirs = protocol.reply_socketpair()
        with ours, theirs, connect(cdir) as control:
            socket.send_fds(control, [protocol.START_MESSAGE], [theirs.fileno()])
            theirs.close()
            reply = protocol.decode_reply(ours)
            while reply is not None and reply.kind == protocol.REPLY_PID:
                reply = protocol.decode_reply(ours)
            if reply is None or reply.kind != protocol.REPLY_STARTED:
                step, err = (reply.step, reply.errno) if reply else (Step.REQUEST, 3)  # ESRCH
                start_failed(step, err, reply.index if reply else -1)
    try:
        run_hooks("poststart", saved["hooks"]["poststart"], oci_state(cdir, saved))
    except Exception as err:  # the container runs: a poststart failure is only reported
        print(f"warning: {err}", file=sys.stderr)


def start_failed(step: int, err: int, index: int) -> NoReturn:
    """START's failure report (the init's, or the front's: ``start --reply``) as its error."""
    from ..native.failures import exec_error

    raise exec_error(step, err, index, {})


def _signal_init(saved: Dict[str, Any], sig: int) -> bool:
    """Signal the init, unless another process took its pid.  False when it is gone."""
    pid = saved.get("pid") or 0
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if start_time(pid) != saved.get("init_start"):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _cgroup_procs(saved: Dict[str, Any]) -> List[int]:
    for _version, path, _controllers in saved.get("cgroup", ()):
        pids = []
        for dirpath, _dirs, _files in os.walk(path):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                continue
        return pids
    return []


def kill(root: str, container_id: str, sig: int, *, all_processes: bool = False) -> None:
    cdir, saved = load(root, container_id)
    if status_of(cdir, saved) == "stopped":
        raise ContainerStateError("container not running")
    if all_processes:
        for pid in _cgroup_procs(saved):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    if not _signal_init(saved, sig) and not all_processes:
        raise ContainerStateError("container not running")


def destroy(cdir: ContainerDir, saved: Dict[str, Any]) -> None:
    """Kill the init (its pid namespace ends with it), remove the cgroup and the state."""
    if saved.get("pid") and _signal_init(saved, signal.SIGKILL):
        wait_gone(saved["pid"], saved.get("init_start"))
    _remove_cgroups([path for _v, path, _c in saved.get("cgroup", ())])
    cdir.remove()


def _remove_cgroups(paths: List[str], timeout: float = 5.0) -> None:
    """Remove the container's cgroup directories, children first.  Its
    processes died with its init's pid namespace; a directory stays busy
    (EBUSY) only while the last of them are being torn down."""
    deadline = time.monotonic() + timeout
    for top in paths:
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        print(f"warning: cgroup {dirpath} is still busy", file=sys.stderr)
                        break
                    time.sleep(0.01)


def wait_gone(pid: int, started: Optional[int], timeout: float = 10.0) -> None:
    """Until the process is gone or a zombie (its reaper is not us)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if start_time(pid) == started:
            select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def delete(root: str, container_id: str, *, force: bool = False) -> None:
    try:
        cdir, saved = load(root, container_id)
    except NotFound:
        if force:
            return
        raise
    with cdir.locked():
        status = status_of(cdir, saved)
        if status == "running" and not force:
            raise ContainerStateError(f"cannot delete container {container_id} that is not stopped: {status}")
        destroy(cdir, saved)
    try:
        run_hooks(
            "poststop", saved.get("hooks", {}).get("poststop", ()), oci_state(cdir, saved) | {"status": "stopped"}
        )
    except Exception as err:
        print(f"warning: {err}", file=sys.stderr)


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def wait_exit(root: str, container_id: str) -> int:
    """``run``: wait for our child the init (forwarding signals to it); its exit code."""
    _cdir, saved = load(root, container_id)
    pid = saved["pid"]
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: _signal_init(saved, s))
    while True:
        try:
            result = os.waitid(os.P_PID, pid, os.WEXITED | _WALL)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0
    if result is None:
        return 0
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


def ps(root: str, container_id: str) -> List[int]:
    cdir, saved = load(root, container_id)
    if status_of(cdir, saved) == "stopped":
        return []
    return sorted(set(_cgroup_procs(saved)))


def _read(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return ""


def _read_int(directory: str, name: str) -> int:
    text = _read(directory, name).strip() or "0"
    return 0 if text == "max" else int(text)


def stats(root: str, container_id: str) -> Dict[str, Any]:
    """``events --stats``: runc's stats event, from the cgroup."""
    _cdir, saved = load(root, container_id)
    data: Dict[str, Any] = {"cpu": {"usage": {}}, "memory": {"usage": {}}, "pids": {}}
    for version, path, controllers in saved.get("cgroup", ()):
        if version == "v1" and "cpuacct" in controllers:
            data["cpu"]["usage"]["total"] = _read_int(path, "cpuacct.usage")
        if version == "v1" and "memory" in controllers:
            data["memory"]["usage"]["usage"] = _read_int(path, "memory.usage_in_bytes")
            data["memory"]["usage"]["limit"] = _read_int(path, "memory.limit_in_bytes")
        if version == "v1" and "pids" in controllers:
            data["pids"] = {"current": _read_int(path, "pids.current"), "limit": _read_int(path, "pids.max")}
        if version == "v2":
            keys = dict(line.split() for line in _read(path, "cpu.stat").splitlines() if len(line.split()) == 2)
            if "usage_usec" in keys:
                data["cpu"]["usage"]["total"] = int(keys["usage_usec"]) * 1000
    return {"type": "stats", "id": container_id, "data": data}


def list_ids(root: str) -> List[str]:
    try:
        return sorted(n for n in os.listdir(root) if os.path.exists(os.path.join(root, n, "state.json")))
    except FileNotFoundError:
        return []
