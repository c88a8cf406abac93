"""``Container.call``: values in (cloudpickle) and out (the safe encoding),
remote exceptions, crashes, timeouts, the warm fork server, sessions, the
``sandboxed`` decorator, and a sandbox that lies on the channel.

Root and rootless (``runner``): the checks are module-level functions."""

from __future__ import annotations

import fractions
import io
import os
import signal
import sys
import time

import numpy as np
import pytest

import sandboxlib as sb
from sandboxlib.calls import forkserver, session

SAFE_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    255,
    -128,
    2**200,
    -(2**70),
    7**20000,
    1.5,
    float("inf"),
    1 + 2j,
    "",
    "häß\udc80",
    b"\x00\xff",
    [],
    (),
    {},
    set(),
    frozenset({1}),
    [1, (2, {"a": [b"x", {3.0}]})],
    {1: None, "k": (True,), (1, 2): frozenset()},
]


def _in_container(check, *args):
    with sb.Container() as c:
        return check(c, *args)


def _processes(c) -> list:
    """Command names of the container's processes, as its /proc shows them."""
    return sorted(c.run(["sh", "-c", "cat /proc/[0-9]*/comm"], stdin=sb.DEVNULL).stdout.decode().split())


# -- values ---------------------------------------------------------------------------------------
def check_values(c):
    scale = 3
    out = [
        c.call(pow, 2, 10),
        c.call(lambda xs: sorted(xs), [3, 1]),
        c.call(lambda: scale * 2),
        c.call(dict, a=1, b=[2]),
        c.invoke(divmod, (7, 2)),
    ]
    echoed = c.call(lambda *values: values, *SAFE_VALUES)
    return out, echoed


def test_values_in_and_out(runner):
    out, echoed = runner(_in_container, check_values)
    assert out == [1024, [1, 3], 6, {"a": 1, "b": [2]}, (3, 1)]
    assert echoed == tuple(SAFE_VALUES)
    assert [type(v) for v in echoed] == [type(v) for v in SAFE_VALUES]


def check_unsafe_result(c):
    with pytest.raises(
        sb.UnsafeResultError, match="fractions.Fraction is not one of the safe result types.*trust_result=True"
    ) as info:
        c.call(fractions.Fraction, 1, 3)
    assert isinstance(info.value, TypeError) and isinstance(info.value, sb.CallError)
    with pytest.raises(sb.UnsafeResultError, match=r"numpy.ndarray of dtype object .*\.tolist\(\) or \.item\(\)"):
        c.call(lambda: np.array([object()]))
    return c.invoke(fractions.Fraction, (1, 3), trust_result=True), c.invoke(_Point, (1, 2), trust_result=True)


class _Point:
    """A class of a module the sandbox cannot import: pickled by value."""

    def __init__(self, x, y):
        self.xy = (x, y)


NUMPY_VALUES = [
    np.arange(12, dtype=np.int32).reshape(3, 4),
    np.arange(10.0)[::3],
    np.zeros((0, 2)),
    np.array(["a", "bcd"]),
    np.array([b"x", b"yz"]),
    np.array([True, False]),
    np.array(7),
    np.array(["2024-01-02"], dtype="datetime64[ns]"),
    np.array([1 + 2j], dtype=">c8"),
    np.float64(2.5),
    np.int8(-3),
    np.bool_(True),
    np.str_("s"),
    np.datetime64("2024-01-02"),
]


def check_numpy(c):
    """What came back, compared here (the rootless worker's pickle of the answer keeps no byte order)."""
    return [
        (
            type(v),
            v.dtype.str,
            v.shape,
            np.array_equal(v, e) and v.tolist() == e.tolist(),
            not isinstance(v, np.ndarray) or v.flags.writeable,
        )
        for v, e in zip(c.call(lambda: NUMPY_VALUES), NUMPY_VALUES)
    ]


def test_numpy_values_come_back_without_trust(runner):
    seen = runner(_in_container, check_numpy)
    assert seen == [(type(e), e.dtype.str, e.shape, True, True) for e in NUMPY_VALUES]


def _numpy_record(spec, shape, data: bytes, scalar=False) -> bytes:
    import struct

    header = forkserver.encode(spec if scalar else (spec, shape))
    return (b"a" if scalar else b"A") + header + struct.pack(">I", len(data)) + data


