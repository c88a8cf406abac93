"""Linux capability names and numbers, and the default set commands get.

The default is Podman's 11 (Docker's 14 less NET_RAW, MKNOD and
AUDIT_WRITE): enough for ordinary root-in-a-container work, nothing that
reaches raw sockets or creates device nodes.
"""

from __future__ import annotations

import functools
from typing import Collection

from ..errors import ConfigError

# Numbers from <linux/capability.h>.
ALL_CAPABILITIES = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}

DEFAULT_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


# What sbx-init itself needs (within the container's user namespace): mounts,
# pivot, hostname and setns (SYS_ADMIN), lo (NET_ADMIN), becoming root and
# starting commands as other users (SETUID, SETGID), dropping their bounding
# sets (SETPCAP), signalling them (KILL), reaching into the root it builds.
INIT_CAPABILITIES = frozenset(
    {
        "SYS_ADMIN",
        "NET_ADMIN",
        "SETUID",
        "SETGID",
        "SETPCAP",
        "KILL",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "SYS_CHROOT",
    }
)


# What sbx-init keeps once the container is set up (csrc/init.c: lock_down),
# beside the container's own capabilities (a root command, under
# no_new_privs, can only receive capabilities its parent holds): setting a
# command's ids (SETUID, SETGID), dropping its bounding set (SETPCAP),
# signalling commands of other users (KILL).  SYS_ADMIN, NET_ADMIN,
# DAC_READ_SEARCH, FOWNER, SYS_CHROOT served the set-up only (each command's
# child names its own pid to the host: csrc/command.c, announce_pid); the
# init keeps SYS_ADMIN permitted, never effective, only for a container
# given it.
INIT_RUNTIME_CAPABILITIES = frozenset({"SETUID", "SETGID", "SETPCAP", "KILL"})


def normalize_capability(name: object, field: str) -> str:
    """``"cap_net_admin"`` -> ``"NET_ADMIN"``; unknown names raise ConfigError."""
    if not isinstance(name, str):
        raise ConfigError(field, f"capability names are strings, got {name!r}")
    upper = name.upper()
    upper = upper[4:] if upper.startswith("CAP_") else upper
    if upper != "ALL" and upper not in ALL_CAPABILITIES:
        raise ConfigError(field, f"unknown capability {name!r}")
    return upper


@functools.lru_cache(maxsize=256)  # (a few per start, for the same sets)
def capability_mask(names: Collection[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << ALL_CAPABILITIES[name]
    return mask
