"""The command line: ``python -m sandboxlib run ...`` and the ``sandboxlib``
console script, run as subprocesses (root), and once as the unprivileged
user sbxtest.  The exit status is the command's, 124 on a timeout, 125 when
the container cannot be set up, 126/127 when the command cannot be
executed / is not found."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tomllib

from . import rootless
from .conftest import run_cli

REPO = pathlib.Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = shutil.which("sandboxlib", path=os.path.dirname(sys.executable)) or shutil.which("sandboxlib")
INVOCATIONS = {"python -m": [sys.executable, "-m", "sandboxlib"]}
if CONSOLE_SCRIPT:
    INVOCATIONS["console script"] = [CONSOLE_SCRIPT]


@pytest.fixture(params=sorted(INVOCATIONS))
def cli(request):
    """Run ``sandboxlib run ARGS`` one way or the other."""
    prefix = INVOCATIONS[request.param]

    def call(*args: str, input: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, "run", *args], input=input, capture_output=True, timeout=timeout, cwd="/")

    return call


def test_console_script_entry_point():
    """pyproject.toml declares the ``sandboxlib`` command as ``sandboxlib.frontends.cli:main``
    (and the OCI runtime's Python implementation, ``sandboxlib-runtime-python``, which the
    ``sandboxlib-runtime`` command, a C front, runs), and the installed package has it (its
    script is on PATH in the venv)."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    oci = {"sandboxlib-runtime-python": "sandboxlib.oci.cli:main"}
    assert declared == {"sandboxlib": "sandboxlib.frontends.cli:main", **oci}
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts") if e.name == "sandboxlib"] == [
        "sandboxlib.frontends.cli:main"
    ]
    from sandboxlib.frontends import cli

    assert callable(cli.main)
    for prefix in INVOCATIONS.values():
        help_text = subprocess.run([*prefix, "run", "--help"], capture_output=True, text=True, cwd="/")
        assert help_text.returncode == 0 and "--rootfs" in help_text.stdout, help_text


# -- exit status ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "script, status", [("exit 0", 0), ("exit 3", 3), ("exit 255", 255), ("kill -9 $$", 137), ("kill -TERM $$", 143)]
)
def test_exit_status_is_the_commands(cli, script, status):
    proc = cli("--", "sh", "-c", script)
    assert proc.returncode == status, proc
    assert proc.stderr == b""


def test_timeout(cli):
    proc = cli("--timeout", "0.5", "--", "sh", "-c", "sleep 60 & sleep 60; echo not-reached", timeout=30)
    assert proc.returncode == 124, proc
    assert b"timed out" in proc.stderr and b"not-reached" not in proc.stdout


def test_missing_command(cli):
    proc = cli("--", "no-such-command-sbx", "arg")
    assert proc.returncode == 127, proc
    assert proc.stdout == b""
    assert proc.stderr.startswith(b"sandboxlib: ") and b"no-such-command-sbx" in proc.stderr


def test_not_executable():
    proc = run_cli("--", "/etc/passwd")
    assert proc.returncode == 126, proc
    assert b"/etc/passwd" in proc.stderr and b"Permission denied" in proc.stderr


BAD_OPTIONS = [
    (["-v", "/tmp"], [b"--volume", b"/tmp"]),
    (["-v", "/tmp:/data:rx"], [b"--volume", b"/tmp:/data:rx"]),
    (["--volume", "/tmp:/a:ro:extra"], [b"--volume"]),
    (["-v", "/tmp:relative"], [b"relative"]),
    (["-v", "/nonexistent-sbx:/data"], [b"/nonexistent-sbx"]),
    (["--hostname", "bad_host"], [b"hostname", b"bad_host"]),
    (["--hostname=-leading"], [b"hostname", b"-leading"]),
    (["--hostname", "a" * 65], [b"hostname"]),
    (["-e", "NOVALUE"], [b"--env", b"NOVALUE"]),
    (["--tmpfs", "/scratch:12Q"], [b"size", b"12Q"]),
    (["--tmpfs", "scratch"], [b"scratch"]),
    (["--workdir", "relative"], [b"--workdir", b"relative"]),
    (["--user", "nosuchuser-sbx"], [b"user", b"nosuchuser-sbx"]),
    (["--rootfs", "/nonexistent-sbx"], [b"rootfs"]),
    (["--timeout", "0"], [b"--timeout", b"more than 0"]),
    (["--timeout", "-1"], [b"--timeout", b"-1"]),
]


