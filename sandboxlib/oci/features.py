"""``features``: what this runtime implements (runtime-spec features.md)."""

from __future__ import annotations

from typing import Any, Dict

from .spec import HOOK_NAMES, MOUNT_OPTIONS, NAMESPACES

__all__ = ["features"]


def features() -> Dict[str, Any]:
    from ..security.capabilities import ALL_CAPABILITIES
    from ..security.rules import ACTION_NAMES, Op

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": list(HOOK_NAMES),
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": [n for n in NAMESPACES if n != "time"],
            "capabilities": sorted(f"CAP_{c}" for c in ALL_CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(ACTION_NAMES),
                "operators": sorted(f"SCMP_CMP_{o.name}" for o in Op),
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                "knownFlags": [],
                "supportedFlags": [],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "org.sandboxlib.runtime.pid": "the container's pid is its init (sbx-init); the process is its child",
        },
    }
