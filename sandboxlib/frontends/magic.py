"""IPython / Jupyter: ``%load_ext sandboxlib``, then ``%%sandbox`` cells.

Cells run in one sandboxed interpreter per notebook (a ``Session``), so
state stays across cells; output is streamed as it comes; the repr of a
final expression is the cell's result.  ``%sandbox_reset`` starts afresh.

    %%sandbox --timeout 10 [--memory 256M] [--network] [--preload json,numpy]
    %sandbox [options] CODE
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Dict, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from ..api import with_memory
from ..calls import Session, check_modules
from ..config import Network
from ..errors import CallCrashed, CallTimeout, ConfigError
from ..results import Verdict
from ..runtime import Container

__all__ = ["SandboxMagics", "load", "unload"]

_OPTION = re.compile(r"\s*--(network)\b(?:=(\S*))?|\s*--(memory|timeout|preload)(?:[ =](\S+))?")
_FLAGS = ("network",)


class Shown:
    """A cell's result: displayed as the sandbox's repr of it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def parse(line: str) -> Tuple[Dict[str, Any], str]:
    """Leading ``--option value`` words of ``line``, and the rest (code) untouched."""
    options: Dict[str, Any] = {}
    pos = 0
    while True:
        match = _OPTION.match(line, pos)
        if not match:
            break
        name, value = match.group(1) or match.group(3), match.group(2) or match.group(4)
        if name in _FLAGS:
            if value is not None:
                raise UsageError(f"--{name} takes no value")
            options[name] = True
        elif value is None:
            raise UsageError(f"--{name} needs a value")
        else:
            options[name] = value
        pos = match.end()
    rest = line[pos:]
    if rest.strip().startswith("--"):
        raise UsageError(f"unknown option {shlex.split(rest)[0]}; known: --memory, --timeout, --preload, --network")
    return options, rest.strip()


@magics_class
class SandboxMagics(Magics):
    """The ``%sandbox``/``%%sandbox`` and ``%sandbox_reset`` magics; one session per shell."""

    def __init__(self, shell) -> None:
        super().__init__(shell)
        self._box: Optional[Container] = None
        self._session: Optional[Session] = None
        self._started_with: Optional[tuple] = None

    @line_cell_magic
    def sandbox(self, line: str, cell: Optional[str] = None) -> Optional[Shown]:
        """Run the cell (or the rest of the line) in this notebook's sandbox."""
        options, code = parse(line)
        if cell is not None:
            code = cell
        timeout = _timeout(options.get("timeout"))
        session = self._ensure(options)
        try:
            shown = session.exec(code, timeout=timeout)
        except (CallTimeout, CallCrashed) as err:
            memory = self._started_with[0] if self._started_with else None
            self.close()  # its state is gone; the next cell starts a new session
            raise _shown_as(
                err,
                f"{type(err).__name__}: {_ended_why(err, memory)}; the sandbox session "
                f"ended with it: its variables are gone (the next cell starts a new "
                f"session)",
            ) from None
        except Exception as err:
            text = getattr(err, "remote_traceback", None)
            if not isinstance(text, str):
                raise
            raise _shown_as(err, text.rstrip()) from None
        return None if shown is None else Shown(shown)

    @line_magic
    def sandbox_reset(self, line: str = "") -> None:
        """End the sandbox of this notebook; the next ``%%sandbox`` starts a fresh one."""
        self.close()

    def _ensure(self, options: Dict[str, Any]) -> Session:
        wanted = (
            options.get("memory"),
            bool(options.get("network")),
            check_modules(options["preload"].split(",")) if "preload" in options else (),
        )
        if self._session is not None and self._session.alive:
            if any(k in options for k in ("memory", "network", "preload")) and wanted != self._started_with:
                raise UsageError(
                    "the sandbox session was started with other --memory/--network/--preload; run %sandbox_reset first"
                )
            return self._session
        self.close()
        memory, network, preload = wanted
        box = Container(limits=with_memory(None, memory), network=Network.HOST if network else Network.NONE)
        box.start()
        try:
            self._session = box.session(preload=preload)
        except ConfigError as err:  # a module to preload is not there: the option's fault
            box.close()
            raise UsageError(f"--preload: {err.message}") from None
        except BaseException:
            box.close()
            raise
        self._box, self._started_with = box, wanted
        return self._session

    def on_exit(self, change: dict) -> None:
        if change["new"]:
            self.close()

    def close(self) -> None:
        """Close the session and its container.  Idempotent."""
        box, self._box, self._session = self._box, None, None
        if box is not None:
            box.close()


def _shown_as(error: BaseException, text: str) -> BaseException:
    """``error`` shown by IPython as ``text`` alone: the cell's own traceback
    from the sandbox, without the frames of the magic and the session."""
    error._render_traceback_ = lambda: text.splitlines()  # type: ignore[attr-defined]
    return error.with_traceback(None)


def _ended_why(error: BaseException, memory: Optional[str]) -> str:
    if isinstance(error, CallTimeout):
        return f"the cell ran longer than its timeout ({error.timeout} s) and was killed"
    if getattr(error, "verdict", None) is Verdict.OOM:
        return f"the cell ran out of memory (--memory {memory})" if memory else "the cell ran out of memory"
    return str(error)


def _timeout(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--timeout expects seconds, got {value!r}") from None
    if seconds <= 0:
        raise UsageError(f"--timeout must be positive, got {value!r}")
    return seconds


def load(shell) -> None:
    magics = SandboxMagics(shell)
    shell.register_magics(magics)
    shell._sandboxlib_magics = magics
    # A shell that exits (a kernel's shutdown request sets exit_now) closes the
    # sandbox first: ipykernel would otherwise wait for the container's init
    # among its children, and be killed before it could clean up.
    shell.observe(magics.on_exit, names="exit_now")


def unload(shell) -> None:
    magics = getattr(shell, "_sandboxlib_magics", None)
    if magics is not None:
        magics.close()
        shell.unobserve(magics.on_exit, names="exit_now")
        del shell._sandboxlib_magics
