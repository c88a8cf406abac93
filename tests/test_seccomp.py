"""Seccomp: Docker's default policy with the real kernel, custom policies
(Python and Docker JSON), the 32-bit routes, exec into a running
container, errors, and the install step.

A probe (tests/probes/seccomp_probe.c, built by gcc for this session)
reports the errno of each syscall.  To tell our filter from the host's own
refusals, the same rules are also run with a distinct default errno (ENXIO),
which nothing but our filter returns.  Root and rootless (``runner``)."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import struct
import subprocess

import attrs
import pytest

import sandboxlib as sb
from sandboxlib import Seccomp
from sandboxlib.native import binding
from sandboxlib.native.binding import Step
from sandboxlib.security.bpf import clone3_split, compile_policy
from sandboxlib.security.seccomp import DEFAULT_PROFILE

from .conftest import LAUNCHER, run_cli, wait_until

PROBE_SOURCE = pathlib.Path(__file__).resolve().parent / "probes" / "seccomp_probe.c"
PROBE = "/probe"

# Blocked by Docker's default profile for a container without CAP_SYS_ADMIN & co.
BLOCKED = [
    "unshare_user",
    "unshare_ns",
    "setns",
    "clone_newuser",
    "clone_newns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "init_module",
    "swapon",
    "personality_addr_no_randomize",
    "socket_vsock",
    "socket_alg",
    "i386:unshare_user",
    "i386:keyctl",
    "i386:bpf",
    "i386:mount",
    "i386:socket_vsock",
    "i386:socketcall_vsock",
    "i386:socketcall_inet",
]
X32 = ["x32:unshare_user", "x32:keyctl"]
ALLOWED = [
    "clone_plain",
    "fork",
    "personality_query",
    "socket_inet",
    "getpid",
    "mseal",
    "i386:getpid",
    "i386:socket_inet",
    "i386:mseal",
]


@pytest.fixture(scope="session")
def probe(shared_dir) -> str:
    """The probe, static (it runs in the host view and in busybox alike)."""
    path = str(shared_dir / "seccomp_probe")
    subprocess.run(["gcc", "-static", "-O1", "-o", path, str(PROBE_SOURCE)], check=True)
    os.chmod(path, 0o755)
    return path


def _enxio_default() -> Seccomp:
    """Docker's default profile with ENXIO instead of EPERM for what it blocks."""
    with open(DEFAULT_PROFILE) as f:
        data = json.load(f)
    data["defaultErrnoRet"] = errno.ENXIO
    return Seccomp.from_json(data)


def _parse(out: bytes) -> dict:
    return {name: int(value) for name, value in (line.split() for line in out.decode().splitlines())}


def _probe_mount(probe: str) -> list:
    return [sb.Mount.bind(probe, PROBE, read_only=True)]


def check_probe(probe: str, policy_name: str, cap_add=()) -> dict:
    policy = {"default": sb.security.DEFAULT, "none": None, "enxio": _enxio_default()}[policy_name]
    r = sb.run([PROBE], mounts=_probe_mount(probe), seccomp=policy, cap_add=cap_add)
    assert (r.exit_code, r.stderr) == (0, b""), r
    return _parse(r.stdout)


def test_default_blocks_with_its_errno(runner, probe):
    default = runner(check_probe, probe, "default")
    distinct = runner(check_probe, probe, "enxio")
    for name in BLOCKED:
        assert default[name] == errno.EPERM, name
        assert distinct[name] == errno.ENXIO, name  # only our filter says ENXIO
    for name in ALLOWED:
        assert default[name] == 0 and distinct[name] == 0, name
    # Other socketcall calls reach the kernel (EFAULT: the probe passes no buffer).
    assert default["i386:socketcall_socketpair"] == distinct["i386:socketcall_socketpair"] == errno.EFAULT
    for name in X32:  # the kernel's own answer when it has no x32 ABI (the filter then skips it)
        expected = (errno.ENOSYS, errno.ENOSYS) if binding.x32_missing() else (errno.EPERM, errno.ENXIO)
        assert (default[name], distinct[name]) == expected, name


