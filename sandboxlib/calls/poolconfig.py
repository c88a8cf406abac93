"""The options of a pool of warm sandboxes: one definition, checked once, for
``sandboxlib.Pool`` (threads) and ``sandboxlib.aio.Pool`` (the event loop)."""

from __future__ import annotations

import inspect
import os
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import attrs

from ..config import Limits, Mount, Network, check_timeout, network_option, parse_size
from ..errors import CallCrashed, CallTimeout, ConfigError, ContainerStateError, SetupError
from .session import check_modules

__all__ = ["PoolConfig", "takes_pool_options", "check_pool_options", "RECYCLE_ON"]

# A call that ended like this leaves its sandbox suspect: it is replaced.
RECYCLE_ON = (CallCrashed, CallTimeout, ContainerStateError, SetupError)


def _count(what: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(attribute.name, f"must be a positive number of {what}, got {value!r}")

    return check


def _memory(_instance: Any, _attribute: attrs.Attribute, value: Union[int, str, None]) -> None:
    if value is not None:
        parse_size(value, "memory")


@attrs.frozen(kw_only=True)
class PoolConfig:
    """Attributes:
    size: how many sandboxes (containers with a warm fork server) serve calls.
    preload: modules each sandbox's fork server imports before its first call.
    max_uses: calls a sandbox serves before it is replaced (also after a call
        that crashed or timed out).
    timeout: seconds per call (None: no limit).
    trust_result: results come back pickled (any type) instead of safely encoded.
    memory: a memory limit per sandbox (a cgroup limit).
    network, rootfs, mounts, env, limits: as ``Container``'s.
    """

    size: int = attrs.field(default=2, validator=_count("sandboxes"))
    preload: Sequence[str] = attrs.field(default=(), converter=check_modules)
    max_uses: int = attrs.field(default=1000, validator=_count("calls"))
    timeout: Optional[float] = attrs.field(default=None, converter=check_timeout)
    trust_result: bool = False
    memory: Union[int, str, None] = attrs.field(default=None, validator=_memory)
    network: Union[Network, str] = attrs.field(default=Network.NONE, converter=network_option)
    rootfs: Union[str, os.PathLike, None] = None
    mounts: Sequence[Mount] = ()
    env: Optional[Mapping[str, str]] = None
    limits: Optional[Limits] = None

    def container_options(self) -> Dict[str, Any]:
        """The options of each sandbox's ``Container``."""
        limits = self.limits or Limits()
        if self.memory is not None:
            limits = attrs.evolve(limits, memory=parse_size(self.memory, "memory"))
        return {
            "rootfs": self.rootfs,
            "mounts": self.mounts,
            "env": self.env,
            "limits": limits,
            "network": self.network,
        }

    def call_options(self) -> Dict[str, Any]:
        """The options of each call (``Container.invoke``'s)."""
        return {"timeout": self.timeout, "trust_result": self.trust_result}


def takes_pool_options(func: Callable) -> Callable:
    """Give ``func(self, size=2, **options)`` the options of :class:`PoolConfig` as
    keyword-only parameters of its signature, with their types and defaults."""
    own = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    own_names = {p.name for p in own}
    hints = typing.get_type_hints(PoolConfig)
    options = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(PoolConfig).parameters.values()
        if p.name not in own_names
    ]
    func.__signature__ = inspect.signature(func).replace(parameters=own + options)  # type: ignore[attr-defined]
    kept = {name: hint for name, hint in typing.get_type_hints(func).items() if name == "return" or name in own_names}
    func.__annotations__ = {**kept, **{p.name: p.annotation for p in options}}
    return func


def check_pool_options(options: Mapping[str, Any]) -> Dict[str, Any]:
    """``options`` as a dict if a pool takes them by these names (for a pool
    made elsewhere, later: a cluster worker's, where paths are checked)."""
    names = [field.name for field in attrs.fields(PoolConfig)]
    unknown = sorted(name for name in options if name not in names)
    if unknown:
        raise ConfigError(unknown[0], f"not an option of sandboxlib.Pool (its options: {', '.join(names)})")
    return dict(options)
