"""Where the CPU of one ``sb.run(["/bin/true"])`` goes, in named parts
(issue 16; the table in docs/cpu.md comes from here).

    python benchmarks/cpu_breakdown.py [--runs N] [--freq HZ] [--tree CHECKOUT]

``--tree``: import sandboxlib from another built checkout (an A/B of two commits).

Two ``perf record -g -e cpu-clock`` sessions run at once: one follows a
Python process doing N runs and every process it starts (the host process,
sbx-init, the command), the other samples the whole machine, from which only
kernel threads are kept (namespace teardown in kworkers, RCU callbacks,
expedited grace periods).  Each sample goes to the first part whose test
matches its comm and call chain.  This machine has no hardware counters
(perf stat -e instructions: not supported), so these are timer samples:
microseconds of CPU per run, with the noise of whatever else runs (the
kernel-thread rows count other users' namespace teardown too).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LOOP = """
import sys, sandboxlib as sb
for _ in range(20):
    sb.run(["/bin/true"])
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    sb.run(["/bin/true"])
"""

Sample = Tuple[str, List[str]]  # comm, functions innermost first


def samples(text: str) -> Iterator[Sample]:
    comm, frames = None, []
    for line in text.splitlines():
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif not line[0].isspace():
            comm, frames = line.split()[0], []
        else:
            parts = line.split(None, 1)
            frames.append(parts[1].split("+")[0].strip() if len(parts) > 1 else "?")
    if comm is not None:
        yield comm, frames


def syscall(frames: Sequence[str]) -> str:
    """The syscall a kernel sample is in ('' for user space)."""
    for f in reversed(frames):
        m = re.match(r"(?:__x64_sys_|__do_sys_|__se_sys_|ksys_)(\w+)", f)
        if m:
            return m.group(1)
    return "" if not any(f.startswith(("entry_SYSCALL", "asm_", "ret_from_fork")) for f in frames) else "?"


def has(*names: str) -> Callable[[Sample], bool]:
    return lambda s: any(f in names for f in s[1])


def sys_in(*names: str) -> Callable[[Sample], bool]:
    return lambda s: syscall(s[1]) in names


def comm_is(*prefixes: str) -> Callable[[Sample], bool]:
    return lambda s: s[0].startswith(prefixes)


def both(*tests: Callable[[Sample], bool]) -> Callable[[Sample], bool]:
    return lambda s: all(t(s) for t in tests)


HOST = comm_is("python")
INIT = comm_is("sbx-init", "memfd:sbx-init", "sbx-launcher")
COMMAND = comm_is("true")
KTHREAD = comm_is("kworker", "ksoftirqd", "rcu", "migration", "kthreadd")

# (group, part, test): first match wins.
PARTS: List[Tuple[str, str, Callable[[Sample], bool]]] = [
    ("host", "Python: config, plan, protocol, bookkeeping (user space)", both(HOST, lambda s: syscall(s[1]) == "")),
    ("host", "clone: user namespace", both(HOST, has("create_user_ns"))),
    ("host", "clone: mount namespace (copy of the host's mount tree)", both(HOST, has("copy_mnt_ns"))),
    ("host", "clone: ipc namespace (and its mqueue mount)", both(HOST, has("copy_ipcs"))),
    ("host", "clone: pid, uts namespaces", both(HOST, has("copy_pid_ns", "copy_utsname"))),
    (
        "host",
        "clone: the process (vfork child, exec of sbx-init from the memfd)",
        both(HOST, sys_in("clone", "clone3")),
    ),
    ("host", "id maps (uid_map, gid_map, setgroups)", both(HOST, has("map_write", "proc_setgroups_write"))),
    ("host", "reaping the init (waitid)", both(HOST, sys_in("waitid"))),
    (
        "host",
        "sockets, pipes, fds (control/reply sockets, stdio pipes, sends)",
        both(
            HOST,
            sys_in("socketpair", "pipe2", "close", "sendto", "sendmsg", "recvmsg", "recvfrom", "read", "write", "poll"),
        ),
    ),
    ("host", "other syscalls (open, stat, state files, signals masks...)", HOST),
    ("init", "exec of sbx-init", both(INIT, lambda s: s[0].startswith("memfd:"))),
    ("init", "network namespace creation (unshare, in a thread)", both(INIT, has("copy_net_ns"))),
    (
        "init",
        "mounts: new file systems (tmpfs x9, proc, sysfs, devpts, mqueue)",
        both(INIT, sys_in("fsopen", "fsconfig", "fsmount")),
    ),
    ("init", "mounts: bind clones (open_tree, mount_setattr)", both(INIT, sys_in("open_tree", "mount_setattr"))),
    ("init", "mounts: attach (move_mount)", both(INIT, sys_in("move_mount"))),
    (
        "init",
        "mounts: targets (openat2 in the root, mkdir, symlink, fstat)",
        both(INIT, sys_in("openat2", "openat", "mkdirat", "symlinkat", "newfstatat", "fstat", "fstatfs", "readlinkat")),
    ),
    ("init", "mounts: pivot_root and detaching the host tree", both(INIT, sys_in("pivot_root", "umount"))),
    ("init", "mounts: dropping detached trees (close -> RCU grace period)", both(INIT, has("namespace_unlock"))),
    ("init", "seccomp: loading filters (the init's, the command's)", both(INIT, has("do_seccomp"))),
    ("init", "command: vfork and exec of /bin/true", both(INIT, sys_in("vfork", "execve", "clone", "clone3"))),
    ("init", "exit: mount namespace teardown", both(INIT, has("put_mnt_ns", "cleanup_mnt"))),
    ("init", "exit: the rest (files, mm, signals)", both(INIT, has("do_exit", "do_group_exit"))),
    (
        "init",
        "identity, keyring, capabilities, affinity, lo up, signals",
        both(
            INIT,
            sys_in(
                "setresuid",
                "setresgid",
                "setgroups",
                "keyctl",
                "capset",
                "capget",
                "prctl",
                "sched_setaffinity",
                "ioctl",
                "socket",
                "sethostname",
                "rt_sigprocmask",
                "signalfd4",
                "setns",
                "chdir",
            ),
        ),
    ),
    ("init", "other (user space, page faults, poll, fds)", INIT),
    ("command", "/bin/true: dynamic loading, page faults, exit", COMMAND),
    ("kernel threads", "network namespace teardown (cleanup_net)", both(KTHREAD, has("cleanup_net"))),
    ("kernel threads", "ipc namespace teardown (free_ipc)", both(KTHREAD, has("free_ipc"))),
    (
        "kernel threads",
        "mount teardown (delayed mntput, cleanup_mnt)",
        both(KTHREAD, has("cleanup_mnt", "delayed_mntput")),
    ),
    (
        "kernel threads",
        "expedited RCU grace periods",
        both(KTHREAD, has("wait_rcu_exp_gp", "sync_rcu_exp_select_node_cpus", "rcu_exp_handler")),
    ),
    (
        "kernel threads",
        "RCU callbacks (freeing namespaces, mounts, tasks)",
        both(KTHREAD, has("rcu_core", "rcu_do_batch")),
    ),
    ("kernel threads", "other kernel-thread work", KTHREAD),
]


def classify(all_samples: Sequence[Sample], detail: Dict[str, collections.Counter]) -> Dict[Tuple[str, str], int]:
    """Samples per part; ``detail``: per part, the syscalls (or the innermost function
    in user space) of its samples."""
    counts: Dict[Tuple[str, str], int] = collections.Counter()
    for sample in all_samples:
        for group, part, test in PARTS:
            if test(sample):
                counts[(group, part)] += 1
                where = syscall(sample[1]) or f"user:{sample[1][0] if sample[1] else '?'}"
                detail.setdefault(part, collections.Counter())[where] += 1
                break
    return counts


def perf_script(data: str) -> str:
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,tid,ip,sym"], capture_output=True, text=True, check=True
    )
    return out.stdout


def record(runs: int, freq: int, tmp: str, tree: str) -> Tuple[List[Sample], List[Sample]]:
    """(samples of the loop and its descendants, kernel-thread samples of the
    machine), from the loop's first timed run on: its import and warm-up are
    not recorded (perf attaches once it is ready; its children are followed)."""
    ours, machine = os.path.join(tmp, "ours.data"), os.path.join(tmp, "all.data")
    env = dict(os.environ, PYTHONPATH=tree)
    loop = subprocess.Popen(
        [sys.executable, "-c", LOOP, str(runs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert loop.stdin is not None and loop.stdout is not None
    if loop.stdout.readline().strip() != "ready":
        sys.exit("the loop did not start")
    perf = ["perf", "record", "-q", "-g", "-e", "cpu-clock", "-F", str(freq)]
    follow = subprocess.Popen([*perf, "-p", str(loop.pid), "-o", ours], stderr=subprocess.DEVNULL)
    wide = subprocess.Popen([*perf, "-a", "-o", machine], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # both attached
    loop.stdin.write("go\n")
    loop.stdin.close()
    loop.wait()
    for session in (follow, wide):
        session.send_signal(signal.SIGINT)  # perf writes its data and ends
        session.wait()
    mine = list(samples(perf_script(ours)))
    threads = [s for s in samples(perf_script(machine)) if KTHREAD(s)]
    return mine, threads


def table(counts: Dict[Tuple[str, str], int], runs: int, freq: int) -> str:
    us = lambda n: n / freq / runs * 1e6  # noqa: E731
    lines = ["| part | us per run | share |", "|---|---:|---:|"]
    total = sum(counts.values())
    for group in ("host", "init", "command", "kernel threads"):
        rows = [(part, n) for (g, part), n in counts.items() if g == group]
        sub = sum(n for _, n in rows)
        lines.append(f"| **{group}** | **{us(sub):.0f}** | **{sub / total:.0%}** |")
        for part, n in sorted(rows, key=lambda r: -r[1]):
            lines.append(f"| {part} | {us(n):.0f} | {n / total:.0%} |")
    lines.append(f"| **total** | **{us(total):.0f}** | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--freq", type=int, default=4999)
    parser.add_argument("--detail", action="store_true", help="the top syscalls of each part")
    parser.add_argument("--tree", default=ROOT, help="the checkout whose sandboxlib runs (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sbxperf-") as tmp:
        mine, threads = record(args.runs, args.freq, tmp, os.path.abspath(args.tree))
    detail: Dict[str, collections.Counter] = {}
    print(table(classify(mine + threads, detail), args.runs, args.freq))
    if args.detail:
        for part, where in detail.items():
            top = ", ".join(f"{name} {n / args.freq / args.runs * 1e6:.0f}" for name, n in where.most_common(8))
            print(f"- {part}: {top}")


if __name__ == "__main__":
    main()
