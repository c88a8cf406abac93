"""Process hygiene and streams: what a command inherits (fds, signals,
environment, limits, identity), how it ends, and its stdio."""
from __future__ import annotations

import os
import resource
import signal
import sys
import subprocess
import tempfile

import pytest

import sandboxlib as sb


# -- hygiene --------------------------------------------------------------
def check_only_stdio_fds():
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_r, True)
    os.set_inheritable(leak_w, True)
    try:
        r = sb.run(["sh", "-c", "ls /proc/self/fd"])
    finally:
        os.close(leak_r)
        os.close(leak_w)
    fds = sorted(int(x) for x in r.stdout.split())
    # ls's own directory fd aside, only 0, 1, 2
    assert fds[:3] == [0, 1, 2] and len(fds) <= 4, fds
    return fds


def test_only_stdio_fds(runner):
    runner(check_only_stdio_fds)


def check_signals_reset():
    with sb.Container() as c:
        status = c.run(["cat", "/proc/self/status"]).stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    assert int(fields["SigIgn"], 16) == 0, fields["SigIgn"]  # CPython ignores SIGPIPE here


def test_signals_reset(runner):
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # the premise
    runner(check_signals_reset)


def check_environment():
    r = sb.run(["env"], env={"A": "1", "B": "two words"}, hostname="envbox")
    env = dict(line.split("=", 1) for line in r.stdout.decode().splitlines())
    assert env == {"A": "1", "B": "two words", "PATH": sb.container.DEFAULT_PATH, "HOME": "/root",
                   "TERM": "xterm", "HOSTNAME": "envbox"}, env
    with sb.Container(env={"A": "1"}) as c:
        env = dict(line.split("=", 1) for line in c.run(["env"], env={"A": "2", "C": "3"}).stdout.decode().splitlines())
    assert env["A"] == "2" and env["C"] == "3"
    with pytest.raises(sb.ConfigError):
        sb.run(["true"], env={"A=B": "1"})


def test_environment(runner):
    os.environ["SANDBOXLIB_TEST_SECRET"] = "host-only"
    try:
        runner(check_environment)
    finally:
        del os.environ["SANDBOXLIB_TEST_SECRET"]


def check_rlimits():
    limits = sb.Limits(nofile=(256, 512), core=0, fsize="1M", stack=(8 << 20, 16 << 20))
    text = sb.run(["cat", "/proc/self/limits"], limits=limits).stdout.decode()
    rows = {line[:26].strip(): line[26:].split()[:2] for line in text.splitlines()[1:]}
    assert rows["Max open files"] == ["256", "512"], rows
    assert rows["Max core file size"] == ["0", "0"]
    assert rows["Max file size"] == [str(1 << 20), str(1 << 20)]
    assert rows["Max stack size"] == [str(8 << 20), str(16 << 20)]
    text = sb.run(["cat", "/proc/self/limits"], limits=sb.Limits(nproc=(100, 200))).stdout.decode()
    rows = {line[:26].strip(): line[26:].split()[:2] for line in text.splitlines()[1:]}
    assert rows["Max processes"] == ["100", "200"], rows
    r = sb.run(["dd", "if=/dev/zero", "of=/tmp/big", "bs=1M", "count=2"], limits=sb.Limits(fsize="1M"))
    assert (r.signal, r.exit_code) == (signal.SIGXFSZ, 128 + signal.SIGXFSZ), r


def test_rlimits(runner):
    runner(check_rlimits)


def test_rlimit_above_the_hosts_hard_limit_is_refused():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with pytest.raises(sb.SetupError) as info:
        sb.run(["true"], limits=sb.Limits(nofile=(hard + 1, hard + 1)))
    assert info.value.step == "RLIMIT" and "nofile" in str(info.value)
    with pytest.raises(sb.ConfigError) as info:
        sb.Limits(nofile=(10, 5)).rlimits()
    assert info.value.field == "limits.nofile"


def check_cwd_and_user(root):
    with sb.Container(rootfs=root, read_only=True, cwd="/etc") as c:
        assert c.run(["pwd"]).stdout == b"/etc\n"
        assert c.run(["pwd"], cwd="/bin").stdout == b"/bin\n"
        assert c.run(["id", "-u"], user="1000:1000").stdout == b"1000\n"
        out = c.run(["sh", "-c", "id -u; id -g; echo $HOME"], user="app").stdout.split()
        assert out == [b"1000", b"1000", b"/home/app"], out
        return c.run(["id", "-G"], user="app").stdout.split()


def check_unknown_user(root):
    with pytest.raises(sb.ConfigError) as info:
        sb.run(["true"], rootfs=root, read_only=True, user="nosuchuser")
    return info.value.field


def test_unknown_user(runner, busybox_root):
    assert runner(check_unknown_user, busybox_root) == "user"


def test_cwd_and_user(runner, busybox_root):
    groups = runner(check_cwd_and_user, busybox_root)
    # Supplementary groups from /etc/group where setgroups is allowed (root);
    # rootless, setgroups is denied and the command keeps the init's group,
    # the container's gid 0, which is the caller's own group.
    assert groups == ([b"1000", b"1001"] if runner.mode == "root" else [b"1000", b"0"]), groups


def check_unmapped_user_rejected(root):
    with pytest.raises(sb.ConfigError) as info:
        sb.run(["true"], rootfs=root, read_only=True, user="app")
    return info.value.field


def test_unmapped_user_rejected(single_id_runner, busybox_root):
    assert single_id_runner(check_unmapped_user_rejected, busybox_root) == "user"


