"""The exception hierarchy.  Every exception carries its facts as
attributes and pickles (they cross process boundaries in pools, pytest
workers and the rootless test runner)."""

from __future__ import annotations

import os
import subprocess
from typing import Optional, Sequence

__all__ = [
    "SandboxError",
    "ConfigError",
    "UnsupportedError",
    "SetupError",
    "CommandNotFoundError",
    "TimeoutExpired",
    "CommandFailed",
    "ContainerStateError",
    "ImageNotFound",
    "ImageFormatError",
    "DigestMismatch",
    "RegistryError",
    "RegistryAuthError",
    "RegistryNotFound",
    "RegistryDataError",
    "CallError",
    "RemoteError",
    "UnsafeResultError",
    "NoPythonError",
    "CallTimeout",
    "CallCrashed",
    "BuildError",
    "BuildStepFailed",
]


class SandboxError(Exception):
    """Base class of every sandboxlib error."""


class ConfigError(SandboxError, ValueError):
    """Invalid configuration, raised before any kernel resource is created.

    Attributes:
        field: the configuration field at fault, e.g. ``mounts[1].target``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class UnsupportedError(SandboxError):
    """The host lacks a feature the configuration asks for.

    Attributes:
        feature: what is missing.
        how: how to enable it.
    """

    def __init__(self, feature: str, how: str) -> None:
        super().__init__(feature, how)
        self.feature = feature
        self.how = how

    def __str__(self) -> str:
        return f"{self.feature} is not available on this host: {self.how}"


class SetupError(SandboxError, OSError):
    """A set-up step of a container failed in the kernel.

    ``str()`` names the operation, its paths and flags, the step and the
    errno, e.g. ``mount(source='/data', target='/mnt', flags=RDONLY|RECURSIVE)
    failed in step MOUNT: [Errno 13] Permission denied``.

    Attributes:
        step: the step name (``MOUNT``, ``EXEC``, ...).
        errno: the kernel's errno.
        operation: the operation and its arguments, as text.
        field: the configuration field the operation came from, or None.
        hint: an explanation of a known kernel refusal, or None.
    """

    errno: int  # always given (OSError's may be None)

    def __init__(
        self, errno_: int, operation: str, *, step: str = "", field: Optional[str] = None, hint: Optional[str] = None
    ) -> None:
        super().__init__(errno_, operation)
        self.step = step
        self.operation = operation
        self.field = field
        self.hint = hint

    def __reduce__(self):  # OSError pickles only (errno, strerror)
        return (_rebuild, (type(self), self.args, self.__dict__))

    def __str__(self) -> str:
        text = f"{self.operation} failed in step {self.step}: [Errno {self.errno}] {os.strerror(self.errno)}"
        if self.field:
            text += f" (from {self.field})"
        if self.hint:
            text += f"; {self.hint}"
        return text


def _rebuild(cls, args, state):
    obj = cls(*args)
    obj.__dict__.update(state)
    return obj


class CommandNotFoundError(SetupError, FileNotFoundError):
    """The command to execute does not exist (or is not executable) in the container."""


class TimeoutExpired(SandboxError):
    """A wait or communicate ran out of time (the process is left running).

    Attributes:
        argv: the command.
        timeout: the timeout in seconds.
        stdout, stderr: what was read so far (bytes or None).
    """

    def __init__(self, argv, timeout: float, stdout: Optional[bytes] = None, stderr: Optional[bytes] = None) -> None:
        super().__init__(argv, timeout, stdout, stderr)
        self.argv = argv
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self) -> str:
        return f"command {list(self.argv)!r} timed out after {self.timeout} seconds"


class CommandFailed(SandboxError, subprocess.CalledProcessError):
    """A command did not end well (a non-zero exit, a signal, a timeout) and
    ``check=True`` or ``Result.check_returncode()`` asked for an exception.
    Also a ``subprocess.CalledProcessError``: ``returncode``, ``cmd``,
    ``output``/``stdout`` and ``stderr`` are there, as ``subprocess.run`` users expect.

    Attributes:
        argv: the command (``cmd`` as a list).
        returncode: its exit status (``128 + N`` when killed by signal N).
        stdout, stderr: the captured output (bytes, str with ``text=True``, or None).
        verdict: why it ended (a ``sandboxlib.Verdict``).
    """

    def __init__(
        self, argv: Sequence[str], returncode: int, stdout=None, stderr=None, verdict: Optional[object] = None
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, list(argv), stdout, stderr)
        self.args = (tuple(argv), returncode, stdout, stderr, verdict)
        self.argv = tuple(argv)
        self.verdict = verdict

    def __reduce__(self):
        return (type(self), self.args)

    def __str__(self) -> str:
        text = f"command {list(self.argv)!r} returned non-zero exit status {self.returncode}"
        verdict = getattr(self.verdict, "value", self.verdict)
        return text if verdict in (None, "exited") else f"{text} (verdict: {verdict})"


class ContainerStateError(SandboxError):
    """An operation that needs a running container was called on one that is not."""


class ImageNotFound(SandboxError, LookupError):
    """No image in the store answers to a reference.

    Attributes:
        reference: the reference asked for, as given.
        hint: why it was not looked for further (e.g. ``pull='never'``), or "".
    """

    def __init__(self, reference: str, hint: str = "") -> None:
        super().__init__(*((reference, hint) if hint else (reference,)))
        self.reference = reference
        self.hint = hint

    def __str__(self) -> str:
        return f"no image {self.reference!r} in the store" + (f" ({self.hint})" if self.hint else "")


class ImageFormatError(SandboxError, ValueError):
    """An archive, layout, manifest, config or layer is malformed, truncated or unsupported.

    Attributes:
        source: what was being read (a path, or a blob digest).
        detail: what is wrong with it.
    """

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(source, detail)
        self.source = source
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.source}: {self.detail}"


class DigestMismatch(ImageFormatError):
    """Content does not hash to the digest that names it.

    Attributes:
        source: what was being read.
        expected: the digest it should have.
        actual: the digest it has.
    """

    def __init__(self, source: str, expected: str, actual: str) -> None:
        super().__init__(source, f"content has digest {actual}, expected {expected}")
        self.args = (source, expected, actual)
        self.expected = expected
        self.actual = actual


class RegistryError(SandboxError):
    """A registry could not be reached, refused a request, or answered what the
    distribution API does not allow.  Never carries credentials.

    Attributes:
        registry: the registry's host (``docker.io``, ``localhost:5000``).
        repository: the repository (``library/alpine``), or "" for the registry itself.
        status: the HTTP status of the answer at fault, or None when there was none.
        detail: what went wrong.
    """

    def __init__(self, registry: str, repository: str, status: Optional[int], detail: str) -> None:
        super().__init__(registry, repository, status, detail)
        self.registry = registry
        self.repository = repository
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        where = f"{self.registry}/{self.repository}" if self.repository else self.registry
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"registry {where}{status}: {self.detail}"


class RegistryAuthError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones given (401, 403)."""


