"""A lasting container's main command (``command=``, as ``docker run -d``)
and its log (``log=``, ``logs()``), root and rootless: the command's Result
through ``wait()``, commands exec'd into it meanwhile, the container ending
with it; the log's order per stream, its rotation bound under 100 MB, follow,
tail, since, timestamps; nothing left after close or after a SIGKILL of the
owner (the sweep)."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import sandboxlib as sb
from sandboxlib.runtime import statedir

from .conftest import wait_until
from .imagekit import add_image, busybox_layers

QUIET = {"stdin": sb.DEVNULL}


def _log_dirs():
    try:
        return sorted(os.listdir(os.path.join(statedir.state_root(), ".logs")))
    except FileNotFoundError:
        return []


# -- the main command ----------------------------------------------------------------
def check_main_command():
    wait_for_go = "while [ ! -e /tmp/go ]; do sleep 0.01; done; echo done; exit 5"
    with sb.Container(command=["sh", "-c", wait_for_go], log=True) as c:
        assert c.running
        with pytest.raises(sb.TimeoutExpired):
            c.wait(timeout=0.05)  # still waiting for /tmp/go
        meanwhile = c.run(["sh", "-c", "echo execd; touch /tmp/go"], **QUIET)
        r = c.wait(timeout=None)
        ended = not c.running
        with pytest.raises(sb.ContainerStateError):
            c.run(["true"], **QUIET)  # the container ended with its main command
        again = c.wait()  # the same Result again
        lines = list(c.logs())
    return (meanwhile.stdout, r.exit_code, r.verdict.name, r.stdout, again.exit_code, ended, lines, _log_dirs())


def test_main_command_result_exec_and_end(runner):
    meanwhile, code, verdict, out, again, ended, lines, left = runner(check_main_command)
    assert meanwhile == b"execd\n"
    assert (code, verdict, out, again, ended) == (5, "EXITED", None, 5, True)
    assert lines == [("stdout", b"done\n")]
    assert left == []


def check_main_command_fails_to_start():
    c = sb.Container(command=["/nonexistent/cmd"])
    with pytest.raises(sb.SandboxError) as info:
        c.start()
    c.close()
    return type(info.value).__name__, str(info.value), c.running


def test_main_command_that_cannot_start_raises_at_start(runner):
    name, message, running = runner(check_main_command_fails_to_start)
    assert "/nonexistent/cmd" in message and not running, (name, message)


def check_image_command(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(
        store,
        busybox_layers(busybox_rootfs),
        ["bb:1"],
        config={"Entrypoint": ["echo", "ep"], "Cmd": ["default"], "Env": ["PATH=/bin"]},
    )
    with sb.Container(image="bb:1", image_store=path, command=True, log=True) as c:
        r = c.wait()
        default = list(c.logs())
    with sb.Container(image="bb:1", image_store=path, command=["a", "b"], log=True) as c:
        c.wait()
        args = list(c.logs())
    return r.exit_code, default, args


def test_image_entrypoint_and_cmd_as_main_command(runner, store_dir, busybox_root):
    code, default, args = runner(check_image_command, store_dir, busybox_root)
    assert code == 0 and default == [("stdout", b"ep default\n")] and args == [("stdout", b"ep a b\n")]


# -- the log ---------------------------------------------------------------------------
def check_order_per_stream():
    script = "i=0; while [ $i -lt 3000 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done"
    with sb.Container(command=["sh", "-c", script], log=True) as c:
        c.wait()
        entries = list(c.logs())
    out = [d for s, d in entries if s == "stdout"]
    err = [d for s, d in entries if s == "stderr"]
    return out == [b"o%d\n" % i for i in range(3000)], err == [b"e%d\n" % i for i in range(3000)], len(entries)


def test_interleaved_output_keeps_its_order_per_stream(runner):
    assert runner(check_order_per_stream) == (True, True, 6000)


def check_rotation_bound(total):
    # 1000-byte lines at C speed: 100,000 records through 1 MiB files
    script = f"yes $(printf %0999d 7) | head -c {total}; echo tail >&2"
    with sb.Container(command=["sh", "-c", script], log=True, log_max_size="1M", log_max_files=3) as c:
        r = c.wait()
        directory = os.path.dirname(c._log.path)
        sizes = {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)}
        last = list(c.logs(tail=2))
        kept = sum(1 for _ in c.logs())
    return r.exit_code, sizes, last, kept


def test_rotation_bound_holds_under_100_MB(runner):
    code, sizes, last, kept = runner(check_rotation_bound, 100_000_000)
    assert code == 0
    assert sorted(sizes) == ["container.log", "container.log.1", "container.log.2"]
    assert all(size <= 1 << 20 for size in sizes.values()), sizes
    assert last == [("stdout", b"0" * 998 + b"7\n"), ("stderr", b"tail\n")]
    assert 2000 < kept < 3200  # three files of ~1050 records each, not 100,000


def check_follow():
    script = "echo first; while [ ! -e /tmp/next ]; do sleep 0.01; done; echo second >&2; sleep 0.2; echo third"
    seen = []
    with sb.Container(command=["sh", "-c", script], log=True) as c:
        for stream, data in c.logs(follow=True):
            seen.append((stream, data, c.running))
            if data == b"first\n":
                c.run(["touch", "/tmp/next"], **QUIET)  # the next line exists only after we saw this one
        ended = c.wait().exit_code
    return seen, ended


def test_follow_sees_lines_as_they_come_and_ends_with_the_command(runner):
    seen, ended = runner(check_follow)
    assert seen[:2] == [("stdout", b"first\n", True), ("stderr", b"second\n", True)]
    assert [s[:2] for s in seen[2:]] == [("stdout", b"third\n")] and ended == 0


def check_tail_since_timestamps():
    script = "for i in 1 2 3; do echo $i; done; sleep 0.3; echo 4; echo 5 >&2"
    with sb.Container(command=["sh", "-c", script], log=True) as c:
        c.wait()
        everything = list(c.logs(timestamps=True))
        stamps = [d.split(b" ", 1)[0].decode() for _, d in everything]
        middle = datetime.datetime.strptime(stamps[3][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc
        )
        since = list(c.logs(since=middle))
        since_float = list(c.logs(since=middle.timestamp()))
        tail = list(c.logs(tail=2))
        none = list(c.logs(tail=0))
    return stamps, [d.split(b" ", 1)[1] for _, d in everything], since, since_float, tail, none


def test_tail_since_and_timestamps(runner):
    stamps, data, since, since_float, tail, none = runner(check_tail_since_timestamps)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", s) for s in stamps), stamps
    assert data == [b"1\n", b"2\n", b"3\n", b"4\n", b"5\n"]
    assert since == since_float == [("stdout", b"4\n"), ("stderr", b"5\n")]
    assert tail == [("stdout", b"4\n"), ("stderr", b"5\n")] and none == []


def check_format_and_path(path):
    for stale in (path + ".1", path + ".2"):  # a former log's rotated files are not this one's
        with open(stale, "w") as f:
            f.write('{"log":"old\\n","stream":"stdout","time":"2000-01-01T00:00:00.000000000Z"}\n')
    script = "printf 'a\\n\\377b\\n'; head -c 20000 /dev/zero | tr '\\0' x"
    with sb.Container(command=["sh", "-c", script], log=path) as c:
        c.wait()
    with open(path) as f:
        records = [json.loads(line) for line in f]
    after_close = list(c.logs())  # a path outlives the container
    return [(r["stream"], r["log"]) for r in records], sorted(records[0]), after_close, _log_dirs()


def test_json_file_format_long_lines_bytes_and_a_kept_path(runner, store_dir):
    path = os.path.join(store_dir, "app.log")  # (a directory of the mode's user)
    records, keys, after_close, left = runner(check_format_and_path, path)
    assert keys == ["log", "stream", "time"]
    assert records == [("stdout", "a\n"), ("stdout", "\udcffb\n"), ("stdout", "x" * 16384), ("stdout", "x" * 3616)]
    assert after_close == [
        ("stdout", b"a\n"),
        ("stdout", b"\xffb\n"),
        ("stdout", b"x" * 16384),
        ("stdout", b"x" * 3616),
    ]
    assert left == []


# -- nothing left ---------------------------------------------------------------------------
def check_closed_while_running():
    c = sb.Container(command=["sh", "-c", "echo up; sleep 1000"], log=True).start()
    assert wait_until(lambda: list(c.logs()) == [("stdout", b"up\n")])
    directory = os.path.dirname(c._log.path)
    c.close()
    with pytest.raises(sb.ContainerStateError, match="closed"):
        c.logs()
    return os.path.exists(directory), _log_dirs(), c.wait().verdict.name


def test_close_removes_the_log_and_kills_the_command(runner):
    assert runner(check_closed_while_running) == (False, [], "SIGNALED")


OWNER = textwrap.dedent("""
    import sandboxlib as sb
    c = sb.Container(command=["sh", "-c", "echo up; sleep 1000"], log=True).start()
    while not list(c.logs()):
        pass
    print(c.id, c.pid, c._log.path, flush=True)
    import time; time.sleep(1000)
