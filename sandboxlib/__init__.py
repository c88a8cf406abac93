"""sandboxlib: run code in Linux containers from Python, no daemon needed.

>>> import sandboxlib as sb
>>> sb.run(["echo", "hi"]).stdout
b'hi\\n'
"""

from .api import run, sandboxed
from .build import BuildEvent, ImageStore
from .cgroups.stats import ProcessInfo, Stats
from .config import ContainerConfig, IdMapping, Limits, Mount, Pull, WritableLayer
from .errors import (
    BuildError,
    BuildStepFailed,
    CallCrashed,
    CallError,
    CallTimeout,
    CommandFailed,
    CommandNotFoundError,
    ConfigError,
    ContainerStateError,
    DigestMismatch,
    ImageFormatError,
    ImageNotFound,
    NoPythonError,
    RegistryAuthError,
    RegistryDataError,
    RegistryError,
    RegistryNotFound,
    RemoteError,
    SandboxError,
    SetupError,
    TimeoutExpired,
    UnsafeResultError,
    UnsupportedError,
)
from .images import Image
from .registry import login, logout
from .results import Result, Verdict
from .runtime import Container, NamedNetwork, Network, Process
from .security import Seccomp
from .streams import DEVNULL, PIPE, STDOUT
from .version import __version__ as __version__  # (re-exported)

__all__ = [
    "run",
    "sandboxed",
    "Container",
    "ContainerConfig",
    "Mount",
    "IdMapping",
    "Limits",
    "NamedNetwork",
    "Network",
    "Process",
    "Result",
    "Verdict",
    "Stats",
    "ProcessInfo",
    "Seccomp",
    "PIPE",
    "DEVNULL",
    "STDOUT",
    "SandboxError",
    "ConfigError",
    "UnsupportedError",
    "SetupError",
    "CommandNotFoundError",
    "TimeoutExpired",
    "CommandFailed",
    "ContainerStateError",
    "ImageStore",
    "Image",
    "WritableLayer",
    "Pull",
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
    "BuildEvent",
    "Pool",
    "login",
    "logout",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext sandboxlib``: the ``%%sandbox`` magics (IPython is imported only now)."""
    from .frontends.magic import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .frontends.magic import unload

    unload(ipython)


def __getattr__(name: str):
    if name == "Pool":  # concurrent.futures is not imported by `import sandboxlib`
        from .pool import Pool

        return Pool
    raise AttributeError(f"module 'sandboxlib' has no attribute {name!r}")