def test_clone3_answers_enosys(runner, probe):
    # ENOSYS makes libc fall back to clone; the kernel itself has clone3.
    assert runner(check_probe, probe, "enxio")["clone3"] == errno.ENOSYS
    assert runner(check_probe, probe, "none")["clone3"] != errno.ENOSYS


def test_unknown_newer_syscalls_answer_enosys(runner, probe):
    # As runc does: a syscall newer than any known gets ENOSYS, not the default errno.
    assert runner(check_probe, probe, "enxio")["nr_600"] == errno.ENOSYS


def test_no_seccomp_allows(runner, probe):
    none = runner(check_probe, probe, "none")
    assert none["socket_vsock"] == none["i386:socketcall_vsock"] == none["personality_addr_no_randomize"] == 0
    assert not {name for name in BLOCKED if none[name] == errno.ENXIO}


def test_capabilities_choose_rules(runner, probe):
    """Docker's includes.caps: with CAP_SYS_ADMIN, clone3 and unshare are allowed."""
    out = runner(check_probe, probe, "enxio", ("SYS_ADMIN",))
    assert out["clone3"] not in (errno.ENOSYS, errno.ENXIO)
    assert out["unshare_ns"] == 0
    assert out["keyctl"] == errno.ENXIO  # still blocked


def check_custom(probe: str) -> dict:
    policy = Seccomp.default().deny("getpid", errno=errno.ENXIO).deny("mseal", errno=errno.EL2HLT).allow("personality")
    r = sb.run([PROBE], mounts=_probe_mount(probe), seccomp=policy)
    return _parse(r.stdout)


def test_python_policy(runner, probe):
    out = runner(check_custom, probe)
    assert out["getpid"] == out["i386:getpid"] == errno.ENXIO
    assert out["mseal"] == out["i386:mseal"] == errno.EL2HLT  # by number: newer than libseccomp
    assert out["personality_addr_no_randomize"] == 0
    assert out["keyctl"] == errno.EPERM


def check_kill(probe: str) -> tuple:
    r = sb.run([PROBE, "getppid"], mounts=_probe_mount(probe), seccomp=Seccomp.default().kill("getppid"))
    return r.signal, r.stdout


def test_kill_action_gives_sigsys(runner, probe):
    assert runner(check_kill, probe) == (signal.SIGSYS, b"")


def check_exec_into_running(probe: str) -> dict:
    with sb.Container(mounts=_probe_mount(probe), seccomp=_enxio_default()) as c:
        ran = _parse(c.run([PROBE]).stdout)
        with c.spawn([PROBE], stdout=sb.PIPE) as proc:
            spawned = _parse(proc.communicate()[0])
    return {"run": ran, "spawn": spawned}


def test_exec_into_running_container_is_filtered(runner, probe):
    out = runner(check_exec_into_running, probe)
    for how in ("run", "spawn"):
        assert out[how]["keyctl"] == errno.ENXIO and out[how]["getpid"] == 0, how


FORKER = "sbx-forker"
STATUS = ["grep", "-E", "^(PPid|NoNewPrivs|Seccomp|Seccomp_filters):", "/proc/self/status"]


def _names(c) -> list:
    return sorted(p.name for p in c.top())


def check_launcher(probe: str) -> dict:
    """Docker's default policy: exec'd commands are forked by the launcher,
    which installed the filter once; once it is gone, the init forks them
    and each installs the filter itself."""
    out = {}
    with sb.Container(mounts=_probe_mount(probe)) as c:
        out["probe"] = _parse(c.run([PROBE]).stdout)
        out["status"] = c.run(STATUS).stdout.split()
        out["names"] = _names(c)
        launcher = next(p for p in c.top() if p.name == LAUNCHER)
        os.kill(launcher.pid, signal.SIGKILL)
        assert wait_until(lambda: LAUNCHER not in _names(c))
        out["probe without"] = _parse(c.run([PROBE]).stdout)
        out["status without"] = c.run(STATUS).stdout.split()
        out["names without"] = _names(c)
    with sb.Container(mounts=_probe_mount(probe), seccomp=_enxio_default()) as c:
        out["probe custom"] = _parse(c.run([PROBE]).stdout)
        out["names custom"] = _names(c)
    with sb.Container(seccomp=None) as c:
        out["status none"] = c.run(STATUS).stdout.split()
        out["names none"] = _names(c)
    return out


