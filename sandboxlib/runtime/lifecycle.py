"""A container's lifecycle: plan -> spawn -> parent-side set-up -> go ->
running -> closed.

Every resource is registered for release right after it is acquired, and
released in reverse order by ``close()`` (also after a failed start)."""

from __future__ import annotations

import _socket
import _thread
import array
import errno
import functools
import itertools
import os
import select
import socket
import warnings
import weakref
from typing import Callable, Generator, List, Mapping, NamedTuple, NoReturn, Optional, Set, Tuple, TypeVar

import attrs

from .. import cgroups
from ..config import (
    CgroupLimits,
    ContainerConfig,
    Namespace,
    Network,
    bridged,
    extra_hosts_option,
)
from ..errors import ConfigError, ContainerStateError, SetupError, UnsupportedError
from ..images import ImageStore
from ..native import binding, protocol
from ..native.binding import Step
from ..native.failures import clone_hint, setup_error
from ..native.host import max_user_namespaces, probe_host
from ..native.mount_op import MountOp
from ..native.plan import GO_MESSAGE, build_plan, clone_flags, receive_netns
from ..network import Attachment, HostsFile, attachment, named, replace_extra_hosts
from ..posix.interrupts import sigint_deferred
from ..posix.io import close_quietly, shutdown_quietly
from ..posix.releases import Releases
from ..posix.sharedfd import OwnedSocket, SharedFd
from ..posix.signals import pidfd_kill_quietly
from ..posix.steps import Offload, Steps, read_to_end, run_steps
from ..rootfs import writable
from ..rootfs.idmap import IdMaps, choose_maps, userns_off, write_maps
from ..rootfs.imageroot import ImageRoot
from ..rootfs.layout import layout
from ..rootfs.mountpoints import make_mount_points
from ..rootfs.users import User, resolve_user
from ..security.bpf import clone3_split, compile_policy
from ..security.capabilities import INIT_CAPABILITIES, INIT_RUNTIME_CAPABILITIES, capability_mask
from ..security.seccomp import Seccomp, init_policy
from . import statedir
from .image_roots import ImageRoots
from .process import Process

__all__ = ["ContainerLifecycle"]

_WALL = 0x40000000  # __WALL: our child has no exit signal
_Self = TypeVar("_Self", bound="ContainerLifecycle")


class _Static(NamedTuple):
    """What every start of one configuration computes alike: a config is
    immutable and none of this reads the host, so it is made once per
    config (``_static``), not at each start."""

    caps: frozenset  # the commands' capability set
    program: bytes  # the container's compiled filter (b"": none)
    docker_default: bool  # the filter is Docker's default policy
    init_caps: int  # sbx-init's own capabilities, plus those its commands may keep
    runtime_caps: int  # what the init keeps once set up
    cgroup_limits: CgroupLimits
    needs_cgroup: bool  # cgroup limits are set
    idmap_binds: bool  # a bind asks for idmap=True


@functools.lru_cache(maxsize=64)  # (the config's hash is cached: one call per start)
def _static(config: ContainerConfig) -> _Static:
    caps = config.capabilities()
    limits = config.limits.cgroup()
    return _Static(
        caps=caps,
        # Compiled once per policy and capability set (cached), before any kernel resource.
        program=compile_policy(config.seccomp, caps) if config.seccomp else b"",
        docker_default=config.seccomp == Seccomp.default(),
        init_caps=capability_mask(INIT_CAPABILITIES | caps),
        runtime_caps=capability_mask(INIT_RUNTIME_CAPABILITIES | caps),
        cgroup_limits=limits,
        needs_cgroup=bool(limits.names()),
        idmap_binds=any(m.idmap for m in config.mounts),
    )