@pytest.mark.parametrize("args, names", BAD_OPTIONS, ids=[" ".join(a)[:40] for a, _ in BAD_OPTIONS])
def test_bad_option(args, names):
    proc = run_cli(*args, "--", "sh", "-c", "echo ran")
    assert proc.returncode == 125, proc
    assert proc.stdout == b"", "the command must not run"
    assert proc.stderr.startswith(b"sandboxlib: "), proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)


def test_no_command():
    proc = run_cli("--")
    assert proc.returncode == 125 and b"CMD" in proc.stderr, proc


def test_setup_failure_is_125(shared_dir):
    proc = run_cli("-v", f"{shared_dir}:/usr/newdir-sbx", "--", "true")
    assert proc.returncode == 125, proc
    assert b"MOUNT" in proc.stderr and b"/usr/newdir-sbx" in proc.stderr and b"mounts[0]" in proc.stderr


# -- options -------------------------------------------------------------------------------
def test_env(cli):
    proc = cli(
        "-e", "FOO=bar", "-e", "EMPTY=", "--env", "EQ=a=b", "--", "sh", "-c", 'echo "$FOO|$EMPTY|${EMPTY+set}|$EQ"'
    )
    assert (proc.returncode, proc.stdout) == (0, b"bar||set|a=b\n"), proc


def test_volume(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # writable by the container's root (an unprivileged host id)
    (data / "in").write_text("from the host\n")
    proc = cli("-v", f"{data}:/data", "--", "sh", "-c", "cat /data/in && echo from-inside > /data/out")
    assert (proc.returncode, proc.stdout) == (0, b"from the host\n"), proc
    assert (data / "out").read_text() == "from-inside\n"
    (data / "out").unlink()
    proc = cli("-v", f"{data}:/data:ro", "--", "sh", "-c", "cat /data/in; echo x > /data/out2")
    assert proc.returncode != 0 and proc.stdout == b"from the host\n", proc
    assert b"Read-only file system" in proc.stderr
    assert not (data / "out2").exists()
    proc = cli("-v", f"{data}:/data:rw", "--", "sh", "-c", "echo y > /data/out3")
    assert proc.returncode == 0 and (data / "out3").read_text() == "y\n", proc


def test_tmpfs(cli):
    proc = cli(
        "--tmpfs",
        "/scratch:1M",
        "--tmpfs",
        "/other",
        "--",
        "sh",
        "-c",
        "grep -E ' /(scratch|other) ' /proc/mounts; echo x > /scratch/f && cat /scratch/f",
    )
    assert proc.returncode == 0, proc
    lines = proc.stdout.decode().splitlines()
    mounts = {line.split()[1]: line.split() for line in lines[:-1]}
    assert sorted(mounts) == ["/other", "/scratch"], lines
    assert mounts["/scratch"][2] == "tmpfs" and "size=1024k" in mounts["/scratch"][3].split(",")
    assert mounts["/other"][2] == "tmpfs"
    assert lines[-1] == "x"


def test_hostname(cli):
    proc = cli("--hostname", "cli-host", "--", "hostname")
    assert (proc.returncode, proc.stdout) == (0, b"cli-host\n"), proc


def test_rootfs_read_only(cli, busybox_root):
    proc = cli(
        "--rootfs",
        busybox_root,
        "--read-only",
        "--",
        "sh",
        "-c",
        "grep ^app: /etc/passwd; ls /bin/busybox; touch /new-file",
    )
    assert proc.returncode == 1, proc
    assert proc.stdout == b"app:x:1000:1000:app:/home/app:/bin/sh\n/bin/busybox\n"
    assert b"Read-only file system" in proc.stderr
    assert not os.path.exists(os.path.join(busybox_root, "new-file"))


def test_user(cli, busybox_root):
    proc = cli("--rootfs", busybox_root, "--read-only", "--user", "app", "--", "sh", "-c", "id -u; id -g; echo $HOME")
    assert (proc.returncode, proc.stdout) == (0, b"1000\n1000\n/home/app\n"), proc
    proc = cli("--rootfs", busybox_root, "--read-only", "-u", "app:extra", "--", "id", "-g")
    assert (proc.returncode, proc.stdout) == (0, b"1001\n"), proc
    proc = cli("--user", "65534:65534", "--", "sh", "-c", "id -u; id -g")
    assert (proc.returncode, proc.stdout) == (0, b"65534\n65534\n"), proc


def test_workdir(cli):
    proc = cli("--workdir", "/tmp", "--", "pwd")
    assert (proc.returncode, proc.stdout) == (0, b"/tmp\n"), proc
    proc = cli("-w", "/nonexistent-sbx", "--", "pwd")
    assert proc.returncode == 125 and b"/nonexistent-sbx" in proc.stderr and b"CHDIR" in proc.stderr, proc


def test_network(cli):
    host_ns = os.readlink("/proc/self/ns/net").encode()
    proc = cli("--network", "host", "--", "readlink", "/proc/self/ns/net")
    assert (proc.returncode, proc.stdout) == (0, host_ns + b"\n"), proc
    proc = cli("--", "sh", "-c", "readlink /proc/self/ns/net; ls /sys/class/net")
    assert proc.returncode == 0, proc
    ns, *interfaces = proc.stdout.decode().split()
    assert ns.encode() != host_ns and interfaces == ["lo"]
    proc = cli("--network", "bogus", "--", "true")  # a named network that does not exist
    assert proc.returncode == 125 and b"--network: no network named 'bogus'" in proc.stderr, proc


def test_no_userns():
    proc = run_cli("--no-userns", "--", "cat", "/proc/self/uid_map")
    assert proc.returncode == 0 and proc.stdout.split() == [b"0", b"0", b"4294967295"], proc
    proc = run_cli("--", "cat", "/proc/self/uid_map")
    assert proc.returncode == 0 and proc.stdout.split() != [b"0", b"0", b"4294967295"], proc


# -- streams --------------------------------------------------------------------------------
def test_stdin_passes_through(cli):
    proc = cli("--", "cat", input=b"data\nmore data\n")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"data\nmore data\n", b""), proc