# -- how commands end -------------------------------------------------------
def check_exit_codes_and_signals():
    r = sb.run(["sh", "-c", "exit 3"])
    assert (r.exit_code, r.signal, r.timed_out) == (3, None, False), r
    r = sb.run(["sh", "-c", "kill -9 $$"])
    assert (r.exit_code, r.signal) == (137, signal.SIGKILL), r
    with sb.Container() as c:
        p = c.spawn(["sleep", "100"])
        p.kill()
        assert p.wait(10) == -signal.SIGKILL
        p = c.spawn(["sleep", "100"])
        p.terminate()
        assert p.wait(10) == -signal.SIGTERM


def test_exit_codes_and_signals(runner):
    runner(check_exit_codes_and_signals)


def check_zombies_reaped():
    with sb.Container() as c:
        c.run(["sh", "-c", "(sleep 0.1 &) ; exit 0"])
        states = c.run(["sh", "-c", "sleep 0.5; cat /proc/[0-9]*/stat"]).stdout.decode()
    assert " Z " not in states, states


def test_zombies_reaped(runner):
    runner(check_zombies_reaped)


def check_timeouts_kill_grandchildren():
    with sb.Container() as c:
        r = c.run(["sh", "-c", "sleep 100 & sleep 100"], timeout=0.5)
        assert r.timed_out and r.signal == signal.SIGKILL and r.duration < 30, r
        left = c.run(["sh", "-c", "ps -o comm | grep -c sleep || true"]).stdout.strip()
        assert left == b"0", left
    r = sb.run(["sh", "-c", "sleep 100 & sleep 100"], timeout=0.5)
    assert r.timed_out and r.duration < 30, r


def test_timeouts_kill_grandchildren(runner):
    runner(check_timeouts_kill_grandchildren)


# -- streams ----------------------------------------------------------------
def check_streams():
    assert sb.run(["cat"], input=b"fed").stdout == b"fed"
    r = sb.run(["sh", "-c", "echo out; echo err >&2"], stdout=sb.DEVNULL)
    assert (r.stdout, r.stderr) == (None, b"err\n")
    r = sb.run(["sh", "-c", "echo out; echo err >&2"], stderr=sb.STDOUT)
    assert (r.stdout, r.stderr) == (b"out\nerr\n", None)
    with tempfile.TemporaryFile() as f:
        sb.run(["echo", "to a file"], stdout=f)
        sb.run(["echo", "to an fd"], stdout=f.fileno())
        f.seek(0)
        assert f.read() == b"to a file\nto an fd\n"
    with sb.Container() as c:
        p = c.spawn(["tr", "a-z", "A-Z"], stdin=sb.PIPE, stdout=sb.PIPE)
        p.stdin.write(b"by hand")
        p.stdin.close()
        assert p.stdout.read() == b"BY HAND"
        assert p.wait(10) == 0


def test_streams(runner):
    runner(check_streams)


def test_inherited_stdout(tmp_path):
    out = tmp_path / "out"
    code = "import sandboxlib as sb; sb.run(['echo', 'inherited'], stdout=None)"
    with open(out, "wb") as f:
        import subprocess
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True)
    assert out.read_bytes() == b"inherited\n"


def check_hundred_megabytes():
    size = 100_000_000
    r = sb.run(["sh", "-c", f"head -c {size} /dev/zero & head -c {size} /dev/zero >&2; wait"])
    assert (len(r.stdout), len(r.stderr), r.exit_code) == (size, size, 0)


def test_hundred_megabytes_both_ways(runner):
    runner(check_hundred_megabytes)


def check_process_api():
    import psutil
    with sb.Container() as c:
        p = c.spawn(["sh", "-c", "echo early; sleep 1; echo late"], stdout=sb.PIPE)
        assert psutil.Process(p.pid).name() == "sh" and p.container_pid > 1
        assert p.poll() is None
        with pytest.raises(sb.TimeoutExpired):
            p.wait(0.2)
        with pytest.raises(sb.TimeoutExpired) as info:
            p.communicate(timeout=0.2)
        assert info.value.stdout == b"early\n"
        out, _ = p.communicate(timeout=30)  # goes on where it stopped
        assert out == b"early\nlate\n" and p.returncode == 0
        p = c.spawn(["sleep", "100"])
        p.send_signal(signal.SIGUSR1)
        assert p.wait(10) == -signal.SIGUSR1 and p.poll() == -signal.SIGUSR1


def test_process_api(runner):
    runner(check_process_api)


IGNORE_32 = r"""
#include <stdint.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
struct ksa { void (*h)(int); unsigned long f; void (*r)(void); uint64_t m; };
int main(int argc, char **argv) {
    struct ksa ign = {SIG_IGN, 0, 0, 0};
    syscall(SYS_rt_sigaction, 32, &ign, 0, 8);  /* libc refuses: it reserves 32-34 */
    execv(argv[1], argv + 1);
    return 127;
}
"""


def test_reserved_signals_ignored_by_the_host_are_reset(tmp_path):
    """A host process may ignore a signal its libc reserves (32-34): the
    command still gets the default disposition."""
    source, wrapper = tmp_path / "ignore32.c", tmp_path / "ignore32"
    source.write_text(IGNORE_32)
    subprocess.run(["cc", "-o", str(wrapper), str(source)], check=True)
    code = ("import sandboxlib as sb; "
            "print([l for l in sb.run(['cat', '/proc/self/status']).stdout.decode().splitlines() "
            "if l.startswith('SigIgn')][0].split()[1])")
    out = subprocess.run([str(wrapper), sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    assert int(out.stdout, 16) == 0, out
