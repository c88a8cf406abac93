"""Docker's links through the daemon.  Legacy links (``docker run --link
NAME:ALIAS``) on the default bridge: the linked container's ``ALIAS_*``
variables, ``/etc/hosts`` lines that a request by the alias reaches;
inspect's ``HostConfig.Links``, the link's name (``PARENT/ALIAS``, in the
list's ``Names``, removed by ``docker rm --link``), and dockerd's refusals.
On a user-defined network (the CLI's ``--link``, docker-py's
``links=``, ``network connect --link``) the alias resolves for the linking
container only.  Network names with spaces, as dockerd takes them.  As
root in tests/netlab.py's "host" namespace (the bridges stay there); the
variables of links without addresses (``--network none``) by a rootless
daemon too."""

from __future__ import annotations

import json
import shutil
import subprocess

import docker
import pytest

from .daemonkit import Daemon, rootless_home
from .netlab import Lab
from .test_daemon_network_connect import HTTPD, LabDaemon


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


@pytest.fixture(scope="module")
def daemon(lab):
    served = LabDaemon(lab, "daemon")
    yield served
    assert served.close() == 0, served.log()
    assert [n for n in lab.links() if n.startswith(("vsbx", "vj"))] == []


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _inspect(daemon: Daemon, container: str) -> dict:
    return json.loads(_ok(daemon.docker("inspect", container)))[0]


def _env(text: str) -> dict:
    return dict(line.partition("=")[::2] for line in text.splitlines())


def test_legacy_link_on_the_default_bridge(daemon):
    _ok(daemon.docker("run", "-d", "--name", "db", "--hostname", "dbhost", "-e", "SECRET=s3", "--expose", "80",
                      "--expose", "81", "--expose", "53/udp", "busybox", *HTTPD))  # fmt: skip
    try:
        address = _inspect(daemon, "db")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert address
        shown = _ok(daemon.docker("run", "--rm", "--name", "app", "--link", "db:my-db", "busybox", "sh", "-c",
                                  "env; echo ===; cat /etc/hosts; echo ===; wget -qO- http://my-db/"))  # fmt: skip
        env, hosts, fetched = shown.split("===\n")
        variables = _env(env)
        assert variables["MY_DB_NAME"] == "/app/my-db"
        assert variables["MY_DB_ENV_SECRET"] == "s3"
        assert "MY_DB_ENV_PATH" not in variables  # (as dockerd: a build's, not the linked container's)
        assert variables["MY_DB_PORT"] == f"tcp://{address}:80"  # (TCP first, then by number)
        assert variables["MY_DB_PORT_81_TCP"] == f"tcp://{address}:81"
        assert variables["MY_DB_PORT_80_TCP_ADDR"] == address
        assert variables["MY_DB_PORT_80_TCP_PORT"] == "80"
        assert variables["MY_DB_PORT_53_UDP_PROTO"] == "udp"
        assert variables["MY_DB_PORT_80_TCP_START"] == f"tcp://{address}:80"  # (80-81: a range)
        assert variables["MY_DB_PORT_80_TCP_PORT_END"] == "81"
        assert variables["HOSTNAME"]  # (the container's own variables stay)
        lines = {line.split()[1]: line.split()[0] for line in hosts.splitlines() if line.strip()}
        assert lines["my-db"] == lines["dbhost"] == lines["db"] == address
        assert fetched == "served-by-dbhost\n"
    finally:
        daemon.docker("rm", "-f", "db")


def test_legacy_link_hosts_follow_a_restart_at_another_address(daemon):
    """The linked container starts again at another address (its old one taken
    meanwhile): the running linking container's /etc/hosts lines follow, as dockerd's."""
    _ok(daemon.docker("run", "-d", "--name", "moved", "--hostname", "movedhost", "busybox", *HTTPD))
    try:
        _ok(daemon.docker("run", "-d", "--name", "linking", "--link", "moved:mv", "busybox", "sleep", "600"))
        before = _inspect(daemon, "moved")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        _ok(daemon.docker("stop", "-t", "0", "moved"))
        _ok(daemon.docker("run", "-d", "--name", "squatter", "busybox", "sleep", "600"))  # (the first free address)
        assert _inspect(daemon, "squatter")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == before
        _ok(daemon.docker("start", "moved"))
        after = _inspect(daemon, "moved")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert after and after != before
        hosts = _ok(daemon.docker("exec", "linking", "cat", "/etc/hosts"))
        lines = {line.split()[1]: line.split()[0] for line in hosts.splitlines() if line.strip()}
        assert lines["mv"] == lines["movedhost"] == lines["moved"] == after, hosts
        assert _ok(daemon.docker("exec", "linking", "wget", "-qO-", "http://mv/")) == "served-by-movedhost\n"
    finally:
        daemon.docker("rm", "-f", "linking", "moved", "squatter")


