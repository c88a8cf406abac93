"""Container networks: a bridge with NAT, published ports, names (issue 19).
``attach.Attachment`` is what a container's lifecycle uses."""

from .attach import DEFAULT_BRIDGE, Attachment
from .nftables import tables as nft_tables

__all__ = ["Attachment", "DEFAULT_BRIDGE", "nft_tables"]