def test_launcher_forks_filtered_commands(runner, probe):
    out = runner(check_launcher, probe)
    # The init's child, with the init's own filter (inherited) and the container's, installed once.
    filtered = [b"PPid:", b"1", b"NoNewPrivs:", b"1", b"Seccomp:", b"2", b"Seccomp_filters:", b"2"]
    assert out["status"] == out["status without"] == filtered
    assert out["names"] == ["sbx-init", LAUNCHER]
    assert out["names without"] == out["names custom"] == out["names none"] == ["sbx-init"]
    # No policy: only the init's own filter, which refuses no syscall of the container's capabilities.
    assert out["status none"] == [b"PPid:", b"1", b"NoNewPrivs:", b"1", b"Seccomp:", b"2", b"Seccomp_filters:", b"1"]
    for how in ("probe", "probe without"):
        assert out[how]["keyctl"] == out[how]["i386:mount"] == errno.EPERM, how
        assert out[how]["clone3"] == errno.ENOSYS and out[how]["getpid"] == 0, how
    assert out["probe custom"]["keyctl"] == errno.ENXIO


def check_cgroup_launcher(probe: str) -> dict:
    """Docker's default policy: commands with a cgroup of their own (a
    timeout) are forked into a new one by a second launcher (clone3, which
    the policy refuses: that launcher's filter allows it, and each of its
    commands adds one that refuses it as the policy does).  A cgroup found
    empty at its command's exit gets a forker, which forks the next commands
    there with the whole filter inherited.  Once they are gone, the init
    forks them and each installs the whole filter."""
    out = {}
    with sb.Container(mounts=_probe_mount(probe)) as c:
        out["plain"] = _parse(c.run([PROBE]).stdout)
        out["status launched"] = c.run(STATUS, timeout=60).stdout.split()  # (a new cgroup)
        lines = c.run(["cat", "/proc/self/cgroup"], timeout=60).stdout.decode().splitlines()
        out["own"] = next(line for line in lines if line.startswith("0::"))  # (the v2 one)
        out["timed"] = _parse(c.run([PROBE], timeout=60).stdout)
        out["status"] = c.run(STATUS, timeout=60).stdout.split()
        out["names"] = _names(c)
        for launcher in [p for p in c.top() if p.name in (LAUNCHER, FORKER)]:
            os.kill(launcher.pid, signal.SIGKILL)
        assert wait_until(lambda: _names(c) == ["sbx-init"])
        out["timed without"] = _parse(c.run([PROBE], timeout=60).stdout)
        out["status without"] = c.run(STATUS, timeout=60).stdout.split()
        wait_until(lambda: FORKER in _names(c), seconds=5)  # (started after the reply; named as it runs)
        out["names without"] = _names(c)
        if out["own"] != "0::/":  # (a process group's kill would miss the new session)
            killed = c.run(["sh", "-c", "setsid sleep 60 & sleep 60"], timeout=0.5)
            out["killed"] = (
                killed.timed_out,
                [p.name for p in c.top() if p.name not in ("sbx-init", LAUNCHER, FORKER)],
            )
    return out


def test_cgroup_launcher_forks_commands_with_their_own_cgroup(runner, probe):
    out = runner(check_cgroup_launcher, probe)
    # Every syscall the probe tries is answered as for a command without a cgroup of its own.
    assert out["timed"] == out["timed without"] == out["plain"]
    assert out["timed"]["clone3"] == errno.ENOSYS
    if out["own"] == "0::/":  # rootless without a delegated cgroup: no cgroup of its own, no second launcher
        assert out["names"] == ["sbx-init", LAUNCHER]
        return
    assert out["own"].startswith("0::/cmd-"), out["own"]
    assert out["killed"] == (True, [])  # (its cgroup killed: the new session too)
    # The init's filter, the launcher's (the policy with clone3 allowed) and the command's own (clone3 refused).
    assert out["status launched"] == [
        b"PPid:",
        b"1",
        b"NoNewPrivs:",
        b"1",
        b"Seccomp:",
        b"2",
        b"Seccomp_filters:",
        b"3",
    ]
    # Then by the cgroup's forker: the init's filter and the policy, inherited.
    whole = [b"PPid:", b"1", b"NoNewPrivs:", b"1", b"Seccomp:", b"2", b"Seccomp_filters:", b"2"]
    assert out["status"] == whole
    assert out["names"] == [FORKER, "sbx-init", LAUNCHER, LAUNCHER]
    # Without them: the init forks it into its cgroup; it installs the whole policy itself (and a
    # forker starts there again at its exit).
    assert out["status without"] == whole
    assert out["names without"] == [FORKER, "sbx-init"]