class ContainerLifecycle(ImageRoots):
    """Start, stop and close one container (its init, its cgroup, its state
    record, its image root); :class:`~sandboxlib.runtime.commands.BareContainer`
    adds commands, :class:`~sandboxlib.Container` files and calls."""

    # What a container starts with; set on the instance as it changes (class
    # attributes, so that a container's making stores only what differs:
    # one is made for every sb.run).
    _closing = False  # close() or stop() was called: no new commands
    _ready = False  # started, not closed
    _closed = False
    _resources_used = False
    _init_pid: Optional[int] = None
    _init_fd: Optional[SharedFd] = None  # the init's pidfd
    _control: Optional[socket.socket] = None  # start's own; commands use _channel
    _channel: Optional[SharedFd] = None
    _maps: Optional[IdMaps] = None
    _user: Optional[User] = None
    # Tests only: (step number, errno) forced to fail in the C child or
    # in the init's command set-up.  See tests/test_steps.py.
    _fault: Optional[tuple] = None
    _setup_fd: Optional[int] = None
    _ops: tuple = ()
    _idmap_ops: tuple = ()  # (index, op) of the binds the host idmaps
    _cgroup: Optional[cgroups.ContainerCgroup] = None
    _record: Optional[str] = None
    _image: Optional[ImageRoot] = None
    _store: Optional[ImageStore] = None
    _upper: Optional[str] = None
    _upper_kept = False
    _own_network_left = False  # (joins.py: disconnected from the network it started on)
    _network: Optional[Attachment] = None  # (or a PastaAttachment: the same steps)
    _hosts: Optional[Tuple[str, Tuple[Tuple[str, str], ...]]] = None  # its /etc/hosts: (the file, its extra hosts)

    def __init__(self, config: ContainerConfig) -> None:
        self.config = config
        self.id = os.urandom(32).hex()  # (secrets.token_hex's bytes, without its four Python calls)
        self.hostname = (
            socket.gethostname() if config.uts_namespace is Namespace.HOST else config.hostname or self.id[:12]
        )
        self._resources = Releases()
        self._owner = os.getpid()  # a forked child's copy is inert
        self._lock = _thread.RLock()  # start and close, one at a time (threading.RLock's, without its call)
        self._command_ids = itertools.count(1)
        # Weak references to its processes (a set of them, discarded as each
        # process goes: what a WeakSet is, without its Python-level layers).
        self._processes: Set[weakref.ref[Process]] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"running pid={self._init_pid}" if self._init_fd else "not started"
        root = (
            f"image={self.config.image!r}"
            if self.config.image
            else f"rootfs={self.config.rootfs!r}"
            if self.config.rootfs
            else "host view"
        )
        return f"<sandboxlib.{type(self).__name__} {self.id[:12]} {state} {root}>"

    @property
    def pid(self) -> Optional[int]:
        """Host pid of the container's init, while running."""
        return self._init_pid

    @property
    def root_ids_on_host(self) -> Tuple[int, int]:
        """The host's (uid, gid) of the container's root, once started: who owns
        what it writes to a bind mount (as root, an unprivileged id by default)."""
        if not self._resources_used:
            raise ContainerStateError("the container's ids are chosen when it starts")
        maps = self._maps
        if maps is None:  # no user namespace
            return 0, 0
        uid, gid = maps.to_host_uid(0), maps.to_host_gid(0)
        if uid is None or gid is None:
            raise ContainerStateError("the container's root is not mapped to a host id")
        return uid, gid

    @property
    def running(self) -> bool:
        return self._init_fd is not None and not self._init_exited(0)

    def start(self: _Self) -> _Self:
        """Start the container (its init, idle until commands arrive)."""
        run_steps(self._start_steps())
        return self

    def _start_steps(self) -> Steps:
        """The start as steps (``posix.steps``): the sync front polls, the asyncio front awaits."""
        return self._start_container(None)

    def _start_container(self, first: Optional[Callable[[], None]], one_shot: bool = True) -> Steps:
        """Steps: start; ``first`` runs right after the go byte, before set-up
        has finished (it queues the main command).  ``one_shot``: ``first``'s
        command is all the container will run (it may go without a cgroup)."""
        self._check_owner()
        with self._lock:  # a close() from another thread waits for the start to end
            if self._resources_used:
                raise ContainerStateError("a Container can be started only once")
            if self._closing:
                raise ContainerStateError("the container was closed (close() or stop()) before it started")
            self._resources_used = True
            yield from self._start_locked(first, one_shot)
            self._ready = True

    def _start_locked(self, first: Optional[Callable[[], None]], one_shot: bool) -> Steps:
        host = probe_host(userns_limit=False)  # (read if the clone is refused: _spawn_init)
        self._maps = choose_maps(self.config, host)
        try:
            # (a pull or an unpack: long work, which the asyncio front runs in a thread)
            layers = (yield Offload(self._prepare_image)) if self.config.image is not None else ()
            user = self.config.user or (self._image and self._image.user)
            if user is None and not self.config.group_add:  # root: no /etc/passwd or /etc/group to read
                self._user = self._checked_user(None, -1, "user")
            else:
                with sigint_deferred():  # (reads /etc/passwd: short)
                    root_fd = os.open(
                        self._image.passwd_root() if self._image else self.config.rootfs or "/",
                        os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                    )
                    try:
                        self._user = self._checked_user(user, root_fd, "user")
                    finally:
                        os.close(root_fd)
            root = statedir.state_root()
            ops = layout(self._with_network(self._with_volumes(), root), layers, self._upper)
            if self.config.rootfs is not None:
                make_mount_points(self.config.rootfs, ops)
            static = _static(self.config)  # (the filter compiled: before any kernel resource)
            statedir.sweep_if_due(root)  # what dead owners left
            # A one-shot run without cgroup limits needs no cgroup: its pid
            # namespace already ends with its init (measured: ~0.3 ms a run).
            # A rootless networked run keeps its record: its helper process (pasta) outlives the init.
            network_record = self._network is not None and self._network.NEEDS_RECORD
            # In the host's pid namespace nothing ends with the init: the cgroup ends every process.
            shared_pids = self.config.pid_namespace is Namespace.HOST
            one_shot = (
                one_shot and first is not None and not static.needs_cgroup and not network_record and not shared_pids
            )
            self._cgroup = (
                None
                if one_shot
                else cgroups.plan_cgroup(cgroups.detect(), static.cgroup_limits, cgroups.cgroup_name(root, self.id))
            )
            if shared_pids and self._cgroup is None:
                raise UnsupportedError(
                    "pid_namespace='host' without a cgroup (its processes could outlive the container)",
                    "run as root, or rootless in a delegated cgroup v2 subtree (as for cgroup limits)",
                )
            if not one_shot:  # (without a cgroup, a one-shot run gets no record either: nothing to register)
                with sigint_deferred():  # the record is written whole, the cgroup's removal registered
                    self._acquire_cgroup(root)
            # A one-shot run without a cgroup gets no record either: it would
            # name only the init, which ends by itself when we go (it watches
            # our pidfd and its control socket), taking its pid namespace
            # along.  (Record, init start time and removal: ~60 us a run.)
            yield from self._spawn(ops, None if one_shot else root, first, static, one_shot=one_shot)
        except BaseException:
            self.close()
            raise

    def _with_network(self, config: ContainerConfig, state_root: str) -> ContainerConfig:
        """Attach a bridge network's container (ports bound, address leased)
        and give it its /etc/resolv.conf and /etc/hosts; off a bridge, an
        /etc/hosts of its own only for ``extra_hosts``."""
        if not bridged(config.network) and not config.extra_hosts:
            return config
        statedir.ensure_root(state_root)
        if bridged(config.network):
            where = named.bridge_of(state_root, config.network)  # an unknown name: ConfigError, nothing made
            self._network = attachment(config, self.id, self.hostname, state_root, where)
            self._resources.callback(self._network.close)
            self._network.prepare()
            files = self._network.mounts()
        else:
            hosts = HostsFile(state_root, self.id, config.extra_hosts, host=config.network is Network.HOST)
            self._resources.callback(hosts.close)
            files = hosts.mounts()
        hosts_path = next((m.source for m in files if m.target == "/etc/hosts"), None)
        if hosts_path is not None:
            self._hosts = (hosts_path, config.extra_hosts)
        if config.rootfs is not None:  # /etc/resolv.conf and /etc/hosts, made if missing (as Docker does)
            make_mount_points(
                config.rootfs,
                [
                    MountOp(kind=binding.MountKind.BIND, target=m.target, source=m.source, flags=binding.MountFlag.FILE)
                    for m in files
                ],
            )
        return attrs.evolve(config, mounts=config.mounts + files, env=dict(config.env))

    def update_hosts(self, hosts: Mapping[str, str]) -> None:
        """Set names' addresses in the running container's ``/etc/hosts`` (``{"db":
        "172.17.0.5"}``): its ``extra_hosts`` lines, a name's replaced, a new one's
        added (Docker rewrites a linking container's lines of a link when the
        container it links to starts again at another address).  The container
        needs an ``/etc/hosts`` of ours: on a bridge network, or with ``extra_hosts``."""
        given = extra_hosts_option(hosts)
        with self._lock:
            self._check_running()
            if self._hosts is None:
                raise ConfigError(
                    "hosts", "the container has no /etc/hosts of ours (no bridge network, no extra_hosts)"
                )
            path, current = self._hosts
            merged = tuple(sorted({**dict(current), **dict(given)}.items()))
            replace_extra_hosts(path, current, merged)
            self._hosts = (path, merged)

    @property
    def address(self) -> Optional[str]:
        """The container's address on its bridge while it runs (``"172.17.0.2/16"``;
        the bridge's gateway is its network's first address); None off a bridge or through pasta."""
        network = self._network
        if network is None or self._own_network_left or self._closed or not self._resources_used:
            return None
        if not hasattr(network, "address"):  # (an Attachment's, or a rootless named network's UserBridgeAttachment's)
            return None
        return str(network.address)

    def _leave_own_network(self) -> None:
        """Off the bridge it started on while it runs (``disconnect``; root's bridges only)."""
        leave = getattr(self._network, "leave", None)
        if leave is None:
            raise UnsupportedError(
                "leaving the network a container started on rootless", "disconnect networks it joined instead"
            )
        leave()
        self._own_network_left = True

    @property
    def ports(self) -> dict:
        """Where the published ports are on the host, once started:
        ``{"80/tcp": ("127.0.0.1", 8080)}``."""
        return self._network.ports if self._network is not None else {}

    def _acquire_cgroup(self, state_root: str) -> None:
        """Record the container, then make its cgroup: a SIGKILL of ours at any
        point leaves a record that names every cgroup directory to sweep."""
        cgroup = self._cgroup
        self._resources.callback(self._release_cgroup)
        if cgroup is not None:  # without one, _send_setup records the container with its init
            self._record = statedir.register(state_root, self.id, cgroup_paths=cgroup.paths)
            cgroup.create()
            maps = self._maps
            uid, gid = (maps.to_host_uid(0), maps.to_host_gid(0)) if maps is not None else (None, None)
            if uid is not None and gid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
                cgroup.delegate_procs(uid, gid)  # the init starts commands in child cgroups

    def _release_cgroup(self) -> None:
        """Remove the cgroup, then the record (kept, for a later sweep, while
        some cgroup directory cannot be removed)."""
        if self._record is None:
            return
        if self._cgroup is None or self._cgroup.remove():
            statedir.unregister(self._record)
        else:
            warnings.warn(
                f"cgroups of container {self.id[:12]} are still busy; a later start sweeps them",
                ResourceWarning,
                stacklevel=2,
            )

    def _kill_all(self) -> None:
        """Kill every process of the container through its cgroup (no fork
        escapes).  Not needed once the init has exited, unless it shares the
        host's pid namespace: the kernel has then killed its whole pid
        namespace, which every process of the cgroup is in."""
        shared = self.config.pid_namespace is Namespace.HOST
        if self._cgroup is not None and (shared or not self._init_exited(0)):
            self._cgroup.kill()

    def _spawn(
        self, ops, state_root: Optional[str], first: Optional[Callable[[], None]], static: _Static, *, one_shot: bool
    ) -> Steps:
        """Steps of the spawn protocol: clone (the child execs sbx-init at once), send the
        plan, write the id maps while the child starts on it, send go, queue
        the first command, read the error pipe to EOF (= set up).  ``state_root``:
        where the init is recorded (None: nowhere).  ``one_shot``: no cgroup, and
        ``first``'s command is all the container is for."""
        # Idmapped binds are made here, as root (csrc/idmap.c says why);
        # rootless, the child's plain binds already show the caller's files as root's.
        wanted = static.idmap_binds and self._maps is not None and os.geteuid() == 0
        self._idmap_ops = (
            tuple((i, op) for i, op in enumerate(ops) if op.flags & binding.MountFlag.IDMAP) if wanted else ()
        )  # (scanning the ~40 ops of every start for the flag cost ~60 us)
        if len(self._idmap_ops) > binding.MAX_IDMAPS:
            raise ConfigError(
                "mounts", f"at most {binding.MAX_IDMAPS} binds with idmap=True, got {len(self._idmap_ops)}"
            )
        docker_default, program = static.docker_default, static.program
        # One filter load, not two: Docker's policy refuses all that the init's
        # does (tests/test_seccomp.py proves it for each capability set) and
        # allows the command set-up, so the init may install it in its own
        # place at lock-down and every command inherits it.  Not where commands
        # get cgroups of their own: that takes clone3, which the policy refuses.
        filter_in_init = docker_default and one_shot
        plan = build_plan(
            ops=ops,
            rootfs=self.config.rootfs,
            read_only=self.config.read_only,
            hostname=self.hostname if self.config.uts_namespace is Namespace.PRIVATE else None,
            userns=self._maps is not None,
            netns=self.config.network is not Network.HOST,
            send_netns=self._network is not None,
            set_groups=bool(self._maps and self._maps.setgroups),
            fault=self._fault,
            seccomp_filter=b"" if filter_in_init else program,
            launcher=docker_default,
            init_caps=static.runtime_caps,
            init_filter=program if filter_in_init else compile_policy(init_policy(), static.caps),
            # Commands in cgroups of their own (run with a timeout, every aio
            # run) are forked by a launcher too, whose filter lets it clone3.
            cgroup_launcher=(
                clone3_split(self.config.seccomp, static.caps)
                if docker_default and not one_shot and self._cgroup is not None and self._cgroup.v2 is not None
                else None
            ),
            forkers=self._cgroup.forkers if self._cgroup is not None else 0,
            # Its processes' host uid is other containers' too: kill() and ptrace() check only that.
            scope=self.config.pid_namespace is Namespace.HOST,
        )
        # Ctrl-C is deferred from the first fd to the init's registration: a
        # KeyboardInterrupt between them would lose fds and leave a zombie.
        # (No wait in there: a deferral does not span an event loop's other tasks.)
        with sigint_deferred():
            err_r, pid = self._spawn_init(plan, static.init_caps)
        problem = yield from self._send_setup(pid, first, state_root)
        if problem is not None:
            report = yield from read_to_end(err_r)  # the child failed first, or gives up now
            if report:
                self._raise_setup_failure(report, ops)
            raise problem
        if first is not None:
            self._setup_fd, self._ops = err_r, ops  # read only if the first command fails
            return
        report = yield from read_to_end(err_r)
        if report:
            self._raise_setup_failure(report, ops)

    def _spawn_init(self, plan: bytes, init_caps: int) -> tuple:
        """Clone: (the error pipe's read end, the init's pid), every release registered."""
        push = self._resources.callback
        push(self._release_processes)  # after the init is gone (released in reverse)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        push(close_quietly, err_r)
        ours, theirs = _socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # (no socket objects to detach)
        control = OwnedSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, ours.detach())  # __del__ closes it
        self._control = control
        self._channel = SharedFd(control, socket.socket.close, "the container is not running")
        push(self._channel.close)
        child_ends = [err_w, theirs.detach()]
        # Queued before the clone: the child reads it as soon as it starts,
        # not when this thread gets the CPU back from the child's threads.
        control.send(plan)
        try:
            child_ends.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
            child_ends.append(os.pidfd_open(os.getpid()))
            flags = clone_flags(
                userns=self._maps is not None,
                new_pid=self.config.pid_namespace is Namespace.PRIVATE,
                new_uts=self.config.uts_namespace is Namespace.PRIVATE,
            )
            fault = self._fault if self._fault and self._fault[0] in (Step.INIT_EXEC, Step.CGROUP) else (0, 0)
            if self._cgroup is not None:
                child_ends += self._cgroup.attach_fds()
                child_ends.append(self._cgroup.open_v2())
            try:
                pid, pidfd = binding.spawn(
                    flags,
                    [child_ends[2], child_ends[1], child_ends[3], err_w],
                    caps=init_caps,
                    fault=fault,
                    netns=self.config.network is not Network.HOST,
                    cgroup_fd=child_ends[-1] if self._cgroup else -1,
                    attach_fds=child_ends[4:-1] if self._cgroup else (),
                )
            except OSError as err:
                code = err.errno or 0  # _lowlevel.spawn's OSError has the clone's errno
                if code == errno.ENOSPC and self._maps is not None and max_user_namespaces() == 0:
                    raise userns_off() from None
                raise SetupError(code, f"clone(flags={flags:#x})", step="CLONE", hint=clone_hint(code)) from None
        finally:
            for fd in child_ends:
                if fd >= 0:
                    os.close(fd)
        self._init_pid, self._init_fd = pid, SharedFd(pidfd, os.close, "the container is not running")
        push(self._reap_init)
        push(self._kill_all)  # released first: the cgroup kill, then the init is reaped
        return err_r, pid

    def _send_setup(self, pid: int, first, state_root: Optional[str]) -> Generator[int, None, Optional[BaseException]]:
        """Steps: id maps, go, first command (the plan is queued already).  Returns None, or the error
        to raise if the child (which then ends) reports no failure of its own."""
        control = self._control
        assert control is not None  # made by _spawn before the clone
        try:
            if self._maps is not None:
                yield from write_maps(pid, self._maps)
            if self._network is not None:
                yield control.fileno()  # the init sends its network namespace once it has one
                netns = receive_netns(control)
                try:
                    self._network.connect(netns, pid)
                finally:
                    os.close(netns)
            self._send_go(control, pid)
            if first is not None:
                with sigint_deferred():  # (its fds are the caller's once it returns)
                    first()
        except (SetupError, ContainerStateError, OSError) as err:
            control.shutdown(socket.SHUT_RDWR)  # a child still waiting gives up
            if isinstance(err, OSError) and not isinstance(err, SetupError):
                return ContainerStateError(f"the container's init ended during set-up ({err})")
            return err
        # The child is still setting up: record its init meanwhile.
        if state_root is None:
            return None
        with sigint_deferred():  # (the record is removed with the cgroup once it is ours)
            if self._record is None:
                self._record = statedir.register(state_root, self.id, init_pid=pid)
            else:
                statedir.add_init(self._record, pid)
        return None

    def _send_go(self, control: socket.socket, pid: int) -> None:
        """The go message, with the idmapped trees of the binds that asked for them."""
        if not self._idmap_ops:
            control.send(GO_MESSAGE)
            return
        trees: List[int] = []
        userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for _, op in self._idmap_ops:
                try:
                    read_only = bool(op.flags & binding.MountFlag.RDONLY)
                    trees.append(binding.idmapped_tree(op.source, userns, read_only=read_only))
                except OSError as err:
                    raise setup_error(Step.MOUNT, err.errno or 0, 0, ops=(op,), context={}) from None
            control.sendmsg([GO_MESSAGE], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", trees))])
        finally:
            os.close(userns)
            for fd in trees:
                os.close(fd)

    def _raise_setup_failure(self, report: bytes, ops) -> NoReturn:
        if len(report) < binding.REPORT_SIZE:
            raise SetupError(
                0, "container set-up", step="UNKNOWN", hint=f"the child died without a report ({len(report)} bytes)"
            )
        step, err, index = binding.REPORT.unpack_from(report)
        context = {"hostname": self.hostname, "rootfs": self.config.rootfs, "read_only": self.config.read_only}
        raise setup_error(step, err, index, ops=ops, context=context)

    def _init_exited(self, timeout: Optional[float]) -> bool:
        handle = self._init_fd
        if handle is None:
            return True
        try:
            with handle.use() as pidfd:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
        except ContainerStateError:
            return True  # closed by now

    def _reap_init(self) -> None:
        """Kill the init (the kernel then kills everything in its pid ns) and reap it."""
        handle = self._init_fd
        self._init_pid = None
        if handle is None:
            return
        try:
            with handle.use() as pidfd:
                pidfd_kill_quietly(pidfd)
                if self._upper is not None and not self._upper_kept:  # while the kernel tears the container down
                    writable.remove_if_empty(self._upper)
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _WALL)
        except (ChildProcessError, ContainerStateError):
            pass
        finally:
            handle.close()  # once a poll of another thread (it returns: the init is gone) let go

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every process, SIGKILL what is left after ``timeout`` seconds, then
        close (which kills through the cgroup first: no fork bomb outruns it).
        From any thread; during a start, waits for it to end."""
        self._check_owner()
        self._closing = True  # no new commands from now on
        with self._lock:  # a start in progress ends first
            channel = self._channel if self._ready else None
        if channel is not None:
            try:
                with channel.use() as control:
                    control.send(protocol.encode_stop(timeout))
                self._init_exited(timeout + 1.0)
            except (ContainerStateError, OSError):
                pass  # closed meanwhile, or the init is gone
        self.close()

    def close(self) -> None:
        """Kill everything in the container and release every resource.  Idempotent;
        from any thread (during a start it waits for the start to end); does
        nothing in a forked child."""
        if self._forked():
            return
        self._closing = True
        with sigint_deferred(), self._lock:
            if self._closed:
                return
            self._closed, self._ready = True, False
            if self._channel is not None:  # no command is being sent from now on
                self._channel.close(wake=shutdown_quietly, wait=True)
            self._resources.close()

    def __enter__(self: _Self) -> _Self:
        if not self._resources_used:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_init_fd", None) is not None and not self._closed and not self._forked():
            warnings.warn(f"Container {self.id[:12]} was never closed; killing it", ResourceWarning, stacklevel=2)
            self.close()

    def _forked(self) -> bool:
        return os.getpid() != getattr(self, "_owner", os.getpid())

    def _check_owner(self) -> None:
        if self._forked():
            raise ContainerStateError(
                f"this container belongs to process {self._owner}, which made it; in a forked child "
                f"(pid {os.getpid()}) it cannot be used, and closing it there does nothing"
            )

    def _checked_user(self, spec, root_fd: int, field: str) -> User:
        user = resolve_user(spec, root_fd, self.config.group_add)
        maps = self._maps
        if maps is None:
            return user
        user, groups = _mapped_user(user, maps, field)
        asked = set(resolve_user(None, root_fd, self.config.group_add).groups) if self.config.group_add else set()
        if asked and (not maps.setgroups or not asked <= set(groups)):
            raise ConfigError(
                "group_add",
                f"gids {sorted(asked - set(groups if maps.setgroups else ()))} cannot be given: "
                + ("not mapped in the user namespace" if maps.setgroups else "setgroups is denied in it (rootless)"),
            )
        return user

    def _release_processes(self) -> None:
        for ref in list(self._processes):
            process = ref()
            if process is not None:
                process.container_ended()

    def _on_close(self, release: Callable[[], None]) -> None:
        """Register ``release`` for close(); run it now if the container closed meanwhile."""
        with self._lock:
            if not self._closed:
                self._resources.callback(release)
                return
        release()

    def _check_running(self) -> None:
        if os.getpid() != self._owner:
            self._check_owner()  # (its error)
        if not self._ready or self._closing:
            raise ContainerStateError("the container is not running (use it in a `with` block or call start())")


@functools.lru_cache(maxsize=64)  # (the same user and maps for every start of a config, as root)
def _mapped_user(user: User, maps: IdMaps, field: str) -> Tuple[User, Tuple[int, ...]]:
    """``user`` as the container sees it: ConfigError unless its ids are
    mapped; its groups that are mapped (all of them, or none where setgroups is denied)."""
    if maps.to_host_uid(user.uid) is None or maps.to_host_gid(user.gid) is None:
        raise ConfigError(
            field,
            f"uid {user.uid} / gid {user.gid} is not mapped in the user "
            f"namespace (uid_map: {[m.line() for m in maps.uid_map]})",
        )
    groups = tuple(g for g in user.groups if maps.to_host_gid(g) is not None)
    return User(uid=user.uid, gid=user.gid, groups=groups if maps.setgroups else (), home=user.home), groups
