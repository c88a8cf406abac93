"""sandboxlib: run code in Linux containers from Python, no daemon needed.

    >>> import sandboxlib as sb
    >>> sb.run(["echo", "hi"]).stdout
    b'hi\\n'
"""
from .api import run
from .config import ContainerConfig, IdMapping, Limits, Mount, Network, WritableLayer
from .container import Container
from .errors import (CommandNotFoundError, ConfigError, ContainerStateError, DigestMismatch, ImageFormatError,
                     ImageNotFound, SandboxError, SetupError, TimeoutExpired, UnsupportedError)
from .images import Image, ImageStore
from .process import Process, Result, Verdict
from .seccomp import Seccomp
from .stats import ProcessInfo, Stats
from .streams import DEVNULL, PIPE, STDOUT

__all__ = [
    "run", "Container", "ContainerConfig", "Mount", "IdMapping", "Limits", "Network", "Process",
    "Result", "Verdict", "Stats", "ProcessInfo", "Seccomp", "PIPE", "DEVNULL", "STDOUT", "SandboxError", "ConfigError",
    "UnsupportedError",
    "SetupError", "CommandNotFoundError", "TimeoutExpired", "ContainerStateError",
    "ImageStore", "Image", "WritableLayer", "ImageNotFound", "ImageFormatError", "DigestMismatch",
]
__version__ = "0.1.0"