def test_link_names_inspect_and_removal(daemon):
    _ok(daemon.docker("run", "-d", "--name", "target", "busybox", "sleep", "600"))
    try:
        _ok(daemon.docker("create", "--name", "user", "--link", "target:t1", "--link", "target", "busybox", "true"))
        assert sorted(_inspect(daemon, "user")["HostConfig"]["Links"]) == ["/target:/user/t1", "/target:/user/target"]
        client = docker.DockerClient(base_url=daemon.host, timeout=60)
        try:
            names = {c["Id"]: c["Names"] for c in client.api.containers(all=True)}
            target_id = _inspect(daemon, "target")["Id"]
            assert sorted(names[target_id]) == ["/target", "/user/t1", "/user/target"]
            assert client.api.inspect_container("user/t1")["Id"] == target_id  # (a link's name is a name of it)
            client.api.remove_container("user/t1", link=True)  # DELETE /containers/user/t1?link=1
        finally:
            client.close()
        assert _inspect(daemon, "user")["HostConfig"]["Links"] == ["/target:/user/target"]
        assert _inspect(daemon, "target")["State"]["Running"]  # (the link went, not the container)
        refused = daemon.docker("rm", "--link", "target")
        assert refused.returncode != 0 and b"cannot remove the default link name" in refused.stderr

        # the linked container stopped: the start is refused; removed: the link goes with it
        _ok(daemon.docker("stop", "-t", "0", "target"))
        refused = daemon.docker("start", "user")
        assert refused.returncode != 0 and b"Cannot link to a non running container" in refused.stderr
        _ok(daemon.docker("rm", "target"))
        assert _inspect(daemon, "user")["HostConfig"]["Links"] is None
        _ok(daemon.docker("start", "-a", "user"))
    finally:
        daemon.docker("rm", "-f", "user", "target")
    refused = daemon.docker("create", "--link", "nosuch:x", "busybox", "true")
    assert refused.returncode != 0 and b"could not get container for nosuch" in refused.stderr
    refused = daemon.docker("create", "--network", "host", "--link", "nosuch:x", "busybox", "true")
    assert refused.returncode != 0 and b"host type networking can't be used with links" in refused.stderr


def test_legacy_link_to_a_name_that_is_no_host_name(daemon):
    """dockerd's container names ([a-zA-Z0-9][a-zA-Z0-9_.-]+, any length) are not all
    host names ("db..x"): a link to one is taken, and /etc/hosts has its alias and
    hostname (found by the review: the create was a 400, the name checked as a host name)."""
    long_name = "d" * 70
    for name in ("db..x", long_name):
        _ok(daemon.docker("run", "-d", "--name", name, "--hostname", "dbhost", "busybox", "sleep", "600"))
    try:
        for name in ("db..x", long_name):
            address = _inspect(daemon, name)["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            shown = _ok(daemon.docker("run", "--rm", "--link", f"{name}:db", "busybox", "sh", "-c",
                                      "echo $DB_NAME; cat /etc/hosts"))  # fmt: skip
            first, hosts = shown.split("\n", 1)
            assert first.endswith("/db")
            lines = {line.split()[1]: line.split()[0] for line in hosts.splitlines() if line.strip()}
            assert lines["db"] == lines["dbhost"] == address, hosts
            assert name not in lines
    finally:
        daemon.docker("rm", "-f", "db..x", long_name)


def test_link_on_a_user_defined_network_to_a_name_that_is_no_host_name(daemon):
    """dockerd takes any container name as a link's there, and resolves the alias to the
    container of that name (found by a review: the library refused "db..x", not a host name)."""
    _ok(daemon.docker("network", "create", "--subnet", "10.106.0.0/24", "odd names"))
    try:
        _ok(daemon.docker("run", "-d", "--name", "db..x", "--network", "odd names", "busybox", *HTTPD))
        address = _inspect(daemon, "db..x")["NetworkSettings"]["Networks"]["odd names"]["IPAddress"]
        shown = _ok(daemon.docker("run", "--rm", "--network", "odd names", "--link", "db..x:db", "busybox",
                                  "sh", "-c", "nslookup db | tail -n +3; wget -qO- http://db/"))  # fmt: skip
        assert address in shown and shown.endswith(
            "served-by-" + _inspect(daemon, "db..x")["Config"]["Hostname"] + "\n"
        )
    finally:
        daemon.docker("rm", "-f", "db..x")
    _ok(daemon.docker("network", "rm", "odd names"))


