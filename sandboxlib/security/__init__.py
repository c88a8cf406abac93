"""Capabilities and seccomp: policies, Docker/OCI profiles, their BPF."""

import typing

if typing.TYPE_CHECKING:
    from .seccomp import DEFAULT, Seccomp, SeccompOption

__all__ = ["DEFAULT", "Seccomp", "SeccompOption"]


def __getattr__(name: str):
    """The policy on first use: the OCI runtime's create takes capabilities
    from here and, compiled before, its filters without it (oci/filters.py)."""
    if name in __all__:
        from . import seccomp

        return getattr(seccomp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
