"""Turn a child's (step, errno, index) report into a precise exception that
names the operation, its paths and flags, the step and the config field."""

from __future__ import annotations

import errno as E
from typing import Optional, Sequence

from ..errors import CommandNotFoundError, SetupError
from .binding import JOIN_NAMESPACES, MountFlag, MountKind, Step
from .mount_op import MountOp

__all__ = ["setup_error", "exec_error", "clone_hint"]

_STEP_OPERATIONS = {
    Step.SYNC: "waiting for the parent",
    Step.IDENTITY: "setgroups/setresgid/setresuid(0) in the new user namespace",
    Step.KEYRING: "keyctl(KEYCTL_JOIN_SESSION_KEYRING): a fresh session keyring",
    Step.LOCKDOWN: "the init's lock-down after set-up (capset, no_new_privs, its own seccomp filter; part {index})",
    Step.HOSTNAME: "sethostname({hostname!r})",
    Step.NETWORK: "bringing up 'lo' in the new network namespace",
    Step.PROPAGATION: "mount('/', MS_REC|MS_PRIVATE)",
    Step.BASE: "scratch tmpfs on /tmp and pivot_root",
    Step.ROOT: "mounting the container root (rootfs={rootfs!r}, read_only={read_only})",
    Step.PIVOT: "pivot_root into the container root",
    Step.INIT_EXEC: "execveat of the container init",
    Step.FORK: "fork of the command",
    Step.REQUEST: "exec request to the init",
    Step.STDIO: "dup2 of standard stream {index}",
    Step.RLIMIT: "setrlimit({rlimit})",
    Step.CHDIR: "chdir({cwd!r})",
    Step.USER: "setgroups/setresgid/setresuid to uid={uid} gid={gid}",
    Step.NO_NEW_PRIVS: "prctl(PR_SET_NO_NEW_PRIVS)",
    Step.CAPS: "dropping capabilities",
    Step.SECCOMP: "installing the seccomp filter",
    Step.JOIN: "setns() into the {join} namespace given by path",
    Step.SCOPE: "landlock_restrict_self() with LANDLOCK_SCOPE_SIGNAL",
    Step.TTY: "a pseudo-terminal from the container's devpts (/dev/pts/ptmx) as the controlling terminal",
    Step.CGROUP: "joining the container's cgroups (write of 0 to cgroup v1 tasks file {index}, "
    "or unshare(CLONE_NEWCGROUP))",
}

_STEP_FIELDS = {
    Step.HOSTNAME: "hostname",
    Step.ROOT: "rootfs",
    Step.CHDIR: "cwd",
    Step.USER: "user",
    Step.RLIMIT: "limits",
    Step.CAPS: "cap_add",
    Step.SECCOMP: "seccomp",
    Step.CGROUP: "limits",
    Step.JOIN: "linux.namespaces",
    Step.SCOPE: "pid_namespace",
    Step.TTY: "tty",
}


def _flag_names(flags: int) -> str:
    names = [f.name for f in MountFlag if flags & f]
    return "|".join(names) if names else "0"


def describe_op(op: MountOp) -> str:
    kind = MountKind(op.kind).name.lower()
    parts = [f"type={kind}"]
    if op.source is not None:
        parts.append(f"source={op.source!r}")
    parts.append(f"target={op.target!r}")
    if op.data:
        parts.append(f"options={op.data!r}")
    parts.append(f"flags={_flag_names(int(op.flags) & ~MountFlag.USER)}")  # USER: ours, not the kernel's
    return f"mount({', '.join(parts)})"


def _mount_hint(op: MountOp, err: int) -> Optional[str]:
    if err == E.EXDEV and op.flags & MountFlag.USER:
        return (
            "the target, resolved in the container's root (a symlink there followed), is on or under "
            "/proc, /sys or /dev/pts, is /dev itself or the root, or is on another kernel file system "
            "(proc, sysfs, cgroup, securityfs, ...): a mount may not cover the container's kernel file "
            "systems and their masks; mount elsewhere"
        )
    if op.flags & MountFlag.IDMAP and err in (E.EINVAL, E.EOPNOTSUPP):
        return (
            "the source's file system, or one mounted below it, cannot be idmapped (such as NFS, "
            "FUSE, proc or sysfs): bind it without idmap=True (a root daemon idmaps every bind "
            "and volume: docs/daemon.md)"
        )
    if err == E.EROFS:
        return "its parent directory is on a read-only mount: create the target in the root, or mount a tmpfs above it"
    if err == E.EPERM and op.kind in (MountKind.PROC, MountKind.SYSFS):
        return (
            "the kernel refuses a fresh proc/sysfs in a user namespace unless the host's is fully "
            "visible (no mounts over parts of it)"
        )
    if err == E.ENOENT and op.kind == MountKind.BIND:
        return "the source does not exist on the host"
    if err in (E.EACCES, E.EOVERFLOW):
        return (
            "the mount point is missing and cannot be created: its parent belongs to an id that "
            "is not mapped into the container (create the mount point in the root file system)"
        )
    return None


