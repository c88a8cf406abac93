"""One container's cgroup: a directory in each hierarchy it needs, made and
removed by us, below our own cgroup in each.

Which hierarchies: the v2 tree whenever we may write to it (``cgroup.kill``,
``cgroup.events``, ``cpu.stat``; on a v2 host every limit), else the v1
freezer (kill-all) and cpuacct; with limits, also a v1 hierarchy for each
limit the v2 tree cannot enforce, and memory, pids and blkio for
statistics.  Measured on the hybrid host: the v2 cgroup alone adds nothing
measurable to ``sb.run`` (it is born there with clone3), so every container
as root gets it; each v1 directory costs ~0.08 ms (make, join, remove)."""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..config import CgroupLimits
from ..errors import SetupError, UnsupportedError
from . import fs
from .layout import Layout
from .settings import CONTROLLERS_OF, RT_FILE, v1_settings, v2_settings

if TYPE_CHECKING:
    from .layout import Layout

__all__ = ["Node", "ContainerCgroup", "CommandCgroup", "cgroup_name", "plan_cgroup", "write_limits"]

# For statistics of a container with limits; cpuacct only without a v2 tree
# (whose cpu.stat has the usage).
STATS_V1 = ("memory", "pids", "blkio")
REMOVE_TIMEOUT = 5.0  # seconds for the processes of a killed cgroup to leave it

DELEGATION_HINT = (
    "cgroup limits need a cgroup this user may write to: run as root, or rootless in a "
    "delegated cgroup v2 subtree, the Python process in a leaf of it (e.g. `systemd-run "
    "--user --scope -p Delegate=yes sh -c 'mkdir $CG/leaf && echo $$ > $CG/leaf/cgroup.procs "
    "&& exec python ...'`, CG being the scope's cgroup directory), with the controllers "
    "delegated to users (/etc/systemd/system/user@.service.d/delegate.conf: "
    "[Service] Delegate=cpu cpuset io memory pids)"
)


DEVICES_HINT = (
    "device cgroup rules need root and a cgroup v1 devices hierarchy (cgroup v2 controls devices "
    "with eBPF programs, which sandboxlib does not load; a v1 hierarchy is not delegated to users)"
)


def cgroup_name(state_root: str, container_id: str) -> str:
    """``sandboxlib-<scope>-<id>``: the scope (a hash of the state directory)
    tells apart the cgroups of separate users of sandboxlib on one host."""
    import hashlib  # (here: not an import of every OCI runtime's create)

    scope = hashlib.sha256(state_root.encode()).hexdigest()[:8]
    return f"sandboxlib-{scope}-{container_id[:16]}"


class Node(NamedTuple):
    """One directory: ``version`` "v1" or "v2"; ``controllers`` we use it for."""

    version: str
    path: str
    controllers: Tuple[str, ...]


def _writable(directory: Optional[str]) -> bool:
    """We may make cgroups below ``directory`` and move processes there (asked
    once per process and identity: delegation does not come and go)."""
    return bool(directory) and _access(directory, os.geteuid())


@functools.lru_cache(maxsize=64)
def _access(directory: str, _euid: int) -> bool:
    return os.access(directory, os.W_OK) and os.access(os.path.join(directory, "cgroup.procs"), os.W_OK)


def plan_cgroup(layout: Layout, limits: CgroupLimits, name: str) -> Optional[ContainerCgroup]:
    """The cgroup a container gets, or None when none may be made and none is
    needed.  Raises UnsupportedError for a limit this host cannot enforce for us."""
    needed: Dict[str, List[str]] = {}
    for key, value in limits._asdict().items():
        if value is not None:
            needed.setdefault(CONTROLLERS_OF[key], []).append(key)
    v1: Dict[str, List[str]] = {}
    v2: List[str] = []
    for controller, keys in needed.items():
        version, directory = layout.controller_dirs(controller)
        if not version:
            hint = (
                DEVICES_HINT
                if controller == "devices"
                else "enable it in the kernel and mount it (cgroup v2, or a v1 hierarchy)"
            )
            raise UnsupportedError(f"the cgroup {controller} controller (for {', '.join(keys)})", hint)
        if not _writable(directory):
            hint = DEVICES_HINT if controller == "devices" else DELEGATION_HINT
            raise UnsupportedError(f"cgroup limits ({', '.join(limits.names())})", hint)
        if controller == "cpu" and {"cpu_rt_period_us", "cpu_rt_runtime_us"} & set(keys):
            _check_realtime(version, directory)
        (v2 if version == "v2" else v1.setdefault(directory, [])).append(controller)
    use_v2 = _writable(layout.v2)
    # Statistics hierarchies only with limits: each costs ~0.08 ms per
    # container (measured), and the v2 cgroup alone costs nothing measurable.
    extras = (STATS_V1 if needed else ()) + (() if use_v2 else ("cpuacct", "freezer"))
    for controller in extras:
        directory = layout.v1.get(controller)
        if directory and _writable(directory):
            v1.setdefault(directory, []).append(controller)
    nodes = [Node("v2", os.path.join(_v2_base(layout.v2, v2), name), tuple(v2))] if use_v2 else []
    nodes += [Node("v1", os.path.join(d, name), tuple(c)) for d, c in sorted(v1.items())]
    return ContainerCgroup(nodes, limits) if nodes else None