""")


def check_sigkill_of_the_owner():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        ident, init, path = owner.stdout.readline().decode().split()
    finally:
        owner.stdout.close()
    had_log = os.path.exists(path)
    owner.kill()
    owner.wait()
    assert wait_until(lambda: statedir.start_time(int(init)) is None)
    statedir.sweep(statedir.state_root())
    return had_log, os.path.exists(os.path.dirname(path)), ident in _log_dirs()


def test_log_swept_after_a_sigkill_of_the_owner(runner):
    assert runner(check_sigkill_of_the_owner) == (True, False, False)


# -- bad input --------------------------------------------------------------------------
def check_bad_input():
    errors = {}
    with sb.Container() as c:
        with pytest.raises(sb.ContainerStateError, match="log=True") as info:
            c.logs()
        errors["logs"] = str(info.value)
        with pytest.raises(sb.ContainerStateError, match="no main command") as info:
            c.wait()
        errors["wait"] = str(info.value)
    with sb.Container(command=["true"], log=True) as c:
        for name, value in (("tail", -1), ("since", "yesterday")):
            with pytest.raises(sb.ConfigError) as info:
                c.logs(**{name: value})
            errors[name] = info.value.field
        c.wait()
    for options in (
        {"log": True},
        {"command": True},
        {"command": "ls"},
        {"command": []},
        {"command": ["x"], "log_max_size": "1k"},
        {"command": ["x"], "log_max_files": 0},
    ):
        with pytest.raises(sb.ConfigError) as info:
            sb.Container(**options)
        errors[repr(options)] = info.value.field
    with pytest.raises(sb.ConfigError, match="cannot write the log file /nonexistent/dir/app.log") as info:
        sb.Container(command=["true"], log="/nonexistent/dir/app.log").start()
    errors["log path"] = info.value.field
    with pytest.raises(sb.ConfigError) as info:
        sb.run(["true"], command=["true"])
    errors["run"] = info.value.field
    return errors


def test_bad_input(runner):
    errors = runner(check_bad_input)
    assert errors["tail"] == "tail" and errors["since"] == "since" and errors["run"] == "command"
    assert [errors[k] for k in list(errors)[4:-1]] == [
        "log",
        "command",
        "command",
        "command",
        "log_max_size",
        "log_max_files",
        "log",
    ]


def check_detached_without_log():
    script = (
        "import sandboxlib as sb\n"
        "with sb.Container(command=['sh', '-c', 'echo out; echo err >&2; exit 4']) as c:\n"
        "    print(c.wait().exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_without_a_log_the_output_is_not_ours(runner):
    assert runner(check_detached_without_log) == (0, b"4\n", b"")  # detached, as docker run -d


def test_since_is_exact_to_the_microsecond():
    """A datetime (or its float timestamp) names its own microsecond: the float
    product since * 1e9 landed up to ~200 ns past it, after a record logged then."""
    from sandboxlib.runtime.logs import _since_stamp

    for micro in (0, 1, 123456, 999999):
        moment = datetime.datetime(2026, 12, 6, 8, 26, 24, micro, tzinfo=datetime.timezone.utc)
        expected = f"2026-12-06T08:26:24.{micro:06d}000Z"
        assert _since_stamp(moment) == _since_stamp(moment.timestamp()) == expected
