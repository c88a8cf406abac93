"""The OCI verbs on one container: create, start, state, kill, delete, exec, ps.

``create`` spawns the container's sbx-init in the detached mode
(``SBX_PLAN_DETACHED``): set up, it serves a listening control socket
(``ROOT/ID/init.sock``) instead of watching its creator, and holds the main
process's request (``SBX_EXEC_HOLD``: args, user, stdio or terminal) until
``start`` sends START: the runtime-spec's "created" state.  The init is the
container's pid (what ``state`` and ``--pid-file`` give); when the main
process ends the init exits with its status (128 + signal when killed), so
whoever reaps it (conmon, a containerd shim: subreapers that inherit it
when this process exits) reads the container's exit status from it."""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import subprocess
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, ContainerStateError, SetupError
from ..native import binding, protocol
from ..native.host import probe_host
from ..native.plan import GO_MESSAGE, build_plan, clone_flags
from ..posix.io import read_all
from ..security.capabilities import INIT_CAPABILITIES, INIT_RUNTIME_CAPABILITIES, capability_mask
from . import cgroup as oci_cgroup
from .control import FORWARDED, connect, destroy, front_record, load, now, oci_state
from .filters import compiled_filters
from .hooks import run_hooks
from .spec import ProcessSpec, Spec, load_spec, resource_limits
from .state import ContainerDir, start_time, status_of

if TYPE_CHECKING:
    from ..rootfs.idmap import IdMaps

# What only some containers need (a user namespace, a terminal, an error) is
# imported where it is used: `create` is a new interpreter per container, and
# its imports are most of its time.

__all__ = ["create", "exec_process", "update", "exit_code"]


def _maps(spec: Spec) -> Optional[IdMaps]:
    host = probe_host()
    if not spec.new_user:
        if not host.is_root:
            raise ConfigError("linux.namespaces", "without a user namespace the runtime must run as root")
        return None
    from ..config import IdMapping
    from ..rootfs.idmap import IdMaps

    uid_map = spec.uid_map or (IdMapping(container=0, host=host.euid, size=1),)
    gid_map = spec.gid_map or (IdMapping(container=0, host=host.egid, size=1),)
    own = len(uid_map) == 1 and uid_map[0].host == host.euid and uid_map[0].size == 1
    return IdMaps(uid_map=uid_map, gid_map=gid_map, setgroups=host.is_root, use_helpers=not host.is_root and not own)


def _request(process: ProcessSpec, *, main: bool, hold: bool, set_groups: bool, command_id: int = 0) -> bytes:
    request = protocol.ExecRequest(
        argv=process.args,
        env=process.env,
        cwd=process.cwd,
        search_path=process.search_path,
        uid=process.uid,
        gid=process.gid,
        groups=process.groups,
        rlimits=process.rlimits,
        cap_keep=capability_mask(frozenset(process.capabilities)),
        no_new_privs=process.no_new_privileges,
        cap_sets=(
            capability_mask(frozenset(process.effective)),
            capability_mask(frozenset(process.permitted)),
            capability_mask(frozenset(process.inheritable)),
            capability_mask(frozenset(process.ambient)),
        ),
        main=main,
        set_groups=set_groups,
        id=command_id,
        tty_size=process.console_size if process.terminal else None,
        hold=hold,
    )
    return protocol.encode_exec(request)


def _filter_privilege(process: ProcessSpec, program: bytes) -> frozenset:
    """Without no_new_privs a command installs its filter with CAP_SYS_ADMIN
    (csrc/command.c), which the init then keeps in its permitted set (the
    command's own sets are cut to the config's right after)."""
    return frozenset({"SYS_ADMIN"}) if program and not process.no_new_privileges else frozenset()


def _context(process: ProcessSpec) -> dict:
    return {"argv": process.args, "search_path": process.search_path, "cwd": process.cwd}


def _await_start(
    reply_sock: socket.socket, process: ProcessSpec, console_socket: Optional[str]
) -> Tuple[Optional[int], int]:
    """Read replies up to STARTED: (the command's host pid, STARTED's pid); FAILED raises."""
    host_pid = None
    while True:
        reply = protocol.decode_reply(reply_sock)
        if reply is None:
            raise ContainerStateError("the container's init ended before the process started")
        if reply.kind == protocol.REPLY_TTY and reply.fd is not None:
            try:
                if console_socket:
                    from .console import send_console

                    send_console(console_socket, reply.fd)
            finally:
                os.close(reply.fd)
        elif reply.kind == protocol.REPLY_PID:
            host_pid = reply.host_pid
        elif reply.kind == protocol.REPLY_FAILED:
            from ..native.failures import exec_error

            raise exec_error(reply.step, reply.errno, reply.index, _context(process))
        elif reply.kind == protocol.REPLY_STARTED:
            return host_pid, reply.pid