class RegistryNotFound(RegistryError, LookupError):
    """The registry has no such repository, tag, manifest or blob (404)."""


class RegistryDataError(RegistryError):
    """What the registry sent is not what it said: a digest or size mismatch, a
    truncated transfer, an oversized or unsupported manifest."""


class CallError(SandboxError):
    """A function called in a sandbox (``Container.call``) did not return a value."""


class RemoteError(CallError):
    """The sandboxed function raised an exception that is not rebuilt on the host
    (not a builtin exception type, or its arguments are not safe values).

    Attributes:
        type_name: the remote exception's ``module.qualname``.
        message: its ``str()`` as the sandbox reported it.
        remote_traceback: the traceback text from inside the sandbox.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n--- traceback in the sandbox ---\n{self.remote_traceback}"


class UnsafeResultError(CallError, TypeError):
    """The call returned a value the safe encoding does not carry (the
    message names its type and how to convert it); ``trust_result=True``
    receives it pickled, for code you trust."""


class NoPythonError(CallError, FileNotFoundError):
    """``call()`` found no Python interpreter in the container (an image or
    root file system without ``python3`` on its PATH)."""


class CallTimeout(CallError, TimeoutError):
    """The call ran out of time; its process (and what it started) was killed.

    Attributes:
        timeout: the timeout in seconds.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self.timeout = timeout

    def __str__(self) -> str:
        return f"the sandboxed call timed out after {self.timeout} seconds"


class CallCrashed(CallError):
    """The sandboxed interpreter running the call died without a result.

    Attributes:
        exit_code: its exit status, or None when killed by a signal.
        signal: the signal that killed it, or None.
        verdict: why the sandbox ended it (a ``sandboxlib.Verdict``: ``OOM``, ``PIDS_LIMIT``, ``SIGNALED``...).
        detail: what was observed, in words.
    """

    def __init__(
        self,
        detail: str,
        *,
        exit_code: Optional[int] = None,
        signal: Optional[int] = None,
        verdict: Optional[object] = None,
    ) -> None:
        super().__init__(detail, exit_code, signal, verdict)
        self.detail = detail
        self.exit_code = exit_code
        self.signal = signal
        self.verdict = verdict

    def __reduce__(self):  # keyword-only fields: rebuilt from args
        return (_rebuild_crash, (type(self),) + tuple(self.args))

    def __str__(self) -> str:
        how = f"killed by signal {self.signal}" if self.signal else f"exit status {self.exit_code}"
        text = f"the sandboxed call crashed ({how}): {self.detail}"
        return text + (f"; verdict: {self.verdict}" if self.verdict else "")


def _rebuild_crash(cls, detail, exit_code, signal, verdict):
    return cls(detail, exit_code=exit_code, signal=signal, verdict=verdict)


class BuildError(SandboxError):
    """A Dockerfile could not be built: a syntax error, an unknown stage, a
    missing or forbidden source file, an unsupported instruction.

    Attributes:
        file: the Dockerfile (or .dockerignore) at fault.
        line: its line number (1-based; 0 when the fault is not a line's).
        message: what is wrong.
    """

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(file, line, message)
        self.file, self.line, self.message = file, line, message

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class BuildStepFailed(BuildError):
    """A ``RUN`` step ended with a non-zero status.

    Attributes:
        exit_code: its exit status (``128 + N`` when killed by signal N).
        output: the last lines of its output (stdout and stderr together).
        argv: the command it ran (``("/bin/sh", "-c", ...)`` for the shell form).
    """

    def __init__(
        self, file: str, line: int, message: str, exit_code: int, output: str, argv: Sequence[str] = ()
    ) -> None:
        BuildError.__init__(self, file, line, message)
        self.args = (file, line, message, exit_code, output, tuple(argv))
        self.exit_code, self.output, self.argv = exit_code, output, tuple(argv)

    def __reduce__(self):
        return (type(self), self.args)

    def __str__(self) -> str:
        tail = "".join(f"\n  {line}" for line in self.output.splitlines())
        return f"{BuildError.__str__(self)} (exit status {self.exit_code}){tail}"
