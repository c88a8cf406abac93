"""Frozen, keyword-only configuration.  Validators name the field at fault
and run before any kernel resource exists.  One module per kind of value;
this face names them all."""
from .container import ContainerConfig, Network, Pull, WritableLayer, config_of, network_option, takes_container_options
from .limits import CPU_PERIOD_US, MIN_MEMORY, RLIMITS, CgroupLimits, Limits, RlimitValue
from .mounts import KERNEL_MOUNTS, IdMapping, Mount, MountKind
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
    tty_size,
    container_path,
    data_bytes,
    env_pairs,
    parse_size,
    text_codec,
    tmpfs_size,
)

__all__ = ["parse_size", "check_kernel_dirs", "PAGE_SIZE", "TMPFS_MAX", "MEMORY_MAX", "PIDS_MAX", "RLIM_INFINITY", "ID_MAX", "bounded_size", "tmpfs_size", "check_text", "check_timeout", "check_window_size", "tty_size", "data_bytes", "text_codec", "container_path", "env_pairs", "check_env", "MountKind", "KERNEL_MOUNTS", "Mount", "IdMapping", "RLIMITS", "RlimitValue", "MIN_MEMORY", "CPU_PERIOD_US", "CgroupLimits", "Limits", "WritableLayer", "Pull", "Network", "network_option", "ContainerConfig", "takes_container_options", "config_of"]
