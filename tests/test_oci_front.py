"""sandboxlib-runtime's C front (csrc/front.c): it serves state, start, kill
and delete of a container itself and runs the Python implementation
(``sandboxlib-runtime-python``) for everything else, errors included; what
it answers is what the Python implementation answers (output, exit status,
message, --log line).  The front here is installed beside a
``sandboxlib-runtime-python`` that records each call, so the tests see
which verbs reached Python."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from tests.conftest import wait_until
from tests.ocikit import PYTHON_RUNTIME, containers_in, install_front, make_bundle, runtime, unique_id
from tests.test_oci import alive, cgroup_dirs


@pytest.fixture
def front(tmp_path):
    """(the front's path, the file that lists the Python implementation's calls)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    return install_front(str(directory), python_prefix=f'echo "$*" >> {shlex.quote(str(calls))}\n'), calls


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path / "state")
    yield root
    left = containers_in(root)
    for name in left:
        runtime(root, "delete", "--force", name, program=PYTHON_RUNTIME)
    assert left == []


def both(root: str, front_path: str, *args: str) -> tuple:
    """(the front's (status, stdout, stderr), the Python implementation's)."""
    answers = [runtime(root, *args, program=p) for p in ([front_path], PYTHON_RUNTIME)]
    return tuple((a.returncode, a.stdout, a.stderr) for a in answers)


def verbs(calls) -> list:
    """The verbs that reached the Python implementation."""
    return [line.split()[2] for line in calls.read_text().splitlines() if len(line.split()) > 2]  # (--root ROOT VERB)


def test_light_verbs_are_served_by_the_front(front, root, tmp_path, busybox_root):
    path, calls = front
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sleep", "30"])
    assert runtime(root, "create", "--bundle", bundle, cid, program=[path]).returncode == 0
    pid = json.loads(runtime(root, "state", cid).stdout)["pid"]
    states = []
    for step in (None, ["start", cid], ["kill", cid, "KILL"]):
        if step:
            proc = runtime(root, *step, program=[path])
            assert proc.returncode == 0, proc.stderr
        if step and step[0] == "kill":
            assert wait_until(lambda: not alive(pid))
        ours, python = both(root, path, "state", cid)
        assert ours == python and ours[0] == 0
        states.append(json.loads(ours[1])["status"])
    assert states == ["created", "running", "stopped"]
    assert runtime(root, "delete", cid, program=[path]).returncode == 0
    assert containers_in(root) == [] and cgroup_dirs(cid) == []
    assert verbs(calls) == ["create"]


def test_kill_all_and_force_delete(front, root, tmp_path, busybox_root):
    path, calls = front
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sh", "-c", "sleep 60 & sleep 60"])
    for step in (["create", "--bundle", bundle, cid], ["start", cid]):
        assert runtime(root, *step, program=[path]).returncode == 0
    assert wait_until(lambda: len(json.loads(runtime(root, "ps", "--format", "json", cid).stdout)) == 3)
    procs = json.loads(runtime(root, "ps", "--format", "json", cid).stdout)
    assert runtime(root, "kill", "--all", cid, "9", program=[path]).returncode == 0
    assert wait_until(lambda: not any(alive(p) for p in procs))
    cid2 = unique_id()
    bundle = make_bundle(str(tmp_path / cid2), busybox_root, ["sleep", "60"])
    for step in (["create", "--bundle", bundle, cid2], ["start", cid2]):
        assert runtime(root, *step, program=[path]).returncode == 0
    pid = json.loads(runtime(root, "state", cid2).stdout)["pid"]
    for cid_ in (cid, cid2):  # stopped, and running (--force)
        assert runtime(root, "delete", "-f", cid_, program=[path]).returncode == 0
    assert not alive(pid) and containers_in(root) == [] and cgroup_dirs(cid) == cgroup_dirs(cid2) == []
    assert verbs(calls) == ["create", "create"]