def test_stdin_through_a_shell_pipe():
    """``echo data | sandboxlib run -- cat``"""
    run = CONSOLE_SCRIPT or f"{sys.executable} -m sandboxlib"
    proc = subprocess.run(["sh", "-c", f"echo data | {run} run -- cat"], capture_output=True, cwd="/", timeout=60)
    assert (proc.returncode, proc.stdout) == (0, b"data\n"), proc


def test_stdout_and_stderr_pass_through(cli):
    proc = cli("--", "sh", "-c", "echo out; echo err >&2; head -c 300000 /dev/zero | tr '\\0' x; exit 5")
    assert proc.returncode == 5
    assert proc.stdout == b"out\n" + b"x" * 300000
    assert proc.stderr == b"err\n"


# -- rootless ---------------------------------------------------------------------------------
def test_rootless_cli(shared_dir):
    user = rootless.ensure_user("sbxtest", True)
    base = [sys.executable, "-m", "sandboxlib", "run"]

    def call(*args: str, input: bytes = b""):
        return subprocess.run(
            rootless.launcher(user, [*base, *args]), input=input, capture_output=True, cwd="/", timeout=60
        )

    proc = call(
        "--hostname",
        "rootless-cli",
        "-e",
        "A=1",
        "--",
        "sh",
        "-c",
        "id -u; hostname; echo $A; cat; exit 3",
        input=b"stdin data\n",
    )
    assert proc.returncode == 3, proc
    assert proc.stdout == b"0\nrootless-cli\n1\nstdin data\n", proc
    proc = call("--", "no-such-command-sbx")
    assert proc.returncode == 127 and b"no-such-command-sbx" in proc.stderr, proc
    proc = call("--no-userns", "--", "true")
    assert proc.returncode == 125 and b"userns" in proc.stderr, proc
    proc = call("--timeout", "0.5", "--", "sleep", "60")
    assert proc.returncode == 124, proc
    proc = call("-v", f"{shared_dir}:/shared:ro", "--", "sh", "-c", "touch /shared/x")
    assert proc.returncode == 1 and b"Read-only file system" in proc.stderr, proc