def _bpf_answer(program: bytes, data: bytes) -> int:
    """A classic BPF program's answer for one struct seccomp_data (the
    instructions libseccomp and our prologue emit)."""
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:  # ret k
            return k
        elif code == 0x05:  # ja k
            pc += k
        elif code == 0x54:  # and k
            acc &= k
        else:
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        pc += 1


def _kernel_answer(programs_newest_first, data: bytes) -> int:
    """The kernel's answer of stacked filters: the strictest action (lowest
    as a signed 32-bit number); at a tie, the newest filter's."""
    answers = [_bpf_answer(p, data) for p in programs_newest_first]
    rank = [struct.unpack("<i", struct.pack("<I", a & 0xFFFF0000))[0] for a in answers]
    return answers[rank.index(min(rank))]


def _clone3_policy(errno_ret: int) -> Seccomp:
    with open(DEFAULT_PROFILE) as f:
        data = json.load(f)
    for entry in data["syscalls"]:
        if entry["names"] == ["clone3"]:
            entry["errnoRet"] = errno_ret
    return Seccomp.from_json(data)


@pytest.mark.parametrize("errno_ret", [errno.ENOSYS, errno.EPERM])
@pytest.mark.parametrize("caps", [frozenset(), frozenset({"NET_ADMIN", "SYS_PTRACE"})])
def test_clone3_split_decides_every_syscall_as_the_policy(caps, errno_ret):
    """The launcher's filter (clone3 allowed) under the small one each command
    in a cgroup of its own adds answers every syscall number of every ABI (and
    of an unknown one) as the whole policy; the small one is hand-made (7
    instructions, not libseccomp's 28: cheaper for the kernel to load)."""
    policy = _clone3_policy(errno_ret)
    opened, small = clone3_split(policy, caps)
    assert len(small) // 8 <= 7 + ("x32" in policy.architectures and not binding.x32_missing())
    whole = compile_policy(policy, caps)
    arches = (0xC000003E, 0x40000003, 0x12345678)  # x86_64 (with the x32 bit below), i386, unknown
    args = (bytes(48), b"\xff" * 48)
    for arch in arches:
        for nr in [*range(0, 600), *(0x40000000 | n for n in range(0, 600)), 0xFFFFFFFF]:
            for a in args:
                data = struct.pack("<iIQ", nr - (1 << 32) if nr >= 1 << 31 else nr, arch, 0) + a
                assert _kernel_answer([small, opened], data) == _bpf_answer(whole, data), (hex(arch), nr)
    clone3 = struct.pack("<iIQ", 435, 0xC000003E, 0) + bytes(48)
    assert _bpf_answer(small, clone3) == 0x50000 | errno_ret


FILTERS = ["grep", "-E", "^(NoNewPrivs|Seccomp|Seccomp_filters):", "/proc/self/status", "/proc/1/status"]


def check_one_shot_filters(probe: str) -> dict:
    """The filters of a one-shot run's command and init, per policy: {policy: {(file, field): value}}."""
    out = {}
    for name, policy in (("default", sb.security.DEFAULT), ("none", None), ("custom", _enxio_default())):
        r = sb.run(FILTERS, seccomp=policy)
        assert r.exit_code == 0, r
        fields = (line.rsplit(":", 1) for line in r.stdout.decode().splitlines())
        out[name] = {key: value.strip() for key, value in fields}
    out["probe"] = _parse(sb.run([PROBE], mounts=_probe_mount(probe)).stdout)
    return out


