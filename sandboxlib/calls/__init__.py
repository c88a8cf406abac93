"""Python functions run in a sandbox: the host side (sessions, the fork server's slot) and the
sandbox side (the fork server and the safe encoding, run as program text)."""

from .session import ServerSlot, Session, check_modules

__all__ = ["ServerSlot", "Session", "check_modules"]
