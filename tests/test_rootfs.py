"""The container's root file system: read-only and writable roots, bind and
tmpfs mounts, mount points that do not exist yet, and symlinks in a root
that point out of it (they must never put a mount, or a directory, on the
host).

A note on writable roots: in a user namespace, files owned by ids that are
not mapped (host root's files, for a root directory made by host root)
appear as nobody (65534) and the container's root cannot write them.  A
writable root directory therefore needs either ``userns=False`` (root
only) or a directory owned by the id the container's root maps to."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading

import pytest

import sandboxlib as sb
from sandboxlib import Mount

from .conftest import make_busybox_rootfs
from .test_isolation import EROFS_TEXT, box, make_open_dir, mount_options, mount_points, open_dir, out, root, sh  # noqa: F401 - fixtures, requested by name

ROOT_DEFAULT_HOST_ID = 1_000_000_000
WRITE_PROBE = """for p in "$@"; do msg=$( (: > "$p") 2>&1) && echo "$p|ok" || echo "$p|$msg"; done"""


def _write_results(text: str) -> dict:
    return dict(line.split("|", 1) for line in text.splitlines())


def _chown_tree(path: str, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        os.lchown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _write(path: str, text: str, mode: int = 0o644) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


# -- read-only and writable roots ----------------------------------------------------
def check_read_only_root(rootfs):
    with box(rootfs, read_only=True) as c:
        writes = _write_results(
            out(
                c, WRITE_PROBE, "/sbx-probe", "/tmp/sbx-probe", "/run/sbx-probe", "/dev/shm/sbx-probe", "/bin/sbx-probe"
            )
        )
        mkdir = sh(c, "mkdir /sbx-dir")
        options = mount_options(out(c, "cat /proc/self/mountinfo"))
    return writes, mkdir.exit_code, mkdir.stderr.decode(), options["/"]


def test_read_only_root(runner, root):
    writes, mkdir_code, mkdir_err, root_options = runner(check_read_only_root, root)
    assert root_options[0] == "ro"
    assert mkdir_code != 0 and EROFS_TEXT in mkdir_err
    for path in ("/sbx-probe", "/bin/sbx-probe"):
        assert EROFS_TEXT in writes[path], writes
    assert writes["/dev/shm/sbx-probe"] == "ok"
    if root is None:  # the host view has fresh writable /tmp and /run
        assert writes["/tmp/sbx-probe"] == writes["/run/sbx-probe"] == "ok"
    else:  # on a root directory they are part of the read-only root
        assert EROFS_TEXT in writes["/tmp/sbx-probe"] and EROFS_TEXT in writes["/run/sbx-probe"]


def test_read_only_root_covers_mounts_inside_the_root_directory(tmp_path):
    # Root only: needs a mount on the host inside the root directory.  The
    # root directory is taken with everything mounted in it (a recursive
    # clone); read_only must then cover all of it, as Mount.bind(read_only=True)
    # does, or writes through the "read-only" root reach the host.
    rootfs = make_busybox_rootfs(str(tmp_path / "root"))
    os.mkdir(f"{rootfs}/data")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "sbx-rootsub", f"{rootfs}/data"], check=True)
    try:
        with sb.Container(rootfs=rootfs, read_only=True) as c:
            writes = _write_results(out(c, WRITE_PROBE, "/sbx-probe", "/data/sbx-probe"))
            options = mount_options(out(c, "cat /proc/self/mountinfo"))
        on_host = os.listdir(f"{rootfs}/data")
    finally:
        subprocess.run(["umount", f"{rootfs}/data"], check=True)
    assert EROFS_TEXT in writes["/sbx-probe"]
    assert options["/data"][0] == "ro", options["/data"]
    assert EROFS_TEXT in writes["/data/sbx-probe"], writes
    assert on_host == []


def check_host_view_root_writable(name):
    with sb.Container() as c:
        text = out(c, 'echo hi > "/$1" && mkdir -p "/opt/$1" && cat "/$1" && ls /opt', name)
        options = mount_options(out(c, "cat /proc/self/mountinfo"))
    return text, options["/"]


def test_host_view_root_is_a_private_tmpfs(runner):
    name = f"sbx-probe-{os.getpid()}"
    text, options = runner(check_host_view_root_writable, name)
    assert text == f"hi\n{name}\n" and options[0] == "rw"
    assert not os.path.exists(f"/{name}") and not os.path.exists(f"/opt/{name}")


def test_writable_rootfs_copy_without_userns(tmp_path):
    # Host root's files can only be written by a container root that is
    # host root: userns=False (see the module docstring).
    rootfs = make_busybox_rootfs(str(tmp_path / "root"))
    with sb.Container(rootfs=rootfs, userns=False, mounts=[Mount.tmpfs("/opt/new/dir")]) as c:
        text = out(
            c,
            "echo hello > /etc/motd && mkdir /data && rm /etc/group && "
            "stat -c '%u %g' /etc/motd /bin/busybox && ls -A /opt/new/dir && "
            "echo inside > /opt/new/dir/f && grep -c ' /opt/new/dir ' /proc/self/mountinfo",
        )
    assert text == "0 0\n0 0\n1\n"
    assert _read(os.path.join(rootfs, "etc/motd")) == "hello\n"
    assert os.stat(os.path.join(rootfs, "etc/motd")).st_uid == 0
    assert os.path.isdir(os.path.join(rootfs, "data"))
    assert not os.path.exists(os.path.join(rootfs, "etc/group"))
    # The mount point was made in the root directory; the mount stayed inside.
    assert os.listdir(os.path.join(rootfs, "opt/new/dir")) == []


def check_unmapped_root_files(rootfs):
    with sb.Container(rootfs=rootfs) as c:
        owner = out(c, "stat -c '%u %g' /bin/busybox /etc")
        write = sh(c, "echo x > /etc/motd")
    return owner, write.exit_code, write.stderr.decode()


def test_host_root_files_appear_as_nobody(runner, open_dir):
    rootfs = make_busybox_rootfs(open_dir + "/root")
    owner, code, err = runner(check_unmapped_root_files, rootfs)
    assert owner == "65534 65534\n65534 65534\n"
    assert code != 0 and "Permission denied" in err
    assert not os.path.exists(os.path.join(rootfs, "etc/motd"))


def check_writable_copy(rootfs):
    with sb.Container(rootfs=rootfs, mounts=[Mount.tmpfs("/opt/new")]) as c:
        return out(
            c,
            "echo hello > /etc/motd && mkdir /data && echo x > /data/f && "
            "stat -c '%u %g' /etc/motd /bin/busybox && touch /opt/new/inside && ls /opt/new",
        )


def test_writable_rootfs_owned_by_container_root(runner, open_dir):
    rootfs = make_busybox_rootfs(open_dir + "/root")
    owner = ROOT_DEFAULT_HOST_ID if runner.mode == "root" else runner.worker.user.pw_uid
    group = ROOT_DEFAULT_HOST_ID if runner.mode == "root" else runner.worker.user.pw_gid
    _chown_tree(rootfs, owner, group)
    assert runner(check_writable_copy, rootfs) == "0 0\n0 0\ninside\n"
    st = os.stat(os.path.join(rootfs, "etc/motd"))
    assert (st.st_uid, st.st_gid) == (owner, group)
    assert _read(os.path.join(rootfs, "etc/motd")) == "hello\n"
    assert _read(os.path.join(rootfs, "data/f")) == "x\n"
    assert os.listdir(os.path.join(rootfs, "opt/new")) == []


# -- bind and tmpfs mounts -----------------------------------------------------------------
BIND_PROBE = """cat /run/ro/hello.txt
echo written > /run/rw/new && echo rw-dir-ok
cat /run/conf/ro.txt
echo after > /run/conf/rw.txt && echo rw-file-ok
stat -c %F /run/conf/ro.txt /run/conf/rw.txt
ls -A /run/ro"""


def check_bind_mounts(rootfs, base):
    mounts = [
        Mount.tmpfs("/run"),
        Mount.bind(f"{base}/ro", "/run/ro", read_only=True),
        Mount.bind(f"{base}/rw", "/run/rw"),
        Mount.bind(f"{base}/ro.txt", "/run/conf/ro.txt", read_only=True),
        Mount.bind(f"{base}/rw.txt", "/run/conf/rw.txt"),
    ]
    with box(rootfs, mounts=mounts) as c:
        text = out(c, BIND_PROBE)
        writes = _write_results(out(c, WRITE_PROBE, "/run/ro/new", "/run/ro/hello.txt", "/run/conf/ro.txt"))
        options = mount_options(out(c, "cat /proc/self/mountinfo"))
    return text, writes, {p: options[p] for p in ("/run/ro", "/run/rw", "/run/conf/ro.txt", "/run/conf/rw.txt")}


def test_bind_mounts(runner, root, open_dir):
    os.mkdir(f"{open_dir}/ro")
    _write(f"{open_dir}/ro/hello.txt", "hello\n", 0o666)
    os.mkdir(f"{open_dir}/rw", 0o777)
    os.chmod(f"{open_dir}/rw", 0o777)
    _write(f"{open_dir}/ro.txt", "config\n", 0o666)
    _write(f"{open_dir}/rw.txt", "before\n", 0o666)
    text, writes, options = runner(check_bind_mounts, root, open_dir)
    assert text.splitlines() == [
        "hello",
        "rw-dir-ok",
        "config",
        "rw-file-ok",
        "regular file",
        "regular file",
        "hello.txt",
    ]
    for path, result in writes.items():
        assert EROFS_TEXT in result, (path, result)
    assert [options[p][0] for p in ("/run/ro", "/run/rw", "/run/conf/ro.txt", "/run/conf/rw.txt")] == [
        "ro",
        "rw",
        "ro",
        "rw",
    ]
    assert _read(f"{open_dir}/rw/new") == "written\n"
    assert _read(f"{open_dir}/rw.txt") == "after\n"
    assert _read(f"{open_dir}/ro.txt") == "config\n" and _read(f"{open_dir}/ro/hello.txt") == "hello\n"
    assert os.listdir(f"{open_dir}/ro") == ["hello.txt"]


TMPFS_PROBE = """stat -c %a /run/a/b/scratch /run/private
stat -f -c '%b %S' /run/a/b/scratch
head -c 2097152 /dev/zero > /run/a/b/scratch/big 2>/dev/null && echo filled-2M || echo full
stat -c %s /run/a/b/scratch/big"""


def check_tmpfs_mounts(rootfs):
    mounts = [
        Mount.tmpfs("/run"),
        Mount.tmpfs("/run/a/b/scratch", size="1M", mode=0o750),
        Mount.tmpfs("/run/private", mode=0o700, read_only=True),
    ]
    with box(rootfs, mounts=mounts) as c:
        text = out(c, TMPFS_PROBE)
        writes = _write_results(out(c, WRITE_PROBE, "/run/private/f", "/run/a/b/scratch/f"))
        options = mount_options(out(c, "cat /proc/self/mountinfo"))
    return text, writes, options["/run/a/b/scratch"], options["/run/private"]


def test_tmpfs_mounts(runner, root):
    text, writes, scratch, private = runner(check_tmpfs_mounts, root)
    scratch_mode, private_mode, blocks, fill, size = text.splitlines()
    assert (scratch_mode, private_mode) == ("750", "700")
    count, block_size = (int(v) for v in blocks.split())
    assert count * block_size == 1 << 20
    assert fill == "full" and int(size) <= 1 << 20
    assert EROFS_TEXT in writes["/run/private/f"] and writes["/run/a/b/scratch/f"] == "ok"
    assert scratch[0] == "rw" and "nosuid" in scratch and "nodev" in scratch
    assert private[0] == "ro"


def check_new_mount_points(read_only, data_dir, conf):
    mounts = [
        Mount.tmpfs("/new/deep/dir"),
        Mount.bind(conf, "/new/conf/app.conf", read_only=True),
        Mount.bind(data_dir, "/opt/data"),
    ]
    with sb.Container(read_only=read_only, mounts=mounts) as c:
        text = out(
            c, "echo x > /new/deep/dir/f && cat /new/conf/app.conf && ls /opt/data && stat -c %F /new/conf/app.conf"
        )
        root_write = _write_results(out(c, WRITE_PROBE, "/sbx-probe"))["/sbx-probe"]
        points = mount_points(out(c, "cat /proc/self/mountinfo"))
    return text, root_write, sorted(points & {"/new/deep/dir", "/new/conf/app.conf", "/opt/data"})


@pytest.mark.parametrize("read_only", [False, True])
def test_mount_points_created_in_host_view(runner, open_dir, read_only):
    _write(f"{open_dir}/app.conf", "conf\n")
    os.mkdir(f"{open_dir}/data")
    _write(f"{open_dir}/data/item", "")
    text, root_write, points = runner(check_new_mount_points, read_only, f"{open_dir}/data", f"{open_dir}/app.conf")
    assert text == "conf\nitem\nregular file\n"
    assert points == ["/new/conf/app.conf", "/new/deep/dir", "/opt/data"]
    assert (EROFS_TEXT in root_write) if read_only else root_write == "ok"
    assert not os.path.exists("/new")


def test_bind_mounts_are_recursive(tmp_path):
    # Root only: the test needs a mount on the host under the bound directory.
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "sbx-sub", str(src / "sub")], check=True)
    try:
        _write(str(src / "sub" / "f"), "on the submount\n", 0o666)
        mounts = [Mount.bind(str(src), "/ro", read_only=True), Mount.bind(str(src), "/rw")]
        with sb.Container(mounts=mounts) as c:
            text = out(c, "cat /ro/sub/f && echo new > /rw/sub/new && cat /ro/sub/new")
            writes = _write_results(out(c, WRITE_PROBE, "/ro/sub/f", "/ro/sub/other", "/ro/top"))
            options = mount_options(out(c, "cat /proc/self/mountinfo"))
        assert text == "on the submount\nnew\n"
        for path, result in writes.items():
            assert EROFS_TEXT in result, (path, result)
        assert options["/ro/sub"][0] == "ro" and options["/rw/sub"][0] == "rw"
        assert _read(str(src / "sub" / "new")) == "new\n" and _read(str(src / "sub" / "f")) == "on the submount\n"
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)


# -- symlinks in the root must not lead mounts out of it ----------------------------------
def _symlink_trap(base: str) -> dict:
    """A busybox root at base/root with symlinks to host paths (victims) as
    mount targets.  Each victim also exists *inside* the root under its host
    path, so that resolving the link inside the root finds a directory."""
    rootfs = make_busybox_rootfs(f"{base}/root")
    v = {name: f"{base}/victim-{name}" for name in ("abs", "rel", "deep")}
    for path in v.values():
        os.mkdir(path, 0o777)
        os.chmod(path, 0o777)  # writable by any container root: an escape could write there
        os.makedirs(rootfs + path)
        os.chmod(rootfs + path, 0o777)
    v["file"] = _write(f"{base}/victim-file", "original\n", 0o666)
    _write(rootfs + v["file"], "")
    os.symlink(v["abs"], f"{rootfs}/abs")  # absolute, last component
    os.symlink("../" * 12 + v["rel"].lstrip("/"), f"{rootfs}/etc/rel")  # relative escape, in the middle
    os.symlink("../../../../../../../.." + v["deep"], f"{rootfs}/etc/deep")  # dirs to create beyond it
    os.symlink(v["file"], f"{rootfs}/etc/file-link")  # a file
    src = f"{base}/src"
    os.mkdir(src, 0o777)
    _write(f"{src}/from-src", "src\n", 0o666)
    _write(f"{base}/src-file", "mounted file\n", 0o666)
    return {"rootfs": rootfs, "victims": v, "src": src, "src_file": f"{base}/src-file"}


def check_symlink_targets(trap, options):
    mounts = [
        Mount.tmpfs("/abs"),
        Mount.bind(trap["src"], "/etc/rel/sub"),
        Mount.tmpfs("/etc/deep/new/deeper"),
        Mount.bind(trap["src_file"], "/etc/file-link", read_only=True),
    ]
    v = trap["victims"]
    with sb.Container(rootfs=trap["rootfs"], read_only=True, mounts=mounts, **options) as c:
        text = out(
            c, "echo a > /abs/marker && ls /etc/rel/sub && echo d > /etc/deep/new/deeper/marker && cat /etc/file-link"
        )
        seen = out(
            c, 'cat "$1/marker" "$2/sub/from-src" "$3/new/deeper/marker" "$4"', v["abs"], v["rel"], v["deep"], v["file"]
        )
        points = mount_points(out(c, "cat /proc/self/mountinfo"))
        with open("/proc/self/mountinfo") as f:
            host_points = mount_points(f.read())
        host_during = {name: sorted(os.listdir(path)) for name, path in v.items() if name != "file"}
    return text, seen, sorted(points), sorted(host_points), host_during


def _check_trap(trap, result):
    text, seen, points, host_points, host_during = result
    v = trap["victims"]
    assert text == "from-src\nmounted file\n"
    # Inside, the mounts are on the victims' paths *in the container root*.
    assert seen == "a\nsrc\nd\nmounted file\n"
    assert {v["abs"], v["rel"] + "/sub", v["deep"] + "/new/deeper", v["file"]} <= set(points)
    # On the host: no mount, no new file or directory, the file untouched.
    for path in (v["abs"], v["rel"] + "/sub", v["deep"] + "/new/deeper", v["file"]):
        assert path not in host_points
    assert host_during == {"abs": [], "rel": [], "deep": []}
    assert {name: os.listdir(v[name]) for name in ("abs", "rel", "deep")} == {"abs": [], "rel": [], "deep": []}
    assert _read(v["file"]) == "original\n"
    # What was created, was created inside the root directory.
    assert os.path.isdir(trap["rootfs"] + v["deep"] + "/new/deeper")
    assert os.path.isdir(trap["rootfs"] + v["rel"] + "/sub")


def test_symlinks_in_rootfs_do_not_escape(runner, shared_dir):
    base = make_open_dir(shared_dir)
    try:
        trap = _symlink_trap(base)
        _check_trap(trap, runner(check_symlink_targets, trap, {}))
    finally:
        shutil.rmtree(base)


def test_symlinks_in_rootfs_do_not_escape_without_userns(tmp_path):
    # The strongest case: the child is host root, able to write anywhere.
    trap = _symlink_trap(str(tmp_path))
    _check_trap(trap, check_symlink_targets(trap, {"userns": False}))


def check_dangling_symlink_target(rootfs, victim):
    try:
        with sb.Container(rootfs=rootfs, read_only=True, mounts=[Mount.tmpfs("/evil/new")]) as c:
            return "started", out(c, 'ls -A "$1/new" && grep -c " $1/new " /proc/self/mountinfo', victim)
    except sb.SetupError as err:
        return "refused", str(err)


def test_dangling_symlink_target_stays_inside(runner, shared_dir):
    # evil -> a host directory that does not exist inside the root: the
    # library may refuse the mount or create the path inside the root, but
    # never create anything on the host.
    base = make_open_dir(shared_dir)
    try:
        rootfs = make_busybox_rootfs(f"{base}/root")
        victim = f"{base}/victim"
        os.mkdir(victim, 0o777)
        os.chmod(victim, 0o777)
        os.symlink(victim, f"{rootfs}/evil")
        outcome, detail = runner(check_dangling_symlink_target, rootfs, victim)
        assert os.listdir(victim) == []
        if outcome == "started":
            assert detail == "1\n" and os.path.isdir(rootfs + victim + "/new")
        else:
            assert "/evil/new" in detail, detail
    finally:
        shutil.rmtree(base)


def check_dotdot_target_under_rename_churn(rootfs, attempts):
    """Start containers whose mount target goes through a relative symlink
    ("..") while another thread renames a file elsewhere, as any busy host does."""
    churn_dir = tempfile.mkdtemp(prefix="sbx-churn-")
    stop = threading.Event()

    def churn():
        a, b = f"{churn_dir}/a", f"{churn_dir}/b"
        open(a, "w").close()
        while not stop.is_set():
            os.rename(a, b)
            os.rename(b, a)

    thread = threading.Thread(target=churn)
    thread.start()
    failures = []
    try:
        for _ in range(attempts):
            try:
                with sb.Container(rootfs=rootfs, read_only=True, mounts=[Mount.tmpfs("/etc/rel/t")]):
                    pass
            except sb.SetupError as err:
                failures.append(str(err))
    finally:
        stop.set()
        thread.join()
        shutil.rmtree(churn_dir)
    return failures


def test_mount_target_through_dotdot_symlink_is_reliable(runner, open_dir):
    # openat2(RESOLVE_IN_ROOT) fails with EAGAIN when a rename or a mount
    # anywhere on the system races with a ".." step of the lookup; openat2(2)
    # says the caller may retry.  Images are full of relative symlinks
    # (/var/run -> ../run, /etc/localtime -> ../usr/share/zoneinfo/...), and a
    # host that starts containers has mounts going on all the time: a set-up
    # must not fail at random because of that.
    rootfs = make_busybox_rootfs(f"{open_dir}/root")
    os.makedirs(f"{rootfs}/data/t")
    os.symlink("../data", f"{rootfs}/etc/rel")
    failures = runner(check_dotdot_target_under_rename_churn, rootfs, 200)
    assert failures == [], f"{len(failures)} of 200 starts failed, e.g. {failures[0]}"