@pytest.mark.parametrize(
    "record",
    [
        _numpy_record("|O8", (1,), b"\x01" * 8),  # object pointers from raw bytes
        _numpy_record("|O8", (), b"\x01" * 8, scalar=True),
        _numpy_record("|V8", (1,), b"\x00" * 8),  # void: fields
        _numpy_record("[('a', '<i4')]", (1,), b"\x00" * 4),
        _numpy_record("<U0", (10**9,), b""),  # no bytes per item
        _numpy_record("<f8", (2,), b"\x00" * 8),  # the shape needs 16 bytes
        _numpy_record("<f8", (1,), b"\x00" * 16),
        _numpy_record("<f8", (-1,), b"\x00" * 8),
        _numpy_record("<f8", (0, 10**30), b""),
        _numpy_record("<f8", (1,) * 40, b"\x00" * 8),  # more dimensions than numpy has
        _numpy_record("<f8", [1], b"\x00" * 8),  # a list is no shape
        _numpy_record("<f8", (1.0,), b"\x00" * 8),
        _numpy_record("f8", (1,), b"\x00" * 8),  # not numpy's own spelling
        _numpy_record("<f8", (1,), b"\x00" * 4, scalar=True),
        _numpy_record(("<f8", (1,)), (1,), b"\x00" * 8),
        b"A" + forkserver.encode(("<f8", (1,))) + b"\x00\x00\x00\x10" + b"\x00" * 8,  # truncated
    ],
)
def test_a_forged_numpy_record_is_refused(record):
    """A bad dtype, shape or size: ValueError, nothing run or read past the data."""
    with pytest.raises(ValueError):
        forkserver.decode(record)
    with pytest.raises(sb.CallCrashed, match="protocol"):
        session.decode_outcome(b"V" + record, False, None)


def test_unsafe_result_needs_trust(runner):
    fraction, point = runner(_in_container, check_unsafe_result)
    assert fraction == fractions.Fraction(1, 3) and point.xy == (1, 2)


# -- exceptions ----------------------------------------------------------------------------------
class CustomError(Exception):
    pass


def _raise(kind, *args):
    def inner():
        raise kind(*args)

    inner()


def check_exceptions(c):
    seen = {}
    with pytest.raises(ValueError) as info:
        c.call(_raise, ValueError, "bad", 3)
    error = info.value
    seen["builtin"] = (
        type(error).__name__,
        error.args,
        "in inner" in error.remote_traceback,
        "forkserver" in error.remote_traceback or "outcome_of" in error.remote_traceback,
    )
    with pytest.raises(sb.RemoteError) as info:
        c.call(_raise, CustomError, "custom")
    seen["custom"] = (info.value.type_name.endswith("CustomError"), "in inner" in str(info.value), info.value.message)
    for kind in (SystemExit, KeyboardInterrupt):  # never raised as such in the host
        with pytest.raises(sb.RemoteError):
            c.call(_raise, kind, 1)
    with pytest.raises(OSError) as info:
        c.call(open, "/nonexistent/file")
    seen["oserror"] = (type(info.value).__name__, info.value.errno)
    with pytest.raises(CustomError):
        c.invoke(_raise, (CustomError, "trusted"), trust_result=True)
    with pytest.raises(sb.RemoteError, match="<object"):  # unsafe args: their repr
        c.call(_raise, ValueError, object())
    return seen


def test_remote_exceptions(runner):
    seen = runner(_in_container, check_exceptions)
    assert seen["builtin"] == ("ValueError", ("bad", 3), True, False)
    assert seen["custom"] == (True, True, "custom")
    assert seen["oserror"] == ("FileNotFoundError", 2)


# -- output, fresh processes, the warm server --------------------------------------------------------
def _talk():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    os.system("echo from a child")
    return os.getpid()


def check_output_and_fresh_processes(c):
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        pid1 = c.call(_talk)
    finally:
        sys.stdout, sys.stderr = saved
    server = c._calls.pid
    pid2 = c.call(os.getpid)
    c.call(setattr, os, "marker", 1)
    kept = c.call(hasattr, os, "marker")
    return out.getvalue(), err.getvalue(), pid1 != pid2, server == c._calls.pid, kept


def test_output_and_a_fresh_process_per_call(runner):
    out, err, fresh, same_server, kept = runner(_in_container, check_output_and_fresh_processes)
    assert out == "to stdout\nfrom a child\n" and err == "to stderr\n"
    assert fresh and same_server and not kept


