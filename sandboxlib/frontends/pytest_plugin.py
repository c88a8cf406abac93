"""pytest plugin (entry point ``pytest11``, or ``-p sandboxlib.frontends.pytest_plugin``).

Fixtures: ``sandbox`` (a fresh running ``Container`` per test) and
``sandbox_factory`` (``make(**options)`` -> a started ``Container``; all are
closed after the test).  The marker ``@pytest.mark.sandbox(**options)`` runs
the whole test body in a sandbox: the function (pytest's assertion rewriting
included) and its fixture values go in with cloudpickle; the outcome comes
back as pass, fail (with the assertion message pytest wrote inside), skip,
xfail, or the test's exception.  Options: ``timeout``, ``memory``,
``network`` (bool), ``preload``, ``env``, ``mounts``, ``rootfs``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from ..api import with_memory
from ..config import Network
from ..runtime import Container
from ..errors import ConfigError

__all__ = ["sandbox", "sandbox_factory"]

MARKER_OPTIONS = ("timeout", "memory", "network", "preload", "env", "mounts", "rootfs")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sandbox(timeout=None, memory=None, network=False, preload=(), env=None, mounts=(), "
                   "rootfs=None): run the test body inside a sandboxlib sandbox")


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
        raise ConfigError("pytest.mark.sandbox", f"takes keyword options {', '.join(MARKER_OPTIONS)}; "
                                                 f"got {list(marker.args) + unknown}")
    kw = marker.kwargs
    network = kw.get("network", False)
    if not isinstance(network, bool):
        raise ConfigError("network", f"expected True or False, got {network!r}")
    options = {"rootfs": kw.get("rootfs"), "mounts": kw.get("mounts", ()), "env": kw.get("env"),
               "limits": with_memory(None, kw.get("memory")),
               "network": Network.HOST if network else Network.NONE}
    return options, kw.get("timeout"), tuple(kw.get("preload", ()))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    marker = pyfuncitem.get_closest_marker("sandbox")
    if marker is None:
        return None
    __tracebackhide__ = True
    options, timeout, preload = _container_options(marker)
    funcargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    with Container(**options) as box:
        if preload:
            box.preload(preload)
        try:
            status, message = box.invoke(_run_test, (pyfuncitem.obj, funcargs), timeout=timeout)
        except BaseException as err:
            raise err.with_traceback(None)  # noqa: B904 - the same exception; the host's frames say nothing about the test
    if status == "skipped":  # reported at the test's own location, as a skip in its body is
        raise pytest.skip.Exception(message, _use_item_location=True)
    if status == "xfailed":
        pytest.xfail(message)
    if status == "failed":
        pytest.fail(message, pytrace=False)
    return True


def _run_test(fn: Callable, funcargs: dict) -> tuple:
    """Runs in the sandbox: pytest's outcome exceptions become safe values."""
    from _pytest.outcomes import Failed, Skipped, XFailed
    try:
        fn(**funcargs)
    except Skipped as outcome:
        return "skipped", outcome.msg
    except XFailed as outcome:
        return "xfailed", outcome.msg
    except Failed as outcome:
        return "failed", outcome.msg
    return "passed", None