def test_errors_are_the_python_implementations(front, root, tmp_path, busybox_root):
    path, calls = front
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sleep", "30"])
    cases = [
        ["state", "missing"],
        ["state", "../x"],
        ["state", "bad id"],
        ["state", "--no-such-flag", "x"],
        ["delete", "missing"],
        ["delete", "--force", "missing"],
        ["kill", "missing", "KILL"],
        ["start", "missing"],
    ]
    try:
        for step in (["create", "--bundle", bundle, cid], ["start", cid]):
            assert runtime(root, *step, program=[path]).returncode == 0
        running = [["start", cid], ["delete", cid], ["kill", cid, "NOPE"], ["kill", cid, "0x9"], ["state", cid, "x"]]
        for case in cases + running:
            ours, python = both(root, path, *case)
            assert ours == python, case
            assert case[1:] == ["--force", "missing"] or ours[0] != 0, case
        served = ["delete", "--force", "missing"]  # (nothing to delete: the front's answer)
        assert verbs(calls) == ["create"] + [c[0] for c in cases + running if c != served]
        # --log: the Python implementation writes it (runc's JSON lines)
        log = tmp_path / "log.json"
        args = ["--log", str(log), "--log-format", "json", "state", "missing"]
        assert runtime(root, *args, program=[path]).returncode == 1
        entry = json.loads(log.read_text())
        assert entry["level"] == "error" and entry["msg"] == "container does not exist: missing"
    finally:
        runtime(root, "delete", "--force", cid, program=[path])
    gone = both(root, path, "kill", cid, "KILL")
    assert gone[0] == gone[1] and gone[0][0] == 1 and b"does not exist" in gone[0][2]


def test_failed_start_is_reported_by_python(front, root, tmp_path, busybox_root):
    """The init answers START with FAILED: the front hands the report to Python (``start --reply``)."""
    path, calls = front
    answers = []
    for program in ([path], PYTHON_RUNTIME):
        cid = unique_id()
        bundle = make_bundle(str(tmp_path / cid), busybox_root, ["no-such-program"])
        assert runtime(root, "create", "--bundle", bundle, cid, program=program).returncode == 0
        proc = runtime(root, "start", cid, program=program)
        answers.append((proc.returncode, proc.stderr))
        runtime(root, "delete", "--force", cid, program=program)
    assert answers[0] == answers[1] and answers[0][0] == 1 and b"no such command" in answers[0][1]
    assert verbs(calls) == ["create", "start"]
    assert "--reply=" in calls.read_text().splitlines()[1]


def test_containers_with_hooks_are_left_to_python(front, root, tmp_path, busybox_root):
    path, calls = front
    cid = unique_id()
    log = tmp_path / "hooks.log"
    hooks = {name: [{"path": "/bin/sh", "args": ["sh", "-c", f"echo {name} >> {log}"]}] for name in ("poststart",)}
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], hooks=hooks)
    for step in (["create", "--bundle", bundle, cid], ["start", cid], ["state", cid], ["delete", "-f", cid]):
        assert runtime(root, *step, program=[path]).returncode == 0
    assert verbs(calls) == ["create", "start", "state", "delete"]
    assert log.read_text() == "poststart\n"


def test_rootless(workers, busybox_root):
    from tests.ocikit import rootless_lifecycle

    (steps, left), _leaks = workers["sbxtest"].call(rootless_lifecycle, busybox_root)
    assert [(step, code) for step, code, _f, _p in steps] == [("create", 0), ("start", 0), ("kill", 0), ("delete", 0)]
    for _step, _code, ours, python in steps[:3]:
        assert ours == python
    assert [json.loads(ours)["status"] for _s, _c, ours, _p in steps[:3]] == ["created", "running", "stopped"]
    assert left == []


def test_the_front_is_small_and_static():
    """What callers exec per verb: a static program (no dynamic loader), no interpreter."""
    from tests.ocikit import runtime_command

    with open(runtime_command()[0], "rb") as f:
        head = f.read(4096)
    assert head[:4] == b"\x7fELF" and b"ld-linux" not in head
    assert os.path.getsize(runtime_command()[0]) < 1_000_000


IDS = ["a", "A.b_c+d-e", "x" * 1024, "x" * 1025, "-a", ".a", "_a", "a b", "a/b", "a:b", "\u00e9", "a\n"]


