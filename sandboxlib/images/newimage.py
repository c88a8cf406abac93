"""Writing new images into a store: config and manifest for a list of layers."""

from __future__ import annotations

import datetime
import json
import platform
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple

from .model import OCI_CONFIG, OCI_MANIFEST
from .store import Store

__all__ = ["host_platform", "new_config", "write_manifest", "add_plain_layer"]

_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform() -> Tuple[str, str]:
    """(os, architecture) in OCI's names."""
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine)


def new_config(
    diff_ids: Sequence[str], container_config: Optional[Dict[str, Any]] = None, history: Optional[List[dict]] = None
) -> dict:
    os_name, arch = host_platform()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "created": now,
        "architecture": arch,
        "os": os_name,
        "config": dict(container_config or {}),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history or [{"created": now, "created_by": "sandboxlib"}],
    }


def add_plain_layer(store: Store, tar: BinaryIO) -> Tuple[str, int]:
    """Store an uncompressed layer tar (inside ``store.writing()``): its blob
    digest is its diff_id.  Returns (digest, size)."""
    return store.blobs.put_stream(tar, source="layer")


def write_manifest(store: Store, config: dict, layers: Sequence[Tuple[str, int, str]]) -> str:
    """Store config and manifest (inside ``store.writing()``); returns the manifest digest."""
    config_data = json.dumps(config, sort_keys=True).encode()
    config_digest = store.blobs.put_bytes(config_data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
        "layers": [{"mediaType": t, "digest": d, "size": s} for d, s, t in layers],
    }
    return store.blobs.put_bytes(json.dumps(manifest, sort_keys=True).encode())