def _filters(command: int, init: int) -> dict:
    return {
        f"{path}:{field}": value
        for path, n in (("/proc/self/status", command), ("/proc/1/status", init))
        for field, value in (("NoNewPrivs", "1"), ("Seccomp", "2"), ("Seccomp_filters", str(n)))
    }


def test_one_shot_default_policy_is_loaded_once(runner, probe):
    """sb.run with Docker's policy: the init installs it in place of its own
    filter at lock-down and the command inherits it (one load, one filter);
    with another policy, the init's own filter and the command's."""
    out = runner(check_one_shot_filters, probe)
    assert out["default"] == _filters(1, 1)
    assert out["none"] == _filters(1, 1)
    assert out["custom"] == _filters(2, 1)
    # Still refused: what Docker's policy refuses, and what the init's filter would.
    for name in ("keyctl", "kexec_load", "open_by_handle_at", "init_module", "swapon", "i386:mount"):
        assert out["probe"][name] == errno.EPERM, name
    assert out["probe"]["clone3"] == errno.ENOSYS and out["probe"]["getpid"] == 0


ALLOW = 0x7FFF0000


@pytest.mark.parametrize(
    "cap_add, cap_drop",
    [((), ()), ((), ("ALL",)), (("ALL",), ())]
    + [((cap,), ()) for cap in ("SYS_MODULE", "SYS_BOOT", "SYS_RAWIO", "SYS_TIME", "SYS_PACCT", "SYS_ADMIN")]
    + [(("DAC_READ_SEARCH",), ())],
)
def test_default_policy_refuses_all_the_init_policy_does(cap_add, cap_drop):
    """Why a one-shot run may load Docker's policy in the init's filter's
    place: for each capability set, every syscall (each ABI) the init's
    filter refuses, Docker's refuses too."""
    from sandboxlib.security.prologue import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_BIT
    from sandboxlib.security.seccomp import init_policy

    caps = frozenset(sb.ContainerConfig(cap_add=list(cap_add), cap_drop=list(cap_drop)).capabilities())
    init, default = compile_policy(init_policy(), caps), compile_policy(Seccomp.default(), caps)
    numbers = [(AUDIT_ARCH_X86_64, n) for n in range(520)] + [(AUDIT_ARCH_I386, n) for n in range(520)]
    numbers += [(AUDIT_ARCH_X86_64, X32_BIT | n) for n in range(560)]
    refused = [(arch, nr) for arch, nr in numbers if _run_bpf(init, arch, nr, ARG_CASES[0]) != ALLOW]
    assert len(refused) >= (0 if cap_add == ("ALL",) else 2)
    for arch, nr in refused:
        for args in ARG_CASES:
            assert _run_bpf(default, arch, nr, args) != ALLOW, (arch, nr, args)


def check_json_file(probe: str, path: str) -> dict:
    r = sb.run([PROBE], mounts=_probe_mount(probe), seccomp=Seccomp.from_json(path))
    return _parse(r.stdout)


def test_docker_json_profile_from_a_file(runner, probe, shared_dir):
    path = shared_dir / "profile.json"
    path.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "archMap": [
                    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}
                ],
                "syscalls": [
                    {"names": ["keyctl", "add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENXIO},
                    {
                        "names": ["socket"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": errno.EL3HLT,
                        "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}],
                    },
                    {
                        "names": ["unshare"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": errno.ENXIO,
                        "excludes": {"caps": ["CAP_SYS_ADMIN"]},
                    },
                    {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["s390x"]}},
                ],
            }
        )
    )
    os.chmod(path, 0o644)
    out = runner(check_json_file, probe, str(path))
    assert out["keyctl"] == out["add_key"] == out["i386:keyctl"] == errno.ENXIO
    assert out["x32:keyctl"] == (errno.ENOSYS if binding.x32_missing() else errno.ENXIO)
    assert out["socket_inet"] == out["i386:socket_inet"] == errno.EL3HLT and out["socket_vsock"] == 0
    assert out["unshare_user"] == errno.ENXIO
    assert out["bpf"] != errno.EPERM  # that rule is for s390x only
    assert out["nr_600"] == errno.ENOSYS  # the kernel's own answer: no stub with an allow default


