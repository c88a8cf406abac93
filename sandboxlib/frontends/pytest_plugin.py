"""pytest plugin (entry point ``pytest11``, or ``-p sandboxlib.frontends.pytest_plugin``).

Supports pytest 7.4 and newer (with any pluggy it allows: 1.0 on pytest 7.4);
tested on 7.4.0 with pluggy 1.0 (by the suite too), 7.4.4, 8.0, 8.3, 9.0, 9.2.

Fixtures: ``sandbox`` (a fresh running ``Container`` per test) and
``sandbox_factory`` (``make(**options)`` -> a started ``Container``; all are
closed after the test).  The marker ``@pytest.mark.sandbox(**options)`` runs
the whole test body in a sandbox: the function (pytest's assertion rewriting
included) and its fixture values go in with cloudpickle; the project's
directory is bound read-only and pytest's base temporary directory writable
(``tmp_path`` works, its files stay).  The outcome comes back as pass, skip,
xfail, or a failure: pytest's own report of it, made inside with pytest's
assertion hooks and serialized as a TestReport's plain data (as xdist does),
with the exception's type when it is a builtin one.  That report comes from a
pytest config of the sandbox's own, parsed from the host's settings that
shape it (``-v``, ``--tb``, ``-l``, colour, ``verbosity_assertions`` and the
truncation limits) and configured as ``pytest.main`` does, with pytest's own
plugins only: no ini file, conftest.py, entry point, ``PYTEST_ADDOPTS`` or
``PYTEST_PLUGINS`` (the sandbox may not import them).  The host's ``CI`` and
``BUILD_NUMBER`` go in (pytest does not truncate explanations on CI).
Options: ``timeout``, ``memory``, ``network`` (bool), ``preload``, ``env``,
``mounts``, ``rootfs``.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import os
import pathlib
import stat
import traceback
import types
from typing import Any, Callable, Generator, Iterator, Mapping, Optional

import pytest
from _pytest.reports import TestReport

from ..api import with_memory
from ..config import Mount, Network
from ..errors import ConfigError, RemoteError
from ..runtime import Container

__all__ = ["sandbox", "sandbox_factory"]

MARKER_OPTIONS = ("timeout", "memory", "network", "preload", "env", "mounts", "rootfs")
# The variables by which pytest knows that it runs on CI (_pytest's running_on_ci).
CI_SIGNS = ("CI", "BUILD_NUMBER")
# The ini options that shape an assertion's explanation, where the pytest has them.
REPORT_INI_OPTIONS = (
    "verbosity_assertions",
    "truncation_limit_lines",
    "truncation_limit_chars",
    "assertion_text_diff_style",
)
# pytest's plugins the sandbox's config goes without: the cache (the project is
# read-only there), and the hooks on unraisable and thread exceptions, which
# nothing would report there (and whose unconfigure collects garbage: 15 ms).
SANDBOX_PLUGINS_OFF = ("-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:threadexception")
# What would load options or plugins into the sandbox's pytest config behind its command line.
PYTEST_ENVIRONMENT = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox(timeout=None, memory=None, network=False, preload=(), env=None, mounts=(), "
        "rootfs=None): run the test body inside a sandboxlib sandbox",
    )


@pytest.fixture
def sandbox() -> Iterator[Container]:
    """A fresh running container (host view, no network), closed after the test."""
    with Container() as box:
        yield box


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Container]]:
    """``make(**Container options)`` -> a started container; all closed after the test."""
    made = []

    def make(**options: Any) -> Container:
        box = Container(**options).start()
        made.append(box)
        return box

    yield make
    for box in reversed(made):
        box.close()


def _container_options(marker: pytest.Mark) -> tuple:
    unknown = sorted(set(marker.kwargs) - set(MARKER_OPTIONS))
    if marker.args or unknown:
        raise ConfigError(
            "pytest.mark.sandbox",
            f"takes keyword options {', '.join(MARKER_OPTIONS)}; got {list(marker.args) + unknown}",
        )
    kw = marker.kwargs
    network = kw.get("network", False)
    if not isinstance(network, bool):
        raise ConfigError("network", f"expected True or False, got {network!r}")
    options = {
        "rootfs": kw.get("rootfs"),
        "mounts": kw.get("mounts", ()),
        "env": _with_ci_signs(kw.get("env")),
        "limits": with_memory(None, kw.get("memory")),
        "network": Network.HOST if network else Network.NONE,
    }
    return options, kw.get("timeout"), tuple(kw.get("preload", ()))


def _with_ci_signs(env: Any) -> Any:
    """The host's signs of a CI run go in too (the marker's ``env`` may set
    them): pytest shows assertion explanations in full there."""
    # (set, even empty, for some pytests; not empty for others: each decides inside)
    signs = {name: os.environ[name] for name in CI_SIGNS if name in os.environ}
    if not signs or not (env is None or isinstance(env, Mapping)):  # (a bad env is the Container's error)
        return env
    return {**signs, **(env or {})}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    marker = pyfuncitem.get_closest_marker("sandbox")
    if marker is None:
        return None
    __tracebackhide__ = True
    options, timeout, preload = _container_options(marker)
    funcargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    basetemp = pyfuncitem.config._tmp_path_factory.getbasetemp()
    options["mounts"] = (*_project_mounts(pyfuncitem.config, basetemp), *options["mounts"])
    invocation_dir = pyfuncitem.config.invocation_params.dir
    if options["rootfs"] is None and (
        invocation_dir == pyfuncitem.config.rootpath or pyfuncitem.config.rootpath in invocation_dir.parents
    ):
        options["cwd"] = str(invocation_dir)  # as on the host: relative paths, and the report's file names
    with Container(**options) as box:
        _give_temp_to_root(box, basetemp, pyfuncitem.funcargs.get("tmp_path"))
        if preload:
            box.preload(preload)
        try:
            outcome = box.invoke(
                _run_test, (pyfuncitem.obj, funcargs, _report_args(pyfuncitem.config)), timeout=timeout
            )
        except BaseException as err:
            raise err.with_traceback(None)  # noqa: B904 - the same exception; the host's frames say nothing about the test
    status, message = outcome[:2]
    if status == "skipped":  # reported at the test's own location, as a skip in its body is
        raise pytest.skip.Exception(message, _use_item_location=True)
    if status == "xfailed":
        pytest.xfail(message)
    if status == "failed":
        pytest.fail(message, pytrace=False)
    if status == "raised":
        raise _rebuilt(*outcome[2:], longrepr=message)
    return True


def _project_mounts(config: pytest.Config, basetemp: pathlib.Path) -> tuple:
    """The project's directory read-only (the test's source for pytest's
    report, its data files) and pytest's temporary directory writable."""
    mounts = [Mount.bind(basetemp, basetemp)]
    rootdir = config.rootpath
    if str(rootdir) != "/":
        mounts.insert(0, Mount.bind(rootdir, rootdir, read_only=True))
        _searchable_below(rootdir, basetemp)
    return tuple(mounts)


