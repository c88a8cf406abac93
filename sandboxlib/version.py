"""The version of sandboxlib (one place: the package, the wheel and ``sandboxlib --version`` read it)."""

__version__ = "0.1.0"
