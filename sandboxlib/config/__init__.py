"""Frozen, keyword-only configuration.  Validators name the field at fault
and run before any kernel resource exists.  One module per kind of value;
this face names them all."""

import importlib
import typing

from .cgroup_limits import CPU_PERIOD_US, DEFAULT_DEVICE_RULES, CgroupLimits
from .values import (
    ID_MAX,
    MEMORY_MAX,
    PAGE_SIZE,
    PIDS_MAX,
    RLIM_INFINITY,
    TMPFS_MAX,
    bounded_size,
    check_env,
    check_kernel_dirs,
    check_text,
    check_timeout,
    check_window_size,
    container_path,
    data_bytes,
    env_pairs,
    parse_size,
    text_codec,
    tmpfs_size,
    tty_size,
)

if typing.TYPE_CHECKING:
    from .container import (
        ContainerConfig,
        Namespace,
        Network,
        Pull,
        WritableLayer,
        bridged,
        config_of,
        container_network,
        network_option,
        takes_container_options,
    )
    from .limits import MIN_MEMORY, RLIMITS, Limits, RlimitValue
    from .mounts import KERNEL_MOUNTS, IdMapping, Mount, MountKind
    from .network import (
        BridgeNetwork,
        EgressRule,
        NetworkAddresses,
        NetworkRef,
        PortMapping,
        egress_rule,
        extra_hosts_option,
        is_host_name,
        links_option,
        network_name,
        parse_publish,
    )

# Loaded on first use: a program that needs only values and cgroup limits (the
# OCI runtime's create) does not build Limits, ContainerConfig, Mount and the
# network options (nor import attrs, inspect and ipaddress for them).
_LAZY = dict.fromkeys(
    (
        "ContainerConfig",
        "Namespace",
        "Network",
        "Pull",
        "WritableLayer",
        "bridged",
        "config_of",
        "container_network",
        "network_option",
        "takes_container_options",
    ),
    "container",
)
_LAZY.update(dict.fromkeys(("MIN_MEMORY", "RLIMITS", "Limits", "RlimitValue"), "limits"))
_LAZY.update(dict.fromkeys(("KERNEL_MOUNTS", "IdMapping", "Mount", "MountKind"), "mounts"))
_LAZY.update(
    dict.fromkeys(
        (
            "BridgeNetwork",
            "EgressRule",
            "NetworkAddresses",
            "NetworkRef",
            "PortMapping",
            "egress_rule",
            "extra_hosts_option",
            "is_host_name",
            "links_option",
            "network_name",
            "parse_publish",
        ),
        "network",
    )
)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "parse_size",
    "check_kernel_dirs",
    "PAGE_SIZE",
    "TMPFS_MAX",
    "MEMORY_MAX",
    "PIDS_MAX",
    "RLIM_INFINITY",
    "ID_MAX",
    "bounded_size",
    "tmpfs_size",
    "check_text",
    "check_timeout",
    "check_window_size",
    "tty_size",
    "data_bytes",
    "text_codec",
    "container_path",
    "env_pairs",
    "check_env",
    "MountKind",
    "KERNEL_MOUNTS",
    "Mount",
    "IdMapping",
    "RLIMITS",
    "RlimitValue",
    "MIN_MEMORY",
    "CPU_PERIOD_US",
    "DEFAULT_DEVICE_RULES",
    "CgroupLimits",
    "Limits",
    "WritableLayer",
    "Pull",
    "Network",
    "Namespace",
    "PortMapping",
    "BridgeNetwork",
    "NetworkAddresses",
    "EgressRule",
    "egress_rule",
    "extra_hosts_option",
    "NetworkRef",
    "is_host_name",
    "links_option",
    "network_name",
    "bridged",
    "container_network",
    "parse_publish",
    "network_option",
    "ContainerConfig",
    "takes_container_options",
    "config_of",
]
