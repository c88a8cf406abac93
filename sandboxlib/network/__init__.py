"""Container networks: a bridge with NAT, published ports, names, named
networks (issue 19).  ``Attachment`` is what a container's lifecycle uses;
``named`` the records of ``Network.create``; ``Joined`` a running container on one more."""

from . import named
from .attach import DEFAULT_BRIDGE, Attachment, attachment
from .hostsfile import HostsFile, replace_extra_hosts
from .join import Joined, joined
from .nftables import tables as nft_tables
from .pasta import check_tun

__all__ = [
    "Attachment",
    "attachment",
    "check_tun",
    "DEFAULT_BRIDGE",
    "HostsFile",
    "Joined",
    "joined",
    "named",
    "nft_tables",
    "replace_extra_hosts",
]
