"""Real callers of sandboxlib-runtime: podman (run --rm, exec, exec -t, stop)
and containerd (ctr run --runc-binary; a runtime handler with BinaryName),
each with its state in the test's own directories and an image imported
from a local tar of the session's busybox root (no pulls)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

from tests.conftest import wait_until
from tests.ocikit import containers_in, wrapper_script

# This host's root lacks CAP_SYS_RESOURCE: podman's default rlimits (nofile,
# nproc 1048576) are refused by every runtime (crun and runc too), so the
# tests ask for limits below the host's.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _rootfs_tar(busybox_root: str, path: str) -> str:
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(busybox_root)):
            tar.add(os.path.join(busybox_root, name), arcname=name)
    return path


def _remove_cgroups(name: str) -> None:
    """The cgroup parent a caller made (podman's --cgroup-parent, ctr's namespace), in every hierarchy."""
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", hierarchy, name)
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


class Podman:
    def __init__(self, base: str, runtime: str) -> None:
        self.cgroup_parent = f"sandboxlib-test-{os.path.basename(base)}"
        self.base, self.runtime = base, runtime
        self.args = [
            "podman",
            "--root", f"{base}/storage",
            "--runroot", f"{base}/run",
            "--tmpdir", f"{base}/tmp",
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "none",
            "--runtime", runtime,
            "--runtime-flag", f"root={base}/runtime-root",  # (not the host's /run/sandboxlib-runtime)
        ]  # fmt: skip

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.args, *args], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert not check or proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def run_args(self) -> list:
        return ["--network", "none", "--cgroup-parent", f"/{self.cgroup_parent}", *ULIMITS]


@pytest.fixture(scope="module")
def podman(tmp_path_factory, busybox_root):
    base = str(tmp_path_factory.mktemp("podman"))
    runtime = wrapper_script(base)
    podman = Podman(base, runtime)
    podman("import", _rootfs_tar(busybox_root, f"{base}/bb.tar"), "localhost/busybox:test")
    yield podman
    podman("rm", "--all", "--force", "--time", "0", check=False)
    podman("rmi", "--all", "--force", check=False)
    shutil.rmtree(base, ignore_errors=True)
    _remove_cgroups(podman.cgroup_parent)


def test_podman_run_rm(podman):
    proc = podman("run", "--rm", *podman.run_args(), "localhost/busybox:test", "echo", "hi")
    assert proc.stdout == b"hi\n"
    status = podman("run", "--rm", *podman.run_args(), "localhost/busybox:test", "sh", "-c", "exit 3", check=False)
    assert status.returncode == 3
    assert podman("ps", "--all", "--quiet").stdout == b""


def test_podman_exec_and_stop(podman):
    cid = podman("run", "--detach", *podman.run_args(), "localhost/busybox:test", "sleep", "60").stdout.decode().strip()
    try:
        proc = podman("exec", cid, "sh", "-c", "echo in $(hostname); exit 4", check=False)
        assert (proc.returncode, proc.stdout) == (4, f"in {cid[:12]}\n".encode()), proc.stderr
        assert podman("exec", "--tty", cid, "tty").stdout.strip() == b"/dev/pts/0"
        top = podman("top", cid, "pid", "comm").stdout.decode()
        assert "sleep" in top
        started = time.monotonic()
        podman("stop", "--time", "2", cid)  # sleep ignores nothing: SIGTERM ends it
        assert time.monotonic() - started < 2
        inspect = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid).stdout.split()
        assert inspect == [b"exited", b"143"]
    finally:
        podman("rm", "--force", "--time", "0", cid)


def test_podman_rootless(workers, shared_dir, busybox_root):
    """Rootless podman runs the runtime as root of its own user namespace (state under $XDG_RUNTIME_DIR)."""
    from tests.ocikit import rootless_podman

    base = tempfile.mkdtemp(prefix="sbx-podman-")  # (podman wants a runroot under 50 characters)
    try:
        os.chmod(base, 0o777)
        tar = _rootfs_tar(busybox_root, os.path.join(base, "bb.tar"))
        os.chmod(tar, 0o644)
        (code, out, err), _leaks = workers["sbxtest"].call(rootless_podman, base, tar)
        assert (code, out) == (3, b"0\n"), err
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- containerd ------------------------------------------------------------------------------------
CONTAINERD_CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable = true
[plugins."io.containerd.runtime.v1.linux"]
  shim_debug = false
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandboxlib]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandboxlib.options]
    BinaryName = "{runtime}"
"""


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, busybox_root):
    base = str(tmp_path_factory.mktemp("ctrd"))
    runtime = wrapper_script(base)
    config = os.path.join(base, "config.toml")
    with open(config, "w") as f:
        f.write(CONTAINERD_CONFIG.format(base=base, runtime=runtime))
    log = open(os.path.join(base, "containerd.log"), "wb")
    daemon = subprocess.Popen(["containerd", "--config", config], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    namespace = f"sbxtest{os.getpid()}"

    def ctr(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["ctr", "--address", f"{base}/containerd.sock", "--namespace", namespace, *args],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert not check or proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    try:
        assert wait_until(lambda: ctr("version", check=False).returncode == 0), open(log.name).read()
        tar = _rootfs_tar(busybox_root, f"{base}/bb.tar")
        podman_like = Podman(base, runtime)  # podman writes the docker-archive ctr imports
        podman_like("import", tar, "localhost/busybox:test")
        podman_like("save", "--output", f"{base}/image.tar", "localhost/busybox:test")
        podman_like("rmi", "--all", "--force", check=False)
        ctr("images", "import", "--all-platforms", f"{base}/image.tar")
        ctr.runtime = runtime  # type: ignore[attr-defined]
        yield ctr
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        subprocess.run(["umount", "--recursive", "--quiet", f"{base}/root"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        _remove_cgroups(namespace)


def test_ctr_run_with_runc_binary(containerd):
    """ctr's --runc-binary is the io.containerd.runc.v2 shim's BinaryName option: what a
    runtime handler of containerd's CRI plugin sets, and a Kubernetes RuntimeClass names."""
    proc = containerd(
        "run", "--rm", "--runtime", "io.containerd.runc.v2", "--runc-binary", containerd.runtime,
        "--runc-root", os.path.join(os.path.dirname(containerd.runtime), "runc-root"),
        "localhost/busybox:test", "c1", "sh", "-c", "echo hi $(cat /proc/1/comm); exit 5",
        check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (5, b"hi sbx-init\n"), proc.stderr
    assert containerd("containers", "list", "--quiet").stdout == b""
    runc_root = os.path.join(os.path.dirname(containerd.runtime), "runc-root")
    assert [c for ns in os.listdir(runc_root) for c in containers_in(os.path.join(runc_root, ns))] == []