def test_x32_is_left_out_only_without_kernel_support():
    caps = sb.ContainerConfig().capabilities()
    with_x32 = compile_policy(Seccomp.default(), caps)
    without = compile_policy(attrs.evolve(Seccomp.default(), architectures=("x86_64", "x86")), caps)
    if binding.x32_missing():
        assert len(with_x32) < len(without) + 64  # only the prologue's ENOSYS answer differs
    else:
        assert len(with_x32) > len(without) + 8 * 200


def test_compiled_once_per_policy():
    policy = Seccomp.default().deny("getpid")
    caps = sb.ContainerConfig().capabilities()
    first = compile_policy(policy, caps)
    hits = compile_policy.cache_info().hits
    assert compile_policy(Seccomp.default().deny("getpid"), caps) is first  # equal policies share it
    assert compile_policy.cache_info().hits == hits + 1
    assert len(first) % 8 == 0 and len(first) // 8 <= 4096


def test_config_default_and_none():
    assert sb.ContainerConfig().seccomp == Seccomp.default()
    assert sb.ContainerConfig(seccomp=None).seccomp is None
    with pytest.raises(sb.ConfigError) as info:
        sb.ContainerConfig(seccomp="unconfined")
    assert info.value.field == "seccomp"


def test_policies_are_immutable():
    base = Seccomp.default()
    denied = base.deny("ptrace")
    assert denied != base and base == Seccomp.default()
    with pytest.raises(AttributeError):
        base.rules = ()


# -- errors -------------------------------------------------------------------------------
def _config_error(call) -> sb.ConfigError:
    with pytest.raises(sb.ConfigError) as info:
        call()
    return info.value


def _profile(**changes) -> dict:
    base = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        ],
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "change, field",
    [
        (
            {
                "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                ]
            },
            "syscalls[1].names[1]",
        ),
        ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_MAYBE"}]}, "syscalls[0].action"),
        ({"defaultAction": "ALLOW"}, "defaultAction"),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}],
                    }
                ]
            },
            "syscalls[0].args[0].op",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ]
            },
            "syscalls[0].args[0].index",
        ),
        ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]}, "syscalls[0].action"),
        ({"architectures": ["SCMP_ARCH_VAX"]}, "architectures[0]"),
        ({"architectures": ["SCMP_ARCH_X86"], "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "architectures"),
        (
            {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_FLY"]}}]},
            "syscalls[0].includes.caps[0]",
        ),
        ({"syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}, "syscalls[0].names"),
        ({"flags": ["SECCOMP_FILTER_FLAG_LOG"]}, "flags"),
        ({"listenerPath": "/run/notify.sock"}, "listenerPath"),
        ({"syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}, "syscalls[0]"),
    ],
)
def test_bad_profile_names_the_file_and_field(tmp_path, change, field):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(_profile(**change)))
    err = _config_error(lambda: Seccomp.from_json(path))
    assert err.field == f"{path}: {field}", err
    assert _config_error(lambda: Seccomp.from_json(_profile(**change))).field == field


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"defaultAction": ')
    err = _config_error(lambda: Seccomp.from_json(path))
    assert err.field == str(path) and "JSON" in err.message
    assert _config_error(lambda: Seccomp.from_json(tmp_path / "missing.json")).field.endswith("missing.json")


def test_unknown_syscall_names():
    assert _config_error(lambda: Seccomp.default().deny("getpid", "frobnicate")).field == "seccomp.deny[1]"
    assert _config_error(lambda: Seccomp.default().allow()).field == "seccomp.allow"
    assert _config_error(lambda: Seccomp.default().deny("getpid", errno=-3)).field == "seccomp.deny.errno"


def check_install_failure() -> dict:
    """The install step fails (forced through the test hook): a precise SetupError."""
    with sb.Container() as c:
        c._fault = (int(Step.SECCOMP), errno.EINVAL)
        try:
            c.run(["true"])
        except sb.SetupError as err:
            return {"step": err.step, "errno": err.errno, "field": err.field, "text": str(err)}
    raise AssertionError("no error")


def test_install_failure_is_reported(runner):
    out = runner(check_install_failure)
    assert (out["step"], out["errno"], out["field"]) == ("SECCOMP", errno.EINVAL, "seccomp")
    assert "installing the seccomp filter failed in step SECCOMP" in out["text"]


# -- command line -------------------------------------------------------------------------
def test_cli_security_opt(probe, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENXIO}],
            }
        )
    )
    volume = f"{probe}:{PROBE}:ro"
    custom = _parse(run_cli("--security-opt", f"seccomp={path}", "-v", volume, "--", PROBE).stdout)
    unconfined = _parse(run_cli("--security-opt", "seccomp=unconfined", "-v", volume, "--", PROBE).stdout)
    default = _parse(run_cli("-v", volume, "--", PROBE).stdout)
    assert custom["keyctl"] == errno.ENXIO and custom["socket_vsock"] == 0
    assert unconfined["socket_vsock"] == 0 and default["socket_vsock"] == errno.EPERM


