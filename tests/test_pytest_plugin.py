"""The pytest plugin, run by pytest's own ``pytester`` (root) and by the same
inner test session in the rootless worker: fixtures, the ``sandbox`` marker's
outcomes and messages, xdist, and no container left when a session ends; a
marked test's failure reported as its unmarked twin's, at each verbosity, on
this pytest and on the oldest one the plugin supports."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import tempfile
import zipfile
from typing import Optional

import pytest
import tomllib
from packaging.version import Version

pytest_plugins = ["pytester"]

REPO = pathlib.Path(__file__).resolve().parent.parent

INNER_TESTS = """
import os, time
import pytest

HOST_NAME = os.uname().nodename


def test_fixture(sandbox):
    assert sandbox.run(["echo", "x"]).stdout == b"x\\n"


def test_factory(sandbox_factory):
    a, b = sandbox_factory(hostname="a"), sandbox_factory(hostname="b")
    assert (a.run(["hostname"]).stdout, b.run(["hostname"]).stdout) == (b"a\\n", b"b\\n")


@pytest.mark.sandbox()
def test_inside_passes():
    assert os.uname().nodename != HOST_NAME
    assert os.getpid() < 100  # its own pid namespace


@pytest.mark.sandbox(network=False)
def test_inside_fails():
    values = [1, 2]
    assert len(values) == 3


@pytest.mark.sandbox()
def test_inside_skips():
    pytest.skip("not in here")


@pytest.mark.sandbox()
def test_inside_xfails():
    pytest.xfail("known to fail")


@pytest.mark.xfail(strict=True)
@pytest.mark.sandbox()
def test_marked_xfail():
    assert False


@pytest.mark.sandbox()
def test_raises_inside():
    raise KeyError("missing-key")


@pytest.mark.sandbox(timeout=0.5)
def test_times_out():
    time.sleep(30)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.sandbox()
def test_fixture_values_go_in(n, tmp_path):
    assert n in (1, 2) and tmp_path.name.startswith("test_fixture_values_go_in")


@pytest.mark.sandbox()
def test_host_is_read_only():
    with pytest.raises(OSError):
        open("/usr/sandboxlib-was-here", "w")


@pytest.mark.sandbox(bogus=1)
def test_bad_option():
    pass


@pytest.fixture
def host_sees(tmp_path, tmp_path_factory):
    yield tmp_path
    # after the marked test, on the host: what it wrote in the sandbox
    assert (tmp_path / "out.txt").read_text() == "written inside"
    assert [p.read_text() for p in tmp_path_factory.getbasetemp().glob("made[0-9]*/f")] == ["made inside"]


@pytest.mark.sandbox()
def test_tmp_path_is_the_hosts(host_sees, tmp_path_factory):
    (host_sees / "out.txt").write_text("written inside")
    (tmp_path_factory.mktemp("made") / "f").write_text("made inside")


@pytest.mark.sandbox()
def test_project_is_read_only():
    assert "def test_project_is_read_only" in open(__file__).read()
    with pytest.raises(PermissionError):
        open(__file__, "a")


@pytest.mark.sandbox()
def test_dict_differs():
    data = {"a": 1, "b": 2}
    assert data == {"a": 1, "b": 3}
"""

# After each session (each xdist worker too): the containers still running.
INNER_CONFTEST = """
import os, psutil

def pytest_unconfigure(config):
    inits = [p.pid for p in psutil.Process().children(recursive=True) if p.name() == "sbx-init"]
    with open(os.path.join(os.path.dirname(__file__), f"leaks-{os.getpid()}.txt"), "w") as f:
        f.write(repr(inits))
"""

EXPECTED = {"passed": 8, "failed": 5, "skipped": 1, "xfailed": 2}
# A marked test's failure reads as an unmarked one's: pytest's report with
# the source line, the assertion's diff and file:line (run with -vv: once).
MESSAGES = [
    "assert 2 == 3",
    "where 2 = len([1, 2])",
    "KeyError: 'missing-key'",
    "timed out after 0.5 seconds",
    "pytest.mark.sandbox: takes keyword options",
    "SKIPPED [1] test_inner.py:29: not in here",
    '>       raise KeyError("missing-key")',
    "test_inner.py:47: KeyError",
    '>       assert data == {"a": 1, "b": 3}',
    "Differing items:\n{'b': 2} != {'b': 3}",
    "test_inner.py:96: AssertionError",
    "FAILED test_inner.py::test_dict_differs - AssertionError",
]
ONCE = ['>       assert data == {"a": 1, "b": 3}', "test_inner.py:96: AssertionError"]


def _leaks(directory: pathlib.Path) -> list:
    files = sorted(directory.glob("leaks-*.txt"))
    assert files, "the inner session did not report"
    return [ast.literal_eval(f.read_text()) for f in files]


# The inner sessions name their plugins: with sandboxlib installed, its
# pytest11 entry point would load the plugin a second time under another name.
NO_AUTOLOAD = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def run_inner_session(directory: str, extra: list) -> tuple:
    """The inner session in a subprocess (the rootless worker's way): (outcomes, output)."""
    return _session(directory, ["-rA", "-vv", *extra])


def _session(directory: str, args: list, *, python: str = sys.executable, env: Optional[dict] = None) -> tuple:
    """``pytest ARGS`` with the plugin (only) in ``directory``, ``env``'s None values
    unset: (outcomes, output)."""
    proc = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "sandboxlib.frontends.pytest_plugin",
            *args,
            directory,
        ],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=300,
        env={name: value for name, value in {**os.environ, **NO_AUTOLOAD, **(env or {})}.items() if value is not None},
    )
    output = proc.stdout + proc.stderr
    return pytest.RunResult.parse_summary_nouns(output.splitlines()), output