def check_crashes(c):
    server = c.call(os.getppid)
    with pytest.raises(sb.CallCrashed) as exited:
        c.call(os._exit, 3)
    with pytest.raises(sb.CallCrashed) as killed:
        c.call(lambda: os.kill(os.getpid(), signal.SIGKILL))
    survived = c.call(os.getppid) == server
    return (exited.value.exit_code, exited.value.signal), (killed.value.exit_code, killed.value.signal), survived


def test_a_crash_does_not_kill_the_server(runner):
    exited, killed, survived = runner(_in_container, check_crashes)
    assert exited == (3, None) and killed == (None, signal.SIGKILL) and survived


def _sleep_with_child(seconds):
    os.system(f"sleep {seconds} &")
    time.sleep(seconds)


def _leftovers(c) -> list:
    """What a timed-out call could have left: its sleep, or more interpreters
    than the server and its spare process."""
    names = _processes(c)
    pythons = [n for n in names if n.startswith("python")]
    return [n for n in names if n == "sleep"] + (pythons if len(pythons) > 2 else [])


def check_timeout(c):
    c.call(int)
    start = time.monotonic()
    with pytest.raises(sb.CallTimeout) as info:
        c.invoke(_sleep_with_child, (60,), timeout=0.5)
    took = time.monotonic() - start
    deadline = time.monotonic() + 10  # killed already; their exit may still be in progress
    while _leftovers(c) and time.monotonic() < deadline:
        time.sleep(0.05)
    return info.value.timeout, took < 30, _leftovers(c), c.call(pow, 3, 2), isinstance(info.value, TimeoutError)


def test_timeout_kills_the_call_and_what_it_started(runner):
    timeout, quick, left, later, is_timeout = runner(_in_container, check_timeout)
    assert timeout == 0.5 and quick and left == [] and later == 9 and is_timeout


def check_preload(c):
    c.preload(["json", "decimal"])
    return c.call(lambda: sorted(m for m in ("json", "decimal") if m in sys.modules))


def test_preload(runner):
    assert runner(_in_container, check_preload) == ["decimal", "json"]


def test_preload_rejects_bad_names():
    with sb.Container() as c:
        with pytest.raises(sb.ConfigError, match=r"preload\[1\]"):
            c.preload(["json", "not a module"])
        with pytest.raises(sb.ConfigError, match="preload"):
            c.preload("json")
        with pytest.raises(
            sb.ConfigError, match="preload: cannot preload 'no_such_module_xyz' in the sandbox: ModuleNotFoundError"
        ):
            c.preload(["json", "no_such_module_xyz"])
        assert c.call(pow, 2, 3) == 8


def test_call_needs_a_running_container():
    c = sb.Container()
    with pytest.raises(sb.ContainerStateError):
        c.call(int)
    with c:
        pass
    with pytest.raises(sb.ContainerStateError):
        c.call(int)


# -- a rootfs image with its own Python ------------------------------------------------------------
PREFIX = os.path.realpath(sys.prefix)
IMAGE_BINDS = [d for d in ("/usr", "/lib", "/lib64") if os.path.isdir(d)] + [PREFIX]


@pytest.fixture(scope="module")
def python_image(shared_dir):
    """busybox plus the host's libraries and interpreter, bound at their paths."""
    from .conftest import make_busybox_rootfs

    root = make_busybox_rootfs(str(shared_dir / "python-image"))
    for path in IMAGE_BINDS:
        os.makedirs(root + path, exist_ok=True)
    return root


def check_image_python(root):
    mounts = [sb.Mount.bind(d, d, read_only=True) for d in IMAGE_BINDS]
    with sb.Container(rootfs=root, mounts=mounts, env={"PATH": f"{PREFIX}/bin:/bin"}) as c:
        return c.call(lambda: (sys.executable, sorted(os.listdir("/bin"))[:1]))


def test_an_image_with_a_compatible_python(runner, python_image):
    executable, listing = runner(check_image_python, python_image)
    assert executable.endswith("python3") and listing == ["["]


def check_no_python(rootfs, store_path):
    from .imagekit import add_image, busybox_layers

    store = sb.ImageStore(store_path)
    add_image(store, busybox_layers(rootfs), ["nopython:1"], config={"Env": ["PATH=/bin"]})
    seen = []
    for options in ({"rootfs": rootfs}, {"image": "nopython:1", "image_store": store_path}):
        with sb.Container(**options) as c:
            with pytest.raises(sb.NoPythonError) as info:
                c.call(pow, 2, 3)
            seen.append(str(info.value))
    return seen


