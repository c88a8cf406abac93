"""Containers whose root is an image (root and rootless): an overlay of the
layers with a per-container writable layer; Entrypoint, Cmd, Env,
WorkingDir and User as Docker applies them; read_only; layers leased while
a container runs."""

from __future__ import annotations

import os

import pytest

import sandboxlib as sb
from sandboxlib import ImageStore  # the store containers use (sub-id owners rootless)
from sandboxlib.errors import ConfigError, ImageNotFound

from . import rootless
from .conftest import sandboxlib_cli
from .imagekit import add_image, busybox_layers, layer_tar

PROBE = (
    "echo cwd=$(pwd) greeting=$GREETING; cat /app/new.txt /etc/motd; "
    "for p in /etc/old /scratch /app/old.txt /app/sub; do [ -e $p ] && echo present:$p; done; true"
)


def _store(path, busybox_rootfs, config=None, name="bb:1"):
    store = ImageStore(path)
    add_image(
        store,
        busybox_layers(busybox_rootfs),
        [name],
        config=config or {"Cmd": ["sh", "-c", PROBE], "Env": ["GREETING=hi", "PATH=/bin"], "WorkingDir": "/app"},
    )
    return store


def check_default_command(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    r = sb.run(None, image="bb:1", image_store=store.path)
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def test_image_command_env_workdir_and_whiteouts(runner, store_dir, busybox_root):
    code, out, err = runner(check_default_command, store_dir, busybox_root)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["cwd=/app greeting=hi", "new", "motd 3"]  # nothing deleted shows


def check_entrypoint(path, busybox_rootfs):
    store = _store(path, busybox_rootfs, {"Entrypoint": ["echo", "ep"], "Cmd": ["default"], "User": "app"})
    with_cmd = sb.run(None, image="bb:1", image_store=store.path).stdout
    with_args = sb.run(["a", "b"], image="bb:1", image_store=store.path).stdout
    as_user = sb.run(["sh", "-c", "id -u"], image="bb:1", image_store=store.path, cwd="/").stdout
    store2 = _store(path, busybox_rootfs, {"User": "app"}, name="user:1")
    user = sb.run(["id", "-u"], image="user:1", image_store=store2.path).stdout
    override = sb.run(["id", "-u"], image="user:1", image_store=store2.path, user="0").stdout
    return with_cmd, with_args, as_user, user, override


def test_entrypoint_cmd_and_user(runner, store_dir, busybox_root):
    with_cmd, with_args, as_user, user, override = runner(check_entrypoint, store_dir, busybox_root)
    assert with_cmd == b"ep default\n" and with_args == b"ep a b\n"
    assert as_user == b"ep sh -c id -u\n"  # argv follows the Entrypoint, as docker run
    assert user == b"1000\n" and override == b"0\n"


def _with_busybox(busybox_rootfs, entries) -> bytes:
    """A layer tar of busybox plus ``entries`` (as imagekit.layer_tar takes them)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for source in (busybox_layers(busybox_rootfs)[0], layer_tar(entries)):
            with tarfile.open(fileobj=io.BytesIO(source)) as tar:
                for member in tar:
                    out.addfile(member, tar.extractfile(member) if member.isreg() else None)
    return buf.getvalue()


def check_root_opaque(path, busybox_rootfs):
    """Layers: two lower ones, then busybox with ``.wh..wh..opq`` at its root; a fourth with an
    opaque /app on top of that."""
    store = ImageStore(path)
    lower = [
        layer_tar({"lower1": b"1", "etc/": "dir/", "etc/lower": b"1", "app/": "dir/", "app/old": b"o"}),
        layer_tar({"lower2": b"2", "app/": "dir/", "app/older": b"o"}),
    ]
    top = _with_busybox(
        busybox_rootfs, {".wh..wh..opq": b"", "app/": "dir/", "app/new": b"n", "app/sub/": "dir/", "app/sub/kept": b"k"}
    )
    above = layer_tar({"app/": "dir/", "app/.wh..wh..opq": b"", "app/newer": b"n"})
    add_image(store, [*lower, top], ["opq:1"])
    add_image(store, [*lower, top, above], ["opq:2"])
    probe = ["sh", "-c", "ls / | grep -e lower -e app; ls /app; [ -e /etc/lower ] || echo no-etc-lower"]
    return [sb.run(probe, image=f"opq:{n}", image_store=store.path).stdout.decode() for n in (1, 2)]


def test_an_opaque_layer_root_hides_the_layers_below(runner, store_dir, busybox_root):
    """overlayfs ignores the opaque xattr on a lower layer's root: the layers below are left out."""
    three, four = runner(check_root_opaque, store_dir, busybox_root)
    assert three.split() == ["app", "new", "sub", "no-etc-lower"]
    assert four.split() == ["app", "newer", "no-etc-lower"]  # an opaque dir above still hides /app/new


def check_writable_layer(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    with sb.Container(image="bb:1", image_store=store.path) as c:
        wrote = c.run(["sh", "-c", "echo changed > /etc/motd && rm /bin/ls && mkdir -p /new/dir && echo ok"])
        seen = c.run(["sh", "-c", "cat /etc/motd; ls /new; [ -e /bin/ls ] || echo no-ls"]).stdout
    fresh = sb.run(
        ["sh", "-c", "cat /etc/motd; [ -e /new ] || echo no-new; [ -e /bin/ls ] && echo ls"],
        image="bb:1",
        image_store=store.path,
    ).stdout
    layers = store.unpacked("bb:1")
    with open(os.path.join(layers[2], "etc", "motd")) as f:
        on_disk = f.read()
    return wrote.stdout, seen, fresh, on_disk, os.path.lexists(os.path.join(layers[0], "bin", "ls"))


def test_each_container_has_its_own_writable_layer(runner, store_dir, busybox_root):
    wrote, seen, fresh, on_disk, ls_kept = runner(check_writable_layer, store_dir, busybox_root)
    assert wrote == b"ok\n" and seen == b"changed\ndir\nno-ls\n"
    assert fresh == b"motd 3\nno-new\nls\n"  # nothing of the first container is left
    assert on_disk == "motd 3\n" and ls_kept  # the layers were never written


def check_read_only(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    r = sb.run(["sh", "-c", "cat /etc/motd; touch /etc/x"], image="bb:1", image_store=store.path, read_only=True)
    return r.exit_code, r.stdout, r.stderr.decode()


def test_read_only_image_root(runner, store_dir, busybox_root):
    code, out, err = runner(check_read_only, store_dir, busybox_root)
    assert code == 1 and out == b"motd 3\n" and "Read-only file system" in err


def check_leases(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    layers = store.unpacked("bb:1")
    with sb.Container(image="bb:1", image_store=store.path) as c:
        store.remove("bb:1")
        store.prune()
        during = [os.path.isdir(d) for d in layers], c.run(["cat", "/etc/motd"]).stdout
        leases = len(os.listdir(os.path.join(store.path, "leases")))
    store.prune()
    return during, leases, [os.path.isdir(d) for d in layers], os.listdir(os.path.join(store.path, "leases"))


def test_layers_of_a_running_container_are_kept(runner, store_dir, busybox_root):
    during, leases, after, leases_after = runner(check_leases, store_dir, busybox_root)
    assert during == ([True, True, True], b"motd 3\n") and leases == 1
    assert after == [False, False, False] and leases_after == []


def test_image_errors_name_the_field(tmp_path, busybox_root):
    store = ImageStore(str(tmp_path))
    with pytest.raises(ImageNotFound):
        sb.run(["true"], image="missing:1", image_store=store.path, pull="never")
    with pytest.raises(ConfigError) as err:
        sb.run(["true"], image="bb:1", rootfs=busybox_root)
    assert err.value.field == "image"
    with pytest.raises(ConfigError) as err:
        sb.run(["true"], image="Bad Name", image_store=store.path)
    assert err.value.field == "image"
    add_image(store, [layer_tar({"f": b"x"})], ["nocmd:1"])
    with pytest.raises(ConfigError) as err:
        sb.run(None, image="nocmd:1", image_store=store.path)
    assert err.value.field == "argv"
    assert os.listdir(os.path.join(store.path, "leases")) == []


def test_image_as_real_root(tmp_path, busybox_root):
    store = _store(str(tmp_path), busybox_root)
    r = sb.run(["sh", "-c", "id -u; cat /proc/self/uid_map"], image="bb:1", image_store=store.path, userns=False)
    assert r.stdout.split()[:2] == [b"0", b"0"]


def check_broken_layer(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    layers = store.unpacked("bb:1")
    os.rename(layers[1], layers[1] + ".moved")
    os.symlink(layers[1] + ".moved", layers[1])  # never followed: the layer is refused
    try:
        sb.run(["true"], image="bb:1", image_store=store.path)
    except sb.SetupError as err:
        return err.step, err.field, str(err), os.listdir(os.path.join(store.path, "leases"))
    return None


def test_a_broken_layer_is_a_setup_error(runner, store_dir, busybox_root):
    step, field, text, leases = runner(check_broken_layer, store_dir, busybox_root)
    assert (step, field, leases) == ("MOUNT", "image", [])
    assert "type=lower" in text and "[Errno 20] Not a directory (from image)" in text


def check_kernel_dir_symlinks(path, busybox_rootfs):
    """An image whose merged /proc (or /sys) is a symlink is refused before
    clone; a symlink that an upper layer's directory hides is not."""
    store = ImageStore(path)
    base = busybox_layers(busybox_rootfs)[0]
    found = {}
    for name in ("proc", "sys"):
        add_image(store, [base, layer_tar({name: "->etc"})], [f"{name}-link:1"])
        try:
            sb.run(["true"], image=f"{name}-link:1", image_store=store.path)
        except sb.ImageFormatError as err:
            found[name] = str(err)
    add_image(store, [base, layer_tar({"proc": "->etc"}), layer_tar({"proc/": "dir/"})], ["hidden-link:1"])
    hidden = sb.run(
        ["sh", "-c", "test -d /proc/self && ! test -L /proc"], image="hidden-link:1", image_store=store.path
    ).exit_code
    return found, hidden, os.listdir(os.path.join(store.path, "leases"))


def test_image_with_kernel_dir_symlinks_is_refused(runner, store_dir, busybox_root):
    found, hidden, leases = runner(check_kernel_dir_symlinks, store_dir, busybox_root)
    assert sorted(found) == ["proc", "sys"], found
    assert "/proc is a symlink (to 'etc')" in found["proc"] and "/sys is a symlink" in found["sys"], found
    assert hidden == 0 and leases == []


# -- the command line ---------------------------------------------------------------
def _cli(*args: str):
    return sandboxlib_cli(*args, text=True)


def test_cli_images_load_save_import_rmi_run(tmp_path, busybox_root):
    import tarfile

    store = str(tmp_path / "store")
    empty = _cli("images", "--store", store)
    assert (empty.returncode, empty.stdout.split()) == (0, ["REPOSITORY", "TAG", "IMAGE", "ID", "LAYERS", "SIZE"])
    assert not os.path.exists(store), "listing made a store"
    rootfs_tar = str(tmp_path / "rootfs.tar")
    with tarfile.open(rootfs_tar, "w") as tar:
        tar.add(busybox_root, arcname=".")
    imported = _cli("import", rootfs_tar, "bb:cli", "--store", store)
    assert imported.returncode == 0 and imported.stdout.startswith("sha256:"), imported.stderr
    listed = _cli("images", "--store", store)
    assert listed.stdout.split("\n")[1].split()[:4] == ["bb", "cli", imported.stdout[7:19], "1"]
    ran = _cli("run", "--store", store, "-w", "/etc", "bb:cli", "sh", "-c", "pwd; ls /bin/busybox")
    assert (ran.returncode, ran.stdout) == (0, "/etc\n/bin/busybox\n"), ran.stderr
    assert _cli("run", "--store", store, "bb:cli", "--", "sh", "-c", "exit 3").returncode == 3
    assert _cli("save", "-o", str(tmp_path / "out.tar"), "bb:cli", "--store", store).returncode == 0
    assert _cli("rmi", "bb:cli", "--store", store).stdout == "Untagged: bb:cli\n"
    missing = _cli("run", "--store", store, "--pull", "never", "bb:cli", "true")
    assert missing.returncode == 125 and "no image 'bb:cli' in the store" in missing.stderr
    loaded = _cli("load", "-i", str(tmp_path / "out.tar"), "--store", store)
    assert loaded.stdout == "Loaded image: bb:cli\n", loaded.stderr
    no_cmd = _cli("run", "--store", store, "bb:cli")
    assert no_cmd.returncode == 125 and "CMD: no command given" in no_cmd.stderr
    bad = _cli("load", "-i", str(tmp_path / "rootfs.tar"), "--store", store)
    assert bad.returncode == 125 and "neither a docker save archive" in bad.stderr


def check_volumes(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    vol = sb.Mount.volume("data", "/data")
    first = sb.run(
        ["sh", "-c", "echo kept > /data/f; stat -c %u /data/f"], image="bb:1", image_store=store.path, mounts=[vol]
    )
    second = sb.run(["cat", "/data/f"], image="bb:1", image_store=store.path, mounts=[vol])
    ro = sb.run(
        ["sh", "-c", "cat /data/f; echo x > /data/g"],
        image="bb:1",
        image_store=store.path,
        mounts=[sb.Mount.volume("data", "/data", read_only=True)],
    )
    host_view = sb.run(["cat", "/v/f"], mounts=[sb.Mount.volume("data", "/v")], image_store=store.path)
    names = store.volumes()
    store.prune()
    kept = store.volumes()
    store.remove_volume("data")
    return (first.stdout, second.stdout, ro.exit_code, ro.stdout, host_view.stdout, names, kept, store.volumes())


def test_named_volumes(runner, store_dir, busybox_root):
    first, second, ro_code, ro_out, host_view, names, kept, after = runner(check_volumes, store_dir, busybox_root)
    assert first == b"0\n" and second == b"kept\n" and host_view == b"kept\n"
    assert ro_code == 1 and ro_out == b"kept\n"
    assert names == kept == ["data"] and after == []


def test_volume_names_are_checked(tmp_path):
    for name in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(ConfigError) as err:
            sb.Mount.volume(name, "/data")
        assert err.value.field == "name"
    with pytest.raises(ConfigError):
        ImageStore(str(tmp_path)).remove_volume("missing")


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
import sandboxlib as sb
c = sb.Container(image="bb:1", image_store={store!r})
c.start()
print("up", flush=True)
time.sleep(60)
"""


def test_a_killed_owner_leaves_a_lease_that_lapses(tmp_path, busybox_root):
    import signal
    import subprocess
    import sys

    store = _store(str(tmp_path), busybox_root)
    layers = store.unpacked("bb:1")
    repo = rootless.import_path()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(repo=repo, store=store.path)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"up\n"
        store.remove("bb:1")
        assert all(os.path.isdir(d) for d in layers)  # leased by the running container
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    store.prune()
    assert not any(os.path.isdir(d) for d in layers)
    assert os.listdir(os.path.join(store.path, "leases")) == []
    from sandboxlib.runtime import statedir

    assert statedir.sweep(statedir.state_root()) == 1  # its state record, as the next start would


UNPACKER = """
import sys
sys.path.insert(0, {repo!r})
import sandboxlib as sb
print(sb.ImageStore({store!r}).unpacked("bb:1"))
"""


def test_several_processes_unpack_one_image(tmp_path, busybox_root):
    import subprocess
    import sys

    store = _store(str(tmp_path), busybox_root)
    repo = rootless.import_path()
    procs = [
        subprocess.Popen([sys.executable, "-c", UNPACKER.format(repo=repo, store=store.path)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = {p.communicate(timeout=120)[0] for p in procs}
    assert [p.returncode for p in procs] == [0, 0, 0] and len(outputs) == 1
    top = os.path.join(store.path, "layers")
    assert sum(len(os.listdir(os.path.join(top, key))) for key in os.listdir(top)) == 3
    assert os.listdir(store.tmp) == []