def _check_messages(output: str) -> None:
    lines = "\n".join(line.removeprefix("E").strip() for line in output.splitlines())
    for message in MESSAGES:
        assert message in output or message in lines, message
    for message in ONCE:
        assert output.count(message) == 1, message
    assert "traceback in the sandbox" not in output and "<dynamic-code>" not in output


def _write(directory: pathlib.Path) -> None:
    (directory / "test_inner.py").write_text(INNER_TESTS)
    (directory / "conftest.py").write_text(INNER_CONFTEST)


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_plugin_with_pytester(pytester, monkeypatch, xdist):
    for name, value in NO_AUTOLOAD.items():
        monkeypatch.setenv(name, value)
    _write(pytester.path)
    os.chmod(pytester.path, 0o755)  # as a project's directory is: the container's root is another user
    extra = ["-p", "xdist", "-n", "2"] if xdist else []
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "sandboxlib.frontends.pytest_plugin", "-rA", "-vv", *extra, timeout=300
    )
    result.assert_outcomes(**EXPECTED)
    _check_messages(result.stdout.str())
    leaks = _leaks(pytester.path)
    assert leaks == [[]] * len(leaks) and len(leaks) == (3 if xdist else 1)


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_plugin_rootless(workers, shared_dir, xdist):
    directory = shared_dir / f"plugin-rootless-{'xdist' if xdist else 'serial'}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    _write(directory)
    os.chmod(directory, 0o777)
    extra = ["-p", "xdist", "-n", "2"] if xdist else []
    (outcomes, output), leaks_in_worker = workers["sbxtest"].call(run_inner_session, str(directory), extra)
    assert leaks_in_worker == {"fds": [], "children": []}
    assert {k: outcomes.get(k, 0) for k in EXPECTED} == EXPECTED, output
    _check_messages(output)
    leaks = _leaks(directory)
    assert leaks == [[]] * len(leaks) and len(leaks) == (3 if xdist else 1)


def test_entry_point_is_declared():
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["pytest11"] == {"sandboxlib": "sandboxlib.frontends.pytest_plugin"}


def test_installed_entry_point_loads_the_plugin():
    # `make test` installs the wheel: pytest finds the plugin by its entry point
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group="pytest11") if e.name == "sandboxlib"]
    assert found, "sandboxlib is not installed: run `make test` (it installs the wheel into build/venv)"
    import sandboxlib.frontends.pytest_plugin

    assert found[0].load() is sandboxlib.frontends.pytest_plugin