def _check_realtime(version: str, directory: str) -> None:
    """Real-time CPU limits need real-time group scheduling: the cpu
    controller's ``cpu.rt_*`` files, which only v1 hierarchies have."""
    if version == "v1" and os.path.exists(os.path.join(directory, RT_FILE)):
        return
    raise UnsupportedError(
        "real-time CPU limits (limits.cpu_rt_period_us, limits.cpu_rt_runtime_us)",
        f"they need a kernel with real-time group scheduling (CONFIG_RT_GROUP_SCHED) and the cpu "
        f"controller in a cgroup v1 hierarchy: {os.path.join(directory, RT_FILE)} does not exist",
    )


def _v2_base(own: str, controllers: Sequence[str]) -> str:
    """Where a container's v2 cgroup goes: below our own cgroup, unless it
    needs controllers and ours holds processes (us) without being the root:
    cgroup v2 lets only a cgroup without processes give controllers to its
    children.  Then beside ours, in its parent, which has them enabled for
    ours already: the layout of a delegated cgroup whose manager process
    sits in a leaf of its own (e.g. DELEGATED/leaf), as systemd documents."""
    is_root = not os.path.exists(os.path.join(own, "cgroup.type"))
    if not controllers or is_root:
        return own
    parent = os.path.dirname(own)
    if not _writable(parent):
        raise UnsupportedError(
            f"cgroup v2 controllers {', '.join(controllers)} for containers",
            f"our cgroup {own} holds this process, so it cannot give controllers to children, and its "
            f"parent {parent} is not writable for us: run the Python process in a leaf cgroup of a "
            "delegated one (e.g. `systemd-run --user --scope -p Delegate=yes sh -c 'mkdir "
            "$CG/leaf && echo $$ > $CG/leaf/cgroup.procs && exec python ...'`, CG being the scope's "
            "cgroup directory): containers' cgroups then go beside the leaf",
        )
    return parent