def test_links_on_a_user_defined_network(daemon):
    """The alias resolves for the linking container only, whenever the target
    is on the network (it may come later); network connect --link too.  (Names
    are looked up once every container has joined: see tests/test_network_named.py's LINKS.)"""
    _ok(daemon.docker("network", "create", "--subnet", "10.103.0.0/24", "linked"))
    _ok(daemon.docker("network", "create", "--subnet", "10.105.0.0/24", "side"))
    try:
        early = daemon.docker("run", "--rm", "--network", "linked", "--link", "back:api", "busybox", "nslookup", "api")
        assert early.returncode != 0  # (no back yet)
        _ok(daemon.docker("run", "-d", "--name", "front", "--network", "linked", "--link", "back:api", "busybox",
                          "sleep", "600"))  # fmt: skip
        assert _inspect(daemon, "front")["NetworkSettings"]["Networks"]["linked"]["Links"] == ["back:api"]
        _ok(daemon.docker("run", "-d", "--name", "back", "--hostname", "backhost", "--network", "linked", "busybox",
                          *HTTPD))  # fmt: skip
        _ok(daemon.docker("run", "-d", "--name", "other", "--network", "linked", "busybox", "sleep", "600"))
        # connect --link: a running container of another network joins with a link of its own
        # (it asks its first network's resolver, which reads its links on the other)
        _ok(daemon.docker("run", "-d", "--name", "late", "--network", "side", "busybox", "sleep", "600"))
        _ok(daemon.docker("network", "connect", "--link", "back:svc", "linked", "late"))
        assert _inspect(daemon, "late")["NetworkSettings"]["Networks"]["linked"]["Links"] == ["back:svc"]

        assert _ok(daemon.docker("exec", "front", "wget", "-qO-", "http://api/")) == "served-by-backhost\n"
        assert daemon.docker("exec", "other", "nslookup", "api").returncode != 0  # front's name, not other's
        assert _ok(daemon.docker("exec", "other", "wget", "-qO-", "http://back/")) == "served-by-backhost\n"
        assert _ok(daemon.docker("exec", "late", "wget", "-qO-", "http://svc/")) == "served-by-backhost\n"
        assert daemon.docker("exec", "front", "nslookup", "svc").returncode != 0
        before = _ok(daemon.docker("ps", "-aq"))
        refused = daemon.docker("run", "--rm", "--link", "back:b", "busybox", "true")  # (from the default bridge)
        assert refused.returncode != 0 and b"does not belong to the default network" in refused.stderr
        assert _ok(daemon.docker("ps", "-aq")) == before  # (a failed start of --rm: removed, as dockerd)
    finally:
        daemon.docker("rm", "-f", "front", "back", "other", "late")
    _ok(daemon.docker("network", "rm", "linked", "side"))


def test_network_names_with_spaces(daemon):
    """dockerd takes any name that is not blank; the bridge is named from its hash."""
    _ok(daemon.docker("network", "create", "--subnet", "10.104.0.0/24", "test 01"))
    try:
        shown = json.loads(_ok(daemon.docker("network", "inspect", "test 01")))[0]
        assert shown["Name"] == "test 01"
        assert shown["Options"]["com.docker.network.bridge.name"].startswith("sbx")
        _ok(daemon.docker("run", "-d", "--name", "spaced", "--network", "test 01", "busybox", *HTTPD))
        fetched = daemon.docker("run", "--rm", "--network", "test 01", "busybox", "wget", "-qO-", "http://spaced/")
        assert _ok(fetched) == "served-by-" + _inspect(daemon, "spaced")["Config"]["Hostname"] + "\n"
    finally:
        daemon.docker("rm", "-f", "spaced")
    _ok(daemon.docker("network", "rm", "test 01"))
    for bad in ("a/b", "   ", "bridge"):
        refused = daemon.docker("network", "create", bad)
        assert refused.returncode != 0, bad


def test_rootless_daemon_legacy_links(workers, shared_dir):
    """A rootless daemon's default network is none: the variables come without addresses,
    as dockerd's with ``--bridge none``; inspect and ``rm --link`` as above."""
    user = workers["sbxtest"].user
    top, store = rootless_home(user, shared_dir, "daemon-links-rootless-")
    served = Daemon(top, store, user)
    try:
        _ok(served.docker("run", "-d", "--name", "cache", "-e", "FOO=1", "busybox", "sleep", "600"))
        variables = _env(_ok(served.docker("run", "--name", "web", "--link", "cache:c", "busybox", "env")))
        assert (variables["C_NAME"], variables["C_ENV_FOO"]) == ("/web/c", "1")
        assert _inspect(served, "web")["HostConfig"]["Links"] == ["/cache:/web/c"]
        _ok(served.docker("rm", "--link", "web/c"))
        assert _inspect(served, "web")["HostConfig"]["Links"] is None
        _ok(served.docker("rm", "-f", "cache", "web"))
    finally:
        assert served.close() == 0, served.log()
        shutil.rmtree(top, ignore_errors=True)