def _searchable_below(rootdir: pathlib.Path, basetemp: pathlib.Path) -> None:
    """A base temporary directory inside the project (``--basetemp``, xdist's
    ``popen-gwN``) is mounted where the container's root must reach it through
    the project's bind: pytest's own 0700 directories on the way, ours, get
    search permission for others (not read: their names stay unlisted)."""
    for parent in basetemp.parents:
        if parent == rootdir or rootdir not in parent.parents:
            return
        info = parent.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _give_temp_to_root(box: Container, basetemp: pathlib.Path, tmp_path: Optional[pathlib.Path]) -> None:
    """pytest's base temporary directory and the test's ``tmp_path`` become
    the container root's (as root, an unprivileged host id; rootless, you),
    so the test can write there; the host reads them after the test."""
    uid, gid = box.root_ids_on_host
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return
    os.chown(basetemp, uid, gid)
    if tmp_path is not None and basetemp in tmp_path.parents:
        for path in (tmp_path, *tmp_path.rglob("*")):
            os.chown(path, uid, gid, follow_symlinks=False)


def _report_args(config: pytest.Config) -> list:
    """The sandbox's pytest command line: the host's settings that a failure's
    report depends on, and nothing of the project's (no ini file, conftest or
    other plugin: the sandbox may not import them, nor need their options)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    markup = reporter is not None and config.get_terminal_writer().hasmarkup  # (none with -p no:terminal)
    args = [
        *("-c", os.devnull, "--noconftest", "--capture=no", *SANDBOX_PLUGINS_OFF),
        f"--verbosity={config.getoption('verbose')}",
        f"--tb={config.getoption('tbstyle', 'auto')}",
        f"--color={'yes' if markup else 'no'}",
        f"--code-highlight={config.getoption('code_highlight', 'yes')}",
    ]
    if config.getoption("showlocals", False):
        args.append("--showlocals")
    for name in REPORT_INI_OPTIONS:
        try:
            value = config.getini(name)
        except ValueError:  # not an option of this pytest
            continue
        if value is not None:
            args += ["-o", f"{name}={value}"]
    return args


def _rebuilt(module: str, qualname: str, args: Optional[tuple], text: str, *, longrepr: Any) -> BaseException:
    """The test's exception on the host (the same builtin type when it is one,
    so ``xfail(raises=...)`` works; else RemoteError), carrying pytest's
    report made in the sandbox."""
    cls = getattr(builtins, qualname, None) if module == "builtins" else None
    error: Optional[BaseException] = None
    if isinstance(cls, type) and issubclass(cls, Exception) and args is not None:
        try:
            error = cls(*args)
        except Exception:  # noqa: BLE001 - not rebuildable from its args
            error = None
    if error is None:
        error = RemoteError(f"{module}.{qualname}", text.rstrip().rsplit("\n", 1)[-1], text)
    error._sandboxlib_longrepr = longrepr
    return error


# An old-style wrapper: pytest 7.4 allows pluggy 1.0, which has no new-style ones.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    """A marked test's failure is shown with the report pytest made in the
    sandbox (source lines, the assertion's diff, file:line), as for an unmarked test."""
    report = (yield).get_result()
    longrepr = getattr(call.excinfo.value, "_sandboxlib_longrepr", None) if call.excinfo else None
    if longrepr is not None and report.failed:
        data = report._to_json()
        data["longrepr"] = longrepr
        report.longrepr = TestReport._from_json(data).longrepr


# -- in the sandbox ----------------------------------------------------------------
def _run_test(fn: Callable, funcargs: dict, report_args: list) -> tuple:
    """Runs in the sandbox: pytest's outcome exceptions become safe values; an
    exception becomes pytest's own report of it (as plain data) and its type."""
    from _pytest.outcomes import Failed, Skipped, XFailed

    config = _report_config(report_args)
    try:
        with _assertion_hooks(config):
            fn(**funcargs)
    except Skipped as outcome:
        return "skipped", outcome.msg
    except XFailed as outcome:
        return "xfailed", outcome.msg
    except Failed as outcome:
        return "failed", outcome.msg
    except Exception as err:  # noqa: BLE001 - every failure goes back to the host as a report
        return (
            "raised",
            _longrepr(err, fn, config),
            type(err).__module__,
            type(err).__qualname__,
            _safe_args(err),
            "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        )
    finally:
        config._ensure_unconfigure()
    return "passed", None


def _report_config(args: list) -> pytest.Config:
    """A pytest config parsed from ``args`` and configured as ``pytest.main``
    does, with pytest's own plugins only: neither entry points (autoload off
    while it is made) nor the environment's options and plugins."""
    from _pytest.config import get_config

    saved = {name: os.environ.pop(name) for name in PYTEST_ENVIRONMENT if name in os.environ}
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        config = get_config(list(args))
        config.parse(list(args), addopts=False)
    finally:  # as it was for the test
        del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        os.environ.update(saved)
    config._do_configure()
    return config


@contextlib.contextmanager
def _assertion_hooks(config: pytest.Config) -> Iterator[None]:
    """pytest's assertion explanations (its assertrepr_compare hooks and
    truncation), set up and undone as around a test on the host."""
    import _pytest.assertion

    hooks = _pytest.assertion.pytest_runtest_protocol(types.SimpleNamespace(ihook=config.hook, config=config))
    next(hooks)
    try:
        yield
    finally:
        with contextlib.suppress(StopIteration):
            hooks.send(None)


def _longrepr(err: BaseException, fn: Callable, config: pytest.Config) -> dict:
    """pytest's report of ``err`` (as pytest's ``Node._repr_failure_py`` makes
    it): the test function's frames and below, as the plain data of a
    serialized TestReport (safe to send back)."""
    from _pytest._code import Code, ExceptionInfo
    from _pytest.reports import TestReport

    excinfo = ExceptionInfo.from_exception(err)
    code = Code.from_function(fn)
    traceback_ = excinfo.traceback.cut(path=code.path, firstlineno=code.firstlineno)
    excinfo.traceback = traceback_.filter(excinfo)
    style = config.getoption("tbstyle")
    verbosity = config.getoption("verbose")
    options = {"truncate_locals": verbosity <= 1}
    if "truncate_args" in inspect.signature(excinfo.getrepr).parameters:  # pytest >= 8.2
        options["truncate_args"] = verbosity <= 2
    longrepr = excinfo.getrepr(
        funcargs=True,
        showlocals=config.getoption("showlocals"),
        style="long" if style == "auto" else style,
        tbfilter=False,
        **options,
    )
    report = TestReport(
        nodeid="", location=("", None, ""), keywords={}, outcome="failed", longrepr=longrepr, when="call"
    )
    return report._to_json()["longrepr"]


def _safe_args(err: BaseException) -> Optional[tuple]:
    args = err.args
    return args if all(isinstance(a, (str, int, float, bool, type(None))) for a in args) else None
