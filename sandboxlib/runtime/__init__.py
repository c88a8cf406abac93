"""Containers: spawn and lifecycle, commands and processes, state records, files and commit."""

from .container import Container
from .networks import NamedNetwork, Network
from .process import Process
from .subids import ImageStore

__all__ = ["Container", "ImageStore", "NamedNetwork", "Network", "Process"]
