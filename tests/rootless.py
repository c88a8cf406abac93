"""The unprivileged users and the worker process the rootless tests run in.

The worker runs as a user the test run creates, in a private mount
namespace where the interpreter and this checkout are reachable even when
they live under root's 0700 home (only there; the host is not changed)."""

from __future__ import annotations

import os
import pickle
import pwd
import shlex
import stat
import struct
import subprocess
import sys
from typing import Iterable, List, Optional

# sbxtest has /etc/subuid and /etc/subgid ranges (newuidmap path);
# sbxsingle has none (it can map only its own id).
USERS = {"sbxtest": True, "sbxsingle": False}
REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# The variables that say which sandboxlib the suite tests (tests/conftest.py):
# the one installed in a venv (`make test`) or the checkout (SANDBOXLIB_DEV=1).
INSTALLED_VAR, DEV_VAR, IMPORT_PATH_VAR = "SANDBOXLIB_EXPECT_INSTALLED", "SANDBOXLIB_DEV", "SANDBOXLIB_TESTS_PATH"


def import_path() -> str:
    """The sys.path entry subprocesses of the suite import this ``tests`` package
    from (conftest puts it in PYTHONPATH): a directory that holds only a link
    to tests/ when the installed package is tested, so that the checkout's
    sandboxlib cannot shadow it; the checkout itself in development mode."""
    return os.environ[IMPORT_PATH_VAR]


# See conftest.pytest_configure: HTTP(S) off loopback goes nowhere.
NO_EGRESS = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "no_proxy": "localhost,127.0.0.1,::1",
}


def ensure_user(name: str, subids: bool) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    count = "65536" if subids else "0"
    subprocess.run(
        [
            "useradd",
            "--create-home",
            "--shell",
            "/bin/sh",
            "-K",
            f"SUB_UID_COUNT={count}",
            "-K",
            f"SUB_GID_COUNT={count}",
            name,
        ],
        check=True,
    )
    return pwd.getpwnam(name)


def _hidden_paths(paths: Iterable[str], user: pwd.struct_passwd) -> List[str]:
    """Paths the user cannot reach because some parent is not searchable by it."""
    hidden = []
    for path in paths:
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            parent = "/".join(parts[: i - 1]) or "/"
            st = os.stat(parent)
            if not st.st_mode & 0o001 and not (st.st_uid == user.pw_uid and st.st_mode & 0o100):
                hidden.append(path)
                break
    return sorted(set(hidden))


def state_dir(user: pwd.struct_passwd) -> str:
    """The user's state records for this test session (not shared with other runs)."""
    return f"/tmp/sandboxlib-test-{user.pw_name}-{os.getpid()}"


def ping() -> str:
    return "pong"


def private_tun(directory: str) -> str:
    """A node of /dev/net/tun's device (10:200) of the test's own, mode 0666 (the distributions'
    mode; this machine's node is 0600), in a 0700 directory made in ``directory``.
    ``launcher(tun=)`` binds it over /dev/net/tun in the user's mount namespace: a rootless tap
    opens there while the host's node keeps its mode (tests/conftest.py checks it)."""
    home = os.path.join(directory, "tun-node")
    os.mkdir(home, 0o700)
    path = os.path.join(home, "tun")
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(10, 200))
    os.chmod(path, 0o666)
    return path


def launcher(user: pwd.struct_passwd, argv: List[str], tun: Optional[str] = None) -> List[str]:
    """unshare -m ... setpriv ... argv, with hidden paths re-exposed under a 0711 tmpfs
    (and ``tun``, a ``private_tun`` node, bound over /dev/net/tun)."""
    needed = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), REPO, import_path()}
    hidden = _hidden_paths(needed, user)
    steps = [f"mount --bind {shlex.quote(tun)} /dev/net/tun"] if tun else []
    if hidden:
        tops = sorted({"/" + p.split("/")[1] for p in hidden})
        steps.append("mount -t tmpfs -o mode=0755 sbx-stage /mnt")
        for i, path in enumerate(hidden):
            steps.append(f"mkdir /mnt/{i} && mount --rbind {shlex.quote(path)} /mnt/{i}")
        for top in tops:
            steps.append(f"mount -t tmpfs -o mode=0711 sbx-hide {shlex.quote(top)}")
        for i, path in enumerate(hidden):
            steps.append(f"mkdir -p {shlex.quote(path)} && mount --move /mnt/{i} {shlex.quote(path)}")
    env = {
        "HOME": user.pw_dir,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": import_path(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "XDG_RUNTIME_DIR": "",
        "SANDBOXLIB_RUN": state_dir(user),
        **NO_EGRESS,
        **{k: os.environ[k] for k in (INSTALLED_VAR, DEV_VAR, IMPORT_PATH_VAR) if k in os.environ},
    }
    steps.append(
        "exec setpriv --reuid={u} --regid={g} --init-groups --inh-caps=-all env -i {env} {argv}".format(
            u=user.pw_uid,
            g=user.pw_gid,
            env=" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            argv=" ".join(shlex.quote(a) for a in argv),
        )
    )
    return ["unshare", "-m", "--propagation", "private", "sh", "-ec", "\n".join(steps)]


class Worker:
    """A long-lived worker process running as ``user``."""

    def __init__(self, user: pwd.struct_passwd) -> None:
        self.user = user
        argv = launcher(user, [sys.executable, "-m", "tests._worker"])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/")

    def call(self, func, *args):
        """Run ``func(*args)`` (a module-level function) as the user; returns
        (value, leaks) or raises what it raised."""
        data = pickle.dumps((func.__module__, func.__name__, args))
        self.proc.stdin.write(struct.pack("=Q", len(data)) + data)
        self.proc.stdin.flush()
        header = self.proc.stdout.read(8)
        if len(header) < 8:
            raise RuntimeError(f"rootless worker died (exit status {self.proc.wait()})")
        (size,) = struct.unpack("=Q", header)
        ok, value, leaks = pickle.loads(self.proc.stdout.read(size))
        if not ok:
            text = getattr(value, "__traceback_text__", "")
            if text and isinstance(value, AssertionError):
                raise AssertionError(f"{value}\n--- in the rootless worker ---\n{text}")
            raise value
        return value, leaks

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