def _write_pid_file(path: Optional[str], pid: int) -> None:
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)


def create(root: str, container_id: str, bundle: str, *, pid_file=None, console_socket=None) -> None:
    spec = load_spec(bundle)
    if spec.process is None:
        raise ConfigError("process", "config.json has no process to run")
    if spec.process.terminal and not console_socket:
        raise ConfigError("process.terminal", "a terminal needs --console-socket")
    cdir = ContainerDir(root, container_id)
    cdir.make()
    saved: Dict[str, Any] = {"bundle": spec.bundle, "rootfs": spec.root, "pid": 0, "created": now()}
    try:
        with cdir.locked():
            _create(root, cdir, spec, saved, pid_file, console_socket)
    except BaseException:
        destroy(cdir, saved)
        raise


def _create(root: str, cdir: ContainerDir, spec: Spec, saved: Dict[str, Any], pid_file, console_socket) -> None:
    process = spec.process
    assert process is not None
    maps = _maps(spec)
    if maps is not None:
        from ..rootfs.mountpoints import make_mount_points

        make_mount_points(spec.root, spec.ops)
    caps = frozenset(process.capabilities)
    program, init_filter = compiled_filters(root, spec.seccomp, caps)
    plan = build_plan(
        ops=spec.ops,
        rootfs=spec.root,
        read_only=spec.readonly,
        hostname=spec.hostname,
        userns=maps is not None,
        netns=spec.new_network,
        set_groups=bool(maps and maps.setgroups),
        seccomp_filter=program,
        init_caps=capability_mask(INIT_RUNTIME_CAPABILITIES | caps | _filter_privilege(process, program)),
        init_filter=init_filter,
        detached=True,
        keep_privs=not process.no_new_privileges,
        mount_order=True,
        root_propagation=int(spec.root_propagation),
        joins={kind: path for kind, path in spec.joins.items() if kind != "pid"},
    )
    cgroups_path = spec.cgroups_path or f"sandboxlib-runtime-{cdir.id}"  # (relative: below ours)
    group = oci_cgroup.plan(cgroups_path, spec.limits)
    saved.update(
        annotations=dict(spec.annotations),
        hooks={k: list(v) for k, v in spec.hooks.items()},
        cgroup=[(n.version, n.path, list(n.controllers)) for n in group.nodes] if group else [],
        set_groups=maps is None or maps.setgroups,
    )
    cdir.write(saved)  # the cgroup directories are recorded before they are made
    if group is not None:
        try:
            group.create()  # (the limits written, the device rules with them)
        except BaseException:
            # create() removed what it made; a directory it found made (another
            # creator's, since plan() looked) is not ours to remove.
            saved["cgroup"] = []
            raise
    if process.umask is not None:
        os.umask(process.umask)  # the init's, and so every command's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    pidns = os.open(spec.joins["pid"], os.O_RDONLY | os.O_CLOEXEC) if "pid" in spec.joins else -1
    child_fds: List[int] = []
    try:
        with cdir.socket_address() as address:
            listener.bind(address)
        listener.listen(16)
        control.send(plan)
        if group is not None:
            child_fds = group.attach_fds()
            child_fds.append(group.open_v2())
        pid, pidfd = binding.spawn(
            clone_flags(userns=maps is not None, new_pid=pidns < 0),
            [null, control_child.fileno(), listener.fileno(), err_w],
            caps=capability_mask(INIT_CAPABILITIES | caps),
            # The early network thread only without joins: a mount namespace is joined single-threaded.
            netns=spec.new_network and not spec.joins,
            pidns_fd=pidns,
            cgroup_fd=child_fds[-1] if child_fds else -1,
            attach_fds=child_fds[:-1],
            new_cgroupns=spec.new_cgroup and group is not None,
        )
        os.close(pidfd)
        saved.update(pid=pid, init_start=start_time(pid))
        cdir.write(saved)
        for fd in (null, err_w, pidns, *child_fds):
            if fd >= 0:  # (no v2 directory, no pid namespace to join: -1)
                os.close(fd)
        null = err_w = pidns = -1
        child_fds = []
        control_child.close()
        listener.close()
        if maps is not None:
            from ..posix.steps import run_steps
            from ..rootfs.idmap import write_maps

            try:
                run_steps(write_maps(pid, maps))
            except SetupError:
                control.close()  # the init, if still waiting for go, ends (EOF on err_r)
                _raise_report(read_all(err_r), spec)  # its own failure (it ended first) is the cause
                raise
        control.send(GO_MESSAGE)
        _raise_report(read_all(err_r), spec)
        _set_up(pid, process, spec)
        front = front_record(cdir, saved)
        if front is not None:
            cdir.write_front(front)
        run_hooks("prestart", spec.hooks["prestart"], oci_state(cdir, saved))
        run_hooks("createRuntime", spec.hooks["createRuntime"], oci_state(cdir, saved))
        run_hooks("createContainer", spec.hooks["createContainer"], oci_state(cdir, saved))
        ours, theirs = protocol.reply_socketpair()
        with ours, theirs:
            fds = [theirs.fileno()] + ([] if process.terminal else [0, 1, 2])
            protocol.send_request(control, _request(process, main=True, hold=True, set_groups=saved["set_groups"]), fds)
            theirs.close()
            _await_start(ours, process, console_socket)
    finally:
        for fd in (null, err_w, err_r, pidns, *child_fds):
            if fd >= 0:
                os.close(fd)
        control.close()
        control_child.close()
        listener.close()
    _write_pid_file(pid_file, saved["pid"])