# Twins: each body runs as an unmarked test and as a marked one, whose
# failure reports must read the same (pytest's assertion explanations with
# the host's verbosity, truncation, colour).  The sandbox's pytest must not
# see the environment's options and plugins, nor the project's conftest.
TWIN_BODIES = {
    "lists": "assert list(range(30)) == list(range(29)) + [99]",
    "dicts": 'assert {"a": [1, 2, 3], "b": "x" * 60, "c": 1} == {"a": [1, 2, 4], "b": "x" * 60, "d": 1}',
    "text": 'assert "one\\ntwo\\nthree\\nfour" == "one\\n2\\nthree\\nfour"',
    "calls": "values = [1, 2]\n    assert len(values) == sum([1, 1, 1])",
    "sets": "assert {1, 2, 3} <= {2, 3, 4}",
    "many": "assert dict.fromkeys(range(20), 1) == dict.fromkeys(range(20), 2)",  # truncated, but on CI
}
TWIN_MARKER = '@pytest.mark.sandbox(env={"PYTEST_ADDOPTS": "--no-such-option", "PYTEST_PLUGINS": "no_such_plugin"})'
TWINS = (
    "import pluggy, pytest\n"
    + "".join(
        f"\n\ndef test_{name}_host():\n    {body}\n\n\n{TWIN_MARKER}\ndef test_{name}_sandbox():\n    {body}\n"
        for name, body in TWIN_BODIES.items()
    )
    + """

@pytest.mark.sandbox()
def test_versions_inside():
    pytest.skip(f"inside: pytest-{pytest.__version__}, pluggy-{pluggy.__version__}")
"""
)
TWINS_CONFTEST = """
import os
if "TWINS_HOST" not in os.environ:  # (the sandbox's environment has only what the marker gives)
    raise RuntimeError("the project's conftest.py was imported in the sandbox")
"""
# pytest 8's verbosity_assertions, which pytest 7 does not know.
FULL_WITH_INI = "Full diff" if hasattr(pytest.Config, "VERBOSITY_ASSERTIONS") else "Use -v to get more diff"
# Each session's options and environment, and what its reports must show.
TWIN_SESSIONS = {
    "default": ([], {"CI": None, "BUILD_NUMBER": None}, "truncated"),
    "ci-color": (["--color=yes"], {"CI": "true"}, "\x1b["),
    "vv": (["-vv"], {}, "Full diff"),
    "ini": (["-o", "verbosity_assertions=2", "--tb=short"], {"CI": None, "BUILD_NUMBER": None}, FULL_WITH_INI),
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _twin_sections(output: str) -> dict:
    """A failure section's explanation (its E lines) by test name."""
    sections, name = {}, None
    for line in output.splitlines():
        plain = ANSI.sub("", line)
        header = re.fullmatch(r"_+ (test_\w+) _+", plain)
        if header:
            name = header.group(1)
            sections[name] = []
        elif name and plain.startswith("E "):
            sections[name].append(line)
    return sections


def _check_twins(directory: pathlib.Path, session: str, *, python: str = sys.executable) -> str:
    args, env, shown = TWIN_SESSIONS[session]
    outcomes, output = _session(str(directory), ["-rA", *args], python=python, env={**env, "TWINS_HOST": "1"})
    assert outcomes == {"failed": 2 * len(TWIN_BODIES), "skipped": 1}, output
    sections = _twin_sections(output)
    for name in TWIN_BODIES:
        host, inside = sections[f"test_{name}_host"], sections[f"test_{name}_sandbox"]
        assert host and inside == host, f"{name}:\n" + "\n".join(inside) + "\n----- unmarked:\n" + "\n".join(host)
    assert shown in output  # what the session's options change
    return output


def _write_twins(directory: pathlib.Path) -> None:
    (directory / "test_twins.py").write_text(TWINS)
    (directory / "conftest.py").write_text(TWINS_CONFTEST)
    os.chmod(directory, 0o755)  # as a project's directory is: the container's root is another user


@pytest.mark.parametrize("session", list(TWIN_SESSIONS))
def test_failure_reads_as_the_unmarked_twins(pytester, session):
    _write_twins(pytester.path)
    output = _check_twins(pytester.path, session)
    assert f"inside: pytest-{pytest.__version__}," in output


# The oldest pytest and pluggy the plugin supports (pyproject's floor; pytest
# 7.4 allows pluggy 1.0), their dependencies and cloudpickle: the wheels that
# `make test-deps` downloads (the Makefile's OLDEST_PYTEST).
OLDEST_WHEELS = REPO / "build" / "oldest-pytest"


@pytest.fixture
def oldest_pytest():
    """A venv whose own site-packages hold those wheels, unpacked, ahead of
    this interpreter's (sandboxlib and its dependencies, on the host): what a
    sandbox's interpreter imports comes from its own prefix, which the host
    view shows.  Yields (its python, {distribution: version})."""
    wheels = sorted(OLDEST_WHEELS.glob("*.whl"))
    assert wheels, f"no wheels in {OLDEST_WHEELS}: `make test-deps` downloads them"
    venv = pathlib.Path(tempfile.mkdtemp(prefix="sandboxlib-oldest-pytest-"))
    try:
        os.chmod(venv, 0o755)  # the container's root is another user
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        (site_packages,) = venv.glob("lib/python3*/site-packages")
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site_packages)
        (site_packages / "zz-suite.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        yield str(venv / "bin" / "python"), dict(wheel.name.split("-")[:2] for wheel in wheels)
    finally:
        shutil.rmtree(venv)


def test_failure_reads_as_the_unmarked_twins_on_the_oldest_pytest(pytester, oldest_pytest):
    python, versions = oldest_pytest
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    (floor,) = [requirement.removeprefix("pytest>=") for requirement in extra if requirement.startswith("pytest>=")]
    assert Version(versions["pytest"]) == Version(floor), "the Makefile's OLDEST_PYTEST is not pyproject's floor"
    _write_twins(pytester.path)
    for session in ("default", "ci-color", "vv"):  # (verbosity_assertions is pytest 8's)
        output = _check_twins(pytester.path, session, python=python)
        shown = f"pytest-{versions['pytest']}, pluggy-{versions['pluggy']}"
        assert f"{shown}\n" in ANSI.sub("", output) and f"inside: {shown}" in output, output