class ContainerCgroup:
    """The cgroup directories of one container (see :func:`plan_cgroup`)."""

    def __init__(self, nodes: Sequence[Node], limits: CgroupLimits) -> None:
        self.nodes = tuple(nodes)
        self._v2 = next((n for n in self.nodes if n.version == "v2"), None)  # (asked at every command)
        self.limits = limits
        self._made: List[Node] = []
        self._init_ids: Optional[Tuple[int, int]] = None
        # Empty command cgroups kept for the next commands (see CommandCgroup.release).
        self._spare_commands: List[CommandCgroup] = []

    @property
    def paths(self) -> Tuple[str, ...]:
        return tuple(n.path for n in self.nodes)

    @property
    def v2(self) -> Optional[Node]:
        return self._v2

    def node(self, controller: str) -> Optional[Node]:
        """The directory that has ``controller`` (for limits or statistics)."""
        return next((n for n in self.nodes if controller in n.controllers), None)

    def create(self) -> None:
        """Make every directory and write the limits (removing what was made
        if any step fails: SetupError in step CGROUP naming the file)."""
        try:
            for node in self.nodes:
                self._make(node)
        except BaseException:
            self.remove()
            raise

    def _make(self, node: Node) -> None:
        parent = os.path.dirname(node.path)
        if node.version == "v2" and node.controllers:
            _enable_controllers(parent, node.controllers)
        try:
            os.mkdir(node.path)
        except OSError as err:
            raise SetupError(err.errno, f"mkdir({node.path!r})", step="CGROUP", field="limits") from None
        self._made.append(node)
        if "cpuset" in node.controllers and node.version == "v1":
            # A new v1 cpuset is empty (no task may join it): the parent's
            # CPUs and memory nodes, then the limits' own.
            for name in ("cpuset.cpus", "cpuset.mems"):
                fs.write(os.path.join(node.path, name), (fs.read_text(os.path.join(parent, name)) or "").strip())
        self._write(node, self.limits, node.controllers)

    def update(self, limits: CgroupLimits) -> None:
        """Write the limits that differ from those set (a running container's
        ``docker update``).  UnsupportedError for a limit removed, or one whose
        controller the cgroup was made without (none of that kind was set at
        its creation); SetupError naming the file the kernel refused."""
        changed = [k for k, v in limits._asdict().items() if v != getattr(self.limits, k)]
        removed = [k for k in changed if getattr(limits, k) is None]
        if removed:
            raise UnsupportedError(f"removing limits of a running container ({', '.join(removed)})", "recreate it")
        controllers = sorted({CONTROLLERS_OF[k] for k in changed})
        lacking = [c for c in controllers if self.node(c) is None]
        if lacking:
            raise UnsupportedError(
                f"new {', '.join(lacking)} limits on a running container made without one",
                "give the container a limit of that kind when it is made",
            )
        for controller in controllers:
            node = self.node(controller)
            assert node is not None
            self._write(node, limits, (controller,))
        self.limits = limits

    def _write(self, node: Node, limits: CgroupLimits, controllers: Sequence[str]) -> None:
        write_limits(node.version, node.path, limits, controllers)

    def delegate_procs(self, uid: int, gid: int) -> None:
        """Let the container's init (host ids ``uid``, ``gid``) start commands in
        child cgroups of the v2 directory: clone3(CLONE_INTO_CGROUP) needs the
        caller to may write ``cgroup.procs`` of both the target and the common
        ancestor.  Only that file: the limits stay ours."""
        node = self.v2
        self._init_ids = (uid, gid)
        if node is not None:
            os.chown(os.path.join(node.path, "cgroup.procs"), uid, gid)

    def attach_fds(self) -> List[int]:
        """Open the ``tasks`` file of every v1 directory, for the child to write "0" to."""
        fds: List[int] = []
        try:
            for node in self.nodes:
                if node.version == "v1":
                    fds.append(os.open(os.path.join(node.path, "tasks"), os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def open_v2(self) -> int:
        """An fd of the v2 directory for clone3(CLONE_INTO_CGROUP), or -1."""
        node = self.v2
        return os.open(node.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if node else -1

    def kill(self) -> None:
        """SIGKILL everything in the container, racing no fork."""
        for node in self.nodes:
            if fs.kill_all(node.path):
                return

    def freeze(self, frozen: bool) -> bool:
        """Freeze (or thaw) everything in the container; False when no directory has a freezer."""
        return any(fs.freeze(node.path, frozen) for node in self.nodes)

    def counters(self) -> Tuple[int, int]:
        """(OOM kills, forks refused by the pids limit) so far."""
        oom = pids = 0
        if self.limits.memory is None and self.limits.pids is None:
            return oom, pids  # (read before and after every run)
        memory, pid_node = self.node("memory"), self.node("pids")
        if memory is not None and self.limits.memory is not None:
            if memory.version == "v2":
                oom = fs.read_keys(os.path.join(memory.path, "memory.events")).get("oom_kill", 0)
            else:
                oom = fs.read_keys(os.path.join(memory.path, "memory.oom_control")).get("oom_kill", 0)
        if pid_node is not None and self.limits.pids is not None:
            pids = fs.read_keys(os.path.join(pid_node.path, "pids.events")).get("max", 0)
        return oom, pids

    def remove(self) -> bool:
        """Remove every directory made (after kill(), or the end of the init's
        pid namespace: waiting while the killed leave).  True when all are gone."""
        while self._spare_commands:
            self._spare_commands.pop().close_fd()  # (their directories go with the tree)
        deadline = time.monotonic() + REMOVE_TIMEOUT
        gone = all([fs.remove_tree(n.path, deadline) for n in self._made])  # noqa: C419 - every one, even after a failure
        self._made = []
        return gone

    @property
    def forkers(self) -> int:
        """How many of the kept command cgroups may hold a resident forker
        (csrc/init.c): a process each, ~0.1 MB, in the container's pids and
        memory accounting, so one per 4 MiB of a memory limit, and none under
        a pids limit (idle ones would take pids the commands could fork: a
        workload that fits would fail for 10 s after a few gathered runs)."""
        if self.limits.pids is not None:
            return 0
        most = SPARE_COMMAND_GROUPS
        if self.limits.memory is not None:
            most = min(most, self.limits.memory // FORKER_MEMORY_SHARE)
        return max(most, 0)

    def command_group(self, command_id: int) -> Optional[CommandCgroup]:
        """A child cgroup in the v2 tree for one command (an empty one an ended
        command released, or a new one), or None without a v2 cgroup."""
        node = self.v2
        if node is None:
            return None
        try:
            return self._spare_commands.pop()  # (atomic: commands start in any thread)
        except IndexError:
            pass
        path = os.path.join(node.path, f"cmd-{command_id}")
        os.mkdir(path)
        try:
            if self._init_ids is not None:
                os.chown(os.path.join(path, "cgroup.procs"), *self._init_ids)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            os.rmdir(path)
            raise
        return CommandCgroup(path, fd, self._spare_commands)


def _enable_controllers(parent: str, controllers: Sequence[str]) -> None:
    enabled = set((fs.read_text(os.path.join(parent, "cgroup.subtree_control")) or "").split())
    missing = [c for c in controllers if c not in enabled]
    if not missing:
        return
    try:
        fs.write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in missing))
    except OSError as err:
        raise UnsupportedError(
            f"cgroup v2 controllers {', '.join(missing)} for containers below {parent}",
            f"enabling them in its cgroup.subtree_control failed ({err.strerror}): it must hold no "
            "processes of its own and have them itself (see its cgroup.controllers)",
        ) from None


def release_nodes(paths: Sequence[str]) -> bool:
    """Kill everything in these cgroup directories and remove them (children
    first).  True when all are gone; missing ones count as gone."""
    for path in paths:
        if fs.kill_all(path):
            break
    deadline = time.monotonic() + REMOVE_TIMEOUT
    return all([fs.remove_tree(path, deadline) for path in paths])  # noqa: C419 - every one, even after a failure


# Empty command cgroups a container keeps for reuse: a mkdir and an rmdir of a
# cgroup cost ~0.2 ms of the caller's time, and much more while other cgroups
# on the host change (both take the kernel's cgroup_mutex): measured ~0.9 ms a
# command under load, on the event loop's one thread.
SPARE_COMMAND_GROUPS = 64
# A container's memory limit per resident forker it may have (ContainerCgroup.forkers).
FORKER_MEMORY_SHARE = 4 << 20


class CommandCgroup:
    """A command's own cgroup (v2), below its container's: the command and
    every process it starts, in a new session or not, can be killed at once.
    Its directory fd (sent with each request) stays open until it is removed."""

    def __init__(self, path: str, fd: int, spares: List[CommandCgroup]) -> None:
        self.path = path
        self.fd = fd
        self._killed = False
        self._spares = spares

    def release(self, ready: bool) -> None:
        """Its command ended: kept for another command when it was not killed
        and is ``ready`` (the init found nothing of the command left in it, at
        most the forker it keeps there), else removed (a daemon the command
        left keeps its own cgroup, removed with the container's)."""
        if ready and not self._killed and self.fd >= 0:
            if len(self._spares) < SPARE_COMMAND_GROUPS:
                self._spares.append(self)
                return
            self.kill()  # (its forker, if it has one)
        self.remove()

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def kill(self) -> None:
        self._killed = True
        fs.kill_all(self.path)

    def remove(self) -> None:
        """Remove it once empty: after a kill, wait (briefly) for the killed to
        leave, killing again what entered since (a command the init forked
        there just after the kill); else a command's daemons keep it until
        the container's end."""
        self.close_fd()
        if not self._killed:
            fs.remove_tree(self.path, 0.0)
            return
        deadline = time.monotonic() + 1.0
        while not fs.remove_tree(self.path, min(deadline, time.monotonic() + 0.05)) and time.monotonic() < deadline:
            fs.kill_all(self.path)


def write_limits(version: str, path: str, limits: CgroupLimits, controllers: Sequence[str]) -> None:
    """Write ``limits``' files of ``controllers`` into the cgroup directory
    ``path`` (of hierarchy ``version``); SetupError naming the file the kernel refused."""
    settings = (v2_settings if version == "v2" else v1_settings)(limits)
    for controller in controllers:
        for filename, value in _ordered(path, settings.get(controller, ())):
            file = os.path.join(path, filename)
            if filename == "memory.memsw.limit_in_bytes" and not os.path.exists(file):
                continue  # no swap accounting: no swap to limit
            try:
                fs.write(file, value)
            except OSError as err:
                raise SetupError(
                    err.errno,
                    f"write({file!r}, {value!r})",
                    step="CGROUP",
                    field=f"limits ({', '.join(limits.names())})",
                ) from None


def _ordered(path: str, settings: Sequence[Tuple[str, str]]) -> Sequence[Tuple[str, str]]:
    """v1's memory limit may never exceed memsw's (EINVAL), so a raised pair is
    written memsw first: when the new memsw is at least the memory limit in
    place (as runc orders an update).  A new cgroup's limits are unlimited: as given."""
    names = [name for name, _ in settings]
    if names != ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]:
        return settings
    current = fs.read_text(os.path.join(path, "memory.limit_in_bytes"))
    swap = settings[1][1]
    if current is not None and (swap == "-1" or int(swap) >= int(current)):
        return settings[::-1]
    return settings
