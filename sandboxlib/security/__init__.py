"""Capabilities and seccomp: policies, Docker/OCI profiles, their BPF."""

from .seccomp import DEFAULT, Seccomp, SeccompOption

__all__ = ["DEFAULT", "Seccomp", "SeccompOption"]