def test_call_without_python_in_the_container_says_so(runner, busybox_root, store_dir):
    for message in runner(check_no_python, busybox_root, store_dir):
        assert message.startswith("call() needs a Python interpreter in the container: 'python3' is not there")


# -- sessions -------------------------------------------------------------------------------------------
def check_session(c):
    with c.session() as s:
        s.exec("import os\nx = 41")
        shown = s.exec("x + 1")
        s.call(setattr, os, "marker", 2)
        kept = s.call(getattr, os, "marker")
        pid = s.call(os.getpid)
        with pytest.raises(ZeroDivisionError):
            s.exec("1 / 0")
        still = s.exec("x")
        with pytest.raises(sb.CallTimeout):
            s.exec("import time; time.sleep(60)", timeout=0.5)
        dead = s.alive
    with c.session() as fresh:
        forgotten = fresh.exec("'x' in globals()")
    return shown, kept, pid == c.call(os.getppid), still, dead, forgotten


def test_session_keeps_state(runner):
    shown, kept, same_pid_as_call_parent, still, dead, forgotten = runner(_in_container, check_session)
    assert (shown, kept, still, dead, forgotten) == ("42", 2, "41", False, "False")
    assert not same_pid_as_call_parent  # a session is its own interpreter


# -- the sandboxed decorator ---------------------------------------------------------------------------
def _twice(x):
    return x * 2


def check_sandboxed():
    fn = sb.sandboxed(timeout=5, preload=["json"])(_twice)
    hostname = sb.sandboxed(lambda: os.uname().nodename)
    try:
        return fn(21), fn("ab"), fn.__name__, hostname() != os.uname().nodename
    finally:
        fn.close()
        hostname.close()


def test_sandboxed_decorator(runner):
    assert runner(check_sandboxed) == (42, "abab", "_twice", True)


def test_sandboxed_options_are_checked():
    with pytest.raises(sb.ConfigError, match="network"):
        sb.sandboxed(network="yes")
    with pytest.raises(sb.ConfigError, match="preload"):
        sb.sandboxed(preload=["1x"])


def _hog() -> int:
    block = bytearray(1 << 30)  # more than the limit: the kernel's OOM killer ends the call
    return len(block)


def check_out_of_memory() -> dict:
    with sb.Container(limits=sb.Limits(memory="64M", memory_swap="64M")) as c:
        try:
            c.call(_hog)
        except sb.CallCrashed as crash:
            out = {"verdict": crash.verdict, "signal": crash.signal}
        else:
            out = {"verdict": "returned"}
        out["after"] = c.call(pow, 2, 10)  # the fork server survives the call it lost
    return out


def test_a_call_killed_for_memory_says_so():
    out = check_out_of_memory()
    assert out == {"verdict": sb.Verdict.OOM, "signal": signal.SIGKILL, "after": 1024}, out


def check_memory_option() -> str:
    try:
        fn = sb.sandboxed(memory="64M")(pow)
        return str(fn(2, 3))
    except sb.UnsupportedError as err:
        return "UnsupportedError: " + str(err)


def test_sandboxed_memory_option(runner):
    # a cgroup limit: root has it; the rootless test user has no delegated cgroup and is refused
    out = runner(check_memory_option)
    if runner.rootless:
        assert out.startswith("UnsupportedError") and "delegat" in out, out
    else:
        assert out == "8"


# -- a lying sandbox ---------------------------------------------------------------------------------------
EVIL = """
import gc, os, pickle, struct
server = next(o for o in gc.get_objects() if type(o).__name__ == "Server")
class Evil:
    def __reduce__(self):
        return (os.system, ({cmd!r},))
body = b"P" + pickle.dumps(Evil())
os.write(server.chan_out, struct.pack(">cI", b"R", len(body)) + body)
"""


def check_forged_pickle(c, marker):
    with c.session() as s:
        with pytest.raises(sb.CallCrashed, match="protocol"):
            s.exec(EVIL.format(cmd=f"touch {marker}"))
        return s.alive, os.path.exists(marker)


def test_a_forged_pickle_is_never_loaded(runner, shared_dir):
    marker = str(shared_dir / f"pwned-{runner.mode}")
    alive, pwned = runner(_in_container, check_forged_pickle, marker)
    assert not pwned and not alive