@pytest.mark.parametrize(
    "value, expected",
    [
        ("seccomp=/no/such/file.json", "--security-opt: seccomp=/no/such/file.json"),
        ("apparmor=unconfined", "--security-opt: 'apparmor=unconfined'"),
        ("seccomp", "--security-opt: 'seccomp'"),
    ],
)
def test_cli_bad_security_opt(value, expected):
    r = run_cli("--security-opt", value, "--", "true")
    assert r.returncode == 125 and expected in r.stderr.decode(), r.stderr


# -- the fast path (our prologue) decides as libseccomp alone would --------------------------
def _run_bpf(program: bytes, arch: int, nr: int, args) -> int:
    """A classic BPF interpreter for what libseccomp and our prologue emit."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    acc, pc = 0, 0
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:  # and #k
            acc &= k
        elif code == 0x05:  # ja
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset
            hit = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if hit else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


ARG_CASES = [
    (0,) * 6,
    (0x10000000,) + (0,) * 5,
    (40, 1, 0, 0, 0, 0),
    (38, 5, 0, 0, 0, 0),
    (0x0040000,) + (0,) * 5,
    (0xFFFFFFFF,) + (0,) * 5,
    (2, 1, 0, 0, 0, 0),
]


# clone, socket, personality, unshare (x86_64); clone, socketcall, personality, socket (i386)
CONDITIONAL = {56, 41, 135, 272, 120, 102, 136, 359}


@pytest.mark.parametrize("policy_name", ["default", "default+SYS_ADMIN", "custom"])
def test_fast_path_decides_as_libseccomp(policy_name):
    from sandboxlib.security import bpf
    from sandboxlib.security.prologue import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_BIT

    caps = sb.ContainerConfig(cap_add=["SYS_ADMIN"] if "SYS_ADMIN" in policy_name else []).capabilities()
    policy = (
        Seccomp.default()
        if policy_name != "custom"
        else (Seccomp.default().deny("read", errno=errno.ENXIO).kill("getppid").allow("ptrace"))
    )
    names = ("x86_64", "x86", "x32")
    for no_x32 in (False, True):
        abis = names[:2] if no_x32 else names
        fast = bpf._compile(policy, frozenset(caps), abis, no_x32, use_fast_path=True)
        plain = bpf._compile(policy, frozenset(caps), abis, no_x32, use_fast_path=False)
        assert len(fast) < len(plain)
        numbers = [(AUDIT_ARCH_X86_64, n) for n in range(520)] + [(AUDIT_ARCH_I386, n) for n in range(520)]
        numbers += [(AUDIT_ARCH_X86_64, X32_BIT | n) for n in range(560)] + [(0xC00000B7, 1)]
        for arch, nr in numbers:
            for args in ARG_CASES if nr & ~X32_BIT in CONDITIONAL else ARG_CASES[:1]:
                assert _run_bpf(fast, arch, nr, args) == _run_bpf(plain, arch, nr, args), (arch, nr, args)


def test_repeated_conditional_allow_rules_compile():
    """podman's profile (without CAP_AUDIT_WRITE) allows socket by two conditions, one of
    them twice: on x86 libseccomp turns both into the same socketcall rule (EEXIST).
    The repeat is left out; a refused ERRNO rule would still be an error."""
    socket_rules = [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "args": [
            {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]},
    ]  # fmt: skip
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}, *socket_rules],
    }
    assert len(compile_policy(Seccomp.from_json(profile), frozenset())) > 0