def _raise_report(report: bytes, spec: Spec) -> None:
    """The init's set-up failure record (empty: it succeeded) as an exception."""
    if report:
        from ..native.failures import setup_error

        step, err, index = binding.REPORT.unpack_from(report.ljust(binding.REPORT_SIZE, b"\0"))
        raise setup_error(step, err, index, ops=spec.ops, context={"hostname": spec.hostname})


def _set_up(pid: int, process: ProcessSpec, spec: Spec) -> None:
    """What the host writes once the container is set up: the init's rlimits
    (inherited by its commands: raised here, with our privileges, as runc's
    init raises them before it drops its capabilities), oomScoreAdj, sysctl."""
    for name, soft, hard in process.rlimits:
        try:
            resource.prlimit(pid, protocol.RLIMIT_NUMBERS[name], (soft, hard))
        except (OSError, ValueError) as err:
            raise ConfigError(f"process.rlimits ({name})", f"prlimit({soft}, {hard}): {err}") from None
    if process.oom_score_adj is not None:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))
    for key, value in spec.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        # Net and IPC sysctls are the writer's namespaces': written from them.
        proc = subprocess.run(
            ["nsenter", f"--target={pid}", "--net", "--ipc", "--uts", "--", "sh", "-c", 'printf %s "$2" > "$1"', "-"]
            + [path, value],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ConfigError(f"linux.sysctl.{key}", proc.stderr.decode(errors="replace").strip())


def exec_process(
    root: str,
    container_id: str,
    process: ProcessSpec,
    *,
    detach: bool = False,
    pid_file: Optional[str] = None,
    console_socket: Optional[str] = None,
) -> int:
    """Run ``process`` in the container: its exit status (or 0 with ``detach``).

    The command is a child of the container's init, not of this process; a
    caller that waits for a pid (conmon) gets one of ours that waits for
    the command and exits with its status (``detach``: a forked waiter)."""
    cdir, saved = load(root, container_id)
    if status_of(cdir, saved) == "stopped":
        raise ContainerStateError("cannot exec in a stopped container")
    if process.terminal and not console_socket and detach:
        raise ConfigError("--tty", "a detached terminal needs --console-socket")
    import secrets  # (exec only)

    command_id = secrets.randbits(31) | 1
    ours, theirs = protocol.reply_socketpair()
    with ours, connect(cdir) as control:
        fds = [theirs.fileno()] + ([] if process.terminal else [0, 1, 2])
        payload = _request(
            process, main=False, hold=False, set_groups=saved.get("set_groups", False), command_id=command_id
        )
        protocol.send_request(control, payload, fds)
        theirs.close()
        _await_start(ours, process, console_socket)
        if detach:
            waiter = os.fork()
            if waiter:
                _write_pid_file(pid_file, waiter)
                return 0
            os.setsid()
            os._exit(_wait_command(cdir, ours, command_id))
        _write_pid_file(pid_file, os.getpid())
        return _wait_command(cdir, ours, command_id)


def _wait_command(cdir: ContainerDir, reply_sock: socket.socket, command_id: int) -> int:
    """Wait for the command's EXITED, forwarding our signals to it; its status as an exit code."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wfd)
    for sig in FORWARDED:
        signal.signal(sig, lambda *_: None)
    while True:
        ready, _, _ = select.select([reply_sock.fileno(), rfd], [], [])
        if rfd in ready:
            for number in os.read(rfd, 64):
                try:
                    with connect(cdir) as control:
                        control.send(protocol.encode_signal(command_id, number, group=False))
                except (ContainerStateError, OSError):
                    pass
        if reply_sock.fileno() in ready:
            reply = protocol.decode_reply(reply_sock)
            if reply is None:
                return 137  # the container ended under it
            if reply.kind == protocol.REPLY_EXITED:
                return exit_code(reply.status)


def exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def update(root: str, container_id: str, resources: Dict[str, Any]) -> None:
    _cdir, saved = load(root, container_id)
    oci_cgroup.update([tuple(n) for n in saved.get("cgroup", ())], resource_limits(resources))