class _Evil:
    """Pickles to a call of os.system(cmd): whoever unpickles it runs cmd."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def forged_exception(marker: str) -> bytes:
    """An X outcome (an exception record) whose pickle slot holds _Evil."""
    import pickle

    record = (
        "builtins",
        "ValueError",
        ("forged",),
        "forged",
        "Traceback: forged\n",
        pickle.dumps(_Evil(f"touch {marker}")),
    )
    return b"X" + forkserver.encode(record)


FORGED_X = """
import gc, os, struct
server = next(o for o in gc.get_objects() if type(o).__name__ == "Server")
body = {body!r}
os.write(server.chan_out, struct.pack(">cI", b"R", len(body)) + body)
"""


def check_forged_exception(c, marker):
    """A lying sandbox sends an exception outcome carrying a pickle for a call
    that did not trust its result: the host rebuilds the exception from the
    safe fields and never unpickles."""
    with c.session() as s:
        try:
            s.exec(FORGED_X.format(body=forged_exception(marker)))
        except ValueError as err:
            raised = (type(err).__name__, str(err))
        else:
            raised = None
    return raised, os.path.exists(marker)


def test_a_forged_exception_pickle_is_never_loaded(runner, shared_dir):
    import shutil
    import tempfile

    open_dir = tempfile.mkdtemp(dir=str(shared_dir), prefix="forged-")
    os.chmod(open_dir, 0o777)  # the rootless caller could write the marker too
    try:
        raised, pwned = runner(_in_container, check_forged_exception, os.path.join(open_dir, "pwned"))
    finally:
        shutil.rmtree(open_dir)
    assert not pwned, "the host unpickled an untrusted exception record"
    assert raised == ("ValueError", "forged")


def test_an_untrusted_exception_record_is_rebuilt_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    _, error = session.decode_outcome(forged_exception(str(marker)), False, None)
    assert type(error) is ValueError and error.args == ("forged",) and not marker.exists()


def test_an_unknown_tag_inside_a_value_is_refused(tmp_path):
    """Every tag byte the safe encoding does not define, inside a list and
    inside an exception record, followed by a length and a pickle that
    would run code: ValueError (the protocol broken), nothing run."""
    import pickle
    import struct

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(f"touch {marker}"))
    items = forkserver.encode(("builtins", "ValueError", (), "m", "t"))[5:]  # without the tuple's header
    for tag in sorted(set(range(256)) - set(b"N?IDJSBLUEZMAa")):
        inner = bytes([tag]) + struct.pack(">I", len(evil)) + evil
        with pytest.raises(ValueError):
            forkserver.decode(b"L" + struct.pack(">I", 1) + inner)
        with pytest.raises(sb.CallCrashed, match="protocol"):
            session.decode_outcome(b"X" + b"U" + struct.pack(">I", 6) + items + inner, False, None)
    assert not marker.exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Z",
        b"I\x00\x00\x00\x02-",
        b"L\xff\xff\xff\xff",
        b"S\x00\x00\x00\x05ab",
        b"Q",
        b"NN",
        b"?",
        b"L" + b"\x00\x00\x00\x01" * 200 + b"N",
        b"S\x00\x00\x00\x01\xff",
        b"M\x00\x00\x00\x01N",
        b"D\x00",
    ],
)
def test_the_decoder_rejects_malformed_data(data):
    with pytest.raises(ValueError):
        forkserver.decode(data)


def test_the_encoder_refuses_other_types():
    for value in (object(), bytearray(b"x"), [1, object()], {1: print}):
        with pytest.raises(forkserver.UnsafeValue):
            forkserver.encode(value)
    nested = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(forkserver.UnsafeValue, match="deeper"):
        forkserver.encode(nested)


@pytest.mark.parametrize(
    "payload",
    [
        b"P" + b"anything",
        b"?",
        b"",
        b"V" + b"S\x00",
        b"X" + forkserver.encode(1),
        b"X" + forkserver.encode((1, 2, 3, 4, 5, 6)),
        b"K" + forkserver.encode("x"),
    ],
)
def test_outcome_kinds_are_checked(payload):
    with pytest.raises(sb.CallCrashed, match="protocol"):
        session.decode_outcome(payload, False, None)


def test_call_refuses_invoke_options():
    """``call(fn, timeout=1)`` would pass timeout to fn and run without one: refused, pointing to invoke."""
    box = sb.Container()  # refused before anything starts
    for name in ("timeout", "trust_result"):
        with pytest.raises(sb.ConfigError, match=rf"^{name}: call\(\) passes its keywords.*invoke\(fn, args"):
            box.call(pow, 2, 2, **{name: 1})