def test_ids_and_missing_containers(front, root, tmp_path):
    """``delete --force`` of a missing container succeeds (containerd's shim asks
    twice, podman without --root), for exactly the ids Python accepts."""
    path, calls = front
    valid = []
    for cid in IDS:
        ours, python = both(root, path, "delete", "--force", cid)
        assert ours == python, cid
        valid.append(ours[0] == 0)
        assert ours[0] == 0 or ours[2], (cid, ours)  # (refused: "invalid container id", or an option)
    assert valid == [True, True, True, False, False, False, False, False, False, False, False, True]
    assert len(verbs(calls)) == valid.count(False) + 1  # ("a\n": Python's regex, not the front's)
    # without --root, as root: /run/sandboxlib-runtime (looked into, not made)
    proc = runtime_without_root(path, "delete", "--force", unique_id())
    assert proc.returncode == 0 and len(verbs(calls)) == valid.count(False) + 1


def runtime_without_root(path, *args):
    import subprocess

    return subprocess.run([path, *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


def test_rootless_default_root(workers, busybox_root):
    """Without --root the front looks where Python does (rootless: under $XDG_RUNTIME_DIR)."""
    from tests.ocikit import rootless_default_root

    (states, deleted, reached, left), _leaks = workers["sbxtest"].call(rootless_default_root, busybox_root)
    assert states[0] == states[1] and json.loads(states[0])["status"] == "created"
    assert (deleted, reached, left) == (0, [], [])


def test_a_default_root_someone_else_could_have_placed_is_refused(workers):
    """Rootless without XDG_RUNTIME_DIR the default root is in /tmp, where another user can
    be first: a symlink there, or a directory of theirs, would show them our containers or
    hand them our verbs (the front's delete would remove what their record names).  Both the
    front and Python refuse such a root, naming it; one we make is 0700, and ours made
    writable by group or others, or a symlink under XDG_RUNTIME_DIR, is refused too."""
    import shutil
    import stat
    import tempfile

    from tests.ocikit import default_root_answers, planted_default_root

    victim, other = workers["sbxtest"], workers["sbxsingle"]
    uid = victim.user.pw_uid
    base = f"/tmp/sandboxlib-runtime-{uid}"
    root = f"{base}/sandboxlib-runtime"

    def answers(xdg: str = "") -> list:
        value, leaks = victim.call(default_root_answers, xdg)
        assert leaks == {"fds": [], "children": []}
        return value

    def remove(*paths: str) -> None:
        for path in paths:
            if os.path.islink(path):
                os.unlink(path)
            else:
                shutil.rmtree(path, ignore_errors=True)

    remove(base)
    try:
        for kind, problem in (("symlink", "is a symbolic link"), ("directory", f"is owned by uid {other.user.pw_uid}")):
            planted, _ = other.call(planted_default_root, uid, kind)
            try:
                for code, message in answers():
                    assert code != 0 and f"the default state root {base} {problem}" in message, (kind, message)
                assert not os.path.exists(root) or os.listdir(root) == []  # (nothing of ours went there)
            finally:
                remove(*planted)

        assert [code for code, _ in answers()] == [0, 0]  # made, as ours alone
        for path in (base, root):
            st = os.lstat(path)
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700, path
        os.chmod(root, 0o770)
        for code, message in answers():
            assert code != 0 and f"{root} is writable by group or others (mode 0770)" in message, message
    finally:
        remove(base)

    top = tempfile.mkdtemp(prefix="oci-xdg-")  # (tmp_path is root's 0700 tree)
    try:
        os.chmod(top, 0o755)
        xdg = os.path.join(top, "xdg")
        os.mkdir(xdg, 0o700)
        os.chown(xdg, uid, victim.user.pw_gid)
        os.symlink(top, os.path.join(xdg, "sandboxlib-runtime"))
        os.lchown(os.path.join(xdg, "sandboxlib-runtime"), uid, victim.user.pw_gid)
        for code, message in answers(xdg):
            assert code != 0 and f"{xdg}/sandboxlib-runtime is a symbolic link" in message, message
    finally:
        shutil.rmtree(top)
