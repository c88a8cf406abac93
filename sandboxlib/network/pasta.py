"""Rootless networking through ``pasta`` (Debian's ``passt``): a tap device in
the container's namespace, NAT and published ports in user mode, in the
host process's network namespace.

pasta joins the container's user and network namespaces (the netns fd the
init sent, passed as ``/proc/self/fd/N``), configures ``eth0`` as a copy of
the host's outbound interface, daemonizes once ready, and writes its pid into
the container's files directory: ``close`` kills it, and after the owner's
SIGKILL the next start's sweep does (pasta holds the namespace, so it would
not end on its own).

What the container must not reach: ``--no-map-gw`` (the gateway address is
not the host's loopback), ``-T none -U none`` (no ports of the host's
loopback forwarded in).  DNS goes to ``--dns-forward`` 169.254.1.1, which
pasta forwards to the host's first resolver (a loopback one too)."""

from __future__ import annotations

import abc
import os
import shutil
import signal
import subprocess
from typing import Dict, List, Optional, Tuple

from ..config import ContainerConfig, Mount, PortMapping
from ..errors import SetupError, UnsupportedError
from . import names
from .files import ContainerFiles
from .portproxy import bind_ports

__all__ = ["UserModeAttachment", "PastaAttachment", "check_tun", "free_ports", "find_pasta"]

TUN = "/dev/net/tun"
DNS_FORWARD = "169.254.1.1"


def check_tun() -> None:
    """pasta (and slirp4netns) open /dev/net/tun as the caller."""
    if not os.access(TUN, os.R_OK | os.W_OK):
        mode = oct(os.stat(TUN).st_mode & 0o777) if os.path.exists(TUN) else "missing"
        raise UnsupportedError(
            f"rootless networking ({TUN} is {mode}: pasta cannot open it)",
            f"as root: chmod 0666 {TUN} (the distributions' mode; Podman's rootless networks need it too)",
        )


def find_pasta() -> Optional[str]:
    return shutil.which("pasta") or shutil.which("pasta", path="/usr/bin:/usr/sbin")


def _pasta() -> str:
    found = find_pasta()
    if found is None:
        raise UnsupportedError("rootless networking (pasta)", "apt-get install passt")
    return found


def free_ports(ports: Tuple[PortMapping, ...]) -> Tuple[PortMapping, ...]:
    """The mappings with their host ports fixed: a port in use is a ConfigError
    now; port 0 becomes the port the kernel picked (free a moment ago)."""
    sockets = bind_ports(ports)
    try:
        return tuple(PortMapping(m.host_ip, s.getsockname()[1], m.port, m.protocol) for s, m in zip(sockets, ports))
    finally:
        for sock in sockets:
            sock.close()


def _port_options(ports: Tuple[PortMapping, ...]) -> List[str]:
    options = []
    for protocol, flag in (("tcp", "-t"), ("udp", "-u")):
        specs = [f"{m.host_ip}/{m.host_port}:{m.port}" for m in ports if m.protocol == protocol]
        options += [flag, ",".join(specs) if specs else "none"]
    return options


class UserModeAttachment(abc.ABC):
    """A rootless container's network through a user-mode helper, as
    :class:`~sandboxlib.network.attach.Attachment`'s steps: the ports and
    files here, the helper in a subclass (``connect``, ``close``)."""

    DNS = DNS_FORWARD  # the resolver address the helper answers in the container
    NEEDS_RECORD = True  # (a one-shot run keeps its state record: the helper is a process of its own)

    def __init__(self, config: ContainerConfig, container_id: str, hostname: str, state_root: str) -> None:
        self._config, self._id, self._hostname, self._state_root = config, container_id, hostname, state_root
        self._ports: Tuple[PortMapping, ...] = ()
        self._files: Optional[ContainerFiles] = None
        self._pid: Optional[int] = None

    def prepare(self) -> None:
        check_tun()
        self.program()
        self._ports = free_ports(self._config.ports)
        _, search = names.host_resolvers()
        self._files = ContainerFiles(
            self._state_root,
            self._id[:16],  # 16 hex digits: a socket in it (slirp4netns's API) stays within sun_path's 108 bytes
            {
                "resolv.conf": names.resolv_conf(self.DNS, search),
                "hosts": names.hosts_file("127.0.1.1", self._hostname, self._config.name, self._config.extra_hosts),
            },
        )

    @staticmethod
    @abc.abstractmethod
    def program() -> str:
        """The helper's executable (UnsupportedError when it is missing)."""

    def mounts(self) -> Tuple[Mount, ...]:
        assert self._files is not None
        return self._files.mounts()

    @abc.abstractmethod
    def connect(self, netns_fd: int, init_pid: int) -> None:
        """Start the helper on the container's network namespace (between clone and go)."""

    @property
    def ports(self) -> Dict[str, Tuple[str, int]]:
        return {m.key: (m.host_ip, m.host_port) for m in self._ports} if self._pid else {}

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None


class PastaAttachment(UserModeAttachment):
    """Through pasta (see the module's docstring)."""

    @staticmethod
    def program() -> str:
        return _pasta()

    def connect(self, netns_fd: int, init_pid: int) -> None:
        assert self._files is not None
        pid_file = self._files.helper_pid_file
        argv = [
            _pasta(),
            "--config-net",
            "-4",
            "--quiet",
            "--no-map-gw",
            "--dns-forward",
            DNS_FORWARD,
            *_port_options(self._ports),
            "-T",
            "none",
            "-U",
            "none",
            "--netns",
            f"/proc/self/fd/{netns_fd}",
            "--userns",
            f"/proc/{init_pid}/ns/user",
            "--pid",
            pid_file,
        ]
        done = subprocess.run(argv, pass_fds=(netns_fd,), capture_output=True, text=True, check=False)
        if os.path.exists(pid_file):
            with open(pid_file, encoding="ascii") as file:
                self._pid = int(file.read().strip())
        if done.returncode != 0:
            raise SetupError(0, "pasta (rootless network)", step="NETWORK", hint=done.stderr.strip()[-500:])

    def close(self) -> None:
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._pid = None
        super().close()
