"""``python -m sandboxlib.oci``: the same as ``sandboxlib-runtime``."""

from .cli import main

main()
