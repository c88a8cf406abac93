"""The mode of the store's directories."""

__all__ = ["PRIVATE"]

PRIVATE = 0o700  # every directory of the store that leads to layers, writable layers or volumes