# Every malformed -v spec is reported under the option's name (the user never
# wrote "target" or "mounts[0]").
BAD_VOLUMES = ["/tmp", "/tmp:/data:rx", "/tmp:relative", "/nonexistent-sbx:/data", "/tmp:/"]


@pytest.mark.parametrize("spec", BAD_VOLUMES)
def test_bad_volume_names_the_option(spec):
    proc = run_cli("-v", spec, "--", "echo", "ran")
    assert proc.returncode == 125, proc
    assert proc.stdout == b""
    assert b"--volume" in proc.stderr and spec.encode() in proc.stderr, proc.stderr


# -- what a new user tries -------------------------------------------------------------
def test_version():
    from sandboxlib.version import __version__

    proc = subprocess.run([*INVOCATIONS["python -m"], "--version"], capture_output=True, text=True, cwd="/")
    assert (proc.returncode, proc.stdout) == (0, f"sandboxlib {__version__}\n"), proc


def test_run_help_lists_the_exit_codes():
    proc = subprocess.run([*INVOCATIONS["python -m"], "run", "--help"], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc
    for code in ("124", "125", "126", "127"):
        assert f"\n  {code}  " in proc.stdout, (code, proc.stdout)


def test_errors_in_run_show_runs_usage():
    proc = run_cli("--bogus", "--", "true")
    assert proc.returncode == 2 and proc.stderr.startswith(b"usage: sandboxlib run "), proc
    assert b"unrecognized arguments: --bogus" in proc.stderr
    proc = run_cli("--timeout", "0", "--", "true")
    assert proc.returncode == 125 and b"See 'sandboxlib run --help'." in proc.stderr, proc


def test_a_command_without_dashes_gets_a_hint(tmp_path):
    store = str(tmp_path / "store")
    proc = run_cli("--store", store, "--pull", "never", "echo", "hi")  # (not from Docker Hub: loopback only)
    assert proc.returncode == 125 and proc.stdout == b"", proc
    assert b"no image 'echo' in the store" in proc.stderr, proc
    assert b"put it after --: sandboxlib run [OPTIONS] -- echo hi" in proc.stderr, proc
    proc = run_cli("--store", store, "--pull", "never", "no-such-command-sbx")
    assert proc.returncode == 125 and b"no image 'no-such-command-sbx' in the store" in proc.stderr, proc
    assert b"after --" not in proc.stderr, proc


def test_cap_add_and_cap_drop(cli):
    status = ["grep", "^CapEff", "/proc/self/status"]
    dropped = cli("--cap-drop", "ALL", "--", *status)
    assert (dropped.returncode, dropped.stdout) == (0, b"CapEff:\t0000000000000000\n"), dropped
    added = cli("--cap-drop", "ALL", "--cap-add", "NET_RAW", "--", *status)
    assert (added.returncode, added.stdout) == (0, b"CapEff:\t0000000000002000\n"), added
    bad = cli("--cap-add", "BOGUS", "--", "true")
    assert bad.returncode == 125 and b"--cap-add" in bad.stderr and bad.stdout == b"", bad


def test_env_file(cli, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nA=1\n\nB=x=y\nSBX_FROM_HOST\nSBX_NOT_SET\n")
    os.environ["SBX_FROM_HOST"] = "host value"
    try:
        proc = cli(
            "--env-file",
            str(env_file),
            "-e",
            "A=2",
            "--",
            "sh",
            "-c",
            'echo "$A|$B|$SBX_FROM_HOST|${SBX_NOT_SET-unset}"',
        )
    finally:
        del os.environ["SBX_FROM_HOST"]
    assert (proc.returncode, proc.stdout) == (0, b"2|x=y|host value|unset\n"), proc
    missing = cli("--env-file", str(tmp_path / "nope"), "--", "true")
    assert missing.returncode == 125 and b"--env-file" in missing.stderr, missing