def setup_error(step: int, err: int, index: int, *, ops: Sequence[MountOp], context: dict) -> SetupError:
    """The exception for a failed container set-up step."""
    step = Step(step)
    if step is Step.MOUNT and 0 <= index < len(ops):
        op = ops[index]
        return SetupError(
            err, describe_op(op), step=step.name, field=op.field or "root file system layout", hint=_mount_hint(op, err)
        )
    if step in (Step.FORK, Step.REQUEST, Step.TTY) or Step.STDIO.value <= step.value <= Step.EXEC.value:
        return exec_error(step, err, index, context)
    template = _STEP_OPERATIONS.get(step, step.name.lower())
    if step is Step.JOIN:
        context = dict(context, join=JOIN_NAMESPACES[index] if 0 <= index < len(JOIN_NAMESPACES) else "?")
    hint = None
    if step is Step.IDENTITY and err == E.EINVAL:
        hint = "uid/gid 0 is not mapped in the user namespace"
    if step is Step.KEYRING and err == E.EDQUOT:
        hint = (
            "every container has a session keyring of its own, which counts against the key quota of "
            "the host user its root maps to: raise /proc/sys/kernel/keys/maxkeys (and maxbytes)"
        )
    if step is Step.SCOPE:
        hint = (
            "in the host's pid namespace a container could signal other containers' processes (their host "
            "uid is the same): it needs Landlock's signal scope (Linux 6.12 or later, landlock among the LSMs)"
        )
    return SetupError(
        err, template.format(index=index, **context), step=step.name, field=_STEP_FIELDS.get(step), hint=hint
    )


def exec_error(step: int, err: int, index: int, context: dict) -> SetupError:
    """The exception for a command that the init could not start."""
    step = Step(step)
    argv = context.get("argv", ())
    if step is Step.EXEC:
        name = argv[0] if argv else "?"
        where = "" if "/" in name else f" (searched PATH={context.get('search_path', '')!r})"
        operation = f"execve({name!r}){where}"
        cls = CommandNotFoundError if err in (E.ENOENT, E.ENOTDIR) else SetupError
        hint = "no such command in the container" if cls is CommandNotFoundError else None
        if err == E.EACCES:
            hint = "the file is not executable by the command's user, or is on a noexec mount"
        return cls(err, operation, step=step.name, field="argv", hint=hint)
    if step is Step.RLIMIT:
        limits = context.get("rlimits", ())
        name = limits[index][0] if 0 <= index < len(limits) else "?"
        values = limits[index][1:] if 0 <= index < len(limits) else ()
        hint = "raising a hard limit above the host's needs CAP_SYS_RESOURCE" if err == E.EPERM else None
        return SetupError(err, f"setrlimit({name}, {values})", step=step.name, field=f"limits.{name}", hint=hint)
    if step is Step.REQUEST and err == E.ESHUTDOWN:
        return SetupError(err, "exec request", step=step.name, hint="the container is stopping")
    template = _STEP_OPERATIONS.get(step, step.name.lower())
    text = template.format(index=index, rlimit="?", **{k: context.get(k) for k in ("cwd", "uid", "gid")})
    hint = None
    if step is Step.USER and err == E.EINVAL:
        hint = "the uid or gid is not mapped in the container's user namespace"
    if step is Step.SECCOMP and err == E.EINVAL:
        hint = "the kernel rejected the compiled filter (is seccomp filtering enabled, CONFIG_SECCOMP_FILTER?)"
    return SetupError(err, text, step=step.name, field=_STEP_FIELDS.get(step), hint=hint)


def clone_hint(err: int) -> Optional[str]:
    """Why the kernel may refuse the clone into new namespaces."""
    if err in (E.EPERM, E.ENOSPC, E.EUSERS):
        return (
            "the kernel refused new namespaces: check that user namespaces are enabled "
            "(sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone) and not exhausted"
        )
    return None
