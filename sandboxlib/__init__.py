"""sandboxlib: run code in Linux containers from Python, no daemon needed.

>>> import sandboxlib as sb
>>> sb.run(["echo", "hi"]).stdout
b'hi\\n'
"""

import importlib
import typing

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
from .streams import DEVNULL, PIPE, STDOUT

if typing.TYPE_CHECKING:
    from .api import run, sandboxed
    from .build import BuildEvent, ImageStore
    from .cgroups.stats import ProcessInfo, Stats
    from .config import ContainerConfig, IdMapping, Limits, Mount, Namespace, Pull, WritableLayer
    from .images import Image
    from .pool import Pool
    from .registry import login, logout
    from .results import Result, Verdict
    from .runtime import Container, NamedNetwork, Network, Process
    from .security import Seccomp
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
    "Namespace",
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


# Imported on first use: `import sandboxlib` (and so every program of the
# package, such as the OCI runtime, whose start-up is per container) costs
# ~10 ms instead of ~300 ms.
_LAZY = {
    "run": "api",
    "sandboxed": "api",
    "BuildEvent": "build",
    "ImageStore": "build",
    "ProcessInfo": "cgroups.stats",
    "Stats": "cgroups.stats",
    "ContainerConfig": "config",
    "IdMapping": "config",
    "Limits": "config",
    "Mount": "config",
    "Pull": "config",
    "Namespace": "config",
    "WritableLayer": "config",
    "Image": "images",
    "Pool": "pool",
    "login": "registry",
    "logout": "registry",
    "Result": "results",
    "Verdict": "results",
    "Container": "runtime",
    "NamedNetwork": "runtime",
    "Network": "runtime",
    "Process": "runtime",
    "Seccomp": "security",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandboxlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
